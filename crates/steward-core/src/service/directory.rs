//! The directory the admin surfaces edit: enrollment tokens, API tokens, users and their console
//! access, groups. Every field is validated here, once, whichever surface the request came from.

use std::collections::HashMap;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::{Clock, ServiceError, ServiceResult};
use crate::access::Principal;
use crate::admin::{ApiToken, ApiTokenId, BootstrapToken, NewApiToken, Role};
use crate::console::ConsoleUser;
use crate::group_rule::{DynamicGroup, EnrollmentFields, GroupRule, rule_fact_names};
use crate::model::{
    Enrollment, EnrollmentToken, EnrollmentTokenId, Group, GroupId, NewEnrollmentToken, NewUserError, User, UserId,
};
use crate::secret::{SecretString, TokenHash, TokenKind};
use crate::store::{Store, StoreError};

/// Longest free-text description of an enrollment token.
pub const MAX_DESCRIPTION_CHARS: usize = 256;
/// Default lifetime of an enrollment token, and the longest one allowed.
pub const DEFAULT_ENROLLMENT_TOKEN_HOURS: u32 = 168;
pub const MAX_ENROLLMENT_TOKEN_HOURS: u32 = 8760;

/// A new enrollment token as the surfaces ask for it.
#[derive(Debug, Clone, Default)]
pub struct EnrollmentTokenRequest {
    pub description: Option<String>,
    /// None: unlimited until expiry.
    pub max_uses: Option<u32>,
    /// Lifetime in hours (default [`DEFAULT_ENROLLMENT_TOKEN_HOURS`]).
    pub expires_in_hours: Option<u32>,
    /// The group enrolled devices join, created if missing.
    pub group: Option<String>,
}

/// A new API token as the surfaces ask for it.
#[derive(Debug, Clone)]
pub struct ApiTokenRequest {
    pub name: String,
    pub role: Role,
    /// An existing group's name: the token sees only its devices.
    pub group: Option<String>,
    pub expires_in_days: Option<u32>,
}

/// A new user as the surfaces ask for it.
pub struct UserRequest {
    pub email: String,
    pub display_name: Option<String>,
    pub password: SecretString,
    pub console_role: Option<Role>,
    /// With a console role: limit the user to this group's devices (the group's name).
    pub console_group: Option<String>,
}

/// A change to a user.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub disabled: Option<bool>,
    /// A role name or `none`.
    pub console_role: Option<String>,
    /// A group name, or empty for none.
    pub console_group: Option<String>,
}

/// A user with their console access, if any.
#[derive(Debug, Clone)]
pub struct UserEntry {
    pub user: User,
    pub console: Option<ConsoleUser>,
}

#[derive(Clone)]
pub struct Directory {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

fn random_token(kind: TokenKind) -> ServiceResult<SecretString> {
    kind.generate()
        .map_err(|_| ServiceError::Internal("system random generator failed".into()))
}

/// An optional free-text field: trimmed, empty as absent, at most `max` characters, no control
/// characters.
fn text_field(what: &str, value: Option<String>, max: usize) -> ServiceResult<Option<String>> {
    let Some(v) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ServiceError::Invalid(format!(
            "{what} must be at most {max} printable characters"
        )));
    }
    Ok(Some(v))
}

impl Directory {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Group names by id, for views.
    pub async fn group_names(&self) -> ServiceResult<HashMap<GroupId, String>> {
        Ok(self
            .store
            .list_groups()
            .await?
            .into_iter()
            .map(|g| (g.id, g.name))
            .collect())
    }

    /// The group called `name` (as written), or Invalid: a request naming a group that does not
    /// exist is malformed, not a missing resource.
    pub async fn named_group(&self, name: &str) -> ServiceResult<Group> {
        self.store
            .group_by_name(name)
            .await?
            .ok_or_else(|| ServiceError::Invalid(format!("no group named {name:?}")))
    }

    /// [`Directory::named_group`], refused if it is dynamic: a scope (an API token's, a console
    /// user's) or an enrollment token names a group devices are moved into, and nobody moves a
    /// device into a dynamic group.
    pub async fn static_group(&self, name: &str, what: &str) -> ServiceResult<Group> {
        let g = self.named_group(name).await?;
        if g.is_dynamic() {
            return Err(ServiceError::Invalid(format!(
                "group {name:?} is dynamic (its members are the devices its rule matches): {what} needs a static group"
            )));
        }
        Ok(g)
    }

    // ------------------------------------------------------------ enrollment tokens

