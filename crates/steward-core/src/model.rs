//! The records Steward keeps. Times are UTC `OffsetDateTime`; backends store them as unix
//! microseconds so SQLite and PostgreSQL agree to the microsecond.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::secret::TokenHash;

macro_rules! uuid_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);
        impl $name {
            /// A new, time-ordered id (UUIDv7, RFC 9562 §5.7): rows created together sit together in
            /// the indexes keyed by id, where random ids scattered every insert.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }
        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}
pub(crate) use uuid_id;

uuid_id!(
    /// One enrollment of one device: our own id, independent of what the device calls itself. A device
    /// that re-enrolls gets a new enrollment (and a new certificate); the old one is marked replaced.
    EnrollmentId
);
uuid_id!(
    /// An admin-created enrollment token.
    EnrollmentTokenId
);
uuid_id!(
    /// A user of Steward's own user store (federated sign-in or UsernameToken).
    UserId
);
uuid_id!(
    /// A device group.
    GroupId
);

/// The device's own identifier (MS-MDE2 AdditionalContext `DeviceID`, also in the CSR extension
/// 1.3.6.1.4.1.311.66.1.0 and the SyncML `Source/LocURI`). Windows uses 32 hex digits or a GUID; we
/// accept letters, digits, `-`, `_`, `{`, `}` and `.` up to 128 characters, enough for every client we
/// know while keeping it safe to put in a certificate subject and a log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '{' | '}' | '.'));
        ok.then(|| Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The operating-system family a device enrolled from. Each platform has its own wire protocol,
/// handled by its adapter crate (`steward-windows` for Windows); everything else in Steward is
/// platform-neutral and carries this tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Windows,
}

impl Platform {
    pub const ALL: [Platform; 1] = [Platform::Windows];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Windows => "windows",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SHA-1 thumbprint of a DER certificate: 40 upper-case hex digits, the form every comparison and
/// every stored row uses (so no caller upper-cases on its own).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Thumbprint(String);

impl Thumbprint {
    /// The thumbprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        Self(hex::encode_upper(d.as_ref()))
    }
    /// A thumbprint written as 40 hex digits in any case.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        (s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(s.to_ascii_uppercase()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A certificate serial number as Steward writes it (hex of the serial's bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CertSerial(String);

impl CertSerial {
    pub fn new(hex: impl Into<String>) -> Self {
        Self(hex.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A certificate Steward issued, as an enrollment refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRef {
    pub serial: CertSerial,
    pub thumbprint: Thumbprint,
}

/// What an enrollment manages: the device and its user (`Full`; Windows MS-MDE2 EnrollmentType
/// `Full`, certificate in My/User) or the device alone (`Device`; certificate in My/System). The
/// names are the API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollmentType {
    Full,
    Device,
}

impl EnrollmentType {
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentType::Full => "Full",
            EnrollmentType::Device => "Device",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Full" => Some(Self::Full),
            "Device" => Some(Self::Device),
            _ => None,
        }
    }
}

/// How the enrollment request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMethod {
    /// OnPremise UsernameToken whose password was an enrollment token.
    EnrollmentToken,
    /// OnPremise UsernameToken checked against the user store.
    UserPassword,
    /// Federated: our sign-in page issued the security token.
    Federated,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::EnrollmentToken => "enrollment_token",
            AuthMethod::UserPassword => "user_password",
            AuthMethod::Federated => "federated",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enrollment_token" => Some(Self::EnrollmentToken),
            "user_password" => Some(Self::UserPassword),
            "federated" => Some(Self::Federated),
            _ => None,
        }
    }
}

/// Lifecycle of an enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollmentState {
    /// Enrolled and allowed to open management sessions.
    Active,
    /// The same DeviceID enrolled again; this record is history.
    Replaced,
    /// The device (or an admin) removed the enrollment.
    Unenrolled,
    /// A wipe was acknowledged.
    Wiped,
}

impl EnrollmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Replaced => "replaced",
            Self::Unenrolled => "unenrolled",
            Self::Wiped => "wiped",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "replaced" => Some(Self::Replaced),
            "unenrolled" => Some(Self::Unenrolled),
            "wiped" => Some(Self::Wiped),
            _ => None,
        }
    }
}

