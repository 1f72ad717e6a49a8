//! Cross-module tests: issuance from real and simulated CSRs, checked with
//! x509-parser and with the system `openssl verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

use time::{Duration, OffsetDateTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certs::tests::pki;
use crate::csr_build::tests::{DEVICE_ID, device_key, windows_cn};
use crate::*;

/// Path of the openssl CLI, or None (with a note) when it is not installed.
pub(crate) fn openssl() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/openssl");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("NOTE: /usr/bin/openssl not found; skipping openssl cross-check");
        None
    }
}

/// `openssl verify -CAfile root -untrusted intermediates leaf`.
fn openssl_verify(openssl: &Path, root: &[u8], intermediates: &[&[u8]], leaf: &[u8], purpose: &str) {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, ders: &[&[u8]]| {
        let path = dir.path().join(name);
        let pem: String = ders.iter().map(|d| pem_encode("CERTIFICATE", d)).collect();
        std::fs::write(&path, pem).unwrap();
        path
    };
    let root_p = write("root.pem", &[root]);
    let leaf_p = write("leaf.pem", &[leaf]);
    let mut cmd = Command::new(openssl);
    cmd.arg("verify").arg("-CAfile").arg(&root_p);
    cmd.args(["-purpose", purpose]);
    if !intermediates.is_empty() {
        cmd.arg("-untrusted").arg(write("issuing.pem", intermediates));
    }
    let out = cmd.arg(&leaf_p).output().unwrap();
    assert!(
        out.status.success(),
        "openssl verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn params(cn: &str) -> DeviceCertParams {
    let now = OffsetDateTime::now_utc();
    DeviceCertParams {
        serial: random_bytes::<16>().unwrap(),
        common_name: cn.to_owned(),
        organizational_unit: Some("enrollment-42".to_owned()),
        not_before: now - Duration::hours(1),
        not_after: now + Duration::days(365),
    }
}

fn eku_is_client_auth_only(cert: &X509Certificate<'_>) {
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth);
    assert!(!eku.server_auth && !eku.any && !eku.code_signing && !eku.email_protection);
    assert!(eku.other.is_empty());
}

#[test]
fn issue_from_real_windows_csr() {
    let p = pki();
    let csr = verify_csr(&crate::csr::tests::windows_csr(), 2048).unwrap();
    let device_id = csr.device_id_extension.clone().unwrap();
    let mut prm = params(&device_id);
    prm.serial[0] = 0xff; // top bit must be cleared by the issuer
    let issued = issue_device_certificate(&p.issuing, &csr.spki_der, &prm).unwrap();

    let (rest, cert) = X509Certificate::from_der(&issued.der).unwrap();
    assert!(rest.is_empty());
    assert_eq!(cert.tbs_certificate.subject_pki.raw, csr.spki_der.as_slice());
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);
    eku_is_client_auth_only(&cert);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    assert!(cert.subject_alternative_name().unwrap().is_none());
    let subject = cert.subject();
    assert_eq!(subject.iter_common_name().next().unwrap().as_str().unwrap(), device_id);
    assert_eq!(
        subject.iter_organizational_unit().next().unwrap().as_str().unwrap(),
        "enrollment-42"
    );
    // No O: the subject is what SSLCLIENTCERTSEARCHCRITERIA names (CN, and OU when asked for).
    assert!(subject.iter_organization().next().is_none());
    // CN is a PrintableString (tag 0x13), as in the certificate a real Windows 10 accepted.
    let cn = subject.iter_common_name().next().unwrap();
    assert_eq!(
        cn.attr_value().header.tag(),
        x509_parser::der_parser::asn1_rs::Tag::PrintableString
    );
    assert_eq!(hex::encode(cert.raw_serial()), issued.serial_hex);
    assert_eq!(issued.serial_hex.len(), 32);
    assert!(issued.serial_hex.starts_with("7f"));
    assert_eq!(issued.thumbprint, sha1_thumbprint(&issued.der));
    assert_eq!(issued.not_after, cert.validity().not_after.to_datetime());
    assert_eq!(issued.not_after.unix_timestamp(), prm.not_after.unix_timestamp());
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.11"
    );

    // AKI of the leaf = SKI of the issuing CA; issuer name = its subject.
    let (_, issuing) = X509Certificate::from_der(p.issuing.cert_der()).unwrap();
    assert_eq!(cert.issuer().as_raw(), issuing.subject().as_raw());
    let aki = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    });
    let ski = issuing.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    });
    assert!(aki.is_some());
    assert_eq!(aki, ski);
    assert!(cert.verify_signature(Some(issuing.public_key())).is_ok());

    if let Some(openssl) = openssl() {
        openssl_verify(
            &openssl,
            p.root.cert_der(),
            &[p.issuing.cert_der()],
            &issued.der,
            "sslclient",
        );
    }
}

