//! A deliberately small DER reader and writer (ITU-T X.690 §8/§10).
//!
//! Why not a full ASN.1 library: PKCS#10 requests produced by Windows put
//! characters that are illegal in a `PrintableString` (`!` and a trailing NUL)
//! into the subject, and strict parsers reject the whole request. We only need
//! to walk TLVs, keep the exact bytes that were signed, and pick out a few
//! fields, so a tiny TLV walker is easier to audit than relaxing a big parser.
//!
//! Reader rules (security relevant, because the input is attacker-controlled):
//! - definite lengths only (X.690 §10.1: DER forbids the indefinite form);
//! - lengths must be minimally encoded and fit in the remaining buffer;
//! - only the low-tag-number form (tag numbers 0..=30) is supported;
//! - nothing here panics or allocates proportional to a claimed length.

use thiserror::Error;

/// Universal tags and the context tags we use (X.690 §8.1.2, X.680 §8.4).
pub mod tag {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const T61_STRING: u8 = 0x14;
    pub const IA5_STRING: u8 = 0x16;
    pub const UNIVERSAL_STRING: u8 = 0x1c;
    pub const BMP_STRING: u8 = 0x1e;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// `[0]` constructed, context-specific.
    pub const CONTEXT_0: u8 = 0xa0;
}

/// Errors from the TLV reader.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DerError {
    #[error("unexpected end of input")]
    Truncated,
    #[error("indefinite length is not allowed in DER")]
    IndefiniteLength,
    #[error("length field is not minimally encoded")]
    NonMinimalLength,
    #[error("length field too large")]
    LengthTooLarge,
    #[error("high tag numbers are not supported")]
    HighTagNumber,
    #[error("expected tag 0x{expected:02x}, found 0x{found:02x}")]
    UnexpectedTag { expected: u8, found: u8 },
    #[error("trailing data after DER element")]
    TrailingData,
    #[error("invalid encoding: {0}")]
    Invalid(&'static str),
}

/// One tag-length-value element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The identifier octet (class, constructed bit, tag number).
    pub tag: u8,
    /// The contents octets.
    pub value: &'a [u8],
    /// The whole element (identifier, length and contents), exactly as read.
    pub raw: &'a [u8],
}

/// Sequential reader over a buffer of concatenated TLVs.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Tag of the next element without consuming it.
    pub fn peek_tag(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// Reads the next TLV of any tag.
    pub fn read_any(&mut self) -> Result<Tlv<'a>, DerError> {
        let buf = self.buf;
        let (&tag, rest) = buf.split_first().ok_or(DerError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::HighTagNumber);
        }
        let (&first_len, mut rest) = rest.split_first().ok_or(DerError::Truncated)?;
        let len: usize = if first_len < 0x80 {
            usize::from(first_len)
        } else if first_len == 0x80 {
            return Err(DerError::IndefiniteLength);
        } else {
            // Long form (X.690 §8.1.3.5). Four length octets (4 GiB) are far
            // beyond anything we accept; bigger would only be an attack.
            let n = usize::from(first_len & 0x7f);
            if n > 4 {
                return Err(DerError::LengthTooLarge);
            }
            let (len_bytes, after) = rest.split_at_checked(n).ok_or(DerError::Truncated)?;
            rest = after;
            let mut len = 0usize;
            for &b in len_bytes {
                len = (len << 8) | usize::from(b);
            }
            // DER (X.690 §10.1): the shortest possible length encoding.
            if len < 0x80 || len_bytes.first() == Some(&0) {
                return Err(DerError::NonMinimalLength);
            }
            len
        };
        let (value, after) = rest.split_at_checked(len).ok_or(DerError::Truncated)?;
        let header_len = buf.len() - rest.len();
        let raw = buf.get(..header_len + len).ok_or(DerError::Truncated)?;
        self.buf = after;
        Ok(Tlv { tag, value, raw })
    }

    /// Reads the next TLV and checks its tag.
    pub fn read(&mut self, expected: u8) -> Result<Tlv<'a>, DerError> {
        let found = self.peek_tag().ok_or(DerError::Truncated)?;
        if found != expected {
            return Err(DerError::UnexpectedTag { expected, found });
        }
        self.read_any()
    }

    /// Reads the next TLV only if it carries `tag`.
    pub fn read_optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, DerError> {
        if self.peek_tag() == Some(tag) {
            self.read_any().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Fails unless all input was consumed.
    pub fn finish(&self) -> Result<(), DerError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DerError::TrailingData)
        }
    }
}

/// Parses `buf` as exactly one TLV with the given tag and nothing after it.
pub fn parse_single(buf: &[u8], expected: u8) -> Result<Tlv<'_>, DerError> {
    let mut r = Reader::new(buf);
    let tlv = r.read(expected)?;
    r.finish()?;
    Ok(tlv)
}

