//! Windows MDM certificate renewal requests: a CMS SignedData (RFC 5652)
//! wrapping a new PKCS#10 request (RFC 2986), signed with the key of the
//! certificate being renewed.
//!
//! Where the shape comes from:
//! - Microsoft Learn, "Certificate Renewal" (windows/client-management,
//!   certificate-renewal-windows-mdm): "The client generates a new
//!   private/public key pair, generates a PKCS#7 request, and signs the PKCS#7
//!   request with the existing certificate." With automatic renewal (ROBO) the
//!   HTTPS request is also TLS client-authenticated with that certificate.
//! - MS-MDE2 §3.4.4 (renewal RequestSecurityToken): `wst:RequestType` is
//!   `http://docs.oasis-open.org/ws-sx/ws-trust/200512/Renew` and the
//!   BinarySecurityToken ValueType is
//!   `http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS7`.
//! - MS-WCCE §3.1.1.4.3.2.1 / §3.2.1.4.2.1.4.2.1 ("Renew Certificate Request
//!   Using CMS and PKCS #10 Request Formats", which MS-WSTEP hands the token
//!   to): ContentInfo contentType id-signedData; eContentType id-data;
//!   eContent the new PKCS#10; `certificates` MUST include the certificate
//!   being renewed; the *first* SignerInfo MUST use that certificate's key.
//!   The PKCS#10 carries the szOID_RENEWAL_CERTIFICATE attribute
//!   (1.3.6.1.4.1.311.13.1, MS-WCCE §2.2.2.7.3) holding the same certificate.
//!   MS-WCCE §3.1.1.4.3.2 also allows renewing with the *existing* key pair,
//!   in which case the PKCS#10 is signed with the old key too; that needs no
//!   special handling here (the PKCS#10 is verified with its own key).
//!
//! ```text
//! ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT ANY }   -- RFC 5652 §3
//! SignedData ::= SEQUENCE {                                                -- §5.1
//!   version CMSVersion, digestAlgorithms SET OF AlgorithmIdentifier,
//!   encapContentInfo SEQUENCE { eContentType OID, eContent [0] EXPLICIT OCTET STRING OPTIONAL },
//!   certificates [0] IMPLICIT CertificateSet OPTIONAL,
//!   crls [1] IMPLICIT RevocationInfoChoices OPTIONAL,
//!   signerInfos SET OF SignerInfo }
//! SignerInfo ::= SEQUENCE {                                                -- §5.3
//!   version CMSVersion,
//!   sid CHOICE { issuerAndSerialNumber SEQUENCE { issuer Name, serialNumber INTEGER },
//!                subjectKeyIdentifier [0] IMPLICIT OCTET STRING },
//!   digestAlgorithm AlgorithmIdentifier, signedAttrs [0] IMPLICIT SET OF Attribute OPTIONAL,
//!   signatureAlgorithm AlgorithmIdentifier, signature OCTET STRING,
//!   unsignedAttrs [1] IMPLICIT SET OF Attribute OPTIONAL }
//! ```
//!
//! Not supported (rejected with a typed error, never a panic): detached
//! content, BER indefinite lengths or constructed OCTET STRINGs (Windows'
//! CryptMsg emits DER), the CMC variant (eContent a PKIData, MS-WCCE
//! §3.1.1.4.3.2.2: the inner parse fails as `Csr(Malformed)`), non-RSA
//! signer keys and RSASSA-PSS.

use std::borrow::Cow;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine as _;
use thiserror::Error;
use time::OffsetDateTime;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::csr::{VerifiedCsr, verify_csr};
use crate::csr_build::{CsrSignatureAlgorithm, DeviceKey, build_windows_csr};
use crate::der::{self, DerError, Reader, Tlv, tag};
use crate::error::{CsrError, PkiError};
use crate::util::sha1_thumbprint;

/// OID arcs used here.
mod oids {
    /// id-signedData (RFC 5652 §5.1)
    pub const SIGNED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 2];
    /// id-data (RFC 5652 §4)
    pub const DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 1];
    /// id-contentType signed attribute (RFC 5652 §11.1)
    pub const CONTENT_TYPE: &[u64] = &[1, 2, 840, 113549, 1, 9, 3];
    /// id-messageDigest signed attribute (RFC 5652 §11.2)
    pub const MESSAGE_DIGEST: &[u64] = &[1, 2, 840, 113549, 1, 9, 4];
    /// id-signingTime signed attribute (RFC 5652 §11.3)
    pub const SIGNING_TIME: &[u64] = &[1, 2, 840, 113549, 1, 9, 5];
    /// szOID_RENEWAL_CERTIFICATE PKCS#10 attribute (MS-WCCE §2.2.2.7.3)
    pub const RENEWAL_CERTIFICATE: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 13, 1];
    /// rsaEncryption (RFC 3370 §3.2: valid as a CMS signatureAlgorithm)
    pub const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
    pub const SHA1: &[u64] = &[1, 3, 14, 3, 2, 26];
    pub const SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
    pub const SHA384: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 2];
    pub const SHA512: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 3];
    pub const SHA1_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 5];
    /// OIW sha1WithRSASignature, what Windows uses in its PKCS#10s.
    pub const OIW_SHA1_RSA: &[u64] = &[1, 3, 14, 3, 2, 29];
    pub const SHA256_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];
    pub const SHA384_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 12];
    pub const SHA512_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 13];
}

/// `true` if OID contents `value` encode `arcs`.
fn is_oid(value: &[u8], arcs: &[u64]) -> bool {
    value == der::oid_content(arcs).as_slice()
}

/// A verified renewal request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRenewal {
    /// The inner PKCS#10, verified with [`verify_csr`] (signature by the new
    /// key, RSA size policy).
    pub csr: VerifiedCsr,
    /// The certificate whose key signed the CMS: the identity being renewed.
    /// Only its key has been checked; the caller must still decide that it
    /// is a certificate we issued, current, not revoked, and (with ROBO) the
    /// same as the TLS client certificate.
    pub signer_cert_der: Vec<u8>,
    /// Uppercase hex SHA-1 of `signer_cert_der`.
    pub signer_thumbprint: String,
}

