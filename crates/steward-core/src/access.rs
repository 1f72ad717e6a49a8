//! Who may do what: the permissions the admin surfaces check and the caller they check them for.
//! The role matrix is here so the API's route table, the console and the services agree.

use crate::admin::ApiTokenId;
use crate::admin::Role;
use crate::model::{Enrollment, GroupId};

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    DevicesRead,
    /// Sync, lock, reboot.
    DevicesAct,
    /// Custom device commands and cancelling commands.
    DevicesCommand,
    DevicesWipe,
    EnrollmentTokensRead,
    EnrollmentTokensWrite,
    UsersRead,
    UsersWrite,
    GroupsRead,
    /// Create and delete groups, move devices between them.
    GroupsWrite,
    ApiTokensRead,
    ApiTokensWrite,
    AuditRead,
    ServerRead,
    /// Read the platforms' built-in configuration catalog (nothing device- or tenant-specific).
    CatalogRead,
    /// List subscriptions and read their delivery logs.
    WebhooksRead,
    /// Create, delete and test subscriptions.
    WebhooksWrite,
    /// Read configuration profiles, their versions, status counts and conflicts, and export them.
    ProfilesRead,
    /// Apply, delete and assign configuration profiles (catalog entries included).
    ProfilesWrite,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DevicesRead => "devices.read",
            Self::DevicesAct => "devices.act",
            Self::DevicesCommand => "devices.command",
            Self::DevicesWipe => "devices.wipe",
            Self::EnrollmentTokensRead => "enrollment_tokens.read",
            Self::EnrollmentTokensWrite => "enrollment_tokens.write",
            Self::UsersRead => "users.read",
            Self::UsersWrite => "users.write",
            Self::GroupsRead => "groups.read",
            Self::GroupsWrite => "groups.write",
            Self::ApiTokensRead => "api_tokens.read",
            Self::ApiTokensWrite => "api_tokens.write",
            Self::AuditRead => "audit.read",
            Self::ServerRead => "server.read",
            Self::CatalogRead => "catalog.read",
            Self::WebhooksRead => "webhooks.read",
            Self::WebhooksWrite => "webhooks.write",
            Self::ProfilesRead => "profiles.read",
            Self::ProfilesWrite => "profiles.write",
        }
    }

    /// The role matrix (docs/OPERATIONS.md shows the same table).
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Self::DevicesRead
            | Self::EnrollmentTokensRead
            | Self::UsersRead
            | Self::GroupsRead
            | Self::ServerRead
            | Self::CatalogRead
            | Self::ProfilesRead => true,
            Self::DevicesAct => matches!(role, Admin | Operator | Helpdesk),
            // Profiles write what an operator can already send device by device (custom commands).
            Self::DevicesCommand | Self::DevicesWipe | Self::GroupsWrite | Self::ProfilesWrite => {
                matches!(role, Admin | Operator)
            }
            Self::AuditRead | Self::ApiTokensRead | Self::WebhooksRead => matches!(role, Admin | Auditor),
            Self::EnrollmentTokensWrite | Self::UsersWrite | Self::ApiTokensWrite | Self::WebhooksWrite => {
                role == Admin
            }
        }
    }

    /// Whether a group-scoped caller may use it at all. Scoped callers see their group's devices
    /// and nothing global: otherwise a team admin could mint an unscoped token or read the whole
    /// fleet's audit trail.
    pub fn available_to_scoped(self) -> bool {
        matches!(
            self,
            Self::DevicesRead
                | Self::DevicesAct
                | Self::DevicesCommand
                | Self::DevicesWipe
                | Self::GroupsRead
                | Self::ServerRead
                | Self::CatalogRead
        )
    }
}

/// An authenticated admin caller: an API token, the bootstrap token, a console user or the local
/// CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who, as the audit log names it (a token's name, `ada@example.org (console)`, `cli (local)`).
    pub name: String,
    /// The id of the API or bootstrap token it authenticated with, when it has one.
    pub token_id: Option<ApiTokenId>,
    pub role: Role,
    /// Group scope: only this group's devices exist for this caller.
    pub group: Option<GroupId>,
}

impl Principal {
    /// Whether the enrollment is visible to this caller (out-of-scope devices are reported as not
    /// found, so a scoped caller cannot even learn that they exist).
    pub fn sees(&self, e: &Enrollment) -> bool {
        self.group.is_none() || self.group == e.group_id
    }

    /// Whether the role allows the permission and, for a group-scoped caller, whether the
    /// permission is open to scoped callers at all.
    pub fn permits(&self, p: Permission) -> bool {
        p.allows(self.role) && (self.group.is_none() || p.available_to_scoped())
    }

    /// How a refusal names the caller's role ("operator", "group-scoped helpdesk").
    pub fn role_label(&self) -> String {
        if self.group.is_some() {
            format!("group-scoped {}", self.role)
        } else {
            self.role.to_string()
        }
    }

    /// The local CLI working on the data directory: an administrator by definition (it can read
    /// the database file anyway).
    pub fn local_cli() -> Self {
        Self {
            name: "cli (local)".into(),
            token_id: None,
            role: Role::Admin,
            group: None,
        }
    }
}
