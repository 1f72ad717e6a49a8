//! Our own certificates: root CA, device-identity issuing CA, TLS server
//! certificate, and issuance of device client certificates.
//!
//! Profiles follow RFC 5280 §4.2.1 (BasicConstraints, KeyUsage, EKU, AKI/SKI).

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, RsaKeySize, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::util::{random_bytes, sha1_thumbprint};
use crate::{PkiError, pem_encode};

/// Backdate `notBefore` so that devices with slightly slow clocks accept a
/// freshly issued certificate.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// A certificate plus its private key.
///
/// `Debug` prints the subject and thumbprint only, never the key.
pub struct CertifiedKey {
    cert_der: Vec<u8>,
    key: KeyPair,
    not_after: OffsetDateTime,
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("thumbprint", &self.thumbprint())
            .field("not_after", &self.not_after)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl CertifiedKey {
    /// The certificate, DER encoded.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificate as PEM (`CERTIFICATE`).
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }

    /// The private key as PKCS#8 DER (RFC 5958), wiped from memory on drop.
    pub fn key_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.key.serialize_der())
    }

    /// Rebuilds from stored DER, checking that the key belongs to the
    /// certificate (otherwise we would sign with a key nobody trusts).
    pub fn from_der(cert_der: Vec<u8>, key_pkcs8_der: &[u8]) -> Result<Self, PkiError> {
        let key = KeyPair::try_from(key_pkcs8_der).map_err(|e| PkiError::InvalidKey(e.to_string()))?;
        let (not_after, cert_spki) = {
            let cert = parse_cert(&cert_der)?;
            (
                cert.validity().not_after.to_datetime(),
                cert.tbs_certificate.subject_pki.raw.to_vec(),
            )
        };
        if key.subject_public_key_info() != cert_spki {
            return Err(PkiError::KeyMismatch);
        }
        Ok(Self {
            cert_der,
            key,
            not_after,
        })
    }

    /// Uppercase hex SHA-1 of the certificate DER (the Windows thumbprint).
    pub fn thumbprint(&self) -> String {
        sha1_thumbprint(&self.cert_der)
    }

    /// End of the validity period.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// An rcgen issuer built from *our certificate's* encoded subject and
    /// SubjectKeyIdentifier, so children get byte-identical issuer names and
    /// an AKI matching the parent's SKI (RFC 5280 §4.2.1.1).
    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_der(
            &CertificateDer::from(self.cert_der.as_slice()),
            &self.key,
        )?)
    }

    fn from_generated(cert_der: Vec<u8>, key: KeyPair) -> Result<Self, PkiError> {
        let not_after = parse_cert(&cert_der)?.validity().not_after.to_datetime();
        Ok(Self {
            cert_der,
            key,
            not_after,
        })
    }
}

/// Key algorithm for certificates whose key we generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256: small and fast; the TLS default.
    #[default]
    EcdsaP256,
    /// RSA-2048 with SHA-256 (PKCS#1 v1.5), for clients without ECDSA.
    Rsa2048,
}

fn generate_key(alg: KeyAlgorithm) -> Result<KeyPair, PkiError> {
    Ok(match alg {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        KeyAlgorithm::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)?,
    })
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(PkiError::InvalidCertificate("trailing data after certificate".into()));
    }
    Ok(cert)
}

/// A positive 16-byte serial (RFC 5280 §4.1.2.2: positive, at most 20
/// octets). The top bit is cleared so the INTEGER is positive without a 0x00
/// pad, and a zero first octet is replaced so DER does not strip it: the
/// encoded serial is then always exactly these 16 bytes.
fn normalize_serial(mut serial: [u8; 16]) -> [u8; 16] {
    serial[0] &= 0x7f;
    if serial[0] == 0 {
        serial[0] = 0x40;
    }
    serial
}

fn random_serial() -> Result<[u8; 16], PkiError> {
    Ok(normalize_serial(random_bytes::<16>()?))
}

fn validity_from_now(validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    if validity <= Duration::ZERO {
        return Err(PkiError::InvalidParams("validity must be positive".into()));
    }
    let now = OffsetDateTime::now_utc();
    let not_after = now
        .checked_add(validity)
        .ok_or_else(|| PkiError::InvalidParams("validity out of range".into()))?;
    Ok((now - CLOCK_SKEW, not_after))
}

