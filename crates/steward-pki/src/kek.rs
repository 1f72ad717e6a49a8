//! Sealing private keys at rest with a key-encryption key (KEK).
//!
//! Two formats (text, so they can live in a file or a database column), both
//! AES-256-GCM (NIST SP 800-38D) with a fresh random 96-bit nonce per seal:
//! - `steward-sealed-v1:` + base64(nonce[12] || ciphertext || tag[16]) — what
//!   [`Kek::seal`] writes (the data key's database rows keep this format, so a
//!   previous release reading the same database during an upgrade still opens them);
//! - `steward-sealed-v2:<kek id>:` + the same base64 — what [`KekRing::seal`]
//!   writes: the blob names the KEK that sealed it ([`KekId`]), so a server
//!   configured with the current and the previous KEKs opens each blob with the
//!   right one, and `steward kek status` can tell when a previous KEK is no
//!   longer referenced (docs/OPERATIONS.md, "Rotating the KEK").
//!
//! The caller's `label` is bound as additional authenticated data, so a sealed
//! blob moved to another slot (e.g. the issuing CA key swapped in for the root
//! key) fails to open; in v2 the KEK id is bound too.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::PkiError;
use crate::util::random_bytes;

const PREFIX: &str = "steward-sealed-v1:";
const PREFIX_V2: &str = "steward-sealed-v2:";
/// Domain separation for the AAD so labels cannot collide with other uses of
/// the same KEK in a future format version.
const AAD_CONTEXT: &[u8] = b"steward-sealed-v1\0";
const AAD_CONTEXT_V2: &[u8] = b"steward-sealed-v2\0";
/// Domain separation of the KEK id hash from every other use of the key bytes.
const ID_CONTEXT: &[u8] = b"steward-kek-id\0";
/// Bytes of SHA-256 kept as the id: 64 bits tell a handful of KEKs apart, and a
/// truncated hash of a 256-bit random key reveals nothing usable about it.
const ID_LEN: usize = 8;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// A KEK's public name: the first 8 bytes of SHA-256("steward-kek-id\0" || key),
/// 16 lowercase hex digits. Safe to print and log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KekId([u8; ID_LEN]);

impl fmt::Debug for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KekId({self})")
    }
}

impl KekId {
    /// Parses the 16 hex digits written in a v2 blob.
    pub fn from_hex(s: &str) -> Option<KekId> {
        let raw = hex::decode(s).ok()?;
        Some(KekId(raw.try_into().ok()?))
    }
}

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Which KEK a sealed blob says sealed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedBy {
    /// A v2 blob: this KEK.
    Kek(KekId),
    /// A v1 blob names no KEK: only trying each one tells.
    Unnamed,
}

/// Reads the KEK id of a sealed blob without opening it (`steward kek status`).
pub fn sealed_by(sealed: &str) -> Result<SealedBy, PkiError> {
    let s = sealed.trim();
    if s.starts_with(PREFIX) {
        return Ok(SealedBy::Unnamed);
    }
    let (id, _) = split_v2(s)?;
    Ok(SealedBy::Kek(id))
}

/// `steward-sealed-v2:<id>:<b64>` → (id, b64).
fn split_v2(s: &str) -> Result<(KekId, &str), PkiError> {
    let rest = s
        .strip_prefix(PREFIX_V2)
        .ok_or(PkiError::SealedFormat("missing steward-sealed-v1/v2 prefix"))?;
    let (id, b64) = rest
        .split_once(':')
        .ok_or(PkiError::SealedFormat("v2 blob without a KEK id"))?;
    let id = KekId::from_hex(id).ok_or(PkiError::SealedFormat("v2 blob with a malformed KEK id"))?;
    Ok((id, b64))
}

