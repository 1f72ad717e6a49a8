//! Lenient verification of PKCS#10 certification requests (RFC 2986).
//!
//! ```text
//! CertificationRequest ::= SEQUENCE {
//!      certificationRequestInfo CertificationRequestInfo,
//!      signatureAlgorithm       AlgorithmIdentifier,
//!      signature                BIT STRING }
//! CertificationRequestInfo ::= SEQUENCE {
//!      version       INTEGER { v1(0) },
//!      subject       Name,
//!      subjectPKInfo SubjectPublicKeyInfo,
//!      attributes    [0] IMPLICIT SET OF Attribute }
//! ```
//!
//! "Lenient" means exactly one thing: string values in the subject and in
//! attributes are not validated. Windows 10/11 put `!` and a trailing NUL in
//! a PrintableString (X.680 §41.4 forbids both), which makes strict parsers
//! reject genuine enrollment requests. The TLV structure itself is checked
//! strictly (DER lengths, no trailing data) and the signature is verified over
//! the exact certificationRequestInfo bytes, so leniency cannot be used to
//! smuggle anything: we only take the public key from the request.

use aws_lc_rs::signature::{self, UnparsedPublicKey};

use crate::der::{self, Reader, tag};
use crate::error::CsrError;

/// What we take from a CSR: the public key plus informational fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCsr {
    /// The SubjectPublicKeyInfo TLV exactly as in the CSR.
    pub spki_der: Vec<u8>,
    /// Bit length of the RSA modulus.
    pub rsa_modulus_bits: usize,
    /// Human-readable signature algorithm, e.g. `"sha1WithRSA (OIW 1.3.14.3.2.29)"`.
    pub signature_algorithm: &'static str,
    /// First CN in the subject, decoded lossily with NULs removed. Any
    /// string type is accepted. Informational only.
    pub subject_common_name: Option<String>,
    /// Value of extension 1.3.6.1.4.1.311.66.1.0 (Windows DeviceID) from the
    /// extensionRequest attribute, decoded lossily with NULs removed.
    pub device_id_extension: Option<String>,
}

/// OID contents (no tag/length), compared byte-wise.
mod oids {
    /// rsaEncryption 1.2.840.113549.1.1.1 (RFC 8017 appendix C)
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// sha1WithRSAEncryption 1.2.840.113549.1.1.5
    pub const SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
    /// sha256WithRSAEncryption 1.2.840.113549.1.1.11 (RFC 4055 §5)
    pub const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    /// sha384WithRSAEncryption 1.2.840.113549.1.1.12
    pub const SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    /// sha512WithRSAEncryption 1.2.840.113549.1.1.13
    pub const SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    /// OIW sha1WithRSASignature 1.3.14.3.2.29: what Windows MDM enrollment
    /// actually sends (see the win10-19043 capture).
    pub const OIW_SHA1_RSA: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1d];
    /// PKCS#9 extensionRequest 1.2.840.113549.1.9.14 (RFC 2985 §5.4.2)
    pub const EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
    /// Microsoft DeviceID request extension 1.3.6.1.4.1.311.66.1.0
    pub const MS_DEVICE_ID: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x42, 0x01, 0x00];
    /// id-at-commonName 2.5.4.3 (RFC 5280 appendix A)
    pub const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
}

/// The smallest RSA modulus aws-lc-rs' non-legacy verification parameters
/// accept; requests below it are never accepted whatever the policy says.
const ABSOLUTE_MIN_RSA_BITS: usize = 2048;
/// Largest modulus the verification parameters accept.
const MAX_RSA_BITS: usize = 8192;

