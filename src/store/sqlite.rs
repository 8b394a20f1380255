//! The embedded store: one SQLite file in WAL mode.
//!
//! Writes go to a single writer thread that owns the only writing connection. It commits
//! whatever jobs are waiting as one transaction (each in its own savepoint), so many
//! concurrent sends cost one commit, and it answers every job only after that commit: nobody
//! is told "stored" before the data is durable. Reads use a small pool of read-only
//! connections, which WAL lets run beside the writer.

use std::{path::Path, thread};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    Appended, HistoryQuery, NewGroup, NewMessage, Order, ReadMark, Store, StoreError, StoreResult,
    seq_from_i64, seq_to_i64,
};
use crate::{
    clock::next_created_at,
    config::SqliteSynchronous,
    domain::{Membership, Message, Room, RoomId, RoomKind, Seq, UserId, timestamp::from_millis},
};

/// Bumped with every schema change; `migrate` brings older files forward.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE rooms (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    name        TEXT,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE members (
    room_id     TEXT NOT NULL REFERENCES rooms(id),
    user_id     TEXT NOT NULL,
    joined_at   INTEGER NOT NULL,
    read_seq    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id, room_id);
CREATE TABLE messages (
    room_id       TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    id            TEXT NOT NULL UNIQUE,
    sender        TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    text          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq),
    UNIQUE (room_id, sender, client_msg_id)
);
CREATE INDEX messages_by_time ON messages (room_id, created_at);
";

/// Most jobs committed together; bounds the latency one commit adds to the first job.
const MAX_BATCH: usize = 512;
/// Writes waiting for the writer thread. When it is full, writers wait for room (under the
/// store deadline, so a stalled disk answers `store_unavailable` instead of queueing forever).
const WRITE_QUEUE: usize = 4096;
const READ_POOL_SIZE: u32 = 4;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: runs inside the batch transaction (or is told why there is none), reports whether
/// it succeeded (so its savepoint is kept or rolled back) and how to answer its caller once the
/// batch is committed.
type WriteJob = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> (bool, Completion) + Send>;

pub struct SqliteStore {
    jobs: mpsc::Sender<WriteJob>,
    readers: r2d2::Pool<SqliteConnectionManager>,
}

/// A full disk, a locked or unreadable file: retry later. Anything else is a bug.
fn sql_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(DiskFull | DatabaseBusy | DatabaseLocked | SystemIoFailure | CannotOpen) => {
            StoreError::Unavailable(format!("sqlite: {e}"))
        }
        _ => StoreError::Internal(format!("sqlite: {e}")),
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and its directory.
    pub fn open(path: &Path, synchronous: SqliteSynchronous) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let sync = match synchronous {
            SqliteSynchronous::Normal => "NORMAL",
            SqliteSynchronous::Full => "FULL",
        };
        let mut writer = Connection::open(path).map_err(sql_err)?;
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
                 PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;"
            ))
            .map_err(sql_err)?;
        migrate(&mut writer)?;

        let manager = SqliteConnectionManager::file(path)
            .with_init(|c| c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;"));
        let readers = r2d2::Pool::builder()
            .max_size(READ_POOL_SIZE)
            .build(manager)
            .map_err(|e| StoreError::Unavailable(format!("sqlite read pool: {e}")))?;

        let (jobs, inbox) = mpsc::channel::<WriteJob>(WRITE_QUEUE);
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_writer(writer, inbox))
            .map_err(|e| StoreError::Internal(format!("cannot start writer thread: {e}")))?;
        Ok(Self { jobs, readers })
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
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

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool
                .get()
                .map_err(|e| StoreError::Unavailable(format!("sqlite read pool: {e}")))?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("sqlite read task: {e}")))?
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Internal(format!(
            "database schema {version} is newer than this chatd ({SCHEMA_VERSION})"
        )));
    }
    if version < 1 {
        let tx = conn.transaction().map_err(sql_err)?;
        tx.execute_batch(SCHEMA_V1).map_err(sql_err)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
    }
    Ok(())
}

