//! The checkpointer thread: it copies the write-ahead log back into the database file on its
//! own connection, so that the writer never does.
//!
//! By default SQLite checkpoints inside the commit that grows the log past 1,000 pages: that
//! commit copies the pages and syncs the file while every send waits behind it, which is
//! where the writer's slowest commits came from (docs/benchmarks.md, the pairs profile). The
//! writer's connection turns that off (`wal_autocheckpoint = 0`) and this thread runs passive
//! checkpoints instead: they never take the write lock, so commits go on while the pages are
//! copied.
//!
//! The log starts over from its beginning only at a write after a checkpoint that copied all
//! of it. Under steady writes a passive checkpoint never does: the writer commits more while
//! it copies, and the log grew by every commit (about 18 MB/s at 500 messages/s; 222 MB
//! after 12 s). So once the log is past [`RESTART_AFTER_FRAMES`], the checkpointer asks the
//! writer to [`CatchUp`]: between two batches, when nothing else commits, the writer copies
//! what is left (what came since this thread's last pass), and its next write starts the log
//! over (unless a reader still reads an old snapshot; then this thread asks again).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::Duration,
};

use rusqlite::Connection;

use super::sql_err;
use crate::store::{StoreError, StoreResult};

/// How often the log is copied back; an idle checkpoint finds nothing to copy and costs a
/// read of the log's header.
const EVERY: Duration = Duration::from_millis(200);

/// SQLite's default page size, which chatd keeps: a frame of the log holds one page.
pub const PAGE_BYTES: i64 = 4096;
/// A log longer than this (16 MiB of pages) is made to start over.
pub const RESTART_AFTER_FRAMES: i64 = 4096;

/// The checkpointer's request that the writer finish a checkpoint between two batches.
#[derive(Debug, Default)]
pub struct CatchUp(AtomicBool);

impl CatchUp {
    pub(super) fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// On the writer's connection between two batches: if asked, a checkpoint. Nothing can
    /// commit meanwhile, so it copies the whole log (unless a reader still reads an old
    /// snapshot; then the checkpointer asks again), and the next write starts the log over.
    /// A checkpoint that found this thread's running is asked for again.
    pub fn run_if_asked(&self, conn: &Connection) {
        if !self.0.swap(false, Ordering::Relaxed) {
            return;
        }
        match passive_checkpoint(conn) {
            Ok(Some(_)) => {}
            Ok(None) => self.request(),
            Err(e) => tracing::debug!(error = %e, "the writer's checkpoint failed"),
        }
    }
}

/// The handle on the checkpointer thread; the thread stops when the handle is dropped.
pub struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to the file at `path`; it asks `catch_up` of
    /// the writer when the log does not start over by itself.
    pub fn start(path: &Path, catch_up: Arc<CatchUp>) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(sql_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql_err)?;
        let (stop, stopped) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("sqlite-checkpointer".into())
            .spawn(move || run(conn, stopped, &catch_up))
            .map_err(|e| StoreError::Internal(format!("cannot start checkpointer thread: {e}")))?;
        Ok(Self { _stop: stop })
    }
}

/// A passive checkpoint: copies what no reader still needs and never waits for the writer.
/// Returns the frames in the log; `None` when another connection's checkpoint was running.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        let busy: bool = row.get(0)?;
        Ok(if busy { None } else { Some(row.get(1)?) })
    })
}

fn run(conn: Connection, stopped: mpsc::Receiver<()>, catch_up: &CatchUp) {
    let mut failing = false;
    // Nothing is ever sent: the channel only tells, by closing, that the store is gone.
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        let copied = passive_checkpoint(&conn).map(|found| {
            if let Some(frames) = found {
                metrics::gauge!("chatd_sqlite_wal_frames").set(frames as f64);
                if frames > RESTART_AFTER_FRAMES {
                    catch_up.request();
                }
            }
        });
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
