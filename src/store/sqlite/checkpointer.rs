//! The checkpointer thread: it copies the write-ahead log back into the database file on its
//! own connection, so that the writer never does.
//!
//! By default SQLite checkpoints inside the commit that grows the log past 1,000 pages: that
//! commit copies the pages and syncs the file while every send waits behind it, which is
//! where the writer's slowest commits came from (docs/benchmarks.md, the pairs profile). The
//! writer's connection turns that off (`wal_autocheckpoint = 0`) and this thread runs passive
//! checkpoints instead: they never take the write lock, so commits go on while the pages are
//! copied.

use std::{
    path::Path,
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::Duration,
};

use rusqlite::Connection;

use super::sql_err;
use crate::store::{StoreError, StoreResult};

/// How often the log is copied back: often enough to keep it to a few MB under load; an idle
/// checkpoint finds nothing to copy and costs a read of the log's header.
const EVERY: Duration = Duration::from_millis(200);

/// The handle on the checkpointer thread; the thread stops when the handle is dropped.
pub struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to the file at `path`.
    pub fn start(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(sql_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql_err)?;
        let (stop, stopped) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("sqlite-checkpointer".into())
            .spawn(move || run(conn, stopped))
            .map_err(|e| StoreError::Internal(format!("cannot start checkpointer thread: {e}")))?;
        Ok(Self { _stop: stop })
    }
}

fn run(conn: Connection, stopped: mpsc::Receiver<()>) {
    let mut failing = false;
    // Nothing is ever sent: the channel only tells, by closing, that the store is gone.
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        // PASSIVE copies what no reader still needs and never waits for the writer.
        let copied = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        // Told once when checkpoints start failing (the log then grows) and once when they
        // work again, not five times a second.
        match (copied, failing) {
            (Err(e), false) => {
                tracing::warn!(error = %e, "sqlite checkpoints fail; the write-ahead log grows until they work again");
                failing = true;
            }
            (Ok(()), true) => {
                tracing::info!("sqlite checkpoints work again");
                failing = false;
            }
            _ => {}
        }
    }
}