/// Verifies a DER PKCS#10 request and extracts its public key.
///
/// Checks, in order: DER structure (definite minimal lengths, no trailing
/// data), version 0, RSA key (rsaEncryption with NULL parameters), modulus
/// size `>= max(min_rsa_bits, 2048)`, accepted signature algorithm, and the
/// signature over the exact certificationRequestInfo bytes.
pub fn verify_csr(der: &[u8], min_rsa_bits: usize) -> Result<VerifiedCsr, CsrError> {
    let outer = der::parse_single(der, tag::SEQUENCE)?;
    let mut r = Reader::new(outer.value);
    let info = r.read(tag::SEQUENCE)?;
    let sig_alg = r.read(tag::SEQUENCE)?;
    let signature = r.read(tag::BIT_STRING)?;
    r.finish()?;

    // --- certificationRequestInfo -------------------------------------
    let mut ir = Reader::new(info.value);
    let version = ir.read(tag::INTEGER)?;
    if version.value != [0] {
        return Err(CsrError::Malformed("unsupported CSR version".into()));
    }
    let subject = ir.read(tag::SEQUENCE)?;
    let spki = ir.read(tag::SEQUENCE)?;
    // RFC 2986 makes attributes mandatory, but some encoders omit an empty set.
    let attributes = ir.read_optional(tag::CONTEXT_0)?;
    ir.finish()?;

    // --- public key ----------------------------------------------------
    let (rsa_public_key, rsa_modulus_bits) = parse_rsa_spki(spki.value)?;
    let min = min_rsa_bits.max(ABSOLUTE_MIN_RSA_BITS);
    if rsa_modulus_bits < min {
        return Err(CsrError::KeyTooSmall {
            bits: rsa_modulus_bits,
            min,
        });
    }
    if rsa_modulus_bits > MAX_RSA_BITS {
        return Err(CsrError::UnsupportedKey(format!(
            "RSA modulus of {rsa_modulus_bits} bits exceeds {MAX_RSA_BITS}"
        )));
    }

    // --- signature algorithm -------------------------------------------
    let mut ar = Reader::new(sig_alg.value);
    let alg_oid = ar.read(tag::OID)?;
    // PKCS#1 v1.5 signature AlgorithmIdentifiers carry NULL parameters
    // (RFC 4055 §5); some encoders omit them, which is harmless.
    if ar.read_optional(tag::NULL)?.is_some_and(|n| !n.value.is_empty()) {
        return Err(CsrError::Malformed("NULL with contents".into()));
    }
    ar.finish()
        .map_err(|_| CsrError::Malformed("unexpected signature algorithm parameters".into()))?;
    let (params, name): (&'static signature::RsaParameters, &'static str) = match alg_oid.value {
        oids::OIW_SHA1_RSA => (
            &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "sha1WithRSA (OIW 1.3.14.3.2.29)",
        ),
        oids::SHA1_RSA => (
            &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "sha1WithRSAEncryption (1.2.840.113549.1.1.5)",
        ),
        oids::SHA256_RSA => (
            &signature::RSA_PKCS1_2048_8192_SHA256,
            "sha256WithRSAEncryption (1.2.840.113549.1.1.11)",
        ),
        oids::SHA384_RSA => (
            &signature::RSA_PKCS1_2048_8192_SHA384,
            "sha384WithRSAEncryption (1.2.840.113549.1.1.12)",
        ),
        oids::SHA512_RSA => (
            &signature::RSA_PKCS1_2048_8192_SHA512,
            "sha512WithRSAEncryption (1.2.840.113549.1.1.13)",
        ),
        other => {
            return Err(CsrError::UnsupportedSignatureAlgorithm(der::oid_to_string(other)));
        }
    };

    // --- signature -----------------------------------------------------
    let sig_bytes = der::bit_string_bytes(signature.value)?;
    // aws-lc-rs accepts the PKCS#1 RSAPublicKey (the SPKI BIT STRING
    // contents) as well as a whole SPKI; we pass the former, the documented
    // ring-compatible form.
    UnparsedPublicKey::new(params, rsa_public_key)
        .verify(info.raw, sig_bytes)
        .map_err(|_| CsrError::BadSignature)?;

    // --- informational fields (only after the signature checked out) -----
    let subject_common_name = common_name(subject.value);
    let device_id_extension = match attributes {
        Some(a) => device_id(a.value)?,
        None => None,
    };

    Ok(VerifiedCsr {
        spki_der: spki.raw.to_vec(),
        rsa_modulus_bits,
        signature_algorithm: name,
        subject_common_name,
        device_id_extension,
    })
}

