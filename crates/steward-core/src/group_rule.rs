//! Dynamic groups: a group that carries a [`GroupRule`] has as members exactly the devices whose
//! facts the rule matches; nobody moves a device into it. Rules are decided here, once, so a
//! check-in's reconciliation (`configuration::DeviceConfiguration::member_groups`), the admin
//! members list and the profile counts evaluate the same thing on every backend.
//!
//! A rule is a list of conditions that must all hold (AND), each over one fact:
//! - `os.version`: dotted versions compared numerically, component by component, a missing
//!   component counting as 0 (`10.0.22631.2861 >= 10.0.22000`; `10.0 == 10.0.0`), with `==`,
//!   `>=`, `<=`, `<`, `>` and `in` (any of several versions); `prefix` and `contains` compare text.
//! - `os.edition`, `hardware.manufacturer`, `hardware.model`, `enrollment.type` (`Full`,
//!   `Device`) and `user.domain` (the part after `@` of the enrollment's user e-mail): text,
//!   compared ignoring case, with `==`, `in`, `prefix` and `contains`.
//!
//! - `tags`: the labels an administrator gave the device (`PUT /api/v1/devices/{id}/tags`, see
//!   [`crate::model::DeviceTags`]), with `==` (the device has this tag), `in` (any of these),
//!   `prefix` and `contains` (some tag starts with / contains the text). A condition on tags holds
//!   when it holds for one of the device's tags. The evaluation sees the tags as facts named
//!   [`TAGS`], one per tag, which the stores load from the tag table (not from inventory).
//!
//! A device lacking the fact (never reported, no user e-mail, no tags), or whose `os.version` is
//! not a dotted number, matches no condition on it.
//!
//! The JSON shape (API, CLI, the `groups.rule` column):
//! `{"all": [{"fact": "os.version", "op": ">=", "value": "10.0.22000"},
//! {"fact": "os.edition", "op": "in", "value": ["Enterprise", "Education"]}]}`.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::inventory::{DeviceFact, FactName};
use crate::model::{Enrollment, GroupId};

/// Most conditions in one rule.
pub const MAX_CONDITIONS: usize = 32;
/// Most values of one `in` condition.
pub const MAX_VALUES: usize = 100;
/// Longest value a condition compares with, in characters.
pub const MAX_VALUE_CHARS: usize = 256;
/// Most components of a dotted version.
const MAX_VERSION_PARTS: usize = 8;

/// What a rule may test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleFact {
    OsVersion,
    OsEdition,
    HardwareManufacturer,
    HardwareModel,
    /// The enrollment's type (`Full`, `Device`), not an inventory fact.
    EnrollmentType,
    /// The domain of the enrollment's user e-mail, not an inventory fact.
    UserDomain,
    /// The device's admin-assigned tags (the stores load them as facts named [`TAGS`]).
    Tags,
}

/// The fact name a device's tags are evaluated under, one [`DeviceFact`] per tag: the stores load
/// these from the tag table when a rule reads `tags` (inventory never reports a fact of this name).
pub const TAGS: FactName = FactName::from_static("tags");

