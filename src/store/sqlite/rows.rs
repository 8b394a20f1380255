//! Rows to values and back: messages, rooms and memberships as the tables hold them.

use std::{
    collections::BTreeMap,
    future::{Future, ready},
};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::sql_err;
use crate::{
    domain::{
        EntryKind, Membership, Message, Role, Room, RoomId, RoomKind, Seq, UserId,
        timestamp::from_millis,
    },
    store::{
        RankedMember, StoreError, StoreResult, group_roles, rooms::RoomWrites, seq_from_i64,
        seq_to_i64,
    },
};

/// The columns [`message_from_row`] reads and [`insert_message`] writes, in their order.
pub const MESSAGE_COLUMNS: &str = "id, room_id, seq, sender, client_msg_id, text, created_at, kind, target, reply_to, emoji, deleted";

/// The columns [`membership_from_row`] reads, in its order.
pub const MEMBERSHIP_COLUMNS: &str = "room_id, read_seq, joined_at";

pub fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let room: String = row.get(1)?;
    let sender: String = row.get(3)?;
    let kind: String = row.get(7)?;
    Ok(Message {
        id: row.get(0)?,
        room: RoomId::parse(&room).map_err(|e| bad_column(1, e))?,
        seq: seq_from_i64(row.get(2)?),
        sender: UserId::from_stored(&sender).map_err(|e| bad_column(3, e))?,
        client_msg_id: row.get(4)?,
        text: row.get(5)?,
        created_at: from_millis(row.get(6)?),
        kind: EntryKind::parse(&kind).ok_or_else(|| bad_value(7, "entry kind"))?,
        target: row.get::<_, Option<i64>>(8)?.map(seq_from_i64),
        reply_to: row.get::<_, Option<i64>>(9)?.map(seq_from_i64),
        emoji: row.get(10)?,
        deleted: row.get(11)?,
    })
}

pub fn membership_from_row(user: &UserId, row: &Row<'_>) -> rusqlite::Result<Membership> {
    let room: String = row.get(0)?;
    Ok(Membership {
        room: RoomId::parse(&room).map_err(|e| bad_column(0, e))?,
        user: user.clone(),
        read_seq: seq_from_i64(row.get(1)?),
        joined_at: from_millis(row.get(2)?),
    })
}

fn bad_value(i: usize, what: &str) -> rusqlite::Error {
    let e: Box<dyn std::error::Error + Send + Sync> = format!("bad {what}").into();
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
}

pub fn bad_column(i: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

/// The message stored under (room, sender, clientMsgId), if any.
pub fn message_by_client_msg_id(
    conn: &Connection,
    room: &RoomId,
    sender: &UserId,
    client_msg_id: &str,
) -> StoreResult<Option<Message>> {
    conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE room_id = ?1 AND sender = ?2 AND client_msg_id = ?3"
    ))
    .and_then(|mut s| {
        s.query_row(
            params![room.as_str(), sender.as_str(), client_msg_id],
            message_from_row,
        )
        .optional()
    })
    .map_err(sql_err)
}

/// The seq and createdAt of the room's newest message.
pub fn newest(conn: &Connection, room: &RoomId) -> StoreResult<Option<(Seq, DateTime<Utc>)>> {
    conn.prepare_cached(
        "SELECT seq, created_at FROM messages WHERE room_id = ?1 ORDER BY seq DESC LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row([room.as_str()], |r| {
            Ok((seq_from_i64(r.get(0)?), from_millis(r.get(1)?)))
        })
        .optional()
    })
    .map_err(sql_err)
}

/// Removes the text of the message at `target` and of its edits: what a delete leaves is a
/// tombstone (id, seq, sender, time).
pub fn scrub(conn: &Connection, room: &RoomId, target: Seq) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE messages SET text = '', deleted = 1
         WHERE room_id = ?1 AND (seq = ?2 OR (target = ?2 AND kind = 'edit')) AND deleted = 0",
    )
    .and_then(|mut s| s.execute(params![room.as_str(), seq_to_i64(target)]))
    .map_err(sql_err)?;
    Ok(())
}

/// Whether the entry at `seq` had its text removed by a delete.
pub fn is_deleted(conn: &Connection, room: &RoomId, seq: Seq) -> StoreResult<bool> {
    conn.prepare_cached("SELECT deleted FROM messages WHERE room_id = ?1 AND seq = ?2")
        .and_then(|mut s| {
            s.query_row(params![room.as_str(), seq_to_i64(seq)], |r| r.get(0))
                .optional()
        })
        .map(|deleted| deleted.unwrap_or(false))
        .map_err(sql_err)
}

