//! Error types. Messages never contain key material.

use thiserror::Error;

use crate::der::DerError;

/// Errors from certificate generation, issuance, key handling and sealing.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PkiError {
    /// rcgen refused to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Key generation or a cryptographic primitive failed.
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
    /// A private key could not be parsed or is unsupported.
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    /// `DeviceKey::generate_rsa` was asked for a size aws-lc-rs cannot generate.
    #[error("unsupported RSA key size {0} (supported: 2048, 3072, 4096, 8192)")]
    UnsupportedKeySize(usize),
    /// The private key does not belong to the certificate.
    #[error("private key does not match the certificate's public key")]
    KeyMismatch,
    /// A certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// A SubjectPublicKeyInfo could not be used.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    /// Caller-supplied parameters are inconsistent (e.g. empty host list).
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// DER encoding problem in our own inputs.
    #[error("DER error: {0}")]
    Der(#[from] DerError),
    /// Key-encryption key of the wrong size or encoding.
    #[error("invalid key-encryption key: {0}")]
    InvalidKek(&'static str),
    /// A v2 sealed blob names a KEK that is neither the current nor a previous one.
    #[error("sealed under the key-encryption key {0}, which is not configured (neither pki.kek nor a previous KEK)")]
    UnknownKek(crate::kek::KekId),
    /// A sealed blob is in neither the `steward-sealed-v1:` nor the `steward-sealed-v2:` format.
    #[error("malformed sealed blob: {0}")]
    SealedFormat(&'static str),
    /// Authentication failed while unsealing: wrong key, wrong label, or the
    /// blob was tampered with. Deliberately does not say which.
    #[error("unsealing failed: wrong key, wrong label or tampered data")]
    Unseal,
}

/// Why a PKCS#10 certification request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Not a well-formed DER CertificationRequest (RFC 2986 §4).
    #[error("malformed CSR: {0}")]
    Malformed(String),
    /// Signature algorithm OID we do not accept.
    #[error("unsupported CSR signature algorithm {0}")]
    UnsupportedSignatureAlgorithm(String),
    /// Signature does not verify over certificationRequestInfo.
    #[error("CSR signature does not verify")]
    BadSignature,
    /// The subject public key is not an acceptable RSA key.
    #[error("unsupported CSR public key: {0}")]
    UnsupportedKey(String),
    /// RSA modulus below policy minimum.
    #[error("RSA key too small: {bits} bits, minimum {min}")]
    KeyTooSmall { bits: usize, min: usize },
}

impl From<DerError> for CsrError {
    fn from(e: DerError) -> Self {
        CsrError::Malformed(e.to_string())
    }
}
