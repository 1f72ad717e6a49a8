//! `GET /readyz`, the load balancer's readiness check (docs/OPERATIONS.md, "Load balancer health
//! checks"). `/healthz` says the process serves HTTP; this says it can serve a request that needs
//! the database: the database answers one cheap read within [`READY_TIMEOUT`], and its applied
//! migrations are exactly the ones this binary carries. Unauthenticated and not audited (a probe
//! every few seconds per balancer would drown the audit log); the answer never names more than
//! which check failed and why, so it leaks nothing an anonymous caller should not know.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use steward_core::{HealthStore, SchemaState};

/// How long the database has to answer. Short: a balancer probes often, and a database slower
/// than this is one the node should not be sent traffic for.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Seconds a client is told to wait before asking again (RFC 9110 §10.2.3).
const RETRY_AFTER_SECS: &str = "5";

/// A failed check: which one, a stable code, and what an operator reads.
struct NotReady {
    check: &'static str,
    code: &'static str,
    detail: String,
}

/// The handler; its state is the server's store.
pub async fn readyz(State(store): State<Arc<dyn HealthStore>>) -> Response {
    match check(store.as_ref()).await {
        Ok(()) => {
            let mut resp = "ready".into_response();
            no_store(&mut resp);
            resp
        }
        Err(n) => {
            tracing::warn!(check = n.check, detail = %n.detail, "not ready");
            problem(n)
        }
    }
}

async fn check(store: &dyn HealthStore) -> Result<(), NotReady> {
    let versions = match tokio::time::timeout(READY_TIMEOUT, store.schema_versions()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return Err(NotReady {
                check: "database",
                code: "database_unavailable",
                detail: format!("the database did not answer: {e}"),
            });
        }
        Err(_) => {
            return Err(NotReady {
                check: "database",
                code: "database_timeout",
                detail: format!("the database did not answer within {} s", READY_TIMEOUT.as_secs()),
            });
        }
    };
    match versions.state() {
        SchemaState::Current => Ok(()),
        SchemaState::Behind { missing } => Err(NotReady {
            check: "schema",
            code: "schema_behind",
            detail: format!("the database lacks migrations {missing:?} this server needs"),
        }),
        SchemaState::Newer { unknown } => Err(NotReady {
            check: "schema",
            code: "schema_newer",
            detail: format!(
                "the database has migrations {unknown:?} this server does not know (a newer Steward migrated it); upgrade this server"
            ),
        }),
    }
}

/// An RFC 9457 problem document with the failing check named, `Retry-After` and no caching.
fn problem(n: NotReady) -> Response {
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Service Unavailable"),
        "status": status.as_u16(),
        "detail": n.detail,
        "code": n.code,
        "check": n.check,
    });
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    no_store(&mut resp);
    resp
}

/// A cached readiness answer is a wrong one.
fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
