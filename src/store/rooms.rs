//! How a room comes to be, the same in every backend: [`create_room`] composes the writes a
//! backend provides ([`RoomWrites`]) in one order: insert the room unless it exists, insert
//! its missing members, read it back. Direct rooms and groups differ only in the [`NewRoom`].

use std::future::Future;

use chrono::{DateTime, Utc};

use super::{NewGroup, StoreError, StoreResult};
use crate::domain::{Role, Room, RoomId, RoomKind, UserId};

/// A room about to be created, with the members it starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRoom {
    /// The room as stored (its `members` and `roles` are not read: `members` below are
    /// inserted).
    pub room: Room,
    pub members: Vec<UserId>,
    /// A group's creator, inserted first as its owner.
    owner: Option<UserId>,
    /// What went wrong if the room cannot be read back after it was written.
    vanished: &'static str,
}

impl NewRoom {
    /// The direct room of `a` and `b` (id [`RoomId::direct`]).
    pub fn direct(a: &UserId, b: &UserId, now: DateTime<Utc>) -> Self {
        let room = Room::new_direct(a, b, now);
        Self {
            members: room.members.clone(),
            owner: None,
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
                roles: Default::default(),
                created_by: group.created_by.clone(),
                created_at: now,
            },
            owner: Some(group.created_by),
            members: group.members,
            vanished: "new group vanished",
        }
    }
}

/// The writes and the read a room creation is made of; each backend provides them.
pub trait RoomWrites {
    /// Inserts the room unless one with its id exists (then changes nothing).
    fn insert_room(&self, room: &Room) -> impl Future<Output = StoreResult<()>> + Send;

    /// Inserts the members missing from `room` with `role`, joined at `now`; returns them.
    fn insert_members(
        &self,
        room: &RoomId,
        users: &[UserId],
        role: Role,
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
        owner,
        vanished,
    } = new;
    writes.insert_room(&room).await?;
    if let Some(owner) = owner {
        writes
            .insert_members(&room.id, &[owner], Role::Owner, room.created_at)
            .await?;
    }
    writes
        .insert_members(&room.id, &members, Role::Member, room.created_at)
        .await?;
    writes
        .load_room(&room.id)
        .await?
        .ok_or_else(|| StoreError::Internal(vanished.into()))
}
