//! Device events: what happened to a device, recorded by the store in the same transaction as the
//! change (the outbox webhooks and the dashboard read). Their shapes are built here, so every
//! backend writes the same JSON.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::admin::unix_micros;
use crate::command::{CommandId, CommandState};
use crate::model::{CertSerial, Enrollment, EnrollmentId, EnrollmentState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Enrolled,
    Unenrolled,
    /// A wipe was acknowledged by the device.
    Wiped,
    CertificateRenewed,
    /// The device answered a command with success (202 included: accepted for async processing).
    CommandAcknowledged,
    /// The device answered a command with an error.
    CommandFailed,
    /// Someone tried to enroll this device's DeviceID with a credential that has no link to its
    /// active enrollment (another user, another token, no current certificate): refused, and
    /// recorded on the enrollment that was targeted.
    ReenrollmentRefused,
    /// A setting read back from the device held another value than its profile sets.
    SettingDrifted,
    /// The device refused a setting of a profile (or its removal).
    SettingFailed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enrolled => "enrolled",
            Self::Unenrolled => "unenrolled",
            Self::Wiped => "wiped",
            Self::CertificateRenewed => "certificate_renewed",
            Self::CommandAcknowledged => "command_acknowledged",
            Self::CommandFailed => "command_failed",
            Self::ReenrollmentRefused => "reenrollment_refused",
            Self::SettingDrifted => "setting_drifted",
            Self::SettingFailed => "setting_failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "enrolled" => Self::Enrolled,
            "unenrolled" => Self::Unenrolled,
            "wiped" => Self::Wiped,
            "certificate_renewed" => Self::CertificateRenewed,
            "command_acknowledged" => Self::CommandAcknowledged,
            "command_failed" => Self::CommandFailed,
            "reenrollment_refused" => Self::ReenrollmentRefused,
            "setting_drifted" => Self::SettingDrifted,
            "setting_failed" => Self::SettingFailed,
            _ => return None,
        })
    }
}

/// An event to record; the store adds the sequence number, the enrollment's ids and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeviceEvent {
    pub kind: EventKind,
    /// Kind-specific details (command id and status code, reason, certificate serial, …).
    pub data: serde_json::Value,
}

impl NewDeviceEvent {
    /// A device enrolled; `replaced` when it had an active enrollment that this one replaces (the
    /// fleet's size is unchanged).
    pub fn enrolled(e: &Enrollment, replaced: bool) -> Self {
        Self {
            kind: EventKind::Enrolled,
            data: serde_json::json!({
                "enrollment_type": e.enrollment_type.as_str(),
                "auth_method": e.auth_method.as_str(),
                "user": e.user_email,
                "device_name": e.device_name,
                "serial": e.cert_serial,
                "replaced": replaced,
            }),
        }
    }

    /// A renewal issued the enrollment a new certificate.
    pub fn certificate_renewed(serial: &CertSerial, not_after: OffsetDateTime) -> Self {
        Self {
            kind: EventKind::CertificateRenewed,
            data: serde_json::json!({ "serial": serial, "not_after": unix_micros(not_after) }),
        }
    }

    /// The device answered a command; `state` is what [`CommandState::after_status`] made of it.
    pub fn command_answered(command_id: CommandId, status_code: u16, state: CommandState) -> Self {
        Self {
            kind: Self::answer_kind(state),
            data: serde_json::json!({ "command_id": command_id, "status_code": status_code }),
        }
    }

    /// An accepted command's asynchronous outcome arrived.
    pub fn command_completed(command_id: CommandId, status_code: u16, state: CommandState) -> Self {
        Self {
            kind: Self::answer_kind(state),
            data: serde_json::json!({
                "command_id": command_id, "status_code": status_code, "completion": "async"
            }),
        }
    }

    fn answer_kind(state: CommandState) -> EventKind {
        if state == CommandState::Failed {
            EventKind::CommandFailed
        } else {
            EventKind::CommandAcknowledged
        }
    }

    /// A re-enrollment of the device's DeviceID was refused (see
    /// [`crate::identity::Reenrollment`]): how the attempt authenticated, the user it named, its
    /// enrollment token and where it came from.
    pub fn reenrollment_refused(
        auth_method: crate::model::AuthMethod,
        user: Option<&str>,
        token: Option<crate::model::EnrollmentTokenId>,
        source_ip: Option<std::net::IpAddr>,
    ) -> Self {
        Self {
            kind: EventKind::ReenrollmentRefused,
            data: serde_json::json!({
                "auth_method": auth_method.as_str(),
                "user": user,
                "enrollment_token_id": token.map(|t| t.to_string()),
                "source_ip": source_ip.map(|ip| ip.to_string()),
            }),
        }
    }

    /// A setting read back with another value than the desired one (`observed` None: the node was
    /// missing), and whether it is being remediated.
    pub fn setting_drifted(
        path: &str,
        desired: &str,
        observed: Option<&str>,
        remediation: crate::configuration::Remediation,
    ) -> Self {
        Self {
            kind: EventKind::SettingDrifted,
            data: serde_json::json!({
                "path": path, "desired": desired, "observed": observed,
                "remediation": remediation.as_str(),
            }),
        }
    }

    /// The device refused a setting (or its removal), with its status code and own error text.
    pub fn setting_failed(path: &str, status_code: u16, error: Option<&str>) -> Self {
        Self {
            kind: EventKind::SettingFailed,
            data: serde_json::json!({ "path": path, "status_code": status_code, "error": error }),
        }
    }

    /// An enrollment left `active` (unenrolled by the device or an admin, or wiped).
    pub fn enrollment_ended(state: EnrollmentState, reason: &str) -> Self {
        Self {
            kind: if state == EnrollmentState::Wiped {
                EventKind::Wiped
            } else {
                EventKind::Unenrolled
            },
            data: serde_json::json!({ "reason": reason }),
        }
    }
}

/// One recorded device event. `seq` increases strictly: consumers (webhook delivery) keep a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEvent {
    pub seq: i64,
    pub kind: EventKind,
    pub enrollment_id: EnrollmentId,
    pub device_id: String,
    /// Kind-specific details (command id and status code, reason, certificate serial, …).
    pub data: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}
