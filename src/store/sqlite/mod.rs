//! The embedded store: one SQLite file in WAL mode.
//!
//! Writes go to a single writer thread ([`writer`]) that owns the only writing connection and
//! commits waiting jobs together, answering each only after the commit. Reads use a small pool
//! of read-only connections, which WAL lets run beside the writer, and a [`checkpointer`]
//! thread copies the log back into the file so that no commit waits for that. The file's
//! schema is in [`schema`], the mapping between rows and values in [`rows`].

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Appended, Entries, HistoryQuery, Mark, Marked, MemberReceipt, NewGroup, NewMessage, Order,
    Positions, RoomState, Store, StoreError, StoreResult, UserSettings,
    rooms::{NewRoom, create_room},
    seq_from_i64, seq_to_i64, successor,
};
use crate::{
    config::SqliteSynchronous,
    domain::{EntryKind, Membership, Message, Role, Room, RoomId, RoomKind, Seq, UserId},
};

mod checkpointer;
mod push;
mod rows;
mod schema;
mod writer;

use rows::{
    InTransaction, MEMBERSHIP_COLUMNS, MESSAGE_COLUMNS, bad_column, insert_members, load_room,
    membership_from_row, message_from_row,
};

pub struct SqliteStore {
    writer: writer::Writer,
    readers: r2d2::Pool<SqliteConnectionManager>,
    _checkpointer: checkpointer::Checkpointer,
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
        let writer = schema::open_writer(path, synchronous)?;
        let readers = schema::open_readers(path)?;
        let catch_up = Arc::new(checkpointer::CatchUp::default());
        Ok(Self {
            writer: writer::Writer::start(writer, catch_up.clone())?,
            readers,
            _checkpointer: checkpointer::Checkpointer::start(path, catch_up)?,
        })
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// [`SqliteStore::write`] for a job that leaves nothing behind when it fails.
    async fn write_atomic<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write_atomic(f).await
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

    /// One write job, so that the room, its members and the read-back are one transaction.
    async fn create_room(&self, new: NewRoom) -> StoreResult<Room> {
        self.write(move |conn| {
            // The steps are ready futures: the composition ends in its first poll.
            create_room(&InTransaction(conn), new)
                .now_or_never()
                .unwrap_or_else(|| Err(StoreError::Internal("sqlite room writes waited".into())))
        })
        .await
    }
}

/// [`Store::append`] inside the writer's transaction.
fn append_in(conn: &Connection, new: &NewMessage, now: DateTime<Utc>) -> StoreResult<Appended> {
    let stored = rows::message_by_client_msg_id(conn, &new.room, &new.sender, &new.client_msg_id)?;
    if let Some(message) = stored {
        return Ok(Appended {
            message,
            duplicate: true,
        });
    }
    let mut message = new.stored_after(rows::newest(conn, &new.room)?, now);
    match (message.kind, message.target) {
        (EntryKind::Edit, Some(target)) if rows::is_deleted(conn, &new.room, target)? => {
            message.text.clear();
            message.deleted = true;
        }
        _ => {}
    }
    rows::insert_message(conn, &message, new.notify)?;
    if let (EntryKind::Delete, Some(target)) = (message.kind, message.target) {
        // In the same transaction: the text is gone once the delete is stored.
        rows::scrub(conn, &new.room, target)?;
    }
    Ok(Appended {
        message,
        duplicate: false,
    })
}

/// [`append_in`], leaving nothing behind when it fails: an entry is one `INSERT` (the reads
/// before it write nothing), but a delete also scrubs its target, so it takes a savepoint.
fn append_atomic(conn: &Connection, new: &NewMessage, now: DateTime<Utc>) -> StoreResult<Appended> {
    if new.kind != EntryKind::Delete {
        return append_in(conn, new, now);
    }
    conn.execute_batch("SAVEPOINT entry").map_err(sql_err)?;
    let answer = append_in(conn, new, now);
    writer::end_savepoint(conn, "entry", answer.is_ok())?;
    answer
}

/// The statement of a history read: parameters room, after, before, since, until, limit.
/// Absent bounds become bounds that exclude nothing, so one cached statement serves all.
fn history_sql(entries: Entries, order: Order) -> String {
    let order = match order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    // Literal conditions, so that the planner picks the partial index that matches.
    let entries = match entries {
        Entries::All => "",
        Entries::Messages => "AND kind = 'message'",
        Entries::Standing => "AND kind = 'message' AND deleted = 0",
    };
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE room_id = ?1 AND seq > ?2 AND seq < ?3 AND created_at >= ?4 AND created_at < ?5
           {entries}
         ORDER BY seq {order} LIMIT ?6"
    )
}