/// Why a renewal BinarySecurityToken was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RenewalError {
    /// Well-formed DER but not a ContentInfo of type signedData, e.g. a bare
    /// PKCS#10 (ValueType `#PKCS10`). The server decides whether to accept
    /// that through [`verify_csr`] plus TLS client authentication.
    #[error("renewal token is not a CMS SignedData")]
    NotSignedData,
    /// Not well-formed CMS (RFC 5652), or a variant we do not accept.
    #[error("malformed CMS: {0}")]
    Malformed(String),
    /// Digest, signature or signer key algorithm we do not accept.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// `certificates` holds no certificate matching the first SignerInfo's sid.
    #[error("no certificate in the CMS matches the signer")]
    NoSignerCertificate,
    /// The SignerInfo signature does not verify with the signer certificate's key.
    #[error("CMS signature does not verify")]
    BadSignature,
    /// The messageDigest signed attribute is not the digest of eContent.
    #[error("CMS messageDigest does not match the content")]
    DigestMismatch,
    /// The contentType signed attribute differs from eContentType.
    #[error("CMS contentType attribute does not match eContentType")]
    ContentTypeMismatch,
    /// The PKCS#10's szOID_RENEWAL_CERTIFICATE attribute names a certificate
    /// other than the signer's (MS-WCCE §3.2.1.4.2.1.4.2.1).
    #[error("renewal certificate attribute does not match the CMS signer")]
    RenewalCertificateMismatch,
    /// The inner PKCS#10 was rejected.
    #[error("inner PKCS#10: {0}")]
    Csr(#[from] CsrError),
}

impl From<DerError> for RenewalError {
    fn from(e: DerError) -> Self {
        RenewalError::Malformed(e.to_string())
    }
}

/// Digest algorithms accepted in `digestAlgorithm` (RFC 3370 §2.1, RFC 5754 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_digest_oid(value: &[u8]) -> Option<Hash> {
        [
            (oids::SHA1, Hash::Sha1),
            (oids::SHA256, Hash::Sha256),
            (oids::SHA384, Hash::Sha384),
            (oids::SHA512, Hash::Sha512),
        ]
        .into_iter()
        .find_map(|(arcs, h)| is_oid(value, arcs).then_some(h))
    }

    /// The hash named by a `sha*WithRSAEncryption` signature OID.
    fn from_rsa_signature_oid(value: &[u8]) -> Option<Hash> {
        [
            (oids::SHA1_RSA, Hash::Sha1),
            (oids::OIW_SHA1_RSA, Hash::Sha1),
            (oids::SHA256_RSA, Hash::Sha256),
            (oids::SHA384_RSA, Hash::Sha384),
            (oids::SHA512_RSA, Hash::Sha512),
        ]
        .into_iter()
        .find_map(|(arcs, h)| is_oid(value, arcs).then_some(h))
    }

    fn digest(self, data: &[u8]) -> digest::Digest {
        let alg = match self {
            Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data)
    }

    /// RSASSA-PKCS1-v1_5 verification parameters (RFC 8017 §8.2.2); the
    /// 2048-bit floor is aws-lc-rs' and matches our issuance policy.
    fn rsa_params(self) -> &'static signature::RsaParameters {
        match self {
            Hash::Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Hash::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Hash::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        }
    }
}

/// AlgorithmIdentifier (RFC 5280 §4.1.1.2) → OID contents. Parameters must
/// be absent or NULL: RFC 5754 §2 (SHA-2: absent, NULL accepted), RFC 3370
/// §2.1 (SHA-1) and §3.2 (rsaEncryption: NULL).
fn algorithm_oid<'a>(alg: &Tlv<'a>) -> Result<&'a [u8], RenewalError> {
    let mut r = Reader::new(alg.value);
    let oid = r.read(tag::OID)?;
    if let Some(params) = r.read_optional(tag::NULL)?
        && !params.value.is_empty()
    {
        return Err(RenewalError::Malformed("NULL with contents".into()));
    }
    if !r.is_empty() {
        return Err(RenewalError::UnsupportedAlgorithm(format!(
            "{} with parameters",
            der::oid_to_string(oid.value)
        )));
    }
    Ok(oid.value)
}

/// SignerIdentifier (RFC 5652 §5.3).
enum SignerId<'a> {
    /// issuer Name TLV and serialNumber INTEGER contents.
    IssuerAndSerial {
        issuer: &'a [u8],
        serial: &'a [u8],
    },
    SubjectKeyId(&'a [u8]),
}

struct SignerInfo<'a> {
    sid: SignerId<'a>,
    hash: Hash,
    /// `[0] IMPLICIT SET OF Attribute`, the whole TLV as received.
    signed_attrs: Option<Tlv<'a>>,
    signature_alg: &'a [u8],
    signature: &'a [u8],
}

fn parse_signer_info<'a>(si: &Tlv<'a>) -> Result<SignerInfo<'a>, RenewalError> {
    let mut r = Reader::new(si.value);
    let version = r.read(tag::INTEGER)?;
    // RFC 5652 §5.3: v1 with issuerAndSerialNumber, v3 with subjectKeyIdentifier.
    let sid = match r.peek_tag() {
        Some(tag::SEQUENCE) => {
            if version.value != [1] {
                return Err(RenewalError::Malformed("SignerInfo version is not 1".into()));
            }
            let ias = r.read(tag::SEQUENCE)?;
            let mut ir = Reader::new(ias.value);
            let issuer = ir.read(tag::SEQUENCE)?;
            let serial = ir.read(tag::INTEGER)?;
            ir.finish()?;
            SignerId::IssuerAndSerial {
                issuer: issuer.raw,
                serial: serial.value,
            }
        }
        // subjectKeyIdentifier [0] IMPLICIT OCTET STRING: primitive context 0.
        Some(0x80) => {
            if version.value != [3] {
                return Err(RenewalError::Malformed("SignerInfo version is not 3".into()));
            }
            SignerId::SubjectKeyId(r.read(0x80)?.value)
        }
        _ => return Err(RenewalError::Malformed("unknown SignerIdentifier".into())),
    };
    let digest_alg = r.read(tag::SEQUENCE)?;
    let digest_oid = algorithm_oid(&digest_alg)?;
    let hash = Hash::from_digest_oid(digest_oid)
        .ok_or_else(|| RenewalError::UnsupportedAlgorithm(format!("digest {}", der::oid_to_string(digest_oid))))?;
    let signed_attrs = r.read_optional(tag::CONTEXT_0)?;
    let sig_alg = r.read(tag::SEQUENCE)?;
    let signature_alg = algorithm_oid(&sig_alg)?;
    let signature = r.read(tag::OCTET_STRING)?.value;
    let _unsigned_attrs = r.read_optional(0xa1)?;
    r.finish()?;
    Ok(SignerInfo {
        sid,
        hash,
        signed_attrs,
        signature_alg,
        signature,
    })
}