fn ca_params(
    common_name: &str,
    organization: &str,
    validity: Duration,
    path_len: u8,
) -> Result<CertificateParams, PkiError> {
    let (not_before, not_after) = validity_from_now(validity)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    // rcgen emits the SubjectKeyIdentifier whenever is_ca is not NoCa.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Self-signed root CA: RSA-2048 / SHA-256 (older Windows builds are most
/// comfortable with RSA roots), BasicConstraints CA:TRUE pathLen 1 (root →
/// issuing CA → leaf), KeyUsage keyCertSign+cRLSign, SKI.
pub fn generate_root_ca(common_name: &str, organization: &str, validity: Duration) -> Result<CertifiedKey, PkiError> {
    let key = generate_key(KeyAlgorithm::Rsa2048)?;
    let params = ca_params(common_name, organization, validity, 1)?;
    let cert = params.self_signed(&key)?;
    CertifiedKey::from_generated(cert.der().to_vec(), key)
}

/// Device-identity issuing CA signed by `root`: RSA-2048, CA:TRUE pathLen 0,
/// keyCertSign+cRLSign, AKI/SKI.
pub fn generate_issuing_ca(
    root: &CertifiedKey,
    common_name: &str,
    organization: &str,
    validity: Duration,
) -> Result<CertifiedKey, PkiError> {
    let key = generate_key(KeyAlgorithm::Rsa2048)?;
    let mut params = ca_params(common_name, organization, validity, 0)?;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &root.issuer()?)?;
    CertifiedKey::from_generated(cert.der().to_vec(), key)
}

/// TLS server certificate signed by `issuer`. Each hostname becomes a
/// dNSName SAN, or an iPAddress SAN if it parses as an IP (RFC 6125 §6.4.4:
/// clients match SANs, the CN is informational). EKU serverAuth,
/// BasicConstraints CA:FALSE, KeyUsage digitalSignature (+keyEncipherment for
/// RSA key transport in TLS 1.2, RFC 5280 §4.2.1.3).
pub fn generate_tls_server_cert(
    issuer: &CertifiedKey,
    hostnames: &[String],
    key: KeyAlgorithm,
    validity: Duration,
) -> Result<CertifiedKey, PkiError> {
    let first = hostnames
        .first()
        .ok_or_else(|| PkiError::InvalidParams("at least one hostname is required".into()))?;
    let (not_before, not_after) = validity_from_now(validity)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, first.as_str());
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.subject_alt_names = hostnames
        .iter()
        .map(|h| match h.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(h.as_str().try_into()?)),
        })
        .collect::<Result<Vec<_>, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = match key {
        KeyAlgorithm::EcdsaP256 => vec![KeyUsagePurpose::DigitalSignature],
        KeyAlgorithm::Rsa2048 => vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment],
    };
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key_pair = generate_key(key)?;
    let cert = params.signed_by(&key_pair, &issuer.issuer()?)?;
    CertifiedKey::from_generated(cert.der().to_vec(), key_pair)
}

/// A certificate's subject as `(attribute, value)` pairs in encoded (RDN) order, with the
/// attribute keys Windows' X.500 name strings use (`CN`, `OU`, `O`, `L`, `S`, `C`, `DC`, `E`,
/// otherwise `OID.<dotted>`): what a simulated Windows compares an SSLCLIENTCERTSEARCHCRITERIA
/// `Subject=` against. A value that is not a string is an error.
pub fn subject_attributes(cert_der: &[u8]) -> Result<Vec<(String, String)>, PkiError> {
    let cert = parse_cert(cert_der)?;
    let mut out = Vec::new();
    for rdn in cert.subject().iter() {
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let key = match oid.as_str() {
                "2.5.4.3" => "CN".to_owned(),
                "2.5.4.11" => "OU".to_owned(),
                "2.5.4.10" => "O".to_owned(),
                "2.5.4.7" => "L".to_owned(),
                "2.5.4.8" => "S".to_owned(),
                "2.5.4.6" => "C".to_owned(),
                "0.9.2342.19200300.100.1.25" => "DC".to_owned(),
                "1.2.840.113549.1.9.1" => "E".to_owned(),
                other => format!("OID.{other}"),
            };
            let value = atv
                .as_str()
                .map_err(|e| PkiError::InvalidCertificate(format!("subject {key}: {e}")))?;
            out.push((key, value.to_owned()));
        }
    }
    Ok(out)
}

/// Server-chosen fields of a device certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCertParams {
    /// Caller-generated random bytes. The top bit is cleared (and a zero first
    /// octet replaced) so the DER INTEGER is positive and exactly 16 bytes.
    pub serial: [u8; 16],
    /// Subject CN, e.g. the DeviceID.
    pub common_name: String,
    /// Subject OU, e.g. the enrollment id.
    pub organizational_unit: Option<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// A freshly issued device certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub der: Vec<u8>,
    /// Lowercase hex of the serial INTEGER contents (16 bytes).
    pub serial_hex: String,
    /// Uppercase hex SHA-1 of `der`.
    pub thumbprint: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Issues a TLS client certificate for `spki_der`.
