//! The one error converter. What may succeed if tried again is [`StoreError::Unavailable`] (devices
//! get a retryable answer): no pooled connection in time, a connection that failed or was closed
//! (including one cut mid-message, which sqlx reports as a protocol error),
//! and the SQLSTATE classes PostgreSQL uses for "not now" — a statement cancelled by
//! `statement_timeout` (57014), a serialization failure or deadlock (40001, 40P01), insufficient
//! resources (class 53), a server shutting down (57P0x) and connection exceptions (class 08).
//! Everything else is [`StoreError::Backend`].

use steward_core::StoreError;

/// SQLSTATE of a unique violation: the callers that expect one map it to a conflict.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

pub(crate) fn is_retryable_sqlstate(code: &str) -> bool {
    matches!(code, "57014" | "40001" | "40P01" | "55P03")
        || code.starts_with("53")
        || code.starts_with("57P0")
        || code.starts_with("08")
}

pub(crate) fn from_sqlx(e: sqlx::Error) -> StoreError {
    let unavailable = match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        // A connection whose stream broke mid-message (the database or a proxy in between went
        // away) surfaces as a protocol error, a crashed connection worker or a failed BEGIN rather
        // than an I/O error; a fresh connection may succeed (faults::a_postgres_outage_…).
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| is_retryable_sqlstate(&c)),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// The constraint a unique violation names, if `e` is one.
pub(crate) fn unique_violation(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            Some(d.constraint().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}

/// JSON the database holds that does not parse.
pub(crate) fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("bad JSON in database: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_sqlstates() {
        for code in ["57014", "40001", "40P01", "53300", "57P01", "08006"] {
            assert!(is_retryable_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "22001", "P0001"] {
            assert!(!is_retryable_sqlstate(code), "{code}");
        }
        assert!(matches!(
            from_sqlx(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(from_sqlx(sqlx::Error::RowNotFound), StoreError::Backend(_)));
    }
}
