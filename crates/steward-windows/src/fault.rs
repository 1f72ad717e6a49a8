//! The one response type for failures on the MS-MDE2 surface: a SOAP 1.2 fault (MS-MDE2 §2.2.10)
//! with `a:RelatesTo` echoing the request, logged once here with a trace id the device also gets.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use steward_core::StoreError;
use steward_windows_proto::mde2::{FaultSubcode, write_fault};

pub const SOAP_CONTENT_TYPE: &str = "application/soap+xml; charset=utf-8";

/// Seconds a device is told to wait before retrying a retryable fault.
pub const RETRY_AFTER_SECONDS: u32 = 5;

#[derive(Debug)]
pub struct SoapFault {
    pub subcode: FaultSubcode,
    pub reason: String,
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
    /// A receiver fault the device may retry shortly: HTTP 503 with `Retry-After`.
    pub fn retryable(reason: impl Into<String>) -> Self {
        let mut f = Self::new(FaultSubcode::InternalServiceFault, reason).with_status(StatusCode::SERVICE_UNAVAILABLE);
        f.retry_after = Some(RETRY_AFTER_SECONDS);
        f
    }
    /// A store failure: retryable when the database is unavailable, otherwise an internal fault
    /// whose reason `describe` writes.
    pub fn store(e: StoreError, describe: impl FnOnce(StoreError) -> String) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                Self::retryable("the service is temporarily unavailable; try again shortly")
            }
            other => Self::new(FaultSubcode::InternalServiceFault, describe(other)),
        }
    }
}

impl IntoResponse for SoapFault {
    fn into_response(self) -> Response {
        let trace_id = uuid::Uuid::new_v4().to_string();
        // SOAP 1.2 HTTP binding (SOAP 1.2 Part 2 §7.5.1.2): Sender faults are 400, Receiver faults 500.
        let status = self.status.unwrap_or(match self.subcode {
            FaultSubcode::InternalServiceFault | FaultSubcode::EnrollmentServer => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        });
        if status.is_server_error() {
            tracing::error!(trace_id, subcode = self.subcode.as_str(), reason = %self.reason, "enrollment fault");
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