/// Issuer Name TLV and serialNumber INTEGER contents of a DER Certificate
/// (RFC 5280 §4.1), read with our own walker so the bytes are exactly those
/// in the certificate (RFC 5652 §5.3 compares them as encoded).
fn issuer_and_serial(cert: &[u8]) -> Result<(&[u8], &[u8]), DerError> {
    let c = der::parse_single(cert, tag::SEQUENCE)?;
    let tbs = Reader::new(c.value).read(tag::SEQUENCE)?;
    let mut r = Reader::new(tbs.value);
    let _version = r.read_optional(tag::CONTEXT_0)?;
    let serial = r.read(tag::INTEGER)?;
    let _sig = r.read(tag::SEQUENCE)?;
    let issuer = r.read(tag::SEQUENCE)?;
    Ok((issuer.raw, serial.value))
}

fn subject_key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    })
}

/// Finds the certificate in `certificates [0] IMPLICIT CertificateSet`
/// (RFC 5652 §10.2.3) that `sid` names. Non-X.509 choices (tagged
/// alternatives) and certificates x509-parser rejects are skipped.
fn find_signer_cert<'a>(certs: Option<Tlv<'a>>, sid: &SignerId<'_>) -> Result<&'a [u8], RenewalError> {
    let certs = certs.ok_or(RenewalError::NoSignerCertificate)?;
    let mut r = Reader::new(certs.value);
    while !r.is_empty() {
        let choice = r.read_any()?;
        if choice.tag != tag::SEQUENCE {
            continue;
        }
        let matches = match sid {
            SignerId::IssuerAndSerial { issuer, serial } => {
                issuer_and_serial(choice.raw).is_ok_and(|(i, s)| i == *issuer && s == *serial)
            }
            SignerId::SubjectKeyId(id) => X509Certificate::from_der(choice.raw)
                .ok()
                .and_then(|(_, c)| subject_key_identifier(&c))
                .is_some_and(|ski| ski.as_slice() == *id),
        };
        if matches {
            return Ok(choice.raw);
        }
    }
    Err(RenewalError::NoSignerCertificate)
}

/// The single value of a signed attribute that must appear exactly once with
/// exactly one value (RFC 5652 §11.1, §11.2; §5.3 forbids duplicates of these).
fn single_attr_value<'a>(attrs: &Tlv<'a>, arcs: &[u64]) -> Result<Tlv<'a>, RenewalError> {
    let want = der::oid_content(arcs);
    let mut found = None;
    let mut r = Reader::new(attrs.value);
    while !r.is_empty() {
        let attr = r.read(tag::SEQUENCE)?;
        let mut ar = Reader::new(attr.value);
        let oid = ar.read(tag::OID)?;
        let values = ar.read(tag::SET)?;
        ar.finish()?;
        if oid.value != want.as_slice() {
            continue;
        }
        if found.is_some() {
            return Err(RenewalError::Malformed(format!(
                "attribute {} appears twice",
                der::oid_to_string(oid.value)
            )));
        }
        let mut vr = Reader::new(values.value);
        let value = vr.read_any()?;
        vr.finish()
            .map_err(|_| RenewalError::Malformed("attribute with several values".into()))?;
        found = Some(value);
    }
    found.ok_or_else(|| RenewalError::Malformed(format!("signed attribute {} missing", der::oid_to_string(&want))))
}

/// RSA public key (RFC 8017 A.1.1 RSAPublicKey) of the signer certificate.
fn signer_rsa_key(cert_der: &[u8]) -> Result<Vec<u8>, RenewalError> {
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| RenewalError::Malformed(format!("signer certificate: {e}")))?;
    let spki = cert.public_key();
    if !is_oid(spki.algorithm.algorithm.as_bytes(), oids::RSA_ENCRYPTION) {
        return Err(RenewalError::UnsupportedAlgorithm(format!(
            "signer key {}",
            spki.algorithm.algorithm.to_id_string()
        )));
    }
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => Ok(spki.subject_public_key.data.to_vec()),
        Ok(PublicKey::RSA(rsa)) => Err(RenewalError::UnsupportedAlgorithm(format!(
            "signer RSA key of {} bits",
            rsa.key_size()
        ))),
        _ => Err(RenewalError::Malformed("signer certificate RSA key".into())),
    }
}

/// Checks szOID_RENEWAL_CERTIFICATE in the (already verified) PKCS#10, if
/// present: MS-WCCE §3.2.1.4.2.1.4.2.1 requires it to be the certificate
/// that signed the CMS. Accepts the Certificate itself as the value, or an
/// OCTET STRING wrapping it.
fn check_renewal_certificate_attribute(csr_der: &[u8], signer_cert: &[u8]) -> Result<(), RenewalError> {
    let outer = der::parse_single(csr_der, tag::SEQUENCE)?;
    let info = Reader::new(outer.value).read(tag::SEQUENCE)?;
    let mut r = Reader::new(info.value);
    r.read(tag::INTEGER)?;
    r.read(tag::SEQUENCE)?;
    r.read(tag::SEQUENCE)?;
    let Some(attrs) = r.read_optional(tag::CONTEXT_0)? else {
        return Ok(());
    };
    let want = der::oid_content(oids::RENEWAL_CERTIFICATE);
    let mut ar = Reader::new(attrs.value);
    while !ar.is_empty() {
        let attr = ar.read(tag::SEQUENCE)?;
        let mut a = Reader::new(attr.value);
        let oid = a.read(tag::OID)?;
        let values = a.read(tag::SET)?;
        if oid.value != want.as_slice() {
            continue;
        }
        let mut vr = Reader::new(values.value);
        while !vr.is_empty() {
            let v = vr.read_any()?;
            let same = v.raw == signer_cert || (v.tag == tag::OCTET_STRING && v.value == signer_cert);
            if !same {
                return Err(RenewalError::RenewalCertificateMismatch);
            }
        }
    }
    Ok(())
}

/// The PKCS#10 DER from base64 eContent (manual renewal): whitespace and a trailing NUL, which
/// Windows' string APIs may leave, are ignored.
fn decode_base64_content(content: &[u8]) -> Result<Vec<u8>, RenewalError> {
    let text: Vec<u8> = content
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace() && *b != 0)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|_| RenewalError::Malformed("eContent is neither a DER PKCS#10 nor its base64".into()))
}

