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

/// What the store keeps for a device's syncml:auth-md5 credential: its digest key and the first
/// nonce provisioned as w7 APPSRV AAUTHDATA (so the first message needs no challenge round trip,
/// interop review M-3), separated by a space (neither holds one: both are base64).
pub fn credential_record(key: &str, initial_nonce: &str) -> String {
    format!("{key} {initial_nonce}")
}

/// `(digest key, initial nonce)` of a [`credential_record`]; records written before the initial
/// nonce existed hold the key alone.
pub fn split_credential(record: &str) -> (&str, Option<&str>) {
    match record.split_once(' ') {
        Some((key, nonce)) => (key, Some(nonce)),
        None => (record, None),
    }
}

/// The NextNonce to give the device after a message whose Cred verified against `nonce_b64`: 16
/// fresh random bytes followed by the 16-byte digest that Cred carried. The device uses the new
/// nonce when its next session starts, but within this session it may keep sending the same Cred
/// (OMADM-LRN: after a 200 "the same credential must be sent within the next request"); the tail
/// lets [`verify_session_cred`] accept that without storing a second nonce. The tail reveals
/// nothing the device did not send itself.
pub fn next_session_nonce(key: &str, nonce_b64: &str) -> Option<String> {
    let digest = STANDARD.decode(expected(key, nonce_b64)?).ok()?;
    let fresh = steward_pki::random_bytes::<16>().ok()?;
    let mut nonce = fresh.to_vec();
    nonce.extend_from_slice(&digest);
    Some(STANDARD.encode(nonce))
}

/// Whether `presented` is the Cred this session started with, as carried by `stored` (a nonce from
/// [`next_session_nonce`]). Constant-time.
pub fn verify_session_cred(stored_b64: &str, presented: &str) -> bool {
    let Ok(stored) = STANDARD.decode(stored_b64.trim()) else {
        return false;
    };
    let Ok(presented) = STANDARD.decode(presented.trim()) else {
        return false;
    };
    stored.len() == 32 && aws_lc_rs::constant_time::verify_slices_are_equal(&stored[16..], &presented).is_ok()
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

    #[test]
    fn session_nonce_carries_the_sessions_cred() {
        let key = digest_key("user", "pass");
        let first = "bm9uY2UtMDEyMzQ1Njc4OQ==";
        let next = next_session_nonce(&key, first).unwrap();
        // The Cred built from the first nonce stays valid for the rest of the session…
        assert!(verify_session_cred(&next, "IagvI/t/492yRo1vR4LUJg=="));
        assert!(!verify_session_cred(&next, "IagvI/t/492yRo1vR4LUJh=="));
        assert!(!verify_session_cred(first, "IagvI/t/492yRo1vR4LUJg=="));
        // …and the next session's Cred is built from the new nonce as usual.
        let cred = expected(&key, &next).unwrap();
        assert!(verify(&key, &next, &cred));
        assert_eq!(
            split_credential(&credential_record(&key, first)),
            (key.as_str(), Some(first))
        );
        assert_eq!(split_credential(&key), (key.as_str(), None));
    }
}