impl RuleFact {
    pub const ALL: [RuleFact; 7] = [
        Self::OsVersion,
        Self::OsEdition,
        Self::HardwareManufacturer,
        Self::HardwareModel,
        Self::EnrollmentType,
        Self::UserDomain,
        Self::Tags,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OsVersion => "os.version",
            Self::OsEdition => "os.edition",
            Self::HardwareManufacturer => "hardware.manufacturer",
            Self::HardwareModel => "hardware.model",
            Self::EnrollmentType => "enrollment.type",
            Self::UserDomain => "user.domain",
            Self::Tags => "tags",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The fact this reads, if it is one (enrollment fields are not; tags are read as facts named
    /// [`TAGS`], which the stores load from the tag table).
    pub fn device_fact(self) -> Option<FactName> {
        match self {
            Self::EnrollmentType | Self::UserDomain => None,
            f => Some(FactName::from_static(f.as_str())),
        }
    }

    /// Whether a change of inventory fact `name` can change a rule's outcome: the stores reset a
    /// device's configuration stamp only for these (`inventory.collected_at` changes at every
    /// inventory read and must not make every device reconcile).
    pub fn is_rule_fact(name: &FactName) -> bool {
        Self::ALL
            .into_iter()
            .filter(|f| *f != Self::Tags)
            .any(|f| f.device_fact().is_some_and(|n| n == *name))
    }
}

/// A comparison of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleOp {
    Eq,
    Ge,
    Le,
    Lt,
    Gt,
    In,
    Prefix,
    Contains,
}

impl RuleOp {
    const ALL: [RuleOp; 8] = [
        Self::Eq,
        Self::Ge,
        Self::Le,
        Self::Lt,
        Self::Gt,
        Self::In,
        Self::Prefix,
        Self::Contains,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "==",
            Self::Ge => ">=",
            Self::Le => "<=",
            Self::Lt => "<",
            Self::Gt => ">",
            Self::In => "in",
            Self::Prefix => "prefix",
            Self::Contains => "contains",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    fn orders(self) -> bool {
        matches!(self, Self::Ge | Self::Le | Self::Lt | Self::Gt)
    }
}

/// A dotted version, compared numerically ([`Ord`]: missing trailing components are 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DottedVersion(Vec<u64>);

impl DottedVersion {
    /// `10.0.22631.2861`: 1-8 components of decimal digits.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<u64> = s
            .trim()
            .split('.')
            .map(|p| {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    p.parse().ok()
                }
            })
            .collect::<Option<_>>()?;
        (1..=MAX_VERSION_PARTS).contains(&parts.len()).then_some(Self(parts))
    }

    /// Component by component as numbers, a missing component counting as 0.
    pub fn compare(&self, other: &Self) -> Ordering {
        let n = self.0.len().max(other.0.len());
        (0..n)
            .map(|i| {
                let a = self.0.get(i).copied().unwrap_or(0);
                let b = other.0.get(i).copied().unwrap_or(0);
                a.cmp(&b)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl fmt::Display for DottedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// What a condition compares the device's value with, validated for its fact and op.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operand {
    Versions(Vec<DottedVersion>),
    /// Lower-cased (text compares ignoring case).
    Texts(Vec<String>),
}

/// One validated condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub fact: RuleFact,
    pub op: RuleOp,
    /// The value as written (the JSON shape keeps it), checked against `fact` and `op`.
    value: RawValue,
    operand: Operand,
}

impl Condition {
    fn holds(&self, value: Option<&str>) -> bool {
        let Some(value) = value else { return false };
        match &self.operand {
            Operand::Versions(want) => {
                let Some(have) = DottedVersion::parse(value) else {
                    return false;
                };
                want.iter().any(|w| {
                    let o = have.compare(w);
                    match self.op {
                        RuleOp::Eq | RuleOp::In => o.is_eq(),
                        RuleOp::Ge => o.is_ge(),
                        RuleOp::Le => o.is_le(),
                        RuleOp::Lt => o.is_lt(),
                        RuleOp::Gt => o.is_gt(),
                        RuleOp::Prefix | RuleOp::Contains => false,
                    }
                })
            }
            Operand::Texts(want) => {
                let have = value.trim().to_lowercase();
                want.iter().any(|w| match self.op {
                    RuleOp::Prefix => have.starts_with(w.as_str()),
                    RuleOp::Contains => have.contains(w.as_str()),
                    _ => have == *w,
                })
            }
        }
    }
}

/// A rule is invalid: what is wrong, for the person who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("a rule is JSON {{\"all\": [{{\"fact\": …, \"op\": …, \"value\": …}}, …]}}: {0}")]
    Shape(String),
    #[error("a rule needs at least one condition")]
    Empty,
    #[error("a rule has at most {MAX_CONDITIONS} conditions")]
    TooMany,
    #[error("condition {index}: unknown fact {fact:?} (known: {known})")]
    UnknownFact { index: usize, fact: String, known: String },
    #[error("condition {index}: unknown op {op:?} (known: ==, >=, <=, <, >, in, prefix, contains)")]
    UnknownOp { index: usize, op: String },
    #[error("condition {index}: {fact} cannot be compared with {op} (only os.version is ordered)")]
    NotOrdered {
        index: usize,
        fact: &'static str,
        op: &'static str,
    },
    #[error("condition {index}: {why}")]
    BadValue { index: usize, why: String },
}

/// A condition's value as JSON has it: one string, or a list for `in`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum RawValue {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    fact: String,
    op: String,
    value: RawValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    all: Vec<RawCondition>,
}