/// Returns the magnitude of a non-negative INTEGER's contents with leading
/// zero octets removed (X.690 §8.3). Negative or empty integers are rejected.
pub fn unsigned_integer(value: &[u8]) -> Result<&[u8], DerError> {
    match value.first() {
        None => Err(DerError::Invalid("empty INTEGER")),
        Some(b) if b & 0x80 != 0 => Err(DerError::Invalid("negative INTEGER")),
        Some(_) => {
            let start = value.iter().position(|&b| b != 0).unwrap_or(value.len());
            Ok(&value[start..])
        }
    }
}

/// Contents of a BIT STRING that must have no unused bits (keys, signatures).
pub fn bit_string_bytes(value: &[u8]) -> Result<&[u8], DerError> {
    match value.split_first() {
        Some((0, rest)) => Ok(rest),
        Some(_) => Err(DerError::Invalid("BIT STRING with unused bits")),
        None => Err(DerError::Invalid("empty BIT STRING")),
    }
}

/// Dotted-decimal form of OID contents, for messages. Malformed contents are
/// rendered as hex so that an error message never fails.
pub fn oid_to_string(content: &[u8]) -> String {
    let mut arcs: Vec<u128> = Vec::new();
    let mut cur: u128 = 0;
    let mut ok = !content.is_empty();
    for &b in content {
        if cur > (u128::MAX >> 7) {
            ok = false;
            break;
        }
        cur = (cur << 7) | u128::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(cur);
            cur = 0;
        }
    }
    if content.last().is_some_and(|b| b & 0x80 != 0) {
        ok = false;
    }
    if !ok {
        return format!("<bad OID {}>", hex::encode(content));
    }
    let mut out = String::new();
    for (i, arc) in arcs.iter().enumerate() {
        if i == 0 {
            // X.690 §8.19.4: the first subidentifier packs the first two arcs.
            let (a, b) = match *arc {
                x if x < 40 => (0, x),
                x if x < 80 => (1, x - 40),
                x => (2, x - 80),
            };
            out.push_str(&format!("{a}.{b}"));
        } else {
            out.push_str(&format!(".{arc}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        // `len < 0x80` so the cast cannot truncate.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
}

/// Encodes one TLV with definite, minimal length.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag::SEQUENCE, &concat(parts))
}

/// `SET OF`: DER requires the elements in ascending encoded order
/// (X.690 §11.6), so they are sorted here.
pub fn set_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut sorted: Vec<&[u8]> = parts.to_vec();
    sorted.sort_unstable();
    tlv(tag::SET, &concat(&sorted))
}

/// OBJECT IDENTIFIER from its arcs (X.690 §8.19).
/// Callers pass constant, valid OIDs; fewer than two arcs encodes the first
/// arc alone rather than panicking.
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    tlv(tag::OID, &oid_content(arcs))
}

/// Contents octets of an OBJECT IDENTIFIER (no tag/length).
pub fn oid_content(arcs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push_arc = |mut v: u64| {
        let mut tmp = [0u8; 10];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                break;
            }
        }
        let last = tmp.len() - 1;
        for (j, b) in tmp.iter().enumerate().skip(i) {
            out.push(if j == last { *b } else { *b | 0x80 });
        }
    };
    match arcs {
        [] => {}
        [a] => push_arc(a.saturating_mul(40)),
        [a, b, rest @ ..] => {
            push_arc(a.saturating_mul(40).saturating_add(*b));
            for &arc in rest {
                push_arc(arc);
            }
        }
    }
    out
}

/// Non-negative INTEGER from big-endian magnitude bytes: leading zeros are
/// stripped and a 0x00 is prepended when the top bit is set (X.690 §8.3.2).
pub fn unsigned_int(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude.iter().position(|&b| b != 0).unwrap_or(magnitude.len());
    let m = &magnitude[start..];
    let mut content = Vec::with_capacity(m.len() + 1);
    if m.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(m);
    tlv(tag::INTEGER, &content)
}

/// BIT STRING with zero unused bits.
pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0);
    content.extend_from_slice(bytes);
    tlv(tag::BIT_STRING, &content)
}

pub fn octet_string(bytes: &[u8]) -> Vec<u8> {
    tlv(tag::OCTET_STRING, bytes)
}

/// PrintableString written verbatim, *without* checking the character set:
/// the device simulator must reproduce Windows, which stores `!` and NUL.
pub fn printable_string_raw(bytes: &[u8]) -> Vec<u8> {
    tlv(tag::PRINTABLE_STRING, bytes)
}

pub fn utf8_string(s: &str) -> Vec<u8> {
    tlv(tag::UTF8_STRING, s.as_bytes())
}

pub fn null() -> Vec<u8> {
    vec![tag::NULL, 0]
}

pub fn boolean(v: bool) -> Vec<u8> {
    vec![tag::BOOLEAN, 1, if v { 0xff } else { 0 }]
}