/// One history read on a reading connection.
fn history_in(conn: &Connection, room: &RoomId, q: &HistoryQuery) -> StoreResult<Vec<Message>> {
    // A time bound becomes a seq bound (the key is in time order, see
    // `first_seq_stamped_from`), so the read is a range of the key; the conditions on
    // created_at stay, exact whatever was appended since.
    let mut after = q.after.unwrap_or(0);
    let mut before = q.before;
    if q.since.is_some() || q.until.is_some() {
        let Some((newest, _)) = rows::newest(conn, room)? else {
            return Ok(Vec::new());
        };
        if let Some(since) = q.since {
            match first_seq_stamped_from(conn, room, since.timestamp_millis(), after, newest)? {
                Some(first) => after = after.max(first.saturating_sub(1)),
                None => return Ok(Vec::new()),
            }
        }
        // Whatever `until` bounds lies past what `since` left.
        if let Some(until) = q.until
            && let Some(first) =
                first_seq_stamped_from(conn, room, until.timestamp_millis(), after, newest)?
        {
            before = Some(before.map_or(first, |b| b.min(first)));
        }
    }
    let mut stmt = conn
        .prepare_cached(&history_sql(q.entries, q.order))
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(
            params![
                room.as_str(),
                seq_to_i64(after),
                before.map_or(i64::MAX, seq_to_i64),
                q.since.map_or(i64::MIN, |t| t.timestamp_millis()),
                q.until.map_or(i64::MAX, |t| t.timestamp_millis()),
                q.limit as i64
            ],
            message_from_row,
        )
        .map_err(sql_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
}

/// The first seq of `room` after `after` stamped at `at_ms` or later, if any, `newest` being
/// the room's newest seq. The append rule never lets createdAt decrease along a room's seqs,
/// so "the first entry from position p on is stamped at `at_ms` or later" turns from false to
/// true once as p grows, and bisecting the key finds it in a few dozen lookups: the schema
/// keeps no index of times, which would cost every append a page more (schema version 5).
fn first_seq_stamped_from(
    conn: &Connection,
    room: &RoomId,
    at_ms: i64,
    after: Seq,
    newest: Seq,
) -> StoreResult<Option<Seq>> {
    let mut first_from = conn
        .prepare_cached(
            "SELECT seq, created_at FROM messages WHERE room_id = ?1 AND seq >= ?2
             ORDER BY seq LIMIT 1",
        )
        .map_err(sql_err)?;
    // Positions, not seqs: a position with no entry stands for the next entry after it.
    let mut first_entry_from = |position: Seq| {
        first_from
            .query_row(params![room.as_str(), seq_to_i64(position)], |r| {
                Ok((seq_from_i64(r.get(0)?), r.get::<_, i64>(1)?))
            })
            .optional()
            .map_err(sql_err)
    };
    let (mut low, mut high) = (after + 1, newest.max(after) + 1);
    while low < high {
        let middle = low + (high - low) / 2;
        match first_entry_from(middle)? {
            Some((_, stamped)) if stamped < at_ms => low = middle + 1,
            _ => high = middle,
        }
    }
    Ok(first_entry_from(low)?.map(|(seq, _)| seq))
}

fn last_seq_in(conn: &Connection, room: &RoomId) -> StoreResult<Seq> {
    conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = ?1")
        .and_then(|mut s| s.query_row([room.as_str()], |r| r.get::<_, i64>(0)))
        .map(seq_from_i64)
        .map_err(sql_err)
}

const UNREAD_SQL: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM messages
     WHERE room_id = ?1 AND seq > ?2 AND sender != ?3
       AND kind = 'message' AND deleted = 0 LIMIT ?4)";

/// Others' standing messages after `after_seq`, counted up to `cap`.
fn unread_in(
    conn: &Connection,
    room: &RoomId,
    user: &UserId,
    after_seq: Seq,
    cap: u64,
) -> StoreResult<u64> {
    conn.prepare_cached(UNREAD_SQL)
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
}

