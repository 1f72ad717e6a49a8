//! Devices as the admin surfaces see them: finding one by DeviceID or enrollment id within the
//! caller's scope, listing, the detail view, moving between groups, tagging, unenrolling.

use std::sync::Arc;

use super::{Clock, ServiceError, ServiceResult, require};
use crate::access::{Permission, Principal};
use crate::admin::{DeviceCursor, DeviceQuery, DeviceSort};
use crate::checkin::EnrollmentEnd;
use crate::inventory::{DeviceFact, FactChange};
use crate::model::{DeviceId, DeviceTags, Enrollment, EnrollmentId, EnrollmentState, Group, GroupId};
use crate::store::Store;

/// A device list request as the surfaces take it (group by name; the scope is the caller's).
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub name_contains: Option<String>,
    pub user: Option<String>,
    pub os_version: Option<String>,
    pub state: Option<EnrollmentState>,
    /// A group's name.
    pub group: Option<String>,
    pub last_seen_before: Option<time::OffsetDateTime>,
    pub last_seen_after: Option<time::OffsetDateTime>,
    pub sort: DeviceSort,
    pub descending: bool,
    pub after: Option<DeviceCursor>,
    pub limit: u32,
}

/// One page of devices; `more` when another page follows the last item.
#[derive(Debug, Clone)]
pub struct DevicePage {
    pub items: Vec<Enrollment>,
    pub more: bool,
}

/// A device with its inventory.
#[derive(Debug, Clone)]
pub struct DeviceDetail {
    pub enrollment: Enrollment,
    /// The name of its group, if any.
    pub group: Option<String>,
    pub facts: Vec<DeviceFact>,
    pub fact_history: Vec<FactChange>,
    /// Its admin-assigned tags, sorted.
    pub tags: DeviceTags,
}

#[derive(Clone)]
pub struct Devices {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Devices {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// A device by enrollment id or DeviceID, in any state (for DeviceIDs: the active enrollment,
    /// else the newest one), within the caller's scope.
    pub async fn find(&self, who: &Principal, key: &str) -> ServiceResult<Enrollment> {
        let mut found = None;
        if let Ok(id) = key.parse::<EnrollmentId>() {
            found = self.store.enrollment_by_id(id).await?;
        }
        if found.is_none()
            && let Some(d) = DeviceId::parse(key)
        {
            found = self.store.latest_enrollment_by_device_id(&d).await?;
        }
        found.filter(|e| who.sees(e)).ok_or(ServiceError::NotFound("device"))
    }

    /// An active enrollment (commands and actions need one) by enrollment id or DeviceID, within
    /// the caller's scope.
    pub async fn find_active(&self, who: &Principal, key: &str) -> ServiceResult<Enrollment> {
        let mut found = None;
        if let Ok(id) = key.parse::<EnrollmentId>() {
            found = self
                .store
                .enrollment_by_id(id)
                .await?
                .filter(|e| e.state == EnrollmentState::Active);
        }
        if found.is_none()
            && let Some(d) = DeviceId::parse(key)
        {
            found = self.store.active_enrollment_by_device_id(&d).await?;
        }
        found.filter(|e| who.sees(e)).ok_or(ServiceError::NotFound("device"))
    }

    /// A page of devices matching the filter within the caller's scope. A scoped caller naming
    /// another group gets an empty page; an unknown group is a bad request.
    pub async fn list(&self, who: &Principal, f: DeviceFilter) -> ServiceResult<DevicePage> {
        require(who, Permission::DevicesRead)?;
        let group_id = match f.group.as_deref().filter(|g| !g.is_empty()) {
            None => who.group,
            Some(name) => {
                let Some(g) = self.store.group_by_name(name).await? else {
                    return Err(ServiceError::BadRequest(format!("no group named {name:?}")));
                };
                if who.group.is_some_and(|own| own != g.id) {
                    return Ok(DevicePage {
                        items: Vec::new(),
                        more: false,
                    });
                }
                Some(g.id)
            }
        };
        let limit = f.limit.max(1);
        let query = DeviceQuery {
            name_contains: f.name_contains.filter(|s| !s.is_empty()),
            user: f.user.filter(|s| !s.is_empty()),
            os_version: f.os_version.filter(|s| !s.is_empty()),
            state: f.state,
            group_id,
            last_seen_before: f.last_seen_before,
            last_seen_after: f.last_seen_after,
            sort: f.sort,
            descending: f.descending,
            after: f.after,
            // One more than asked tells whether another page exists.
            limit: limit + 1,
        };
        let mut items = self.store.list_devices(&query).await?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Ok(DevicePage { items, more })
    }

