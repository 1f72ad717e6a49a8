//! PKI for Steward, the Windows MDM server.
//!
//! - our CA hierarchy: a root CA, a device-identity issuing CA and a TLS
//!   server certificate ([`generate_root_ca`], [`generate_issuing_ca`],
//!   [`generate_tls_server_cert`]);
//! - lenient verification of the PKCS#10 requests Windows sends
//!   ([`verify_csr`]) and issuance of device client certificates from the
//!   request's public key only ([`issue_device_certificate`]);
//! - verification of the CMS-wrapped PKCS#10 Windows sends to renew its
//!   identity certificate ([`verify_renewal_request`]);
//! - sealing private keys at rest ([`Kek`]);
//! - for the device simulator, Windows-shaped requests ([`DeviceKey`],
//!   [`build_windows_csr`], [`build_renewal_request`]).
//!
//! Private keys never appear in `Debug` output or error messages.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod certs;
mod cms;
mod csr;
mod csr_build;
pub mod der;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_checks;
mod kek;
mod util;

#[cfg(test)]
mod tests_support;

pub use certs::{
    CertifiedKey, DeviceCertParams, IssuedCertificate, KeyAlgorithm, generate_issuing_ca, generate_root_ca,
    generate_tls_server_cert, issue_device_certificate, subject_attributes,
};
pub use cms::{RenewalError, VerifiedRenewal, build_renewal_request, verify_renewal_request};
pub use csr::{VerifiedCsr, verify_csr};
pub use csr_build::{
    CsrSignatureAlgorithm, DeviceKey, OID_MS_DEVICE_ID, build_csr_with_extensions, build_windows_csr, extension_der,
};
pub use error::{CsrError, PkiError};
pub use kek::{Kek, KekId, KekRing, SealedBy, sealed_by};
pub use util::{pem_encode, random_bytes, sha1_thumbprint};
