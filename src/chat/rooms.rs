//! Rooms and their members: direct rooms, groups, joining and leaving, the room list, and
//! the cap on rooms per user.

use std::collections::BTreeSet;

use super::{Chat, ChatError, ChatResult, MAX_GROUP_NAME, MAX_ROOM_PAGE, UNREAD_CAP};
use crate::{
    bus::{BusEvent, Topic},
    domain::{Role, Room, RoomId, RoomKind, RoomSummary, UserId},
    protocol::ErrorCode,
    store::NewGroup,
};

impl Chat {
    /// Opens (or finds) the direct room of `user` and `peer`.
    pub async fn open_direct(&self, user: &UserId, peer: &str) -> ChatResult<(Room, bool)> {
        let peer = UserId::parse(peer).map_err(|e| ChatError::bad_field(format!("peer: {e}")))?;
        if &peer == user {
            return Err(ChatError::bad_field(
                "peer: cannot open a direct room with yourself",
            ));
        }
        let id = RoomId::direct(user, &peer);
        let existed = self.store.room(&id).await?.is_some();
        if !existed {
            self.require_room_capacity(&[user.clone(), peer.clone()])
                .await?;
        }
        let room = self
            .store
            .ensure_direct_room(user, &peer, self.clock.now())
            .await?;
        if !existed {
            self.announce_added(&room, &room.members).await;
        }
        Ok((room, !existed))
    }

