//! `syncml:auth-md5` (OMA-DM Security 1.2 §5.3.2, as Windows' DM client and Fleet compute it):
//! the device proves knowledge of (name, secret) by sending
//! `b64(md5(b64(md5(name ":" secret)) ":" nonce))` where `nonce` is the raw bytes of the last
//! base64 NextNonce we gave it. We store only the digest key `b64(md5(name ":" secret))`.
//! MD5 is weak; this exists for clients behind proxies that strip TLS client certificates.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};

pub const AUTH_MD5: &str = "syncml:auth-md5";

pub fn digest_key(name: &str, secret: &str) -> String {
    STANDARD.encode(Md5::digest(format!("{name}:{secret}").as_bytes()))
}

fn expected(key: &str, nonce_b64: &str) -> Option<String> {
    let nonce = STANDARD.decode(nonce_b64.trim()).ok()?;
    let mut h = Md5::new();
    h.update(key.as_bytes());
    h.update(b":");
    h.update(&nonce);
    Some(STANDARD.encode(h.finalize()))
}

/// Constant-time check of the presented Cred Data.
pub fn verify(key: &str, nonce_b64: &str, presented: &str) -> bool {
    match expected(key, nonce_b64) {
        Some(e) => aws_lc_rs::constant_time::verify_slices_are_equal(e.as_bytes(), presented.trim().as_bytes()).is_ok(),
        None => false,
    }
}

/// A fresh NextNonce (16 random bytes, base64).
pub fn new_nonce() -> Option<String> {
    steward_pki::random_bytes::<16>().ok().map(|b| STANDARD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_simulator_vector() {
        // Same vector the simulator's unit test computed with python3:
        // user/pass, nonce "nonce-0123456789" (base64 bm9uY2UtMDEyMzQ1Njc4OQ==).
        let key = digest_key("user", "pass");
        assert!(verify(&key, "bm9uY2UtMDEyMzQ1Njc4OQ==", "IagvI/t/492yRo1vR4LUJg=="));
        assert!(!verify(&key, "bm9uY2UtMDEyMzQ1Njc4OQ==", "IagvI/t/492yRo1vR4LUJh=="));
        assert!(!verify(&key, "not base64!", "IagvI/t/492yRo1vR4LUJg=="));
        assert_ne!(new_nonce(), new_nonce());
    }
}
