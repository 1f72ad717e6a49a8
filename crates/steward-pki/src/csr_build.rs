//! Device side, for the simulator and tests: an RSA key and PKCS#10 requests
//! shaped exactly like the ones Windows 10/11 send during MDM enrollment.
//!
//! Shape of a real request (win10-19043 capture, `openssl asn1parse`):
//! ```text
//! SEQUENCE
//!   SEQUENCE                                  -- certificationRequestInfo
//!     INTEGER 0
//!     SEQUENCE { SET { SEQUENCE { OID 2.5.4.3,
//!         PrintableString "562A7F9A-...-0DBDD8!B5B954E8...F4EE\0" } } }
//!     SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING RSAPublicKey }
//!     [0] { SEQUENCE { OID 1.2.840.113549.1.9.14,         -- extensionRequest
//!           SET { SEQUENCE { SEQUENCE { OID 1.3.6.1.4.1.311.66.1.0,
//!                 OCTET STRING "B5B954E8...F4EE\0" } } } } }   -- raw bytes
//!   SEQUENCE { OID 1.3.14.3.2.29, NULL }      -- OIW sha1WithRSA
//!   BIT STRING signature
//! ```
//!
//! Why there is a hand-written RSA signer here: aws-lc-rs signs RSA only with
//! SHA-256 or stronger and loads only keys of 2048 bits or more, but the
//! simulator must produce SHA-1 signatures (that is what Windows sends) and
//! negative tests need 1024-bit keys. Those cases use a textbook RSA-CRT
//! signature (RFC 8017 §8.2.1, EMSA-PKCS1-v1_5) with `num-bigint`, which is
//! **not constant time** and keeps key components in non-zeroized memory. That
//! is acceptable for a simulator's throwaway keys only; nothing on the server
//! side uses this code.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use num_bigint::BigUint;
use zeroize::Zeroizing;

use crate::PkiError;
use crate::der::{self, DerError, Reader, tag};

const OID_RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const OID_EXTENSION_REQUEST: &[u64] = &[1, 2, 840, 113549, 1, 9, 14];
/// Microsoft DeviceID request extension.
pub const OID_MS_DEVICE_ID: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 66, 1, 0];
const OID_OIW_SHA1_RSA: &[u64] = &[1, 3, 14, 3, 2, 29];
const OID_SHA256_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];

/// DigestInfo DER prefixes from RFC 8017 §9.2, note 1.
const DIGEST_INFO_SHA1: &[u8] = &[
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
const DIGEST_INFO_SHA256: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
];

/// Signature algorithm for simulated CSRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrSignatureAlgorithm {
    /// OIW sha1WithRSA 1.3.14.3.2.29 with NULL parameters, as Windows sends.
    Sha1RsaOiw,
    /// sha256WithRSAEncryption 1.2.840.113549.1.1.11.
    Sha256Rsa,
}

/// RSA private key components used by the fallback signer.
struct RsaCrt {
    n: BigUint,
    e: BigUint,
    p: BigUint,
    q: BigUint,
    dp: BigUint,
    dq: BigUint,
    qinv: BigUint,
}

impl RsaCrt {
    /// RSASP1 with CRT (RFC 8017 §5.2.1, case 2.b), checked against RSAVP1
    /// so a faulty computation never leaves the function.
    fn private_op(&self, m: &BigUint) -> Result<BigUint, PkiError> {
        let m1 = m.modpow(&self.dp, &self.p);
        let m2 = m.modpow(&self.dq, &self.q);
        // h = qInv * (m1 - m2) mod p, computed without going negative.
        let m2p = &m2 % &self.p;
        let diff = if m1 >= m2p { m1 - m2p } else { m1 + &self.p - m2p };
        let h = (&self.qinv * diff) % &self.p;
        let s = m2 + h * &self.q;
        if &s.modpow(&self.e, &self.n) != m {
            return Err(PkiError::Crypto("RSA signature self-check failed"));
        }
        Ok(s)
    }
}

