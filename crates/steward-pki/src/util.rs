//! Small helpers shared by the rest of the crate.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;

use crate::PkiError;

/// Uppercase hex SHA-1 of `der`: the certificate "thumbprint" Windows shows
/// and uses in `CertificateStore` paths. SHA-1 here is an identifier, not a
/// security mechanism.
pub fn sha1_thumbprint(der: &[u8]) -> String {
    hex::encode_upper(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der))
}

/// PEM text (RFC 7468 §2): `-----BEGIN label-----`, base64 in 64-column lines,
/// `-----END label-----`, with LF line endings and a trailing newline.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // base64 output is ASCII, so splitting on byte boundaries is safe.
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// `N` bytes from the operating system CSPRNG (via aws-lc-rs).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], PkiError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| PkiError::Crypto("random number generation failed"))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_is_upper_hex_sha1() {
        // SHA-1("abc") from FIPS 180-2 appendix A.
        assert_eq!(sha1_thumbprint(b"abc"), "A9993E364706816ABA3E25717850C26C9CD0D89D");
    }

    #[test]
    fn pem_wraps_at_64() {
        // 90 bytes -> 120 base64 characters -> lines of 64 and 56.
        let pem = pem_encode("CERTIFICATE", &[0u8; 90]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 56);
        assert_eq!(lines[3], "-----END CERTIFICATE-----");
        assert!(pem.ends_with("-----\n"));
        assert_eq!(pem_encode("X", &[]), "-----BEGIN X-----\n-----END X-----\n");
    }

    #[test]
    fn random_differs() {
        let a = random_bytes::<16>().unwrap();
        let b = random_bytes::<16>().unwrap();
        assert_ne!(a, b);
    }
}
