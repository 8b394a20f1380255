//! How a room comes to be, the same in every backend: [`create_room`] composes the writes a
//! backend provides ([`RoomWrites`]) in one order: insert the room unless it exists, insert
//! its missing members, read it back. Direct rooms and groups differ only in the [`NewRoom`].

use std::future::Future;

use chrono::{DateTime, Utc};

use super::{NewGroup, StoreError, StoreResult};
use crate::domain::{Room, RoomId, RoomKind, UserId};

/// A room about to be created, with the members it starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRoom {
    /// The room as stored (its `members` are not read: `members` below are inserted).
    pub room: Room,
    pub members: Vec<UserId>,
    /// What went wrong if the room cannot be read back after it was written.
    vanished: &'static str,
}

impl NewRoom {
    /// The direct room of `a` and `b` (id [`RoomId::direct`]).
    pub fn direct(a: &UserId, b: &UserId, now: DateTime<Utc>) -> Self {
        let room = Room::new_direct(a, b, now);
        Self {
            members: room.members.clone(),
            room,
            vanished: "direct room vanished",
        }
    }

    pub fn group(group: NewGroup, now: DateTime<Utc>) -> Self {
        Self {
            room: Room {
                id: group.id,
                kind: RoomKind::Group,
                name: Some(group.name),
                members: Vec::new(),
                created_by: group.created_by,
                created_at: now,
            },
            members: group.members,
            vanished: "new group vanished",
        }
    }
}

/// The writes and the read a room creation is made of; each backend provides them.
pub trait RoomWrites {
    /// Inserts the room unless one with its id exists (then changes nothing).
    fn insert_room(&self, room: &Room) -> impl Future<Output = StoreResult<()>> + Send;

    /// Inserts the members missing from `room`, joined at `now`; returns them.
    fn insert_members(
        &self,
        room: &RoomId,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Vec<UserId>>> + Send;

    /// The room with its members, if it exists.
    fn load_room(&self, room: &RoomId) -> impl Future<Output = StoreResult<Option<Room>>> + Send;
}

/// Creates `new` unless it exists (idempotent: a retry or a race ends in the same room) and
/// returns the room as stored, with all its members.
pub async fn create_room(writes: &impl RoomWrites, new: NewRoom) -> StoreResult<Room> {
    let NewRoom {
        room,
        members,
        vanished,
    } = new;
    writes.insert_room(&room).await?;
    writes
        .insert_members(&room.id, &members, room.created_at)
        .await?;
    writes
        .load_room(&room.id)
        .await?
        .ok_or_else(|| StoreError::Internal(vanished.into()))
}