/// Parses and verifies a renewal BinarySecurityToken (the DER bytes after
/// base64): a CMS SignedData whose eContent is a PKCS#10 and whose first
/// SignerInfo is signed by a certificate included in `certificates`.
///
/// Checks, in order:
/// 1. ContentInfo (RFC 5652 §3) of type id-signedData, else
///    [`RenewalError::NotSignedData`] (e.g. a bare PKCS#10);
/// 2. SignedData (§5.1) structure, attached eContent (any eContentType; the
///    OCTET STRING must hold the PKCS#10);
/// 3. the first SignerInfo (§5.3; MS-WCCE: "the first SignerInfo ... MUST use
///    the key associated with the certificate to be renewed"): digest
///    sha1/sha256/sha384/sha512, signature rsaEncryption or
///    sha*WithRSAEncryption consistent with the digest;
/// 4. the signer certificate, chosen by issuerAndSerialNumber (issuer Name
///    bytes + serial) or subjectKeyIdentifier;
/// 5. the RSA PKCS#1 v1.5 signature: with signedAttrs over their DER with
///    the SET OF tag 0x31 (§5.4), and then contentType (§11.1) =
///    eContentType and messageDigest (§11.2) = digest(eContent); without,
///    directly over eContent;
/// 6. the PKCS#10 with [`verify_csr`] (new key, `min_rsa_bits`), and, when
///    present, its szOID_RENEWAL_CERTIFICATE attribute = the signer cert.
///
/// The signer certificate is *not* validated (chain, validity, revocation):
/// that is server policy on [`VerifiedRenewal::signer_cert_der`].
pub fn verify_renewal_request(der_in: &[u8], min_rsa_bits: usize) -> Result<VerifiedRenewal, RenewalError> {
    // --- ContentInfo (RFC 5652 §3) ---------------------------------------
    let ci = der::parse_single(der_in, tag::SEQUENCE)?;
    let mut r = Reader::new(ci.value);
    if r.peek_tag() != Some(tag::OID) {
        // A PKCS#10 starts with its certificationRequestInfo SEQUENCE.
        return Err(RenewalError::NotSignedData);
    }
    let content_type = r.read(tag::OID)?;
    if !is_oid(content_type.value, oids::SIGNED_DATA) {
        return Err(RenewalError::NotSignedData);
    }
    let content = r.read(tag::CONTEXT_0)?;
    r.finish()?;

    // --- SignedData (§5.1) -------------------------------------------------
    let sd = der::parse_single(content.value, tag::SEQUENCE)?;
    let mut sr = Reader::new(sd.value);
    let version = sr.read(tag::INTEGER)?;
    // CMSVersion v1, v3, v4 or v5 for SignedData (§5.1).
    if !matches!(version.value, [1] | [3] | [4] | [5]) {
        return Err(RenewalError::Malformed("unsupported SignedData version".into()));
    }
    let _digest_algorithms = sr.read(tag::SET)?;
    let encap = sr.read(tag::SEQUENCE)?;
    let certificates = sr.read_optional(tag::CONTEXT_0)?;
    let _crls = sr.read_optional(0xa1)?;
    let signer_infos = sr.read(tag::SET)?;
    sr.finish()?;

    // --- EncapsulatedContentInfo (§5.2) -------------------------------------
    let mut er = Reader::new(encap.value);
    let e_content_type = er.read(tag::OID)?;
    let wrapped = er
        .read_optional(tag::CONTEXT_0)?
        .ok_or_else(|| RenewalError::Malformed("detached content (no eContent)".into()))?;
    er.finish()?;
    let e_content = der::parse_single(wrapped.value, tag::OCTET_STRING)?.value;

    // --- first SignerInfo (§5.3) ------------------------------------------
    let first = Reader::new(signer_infos.value)
        .read(tag::SEQUENCE)
        .map_err(|_| RenewalError::Malformed("no SignerInfo".into()))?;
    let signer = parse_signer_info(&first)?;
    let hash = if is_oid(signer.signature_alg, oids::RSA_ENCRYPTION) {
        signer.hash
    } else {
        match Hash::from_rsa_signature_oid(signer.signature_alg) {
            Some(h) if h == signer.hash => h,
            Some(h) => {
                return Err(RenewalError::UnsupportedAlgorithm(format!(
                    "signature algorithm uses {h:?} but digestAlgorithm is {:?}",
                    signer.hash
                )));
            }
            None => {
                return Err(RenewalError::UnsupportedAlgorithm(format!(
                    "signature {}",
                    der::oid_to_string(signer.signature_alg)
                )));
            }
        }
    };
    let signer_cert = find_signer_cert(certificates, &signer.sid)?;
    let rsa_key = signer_rsa_key(signer_cert)?;

    // --- signature (§5.4, §5.6) ---------------------------------------------
    let signed: Cow<'_, [u8]> = match &signer.signed_attrs {
        Some(attrs) => {
            // "the DER encoding of the SET OF Attributes value": the same
            // bytes with the EXPLICIT SET OF tag instead of [0] IMPLICIT.
            let mut v = attrs.raw.to_vec();
            if let Some(t) = v.first_mut() {
                *t = tag::SET;
            }
            Cow::Owned(v)
        }
        None => Cow::Borrowed(e_content),
    };
    UnparsedPublicKey::new(hash.rsa_params(), &rsa_key)
        .verify(&signed, signer.signature)
        .map_err(|_| RenewalError::BadSignature)?;
    if let Some(attrs) = &signer.signed_attrs {
        let ct = single_attr_value(attrs, oids::CONTENT_TYPE)?;
        if ct.tag != tag::OID || ct.value != e_content_type.value {
            return Err(RenewalError::ContentTypeMismatch);
        }
        let md = single_attr_value(attrs, oids::MESSAGE_DIGEST)?;
        if md.tag != tag::OCTET_STRING {
            return Err(RenewalError::Malformed("messageDigest is not an OCTET STRING".into()));
        }
        if md.value != hash.digest(e_content).as_ref() {
            return Err(RenewalError::DigestMismatch);
        }
    }

    // --- the new PKCS#10 (RFC 2986) -----------------------------------------
    // Learn "certificate-renewal-windows-mdm": "With manual certificate renewal, base64 encoding
    // for PKCS#7 message content is required" — the signed content is then the base64 text of the
    // PKCS#10 rather than its DER. The signature above covers the bytes as sent either way.
    let decoded;
    let csr_der: &[u8] = if e_content.first() == Some(&tag::SEQUENCE) {
        e_content
    } else {
        decoded = decode_base64_content(e_content)?;
        &decoded
    };
    let csr = verify_csr(csr_der, min_rsa_bits)?;
    check_renewal_certificate_attribute(csr_der, signer_cert)?;

    Ok(VerifiedRenewal {
        csr,
        signer_cert_der: signer_cert.to_vec(),
        signer_thumbprint: sha1_thumbprint(signer_cert),
    })
}

