//! The one error converter. A lock held by another connection for longer than `busy_timeout`
//! (SQLITE_BUSY, SQLITE_LOCKED, with any extended code) is [`StoreError::Unavailable`]: the request
//! may succeed if tried again, and devices get a retryable answer (so is a read that could not get a
//! connection in time, `reads.rs`). So is storage that cannot take a write: a full disk
//! (SQLITE_FULL, from ENOSPC) and a failed write, sync or resize of the database, journal or
//! shared-memory file (SQLITE_IOERR_WRITE, _FSYNC, _TRUNCATE, _SHMSIZE; EFBIG over a file-size
//! limit, EDQUOT over a quota, EIO). SQLite rolls the transaction back, so nothing was half-written,
//! and the same request succeeds once space returns (docs/SECURITY.md, D5). Everything else is
//! [`StoreError::Backend`].

use steward_core::StoreError;

/// SQLite primary result codes (the low byte of an extended code) that mean "locked, try later".
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

fn is_busy(code: i32) -> bool {
    matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED)
}

/// The storage could not take a write (see the module comment); extended codes, because a read
/// error (SQLITE_IOERR_READ, a damaged disk) must not be retried as if it were transient.
fn is_storage_full(code: i32) -> bool {
    use rusqlite::ffi;
    code & 0xff == ffi::SQLITE_FULL
        || matches!(
            code,
            ffi::SQLITE_IOERR_WRITE | ffi::SQLITE_IOERR_FSYNC | ffi::SQLITE_IOERR_TRUNCATE | ffi::SQLITE_IOERR_SHMSIZE
        )
}

/// rusqlite's errors.
pub(crate) fn from_rusqlite(e: rusqlite::Error) -> StoreError {
    let retryable = matches!(&e, rusqlite::Error::SqliteFailure(f, _)
        if is_busy(f.extended_code) || is_storage_full(f.extended_code));
    if retryable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// A UNIQUE or PRIMARY KEY constraint failed (not NOT NULL, CHECK or a foreign key).
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
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
        for code in [5, 6, 261, 517, 262] {
            let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
            assert!(matches!(from_rusqlite(busy), StoreError::Unavailable(_)), "{code}");
        }
        // Disk full, and writes the file system refused (EFBIG, EDQUOT, EIO on write).
        for code in [13, 778, 1034, 1546, 4874] {
            let full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
            assert!(matches!(from_rusqlite(full), StoreError::Unavailable(_)), "{code}");
        }
        // A read error (SQLITE_IOERR_READ) or a corrupt file is no passing condition.
        for code in [19, 2067, 1555, 1, 266, 11] {
            let other = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
            assert!(matches!(from_rusqlite(other), StoreError::Backend(_)), "{code}");
        }
        assert!(matches!(
            from_rusqlite(rusqlite::Error::QueryReturnedNoRows),
            StoreError::Backend(_)
        ));
        let unique = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        assert!(is_unique_violation(&unique(2067)));
        assert!(is_unique_violation(&unique(1555)));
        assert!(!is_unique_violation(&unique(1299)), "NOT NULL is not a duplicate");
        assert!(!is_unique_violation(&unique(787)), "nor is a foreign key");
    }
}
