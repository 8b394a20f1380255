//! The writer thread: it owns the only writing connection and commits whatever jobs are
//! waiting as one transaction (each in its own savepoint), so many concurrent sends cost one
//! commit. It answers every job only after that commit: nobody is told "stored" before the
//! data is durable.

use std::thread;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::sql_err;
use crate::store::{StoreError, StoreResult};

/// Most jobs committed together; bounds the latency one commit adds to the first job.
const MAX_BATCH: usize = 512;
/// Writes waiting for the writer thread. When it is full, writers wait for room (under the
/// store deadline, so a stalled disk answers `store_unavailable` instead of queueing forever).
const WRITE_QUEUE: usize = 4096;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: runs inside the batch transaction (or is told why there is none), reports whether
/// it succeeded (so its savepoint is kept or rolled back) and how to answer its caller once the
/// batch is committed.
type WriteJob = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> (bool, Completion) + Send>;

/// The handle on the writer thread; the thread stops when the handle is dropped.
pub struct Writer {
    jobs: mpsc::Sender<WriteJob>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn start(conn: Connection) -> StoreResult<Self> {
        let (jobs, inbox) = mpsc::channel::<WriteJob>(WRITE_QUEUE);
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, inbox))
            .map_err(|e| StoreError::Internal(format!("cannot start writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `f` in the next batch; answers once the batch is committed (or failed).
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let result = conn.map_err(Clone::clone).and_then(f);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |committed| {
                let _ = tx.send(committed.and(result));
            });
            (ok, completion)
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Internal("sqlite writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Internal("sqlite writer dropped a job".into()))?
    }
}

/// The writer thread: batch what is waiting, commit once, then answer everyone.
fn run(conn: Connection, mut inbox: mpsc::Receiver<WriteJob>) {
    while let Some(first) = inbox.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut completions = Vec::with_capacity(batch.len());
        let began = conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_err);
        if let Err(e) = began {
            // Run nothing; every caller learns that nothing was written.
            for job in batch {
                let (_, done) = job(Err(&e));
                done(Err(e.clone()));
            }
            continue;
        }
        for job in batch {
            let savepoint = conn.execute_batch("SAVEPOINT job").map_err(sql_err);
            let (ok, done) = job(savepoint.as_ref().map(|()| &conn));
            if savepoint.is_ok() {
                let closed = if ok {
                    conn.execute_batch("RELEASE job")
                } else {
                    conn.execute_batch("ROLLBACK TO job; RELEASE job")
                };
                if let Err(e) = closed {
                    tracing::error!(error = %e, "sqlite savepoint failed");
                }
            }
            completions.push(done);
        }
        let committed = conn.execute_batch("COMMIT").map_err(sql_err);
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for done in completions {
            done(committed.clone());
        }
    }
}