/// A device enrollment: what the device told us at enrollment plus the certificate we issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub id: EnrollmentId,
    pub platform: Platform,
    pub device_id: DeviceId,
    /// A hardware identity stable across re-installs (Windows: AdditionalContext `HWDevID`).
    pub hardware_id: Option<String>,
    pub device_name: Option<String>,
    pub os_version: Option<String>,
    /// The OS edition as the device reports it (Windows: AdditionalContext `OSEdition`, a number:
    /// 72 = Enterprise, 48 = Pro, …).
    pub os_edition: Option<String>,
    pub enrollment_type: EnrollmentType,
    /// The UsernameToken user name or federated user; for token enrollments, whatever e-mail the user typed.
    pub user_email: Option<String>,
    pub auth_method: AuthMethod,
    pub enrollment_token_id: Option<EnrollmentTokenId>,
    pub group_id: Option<GroupId>,
    pub cert_serial: CertSerial,
    pub cert_thumbprint: Thumbprint,
    #[serde(with = "time::serde::rfc3339")]
    pub cert_not_after: OffsetDateTime,
    /// The certificate a renewal replaced, still accepted until the device first uses the new one.
    pub previous_cert: Option<CertRef>,
    pub state: EnrollmentState,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Last management session (None until the first check-in).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
}

impl Enrollment {
    /// The certificate the enrollment currently authenticates with.
    pub fn certificate(&self) -> CertRef {
        CertRef {
            serial: self.cert_serial.clone(),
            thumbprint: self.cert_thumbprint.clone(),
        }
    }
}

/// An admin-created token that lets devices enroll (the OnPremise UsernameToken password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    pub id: EnrollmentTokenId,
    pub token_hash: TokenHash,
    pub description: Option<String>,
    /// `None` = unlimited uses until expiry.
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub expires_at: Option<OffsetDateTime>,
    pub group_id: Option<GroupId>,
    pub revoked: bool,
    pub created_at: OffsetDateTime,
}

impl EnrollmentToken {
    /// Whether the token may authenticate one more enrollment at `now`. The store re-checks this
    /// atomically when the use is consumed, so two devices racing for the last use cannot both win.
    pub fn usable_at(&self, now: OffsetDateTime) -> Result<(), TokenUnusable> {
        token_usable(self.revoked, self.expires_at, self.max_uses, self.uses, now)
    }
}