/// A device RSA key. `Debug` shows only the modulus size.
pub struct DeviceKey {
    pkcs8: Zeroizing<Vec<u8>>,
    spki: Vec<u8>,
    modulus_len: usize,
    modulus_bits: usize,
    crt: RsaCrt,
    /// aws-lc-rs key pair, present for keys aws-lc-rs accepts (>= 2048 bits).
    aws: Option<RsaKeyPair>,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("rsa_bits", &self.modulus_bits)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

impl DeviceKey {
    /// Generates an RSA key with aws-lc-rs. Supported sizes: 2048 (what
    /// Windows uses), 3072, 4096, 8192. aws-lc-rs refuses to generate smaller
    /// keys; for 1024-bit negative tests load a pre-generated key with
    /// [`DeviceKey::from_pkcs8`] (e.g. `openssl genpkey -algorithm RSA
    /// -pkeyopt rsa_keygen_bits:1024 | openssl pkcs8 -topk8 -nocrypt -outform DER`).
    pub fn generate_rsa(bits: usize) -> Result<DeviceKey, PkiError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            8192 => KeySize::Rsa8192,
            other => return Err(PkiError::UnsupportedKeySize(other)),
        };
        let kp = RsaKeyPair::generate(size).map_err(|_| PkiError::Crypto("RSA key generation failed"))?;
        let pkcs8: Pkcs8V1Der<'static> = kp
            .as_der()
            .map_err(|_| PkiError::Crypto("PKCS#8 serialization failed"))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// Loads an unencrypted PKCS#8 (RFC 5208) RSA private key of any size
    /// from 512 bits up; keys below 2048 bits bypass aws-lc-rs (see module docs).
    pub fn from_pkcs8(der: &[u8]) -> Result<DeviceKey, PkiError> {
        let crt = parse_pkcs8_rsa(der).map_err(|e| PkiError::InvalidKey(e.to_string()))?;
        let modulus_bits =
            usize::try_from(crt.n.bits()).map_err(|_| PkiError::InvalidKey("modulus too large".into()))?;
        if !(512..=16384).contains(&modulus_bits) {
            return Err(PkiError::InvalidKey(format!(
                "unsupported RSA modulus size {modulus_bits}"
            )));
        }
        let aws = if modulus_bits >= 2048 {
            Some(RsaKeyPair::from_pkcs8(der).map_err(|e| PkiError::InvalidKey(e.to_string()))?)
        } else {
            None
        };
        let n_bytes = crt.n.to_bytes_be();
        let rsa_public_key = der::sequence(&[&der::unsigned_int(&n_bytes), &der::unsigned_int(&crt.e.to_bytes_be())]);
        // SubjectPublicKeyInfo for rsaEncryption (RFC 3279 §2.3.1).
        let spki = der::sequence(&[
            &der::sequence(&[&der::oid(OID_RSA_ENCRYPTION), &der::null()]),
            &der::bit_string(&rsa_public_key),
        ]);
        let key = DeviceKey {
            pkcs8: Zeroizing::new(der.to_vec()),
            spki,
            modulus_len: n_bytes.len(),
            modulus_bits,
            crt,
            aws,
        };
        // Consistency check: components must form a working key.
        key.crt.private_op(&BigUint::from(2u8))?;
        Ok(key)
    }

    /// The private key, PKCS#8 DER.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// The public key as a DER SubjectPublicKeyInfo (rsaEncryption, NULL).
    pub fn spki_der(&self) -> Vec<u8> {
        self.spki.clone()
    }

    /// Modulus size in bits.
    pub fn modulus_bits(&self) -> usize {
        self.modulus_bits
    }

