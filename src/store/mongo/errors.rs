//! Which MongoDB errors pass (retry later) and which are bugs, and the duplicate key that
//! decides races.

use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};

use crate::store::StoreError;

const DUPLICATE_KEY: i32 = 11000;

/// Server states that pass: not (or no longer) primary, shutting down, interrupted.
const TRANSIENT_CODES: [i32; 8] = [91, 189, 10107, 11600, 11602, 13435, 13436, 262];

/// Network trouble, a server that cannot be selected, a pool being reset, a primary that is
/// stepping down: retry later. Anything else is a bug or corrupt data.
pub fn store_err(e: MongoError) -> StoreError {
    let code = match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(c)) => Some(c.code),
        _ => None,
    };
    let transient_code = code.is_some_and(|c| TRANSIENT_CODES.contains(&c));
    let transient = transient_code
        || matches!(
            e.kind.as_ref(),
            ErrorKind::ServerSelection { .. }
                | ErrorKind::Io(_)
                | ErrorKind::ConnectionPoolCleared { .. }
                | ErrorKind::DnsResolve { .. }
                | ErrorKind::Shutdown
        )
        || e.contains_label("RetryableWriteError")
        || e.contains_label("TransientTransactionError");
    if transient {
        StoreError::Unavailable(format!("mongodb: {e}"))
    } else {
        StoreError::Internal(format!("mongodb: {e}"))
    }
}

/// A unique index refused the write: the document (or its seq) is taken.
pub fn is_duplicate_key(e: &MongoError) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|ws| ws.iter().any(|w| w.code == DUPLICATE_KEY)),
        _ => false,
    }
}
