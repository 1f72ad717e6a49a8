//! The one response type for failures on the MS-MDE2 surface: a SOAP 1.2 fault (MS-MDE2 §2.2.10)
//! with `a:RelatesTo` echoing the request, logged once here with a trace id the device also gets.
//!
//! A failure on our side (the store, the random generator, a task) reaches the device only as a
//! generic reason and the trace id: its text names tables, paths or driver messages that are none
//! of the device's business. The details are in the log line carrying the same trace id.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use steward_core::StoreError;
use steward_windows_proto::mde2::{FaultSubcode, write_fault};

pub const SOAP_CONTENT_TYPE: &str = "application/soap+xml; charset=utf-8";

/// Seconds a device is told to wait before retrying a retryable fault.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// What the device reads for an internal failure.
pub const INTERNAL_REASON: &str = "the server could not complete the request";
/// What the device reads when the database is momentarily unavailable.
pub const UNAVAILABLE_REASON: &str = "the service is temporarily unavailable; try again shortly";

#[derive(Debug)]
pub struct SoapFault {
    pub subcode: FaultSubcode,
    /// Sent to the device (and logged).
    pub reason: String,
    /// Logged only: what went wrong on our side.
    pub detail: Option<String>,
    pub relates_to: Option<String>,
    pub status: Option<StatusCode>,
    /// `Retry-After` (seconds), for a retryable fault.
    pub retry_after: Option<u32>,
}

impl SoapFault {
    pub fn new(subcode: FaultSubcode, reason: impl Into<String>) -> Self {
        Self {
            subcode,
            reason: reason.into(),
            detail: None,
            relates_to: None,
            status: None,
            retry_after: None,
        }
    }
    pub fn relates_to(mut self, id: Option<&str>) -> Self {
        self.relates_to = id.map(str::to_owned);
        self
    }
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }
    /// A receiver fault the device may retry shortly: HTTP 503 with `Retry-After`. `reason` is sent
    /// to the device, so it must not carry internal details.
    pub fn retryable(reason: impl Into<String>) -> Self {
        let mut f = Self::new(FaultSubcode::InternalServiceFault, reason).with_status(StatusCode::SERVICE_UNAVAILABLE);
        f.retry_after = Some(RETRY_AFTER_SECONDS);
        f
    }
    /// A failure on our side: the device gets [`INTERNAL_REASON`] and the trace id, the log gets
    /// `detail`.
    pub fn internal(detail: impl Into<String>) -> Self {
        let mut f = Self::new(FaultSubcode::InternalServiceFault, INTERNAL_REASON);
        f.detail = Some(detail.into());
        f
    }
    /// A store failure while `doing` something: retryable when the database is unavailable,
    /// otherwise internal. Either way the store's text goes to the log only.
    pub fn store(e: StoreError, doing: &str) -> Self {
        let mut f = match e {
            StoreError::Unavailable(_) => Self::retryable(UNAVAILABLE_REASON),
            _ => Self::new(FaultSubcode::InternalServiceFault, INTERNAL_REASON),
        };
        f.detail = Some(format!("{doing}: {e}"));
        f
    }
}

impl IntoResponse for SoapFault {
    fn into_response(self) -> Response {
        let trace_id = uuid::Uuid::new_v4().to_string();
        // HTTP 500 for every fault, as the WCF services Windows' enrollment client was built
        // against send them (interop review C-1): Windows reports any other non-200 status as
        // HRESULT_FROM_HTTP (e.g. 0x80190190 for a 400, fleetdm/fleet#34993 and #42144) instead of
        // the subcode's MENROLL_E_DEVICE_* message. A fault with its own status (413 for an
        // oversized body, 503 with Retry-After when we are busy) keeps it: those are transport
        // conditions the device should see as such.
        let status = self.status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let detail = self.detail.as_deref().unwrap_or("");
        if self.retry_after.is_some() {
            tracing::warn!(trace_id, subcode = self.subcode.as_str(), reason = %self.reason, detail, "enrollment deferred");
        } else if matches!(
            self.subcode,
            FaultSubcode::InternalServiceFault | FaultSubcode::EnrollmentServer
        ) {
            // Our failure (the HTTP status is 500 for every fault, so it cannot tell).
            tracing::error!(trace_id, subcode = self.subcode.as_str(), reason = %self.reason, detail, "enrollment fault");
        } else {
            tracing::info!(trace_id, subcode = self.subcode.as_str(), reason = %self.reason, "enrollment refused");
        }
        let body = write_fault(self.relates_to.as_deref(), self.subcode, &self.reason, &trace_id);
        let mut response = (status, [(http::header::CONTENT_TYPE, SOAP_CONTENT_TYPE)], body).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
    }
}