    /// RSASSA-PKCS1-v1_5 signature over `msg` (RFC 8017 §8.2.1).
    pub fn sign(&self, alg: CsrSignatureAlgorithm, msg: &[u8]) -> Result<Vec<u8>, PkiError> {
        use aws_lc_rs::digest;
        if let (CsrSignatureAlgorithm::Sha256Rsa, Some(kp)) = (alg, &self.aws) {
            let mut sig = vec![0u8; kp.public_modulus_len()];
            kp.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
                .map_err(|_| PkiError::Crypto("RSA signing failed"))?;
            return Ok(sig);
        }
        let (prefix, hash) = match alg {
            CsrSignatureAlgorithm::Sha1RsaOiw => {
                (DIGEST_INFO_SHA1, digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, msg))
            }
            CsrSignatureAlgorithm::Sha256Rsa => (DIGEST_INFO_SHA256, digest::digest(&digest::SHA256, msg)),
        };
        // EMSA-PKCS1-v1_5 (RFC 8017 §9.2): 0x00 0x01 FF..FF 0x00 DigestInfo.
        let k = self.modulus_len;
        let t_len = prefix.len() + hash.as_ref().len();
        if k < t_len + 11 {
            return Err(PkiError::Crypto("RSA modulus too short for digest"));
        }
        let mut em = Vec::with_capacity(k);
        em.extend_from_slice(&[0x00, 0x01]);
        em.resize(k - t_len - 1, 0xff);
        em.push(0x00);
        em.extend_from_slice(prefix);
        em.extend_from_slice(hash.as_ref());
        let s = self.crt.private_op(&BigUint::from_bytes_be(&em))?;
        let s_bytes = s.to_bytes_be();
        // I2OSP to exactly k octets.
        let mut sig = vec![0u8; k.saturating_sub(s_bytes.len())];
        sig.extend_from_slice(&s_bytes);
        Ok(sig)
    }
}

fn parse_pkcs8_rsa(der_bytes: &[u8]) -> Result<RsaCrt, DerError> {
    // PrivateKeyInfo ::= SEQUENCE { version, privateKeyAlgorithm,
    //   privateKey OCTET STRING, [0] attributes OPTIONAL, ... } (RFC 5208 §5)
    let pki = der::parse_single(der_bytes, tag::SEQUENCE)?;
    let mut r = Reader::new(pki.value);
    r.read(tag::INTEGER)?;
    let alg = r.read(tag::SEQUENCE)?;
    let mut ar = Reader::new(alg.value);
    if ar.read(tag::OID)?.value != der::oid_content(OID_RSA_ENCRYPTION) {
        return Err(DerError::Invalid("not an RSA key"));
    }
    let private_key = r.read(tag::OCTET_STRING)?;
    // RSAPrivateKey ::= SEQUENCE { version, n, e, d, p, q, dP, dQ, qInv }
    // (RFC 8017 appendix A.1.2); version 0 = two-prime.
    let rsa = der::parse_single(private_key.value, tag::SEQUENCE)?;
    let mut kr = Reader::new(rsa.value);
    if kr.read(tag::INTEGER)?.value != [0] {
        return Err(DerError::Invalid("multi-prime RSA keys are not supported"));
    }
    let mut int = || -> Result<BigUint, DerError> {
        Ok(BigUint::from_bytes_be(der::unsigned_integer(
            kr.read(tag::INTEGER)?.value,
        )?))
    };
    let n = int()?;
    let e = int()?;
    let _d = int()?;
    let p = int()?;
    let q = int()?;
    let dp = int()?;
    let dq = int()?;
    let qinv = int()?;
    let zero = BigUint::from(0u8);
    if [&n, &e, &p, &q].iter().any(|v| **v == zero) {
        return Err(DerError::Invalid("zero RSA component"));
    }
    Ok(RsaCrt {
        n,
        e,
        p,
        q,
        dp,
        dq,
        qinv,
    })
}