/// AES-256-GCM key-encryption key. `Debug` prints `Kek(<id>)`, never the key.
pub struct Kek {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    key: LessSafeKey,
    id: KekId,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({})", self.id)
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
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(ID_CONTEXT);
        ctx.update(arr.as_slice());
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&ctx.finish().as_ref()[..ID_LEN]);
        Ok(Kek {
            bytes: arr,
            key: LessSafeKey::new(unbound),
            id: KekId(id),
        })
    }

    /// This KEK's public name.
    pub fn id(&self) -> KekId {
        self.id
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

    /// v2 AAD: context, the KEK id (so an edited id fails like a wrong key), label.
    fn aad_v2(&self, label: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_CONTEXT_V2.len() + ID_LEN + 1 + label.len());
        aad.extend_from_slice(AAD_CONTEXT_V2);
        aad.extend_from_slice(&self.id.0);
        aad.push(0);
        aad.extend_from_slice(label.as_bytes());
        aad
    }

    /// Encrypts `plaintext`, binding `label` (e.g. `"root-ca.key"`), in the v1
    /// format (no KEK id; see the module docs for who uses which).
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<String, PkiError> {
        let raw = self.seal_raw(Self::aad(label), plaintext)?;
        Ok(format!("{PREFIX}{raw}"))
    }

    /// Encrypts `plaintext` in the v2 format, naming this KEK.
    pub fn seal_v2(&self, label: &str, plaintext: &[u8]) -> Result<String, PkiError> {
        let raw = self.seal_raw(self.aad_v2(label), plaintext)?;
        Ok(format!("{PREFIX_V2}{}:{raw}", self.id))
    }

    fn seal_raw(&self, aad: Vec<u8>, plaintext: &[u8]) -> Result<String, PkiError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        // Random 96-bit nonces: safe for far more than the handful of keys we
        // ever seal under one KEK (SP 800-38D §8.3 allows 2^32 invocations).
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        // Zeroizing: the buffer holds the plaintext until it is encrypted in place.
        let mut in_out = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        in_out.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(aad), &mut *in_out)
            .map_err(|_| PkiError::Crypto("AES-GCM seal failed"))?;
        let mut buf = Vec::with_capacity(NONCE_LEN + in_out.len());
        buf.extend_from_slice(&nonce_bytes);
        buf.extend_from_slice(&in_out);
        Ok(base64::engine::general_purpose::STANDARD.encode(&buf))
    }

    /// Decrypts a blob from [`Kek::seal`] or [`Kek::seal_v2`] with the same `label`.
    /// Authentication failure (wrong key, wrong label, tampering, a v2 blob of
    /// another KEK) is [`PkiError::Unseal`]; a blob that is not in our format is
    /// [`PkiError::SealedFormat`].
    pub fn open(&self, label: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, PkiError> {
        let s = sealed.trim();
        if let Some(b64) = s.strip_prefix(PREFIX) {
            return self.open_raw(Self::aad(label), b64);
        }
        let (id, b64) = split_v2(s)?;
        if id != self.id {
            return Err(PkiError::Unseal);
        }
        self.open_raw(self.aad_v2(label), b64)
    }

    fn open_raw(&self, aad: Vec<u8>, b64: &str) -> Result<Zeroizing<Vec<u8>>, PkiError> {
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
            .open_in_place(nonce, Aad::from(aad), &mut in_out)
            .map_err(|_| PkiError::Unseal)?
            .len();
        in_out.truncate(plain_len);
        Ok(in_out)
    }
}

/// The KEKs a server holds at start: the current one, which seals, and the
/// previous ones, which only open (while a rotation is under way or until every
/// replica's data directory is re-sealed). `Debug` prints the ids only.
pub struct KekRing {
    current: Kek,
    previous: Vec<Kek>,
}