/// One membership read on a reading connection.
fn membership_in(
    conn: &Connection,
    room: &RoomId,
    user: &UserId,
) -> StoreResult<Option<Membership>> {
    conn.prepare_cached(&format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM members WHERE room_id = ?1 AND user_id = ?2"
    ))
    .and_then(|mut s| {
        s.query_row([room.as_str(), user.as_str()], |r| {
            membership_from_row(user, r)
        })
        .optional()
    })
    .map_err(sql_err)
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, new: NewMessage, now: DateTime<Utc>) -> StoreResult<Appended> {
        self.write_atomic(move |conn| append_atomic(conn, &new, now))
            .await
    }

    /// One write job: the entries share the writer's transaction (one commit), and one
    /// failing entry leaves the others.
    async fn append_batch(
        &self,
        news: Vec<NewMessage>,
        now: DateTime<Utc>,
    ) -> Vec<StoreResult<Appended>> {
        let count = news.len();
        let written = self
            .write_atomic(move |conn| {
                let answers = news
                    .iter()
                    .map(|new| {
                        // SQLite may end the transaction on an I/O error: then what follows
                        // would commit entry by entry; the writer fails the whole batch.
                        if conn.is_autocommit() {
                            return Err(StoreError::Unavailable("no write transaction".into()));
                        }
                        append_atomic(conn, new, now)
                    })
                    .collect();
                Ok(answers)
            })
            .await;
        written.unwrap_or_else(|e| vec![Err(e); count])
    }

    async fn history(&self, room: &RoomId, query: &HistoryQuery) -> StoreResult<Vec<Message>> {
        let (room, query) = (room.clone(), query.clone());
        self.read(move |conn| history_in(conn, &room, &query)).await
    }

    async fn histories_after(
        &self,
        from: &[(RoomId, Seq)],
        limit: usize,
    ) -> StoreResult<Vec<Vec<Message>>> {
        let from = from.to_vec();
        self.read(move |conn| {
            from.iter()
                .map(|(room, after)| history_in(conn, room, &HistoryQuery::after(*after, limit)))
                .collect()
        })
        .await
    }

    async fn entry_by_client_msg_id(
        &self,
        room: &RoomId,
        sender: &UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<Message>> {
        let (room, sender, id) = (room.clone(), sender.clone(), client_msg_id.to_owned());
        self.read(move |conn| rows::message_by_client_msg_id(conn, &room, &sender, &id))
            .await
    }

    async fn entries(&self, room: &RoomId, seqs: &[Seq]) -> StoreResult<Vec<Message>> {
        let (room, seqs) = (room.clone(), seqs.to_vec());
        self.read(move |conn| rows::entries_where(conn, &room, "seq", &seqs))
            .await
    }

    async fn changes(&self, room: &RoomId, targets: &[Seq]) -> StoreResult<Vec<Message>> {
        let (room, targets) = (room.clone(), targets.to_vec());
        self.read(move |conn| rows::entries_where(conn, &room, "target", &targets))
            .await
    }

    async fn last_seq(&self, room: &RoomId) -> StoreResult<Seq> {
        let room = room.clone();
        self.read(move |conn| last_seq_in(conn, &room)).await
    }

    async fn count_unread(
        &self,
        room: &RoomId,
        user: &UserId,
        after_seq: Seq,
        cap: u64,
    ) -> StoreResult<u64> {
        let (room, user) = (room.clone(), user.clone());
        self.read(move |conn| unread_in(conn, &room, &user, after_seq, cap))
            .await
    }

    /// One read job for the whole page.
    async fn room_states(
        &self,
        memberships: &[Membership],
        unread_cap: u64,
    ) -> StoreResult<Vec<RoomState>> {
        let memberships = memberships.to_vec();
        self.read(move |conn| {
            let standing = HistoryQuery {
                entries: Entries::Standing,
                ..HistoryQuery::latest(1)
            };
            memberships
                .iter()
                .map(|m| {
                    let newest = history_in(conn, &m.room, &standing)?.pop();
                    let mut related = Vec::new();
                    if let Some(newest) = &newest {
                        let targets: Vec<Seq> =
                            std::iter::once(newest.seq).chain(newest.reply_to).collect();
                        related = rows::entries_where(conn, &m.room, "target", &targets)?;
                        if let Some(answered) = newest.reply_to {
                            related.extend(rows::entries_where(conn, &m.room, "seq", &[answered])?);
                        }
                    }
                    Ok(RoomState {
                        newest,
                        related,
                        last_seq: last_seq_in(conn, &m.room)?,
                        unread: unread_in(conn, &m.room, &m.user, m.read_seq, unread_cap)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn ensure_direct_room(
        &self,
        a: &UserId,
        b: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Room> {
        self.create_room(NewRoom::direct(a, b, now)).await
    }

    async fn create_group(&self, group: NewGroup, now: DateTime<Utc>) -> StoreResult<Room> {
        self.create_room(NewRoom::group(group, now)).await
    }

    async fn add_members(
        &self,
        room: &RoomId,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UserId>> {
        let (room, users) = (room.clone(), users.to_vec());
        self.write(move |conn| insert_members(conn, &room, &users, Role::Member, now))
            .await
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> StoreResult<bool> {
        let (room, user) = (room.clone(), user.clone());
        // One write job: the removal and the hand-off of ownership are one transaction.
        self.write(move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM members WHERE room_id = ?1 AND user_id = ?2")
                .and_then(|mut s| s.execute([room.as_str(), user.as_str()]))
                .map(|n| n == 1)
                .map_err(sql_err)?;
            let is_group = load_room(conn, &room)?.is_some_and(|r| r.kind == RoomKind::Group);
            if removed && is_group {
                let members = rows::members_with_roles(conn, &room)?;
                let heir = successor(&members);
                if let Some(heir) = heir {
                    rows::set_role(conn, &room, &heir, Role::Owner)?;
                }
            }
            Ok(removed)
        })
        .await
    }

    async fn set_role(&self, room: &RoomId, user: &UserId, role: Role) -> StoreResult<bool> {
        let (room, user) = (room.clone(), user.clone());
        self.write(move |conn| rows::set_role(conn, &room, &user, role))
            .await
    }

    async fn room(&self, room: &RoomId) -> StoreResult<Option<Room>> {
        let room = room.clone();
        self.read(move |conn| load_room(conn, &room)).await
    }

    async fn membership(&self, room: &RoomId, user: &UserId) -> StoreResult<Option<Membership>> {
        let (room, user) = (room.clone(), user.clone());
        self.read(move |conn| membership_in(conn, &room, &user))
            .await
    }

    async fn memberships_among(
        &self,
        user: &UserId,
        rooms: &[RoomId],
    ) -> StoreResult<Vec<Membership>> {
        let (user, rooms) = (user.clone(), rooms.to_vec());
        self.read(move |conn| {
            let mut memberships = Vec::with_capacity(rooms.len());
            for room in &rooms {
                memberships.extend(membership_in(conn, room, &user)?);
            }
            Ok(memberships)
        })
        .await
    }

    async fn rooms(&self, ids: &[RoomId]) -> StoreResult<Vec<Room>> {
        let ids = ids.to_vec();
        self.read(move |conn| {
            let mut rooms = Vec::with_capacity(ids.len());
            for id in &ids {
                rooms.extend(load_room(conn, id)?);
            }
            Ok(rooms)
        })
        .await
    }

    async fn memberships_of(&self, user: &UserId) -> StoreResult<Vec<Membership>> {
        let user = user.clone();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {MEMBERSHIP_COLUMNS} FROM members WHERE user_id = ?1 ORDER BY room_id"
            ))
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
            conn.prepare_cached(&format!(
                "SELECT {MEMBERSHIP_COLUMNS} FROM members
                     WHERE user_id = ?1 AND room_id > ?2 ORDER BY room_id LIMIT ?3"
            ))
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

    async fn mark(
        &self,
        room: &RoomId,
        user: &UserId,
        mark: Mark,
        seq: Seq,
    ) -> StoreResult<Marked> {
        let (room, user) = (room.clone(), user.clone());
        // The writer thread runs one closure at a time, appends included: reading, deciding
        // and updating here is atomic.
        self.write(move |conn| {
            let before = conn
                .prepare_cached(
                    "SELECT delivered_seq, read_seq, public_read_seq FROM members
                     WHERE room_id = ?1 AND user_id = ?2",
                )
                .and_then(|mut s| {
                    s.query_row([room.as_str(), user.as_str()], |r| {
                        Ok(Positions {
                            delivered_seq: seq_from_i64(r.get(0)?),
                            read_seq: seq_from_i64(r.get(1)?),
                            public_read_seq: seq_from_i64(r.get(2)?),
                        })
                    })
                    .optional()
                })
                .map_err(sql_err)?;
            let Some(before) = before else {
                let none = Positions::default();
                return Ok(Marked {
                    before: none,
                    after: none,
                });
            };
            let last: i64 = conn
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = ?1")
                .and_then(|mut s| s.query_row([room.as_str()], |r| r.get(0)))
                .map_err(sql_err)?;
            let after = before.advanced(mark, seq.min(seq_from_i64(last)));
            if after != before {
                conn.prepare_cached(
                    "UPDATE members SET delivered_seq = ?3, read_seq = ?4, public_read_seq = ?5
                     WHERE room_id = ?1 AND user_id = ?2",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        room.as_str(),
                        user.as_str(),
                        seq_to_i64(after.delivered_seq),
                        seq_to_i64(after.read_seq),
                        seq_to_i64(after.public_read_seq)
                    ])
                })
                .map_err(sql_err)?;
            }
            Ok(Marked { before, after })
        })
        .await
    }

    async fn receipts(&self, room: &RoomId) -> StoreResult<Vec<MemberReceipt>> {
        let room = room.clone();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT user_id, delivered_seq, public_read_seq FROM members
                 WHERE room_id = ?1 ORDER BY user_id",
            )
            .and_then(|mut s| {
                s.query_map([room.as_str()], |r| {
                    let user: String = r.get(0)?;
                    Ok(MemberReceipt {
                        user: UserId::from_stored(&user).map_err(|e| bad_column(0, e))?,
                        delivered_seq: seq_from_i64(r.get(1)?),
                        read_seq: seq_from_i64(r.get(2)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql_err)
        })
        .await
    }

    async fn user_settings(&self, user: &UserId) -> StoreResult<UserSettings> {
        let user = user.clone();
        self.read(move |conn| {
            conn.prepare_cached("SELECT hide_presence FROM user_settings WHERE user_id = ?1")
                .and_then(|mut s| {
                    s.query_row([user.as_str()], |r| r.get::<_, bool>(0))
                        .optional()
                })
                .map(|hide| UserSettings {
                    hide_presence: hide.unwrap_or(false),
                })
                .map_err(sql_err)
        })
        .await
    }

    async fn set_user_settings(&self, user: &UserId, settings: UserSettings) -> StoreResult<()> {
        let user = user.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO user_settings (user_id, hide_presence) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET hide_presence = excluded.hide_presence",
            )
            .and_then(|mut s| s.execute(params![user.as_str(), settings.hide_presence]))
            .map(|_| ())
            .map_err(sql_err)
        })
        .await
    }

    async fn revoke_tokens(
        &self,
        user: &UserId,
        before: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>> {
        let user = user.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO revocations (user_id, before) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET before = MAX(before, excluded.before)
                 RETURNING before",
            )
            .and_then(|mut s| {
                s.query_row(params![user.as_str(), before.timestamp_millis()], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .map(crate::domain::timestamp::from_millis)
            .map_err(sql_err)
        })
        .await
    }

    async fn tokens_revoked_before(&self, user: &UserId) -> StoreResult<Option<DateTime<Utc>>> {
        let user = user.clone();
        self.read(move |conn| {
            conn.prepare_cached("SELECT before FROM revocations WHERE user_id = ?1")
                .and_then(|mut s| {
                    s.query_row([user.as_str()], |r| r.get::<_, i64>(0))
                        .optional()
                })
                .map(|t| t.map(crate::domain::timestamp::from_millis))
                .map_err(sql_err)
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_err))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every read of a room's entries searches an index by (room, seq) and sorts nothing:
    /// the schema dropped the indexes it once had for times and standing messages.
    #[test]
    fn reads_of_a_room_search_its_key_and_sort_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let conn =
            schema::open_writer(&dir.path().join("plan.db"), SqliteSynchronous::Normal).unwrap();
        let mut reads = vec![UNREAD_SQL.to_string()];
        for entries in [Entries::All, Entries::Messages, Entries::Standing] {
            for order in [Order::Asc, Order::Desc] {
                reads.push(history_sql(entries, order));
            }
        }
        for sql in reads {
            let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let unbound = vec![rusqlite::types::Null; explain.parameter_count()];
            let plan: Vec<String> = explain
                .query_map(rusqlite::params_from_iter(unbound), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains("SEARCH messages USING INDEX")
                    && plan.contains("(room_id=? AND seq>?")
                    && !plan.contains("TEMP B-TREE")
                    && (!sql.contains("kind = 'message'") || plan.contains("messages_only")),
                "{sql}\n=> {plan}"
            );
        }
    }
}