/// Simulator side: builds the renewal BinarySecurityToken Windows sends (DER,
/// base64 it for the SOAP body).
///
/// The PKCS#10 is a [`build_windows_csr`] for `new_key` (OIW sha1WithRSA, as
/// the Windows enrollment client signs its requests). The CMS: SignedData v1,
/// id-data, `old_cert_der` as the only certificate, one SignerInfo v1 with
/// issuerAndSerialNumber, SHA-256, rsaEncryption (RFC 3370 §3.2, what
/// Windows' CryptMsg writes), signed by `old_key`. With
/// `with_signed_attributes`, signedAttrs contentType, signingTime and
/// messageDigest (RFC 5652 §11) like a Windows CMS; without, the signature is
/// directly over the PKCS#10.
///
/// Fails with [`PkiError::KeyMismatch`] if `old_key` is not the key of
/// `old_cert_der`.
pub fn build_renewal_request(
    new_key: &DeviceKey,
    subject_cn: &str,
    device_id: &str,
    old_cert_der: &[u8],
    old_key: &DeviceKey,
    with_signed_attributes: bool,
) -> Result<Vec<u8>, PkiError> {
    let (rest, cert) =
        X509Certificate::from_der(old_cert_der).map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(PkiError::InvalidCertificate("trailing data after certificate".into()));
    }
    if cert.public_key().raw != old_key.spki_der().as_slice() {
        return Err(PkiError::KeyMismatch);
    }
    let csr = build_windows_csr(new_key, subject_cn, device_id, CsrSignatureAlgorithm::Sha1RsaOiw)?;
    build_signed_data(&csr, old_cert_der, old_key, with_signed_attributes)
}

/// SigningTime value (RFC 5652 §11.3): UTCTime for 1950..=2049, else
/// GeneralizedTime, both `Z` and whole seconds.
fn signing_time(now: OffsetDateTime) -> Vec<u8> {
    let (y, m, d) = (now.year(), u8::from(now.month()), now.day());
    let (hh, mm, ss) = (now.hour(), now.minute(), now.second());
    if (1950..2050).contains(&y) {
        let s = format!("{:02}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z", y % 100);
        der::tlv(0x17, s.as_bytes())
    } else {
        let s = format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z");
        der::tlv(0x18, s.as_bytes())
    }
}