/// The writer thread: batch what is waiting, commit once, then answer everyone.
fn run_writer(conn: Connection, mut inbox: mpsc::Receiver<WriteJob>) {
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

const MESSAGE_COLUMNS: &str = "id, room_id, seq, sender, client_msg_id, text, created_at";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let room: String = row.get(1)?;
    let sender: String = row.get(3)?;
    Ok(Message {
        id: row.get(0)?,
        room: RoomId::parse(&room).map_err(|e| bad_column(1, e))?,
        seq: seq_from_i64(row.get(2)?),
        sender: UserId::parse(&sender).map_err(|e| bad_column(3, e))?,
        client_msg_id: row.get(4)?,
        text: row.get(5)?,
        created_at: from_millis(row.get(6)?),
    })
}

fn bad_column(i: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

fn insert_room(conn: &Connection, room: &Room) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO rooms (id, kind, name, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            room.id.as_str(),
            room.kind.as_str(),
            room.name,
            room.created_by.as_str(),
            room.created_at.timestamp_millis()
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

/// Inserts the members that are missing; returns them.
fn insert_members(
    conn: &Connection,
    room: &RoomId,
    users: &[UserId],
    now: DateTime<Utc>,
) -> Result<Vec<UserId>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO members (room_id, user_id, joined_at) VALUES (?1, ?2, ?3)",
        )
        .map_err(sql_err)?;
    let mut added = Vec::new();
    for user in users {
        let n = stmt
            .execute(params![
                room.as_str(),
                user.as_str(),
                now.timestamp_millis()
            ])
            .map_err(sql_err)?;
        if n == 1 {
            added.push(user.clone());
        }
    }
    Ok(added)
}