    /// Creates an enrollment token; returns it with its value (shown once).
    pub async fn create_enrollment_token(
        &self,
        r: EnrollmentTokenRequest,
    ) -> ServiceResult<(EnrollmentToken, SecretString)> {
        if r.max_uses == Some(0) {
            return Err(ServiceError::Invalid("max_uses must be at least 1".into()));
        }
        let hours = r.expires_in_hours.unwrap_or(DEFAULT_ENROLLMENT_TOKEN_HOURS);
        if !(1..=MAX_ENROLLMENT_TOKEN_HOURS).contains(&hours) {
            return Err(ServiceError::Invalid(format!(
                "expires_in_hours must be between 1 and {MAX_ENROLLMENT_TOKEN_HOURS}"
            )));
        }
        let now = self.clock.now();
        // The group is created if missing, so its name follows the groups' own rule.
        let group = match r.group.as_deref().map(str::trim).filter(|g| !g.is_empty()) {
            None => None,
            Some(name) => Some(
                Group::named(name, now)
                    .map_err(|e| ServiceError::Invalid(e.to_string()))?
                    .name,
            ),
        };
        if let Some(name) = &group
            && self.store.group_by_name(name).await?.is_some_and(|g| g.is_dynamic())
        {
            return Err(ServiceError::Invalid(format!(
                "group {name:?} is dynamic (its members are the devices its rule matches): enrolled devices join a static group"
            )));
        }
        let description = text_field("description", r.description, MAX_DESCRIPTION_CHARS)?;
        let secret = random_token(TokenKind::Enrollment)?;
        let t = self
            .store
            .create_enrollment_token(&NewEnrollmentToken {
                id: EnrollmentTokenId::new(),
                token_hash: TokenHash::of(secret.expose()),
                description,
                max_uses: r.max_uses,
                expires_at: Some(now + Duration::hours(i64::from(hours))),
                group,
                created_at: now,
            })
            .await?;
        Ok((t, secret))
    }

    pub async fn enrollment_tokens(&self) -> ServiceResult<Vec<EnrollmentToken>> {
        Ok(self.store.list_enrollment_tokens().await?)
    }

    pub async fn revoke_enrollment_token(&self, id: &str) -> ServiceResult<EnrollmentTokenId> {
        let id: EnrollmentTokenId = id.parse().map_err(|_| ServiceError::NotFound("enrollment token"))?;
        if !self.store.revoke_enrollment_token(id).await? {
            return Err(ServiceError::NotFound("enrollment token"));
        }
        Ok(id)
    }

    // ------------------------------------------------------------ API tokens

