//! Queueing commands for devices — remote actions and admins' own commands, both turned into the
//! device's platform's command by its adapter — and the command timeline with cancelling.

use std::sync::Arc;

use time::OffsetDateTime;

use super::devices::Devices;
use super::{Clock, ServiceError, ServiceResult, require};
use crate::access::{Permission, Principal};
use crate::command::{
    Action, Command, CommandId, CommandOrigin, CommandSummary, NewCommand, PlatformPayload, Priority,
};
use crate::model::Enrollment;
use crate::platform::Platforms;
use crate::store::Store;

/// A command queued for a device, with the enrollment it went to.
#[derive(Debug, Clone)]
pub struct Queued {
    pub enrollment: Enrollment,
    pub command: Command,
}

#[derive(Clone)]
pub struct Commands {
    store: Arc<dyn Store>,
    devices: Devices,
    platforms: Platforms,
    clock: Arc<dyn Clock>,
}

impl Commands {
    pub fn new(store: Arc<dyn Store>, devices: Devices, platforms: Platforms, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            devices,
            platforms,
            clock,
        }
    }

    /// The permission an action needs.
    pub fn permission_of(action: Action) -> Permission {
        match action {
            Action::Wipe(_) => Permission::DevicesWipe,
            Action::Reboot | Action::Lock | Action::Sync => Permission::DevicesAct,
        }
    }

    /// Queues a remote action for an active device (its platform decides the command; wipes go
    /// ahead of everything).
    pub async fn queue_action(&self, who: &Principal, device: &str, action: Action) -> ServiceResult<Queued> {
        require(who, Self::permission_of(action))?;
        let e = self.devices.find_active(who, device).await?;
        let payload = self.platforms.get(e.platform)?.action_command(action)?;
        self.queue(e, payload, action.origin(), action.priority(), None).await
    }

    /// Validates an admin's own command (the API's request shape for the device's platform, as
    /// JSON) and queues it for an active device.
    pub async fn queue_admin_command(
        &self,
        who: &Principal,
        device: &str,
        request: &serde_json::Value,
    ) -> ServiceResult<Queued> {
        require(who, Permission::DevicesCommand)?;
        let e = self.devices.find_active(who, device).await?;
        let payload = self.platforms.get(e.platform)?.admin_command(request)?;
        self.queue(e, payload, CommandOrigin::Admin, Priority::ADMIN, None)
            .await
    }

    async fn queue(
        &self,
        enrollment: Enrollment,
        payload: PlatformPayload,
        origin: CommandOrigin,
        priority: i32,
        expires_in: Option<time::Duration>,
    ) -> ServiceResult<Queued> {
        let now = self.clock.now();
        let new = NewCommand {
            id: CommandId::new(),
            enrollment_id: enrollment.id,
            payload,
            priority,
            origin,
            created_at: now,
            expires_at: expires_in.map(|d| now + d),
        };
        self.store.enqueue_commands(std::slice::from_ref(&new)).await?;
        let command = self
            .store
            .command(new.id)
            .await?
            .ok_or_else(|| ServiceError::Internal(format!("queued command {} not found", new.id)))?;
        Ok(Queued { enrollment, command })
    }

    /// A device's command timeline, oldest first (any state of the enrollment).
    pub async fn for_device(&self, who: &Principal, device: &str) -> ServiceResult<(Enrollment, Vec<Command>)> {
        require(who, Permission::DevicesRead)?;
        let e = self.devices.find(who, device).await?;
        let commands = self.store.commands_for_enrollment(e.id).await?;
        Ok((e, commands))
    }

    /// Cancels a command the device has not answered yet. Returns it as cancelled, with its device.
    pub async fn cancel(&self, who: &Principal, id: &str) -> ServiceResult<Queued> {
        require(who, Permission::DevicesCommand)?;
        let not_found = || ServiceError::NotFound("command");
        let cid: CommandId = id.parse().map_err(|_| not_found())?;
        let c = self.store.command(cid).await?.ok_or_else(not_found)?;
        let e = self
            .store
            .enrollment_by_id(c.enrollment_id)
            .await?
            .filter(|e| who.sees(e))
            .ok_or_else(not_found)?;
        if !self.store.cancel_command(cid, self.clock.now()).await? {
            return Err(ServiceError::Conflict(format!(
                "command {cid} is {} and can no longer be cancelled",
                c.state.as_str()
            )));
        }
        let command = self.store.command(cid).await?.ok_or_else(not_found)?;
        Ok(Queued { enrollment: e, command })
    }

    /// How a command of this enrollment reads in lists.
    pub fn describe(&self, e: &Enrollment, c: &Command) -> CommandSummary {
        self.platforms.describe(e.platform, &c.payload)
    }

    /// The time, as the services see it.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}