fn load_room(conn: &Connection, id: &RoomId) -> Result<Option<Room>, StoreError> {
    let head = conn
        .prepare_cached("SELECT kind, name, created_by, created_at FROM rooms WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()
        })
        .map_err(sql_err)?;
    let Some((kind, name, created_by, created_at)) = head else {
        return Ok(None);
    };
    let members = conn
        .prepare_cached("SELECT user_id FROM members WHERE room_id = ?1 ORDER BY user_id")
        .and_then(|mut s| {
            s.query_map([id.as_str()], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql_err)?;
    let corrupt = |what: &str| StoreError::Internal(format!("room {id}: bad {what}"));
    Ok(Some(Room {
        id: id.clone(),
        kind: RoomKind::parse(&kind).ok_or_else(|| corrupt("kind"))?,
        name,
        members: members
            .iter()
            .map(|m| UserId::parse(m).map_err(|_| corrupt("member")))
            .collect::<Result<_, _>>()?,
        created_by: UserId::parse(&created_by).map_err(|_| corrupt("creator"))?,
        created_at: from_millis(created_at),
    }))
}

fn membership_from_row(user: &UserId, row: &Row<'_>) -> rusqlite::Result<Membership> {
    let room: String = row.get(0)?;
    Ok(Membership {
        room: RoomId::parse(&room).map_err(|e| bad_column(0, e))?,
        user: user.clone(),
        read_seq: seq_from_i64(row.get(1)?),
        joined_at: from_millis(row.get(2)?),
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, new: NewMessage, now: DateTime<Utc>) -> StoreResult<Appended> {
        self.write(move |conn| {
            let existing = conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE room_id = ?1 AND sender = ?2 AND client_msg_id = ?3"
                ))
                .and_then(|mut s| {
                    s.query_row(
                        params![new.room.as_str(), new.sender.as_str(), new.client_msg_id],
                        message_from_row,
                    )
                    .optional()
                })
                .map_err(sql_err)?;
            if let Some(message) = existing {
                return Ok(Appended {
                    message,
                    duplicate: true,
                });
            }
            let previous = conn
                .prepare_cached(
                    "SELECT seq, created_at FROM messages WHERE room_id = ?1
                     ORDER BY seq DESC LIMIT 1",
                )
                .and_then(|mut s| {
                    s.query_row([new.room.as_str()], |r| {
                        Ok((seq_from_i64(r.get(0)?), from_millis(r.get(1)?)))
                    })
                    .optional()
                })
                .map_err(sql_err)?;
            let message = Message {
                id: uuid::Uuid::now_v7().to_string(),
                seq: previous.map_or(1, |(seq, _)| seq + 1),
                created_at: next_created_at(previous.map(|(_, t)| t), now),
                room: new.room,
                sender: new.sender,
                client_msg_id: new.client_msg_id,
                text: new.text,
            };
            conn.prepare_cached(&format!(
                "INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    message.id,
                    message.room.as_str(),
                    seq_to_i64(message.seq),
                    message.sender.as_str(),
                    message.client_msg_id,
                    message.text,
                    message.created_at.timestamp_millis()
                ])
            })
            .map_err(sql_err)?;
            Ok(Appended {
                message,
                duplicate: false,
            })
        })
        .await
    }

    async fn history(&self, room: &RoomId, query: &HistoryQuery) -> StoreResult<Vec<Message>> {
        let room = room.clone();
        let q = query.clone();
        self.read(move |conn| {
            let order = match q.order {
                Order::Asc => "ASC",
                Order::Desc => "DESC",
            };
            // Absent bounds become bounds that exclude nothing, so one cached statement serves all.
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE room_id = ?1 AND seq > ?2 AND seq < ?3 AND created_at >= ?4 AND created_at < ?5
                 ORDER BY seq {order} LIMIT ?6"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
            let rows = stmt
                .query_map(
                    params![
                        room.as_str(),
                        seq_to_i64(q.after.unwrap_or(0)),
                        q.before.map_or(i64::MAX, seq_to_i64),
                        q.since.map_or(i64::MIN, |t| t.timestamp_millis()),
                        q.until.map_or(i64::MAX, |t| t.timestamp_millis()),
                        q.limit as i64
                    ],
                    message_from_row,
                )
                .map_err(sql_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
        })
        .await
    }

    async fn last_seq(&self, room: &RoomId) -> StoreResult<Seq> {
        let room = room.clone();
        self.read(move |conn| {
            conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = ?1")
                .and_then(|mut s| s.query_row([room.as_str()], |r| r.get::<_, i64>(0)))
                .map(seq_from_i64)
                .map_err(sql_err)
        })
        .await
    }

    async fn count_unread(
        &self,
        room: &RoomId,
        user: &UserId,
        after_seq: Seq,
        cap: u64,
    ) -> StoreResult<u64> {
        let (room, user) = (room.clone(), user.clone());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM messages
                 WHERE room_id = ?1 AND seq > ?2 AND sender != ?3 LIMIT ?4)",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        room.as_str(),
                        seq_to_i64(after_seq),
                        user.as_str(),
                        i64::try_from(cap).unwrap_or(i64::MAX)
                    ],
                    |r| r.get::<_, i64>(0),
                )
            })
            .map(|n| n as u64)
            .map_err(sql_err)
        })
        .await
    }

    async fn ensure_direct_room(
        &self,
        a: &UserId,
        b: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Room> {
        let room = Room::new_direct(a, b, now);
        self.write(move |conn| {
            insert_room(conn, &room)?;
            insert_members(conn, &room.id, &room.members, now)?;
            load_room(conn, &room.id)?
                .ok_or_else(|| StoreError::Internal("direct room vanished".into()))
        })
        .await
    }

    async fn create_group(&self, group: NewGroup, now: DateTime<Utc>) -> StoreResult<Room> {
        self.write(move |conn| {
            let room = Room {
                id: group.id,
                kind: RoomKind::Group,
                name: Some(group.name),
                members: Vec::new(),
                created_by: group.created_by,
                created_at: now,
            };
            insert_room(conn, &room)?;
            insert_members(conn, &room.id, &group.members, now)?;
            load_room(conn, &room.id)?
                .ok_or_else(|| StoreError::Internal("new group vanished".into()))
        })
        .await
    }

    async fn add_members(
        &self,
        room: &RoomId,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UserId>> {
        let (room, users) = (room.clone(), users.to_vec());
        self.write(move |conn| insert_members(conn, &room, &users, now))
            .await
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> StoreResult<bool> {
        let (room, user) = (room.clone(), user.clone());
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM members WHERE room_id = ?1 AND user_id = ?2")
                .and_then(|mut s| s.execute([room.as_str(), user.as_str()]))
                .map(|n| n == 1)
                .map_err(sql_err)
        })
        .await
    }

    async fn room(&self, room: &RoomId) -> StoreResult<Option<Room>> {
        let room = room.clone();
        self.read(move |conn| load_room(conn, &room)).await
    }

    async fn membership(&self, room: &RoomId, user: &UserId) -> StoreResult<Option<Membership>> {
        let (room, user) = (room.clone(), user.clone());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT room_id, read_seq, joined_at FROM members WHERE room_id = ?1 AND user_id = ?2",
            )
            .and_then(|mut s| {
                s.query_row([room.as_str(), user.as_str()], |r| {
                    membership_from_row(&user, r)
                })
                .optional()
            })
            .map_err(sql_err)
        })
        .await
    }

    async fn memberships_of(&self, user: &UserId) -> StoreResult<Vec<Membership>> {
        let user = user.clone();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT room_id, read_seq, joined_at FROM members WHERE user_id = ?1 ORDER BY room_id",
            )
            .and_then(|mut s| {
                s.query_map([user.as_str()], |r| membership_from_row(&user, r))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql_err)
        })
        .await
    }

    async fn memberships_page(
        &self,
        user: &UserId,
        after: Option<&RoomId>,
        limit: usize,
    ) -> StoreResult<Vec<Membership>> {
        let (user, after) = (
            user.clone(),
            after.map(|r| r.to_string()).unwrap_or_default(),
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT room_id, read_seq, joined_at FROM members
                 WHERE user_id = ?1 AND room_id > ?2 ORDER BY room_id LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(params![user.as_str(), after, limit], |r| {
                    membership_from_row(&user, r)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql_err)
        })
        .await
    }

    async fn membership_counts(&self, users: &[UserId]) -> StoreResult<Vec<u64>> {
        let users = users.to_vec();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT COUNT(*) FROM members WHERE user_id = ?1")
                .map_err(sql_err)?;
            users
                .iter()
                .map(|u| {
                    stmt.query_row([u.as_str()], |r| r.get::<_, i64>(0))
                        .map(|n| u64::try_from(n).unwrap_or(0))
                        .map_err(sql_err)
                })
                .collect()
        })
        .await
    }

    async fn mark_read(&self, room: &RoomId, user: &UserId, seq: Seq) -> StoreResult<ReadMark> {
        let (room, user) = (room.clone(), user.clone());
        self.write(move |conn| {
            let position = |conn: &Connection| {
                conn.prepare_cached(
                    "SELECT read_seq FROM members WHERE room_id = ?1 AND user_id = ?2",
                )
                .and_then(|mut s| {
                    s.query_row([room.as_str(), user.as_str()], |r| r.get::<_, i64>(0))
                        .optional()
                })
                .map(|s| s.map_or(0, seq_from_i64))
                .map_err(sql_err)
            };
            // Only forward, never beyond the newest message; a report that moves nothing
            // changes no row.
            let moved = conn
                .prepare_cached(
                    "UPDATE members SET read_seq = MIN(?3,
                        (SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = ?1))
                     WHERE room_id = ?1 AND user_id = ?2 AND read_seq < MIN(?3,
                        (SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = ?1))",
                )
                .and_then(|mut s| s.execute(params![room.as_str(), user.as_str(), seq_to_i64(seq)]))
                .map_err(sql_err)?
                == 1;
            Ok(ReadMark {
                read_seq: position(conn)?,
                moved,
            })
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_err))
            .await
    }
}