/// One X.509 Extension (RFC 5280 §4.1): `SEQUENCE { extnID, critical
/// BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }`. `value` is placed in
/// the OCTET STRING verbatim (normally it is itself DER).
pub fn extension_der(oid_arcs: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    let oid = der::oid(oid_arcs);
    let value = der::octet_string(value);
    if critical {
        // DER omits a BOOLEAN equal to its DEFAULT (X.690 §11.5).
        der::sequence(&[&oid, &der::boolean(true), &value])
    } else {
        der::sequence(&[&oid, &value])
    }
}

/// Builds a DER PKCS#10 request like Windows 10/11: subject is a single CN
/// **PrintableString** holding `subject_cn` verbatim (Windows uses
/// `"<guid-prefix>!<DeviceID>\0"`; pass the NUL yourself), plus an
/// extensionRequest with 1.3.6.1.4.1.311.66.1.0 = `device_id` + NUL as raw
/// OCTET STRING contents.
pub fn build_windows_csr(
    key: &DeviceKey,
    subject_cn: &str,
    device_id: &str,
    alg: CsrSignatureAlgorithm,
) -> Result<Vec<u8>, PkiError> {
    let mut value = device_id.as_bytes().to_vec();
    value.push(0);
    let ext = extension_der(OID_MS_DEVICE_ID, false, &value);
    build_csr(key, subject_cn, &[ext], alg)
}

/// Like [`build_windows_csr`] but the extensionRequest holds exactly
/// `extra_extensions_der` (each a complete Extension, see [`extension_der`]),
/// e.g. BasicConstraints CA:TRUE or a SubjectAltName for negative tests.
/// To test signature checks, flip bytes at the end of the output (the
/// signature is the final BIT STRING).
pub fn build_csr_with_extensions(
    key: &DeviceKey,
    subject_cn: &str,
    extra_extensions_der: &[Vec<u8>],
    alg: CsrSignatureAlgorithm,
) -> Result<Vec<u8>, PkiError> {
    build_csr(key, subject_cn, extra_extensions_der, alg)
}