/// A dynamic group's rule: every condition must hold. Built only by validation
/// ([`GroupRule::from_json`], [`GroupRule::from_value`], deserialisation), so a stored or
/// evaluated rule is always a valid one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRule", into = "RawRule")]
pub struct GroupRule {
    conditions: Vec<Condition>,
}

impl TryFrom<RawRule> for GroupRule {
    type Error = RuleError;

    fn try_from(raw: RawRule) -> Result<Self, RuleError> {
        if raw.all.is_empty() {
            return Err(RuleError::Empty);
        }
        if raw.all.len() > MAX_CONDITIONS {
            return Err(RuleError::TooMany);
        }
        let conditions = raw
            .all
            .into_iter()
            .enumerate()
            .map(|(i, c)| condition(i + 1, c))
            .collect::<Result<_, _>>()?;
        Ok(Self { conditions })
    }
}

impl From<GroupRule> for RawRule {
    fn from(r: GroupRule) -> Self {
        RawRule {
            all: r
                .conditions
                .into_iter()
                .map(|c| RawCondition {
                    fact: c.fact.as_str().to_owned(),
                    op: c.op.as_str().to_owned(),
                    value: c.value,
                })
                .collect(),
        }
    }
}

fn condition(index: usize, c: RawCondition) -> Result<Condition, RuleError> {
    let fact = RuleFact::parse(&c.fact).ok_or_else(|| RuleError::UnknownFact {
        index,
        fact: c.fact.clone(),
        known: RuleFact::ALL.map(RuleFact::as_str).join(", "),
    })?;
    let op = RuleOp::parse(&c.op).ok_or_else(|| RuleError::UnknownOp {
        index,
        op: c.op.clone(),
    })?;
    let bad = |why: String| RuleError::BadValue { index, why };
    let values: Vec<&String> = match (&c.value, op) {
        (RawValue::Many(v), RuleOp::In) => {
            if v.is_empty() || v.len() > MAX_VALUES {
                return Err(bad(format!("in takes a list of 1-{MAX_VALUES} values")));
            }
            v.iter().collect()
        }
        (RawValue::One(_), RuleOp::In) => return Err(bad("in takes a list of values".into())),
        (RawValue::Many(_), _) => return Err(bad(format!("{} takes one value, not a list", op.as_str()))),
        (RawValue::One(v), _) => vec![v],
    };
    for v in &values {
        if v.trim().is_empty() || v.chars().count() > MAX_VALUE_CHARS {
            return Err(bad(format!("a value has 1-{MAX_VALUE_CHARS} characters")));
        }
    }
    let versioned = fact == RuleFact::OsVersion && !matches!(op, RuleOp::Prefix | RuleOp::Contains);
    if op.orders() && !versioned {
        return Err(RuleError::NotOrdered {
            index,
            fact: fact.as_str(),
            op: op.as_str(),
        });
    }
    let operand = if versioned {
        Operand::Versions(
            values
                .iter()
                .map(|v| {
                    DottedVersion::parse(v).ok_or_else(|| {
                        bad(format!(
                            "{v:?} is not a version (dotted numbers such as 10.0.22631.2861)"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        )
    } else {
        Operand::Texts(values.iter().map(|v| v.trim().to_lowercase()).collect())
    };
    Ok(Condition {
        fact,
        op,
        value: c.value,
        operand,
    })
}

/// What a rule reads of the enrollment itself (not inventory facts).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnrollmentFields {
    /// [`crate::model::EnrollmentType::as_str`].
    pub enrollment_type: String,
    /// The enrollment's user e-mail, if any.
    pub user_email: Option<String>,
}

impl EnrollmentFields {
    pub fn of(e: &Enrollment) -> Self {
        Self {
            enrollment_type: e.enrollment_type.as_str().to_owned(),
            user_email: e.user_email.clone(),
        }
    }

    /// The part after the last `@` of the user e-mail.
    pub fn user_domain(&self) -> Option<&str> {
        let email = self.user_email.as_deref()?;
        let (_, domain) = email.rsplit_once('@')?;
        (!domain.is_empty()).then_some(domain)
    }
}

impl GroupRule {
    /// Parses and validates a rule from its JSON text.
    pub fn from_json(text: &str) -> Result<Self, RuleError> {
        let raw: RawRule = serde_json::from_str(text).map_err(|e| RuleError::Shape(e.to_string()))?;
        raw.try_into()
    }

    /// Validates a rule from a JSON value (an API body's field).
    pub fn from_value(value: serde_json::Value) -> Result<Self, RuleError> {
        let raw: RawRule = serde_json::from_value(value).map_err(|e| RuleError::Shape(e.to_string()))?;
        raw.try_into()
    }

    /// The JSON text (the stored form).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&RawRule::from(self.clone())).unwrap_or_default()
    }

    /// The JSON value (the API's form).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(RawRule::from(self.clone())).unwrap_or_default()
    }

    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// The inventory facts the rule reads (enrollment fields come with the enrollment), sorted.
    pub fn fact_names(&self) -> Vec<FactName> {
        let mut names: Vec<FactName> = self.conditions.iter().filter_map(|c| c.fact.device_fact()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether a device with these facts and this enrollment is a member.
    pub fn matches(&self, facts: &[DeviceFact], enrollment: &EnrollmentFields) -> bool {
        self.conditions.iter().all(|c| {
            let value = match c.fact {
                RuleFact::EnrollmentType => Some(enrollment.enrollment_type.as_str()),
                RuleFact::UserDomain => enrollment.user_domain(),
                // Several values: the condition holds when it holds for one of the tags.
                RuleFact::Tags => {
                    return facts
                        .iter()
                        .filter(|d| d.name == TAGS)
                        .any(|d| c.holds(Some(d.value.as_str())));
                }
                f => facts
                    .iter()
                    .find(|d| d.name.as_str() == f.as_str())
                    .map(|d| d.value.as_str()),
            };
            c.holds(value)
        })
    }
}

/// A dynamic group as the evaluation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicGroup {
    pub id: GroupId,
    pub rule: GroupRule,
}

/// The inventory facts a set of rules reads, sorted and once each.
pub fn rule_fact_names(groups: &[DynamicGroup]) -> Vec<FactName> {
    let mut names: Vec<FactName> = groups.iter().flat_map(|g| g.rule.fact_names()).collect();
    names.sort();
    names.dedup();
    names
}

/// A device's groups: its static group (if any) and every dynamic group whose rule matches.
pub fn member_groups(
    static_group: Option<GroupId>,
    dynamic: &[DynamicGroup],
    facts: &[DeviceFact],
    enrollment: &EnrollmentFields,
) -> Vec<GroupId> {
    let mut out: Vec<GroupId> = static_group.into_iter().collect();
    for g in dynamic {
        if !out.contains(&g.id) && g.rule.matches(facts, enrollment) {
            out.push(g.id);
        }
    }
    out
}

/// An active enrollment with the facts some rules read
/// ([`crate::store::GroupStore::active_enrollments_with_facts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSubject {
    pub enrollment: Enrollment,
    /// The facts asked for that the device reported.
    pub facts: Vec<DeviceFact>,
}

impl RuleSubject {
    /// The subject's groups ([`member_groups`]).
    pub fn groups(&self, dynamic: &[DynamicGroup]) -> Vec<GroupId> {
        member_groups(
            self.enrollment.group_id,
            dynamic,
            &self.facts,
            &EnrollmentFields::of(&self.enrollment),
        )
    }
}

/// How many of `subjects` `assignment` includes, their dynamic groups decided by `dynamic`: what
/// [`crate::store::ProfileStore::count_assigned`] answers when an assignment names a dynamic
/// group (evaluated here over every active enrollment of the platform, not in SQL).
pub fn count_included(
    assignment: &crate::configuration::Assignment,
    dynamic: &[DynamicGroup],
    subjects: &[RuleSubject],
) -> u64 {
    subjects
        .iter()
        .filter(|s| assignment.includes(&s.groups(dynamic)))
        .count() as u64
}

/// The dynamic groups among `groups` that `assignment` names (included or excluded).
pub fn named_dynamic(
    groups: &[crate::model::Group],
    assignment: &crate::configuration::Assignment,
) -> Vec<DynamicGroup> {
    groups
        .iter()
        .filter(|g| assignment.groups.contains(&g.id) || assignment.exclude_groups.contains(&g.id))
        .filter_map(|g| {
            g.rule.as_ref().map(|rule| DynamicGroup {
                id: g.id,
                rule: rule.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn fact(name: &'static str, value: &str) -> DeviceFact {
        DeviceFact {
            name: FactName::from_static(name),
            value: value.into(),
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn rule(json: &str) -> GroupRule {
        GroupRule::from_json(json).unwrap()
    }

    fn enrollment(kind: &str, email: Option<&str>) -> EnrollmentFields {
        EnrollmentFields {
            enrollment_type: kind.into(),
            user_email: email.map(Into::into),
        }
    }

    #[test]
    fn versions_compare_numerically() {
        let v = |s| DottedVersion::parse(s).unwrap();
        assert_eq!(v("10.0.22631.2861").compare(&v("10.0.22000")), Ordering::Greater);
        assert_eq!(v("10.0.9").compare(&v("10.0.10")), Ordering::Less);
        assert_eq!(v("10.0").compare(&v("10.0.0.0")), Ordering::Equal);
        assert_eq!(v(" 10.0.1 ").to_string(), "10.0.1");
        for bad in ["", "10..0", "10.0.x", "1.2.3.4.5.6.7.8.9", "-1", "10.0.", "１０"] {
            assert!(DottedVersion::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn version_ranges_and_text_ops() {
        let r = rule(
            r#"{"all": [{"fact": "os.version", "op": ">=", "value": "10.0.22000"},
                        {"fact": "os.version", "op": "<", "value": "10.0.26100"},
                        {"fact": "os.edition", "op": "in", "value": ["Enterprise", "Education"]}]}"#,
        );
        let e = enrollment("Full", None);
        let dev = |v, ed| vec![fact("os.version", v), fact("os.edition", ed)];
        assert!(r.matches(&dev("10.0.22631.2861", "enterprise"), &e));
        assert!(r.matches(&dev("10.0.22000", "Education"), &e));
        assert!(!r.matches(&dev("10.0.19045.1", "Enterprise"), &e));
        assert!(!r.matches(&dev("10.0.26100.1", "Enterprise"), &e));
        assert!(!r.matches(&dev("10.0.22631", "Pro"), &e));
        assert!(
            !r.matches(&dev("not a version", "Enterprise"), &e),
            "unparsable: no match"
        );
        assert!(
            !r.matches(&[fact("os.edition", "Enterprise")], &e),
            "missing fact: no match"
        );
        assert_eq!(
            r.fact_names(),
            vec![FactName::from_static("os.edition"), FactName::from_static("os.version")]
        );

        let hw = rule(
            r#"{"all": [{"fact": "hardware.manufacturer", "op": "prefix", "value": "Lenovo"},
                        {"fact": "hardware.model", "op": "contains", "value": "ThinkPad"},
                        {"fact": "os.version", "op": "==", "value": "10.0.22631"}]}"#,
        );
        let facts = [
            fact("hardware.manufacturer", "LENOVO Group"),
            fact("hardware.model", "21HD ThinkPad T14"),
            fact("os.version", "10.0.22631.0"),
        ];
        assert!(hw.matches(&facts, &e));
        assert!(!hw.matches(&facts[..2], &e));
    }

    #[test]
    fn enrollment_fields() {
        let r = rule(
            r#"{"all": [{"fact": "enrollment.type", "op": "==", "value": "device"},
                        {"fact": "user.domain", "op": "in", "value": ["example.com", "corp.example"]}]}"#,
        );
        assert!(r.fact_names().is_empty());
        assert!(r.matches(&[], &enrollment("Device", Some("ann@Example.com"))));
        assert!(!r.matches(&[], &enrollment("Full", Some("ann@example.com"))));
        assert!(!r.matches(&[], &enrollment("Device", Some("ann@other.example"))));
        assert!(!r.matches(&[], &enrollment("Device", None)), "no user: no domain");
        assert!(!r.matches(&[], &enrollment("Device", Some("ann@"))));
    }

    #[test]
    fn tags_match_when_one_tag_does() {
        let e = enrollment("Full", None);
        let tags = |t: &[&str]| t.iter().map(|v| fact("tags", v)).collect::<Vec<_>>();
        let kiosk = rule(r#"{"all": [{"fact": "tags", "op": "==", "value": "Kiosk"}]}"#);
        assert!(kiosk.matches(&tags(&["finance", "kiosk"]), &e));
        assert!(!kiosk.matches(&tags(&["finance"]), &e));
        assert!(!kiosk.matches(&[], &e), "no tags: no match");
        assert!(
            !kiosk.matches(&[fact("hardware.model", "kiosk")], &e),
            "only facts named tags are tags"
        );
        let any = rule(r#"{"all": [{"fact": "tags", "op": "in", "value": ["lab", "kiosk"]}]}"#);
        assert!(any.matches(&tags(&["kiosk"]), &e));
        assert!(!any.matches(&tags(&["finance-laptops"]), &e));
        let prefix = rule(r#"{"all": [{"fact": "tags", "op": "prefix", "value": "finance-"}]}"#);
        assert!(prefix.matches(&tags(&["kiosk", "finance-laptops"]), &e));
        assert!(!prefix.matches(&tags(&["kiosk"]), &e));
        assert_eq!(kiosk.fact_names(), vec![TAGS]);
        assert!(
            !RuleFact::is_rule_fact(&TAGS),
            "tags are not inventory: a fact report never resets the stamp for them"
        );
        assert!(matches!(
            GroupRule::from_json(r#"{"all": [{"fact": "tags", "op": ">=", "value": "a"}]}"#),
            Err(RuleError::NotOrdered { .. })
        ));
    }

    #[test]
    fn invalid_rules_are_refused_with_what_is_wrong() {
        let err = |json: &str| GroupRule::from_json(json).unwrap_err();
        assert_eq!(err(r#"{"all": []}"#), RuleError::Empty);
        assert!(matches!(err(r#"{"any": []}"#), RuleError::Shape(_)));
        assert!(matches!(err("not json"), RuleError::Shape(_)));
        assert!(matches!(
            err(r#"{"all": [{"fact": "os.version", "op": ">=", "value": "10", "x": 1}]}"#),
            RuleError::Shape(_)
        ));
        assert!(matches!(
            err(r#"{"all": [{"fact": "labels", "op": "==", "value": "a"}]}"#),
            RuleError::UnknownFact { index: 1, .. }
        ));
        assert!(matches!(
            err(
                r#"{"all": [{"fact": "os.version", "op": ">=", "value": "10"}, {"fact": "os.version", "op": "~", "value": "1"}]}"#
            ),
            RuleError::UnknownOp { index: 2, .. }
        ));
        let e = err(r#"{"all": [{"fact": "os.version", "op": ">=", "value": "ten"}]}"#);
        assert!(e.to_string().contains("\"ten\" is not a version"), "{e}");
        assert!(matches!(
            err(r#"{"all": [{"fact": "hardware.model", "op": ">", "value": "a"}]}"#),
            RuleError::NotOrdered { .. }
        ));
        assert!(matches!(
            err(r#"{"all": [{"fact": "os.edition", "op": "in", "value": "Pro"}]}"#),
            RuleError::BadValue { .. }
        ));
        assert!(matches!(
            err(r#"{"all": [{"fact": "os.edition", "op": "==", "value": ["Pro"]}]}"#),
            RuleError::BadValue { .. }
        ));
        assert!(matches!(
            err(r#"{"all": [{"fact": "os.edition", "op": "in", "value": []}]}"#),
            RuleError::BadValue { .. }
        ));
        assert!(matches!(
            err(r#"{"all": [{"fact": "os.edition", "op": "==", "value": "  "}]}"#),
            RuleError::BadValue { .. }
        ));
        let many = format!(
            r#"{{"all": [{}]}}"#,
            vec![r#"{"fact": "os.edition", "op": "==", "value": "Pro"}"#; MAX_CONDITIONS + 1].join(",")
        );
        assert_eq!(err(&many), RuleError::TooMany);
    }

    #[test]
    fn the_json_shape_round_trips() {
        let text = r#"{"all":[{"fact":"os.version","op":">=","value":"10.0.22000"},{"fact":"os.edition","op":"in","value":["Enterprise","Education"]}]}"#;
        let r = rule(text);
        assert_eq!(r.to_json(), text);
        assert_eq!(GroupRule::from_value(r.to_value()).unwrap(), r);
        let via_serde: GroupRule = serde_json::from_str(text).unwrap();
        assert_eq!(via_serde, r);
        assert!(serde_json::from_str::<GroupRule>(r#"{"all": []}"#).is_err());
    }

    #[test]
    fn membership_is_the_static_group_and_the_matching_dynamic_ones() {
        let (s, d1, d2) = (GroupId::new(), GroupId::new(), GroupId::new());
        let dynamic = vec![
            DynamicGroup {
                id: d1,
                rule: rule(r#"{"all": [{"fact": "os.version", "op": ">=", "value": "10.0.22000"}]}"#),
            },
            DynamicGroup {
                id: d2,
                rule: rule(r#"{"all": [{"fact": "hardware.model", "op": "==", "value": "Surface"}]}"#),
            },
        ];
        let e = enrollment("Full", None);
        let facts = [fact("os.version", "10.0.22631")];
        assert_eq!(member_groups(Some(s), &dynamic, &facts, &e), vec![s, d1]);
        assert_eq!(member_groups(None, &dynamic, &[], &e), Vec::<GroupId>::new());
        assert_eq!(
            rule_fact_names(&dynamic),
            vec![
                FactName::from_static("hardware.model"),
                FactName::from_static("os.version")
            ]
        );
        assert!(RuleFact::is_rule_fact(&FactName::from_static("os.version")));
        assert!(!RuleFact::is_rule_fact(&FactName::from_static(
            "inventory.collected_at"
        )));
        assert!(!RuleFact::is_rule_fact(&FactName::from_static("enrollment.type")));
    }
}