    pub async fn create_group(
        &self,
        creator: &UserId,
        name: &str,
        members: &[String],
    ) -> ChatResult<Room> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_GROUP_NAME {
            return Err(ChatError::bad_field(format!(
                "name must be 1 to {MAX_GROUP_NAME} characters"
            )));
        }
        let mut all = self.parse_users(members)?;
        all.insert(creator.clone());
        if all.len() > self.limits.max_group_members {
            return Err(ChatError::bad_field(format!(
                "a group has at most {} members",
                self.limits.max_group_members
            )));
        }
        let all: Vec<UserId> = all.into_iter().collect();
        self.require_room_capacity(&all).await?;
        let group = NewGroup {
            id: RoomId::new_group(),
            name: name.to_owned(),
            created_by: creator.clone(),
            members: all,
        };
        let room = self.store.create_group(group, self.clock.now()).await?;
        self.announce_added(&room, &room.members).await;
        Ok(room)
    }

    pub async fn add_members(
        &self,
        user: &UserId,
        room: &str,
        members: &[String],
    ) -> ChatResult<Room> {
        let room = self.group(user, room).await?;
        if !room.role_of(user).moderates() {
            return Err(ChatError::Forbidden(
                "only a group's owners and admins may add members".into(),
            ));
        }
        let wanted = self.parse_users(members)?;
        if wanted.is_empty() {
            return Err(ChatError::bad_field("members must name at least one user"));
        }
        let total =
            room.members.len() + wanted.iter().filter(|u| !room.members.contains(u)).count();
        if total > self.limits.max_group_members {
            return Err(ChatError::bad_field(format!(
                "a group has at most {} members",
                self.limits.max_group_members
            )));
        }
        let wanted: Vec<UserId> = wanted
            .into_iter()
            .filter(|u| !room.members.contains(u))
            .collect();
        if wanted.is_empty() {
            return Ok(room);
        }
        self.require_room_capacity(&wanted).await?;
        let added = self
            .store
            .add_members(&room.id, &wanted, self.clock.now())
            .await?;
        let room = self
            .store
            .room(&room.id)
            .await?
            .ok_or(ChatError::RoomNotFound)?;
        if !added.is_empty() {
            self.announce_added(&room, &added).await;
            self.announce_members(&room).await;
        }
        Ok(room)
    }

    /// Removes `target` from a group: anyone may leave; owners remove anyone, admins plain
    /// members. The last owner's leaving hands ownership on (the store does).
    pub async fn remove_member(&self, user: &UserId, room: &str, target: &str) -> ChatResult<()> {
        let room = self.group(user, room).await?;
        let target =
            UserId::from_stored(target).map_err(|e| ChatError::bad_field(format!("user: {e}")))?;
        let allowed = match room.role_of(user) {
            _ if target == *user => true,
            Role::Owner => true,
            Role::Admin => room.role_of(&target) == Role::Member,
            Role::Member => false,
        };
        if !allowed {
            return Err(ChatError::Forbidden(
                "only owners may remove anyone, admins plain members; anyone may leave".into(),
            ));
        }
        // Announced whether or not this call removed them: a first attempt that failed after
        // the removal announced nothing, and its retry finds nobody to remove.
        self.store.remove_member(&room.id, &target).await?;
        self.memberships.forget_room(&room.id);
        let event = BusEvent::RoomRemoved {
            room: room.id.clone(),
        };
        self.publish_quietly(&Topic::User(target.clone()), &event)
            .await;
        match self.store.room(&room.id).await {
            Ok(Some(room)) => self.announce_members(&room).await,
            Ok(None) => {}
            // The removal stands; nodes forget what they knew of the room within 30 s.
            Err(e) => tracing::warn!(error = %e, "members not announced after a removal"),
        }
        Ok(())
    }

    /// Gives `target` a role in a group; owners only. The last owner cannot step down (they
    /// may leave: ownership passes on).
    pub async fn set_role(
        &self,
        user: &UserId,
        room: &str,
        target: &str,
        role: Role,
    ) -> ChatResult<Room> {
        let room = self.group(user, room).await?;
        if room.role_of(user) != Role::Owner {
            return Err(ChatError::Forbidden(
                "only a group's owners may change roles".into(),
            ));
        }
        let target = UserId::from_stored(target)
            .ok()
            .filter(|t| room.members.contains(t))
            .ok_or_else(|| ChatError::bad_field("user: not a member of this room"))?;
        let owners = room.roles.values().filter(|r| **r == Role::Owner).count();
        if target == *user && role != Role::Owner && owners == 1 {
            return Err(ChatError::Forbidden(
                "the last owner cannot step down; make another member owner first".into(),
            ));
        }
        if room.role_of(&target) == role {
            return Ok(room);
        }
        if !self.store.set_role(&room.id, &target, role).await? {
            return Err(ChatError::bad_field("user: not a member of this room"));
        }
        let room = self
            .store
            .room(&room.id)
            .await?
            .ok_or(ChatError::RoomNotFound)?;
        self.announce_members(&room).await;
        Ok(room)
    }

    /// The group, if `user` is a member; direct rooms have no members to change.
    async fn group(&self, user: &UserId, room: &str) -> ChatResult<Room> {
        let room = self.room(user, room).await?;
        if room.kind == RoomKind::Direct {
            return Err(ChatError::Forbidden(
                "a direct room's members cannot change".into(),
            ));
        }
        Ok(room)
    }

    /// Refuses to add users who are in `limits.max_rooms_per_user` rooms already. Checked
    /// before the write: concurrent additions can overshoot the cap by the number racing.
    async fn require_room_capacity(&self, users: &[UserId]) -> ChatResult<()> {
        let cap = self.limits.max_rooms_per_user as u64;
        let counts = self.store.membership_counts(users).await?;
        // Which users are full is not said: it would tell anyone others' room counts.
        if counts.iter().all(|&n| n < cap) {
            return Ok(());
        }
        Err(ChatError::invalid(
            ErrorCode::TooManyRooms,
            format!("a user in this request is in {cap} rooms already"),
        ))
    }

    /// One page of the user's rooms, in room id order: at most `limit` rooms after the cursor
    /// `after` (a room id), and the cursor of the next page if there is one.
    pub async fn list_rooms(
        &self,
        user: &UserId,
        after: Option<&str>,
        limit: usize,
    ) -> ChatResult<(Vec<RoomSummary>, Option<RoomId>)> {
        if limit == 0 || limit > MAX_ROOM_PAGE {
            return Err(ChatError::bad_field(format!(
                "limit must be 1 to {MAX_ROOM_PAGE}"
            )));
        }
        let after = after
            .map(|a| RoomId::parse(a).map_err(|_| ChatError::bad_field("after: not a room cursor")))
            .transpose()?;
        let mut memberships = self
            .store
            .memberships_page(user, after.as_ref(), limit + 1)
            .await?;
        let next = (memberships.len() > limit).then(|| {
            memberships.truncate(limit);
            memberships.last().map(|m| m.room.clone())
        });
        // Two store calls for the page, whatever its size: the rooms, then their states.
        let ids: Vec<RoomId> = memberships.iter().map(|m| m.room.clone()).collect();
        let (rooms, states) = tokio::try_join!(
            self.store.rooms(&ids),
            self.store.room_states(&memberships, UNREAD_CAP)
        )?;
        let mut rooms: std::collections::HashMap<RoomId, Room> =
            rooms.into_iter().map(|r| (r.id.clone(), r)).collect();
        let summaries = memberships
            .iter()
            .zip(states)
            .map(|(m, state)| {
                let room = rooms.remove(&m.room).ok_or(ChatError::RoomNotFound)?;
                let newest: Vec<_> = state.newest.into_iter().collect();
                let last_message = super::changes::fold_states(&newest, &state.related, user).pop();
                Ok(RoomSummary {
                    last_seq: state.last_seq,
                    room,
                    last_message,
                    read_seq: m.read_seq,
                    unread: state.unread,
                })
            })
            .collect::<ChatResult<Vec<_>>>()?;
        Ok((summaries, next.flatten()))
    }

    /// The ids of the user's rooms (what a new connection subscribes to).
    pub async fn room_ids(&self, user: &UserId) -> ChatResult<Vec<RoomId>> {
        Ok(self
            .store
            .memberships_of(user)
            .await?
            .into_iter()
            .map(|m| m.room)
            .collect())
    }

    fn parse_users(&self, users: &[String]) -> ChatResult<BTreeSet<UserId>> {
        users
            .iter()
            .map(|u| UserId::parse(u).map_err(|e| ChatError::bad_field(format!("members: {e}"))))
            .collect()
    }
}