/// Entries of `room` whose `column` (`seq` or `target`) is one of `seqs`, by seq.
pub fn entries_where(
    conn: &Connection,
    room: &RoomId,
    column: &str,
    seqs: &[Seq],
) -> StoreResult<Vec<Message>> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    // The seqs as a JSON array: one statement (and one cached plan) for any number of them.
    let list = serde_json::to_string(seqs).map_err(|e| StoreError::Internal(e.to_string()))?;
    conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE room_id = ?1 AND {column} IN (SELECT value FROM json_each(?2)) ORDER BY seq"
    ))
    .and_then(|mut s| {
        s.query_map(params![room.as_str(), list], message_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(sql_err)
}

/// The members of a room with their roles and when they joined.
pub fn members_with_roles(conn: &Connection, room: &RoomId) -> StoreResult<Vec<RankedMember>> {
    conn.prepare_cached("SELECT user_id, role, joined_at FROM members WHERE room_id = ?1")
        .and_then(|mut s| {
            s.query_map([room.as_str()], |r| {
                let user: String = r.get(0)?;
                let role: String = r.get(1)?;
                Ok((
                    UserId::from_stored(&user).map_err(|e| bad_column(0, e))?,
                    Role::parse(&role).ok_or_else(|| bad_value(1, "role"))?,
                    from_millis(r.get(2)?),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql_err)
}

pub fn set_role(conn: &Connection, room: &RoomId, user: &UserId, role: Role) -> StoreResult<bool> {
    conn.prepare_cached("UPDATE members SET role = ?3 WHERE room_id = ?1 AND user_id = ?2")
        .and_then(|mut s| s.execute(params![room.as_str(), user.as_str(), role.as_str()]))
        .map(|n| n == 1)
        .map_err(sql_err)
}

/// Inserts a stored message; `notify`: with the mark that its notifications are to be decided.
pub fn insert_message(conn: &Connection, message: &Message, notify: bool) -> StoreResult<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO messages ({MESSAGE_COLUMNS}, push_pending)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            message.id,
            message.room.as_str(),
            seq_to_i64(message.seq),
            message.sender.as_str(),
            message.client_msg_id,
            message.text,
            message.created_at.timestamp_millis(),
            message.kind.as_str(),
            message.target.map(seq_to_i64),
            message.reply_to.map(seq_to_i64),
            message.emoji,
            message.deleted,
            notify.then_some(1)
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

fn insert_room(conn: &Connection, room: &Room) -> StoreResult<()> {
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

/// Inserts the members that are missing, with `role`; returns them.
pub fn insert_members(
    conn: &Connection,
    room: &RoomId,
    users: &[UserId],
    role: Role,
    now: DateTime<Utc>,
) -> StoreResult<Vec<UserId>> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO members (room_id, user_id, joined_at, role)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(sql_err)?;
    let mut added = Vec::new();
    for user in users {
        let n = stmt
            .execute(params![
                room.as_str(),
                user.as_str(),
                now.timestamp_millis(),
                role.as_str()
            ])
            .map_err(sql_err)?;
        if n == 1 {
            added.push(user.clone());
        }
    }
    Ok(added)
}

pub fn load_room(conn: &Connection, id: &RoomId) -> StoreResult<Option<Room>> {
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
    let corrupt = |what: &str| StoreError::Internal(format!("room {id}: bad {what}"));
    let kind = RoomKind::parse(&kind).ok_or_else(|| corrupt("kind"))?;
    let mut members = members_with_roles(conn, id)?;
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let roles = match kind {
        RoomKind::Group => group_roles(&members),
        RoomKind::Direct => BTreeMap::new(),
    };
    Ok(Some(Room {
        id: id.clone(),
        kind,
        name,
        members: members.into_iter().map(|(user, ..)| user).collect(),
        roles,
        created_by: UserId::from_stored(&created_by).map_err(|_| corrupt("creator"))?,
        created_at: from_millis(created_at),
    }))
}

/// A room creation's writes inside one write job: each runs at once on the job's
/// transaction (the futures are ready), so the room, its members and the read-back are one
/// transaction.
pub struct InTransaction<'a>(pub &'a Connection);

impl RoomWrites for InTransaction<'_> {
    fn insert_room(&self, room: &Room) -> impl Future<Output = StoreResult<()>> + Send {
        ready(insert_room(self.0, room))
    }

    fn insert_members(
        &self,
        room: &RoomId,
        users: &[UserId],
        role: Role,
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Vec<UserId>>> + Send {
        ready(insert_members(self.0, room, users, role, now))
    }

    fn load_room(&self, room: &RoomId) -> impl Future<Output = StoreResult<Option<Room>>> + Send {
        ready(load_room(self.0, room))
    }
}
