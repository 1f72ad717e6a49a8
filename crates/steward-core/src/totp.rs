//! Time-based one-time passwords for the console's second factor: RFC 6238 TOTP over RFC 4226 HOTP
//! with HMAC-SHA1, 6 digits and 30-second steps — the only parameters every authenticator app
//! (Google Authenticator, Microsoft Authenticator, 1Password, FreeOTP…) accepts without asking.
//!
//! The seed is a secret like a password but must be readable to compute codes, so the server keeps
//! it sealed under its data key and opens it only to verify. A code is accepted once: the store
//! records the last accepted time step per user and refuses a step at or below it, so a code seen
//! over someone's shoulder (or replayed by a proxy) cannot open a second session.

use std::fmt;

use aws_lc_rs::hmac;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// RFC 6238 §4: X, the step length.
pub const STEP_SECONDS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps accepted either side of now (RFC 6238 §5.2 recommends at most one): clocks of phones drift
/// and people type slowly.
pub const SKEW_STEPS: i64 = 1;
/// Seed length: 160 bits, the HMAC-SHA1 block-friendly size RFC 4226 §4 recommends.
pub const SECRET_BYTES: usize = 20;

/// A TOTP seed. `Debug` never shows it; memory is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("the random number generator failed")]
    Random,
    #[error("not a base32 TOTP secret")]
    BadSecret,
}

impl TotpSecret {
    pub fn generate() -> Result<Self, TotpError> {
        let mut b = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        aws_lc_rs::rand::fill(&mut b).map_err(|_| TotpError::Random)?;
        Ok(Self(b))
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, TotpError> {
        if b.len() < 10 {
            return Err(TotpError::BadSecret);
        }
        Ok(Self(Zeroizing::new(b.to_vec())))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The RFC 4648 base32 form (no padding) authenticator apps take when typed in.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32_encode(&self.0))
    }

    /// Accepts what a person may paste: any case, spaces and padding ignored.
    pub fn from_base32(s: &str) -> Result<Self, TotpError> {
        Self::from_bytes(&base32_decode(s).ok_or(TotpError::BadSecret)?)
    }

    /// The `otpauth://` URI of the Key Uri Format that authenticator apps read from a QR code.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> Zeroizing<String> {
        let label = format!("{}:{}", uri_escape(issuer), uri_escape(account));
        Zeroizing::new(format!(
            "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            base32_encode(&self.0),
            uri_escape(issuer)
        ))
    }

    /// RFC 4226 §5.3 HOTP value for counter `step`, as `DIGITS` decimal digits.
    pub fn code_at_step(&self, step: i64) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.0);
        let tag = hmac::sign(&key, &step.to_be_bytes());
        let h = tag.as_ref();
        // Dynamic truncation: the low nibble of the last byte picks 4 bytes, top bit masked.
        let off = usize::from(h[h.len() - 1] & 0x0f);
        let bin = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
        format!("{:0width$}", bin % 10u32.pow(DIGITS), width = DIGITS as usize)
    }

    /// The code an authenticator shows at `t`.
    pub fn code_at(&self, t: OffsetDateTime) -> String {
        self.code_at_step(step_of(t))
    }

    /// The time step `code` belongs to, if it is valid within ±`SKEW_STEPS` of `now` and later than
    /// `last_used_step` (each step is accepted once). Constant-time comparison per candidate.
    pub fn verify(&self, code: &str, now: OffsetDateTime, last_used_step: Option<i64>) -> Option<i64> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now_step = step_of(now);
        let mut found = None;
        for step in (now_step - SKEW_STEPS)..=(now_step + SKEW_STEPS) {
            let expected = self.code_at_step(step);
            let same = aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), code.as_bytes()).is_ok();
            if same && last_used_step.is_none_or(|l| step > l) && found.is_none() {
                found = Some(step);
            }
        }
        found
    }
}

/// RFC 6238 §4.2: T = floor((unix time − T0) / X), T0 = 0.
pub fn step_of(t: OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(STEP_SECONDS)
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buf >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.chars().filter(|c| !c.is_whitespace() && *c != '=' && *c != '-') {
        let v = ALPHABET.iter().position(|&a| char::from(a) == c.to_ascii_uppercase())?;
        buf = (buf << 5) | v as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buf >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn uri_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890").unwrap()
    }

    #[test]
    fn rfc6238_sha1_vectors_last_six_digits() {
        // RFC 6238 Appendix B (SHA1 column, 8 digits; we show the low 6, as apps do).
        let s = rfc_secret();
        for (t, eight) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            let at = OffsetDateTime::from_unix_timestamp(t).unwrap();
            assert_eq!(s.code_at(at), eight[2..], "t={t}");
        }
    }

    #[test]
    fn base32_round_trips_and_tolerates_typing() {
        let s = rfc_secret();
        assert_eq!(s.to_base32().as_str(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let back = TotpSecret::from_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap();
        assert_eq!(back, s);
        assert!(TotpSecret::from_base32("not base32!").is_err());
        for n in 10..=40 {
            let s = TotpSecret::from_bytes(&vec![0xA5; n]).unwrap();
            assert_eq!(TotpSecret::from_base32(&s.to_base32()).unwrap(), s);
        }
    }

    #[test]
    fn verify_accepts_skew_and_refuses_reuse_and_garbage() {
        let s = TotpSecret::generate().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let step = step_of(now);
        assert_eq!(s.verify(&s.code_at(now), now, None), Some(step));
        let prev = s.code_at_step(step - 1);
        assert_eq!(s.verify(&prev, now, None), Some(step - 1));
        assert_eq!(s.verify(&s.code_at_step(step - 2), now, None), None);
        assert_eq!(s.verify(&s.code_at_step(step + 2), now, None), None);
        // A step already used (or an older one) is refused.
        assert_eq!(s.verify(&s.code_at(now), now, Some(step)), None);
        assert_eq!(s.verify(&prev, now, Some(step - 1)), None);
        // Spaces are fine; anything else is not a code.
        let c = s.code_at(now);
        assert_eq!(s.verify(&format!("{} {}", &c[..3], &c[3..]), now, None), Some(step));
        for bad in ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦"] {
            assert_eq!(s.verify(bad, now, None), None, "{bad}");
        }
    }

    #[test]
    fn otpauth_uri_escapes_the_label() {
        let s = rfc_secret();
        let uri = s.otpauth_uri("Steward mdm.example.com", "alice@example.com");
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/Steward%20mdm.example.com:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Steward%20mdm.example.com&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(format!("{s:?}"), "TotpSecret(<redacted>)");
    }
}
