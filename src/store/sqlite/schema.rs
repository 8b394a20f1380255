//! The database file: its schema, the migrations that bring older files forward, and how
//! the writing and the reading connections are set up.

use std::path::Path;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use super::sql_err;
use crate::{
    config::SqliteSynchronous,
    store::{StoreError, StoreResult},
};

/// Bumped with every schema change; `migrate` brings older files forward.
const SCHEMA_VERSION: i64 = 5;

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

/// Delivered and public read positions (existing reads count as both), and user settings.
const SCHEMA_V2: &str = "
ALTER TABLE members ADD COLUMN delivered_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN public_read_seq INTEGER NOT NULL DEFAULT 0;
UPDATE members SET delivered_seq = read_seq, public_read_seq = read_seq;
CREATE TABLE user_settings (
    user_id       TEXT PRIMARY KEY,
    hide_presence INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
";

/// Changes as log entries (kind, target, reply, emoji; `deleted` when a delete removed the
/// text), revoked tokens, and group roles: creators own their groups, and a group whose creator left is
/// owned by its longest-standing member.
const SCHEMA_V3: &str = "
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
ALTER TABLE messages ADD COLUMN target INTEGER;
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
ALTER TABLE messages ADD COLUMN emoji TEXT;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_by_target ON messages (room_id, target) WHERE target IS NOT NULL;
CREATE INDEX messages_only ON messages (room_id, seq) WHERE kind = 'message';
CREATE INDEX messages_standing ON messages (room_id, seq) WHERE kind = 'message' AND deleted = 0;
ALTER TABLE members ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
CREATE TABLE revocations (
    user_id TEXT PRIMARY KEY,
    before  INTEGER NOT NULL
) WITHOUT ROWID;
UPDATE members SET role = 'owner' WHERE EXISTS (
    SELECT 1 FROM rooms r
    WHERE r.id = members.room_id AND r.kind = 'group' AND r.created_by = members.user_id);
UPDATE members SET role = 'owner' WHERE (room_id, user_id) IN (
    SELECT r.id, (SELECT m.user_id FROM members m WHERE m.room_id = r.id
                  ORDER BY m.joined_at, m.user_id LIMIT 1)
    FROM rooms r
    WHERE r.kind = 'group'
      AND NOT EXISTS (SELECT 1 FROM members o WHERE o.room_id = r.id AND o.role = 'owner'));
";

/// Push notifications: the mark on messages whose notifications are still to be decided
/// (with the lease of the node deciding them), devices, jobs and the ledger.
const SCHEMA_V4: &str = "
ALTER TABLE messages ADD COLUMN push_pending INTEGER;
ALTER TABLE messages ADD COLUMN push_lease INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_push_pending ON messages (created_at) WHERE push_pending = 1;
CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    key         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    target      TEXT NOT NULL
);
CREATE INDEX devices_by_user ON devices (user_id, created_at);
CREATE TABLE push_jobs (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    open        INTEGER NOT NULL,
    seqs        TEXT NOT NULL,
    due_at      INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    done        TEXT NOT NULL DEFAULT '[]',
    lease_node  TEXT,
    lease       TEXT NOT NULL DEFAULT '',
    lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX push_jobs_open ON push_jobs (user_id, room_id, kind) WHERE open = 1;
CREATE INDEX push_jobs_due ON push_jobs (due_at);
CREATE TABLE push_ledger (
    user_id     TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    decided_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    owner       TEXT,
    entry       TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, seq)
) WITHOUT ROWID;
CREATE INDEX push_ledger_recent ON push_ledger (user_id, decided_at);
CREATE INDEX push_ledger_age ON push_ledger (updated_at);
";

/// Fewer b-trees written per message: each is a page more, so a log frame more, in every
/// commit (a commit of one message wrote eight). The time index goes: the append rule never
/// lets createdAt decrease along a room's seqs, so the key (room, seq) is in time order too
/// and a time bound is found by bisecting it. The partial indexes of messages and of
/// standing messages become one that carries `deleted` (deleted messages are few).
const SCHEMA_V5: &str = "
DROP INDEX IF EXISTS messages_by_time;
DROP INDEX IF EXISTS messages_only;
DROP INDEX IF EXISTS messages_standing;
CREATE INDEX messages_only ON messages (room_id, seq, deleted) WHERE kind = 'message';
";

const READ_POOL_SIZE: u32 = 4;
/// The writer's page cache: at most this much memory (KiB), allocated as it is used.
const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// Opens (creating if missing) the database file and its directory, in WAL mode, and
/// migrates it: the connection the writer thread owns.
pub fn open_writer(path: &Path, synchronous: SqliteSynchronous) -> StoreResult<Connection> {
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
    // secure_delete: the text a delete removes is overwritten in the file, not left in free
    // space of its page. wal_autocheckpoint = 0: the checkpointer thread copies the log back,
    // not the commit that happens to grow it. cache_size: a batch of a few hundred messages
    // in as many rooms dirties a page of each index per message; with SQLite's 2 MB default
    // the writer spilled pages to the log mid-batch and read them back. temp_store: the
    // savepoints' statement journal stays in memory instead of a temporary file.
    // journal_size_limit: when the log starts over, a file that grew past twice the length
    // the checkpointer lets it reach (while a reader held an old snapshot) is cut back.
    use super::checkpointer::{PAGE_BYTES, RESTART_AFTER_FRAMES};
    let log_limit = 2 * RESTART_AFTER_FRAMES * PAGE_BYTES;
    writer
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;
             PRAGMA secure_delete = ON; PRAGMA wal_autocheckpoint = 0;
             PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA temp_store = MEMORY;
             PRAGMA journal_size_limit = {log_limit};"
        ))
        .map_err(sql_err)?;
    migrate(&mut writer)?;
    Ok(writer)
}

/// A small pool of read-only connections, which WAL lets run beside the writer.
pub fn open_readers(path: &Path) -> StoreResult<r2d2::Pool<SqliteConnectionManager>> {
    let manager = SqliteConnectionManager::file(path)
        .with_init(|c| c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;"));
    r2d2::Pool::builder()
        .max_size(READ_POOL_SIZE)
        .build(manager)
        .map_err(|e| StoreError::Unavailable(format!("sqlite read pool: {e}")))
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
    // Each step in its own transaction, so a file is always at one version or the next.
    for (to, step) in [
        (1, SCHEMA_V1),
        (2, SCHEMA_V2),
        (3, SCHEMA_V3),
        (4, SCHEMA_V4),
        (5, SCHEMA_V5),
    ] {
        if version < to {
            let tx = conn.transaction().map_err(sql_err)?;
            tx.execute_batch(step).map_err(sql_err)?;
            tx.pragma_update(None, "user_version", to)
                .map_err(sql_err)?;
            tx.commit().map_err(sql_err)?;
        }
    }
    Ok(())
}