///
/// Only the public key comes from the device; every other field is server
/// policy. In particular nothing from the CSR's extensionRequest is copied,
/// so a request for CA:TRUE or extra SANs has no effect (see the rcgen
/// `CertificateSigningRequestParams` pitfall in the design notes).
///
/// Profile: subject CN (PrintableString when possible) [/ OU], EKU clientAuth
/// only, BasicConstraints CA:FALSE (explicit), KeyUsage digitalSignature +
/// keyEncipherment, AKI = issuer SKI, SKI, sha256WithRSAEncryption (or the
/// issuer key's algorithm).
pub fn issue_device_certificate(
    issuer: &CertifiedKey,
    spki_der: &[u8],
    params: &DeviceCertParams,
) -> Result<IssuedCertificate, PkiError> {
    if params.not_before >= params.not_after {
        return Err(PkiError::InvalidParams(
            "not_before must be earlier than not_after".into(),
        ));
    }
    if params.common_name.is_empty() {
        return Err(PkiError::InvalidParams("common name is empty".into()));
    }
    let spki = SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| PkiError::InvalidPublicKey(e.to_string()))?;
    // rcgen re-serialises the SPKI from (algorithm, key bits); make sure the
    // certificate will carry exactly the key the device proved possession of.
    if spki.subject_public_key_info() != spki_der {
        return Err(PkiError::InvalidPublicKey(
            "SubjectPublicKeyInfo is not in canonical DER form".into(),
        ));
    }

    let serial = normalize_serial(params.serial);
    // The subject is exactly `CN=<common name>` (plus OU only when a caller asks for one): the w7
    // APPLICATION CSP's SSLCLIENTCERTSEARCHCRITERIA `Subject=` names a whole subject, not a CN
    // ("wildcard certificate search isn't supported", Learn w7/DMAcc CSP), and the subject a real
    // Windows 10 accepted and used was exactly `CN=<DeviceID>` as a PrintableString (fleetdm/fleet
    // mdm_ngrok_comm_dump.txt @8e197bd). PrintableString when the value allows it, else UTF8String.
    let mut dn = DistinguishedName::new();
    let cn = match rcgen::string::PrintableString::try_from(params.common_name.as_str()) {
        Ok(p) => rcgen::DnValue::PrintableString(p),
        Err(_) => rcgen::DnValue::Utf8String(params.common_name.clone()),
    };
    dn.push(DnType::CommonName, cn);
    if let Some(ou) = &params.organizational_unit {
        dn.push(DnType::OrganizationalUnitName, ou.as_str());
    }

    let mut cp = CertificateParams::default();
    cp.distinguished_name = dn;
    cp.serial_number = Some(SerialNumber::from_slice(&serial));
    cp.not_before = params.not_before;
    cp.not_after = params.not_after;
    cp.is_ca = IsCa::ExplicitNoCa;
    cp.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    cp.use_authority_key_identifier_extension = true;

    let cert = cp.signed_by(&spki, &issuer.issuer()?)?;
    let der = cert.der().to_vec();
    // Report the validity as encoded (rcgen drops sub-second precision).
    let (not_before, not_after) = {
        let parsed = parse_cert(&der)?;
        (
            parsed.validity().not_before.to_datetime(),
            parsed.validity().not_after.to_datetime(),
        )
    };
    Ok(IssuedCertificate {
        serial_hex: hex::encode(serial),
        thumbprint: sha1_thumbprint(&der),
        der,
        not_before,
        not_after,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;
    use x509_parser::extensions::ParsedExtension;

    pub(crate) struct TestPki {
        pub root: CertifiedKey,
        pub issuing: CertifiedKey,
    }

    /// One root + issuing CA for the whole test binary: RSA keygen is slow.
    pub(crate) fn pki() -> &'static TestPki {
        static PKI: OnceLock<TestPki> = OnceLock::new();
        PKI.get_or_init(|| {
            let root = generate_root_ca("Steward Test Root", "Steward Tests", Duration::days(3650)).unwrap();
            let issuing =
                generate_issuing_ca(&root, "Steward Test Device CA", "Steward Tests", Duration::days(1000)).unwrap();
            TestPki { root, issuing }
        })
    }

    fn bc(cert: &X509Certificate<'_>) -> (bool, Option<u32>) {
        let b = cert.basic_constraints().unwrap().unwrap();
        (b.value.ca, b.value.path_len_constraint)
    }

    fn ski(cert: &X509Certificate<'_>) -> Vec<u8> {
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap()
    }

    fn aki(cert: &X509Certificate<'_>) -> Vec<u8> {
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(k) => k.key_identifier.as_ref().map(|k| k.0.to_vec()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn root_and_issuing_profiles() {
        let p = pki();
        let (_, root) = X509Certificate::from_der(p.root.cert_der()).unwrap();
        let (_, issuing) = X509Certificate::from_der(p.issuing.cert_der()).unwrap();

        assert_eq!(bc(&root), (true, Some(1)));
        let ku = root.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        assert_eq!(
            root.subject().iter_common_name().next().unwrap().as_str().unwrap(),
            "Steward Test Root"
        );
        assert_eq!(root.subject(), root.issuer());
        assert_eq!(
            root.signature_algorithm.algorithm.to_id_string(),
            "1.2.840.113549.1.1.11"
        );
        assert_eq!(
            root.public_key().algorithm.algorithm.to_id_string(),
            "1.2.840.113549.1.1.1"
        );
        assert!(root.raw_serial()[0] & 0x80 == 0);
        assert_eq!(root.raw_serial().len(), 16);

        assert_eq!(bc(&issuing), (true, Some(0)));
        assert_eq!(issuing.issuer().as_raw(), root.subject().as_raw());
        assert_eq!(aki(&issuing), ski(&root));
        assert_ne!(ski(&issuing), ski(&root));
        assert!(issuing.verify_signature(Some(root.public_key())).is_ok());
        assert!(p.issuing.not_after() < p.root.not_after());
    }

    #[test]
    fn certified_key_round_trip_and_mismatch() {
        let p = pki();
        let again = CertifiedKey::from_der(p.root.cert_der().to_vec(), &p.root.key_pkcs8_der()).unwrap();
        assert_eq!(again.thumbprint(), p.root.thumbprint());
        assert_eq!(again.not_after(), p.root.not_after());
        assert!(matches!(
            CertifiedKey::from_der(p.root.cert_der().to_vec(), &p.issuing.key_pkcs8_der()),
            Err(PkiError::KeyMismatch)
        ));
        assert!(CertifiedKey::from_der(vec![1, 2, 3], &p.root.key_pkcs8_der()).is_err());
        assert!(CertifiedKey::from_der(p.root.cert_der().to_vec(), b"junk").is_err());
    }

    #[test]
    fn debug_does_not_leak_key() {
        let p = pki();
        let dbg = format!("{:?}", p.root);
        assert!(dbg.contains("redacted"));
        let key = p.root.key_pkcs8_der();
        let b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&key[key.len() - 40..])
        };
        assert!(!dbg.contains(&hex::encode(&key[key.len() - 40..])));
        assert!(!dbg.contains(&b64));
        assert!(p.root.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(p.root.thumbprint().len(), 40);
    }

    #[test]
    fn serial_normalization() {
        assert_eq!(normalize_serial([0xff; 16])[0], 0x7f);
        assert_eq!(normalize_serial([0x80; 16])[0], 0x40);
        assert_eq!(normalize_serial([0x00; 16])[0], 0x40);
        assert_eq!(normalize_serial([0x12; 16]), [0x12; 16]);
    }

    #[test]
    fn rejects_bad_params() {
        let p = pki();
        assert!(generate_tls_server_cert(&p.root, &[], KeyAlgorithm::EcdsaP256, Duration::days(1)).is_err());
        assert!(generate_root_ca("x", "y", Duration::ZERO).is_err());
        let now = OffsetDateTime::now_utc();
        let params = DeviceCertParams {
            serial: [1; 16],
            common_name: "dev".into(),
            organizational_unit: None,
            not_before: now,
            not_after: now,
        };
        let spki = KeyPair::generate().unwrap().subject_public_key_info();
        assert!(matches!(
            issue_device_certificate(&p.issuing, &spki, &params),
            Err(PkiError::InvalidParams(_))
        ));
        let params = DeviceCertParams {
            not_after: now + Duration::days(1),
            ..params
        };
        assert!(matches!(
            issue_device_certificate(&p.issuing, b"\x30\x00", &params),
            Err(PkiError::InvalidPublicKey(_))
        ));
        // An EC device key is fine too (the server only ever sees an SPKI).
        let issued = issue_device_certificate(&p.issuing, &spki, &params).unwrap();
        let (_, c) = X509Certificate::from_der(&issued.der).unwrap();
        assert_eq!(c.tbs_certificate.subject_pki.raw, &spki[..]);
    }
}
