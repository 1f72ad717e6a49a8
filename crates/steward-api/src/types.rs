//! The admin API's request and response bodies in one place, for clients: the CLI deserialises
//! the same types the handlers serialise, so the two cannot drift. (The handlers' modules own them;
//! this is the index.)

pub use crate::api_tokens::{ApiTokenKind, ApiTokenPage, ApiTokenView, CreatedApiToken, NewApiTokenRequest, RoleName};
pub use crate::audit::{AuditEventPage, AuditEventView};
pub use crate::catalog::{
    CatalogCategoryName, CatalogDetail, CatalogList, CatalogParameterView, CatalogSettingView, CatalogSummary,
};
pub use crate::devices::{
    Certificate, CommandItemRequest, CommandPage, CommandRequest, CommandView, DeviceDetail, DeviceGroupRequest,
    DevicePage, DeviceSummary, DeviceTagsRequest, DeviceTagsResponse, Fact, FactChangeEntry, VerbName, WipeKindName,
    WipeRequest,
};
pub use crate::enrollment_tokens::{
    CreatedEnrollmentToken, EnrollmentTokenPage, EnrollmentTokenView, NewEnrollmentTokenRequest,
};
pub use crate::error::Problem;
pub use crate::groups::{GroupPage, GroupRuleRequest, GroupView, NewGroupRequest};
pub use crate::profiles::{
    ApplyActionName, ApplyReportView, ApplyRequest, AssignBody, ConfigLockView, ConflictView, DeviceSettingView,
    DeviceSettingsView, ProfileChangeView, ProfileDetailView, ProfileDocumentBody, ProfileExport, ProfileList,
    ProfileSummary, ProfileVersionView, RemediationName, StatusCount, VerificationRequested,
};
pub use crate::rollouts::{RingBody, RingView, RolloutBody, RolloutView};
pub use crate::server::{Counts, ServerInfo};
pub use crate::users::{NewUserRequest, UpdateUserRequest, UserPage, UserView};
pub use crate::webhooks::{
    CreatedWebhook, NewWebhookRequest, QueuedPing, WebhookDeliveryPage, WebhookDeliveryView, WebhookPage,
    WebhookUpdate, WebhookView,
};