fn build_csr(
    key: &DeviceKey,
    subject_cn: &str,
    extensions: &[Vec<u8>],
    alg: CsrSignatureAlgorithm,
) -> Result<Vec<u8>, PkiError> {
    for ext in extensions {
        // Catch caller mistakes early instead of emitting broken DER.
        der::parse_single(ext, tag::SEQUENCE)?;
    }
    let name = der::sequence(&[&der::set_of(&[&der::sequence(&[
        &der::oid(OID_COMMON_NAME),
        &der::printable_string_raw(subject_cn.as_bytes()),
    ])])]);
    let attributes = if extensions.is_empty() {
        der::context_constructed(0, &[])
    } else {
        let ext_refs: Vec<&[u8]> = extensions.iter().map(Vec::as_slice).collect();
        let ext_seq = der::sequence(&ext_refs);
        let attr = der::sequence(&[&der::oid(OID_EXTENSION_REQUEST), &der::set_of(&[&ext_seq])]);
        der::context_constructed(0, &attr)
    };
    let info = der::sequence(&[&der::unsigned_int(&[0]), &name, &key.spki, &attributes]);
    let alg_oid = match alg {
        CsrSignatureAlgorithm::Sha1RsaOiw => OID_OIW_SHA1_RSA,
        CsrSignatureAlgorithm::Sha256Rsa => OID_SHA256_RSA,
    };
    let alg_id = der::sequence(&[&der::oid(alg_oid), &der::null()]);
    let signature = key.sign(alg, &info)?;
    Ok(der::sequence(&[&info, &alg_id, &der::bit_string(&signature)]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::csr::verify_csr;
    use crate::error::CsrError;
    use base64::Engine as _;
    use std::sync::OnceLock;

    /// 1024-bit RSA key, `openssl genpkey ... rsa_keygen_bits:1024` then
    /// `openssl pkcs8 -topk8 -nocrypt -outform DER`. Test-only, not secret.
    pub(crate) const RSA_1024_PKCS8: &str = "MIICdQIBADANBgkqhkiG9w0BAQEFAASCAl8wggJbAgEAAoGBAKP1T06+8d0Nxo0wkxcLTZht+kTdf93K3euWrVAk0C4FNdcUWfKqjTD5lXbUXw6KotpYCEBFmk8qGQEAr6z16HZ7MTcB4zRaT7t5iDC2S44D1RVRxq4LXcUn2wqaYIVNFifHJjOQCNAZknVu9YGnhlis0rj+whBqF7SNKfPZEyvRAgMBAAECgYBKzsyGs1yLbZOgK/+QzhlzaQp9jUqgGcWzjiY5oPJTbREptyFrNSICrH3jn/ZXHi47zVrGaHuFj0GlUXjWQ8TyPzzYpTFjCXbdwJMu7Xuxt0Sd+o6VgbS63zFomHpmchf59Rq1V1Q3HqajETaLsom2nBlR8K+yRCSqEA9RGsREIQJBANAcJgUIi5p1op4AmDgAKnj6aWn6HS5Qq8p4RuxcPaQ1jp58B8L5asgWgDcQkwpQcdQJ6txmbhrc8Dxqx+RXaZ0CQQDJsCnzvqCkpRv+6gDmuEuhie2CXCfL9fYk7iCE+4FXa+hF6+sGoU+MTWvLK0fzV5+Z7YzLWBB6SPFOsoZ3IJ7FAkBnrB4kk8U4BTIllBZAj5SY/+ZTrQ2sbPOnwZNTXAA5NZT+zrrvHmFbnBnzVIZrtPd/shEWCtD/AOGMt4Us837hAkB7yPpGliYERy3ii35YHJ6Wm4/BJYxrWx9iVSByXeZpYFojqAMMg67N/qp8/KhhStMy5yA1oWwjkWdBFMMAlG29AkA5B1QFVuI6pkhkx4VtBiE+NH8EJNfNiKhzn/jath5iHL0yEM3OeZfY+0LGKWQf+amtw9cYIkUYiZgrY2APH9yj";

    /// One 2048-bit device key per test binary.
    pub(crate) fn device_key() -> &'static DeviceKey {
        static KEY: OnceLock<DeviceKey> = OnceLock::new();
        KEY.get_or_init(|| DeviceKey::generate_rsa(2048).unwrap())
    }

    pub(crate) const DEVICE_ID: &str = "0123456789ABCDEF0123456789ABCDEF";

    pub(crate) fn windows_cn() -> String {
        format!("562A7F9A-6CD8-40B0-9E7E-0DBDD8!{DEVICE_ID}\0")
    }

    #[test]
    fn windows_shaped_csr_verifies_and_round_trips() {
        let key = device_key();
        let csr = build_windows_csr(key, &windows_cn(), DEVICE_ID, CsrSignatureAlgorithm::Sha1RsaOiw).unwrap();
        let v = verify_csr(&csr, 2048).unwrap();
        assert_eq!(v.rsa_modulus_bits, 2048);
        assert_eq!(v.signature_algorithm, "sha1WithRSA (OIW 1.3.14.3.2.29)");
        assert_eq!(v.device_id_extension.as_deref(), Some(DEVICE_ID));
        assert_eq!(
            v.subject_common_name.as_deref(),
            Some(format!("562A7F9A-6CD8-40B0-9E7E-0DBDD8!{DEVICE_ID}").as_str())
        );
        assert_eq!(v.spki_der, key.spki_der());

        let sha256 = build_windows_csr(key, &windows_cn(), DEVICE_ID, CsrSignatureAlgorithm::Sha256Rsa).unwrap();
        let v = verify_csr(&sha256, 2048).unwrap();
        assert_eq!(v.signature_algorithm, "sha256WithRSAEncryption (1.2.840.113549.1.1.11)");
        assert_eq!(v.device_id_extension.as_deref(), Some(DEVICE_ID));

        let mut bad = csr.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        assert_eq!(verify_csr(&bad, 2048), Err(CsrError::BadSignature));
    }

    #[test]
    fn same_shape_as_real_windows_csr() {
        // Rebuild the captured request's info with our encoder: identical
        // structure means identical bytes up to the key and signature.
        let real = crate::csr::tests::windows_csr();
        let cn = "562A7F9A-6CD8-40B0-9E7E-0DBDD8!B5B954E81FBCB94EB79BD08BE625F4EE\0";
        let ours = build_windows_csr(
            device_key(),
            cn,
            "B5B954E81FBCB94EB79BD08BE625F4EE",
            CsrSignatureAlgorithm::Sha1RsaOiw,
        )
        .unwrap();
        // Header + version + subject (offsets 0..88 in the capture).
        assert_eq!(ours[..88], real[..88]);
        // Attributes and signature algorithm (382..461).
        assert_eq!(ours.len(), real.len());
        assert_eq!(ours[382..461], real[382..461]);
    }

    #[test]
    fn sha256_csr_passes_openssl_req_verify() {
        let Some(openssl) = crate::tests_support::openssl() else {
            return;
        };
        let csr = build_windows_csr(device_key(), &windows_cn(), DEVICE_ID, CsrSignatureAlgorithm::Sha256Rsa).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("req.der");
        std::fs::write(&path, &csr).unwrap();
        let out = std::process::Command::new(openssl)
            .args(["req", "-inform", "DER", "-noout", "-verify", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl req -verify failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn small_key_from_pkcs8() {
        let der = base64::engine::general_purpose::STANDARD
            .decode(RSA_1024_PKCS8)
            .unwrap();
        let key = DeviceKey::from_pkcs8(&der).unwrap();
        assert_eq!(key.modulus_bits(), 1024);
        assert_eq!(key.pkcs8_der().as_slice(), der.as_slice());
        for alg in [CsrSignatureAlgorithm::Sha1RsaOiw, CsrSignatureAlgorithm::Sha256Rsa] {
            let csr = build_windows_csr(&key, "small", "DEV", alg).unwrap();
            assert_eq!(
                verify_csr(&csr, 2048),
                Err(CsrError::KeyTooSmall { bits: 1024, min: 2048 })
            );
        }
        // The SPKI matches the one openssl put in its own CSR for this key.
        let openssl_csr = base64::engine::general_purpose::STANDARD
            .decode(crate::csr::tests::CSR_1024)
            .unwrap();
        let spki = key.spki_der();
        assert!(openssl_csr.windows(spki.len()).any(|w| w == spki.as_slice()));
        assert!(format!("{key:?}").contains("redacted"));
    }

    #[test]
    fn sha1_signature_matches_aws_lc_verification_of_generated_key() {
        // A key generated by aws-lc-rs, signed by the fallback (SHA-1) path,
        // verified by aws-lc-rs: proves the hand-written signer is correct.
        use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, UnparsedPublicKey};
        let key = device_key();
        let sig = key.sign(CsrSignatureAlgorithm::Sha1RsaOiw, b"hello").unwrap();
        assert_eq!(sig.len(), 256);
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, key.spki_der())
            .verify(b"hello", &sig)
            .unwrap();
        let round = DeviceKey::from_pkcs8(&key.pkcs8_der()).unwrap();
        assert_eq!(round.spki_der(), key.spki_der());
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(matches!(
            DeviceKey::generate_rsa(1024),
            Err(PkiError::UnsupportedKeySize(1024))
        ));
        assert!(DeviceKey::from_pkcs8(b"junk").is_err());
        let ec = rcgen::KeyPair::generate().unwrap();
        assert!(DeviceKey::from_pkcs8(ec.serialized_der()).is_err());
        assert!(build_csr_with_extensions(device_key(), "x", &[vec![1, 2]], CsrSignatureAlgorithm::Sha256Rsa).is_err());
        assert_eq!(
            extension_der(&[2, 5, 29, 19], true, &[0x30, 0x00]),
            [
                0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x02, 0x30, 0x00
            ]
        );
    }
}