    /// One device with its inventory, in any state.
    pub async fn detail(&self, who: &Principal, key: &str) -> ServiceResult<DeviceDetail> {
        require(who, Permission::DevicesRead)?;
        let e = self.find(who, key).await?;
        let facts = self.store.device_facts(e.id).await?;
        let fact_history = self.store.fact_history(e.id).await?;
        let tags = self.store.device_tags(e.id).await?;
        let group = match e.group_id {
            Some(g) => self.group_name(g).await?,
            None => None,
        };
        Ok(DeviceDetail {
            enrollment: e,
            group,
            facts,
            fact_history,
            tags,
        })
    }

    /// Replaces an active device's tags with `tags` (validated and normalised here: every surface
    /// gets the same rule and the same message). The device's dynamic groups are re-evaluated at
    /// its next check-in, as after a fact change. Returns the enrollment, its tags before and
    /// after. Tags are labels that choose what devices get (like a group move), hence
    /// `groups.write`.
    pub async fn set_tags<S: AsRef<str>>(
        &self,
        who: &Principal,
        key: &str,
        tags: &[S],
    ) -> ServiceResult<(Enrollment, DeviceTags, DeviceTags)> {
        require(who, Permission::GroupsWrite)?;
        let tags = DeviceTags::parse(tags).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let e = self.find_active(who, key).await?;
        let before = self.store.device_tags(e.id).await?;
        if !self.store.set_device_tags(e.id, &tags, self.clock.now()).await? {
            return Err(ServiceError::NotFound("device"));
        }
        Ok((e, before, tags))
    }

    async fn group_name(&self, id: GroupId) -> ServiceResult<Option<String>> {
        Ok(self
            .store
            .list_groups()
            .await?
            .into_iter()
            .find(|g| g.id == id)
            .map(|g| g.name))
    }

    /// Moves an active device into the group named `group` (exactly as written; None: out of every
    /// group). Returns the enrollment as moved and the group.
    pub async fn set_group(
        &self,
        who: &Principal,
        key: &str,
        group: Option<&str>,
    ) -> ServiceResult<(Enrollment, Option<Group>)> {
        require(who, Permission::GroupsWrite)?;
        let mut e = self.find_active(who, key).await?;
        let group = match group {
            None => None,
            Some(name) => Some(
                self.store
                    .group_by_name(name)
                    .await?
                    .ok_or_else(|| ServiceError::Invalid(format!("no group named {name:?}")))?,
            ),
        };
        if let Some(g) = group.as_ref().filter(|g| g.is_dynamic()) {
            return Err(ServiceError::Invalid(format!(
                "group {:?} is dynamic: its members are the devices its rule matches, and no device is moved into it",
                g.name
            )));
        }
        if !self
            .store
            .set_enrollment_group(e.id, group.as_ref().map(|g| g.id))
            .await?
        {
            return Err(ServiceError::NotFound("device"));
        }
        e.group_id = group.as_ref().map(|g| g.id);
        Ok((e, group))
    }

    /// Ends a device's active enrollment (its certificate is revoked and its open commands are
    /// cancelled). Returns the enrollment as it was.
    pub async fn unenroll(&self, who: &Principal, key: &str, reason: &str) -> ServiceResult<Enrollment> {
        require(who, Permission::DevicesWipe)?;
        let e = self.find_active(who, key).await?;
        let end = EnrollmentEnd::new(EnrollmentState::Unenrolled, reason);
        if !self.store.end_enrollment(e.id, &end, self.clock.now()).await? {
            return Err(ServiceError::NotFound("device"));
        }
        Ok(e)
    }
}
