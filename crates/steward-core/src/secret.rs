//! Secrets as types: bearer tokens are generated here, shown once, and only their SHA-256 is stored;
//! human passwords are hashed with Argon2id. Neither a token nor a password can reach a log through
//! `Debug`.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

/// A string that must never be logged: `Debug` and `Display` print a placeholder, memory is zeroed on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }
    /// The secret itself, for the few places that must use it (hashing, printing it once to the operator).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// The kinds of bearer token Steward issues. The prefix makes a leaked token recognisable (secret
/// scanners) and lets the server route a credential without a database lookup.
/// NEVER change an existing prefix: tokens already handed out would stop working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Enrollment token: the UsernameToken password a device presents (MS-MDE2 OnPremise).
    Enrollment,
    /// Admin API token.
    Admin,
}

impl TokenKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            TokenKind::Enrollment => "stw_enr_",
            TokenKind::Admin => "stw_adm_",
        }
    }

    /// A new random token of this kind: prefix + 32 random bytes, base64url.
    pub fn generate(self) -> Result<SecretString, aws_lc_rs::error::Unspecified> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(bytes.as_mut())?;
        Ok(SecretString::new(format!(
            "{}{}",
            self.prefix(),
            URL_SAFE_NO_PAD.encode(bytes.as_ref())
        )))
    }

    pub fn matches(self, token: &str) -> bool {
        token.starts_with(self.prefix())
    }
}

/// SHA-256 of a high-entropy token. Tokens carry 256 bits of randomness, so a fast hash is enough
/// (Argon2 is for low-entropy human passwords only).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        let d = digest::digest(&digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(Self(v.try_into().ok()?))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not secret, but a short form is all a log needs.
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes: the OWASP baseline). Slow on purpose; call
/// from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| argon2::password_hash::Error::Crypto)?;
    let salt = SaltString::encode_b64(&salt)?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Constant-time verification of `password` against a stored PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = SecretString::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn tokens_are_prefixed_unique_and_hash_stably() {
        let a = TokenKind::Enrollment.generate().unwrap();
        let b = TokenKind::Enrollment.generate().unwrap();
        assert!(TokenKind::Enrollment.matches(a.expose()));
        assert!(!TokenKind::Admin.matches(a.expose()));
        assert_ne!(a, b);
        assert_eq!(TokenHash::of(a.expose()), TokenHash::of(a.expose()));
        assert_ne!(TokenHash::of(a.expose()), TokenHash::of(b.expose()));
        let h = TokenHash::of(a.expose());
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
    }

    #[test]
    fn password_hash_round_trip() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong", &phc));
        assert!(!verify_password("x", "not a phc string"));
    }
}
