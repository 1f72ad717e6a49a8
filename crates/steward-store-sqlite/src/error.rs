//! The one error converter per driver. A lock held by another connection for longer than
//! `busy_timeout` (SQLITE_BUSY, SQLITE_LOCKED) and a pool that could not hand out a connection in
//! time are [`StoreError::Unavailable`]: the request may succeed if tried again, and devices get a
//! retryable answer. Everything else is [`StoreError::Backend`].

use steward_core::StoreError;

/// SQLite primary result codes (the low byte of an extended code) that mean "locked, try later".
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

fn is_busy(code: i32) -> bool {
    matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED)
}

/// The sqlx driver's errors.
pub(crate) fn from_sqlx(e: sqlx::Error) -> StoreError {
    let unavailable = match &e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(d) => d.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(is_busy),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// The rusqlite driver's errors (the writer thread and the hot read).
pub(crate) fn from_rusqlite(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
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
    fn busy_and_locked_are_unavailable() {
        for code in [5, 6, 261, 517, 262] {
            assert!(is_busy(code), "{code}");
        }
        for code in [1, 19, 2067, 11] {
            assert!(!is_busy(code), "{code}");
        }
        assert!(matches!(
            from_sqlx(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(from_sqlx(sqlx::Error::RowNotFound), StoreError::Backend(_)));
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(5), None);
        assert!(matches!(from_rusqlite(busy), StoreError::Unavailable(_)));
        let constraint = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(19), None);
        assert!(matches!(from_rusqlite(constraint), StoreError::Backend(_)));
    }
}