/// CMS SignedData over arbitrary `content` (id-data) signed by `key`, with
/// `cert` as the signer certificate. No key/certificate consistency check, so
/// tests can build mismatched messages.
fn build_signed_data(
    content: &[u8],
    cert: &[u8],
    key: &DeviceKey,
    with_signed_attributes: bool,
) -> Result<Vec<u8>, PkiError> {
    let (issuer, serial) = issuer_and_serial(cert)?;
    // RFC 5754 §2: SHA-2 AlgorithmIdentifiers are generated with absent parameters.
    let sha256 = der::sequence(&[&der::oid(oids::SHA256)]);
    let data_oid = der::oid(oids::DATA);

    let signed_attrs = if with_signed_attributes {
        let digest = digest::digest(&digest::SHA256, content);
        let attr = |arcs: &[u64], value: &[u8]| der::sequence(&[&der::oid(arcs), &der::set_of(&[value])]);
        let ct = attr(oids::CONTENT_TYPE, &data_oid);
        let st = attr(oids::SIGNING_TIME, &signing_time(OffsetDateTime::now_utc()));
        let md = attr(oids::MESSAGE_DIGEST, &der::octet_string(digest.as_ref()));
        // DER SET OF (sorted); this exact encoding is what gets signed (§5.4).
        Some(der::set_of(&[&ct, &st, &md]))
    } else {
        None
    };
    let signature = match &signed_attrs {
        Some(set) => key.sign(CsrSignatureAlgorithm::Sha256Rsa, set)?,
        None => key.sign(CsrSignatureAlgorithm::Sha256Rsa, content)?,
    };
    // In the SignerInfo the attributes are [0] IMPLICIT: same contents.
    let signed_attrs_field = match &signed_attrs {
        Some(set) => der::context_constructed(0, der::parse_single(set, tag::SET)?.value),
        None => Vec::new(),
    };

    let signer_info = der::sequence(&[
        &der::unsigned_int(&[1]),
        &der::sequence(&[issuer, &der::tlv(tag::INTEGER, serial)]),
        &sha256,
        &signed_attrs_field,
        &der::sequence(&[&der::oid(oids::RSA_ENCRYPTION), &der::null()]),
        &der::octet_string(&signature),
    ]);
    // Version 1: id-data, only X.509 certificates, v1 SignerInfos (§5.1).
    let signed_data = der::sequence(&[
        &der::unsigned_int(&[1]),
        &der::set_of(&[&sha256]),
        &der::sequence(&[&data_oid, &der::context_constructed(0, &der::octet_string(content))]),
        &der::context_constructed(0, cert),
        &der::set_of(&[&signer_info]),
    ]);
    Ok(der::sequence(&[
        &der::oid(oids::SIGNED_DATA),
        &der::context_constructed(0, &signed_data),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::tests::pki;
    use crate::csr_build::tests::{DEVICE_ID, device_key, windows_cn};
    use crate::tests_support::openssl;
    use crate::{DeviceCertParams, issue_device_certificate, pem_encode, random_bytes};
    use std::path::Path;
    use std::process::Command;
    use std::sync::OnceLock;
    use time::Duration;

    /// The key of the certificate being renewed is `device_key()`; this is
    /// the fresh key the device generated for the renewal.
    fn new_key() -> &'static DeviceKey {
        static KEY: OnceLock<DeviceKey> = OnceLock::new();
        KEY.get_or_init(|| DeviceKey::generate_rsa(2048).unwrap())
    }

    /// The current identity certificate of `device_key()`, from our issuing CA.
    fn old_cert() -> &'static [u8] {
        static CERT: OnceLock<Vec<u8>> = OnceLock::new();
        CERT.get_or_init(|| {
            let now = OffsetDateTime::now_utc();
            let params = DeviceCertParams {
                serial: random_bytes::<16>().unwrap(),
                common_name: DEVICE_ID.to_owned(),
                organizational_unit: None,
                not_before: now - Duration::days(300),
                not_after: now + Duration::days(65),
            };
            issue_device_certificate(&pki().issuing, &device_key().spki_der(), &params)
                .unwrap()
                .der
        })
    }

    fn renewal(with_attrs: bool) -> Vec<u8> {
        build_renewal_request(
            new_key(),
            &windows_cn(),
            DEVICE_ID,
            old_cert(),
            device_key(),
            with_attrs,
        )
        .unwrap()
    }

    fn assert_verified(v: &VerifiedRenewal) {
        assert_eq!(v.csr.spki_der, new_key().spki_der());
        assert_eq!(v.csr.device_id_extension.as_deref(), Some(DEVICE_ID));
        assert_eq!(v.signer_cert_der, old_cert());
        assert_eq!(v.signer_thumbprint, sha1_thumbprint(old_cert()));
        assert_eq!(v.signer_thumbprint.len(), 40);
        assert_eq!(v.signer_thumbprint, v.signer_thumbprint.to_uppercase());
    }

    /// Offset of the inner PKCS#10 inside a CMS built by us.
    fn csr_offset(cms: &[u8]) -> (usize, usize) {
        let csr = extract_content(cms);
        let pos = cms.windows(csr.len()).position(|w| w == csr.as_slice()).unwrap();
        (pos, csr.len())
    }

    fn extract_content(cms: &[u8]) -> Vec<u8> {
        let ci = der::parse_single(cms, tag::SEQUENCE).unwrap();
        let mut r = Reader::new(ci.value);
        r.read(tag::OID).unwrap();
        let sd = der::parse_single(r.read(tag::CONTEXT_0).unwrap().value, tag::SEQUENCE).unwrap();
        let mut sr = Reader::new(sd.value);
        sr.read(tag::INTEGER).unwrap();
        sr.read(tag::SET).unwrap();
        let mut er = Reader::new(sr.read(tag::SEQUENCE).unwrap().value);
        er.read(tag::OID).unwrap();
        let wrapped = er.read(tag::CONTEXT_0).unwrap();
        der::parse_single(wrapped.value, tag::OCTET_STRING)
            .unwrap()
            .value
            .to_vec()
    }

    fn first_signer_info(cms: &[u8]) -> Tlv<'_> {
        let ci = der::parse_single(cms, tag::SEQUENCE).unwrap();
        let mut r = Reader::new(ci.value);
        r.read(tag::OID).unwrap();
        let sd = der::parse_single(r.read(tag::CONTEXT_0).unwrap().value, tag::SEQUENCE).unwrap();
        let mut sr = Reader::new(sd.value);
        sr.read(tag::INTEGER).unwrap();
        sr.read(tag::SET).unwrap();
        sr.read(tag::SEQUENCE).unwrap();
        sr.read_optional(tag::CONTEXT_0).unwrap();
        let sis = sr.read(tag::SET).unwrap();
        Reader::new(sis.value).read(tag::SEQUENCE).unwrap()
    }

    /// Re-assembles a CMS with its `certificates` field replaced (None: absent).
    fn with_certificates(cms: &[u8], certs: Option<&[u8]>) -> Vec<u8> {
        let ci = der::parse_single(cms, tag::SEQUENCE).unwrap();
        let mut r = Reader::new(ci.value);
        let oid = r.read(tag::OID).unwrap();
        let sd = der::parse_single(r.read(tag::CONTEXT_0).unwrap().value, tag::SEQUENCE).unwrap();
        let mut sr = Reader::new(sd.value);
        let version = sr.read_any().unwrap();
        let digests = sr.read_any().unwrap();
        let encap = sr.read_any().unwrap();
        sr.read(tag::CONTEXT_0).unwrap();
        let signer_infos = sr.read(tag::SET).unwrap();
        sr.finish().unwrap();
        let certs = certs.map(|c| der::context_constructed(0, c)).unwrap_or_default();
        let sd = der::sequence(&[version.raw, digests.raw, encap.raw, &certs, signer_infos.raw]);
        der::sequence(&[oid.raw, &der::context_constructed(0, &sd)])
    }

    #[test]
    fn manual_renewal_with_base64_content() {
        // Manual renewal (Learn "certificate-renewal-windows-mdm"): the signed content is the
        // base64 text of the PKCS#10.
        let csr = build_windows_csr(new_key(), &windows_cn(), DEVICE_ID, CsrSignatureAlgorithm::Sha1RsaOiw).unwrap();
        let text = base64::engine::general_purpose::STANDARD.encode(&csr);
        for with_attrs in [true, false] {
            let cms = build_signed_data(text.as_bytes(), old_cert(), device_key(), with_attrs).unwrap();
            let v = verify_renewal_request(&cms, 2048).unwrap();
            assert_verified(&v);
        }
        let cms = build_signed_data(b"not base64 at all!", old_cert(), device_key(), true).unwrap();
        assert!(matches!(
            verify_renewal_request(&cms, 2048),
            Err(RenewalError::Malformed(_))
        ));
    }

    #[test]
    fn round_trip_with_and_without_signed_attributes() {
        for with_attrs in [true, false] {
            let cms = renewal(with_attrs);
            let v = verify_renewal_request(&cms, 2048).unwrap();
            assert_verified(&v);
            // The inner request is exactly what build_windows_csr makes.
            assert_eq!(v.csr.signature_algorithm, "sha1WithRSA (OIW 1.3.14.3.2.29)");
            assert_eq!(
                verify_csr(&extract_content(&cms), 2048).unwrap().spki_der,
                new_key().spki_der()
            );
        }
        // Policy minimum is applied to the new key.
        assert_eq!(
            verify_renewal_request(&renewal(true), 3072),
            Err(RenewalError::Csr(CsrError::KeyTooSmall { bits: 2048, min: 3072 }))
        );
    }

    #[test]
    fn builder_rejects_key_not_matching_certificate() {
        assert!(matches!(
            build_renewal_request(new_key(), "cn", DEVICE_ID, old_cert(), new_key(), true),
            Err(PkiError::KeyMismatch)
        ));
        assert!(matches!(
            build_renewal_request(new_key(), "cn", DEVICE_ID, b"junk", device_key(), true),
            Err(PkiError::InvalidCertificate(_))
        ));
    }

    #[test]
    fn tampered_content_is_rejected() {
        for (with_attrs, expected) in [
            (true, RenewalError::DigestMismatch),
            (false, RenewalError::BadSignature),
        ] {
            let mut cms = renewal(with_attrs);
            let (pos, len) = csr_offset(&cms);
            // A byte inside the subject CN, so the DER stays well-formed.
            cms[pos + 30] ^= 0x01;
            assert_eq!(verify_renewal_request(&cms, 2048), Err(expected));
            // The signature itself (last bytes of the only SignerInfo).
            let mut cms = renewal(with_attrs);
            let last = cms.len() - 1;
            cms[last] ^= 0x01;
            assert_eq!(verify_renewal_request(&cms, 2048), Err(RenewalError::BadSignature));
            assert!(pos + len < cms.len());
        }
    }

    #[test]
    fn signed_by_other_key_than_included_certificate() {
        let csr = build_windows_csr(new_key(), &windows_cn(), DEVICE_ID, CsrSignatureAlgorithm::Sha256Rsa).unwrap();
        for with_attrs in [true, false] {
            let cms = build_signed_data(&csr, old_cert(), new_key(), with_attrs).unwrap();
            assert_eq!(verify_renewal_request(&cms, 2048), Err(RenewalError::BadSignature));
        }
    }

    #[test]
    fn missing_or_unrelated_certificates() {
        let cms = renewal(true);
        assert_eq!(
            verify_renewal_request(&with_certificates(&cms, None), 2048),
            Err(RenewalError::NoSignerCertificate)
        );
        assert_eq!(
            verify_renewal_request(&with_certificates(&cms, Some(&[])), 2048),
            Err(RenewalError::NoSignerCertificate)
        );
        let p = pki();
        let others = [p.issuing.cert_der(), p.root.cert_der()].concat();
        assert_eq!(
            verify_renewal_request(&with_certificates(&cms, Some(&others)), 2048),
            Err(RenewalError::NoSignerCertificate)
        );
        // The signer is found among other certificates, in any position.
        let all = [p.issuing.cert_der(), old_cert(), p.root.cert_der()].concat();
        assert_verified(&verify_renewal_request(&with_certificates(&cms, Some(&all)), 2048).unwrap());
    }

    #[test]
    fn inner_csr_failures_are_csr_errors() {
        let mut csr =
            build_windows_csr(new_key(), &windows_cn(), DEVICE_ID, CsrSignatureAlgorithm::Sha1RsaOiw).unwrap();
        let last = csr.len() - 1;
        csr[last] ^= 0x01;
        for with_attrs in [true, false] {
            let cms = build_signed_data(&csr, old_cert(), device_key(), with_attrs).unwrap();
            assert_eq!(
                verify_renewal_request(&cms, 2048),
                Err(RenewalError::Csr(CsrError::BadSignature))
            );
        }
        let small = base64::engine::general_purpose::STANDARD
            .decode(crate::csr::tests::CSR_1024)
            .unwrap();
        let cms = build_signed_data(&small, old_cert(), device_key(), true).unwrap();
        assert_eq!(
            verify_renewal_request(&cms, 2048),
            Err(RenewalError::Csr(CsrError::KeyTooSmall { bits: 1024, min: 2048 }))
        );
        // eContent that is DER but not a PKCS#10 (e.g. a CMC PKIData).
        let cms = build_signed_data(&[0x30, 0x03, 0x02, 0x01, 0x00], old_cert(), device_key(), true).unwrap();
        assert!(matches!(
            verify_renewal_request(&cms, 2048),
            Err(RenewalError::Csr(CsrError::Malformed(_)))
        ));
        // Neither DER nor base64 text.
        let cms = build_signed_data(b"not a request", old_cert(), device_key(), true).unwrap();
        assert!(matches!(
            verify_renewal_request(&cms, 2048),
            Err(RenewalError::Malformed(_))
        ));
    }

    #[test]
    fn not_signed_data() {
        // A bare PKCS#10, as sent with ValueType #PKCS10.
        let csr = build_windows_csr(new_key(), &windows_cn(), DEVICE_ID, CsrSignatureAlgorithm::Sha1RsaOiw).unwrap();
        assert_eq!(verify_renewal_request(&csr, 2048), Err(RenewalError::NotSignedData));
        assert_eq!(
            verify_renewal_request(&crate::csr::tests::windows_csr(), 2048),
            Err(RenewalError::NotSignedData)
        );
        // ContentInfo of type envelopedData (1.2.840.113549.1.7.3).
        let enveloped = der::sequence(&[
            &der::oid(&[1, 2, 840, 113549, 1, 7, 3]),
            &der::context_constructed(0, &der::sequence(&[])),
        ]);
        assert_eq!(
            verify_renewal_request(&enveloped, 2048),
            Err(RenewalError::NotSignedData)
        );
        // Not DER at all.
        assert!(matches!(
            verify_renewal_request(b"MIIB...", 2048),
            Err(RenewalError::Malformed(_))
        ));
        assert!(matches!(
            verify_renewal_request(&[], 2048),
            Err(RenewalError::Malformed(_))
        ));
    }

    /// PKCS#10 for `new_key()` with an szOID_RENEWAL_CERTIFICATE attribute
    /// (MS-WCCE §2.2.2.7.3) holding `cert`.
    fn csr_with_renewal_attribute(cert: &[u8]) -> Vec<u8> {
        let name = der::sequence(&[&der::set_of(&[&der::sequence(&[
            &der::oid(&[2, 5, 4, 3]),
            &der::utf8_string("renewal"),
        ])])]);
        let attr = der::sequence(&[&der::oid(oids::RENEWAL_CERTIFICATE), &der::set_of(&[cert])]);
        let info = der::sequence(&[
            &der::unsigned_int(&[0]),
            &name,
            &new_key().spki_der(),
            &der::context_constructed(0, &attr),
        ]);
        let sig = new_key().sign(CsrSignatureAlgorithm::Sha256Rsa, &info).unwrap();
        der::sequence(&[
            &info,
            &der::sequence(&[&der::oid(oids::SHA256_RSA), &der::null()]),
            &der::bit_string(&sig),
        ])
    }

    #[test]
    fn renewal_certificate_attribute_must_name_the_signer() {
        let good = build_signed_data(&csr_with_renewal_attribute(old_cert()), old_cert(), device_key(), true).unwrap();
        assert_verified_signer(&verify_renewal_request(&good, 2048).unwrap());
        let other = csr_with_renewal_attribute(pki().issuing.cert_der());
        let bad = build_signed_data(&other, old_cert(), device_key(), true).unwrap();
        assert_eq!(
            verify_renewal_request(&bad, 2048),
            Err(RenewalError::RenewalCertificateMismatch)
        );
    }

    fn assert_verified_signer(v: &VerifiedRenewal) {
        assert_eq!(v.csr.spki_der, new_key().spki_der());
        assert_eq!(v.signer_cert_der, old_cert());
    }

    #[test]
    fn signing_time_encoding() {
        let t = time::macros::datetime!(2026-03-04 05:06:07 UTC);
        assert_eq!(signing_time(t), der::tlv(0x17, b"260304050607Z"));
        let t = time::macros::datetime!(2050-01-02 03:04:05 UTC);
        assert_eq!(signing_time(t), der::tlv(0x18, b"20500102030405Z"));
    }

    #[test]
    fn never_panics_on_mutations() {
        let originals = [renewal(true), renewal(false)];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for original in &originals {
            // Every proper prefix is rejected.
            for len in 0..original.len() {
                assert!(verify_renewal_request(&original[..len], 2048).is_err(), "len {len}");
            }
            // Every single bit flip in the first 200 bytes (ContentInfo and
            // SignedData headers, digest algorithms, the CSR's start) and in
            // the SignerInfo at the end: no panic. (Not all are errors: the
            // unsigned SignedData version may flip from 1 to 3 or 5.)
            let tail = original.len().saturating_sub(400);
            for pos in (0..200).chain(tail..original.len()) {
                for bit in 0..8 {
                    let mut m = original.clone();
                    m[pos] ^= 1 << bit;
                    let _ = verify_renewal_request(&m, 2048);
                }
            }
            for _ in 0..2000 {
                let mut m = original.clone();
                for _ in 0..1 + next() % 4 {
                    let pos = (next() as usize) % m.len().max(1);
                    match next() % 4 {
                        0 if !m.is_empty() => m[pos] = next() as u8,
                        1 if !m.is_empty() => m[pos] ^= 1 << (next() % 8),
                        2 => m.truncate(pos),
                        _ => m.insert(pos.min(m.len()), next() as u8),
                    }
                }
                // Only "no panic" is asserted; most mutations also fail.
                let _ = verify_renewal_request(&m, 2048);
            }
        }
        for len in 0..64 {
            let noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert!(verify_renewal_request(&noise, 2048).is_err());
        }
    }

    // --- cross-checks with the openssl CLI -----------------------------------

    fn run(openssl: &Path, args: &[&str], dir: &Path) -> std::process::Output {
        let out = Command::new(openssl).args(args).current_dir(dir).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    #[test]
    fn openssl_verifies_our_cms() {
        let Some(openssl) = openssl() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        for with_attrs in [true, false] {
            let cms = renewal(with_attrs);
            std::fs::write(dir.path().join("renewal.der"), &cms).unwrap();
            run(
                &openssl,
                &[
                    "cms",
                    "-verify",
                    "-binary",
                    "-inform",
                    "DER",
                    "-in",
                    "renewal.der",
                    "-noverify",
                    "-out",
                    "csr.der",
                ],
                dir.path(),
            );
            let out = std::fs::read(dir.path().join("csr.der")).unwrap();
            assert_eq!(out, extract_content(&cms));
            // Negative control: openssl rejects our message with a flipped
            // signature byte, so the check above is meaningful.
            let mut bad = cms.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x01;
            std::fs::write(dir.path().join("bad.der"), &bad).unwrap();
            let status = Command::new(&openssl)
                .args([
                    "cms",
                    "-verify",
                    "-binary",
                    "-inform",
                    "DER",
                    "-in",
                    "bad.der",
                    "-noverify",
                ])
                .args(["-out", "bad-out.der"])
                .current_dir(dir.path())
                .output()
                .unwrap()
                .status;
            assert!(!status.success());
            assert_eq!(verify_csr(&out, 2048).unwrap().spki_der, new_key().spki_der());
        }
    }

    #[test]
    fn we_verify_openssl_cms() {
        let Some(openssl) = openssl() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let csr = build_windows_csr(new_key(), &windows_cn(), DEVICE_ID, CsrSignatureAlgorithm::Sha1RsaOiw).unwrap();
        std::fs::write(dir.path().join("csr.der"), &csr).unwrap();
        std::fs::write(dir.path().join("cert.pem"), pem_encode("CERTIFICATE", old_cert())).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            pem_encode("PRIVATE KEY", &device_key().pkcs8_der()),
        )
        .unwrap();
        // Default (signed attributes, issuerAndSerialNumber), without signed
        // attributes, subjectKeyIdentifier, and every accepted digest.
        // (arguments, signed attributes expected, subjectKeyIdentifier sid expected, digest)
        let variants: [(&[&str], bool, bool, Hash); 6] = [
            (&["-md", "sha256"], true, false, Hash::Sha256),
            (&["-md", "sha256", "-noattr"], false, false, Hash::Sha256),
            (&["-md", "sha256", "-keyid"], true, true, Hash::Sha256),
            (&["-md", "sha1"], true, false, Hash::Sha1),
            (&["-md", "sha384", "-noattr", "-keyid"], false, true, Hash::Sha384),
            (&["-md", "sha512"], true, false, Hash::Sha512),
        ];
        for (extra, attrs, ski, hash) in variants {
            let mut args = vec![
                "cms",
                "-sign",
                "-binary",
                "-nodetach",
                "-outform",
                "DER",
                "-in",
                "csr.der",
                "-signer",
                "cert.pem",
                "-inkey",
                "key.pem",
                "-out",
                "cms.der",
            ];
            args.extend_from_slice(extra);
            run(&openssl, &args, dir.path());
            let cms = std::fs::read(dir.path().join("cms.der")).unwrap();
            let v = verify_renewal_request(&cms, 2048).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
            assert_verified(&v);
            // The variant really exercised the intended code path.
            let si = first_signer_info(&cms);
            let parsed = parse_signer_info(&si).unwrap();
            assert_eq!(parsed.signed_attrs.is_some(), attrs, "{extra:?}");
            assert_eq!(matches!(parsed.sid, SignerId::SubjectKeyId(_)), ski, "{extra:?}");
            assert_eq!(parsed.hash, hash, "{extra:?}");

            // And the same message with one content byte flipped fails.
            let pos = cms.windows(csr.len()).position(|w| w == csr.as_slice()).unwrap();
            let mut bad = cms.clone();
            bad[pos + 30] ^= 0x01;
            let err = verify_renewal_request(&bad, 2048).unwrap_err();
            assert!(
                matches!(err, RenewalError::DigestMismatch | RenewalError::BadSignature),
                "{extra:?}: {err}"
            );
        }
    }
}