/// Whether an enrollment token with these properties can enroll one more device at `now`: the
/// rule of [`EnrollmentToken::usable_at`], for a store that reads only these columns.
pub fn token_usable(
    revoked: bool,
    expires_at: Option<OffsetDateTime>,
    max_uses: Option<u32>,
    uses: u32,
    now: OffsetDateTime,
) -> Result<(), TokenUnusable> {
    if revoked {
        return Err(TokenUnusable::Revoked);
    }
    if expires_at.is_some_and(|e| e <= now) {
        return Err(TokenUnusable::Expired);
    }
    if max_uses.is_some_and(|m| uses >= m) {
        return Err(TokenUnusable::Exhausted);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenUnusable {
    #[error("the enrollment token was revoked")]
    Revoked,
    #[error("the enrollment token has expired")]
    Expired,
    #[error("the enrollment token has no uses left")]
    Exhausted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnrollmentToken {
    pub id: EnrollmentTokenId,
    pub token_hash: TokenHash,
    pub description: Option<String>,
    pub max_uses: Option<u32>,
    pub expires_at: Option<OffsetDateTime>,
    /// Group name; created if it does not exist yet.
    pub group: Option<String>,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub created_at: OffsetDateTime,
    /// A dynamic group's rule: its members are the devices the rule matches, and no device is
    /// moved into it ([`crate::group_rule`]). None: a static group.
    pub rule: Option<crate::group_rule::GroupRule>,
}

impl Group {
    /// A new group named `name` (trimmed) if the name is 1-64 letters, digits, spaces, `-`, `_` or
    /// `.`: names appear in URLs, CLI arguments and audit rows, so both the API and the CLI check it
    /// here.
    pub fn named(name: &str, created_at: OffsetDateTime) -> Result<Self, InvalidGroupName> {
        let name = name.trim();
        let valid = (1..=64).contains(&name.chars().count())
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
        if !valid {
            return Err(InvalidGroupName);
        }
        Ok(Self {
            id: GroupId::new(),
            name: name.to_owned(),
            created_at,
            rule: None,
        })
    }

    /// Whether the group's members are decided by a rule.
    pub fn is_dynamic(&self) -> bool {
        self.rule.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a group name has 1-64 letters, digits, spaces, '-', '_' or '.'")]
pub struct InvalidGroupName;

/// Most tags one device carries.
pub const MAX_DEVICE_TAGS: usize = 32;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;

/// A device's admin-assigned tags (labels such as `kiosk` or `finance-laptops`), as every surface
/// accepts them: each trimmed and lower-cased, then 1-64 characters of `a-z`, `0-9`, `-`, `_`,
/// `.` or `:` starting with a letter or digit (tags appear in URLs, CLI arguments, rules and audit
/// rows); at most [`MAX_DEVICE_TAGS`]; duplicates merged; kept sorted. A dynamic group's rule reads
/// them as the `tags` fact ([`crate::group_rule`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceTags(Vec<String>);

impl DeviceTags {
    /// Validates and normalises `tags`; the error names the first bad one.
    pub fn parse<S: AsRef<str>>(tags: &[S]) -> Result<Self, InvalidTag> {
        let mut out: Vec<String> = Vec::with_capacity(tags.len());
        for t in tags {
            out.push(Self::tag(t.as_ref())?);
        }
        out.sort();
        out.dedup();
        if out.len() > MAX_DEVICE_TAGS {
            return Err(InvalidTag::TooMany);
        }
        Ok(Self(out))
    }

    /// One tag, normalised (trimmed, lower-case), or why it is refused.
    pub fn tag(raw: &str) -> Result<String, InvalidTag> {
        let t = raw.trim().to_lowercase();
        let bad = || InvalidTag::Bad(raw.to_owned());
        let n = t.chars().count();
        if n == 0 || n > MAX_TAG_CHARS {
            return Err(bad());
        }
        let mut chars = t.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | ':'));
        if !(first_ok && rest_ok) {
            return Err(bad());
        }
        Ok(t)
    }

    /// Tags read back from a store (written only after validation), kept as they are but sorted.
    pub fn from_stored(mut tags: Vec<String>) -> Self {
        tags.sort();
        tags.dedup();
        Self(tags)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A tag or a tag list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTag {
    #[error(
        "tag {0:?}: a tag has 1-64 characters of a-z, 0-9, '-', '_', '.' or ':' and starts with a letter or digit (upper case is lowered)"
    )]
    Bad(String),
    #[error("a device has at most 32 tags")]
    TooMany,
}

/// A person in Steward's user store. The password is an Argon2id PHC string.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    /// Lower-cased.
    pub email: String,
    pub display_name: Option<String>,
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: OffsetDateTime,
}

/// Fewest characters of a user's password, wherever users are created.
pub const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewUserError {
    #[error("{0:?} is not an e-mail address")]
    Email(String),
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    ShortPassword,
    #[error("hashing the password: {0}")]
    Hash(String),
}

impl User {
    /// The e-mail as users are stored and looked up: trimmed, lower-cased, one `@`-bearing word of at
    /// most 254 bytes. The API and the CLI both check it here.
    pub fn normalize_email(email: &str) -> Result<String, NewUserError> {
        let email = email.trim().to_lowercase();
        if !email.contains('@') || email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(NewUserError::Email(email));
        }
        Ok(email)
    }

    /// A new, enabled user with the password hashed (Argon2id: slow on purpose, so call this off the
    /// async workers).
    pub fn create(
        email: &str,
        display_name: Option<String>,
        password: &str,
        now: OffsetDateTime,
    ) -> Result<Self, NewUserError> {
        let email = Self::normalize_email(email)?;
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(NewUserError::ShortPassword);
        }
        let password_hash = crate::secret::hash_password(password).map_err(|e| NewUserError::Hash(e.to_string()))?;
        Ok(Self {
            id: UserId::new(),
            email,
            display_name,
            password_hash,
            disabled: false,
            created_at: now,
        })
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// One row of the append-only certificate issuance log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuanceLogEntry {
    pub serial: CertSerial,
    pub event: IssuanceEvent,
    pub thumbprint: Option<Thumbprint>,
    pub subject: Option<String>,
    pub device_id: Option<DeviceId>,
    pub enrollment_id: Option<EnrollmentId>,
    pub not_before: Option<OffsetDateTime>,
    pub not_after: Option<OffsetDateTime>,
    pub reason: Option<String>,
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuanceEvent {
    /// Signed and handed to a device as part of a committed enrollment.
    Issued,
    /// Signed, but the enrollment did not commit: the certificate was never delivered and must never be
    /// trusted. Recorded so the serial is accounted for.
    Void,
    /// Revoked after issue (device re-enrolled, unenrolled, wiped).
    Revoked,
}

impl IssuanceEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Void => "void",
            Self::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "issued" => Some(Self::Issued),
            "void" => Some(Self::Void),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// Everything one successful enrollment writes, committed in one transaction by
/// [`crate::Store::commit_enrollment`]: the token use (or federated nonce) is consumed, any previous
/// active enrollment of the same DeviceID is marked replaced and its certificate revoked, the new
/// enrollment is inserted and the issuance is logged. Either all of it happens or none.
#[derive(Debug, Clone)]
pub struct EnrollmentCommit {
    pub enrollment: Enrollment,
    pub subject: String,
    pub not_before: OffsetDateTime,
    /// Consume one use of this enrollment token (fails the whole commit if none is left).
    pub consume_token: Option<EnrollmentTokenId>,
    /// Mark this single-use federated token as spent (fails the whole commit if it already was).
    pub consume_nonce: Option<(TokenHash, OffsetDateTime)>,
    /// A protocol-level session credential the platform provisioned to the device, stored opaquely
    /// (Windows: the `syncml:auth-md5` digest key `b64(md5(name ":" secret))`, when MD5 session
    /// authentication is enabled).
    pub session_credential: Option<String>,
    /// The device's active enrollment when the enrollment was decided (None: it had none). The
    /// store refuses the commit with a conflict if the device's active enrollment is no longer
    /// exactly this one, and otherwise marks it replaced and revokes its certificate.
    pub replaces: Option<crate::identity::ReplacedEnrollment>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_users_have_a_normalized_email_and_a_hashed_password() {
        let now = OffsetDateTime::now_utc();
        let u = User::create("  Ada@Example.ORG ", None, "correct horse", now).unwrap();
        assert_eq!(u.email, "ada@example.org");
        assert!(u.password_hash.starts_with("$argon2id$"));
        assert!(!u.disabled);
        for bad in [
            "ada",
            "ada @example.org",
            "ada@exa\u{7}mple.org",
            &format!("{}@x.org", "a".repeat(250)),
        ] {
            assert_eq!(
                User::create(bad, None, "correct horse", now).unwrap_err(),
                NewUserError::Email(bad.trim().to_lowercase())
            );
        }
        assert_eq!(
            User::create("ada@example.org", None, "1234567", now).unwrap_err(),
            NewUserError::ShortPassword
        );
    }

    #[test]
    fn device_id_validation() {
        assert!(DeviceId::parse("B5B954E81FBCB94EB79BD08BE625F4EE").is_some());
        assert!(DeviceId::parse("{1E08C6E9-5D8B-B843-B127-8FF45BC60CC6}").is_some());
        assert!(DeviceId::parse("").is_none());
        assert!(DeviceId::parse("a b").is_none());
        assert!(DeviceId::parse("x<y>").is_none());
        assert!(DeviceId::parse(&"A".repeat(129)).is_none());
    }

    #[test]
    fn token_usability() {
        let now = OffsetDateTime::now_utc();
        let mut t = EnrollmentToken {
            id: EnrollmentTokenId::new(),
            token_hash: TokenHash([0; 32]),
            description: None,
            max_uses: Some(1),
            uses: 0,
            expires_at: Some(now + time::Duration::hours(1)),
            group_id: None,
            revoked: false,
            created_at: now,
        };
        assert_eq!(t.usable_at(now), Ok(()));
        t.uses = 1;
        assert_eq!(t.usable_at(now), Err(TokenUnusable::Exhausted));
        t.uses = 0;
        assert_eq!(t.usable_at(now + time::Duration::hours(2)), Err(TokenUnusable::Expired));
        t.revoked = true;
        assert_eq!(t.usable_at(now), Err(TokenUnusable::Revoked));
    }

    #[test]
    fn device_tags_are_normalised_and_validated() {
        let t = DeviceTags::parse(&[" Kiosk ", "finance-laptops", "kiosk", "site:ber.1"]).unwrap();
        assert_eq!(t.as_slice(), ["finance-laptops", "kiosk", "site:ber.1"]);
        assert!(DeviceTags::parse::<&str>(&[]).unwrap().is_empty());
        for bad in ["", "  ", "-kiosk", "kiosk lab", "kiosk/1", "ü", &"a".repeat(65)] {
            assert_eq!(
                DeviceTags::parse(&[bad]),
                Err(InvalidTag::Bad(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(DeviceTags::tag(&"a".repeat(64)).unwrap().len(), 64);
        let many: Vec<String> = (0..=MAX_DEVICE_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(DeviceTags::parse(&many), Err(InvalidTag::TooMany));
        assert_eq!(
            DeviceTags::parse(&many[..MAX_DEVICE_TAGS]).unwrap().as_slice().len(),
            MAX_DEVICE_TAGS
        );
        let repeated = vec!["kiosk"; 40];
        assert_eq!(
            DeviceTags::parse(&repeated).unwrap().as_slice(),
            ["kiosk"],
            "duplicates merge before the count"
        );
    }
}
