//! Admin operations shared by every admin surface (CLI now, REST API and console later): finding
//! devices and queueing validated commands and actions for them.

use steward_core::*;
use time::OffsetDateTime;

use crate::windows::commands::{self, Action, CommandError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no active enrollment for device {0}")]
    UnknownDevice(String),
    #[error(transparent)]
    Invalid(#[from] CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Resolves a device by DeviceID or enrollment id (active enrollments only).
pub async fn find_device(store: &dyn Store, key: &str) -> Result<Enrollment, AdminError> {
    let unknown = || AdminError::UnknownDevice(key.to_owned());
    if let Ok(id) = key.parse::<EnrollmentId>()
        && let Some(e) = store.enrollment_by_id(id).await?
        && e.state == EnrollmentState::Active
    {
        return Ok(e);
    }
    let device_id = DeviceId::parse(key).ok_or_else(unknown)?;
    store
        .active_enrollment_by_device_id(&device_id)
        .await?
        .ok_or_else(unknown)
}

/// Validates and queues a command for one enrollment. `priority`: higher goes first.
pub async fn queue_command(
    store: &dyn Store,
    enrollment: &Enrollment,
    payload: CommandPayload,
    origin: &str,
    priority: i32,
    expires_in: Option<time::Duration>,
) -> Result<CommandId, AdminError> {
    commands::validate(&payload)?;
    let now = OffsetDateTime::now_utc();
    let id = CommandId::new();
    store
        .enqueue_commands(&[NewCommand {
            id,
            enrollment_id: enrollment.id,
            payload,
            priority,
            origin: origin.to_owned(),
            created_at: now,
            expires_at: expires_in.map(|d| now + d),
        }])
        .await?;
    Ok(id)
}

/// Queues a remote action. Wipes go first in the queue.
pub async fn queue_action(
    store: &dyn Store,
    enrollment: &Enrollment,
    action: &Action,
) -> Result<CommandId, AdminError> {
    let priority = if matches!(action, Action::Wipe(_)) { 100 } else { 10 };
    queue_command(store, enrollment, action.payload(), action.origin(), priority, None).await
}
