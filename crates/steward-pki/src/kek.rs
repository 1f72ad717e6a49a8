//! Sealing private keys at rest with a key-encryption key (KEK).
//!
//! Format (text, so it can live in a file or a database column):
//! `steward-sealed-v1:` + base64(nonce[12] || ciphertext || tag[16]),
//! AES-256-GCM (NIST SP 800-38D) with a fresh random 96-bit nonce per seal.
//! The caller's `label` is bound as additional authenticated data, so a sealed
//! blob moved to another slot (e.g. the issuing CA key swapped in for the root
//! key) fails to open.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::PkiError;
use crate::util::random_bytes;

const PREFIX: &str = "steward-sealed-v1:";
/// Domain separation for the AAD so labels cannot collide with other uses of
/// the same KEK in a future format version.
const AAD_CONTEXT: &[u8] = b"steward-sealed-v1\0";
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// AES-256-GCM key-encryption key. `Debug` prints `Kek(..)`.
pub struct Kek {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    key: LessSafeKey,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    /// A new random KEK.
    pub fn generate() -> Result<Kek, PkiError> {
        let bytes = Zeroizing::new(random_bytes::<KEY_LEN>()?);
        Self::from_bytes(bytes.as_slice())
    }

    /// A KEK from exactly 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Kek, PkiError> {
        let arr: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| PkiError::InvalidKek("must be exactly 32 bytes"))?;
        let arr = Zeroizing::new(arr);
        let unbound = UnboundKey::new(&AES_256_GCM, arr.as_slice())
            .map_err(|_| PkiError::InvalidKek("rejected by AES-256-GCM"))?;
        Ok(Kek {
            bytes: arr,
            key: LessSafeKey::new(unbound),
        })
    }

    /// Standard base64 (with padding) of the raw key.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.as_slice()))
    }

    /// Parses the output of [`Kek::to_base64`]; surrounding whitespace is
    /// ignored (keys often come from files or environment variables).
    pub fn from_base64(s: &str) -> Result<Kek, PkiError> {
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|_| PkiError::InvalidKek("not valid base64"))?,
        );
        Self::from_bytes(&raw)
    }

    fn aad(label: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_CONTEXT.len() + label.len());
        aad.extend_from_slice(AAD_CONTEXT);
        aad.extend_from_slice(label.as_bytes());
        aad
    }

    /// Encrypts `plaintext`, binding `label` (e.g. `"root-ca.key"`).
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<String, PkiError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        // Random 96-bit nonces: safe for far more than the handful of keys we
        // ever seal under one KEK (SP 800-38D §8.3 allows 2^32 invocations).
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        // Zeroizing: the buffer holds the plaintext until it is encrypted in place.
        let mut in_out = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        in_out.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(Self::aad(label)), &mut *in_out)
            .map_err(|_| PkiError::Crypto("AES-GCM seal failed"))?;
        let mut buf = Vec::with_capacity(NONCE_LEN + in_out.len());
        buf.extend_from_slice(&nonce_bytes);
        buf.extend_from_slice(&in_out);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(&buf)
        ))
    }

    /// Decrypts a blob from [`Kek::seal`] with the same `label`.
    /// Authentication failure (wrong key, wrong label, tampering) is
    /// [`PkiError::Unseal`]; a blob that is not in our format is
    /// [`PkiError::SealedFormat`].
    pub fn open(&self, label: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, PkiError> {
        let b64 = sealed
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(PkiError::SealedFormat("missing steward-sealed-v1 prefix"))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| PkiError::SealedFormat("not valid base64"))?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(PkiError::SealedFormat("too short"));
        }
        let (nonce_bytes, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| PkiError::SealedFormat("bad nonce"))?;
        let mut in_out = Zeroizing::new(ct.to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(Self::aad(label)), &mut in_out)
            .map_err(|_| PkiError::Unseal)?
            .len();
        in_out.truncate(plain_len);
        Ok(in_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let kek = Kek::generate().unwrap();
        let sealed = kek.seal("root-ca.key", b"secret key bytes").unwrap();
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("secret"));
        assert_eq!(
            kek.open("root-ca.key", &sealed).unwrap().as_slice(),
            b"secret key bytes"
        );
        // Fresh nonce each time.
        assert_ne!(sealed, kek.seal("root-ca.key", b"secret key bytes").unwrap());
        // Empty plaintext works too.
        let e = kek.seal("x", b"").unwrap();
        assert!(kek.open("x", &e).unwrap().is_empty());
    }

    #[test]
    fn wrong_key_or_label_fails() {
        let kek = Kek::generate().unwrap();
        let other = Kek::generate().unwrap();
        let sealed = kek.seal("root-ca.key", b"k").unwrap();
        assert!(matches!(other.open("root-ca.key", &sealed), Err(PkiError::Unseal)));
        assert!(matches!(kek.open("issuing-ca.key", &sealed), Err(PkiError::Unseal)));
    }

    #[test]
    fn tampering_fails() {
        let kek = Kek::generate().unwrap();
        let sealed = kek.seal("l", b"some plaintext").unwrap();
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(&sealed[PREFIX.len()..])
            .unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            let t = format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(&raw));
            assert!(matches!(kek.open("l", &t), Err(PkiError::Unseal)), "byte {i}");
            raw[i] ^= 1;
        }
        assert!(matches!(kek.open("l", "nope"), Err(PkiError::SealedFormat(_))));
        assert!(matches!(
            kek.open("l", "steward-sealed-v1:!!"),
            Err(PkiError::SealedFormat(_))
        ));
        assert!(matches!(
            kek.open("l", "steward-sealed-v1:AAAA"),
            Err(PkiError::SealedFormat(_))
        ));
    }

    #[test]
    fn encoding_and_debug() {
        let kek = Kek::generate().unwrap();
        let b64 = kek.to_base64();
        let again = Kek::from_base64(&format!(" {}\n", b64.as_str())).unwrap();
        let sealed = kek.seal("l", b"x").unwrap();
        assert_eq!(again.open("l", &sealed).unwrap().as_slice(), b"x");
        assert_eq!(format!("{kek:?}"), "Kek(..)");
        assert!(Kek::from_bytes(&[0; 31]).is_err());
        assert!(Kek::from_bytes(&[0; 33]).is_err());
        assert!(Kek::from_bytes(&[0; 32]).is_ok());
        assert!(Kek::from_base64("not base64!").is_err());
    }
}