impl fmt::Debug for KekRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KekRing")
            .field("current", &self.current.id)
            .field("previous", &self.previous.iter().map(|k| k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl KekRing {
    /// A ring of `current` and `previous`; a previous KEK equal to the current one or
    /// to another previous one is refused (a configuration slip worth naming).
    pub fn new(current: Kek, previous: Vec<Kek>) -> Result<KekRing, PkiError> {
        let mut seen = vec![current.id];
        for k in &previous {
            if seen.contains(&k.id) {
                return Err(PkiError::InvalidKek(
                    "the same KEK is listed twice (current and previous)",
                ));
            }
            seen.push(k.id);
        }
        Ok(KekRing { current, previous })
    }

    /// The ring with `new` as the current KEK and every KEK of this ring as a
    /// previous one (what a rotation opens with while it re-seals under `new`).
    pub fn rotated_to(self, new: Kek) -> KekRing {
        let previous = std::iter::once(self.current)
            .chain(self.previous)
            .filter(|k| k.id != new.id)
            .collect();
        KekRing { current: new, previous }
    }

    /// The KEK that seals.
    pub fn current(&self) -> &Kek {
        &self.current
    }

    /// The ids of the current KEK and then the previous ones.
    pub fn ids(&self) -> Vec<KekId> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| k.id)
            .collect()
    }

    /// Seals under the current KEK, in the v2 format (the blob names it).
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<String, PkiError> {
        self.current.seal_v2(label, plaintext)
    }

    /// Opens a blob and says which KEK opened it: a v2 blob with the KEK it names
    /// ([`PkiError::UnknownKek`] when none of the ring is that one), a v1 blob by
    /// trying the current KEK and then each previous one.
    pub fn open(&self, label: &str, sealed: &str) -> Result<(Zeroizing<Vec<u8>>, KekId), PkiError> {
        let keys = || std::iter::once(&self.current).chain(&self.previous);
        match sealed_by(sealed)? {
            SealedBy::Kek(id) => {
                let kek = keys().find(|k| k.id == id).ok_or(PkiError::UnknownKek(id))?;
                Ok((kek.open(label, sealed)?, id))
            }
            SealedBy::Unnamed => {
                for kek in keys() {
                    match kek.open(label, sealed) {
                        Ok(plain) => return Ok((plain, kek.id)),
                        Err(PkiError::Unseal) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(PkiError::Unseal)
            }
        }
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
        assert_eq!(format!("{kek:?}"), format!("Kek({})", kek.id()));
        assert!(!format!("{kek:?}").contains(b64.as_str()));
        assert!(Kek::from_bytes(&[0; 31]).is_err());
        assert!(Kek::from_bytes(&[0; 33]).is_err());
        assert!(Kek::from_bytes(&[0; 32]).is_ok());
        assert!(Kek::from_base64("not base64!").is_err());
    }

    #[test]
    fn v2_names_its_kek_and_binds_the_id() {
        let kek = Kek::generate().unwrap();
        let sealed = kek.seal_v2("root-ca.key", b"k").unwrap();
        assert!(sealed.starts_with(&format!("{PREFIX_V2}{}:", kek.id())));
        assert_eq!(sealed_by(&sealed).unwrap(), SealedBy::Kek(kek.id()));
        assert_eq!(sealed_by(&kek.seal("l", b"k").unwrap()).unwrap(), SealedBy::Unnamed);
        assert_eq!(kek.open("root-ca.key", &sealed).unwrap().as_slice(), b"k");
        assert!(matches!(kek.open("issuing-ca.key", &sealed), Err(PkiError::Unseal)));
        // Another KEK's id written over ours: the AAD no longer matches, even for the right key.
        let other = Kek::generate().unwrap();
        let relabelled = sealed.replace(&kek.id().to_string(), &other.id().to_string());
        assert!(matches!(other.open("root-ca.key", &relabelled), Err(PkiError::Unseal)));
        assert!(matches!(kek.open("root-ca.key", &relabelled), Err(PkiError::Unseal)));
        assert!(matches!(
            sealed_by("steward-sealed-v2:zz:AAAA"),
            Err(PkiError::SealedFormat(_))
        ));
        assert!(matches!(
            sealed_by("steward-sealed-v2:AAAA"),
            Err(PkiError::SealedFormat(_))
        ));
        // The id is stable for the same key bytes and differs between keys.
        assert_eq!(Kek::from_base64(&kek.to_base64()).unwrap().id(), kek.id());
        assert_ne!(kek.id(), other.id());
        assert_eq!(KekId::from_hex(&kek.id().to_string()), Some(kek.id()));
    }

    #[test]
    fn a_ring_seals_with_the_current_kek_and_opens_with_any() {
        let old = Kek::from_base64(&Kek::generate().unwrap().to_base64()).unwrap();
        let old_v1 = old.seal("root-ca.key", b"v1 under old").unwrap();
        let old_v2 = old.seal_v2("root-ca.key", b"v2 under old").unwrap();
        let new = Kek::generate().unwrap();
        let (old_id, new_id) = (old.id(), new.id());
        let ring = KekRing::new(new, vec![old]).unwrap();
        assert_eq!(ring.ids(), vec![new_id, old_id]);
        let (p, by) = ring.open("root-ca.key", &old_v1).unwrap();
        assert_eq!((p.as_slice(), by), (&b"v1 under old"[..], old_id));
        let (p, by) = ring.open("root-ca.key", &old_v2).unwrap();
        assert_eq!((p.as_slice(), by), (&b"v2 under old"[..], old_id));
        let resealed = ring.seal("root-ca.key", b"fresh").unwrap();
        assert_eq!(sealed_by(&resealed).unwrap(), SealedBy::Kek(new_id));
        assert_eq!(ring.open("root-ca.key", &resealed).unwrap().1, new_id);
        assert!(matches!(ring.open("server.key", &resealed), Err(PkiError::Unseal)));

        // Only the new KEK: the re-sealed blob opens, the old ones are named as unknown or fail.
        let only_new = KekRing::new(Kek::from_base64(&ring.current().to_base64()).unwrap(), vec![]).unwrap();
        assert_eq!(only_new.open("root-ca.key", &resealed).unwrap().1, new_id);
        assert!(matches!(only_new.open("root-ca.key", &old_v2), Err(PkiError::UnknownKek(id)) if id == old_id));
        assert!(matches!(only_new.open("root-ca.key", &old_v1), Err(PkiError::Unseal)));
        let err = only_new.open("root-ca.key", &old_v2).unwrap_err().to_string();
        assert!(err.contains(&old_id.to_string()), "{err}");

        // Rotating to a new KEK keeps every KEK of the ring for opening, once each.
        let newest = Kek::generate().unwrap();
        let newest_id = newest.id();
        let r = KekRing::new(Kek::from_base64(&ring.current().to_base64()).unwrap(), vec![])
            .unwrap()
            .rotated_to(newest);
        assert_eq!(r.ids(), vec![newest_id, new_id]);
        let same = Kek::from_base64(&r.current().to_base64()).unwrap();
        assert_eq!(r.rotated_to(same).ids(), vec![newest_id, new_id]);

        // The same KEK twice is a configuration slip, refused.
        let dup = Kek::from_base64(&ring.current().to_base64()).unwrap();
        assert!(KekRing::new(dup, vec![Kek::from_base64(&ring.current().to_base64()).unwrap()]).is_err());
        let debug = format!("{ring:?}");
        assert!(debug.contains(&new_id.to_string()) && !debug.contains(ring.current().to_base64().as_str()));
    }
}
