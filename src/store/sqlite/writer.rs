//! The writer thread: it owns the only writing connection and commits whatever jobs are
//! waiting as one transaction, so many concurrent sends cost one commit. A job that fails
//! leaves the others: it runs in a savepoint, unless it leaves nothing behind by itself (one
//! statement, or savepoints of its own; appends are, and a savepoint per message was about
//! 8% of the writer's time). It answers every job only after that commit: nobody is told
//! "stored" before the data is durable.

use std::{sync::Arc, thread};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{checkpointer::CatchUp, sql_err};
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
type Run = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> (bool, Completion) + Send>;

struct WriteJob {
    run: Run,
    /// Whether the writer must undo the job's writes when it fails.
    in_savepoint: bool,
}

/// The handle on the writer thread; the thread stops when the handle is dropped.
pub struct Writer {
    jobs: mpsc::Sender<WriteJob>,
}

impl Writer {
    /// Starts the writer thread on `conn`; between batches it checkpoints when `catch_up`
    /// asks it to.
    pub fn start(conn: Connection, catch_up: Arc<CatchUp>) -> StoreResult<Self> {
        let (jobs, inbox) = mpsc::channel::<WriteJob>(WRITE_QUEUE);
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, inbox, &catch_up))
            .map_err(|e| StoreError::Internal(format!("cannot start writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `f` in the next batch, in a savepoint that undoes its writes if it fails; answers
    /// once the batch is committed (or failed).
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f, true).await
    }

    /// [`Writer::write`] for a job that leaves nothing behind when it fails (a single
    /// statement, or savepoints of its own): it costs no savepoint.
    pub async fn write_atomic<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f, false).await
    }

    async fn submit<T, F>(&self, f: F, in_savepoint: bool) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run: Run = Box::new(move |conn| {
            let result = conn.map_err(Clone::clone).and_then(f);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |committed| {
                let _ = tx.send(committed.and(result));
            });
            (ok, completion)
        });
        self.jobs
            .send(WriteJob { run, in_savepoint })
            .await
            .map_err(|_| StoreError::Internal("sqlite writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Internal("sqlite writer dropped a job".into()))?
    }
}

/// The writer thread: batch what is waiting, commit once, then answer everyone.
fn run(conn: Connection, mut inbox: mpsc::Receiver<WriteJob>, catch_up: &CatchUp) {
    while let Some(first) = inbox.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (completions, ran) = match conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_err) {
            Ok(()) => run_in_transaction(&conn, batch),
            // Run nothing; every caller learns that nothing was written.
            Err(e) => (skip_all(batch, &e), Err(e)),
        };
        let committed = ran.and_then(|()| conn.execute_batch("COMMIT").map_err(sql_err));
        if committed.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for done in completions {
            done(committed.clone());
        }
        // After the answers: the batch waiting meanwhile is the only one the checkpoint delays.
        // Never inside a transaction (one whose rollback failed too): it would fail there.
        if conn.is_autocommit() {
            catch_up.run_if_asked(&conn);
        }
    }
}

/// Runs the batch's jobs in the open transaction. When SQLite ends the transaction by
/// itself (it may on a full disk or an I/O error), the jobs after that one are not run:
/// each would commit on its own, while nothing before them is kept.
fn run_in_transaction(
    conn: &Connection,
    batch: Vec<WriteJob>,
) -> (Vec<Completion>, StoreResult<()>) {
    let mut completions = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        let savepoint = if job.in_savepoint {
            conn.execute_batch("SAVEPOINT job").map_err(sql_err)
        } else {
            Ok(())
        };
        let (ok, done) = (job.run)(savepoint.as_ref().map(|()| conn));
        completions.push(done);
        if conn.is_autocommit() {
            tracing::error!("sqlite ended a write transaction by itself; its batch is not stored");
            let e = StoreError::Unavailable("the write transaction was rolled back".into());
            completions.extend(skip_all(jobs, &e));
            return (completions, Err(e));
        }
        if job.in_savepoint
            && savepoint.is_ok()
            && let Err(e) = end_savepoint(conn, "job", ok)
        {
            tracing::error!(error = %e, "sqlite savepoint failed");
        }
    }
    (completions, Ok(()))
}

/// Ends the savepoint `name`, keeping its writes or undoing them.
pub(super) fn end_savepoint(conn: &Connection, name: &str, keep: bool) -> StoreResult<()> {
    let sql = if keep {
        format!("RELEASE {name}")
    } else {
        format!("ROLLBACK TO {name}; RELEASE {name}")
    };
    conn.execute_batch(&sql).map_err(sql_err)
}