    /// Creates a named API token; returns it with its value (shown once).
    pub async fn create_api_token(
        &self,
        who: &Principal,
        r: ApiTokenRequest,
    ) -> ServiceResult<(ApiToken, SecretString)> {
        let name = r.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(ServiceError::Invalid("name must be 1-64 printable characters".into()));
        }
        if r.expires_in_days.is_some_and(|d| !(1..=3650).contains(&d)) {
            return Err(ServiceError::Invalid(
                "expires_in_days must be between 1 and 3650".into(),
            ));
        }
        let group_id = match r.group.as_deref() {
            None => None,
            Some(g) => Some(self.static_group(g.trim(), "a token's scope").await?.id),
        };
        let secret = random_token(TokenKind::Admin)?;
        let now = self.clock.now();
        let t = self
            .store
            .create_api_token(&NewApiToken {
                id: ApiTokenId::new(),
                name,
                token_hash: TokenHash::of(secret.expose()),
                role: r.role,
                group_id,
                created_at: now,
                expires_at: r.expires_in_days.map(|d| now + Duration::days(i64::from(d))),
                created_by: who.name.clone(),
            })
            .await?;
        Ok((t, secret))
    }

    pub async fn api_tokens(&self) -> ServiceResult<Vec<ApiToken>> {
        Ok(self.store.list_api_tokens().await?)
    }

    /// Bootstrap admin tokens (configured or generated at the first start), revoked ones included,
    /// oldest first.
    pub async fn bootstrap_tokens(&self) -> ServiceResult<Vec<BootstrapToken>> {
        Ok(self.store.list_bootstrap_tokens().await?)
    }

    /// Revokes a named API token or a bootstrap token: their ids share one space, so the API's one
    /// revoke route (and `steward tokens revoke`) serves both kinds.
    pub async fn revoke_api_token(&self, id: &str) -> ServiceResult<ApiTokenId> {
        let id: ApiTokenId = id.parse().map_err(|_| ServiceError::NotFound("API token"))?;
        let now = self.clock.now();
        if self.store.revoke_api_token(id, now).await? || self.store.revoke_bootstrap_token(id, now).await? {
            return Ok(id);
        }
        Err(ServiceError::NotFound("API token"))
    }

    // ------------------------------------------------------------ users

    /// Every user with their console access, oldest first.
    pub async fn users(&self) -> ServiceResult<Vec<UserEntry>> {
        let users = self.store.list_users().await?;
        let mut console: HashMap<UserId, ConsoleUser> = self
            .store
            .list_console_users()
            .await?
            .into_iter()
            .map(|c| (c.user.id, c))
            .collect();
        Ok(users
            .into_iter()
            .map(|u| UserEntry {
                console: console.remove(&u.id),
                user: u,
            })
            .collect())
    }

    /// Creates a user (the password is hashed off the async workers). Returns the user and the
    /// console group's id.
    pub async fn create_user(&self, r: UserRequest) -> ServiceResult<(User, Option<GroupId>)> {
        let group = match (&r.console_role, r.console_group.as_deref()) {
            (_, None) => None,
            (None, Some(_)) => return Err(ServiceError::Invalid("console_group needs a console_role".into())),
            (Some(_), Some(name)) => Some(self.static_group(name, "a console user's scope").await?.id),
        };
        let (email, display_name, password) = (r.email, r.display_name, r.password);
        let now = self.clock.now();
        // Argon2 is slow on purpose: keep it off the async workers.
        let user = tokio::task::spawn_blocking(move || User::create(&email, display_name, password.expose(), now))
            .await
            .map_err(|e| ServiceError::Internal(format!("password hashing task: {e}")))?
            .map_err(|e| match e {
                NewUserError::Hash(_) => ServiceError::Internal(e.to_string()),
                invalid => ServiceError::Invalid(invalid.to_string()),
            })?;
        let stored = match r.console_role {
            Some(role) => self.store.create_console_user(&user, role, group).await,
            None => self.store.create_user(&user).await,
        };
        stored.map_err(|e| match e {
            StoreError::Conflict(_) => ServiceError::Conflict(format!("a user {} exists", user.email)),
            other => other.into(),
        })?;
        Ok((user, group))
    }

    /// A user by id or e-mail.
    pub async fn user(&self, key: &str) -> ServiceResult<User> {
        let found = match key.parse::<UserId>() {
            Ok(id) => self.store.user_by_id(id).await?,
            Err(_) => self.store.user_by_email(key).await?,
        };
        found.ok_or(ServiceError::NotFound("user"))
    }

    /// Changes a user's console access and/or disables them; ends their console sessions. Returns
    /// the user as changed and a description of the changes (for the audit log).
    pub async fn update_user(&self, key: &str, c: UserChange) -> ServiceResult<(UserEntry, String)> {
        let user = self.user(key).await?;
        let id = user.id;
        let current = self.store.console_user(id).await?;
        // Validate everything before changing anything.
        let role = match c.console_role.as_deref() {
            None => current.as_ref().map(|c| c.role),
            Some("none") => None,
            Some(r) => Some(Role::parse(r).ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "unknown console role {r:?} (admin, operator, helpdesk, auditor or none)"
                ))
            })?),
        };
        let group = match c.console_group.as_deref() {
            None if c.console_role.is_some() && role.is_none() => None,
            None => current.as_ref().and_then(|c| c.group),
            Some("") => None,
            Some(name) => Some(self.static_group(name, "a console user's scope").await?.id),
        };
        if group.is_some() && role.is_none() {
            return Err(ServiceError::Invalid("console_group needs a console role".into()));
        }
        let mut changes = Vec::new();
        if c.console_role.is_some() || c.console_group.is_some() {
            self.store.set_console_access(id, role, group).await?;
            changes.push(format!(
                "console: {}{}",
                role.map_or("none".to_owned(), |r| r.to_string()),
                group.map(|g| format!(" in group {g}")).unwrap_or_default()
            ));
        }
        if let Some(d) = c.disabled {
            self.store.set_user_disabled(id, d).await?;
            changes.push(if d { "disabled" } else { "enabled" }.to_owned());
        }
        self.store.delete_console_sessions_of(id).await?;
        let console = self.store.console_user(id).await?;
        let mut user = user;
        user.disabled = c.disabled.unwrap_or(user.disabled);
        Ok((UserEntry { user, console }, changes.join(", ")))
    }

    /// Removes a console user's second factor and ends their sessions (a lost phone).
    pub async fn reset_totp(&self, key: &str) -> ServiceResult<User> {
        let user = self.user(key).await?;
        let Some(console) = self.store.console_user(user.id).await? else {
            return Err(ServiceError::NotFound("user"));
        };
        self.store.set_user_totp(console.user.id, None).await?;
        self.store.delete_console_sessions_of(console.user.id).await?;
        Ok(console.user)
    }

    // ------------------------------------------------------------ groups

    /// Groups visible to the caller (a scoped caller sees only its own), with their active-device
    /// counts (a dynamic group's evaluated over every active enrollment's facts, in memory).
    pub async fn groups(&self, who: &Principal) -> ServiceResult<Vec<(Group, u64)>> {
        let mut counts: HashMap<GroupId, u64> = self.store.group_device_counts().await?.into_iter().collect();
        let groups: Vec<Group> = self
            .store
            .list_groups()
            .await?
            .into_iter()
            .filter(|g| who.group.is_none_or(|s| s == g.id))
            .collect();
        let dynamic: Vec<DynamicGroup> = groups
            .iter()
            .filter_map(|g| g.rule.clone().map(|rule| DynamicGroup { id: g.id, rule }))
            .collect();
        if !dynamic.is_empty() {
            let subjects = self
                .store
                .active_enrollments_with_facts(None, &rule_fact_names(&dynamic))
                .await?;
            for g in &dynamic {
                let n = subjects
                    .iter()
                    .filter(|s| g.rule.matches(&s.facts, &EnrollmentFields::of(&s.enrollment)))
                    .count();
                counts.insert(g.id, n as u64);
            }
        }
        Ok(groups
            .into_iter()
            .map(|g| {
                let n = counts.get(&g.id).copied().unwrap_or(0);
                (g, n)
            })
            .collect())
    }

    /// Creates a static group.
    pub async fn create_group(&self, name: &str) -> ServiceResult<Group> {
        self.create_group_with_rule(name, None).await
    }

    /// Creates a group, dynamic when a rule is given (validated by [`GroupRule`]'s constructors;
    /// creating one moves the configuration epoch, so every device evaluates it once).
    pub async fn create_group_with_rule(&self, name: &str, rule: Option<GroupRule>) -> ServiceResult<Group> {
        let group = Group {
            rule,
            ..Group::named(name, self.clock.now()).map_err(|e| ServiceError::Invalid(e.to_string()))?
        };
        self.store.create_group(&group).await.map_err(|e| match e {
            StoreError::Conflict(_) => ServiceError::Conflict(format!("a group {} exists", group.name)),
            other => other.into(),
        })?;
        Ok(group)
    }

    /// Replaces a dynamic group's rule (every device evaluates it again once). Conflict for a
    /// static group.
    pub async fn set_group_rule(&self, id: &str, rule: GroupRule) -> ServiceResult<GroupId> {
        let id: GroupId = id.parse().map_err(|_| ServiceError::NotFound("group"))?;
        match self.store.set_group_rule(id, &rule).await {
            Ok(true) => Ok(id),
            Ok(false) => Err(ServiceError::NotFound("group")),
            Err(StoreError::Conflict(_)) => Err(ServiceError::Conflict(
                "the group is static: its members are moved into it; create a dynamic group instead".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// A group visible to the caller and its members: the active enrollments in it (static) or
    /// those its rule matches (dynamic: evaluated here over every active enrollment's facts, in
    /// memory), oldest first.
    pub async fn group_members(&self, who: &Principal, id: &str) -> ServiceResult<(Group, Vec<Enrollment>)> {
        let id: GroupId = id.parse().map_err(|_| ServiceError::NotFound("group"))?;
        if who.group.is_some_and(|s| s != id) {
            return Err(ServiceError::NotFound("group"));
        }
        let group = self
            .store
            .list_groups()
            .await?
            .into_iter()
            .find(|g| g.id == id)
            .ok_or(ServiceError::NotFound("group"))?;
        let names = group.rule.as_ref().map(GroupRule::fact_names).unwrap_or_default();
        let members = self
            .store
            .active_enrollments_with_facts(None, &names)
            .await?
            .into_iter()
            .filter(|s| match &group.rule {
                Some(rule) => rule.matches(&s.facts, &EnrollmentFields::of(&s.enrollment)),
                None => s.enrollment.group_id == Some(id),
            })
            .map(|s| s.enrollment)
            .collect();
        Ok((group, members))
    }

    pub async fn delete_group(&self, id: &str) -> ServiceResult<GroupId> {
        let id: GroupId = id.parse().map_err(|_| ServiceError::NotFound("group"))?;
        match self.store.delete_group(id).await {
            Ok(true) => Ok(id),
            Ok(false) => Err(ServiceError::NotFound("group")),
            Err(StoreError::Conflict(_)) => Err(ServiceError::Conflict(
                "the group still has active devices, enrollment tokens or API tokens: move or revoke them first".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}