/// Parses SubjectPublicKeyInfo contents (RFC 5280 §4.1.2.7) for an RSA key
/// (RFC 3279 §2.3.1). Returns the RSAPublicKey DER and the modulus bit length.
fn parse_rsa_spki(spki_value: &[u8]) -> Result<(&[u8], usize), CsrError> {
    let mut r = Reader::new(spki_value);
    let alg = r.read(tag::SEQUENCE)?;
    let key_bits = r.read(tag::BIT_STRING)?;
    r.finish()?;

    let mut ar = Reader::new(alg.value);
    let oid = ar.read(tag::OID)?;
    if oid.value != oids::RSA_ENCRYPTION {
        return Err(CsrError::UnsupportedKey(format!(
            "public key algorithm {} is not rsaEncryption",
            der::oid_to_string(oid.value)
        )));
    }
    // RFC 3279 §2.3.1: "the parameters field MUST have ASN.1 type NULL".
    // Also required so that the issued certificate carries the identical SPKI.
    let params = ar
        .read_any()
        .map_err(|_| CsrError::UnsupportedKey("rsaEncryption without NULL parameters".into()))?;
    if params.tag != tag::NULL || !params.value.is_empty() {
        return Err(CsrError::UnsupportedKey("rsaEncryption parameters are not NULL".into()));
    }
    ar.finish()?;

    let rsa_public_key = der::bit_string_bytes(key_bits.value)?;
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    // (RFC 8017 appendix A.1.1)
    let seq = der::parse_single(rsa_public_key, tag::SEQUENCE)?;
    let mut kr = Reader::new(seq.value);
    let n = der::unsigned_integer(kr.read(tag::INTEGER)?.value)?;
    let e = der::unsigned_integer(kr.read(tag::INTEGER)?.value)?;
    kr.finish()?;
    if e.is_empty() {
        return Err(CsrError::UnsupportedKey("RSA exponent is zero".into()));
    }
    let bits = match n.first() {
        None => 0,
        Some(&b) => (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
    };
    Ok((rsa_public_key, bits))
}

/// First commonName in a Name, whatever its string type; None if the Name
/// does not have the expected shape (the subject is informational only).
fn common_name(name_value: &[u8]) -> Option<String> {
    let mut rdns = Reader::new(name_value);
    while !rdns.is_empty() {
        let rdn = rdns.read(tag::SET).ok()?;
        let mut atvs = Reader::new(rdn.value);
        while !atvs.is_empty() {
            let atv = atvs.read(tag::SEQUENCE).ok()?;
            let mut ar = Reader::new(atv.value);
            let oid = ar.read(tag::OID).ok()?;
            let value = ar.read_any().ok()?;
            if oid.value == oids::COMMON_NAME {
                return Some(decode_string_lossy(value.tag, value.value));
            }
        }
    }
    None
}

/// Decodes any ASN.1 string type without validating its character set, then
/// strips NULs (Windows terminates strings with one).
fn decode_string_lossy(tag_byte: u8, bytes: &[u8]) -> String {
    let s = match tag_byte {
        tag::BMP_STRING => {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        tag::UNIVERSAL_STRING => bytes
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_be_bytes(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    };
    s.replace('\0', "")
}

/// Walks `attributes [0] IMPLICIT SET OF Attribute` looking for the
/// extensionRequest attribute (RFC 2985 §5.4.2) and, inside its
/// `Extensions` (RFC 5280 §4.1), the Microsoft DeviceID extension. Windows
/// puts the DeviceID + NUL directly as the extnValue OCTET STRING contents.
fn device_id(attrs_value: &[u8]) -> Result<Option<String>, CsrError> {
    let mut attrs = Reader::new(attrs_value);
    let mut found = None;
    while !attrs.is_empty() {
        let attr = attrs.read(tag::SEQUENCE)?;
        let mut ar = Reader::new(attr.value);
        let oid = ar.read(tag::OID)?;
        let values = ar.read(tag::SET)?;
        ar.finish()?;
        if oid.value != oids::EXTENSION_REQUEST {
            continue;
        }
        let mut vr = Reader::new(values.value);
        while !vr.is_empty() {
            let exts = vr.read(tag::SEQUENCE)?;
            let mut er = Reader::new(exts.value);
            while !er.is_empty() {
                let ext = er.read(tag::SEQUENCE)?;
                let mut xr = Reader::new(ext.value);
                let ext_oid = xr.read(tag::OID)?;
                let _critical = xr.read_optional(tag::BOOLEAN)?;
                let value = xr.read(tag::OCTET_STRING)?;
                xr.finish()?;
                if ext_oid.value == oids::MS_DEVICE_ID && found.is_none() {
                    found = Some(decode_string_lossy(tag::OCTET_STRING, value.value));
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The PKCS#10 from a real Windows 10 19043 enrollment
    /// (fixtures/windows/win10-19043-fleet-poc/03-enrollment.request.xml).
    pub(crate) fn windows_csr() -> Vec<u8> {
        use base64::Engine as _;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/windows/win10-19043-fleet-poc/03-enrollment.request.xml"
        );
        let xml = std::fs::read_to_string(path).unwrap();
        let start = xml.find("#PKCS10").unwrap();
        let open = start + xml[start..].find('>').unwrap() + 1;
        let close = open + xml[open..].find('<').unwrap();
        let b64: String = xml[open..close].chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
    }

    /// A 1024-bit RSA CSR made with `openssl req -new -newkey rsa:1024
    /// -subj /CN=small-key -outform DER` using
    /// the key in `crate::csr_build::tests::RSA_1024_PKCS8` (aws-lc-rs cannot create such keys).
    pub(crate) const CSR_1024: &str = "MIIBUzCBvQIBADAUMRIwEAYDVQQDDAlzbWFsbC1rZXkwgZ8wDQYJKoZIhvcNAQEBBQADgY0AMIGJAoGBAKP1T06+8d0Nxo0wkxcLTZht+kTdf93K3euWrVAk0C4FNdcUWfKqjTD5lXbUXw6KotpYCEBFmk8qGQEAr6z16HZ7MTcB4zRaT7t5iDC2S44D1RVRxq4LXcUn2wqaYIVNFifHJjOQCNAZknVu9YGnhlis0rj+whBqF7SNKfPZEyvRAgMBAAGgADANBgkqhkiG9w0BAQsFAAOBgQAzhradLMYsJo2PBouo3Mbz8W4Kis+x1Yb94UBVv4/zu15vPy8lA/5yuC6eemjlfNjwEa7UAUAchHuLpiAiiztVR2oYEgcuMfxFJyoIRnaHvRlhAq4JrVpQbcKWkYTxXJNzFvSX4uU7bJR2T4NKNueq3G29vigeV7b2T1ch2JzLkA==";

    #[test]
    fn real_windows_csr_verifies() {
        let v = verify_csr(&windows_csr(), 2048).unwrap();
        assert_eq!(v.rsa_modulus_bits, 2048);
        assert_eq!(v.signature_algorithm, "sha1WithRSA (OIW 1.3.14.3.2.29)");
        assert_eq!(
            v.device_id_extension.as_deref(),
            Some("B5B954E81FBCB94EB79BD08BE625F4EE")
        );
        let cn = v.subject_common_name.unwrap();
        assert!(cn.starts_with("562A7F9A-6CD8-40B0-9E7E-0DBDD8!B5B954E81FBCB94EB79BD08BE625F4EE"));
        assert!(!cn.contains('\0'));
        // The SPKI is the TLV at offset 88 (see `openssl asn1parse`), 4+290 bytes.
        assert_eq!(v.spki_der, windows_csr()[88..88 + 294]);
    }

    #[test]
    fn real_windows_csr_policy_minimum() {
        assert_eq!(
            verify_csr(&windows_csr(), 3072),
            Err(CsrError::KeyTooSmall { bits: 2048, min: 3072 })
        );
    }

    #[test]
    fn flipped_signature_byte_is_bad_signature() {
        let mut der = windows_csr();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert_eq!(verify_csr(&der, 2048), Err(CsrError::BadSignature));
    }

    #[test]
    fn flipped_subject_byte_is_bad_signature() {
        let mut der = windows_csr();
        // Offset 24 is inside the CN PrintableString value (starts at 22+2).
        assert_eq!(der[24], b'5');
        der[24] = b'6';
        assert_eq!(verify_csr(&der, 2048), Err(CsrError::BadSignature));
    }

    #[test]
    fn truncated_is_malformed() {
        let der = windows_csr();
        for len in [0, 1, 2, 4, 100, der.len() / 2, der.len() - 1] {
            assert!(
                matches!(verify_csr(&der[..len], 2048), Err(CsrError::Malformed(_))),
                "len {len}"
            );
        }
    }

    #[test]
    fn trailing_garbage_is_malformed() {
        let mut der = windows_csr();
        der.push(0);
        assert!(matches!(verify_csr(&der, 2048), Err(CsrError::Malformed(_))));
    }

    #[test]
    fn small_key_is_rejected() {
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD.decode(CSR_1024).unwrap();
        assert_eq!(
            verify_csr(&der, 2048),
            Err(CsrError::KeyTooSmall { bits: 1024, min: 2048 })
        );
        // Policy below the floor is raised to 2048.
        assert_eq!(
            verify_csr(&der, 512),
            Err(CsrError::KeyTooSmall { bits: 1024, min: 2048 })
        );
    }

    #[test]
    fn unsupported_signature_algorithm() {
        let mut der = windows_csr();
        // Signature OID 1.3.14.3.2.29 at offset 454: change last arc to 28.
        assert_eq!(der[454..459], [0x2b, 0x0e, 0x03, 0x02, 0x1d]);
        der[458] = 0x1c;
        assert_eq!(
            verify_csr(&der, 2048),
            Err(CsrError::UnsupportedSignatureAlgorithm("1.3.14.3.2.28".into()))
        );
    }

    #[test]
    fn non_rsa_key_is_unsupported() {
        // Re-label the key as id-ecPublicKey (1.2.840.10045.2.1) of equal length.
        let mut der = windows_csr();
        assert_eq!(der[96..105], *oids::RSA_ENCRYPTION);
        der[96..105].copy_from_slice(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x01, 0x01]);
        assert!(matches!(verify_csr(&der, 2048), Err(CsrError::UnsupportedKey(_))));
    }

    #[test]
    fn never_panics_on_garbage() {
        let original = windows_csr();
        // Deterministic xorshift so failures are reproducible.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut der = original.clone();
            let mutations = 1 + (next() % 4) as usize;
            for _ in 0..mutations {
                let pos = (next() as usize) % der.len();
                match next() % 4 {
                    0 => der[pos] = next() as u8,
                    1 => der[pos] ^= 1 << (next() % 8),
                    2 => der.truncate(pos.max(1)),
                    _ => der.insert(pos, next() as u8),
                }
            }
            // Any mutation of signed or structural bytes must be rejected;
            // the only goal here is "no panic".
            let _ = verify_csr(&der, 2048);
        }
        for len in 0..64 {
            let noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert!(verify_csr(&noise, 2048).is_err());
        }
        // Indefinite length at the top level.
        assert!(matches!(
            verify_csr(&[0x30, 0x80, 0x00, 0x00], 2048),
            Err(CsrError::Malformed(_))
        ));
        // Length beyond the buffer.
        assert!(matches!(
            verify_csr(&[0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x00], 2048),
            Err(CsrError::Malformed(_))
        ));
    }

    #[test]
    fn string_decoding() {
        assert_eq!(decode_string_lossy(tag::PRINTABLE_STRING, b"a!b\0"), "a!b");
        assert_eq!(decode_string_lossy(tag::BMP_STRING, &[0, b'h', 0, b'i', 0]), "hi");
        assert_eq!(decode_string_lossy(tag::UNIVERSAL_STRING, &[0, 0, 0, b'x']), "x");
        assert_eq!(decode_string_lossy(tag::UTF8_STRING, &[0xff]), "\u{fffd}");
    }
}