#[test]
fn csr_requesting_ca_and_san_is_ignored() {
    let p = pki();
    // BasicConstraints CA:TRUE (2.5.29.19) and SAN dNSName (2.5.29.17).
    let bc = extension_der(&[2, 5, 29, 19], true, &der::sequence(&[&der::boolean(true)]));
    let san = extension_der(
        &[2, 5, 29, 17],
        false,
        &der::sequence(&[&der::tlv(0x82, b"evil.example")]),
    );
    let eku = extension_der(
        &[2, 5, 29, 37],
        false,
        &der::sequence(&[&der::oid(&[1, 3, 6, 1, 5, 5, 7, 3, 1])]),
    );
    let csr_der = build_csr_with_extensions(
        device_key(),
        &windows_cn(),
        &[bc, san, eku],
        CsrSignatureAlgorithm::Sha1RsaOiw,
    )
    .unwrap();
    let csr = verify_csr(&csr_der, 2048).unwrap();
    assert_eq!(csr.device_id_extension, None);
    let issued = issue_device_certificate(&p.issuing, &csr.spki_der, &params(DEVICE_ID)).unwrap();
    let (_, cert) = X509Certificate::from_der(&issued.der).unwrap();
    assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
    assert!(cert.subject_alternative_name().unwrap().is_none());
    eku_is_client_auth_only(&cert);
    assert_eq!(cert.tbs_certificate.subject_pki.raw, device_key().spki_der().as_slice());
    if let Some(openssl) = openssl() {
        openssl_verify(
            &openssl,
            p.root.cert_der(),
            &[p.issuing.cert_der()],
            &issued.der,
            "sslclient",
        );
    }
}

#[test]
fn tls_server_cert() {
    let p = pki();
    let hosts = vec!["mdm.example.test".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let tls = generate_tls_server_cert(&p.root, &hosts, KeyAlgorithm::default(), Duration::days(90)).unwrap();
    let (_, cert) = X509Certificate::from_der(tls.cert_der()).unwrap();
    assert_eq!(
        cert.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1"
    );
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert!(san.general_names.contains(&GeneralName::DNSName("mdm.example.test")));
    assert!(san.general_names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
    assert!(san.general_names.contains(&GeneralName::IPAddress(
        &"::1".parse::<std::net::Ipv6Addr>().unwrap().octets()
    )));
    assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_encipherment());
    // Key round-trips through PKCS#8.
    let again = CertifiedKey::from_der(tls.cert_der().to_vec(), &tls.key_pkcs8_der()).unwrap();
    assert_eq!(again.thumbprint(), tls.thumbprint());
    if let Some(openssl) = openssl() {
        openssl_verify(&openssl, p.root.cert_der(), &[], tls.cert_der(), "sslserver");
    }

    let rsa = generate_tls_server_cert(&p.root, &hosts[..1], KeyAlgorithm::Rsa2048, Duration::days(1)).unwrap();
    let (_, cert) = X509Certificate::from_der(rsa.cert_der()).unwrap();
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment());
}

#[test]
fn sealed_ca_key_round_trip() {
    let p = pki();
    let kek = Kek::generate().unwrap();
    let sealed = kek.seal("root-ca.key", &p.root.key_pkcs8_der()).unwrap();
    let key = kek.open("root-ca.key", &sealed).unwrap();
    let root = CertifiedKey::from_der(p.root.cert_der().to_vec(), &key).unwrap();
    assert_eq!(root.thumbprint(), p.root.thumbprint());
}