/// `[n]` constructed context-specific tag (n must be < 31).
pub fn context_constructed(n: u8, content: &[u8]) -> Vec<u8> {
    tlv(0xa0 | (n & 0x1f), content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_forms_round_trip() {
        for len in [0usize, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000] {
            let content = vec![0xabu8; len];
            let enc = tlv(tag::OCTET_STRING, &content);
            let t = parse_single(&enc, tag::OCTET_STRING).unwrap();
            assert_eq!(t.value.len(), len);
            assert_eq!(t.raw, &enc[..]);
        }
        assert_eq!(tlv(4, &[0; 0x80])[..3], [4, 0x81, 0x80]);
        assert_eq!(tlv(4, &[0; 0x100])[..4], [4, 0x82, 0x01, 0x00]);
    }

    #[test]
    fn rejects_bad_lengths() {
        assert_eq!(
            Reader::new(&[0x30, 0x80, 0, 0]).read_any(),
            Err(DerError::IndefiniteLength)
        );
        assert_eq!(
            Reader::new(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5]).read_any(),
            Err(DerError::NonMinimalLength)
        );
        assert_eq!(
            Reader::new(&[0x04, 0x82, 0x00, 0x90]).read_any(),
            Err(DerError::NonMinimalLength)
        );
        assert_eq!(
            Reader::new(&[0x04, 0x85, 1, 1, 1, 1, 1]).read_any(),
            Err(DerError::LengthTooLarge)
        );
        assert_eq!(
            Reader::new(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]).read_any(),
            Err(DerError::Truncated)
        );
        assert_eq!(Reader::new(&[0x04, 0x03, 1, 2]).read_any(), Err(DerError::Truncated));
        assert_eq!(Reader::new(&[0x04]).read_any(), Err(DerError::Truncated));
        assert_eq!(Reader::new(&[]).read_any(), Err(DerError::Truncated));
        assert_eq!(Reader::new(&[0x1f, 0x01, 0]).read_any(), Err(DerError::HighTagNumber));
        assert_eq!(
            parse_single(&[0x05, 0x00, 0x00], tag::NULL),
            Err(DerError::TrailingData)
        );
        assert_eq!(
            parse_single(&[0x05, 0x00], tag::SEQUENCE),
            Err(DerError::UnexpectedTag {
                expected: 0x30,
                found: 0x05
            })
        );
    }

    #[test]
    fn oids() {
        // rsaEncryption 1.2.840.113549.1.1.1
        assert_eq!(
            oid(&[1, 2, 840, 113549, 1, 1, 1]),
            [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]
        );
        // OIW sha1WithRSA 1.3.14.3.2.29
        assert_eq!(oid(&[1, 3, 14, 3, 2, 29]), [0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1d]);
        // Microsoft device id extension, as seen in the Windows capture.
        assert_eq!(
            oid(&[1, 3, 6, 1, 4, 1, 311, 66, 1, 0]),
            [0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x42, 0x01, 0x00]
        );
        assert_eq!(
            oid_to_string(&oid_content(&[1, 2, 840, 113549, 1, 9, 14])),
            "1.2.840.113549.1.9.14"
        );
        assert_eq!(oid_to_string(&oid_content(&[2, 5, 4, 3])), "2.5.4.3");
        assert!(oid_to_string(&[0x86]).starts_with("<bad OID"));
        assert!(oid_to_string(&[]).starts_with("<bad OID"));
    }

    #[test]
    fn integers() {
        assert_eq!(unsigned_int(&[0x00, 0x00, 0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(unsigned_int(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(unsigned_int(&[]), [0x02, 0x01, 0x00]);
        assert_eq!(unsigned_int(&[0, 0]), [0x02, 0x01, 0x00]);
        assert_eq!(unsigned_integer(&[0x00, 0x80]).unwrap(), &[0x80]);
        assert!(unsigned_integer(&[0x80]).is_err());
        assert!(unsigned_integer(&[]).is_err());
    }

    #[test]
    fn misc_writers() {
        assert_eq!(bit_string(&[1, 2]), [0x03, 0x03, 0x00, 1, 2]);
        assert_eq!(bit_string_bytes(&[0, 1, 2]).unwrap(), &[1, 2]);
        assert!(bit_string_bytes(&[1, 1]).is_err());
        assert_eq!(null(), [0x05, 0x00]);
        assert_eq!(printable_string_raw(b"a!\0"), [0x13, 3, b'a', b'!', 0]);
        assert_eq!(utf8_string("é"), [0x0c, 2, 0xc3, 0xa9]);
        assert_eq!(context_constructed(0, &[]), [0xa0, 0]);
        assert_eq!(boolean(true), [1, 1, 0xff]);
        assert_eq!(set_of(&[&[5, 0], &[2, 1, 0]]), [0x31, 5, 2, 1, 0, 5, 0]);
        let seq = sequence(&[&null(), &octet_string(b"x")]);
        let t = parse_single(&seq, tag::SEQUENCE).unwrap();
        let mut r = Reader::new(t.value);
        assert!(r.read_optional(tag::BOOLEAN).unwrap().is_none());
        r.read(tag::NULL).unwrap();
        assert_eq!(r.read(tag::OCTET_STRING).unwrap().value, b"x");
        r.finish().unwrap();
    }
}