/// Tells each job that there is no transaction, without running it.
fn skip_all(jobs: impl IntoIterator<Item = WriteJob>, e: &StoreError) -> Vec<Completion> {
    jobs.into_iter().map(|job| (job.run)(Err(e)).1).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rows(path: &std::path::Path) -> Vec<i64> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// Waits until `queued` jobs wait for the writer thread, so that they form one batch.
    async fn until_queued(writer: &Writer, queued: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while WRITE_QUEUE - writer.jobs.capacity() < queued {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("jobs queued");
    }

    fn insert(x: i64) -> impl FnOnce(&Connection) -> StoreResult<()> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO t (x) VALUES (?1)", [x])
                .map(drop)
                .map_err(sql_err)
        }
    }

    /// A database in `dir` in WAL mode with the table `t (x)`, and the writer's connection.
    fn table_t(dir: &tempfile::TempDir) -> (std::path::PathBuf, Connection) {
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER)")
            .unwrap();
        (path, conn)
    }

    #[tokio::test]
    async fn a_transaction_sqlite_ends_by_itself_fails_its_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = table_t(&dir);
        let writer = Arc::new(Writer::start(conn, Arc::default()).unwrap());

        // Hold the writer thread in a batch of its own while the next batch queues up.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (running, started) = oneshot::channel::<()>();
        let holder = tokio::spawn({
            let writer = writer.clone();
            async move {
                let hold = move |_: &Connection| {
                    running.send(()).unwrap();
                    held.recv().unwrap();
                    Ok(())
                };
                writer.write_atomic(hold).await
            }
        });
        started.await.unwrap();
        let mut answers = Vec::new();
        type Job = Box<dyn FnOnce(&Connection) -> StoreResult<()> + Send>;
        let jobs: [Job; 3] = [
            Box::new(insert(1)),
            // What SQLite does by itself on some I/O errors: the transaction is gone.
            Box::new(|conn: &Connection| conn.execute_batch("ROLLBACK").map_err(sql_err)),
            Box::new(insert(3)),
        ];
        for (queued, job) in jobs.into_iter().enumerate() {
            let submitter = writer.clone();
            answers.push(tokio::spawn(
                async move { submitter.write_atomic(job).await },
            ));
            until_queued(&writer, queued + 1).await;
        }
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        for answer in answers {
            assert!(
                answer.await.unwrap().is_err(),
                "nothing of the batch is stored"
            );
        }
        assert_eq!(
            rows(&path),
            Vec::<i64>::new(),
            "no job committed on its own"
        );

        writer.write(insert(4)).await.unwrap();
        assert_eq!(rows(&path), vec![4], "the next batch works");
    }

    /// The frames in the log and how many of them are copied back, after a passive
    /// checkpoint on a connection of its own (the store needs only the first).
    fn checkpoint(path: &std::path::Path) -> (i64, i64) {
        let conn = Connection::open(path).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })
        .unwrap()
    }

    /// Under steady writes a checkpoint of the checkpointer's never copies the whole log (the
    /// writer commits meanwhile), so the log never starts over by itself. Asked to catch up,
    /// the writer copies the rest between two batches and its next write starts the log over.
    #[tokio::test]
    async fn asked_to_catch_up_the_writer_makes_the_log_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = table_t(&dir);
        let catch_up = Arc::new(CatchUp::default());
        let writer = Writer::start(conn, catch_up.clone()).unwrap();
        writer.write(insert(1)).await.unwrap();
        // A reader holds the snapshot of row 1 while row 2 is committed: a checkpoint then
        // copies only what that snapshot needs, like a pass the writer overtakes.
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        writer.write(insert(2)).await.unwrap();
        let (grown, copied) = checkpoint(&path);
        assert!(copied < grown, "the checkpoint could not copy it all");
        reader.execute_batch("COMMIT").unwrap();

        catch_up.request();
        writer.write(insert(3)).await.unwrap();
        // The writer checkpointed after answering row 3, before it took this batch.
        writer.write(insert(4)).await.unwrap();
        let (frames, _) = checkpoint(&path);
        assert!(
            frames < grown,
            "the log started over at row 4: {frames} frames, {grown} before"
        );
        assert_eq!(rows(&path), vec![1, 2, 3, 4]);
    }
}
