//! What members see of each other besides messages: presence (who may see whom), typing,
//! and the user's settings.

use super::{Chat, ChatError, ChatResult};
use crate::{
    bus::{BusEvent, Topic},
    domain::{PresenceState, RoomId, UserId, UserPresence},
    store::UserSettings,
};

/// Rooms read in one store call when gathering a user's contacts: one call for most users,
/// and a bound on the members one answer carries (groups have up to 1,000).
const ROOMS_PER_READ: usize = 100;

/// A room's presence as its members may see it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomPresence {
    /// Every member with their presence; empty for groups above `presence.roster_max_members`.
    pub members: Vec<MemberPresence>,
    /// Members online or away.
    pub online: usize,
    pub total: usize,
}

/// A member and their presence.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberPresence {
    #[schema(value_type = String)]
    pub user: UserId,
    /// Online or away.
    pub online: bool,
    pub state: PresenceState,
    #[schema(value_type = Option<String>)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::domain::timestamp::option"
    )]
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<UserPresence> for MemberPresence {
    fn from(p: UserPresence) -> Self {
        Self {
            online: p.state != PresenceState::Offline,
            user: p.user,
            state: p.state,
            last_seen: p.last_seen,
        }
    }
}

impl Chat {
    /// Whose presence `user` sees: the members of their direct rooms and small groups, at
    /// most `presence.max_contacts`, by user id.
    pub async fn contacts(&self, user: &UserId, rooms: &[RoomId]) -> ChatResult<Vec<UserId>> {
        let roster_max = self.presence_settings.roster_max_members;
        // One read for all the rooms, in chunks that bound what one answer holds.
        let mut contacts: Vec<UserId> = Vec::new();
        for chunk in rooms.chunks(ROOMS_PER_READ) {
            for room in self.store.rooms(chunk).await? {
                if room.members.len() <= roster_max {
                    contacts.extend(room.members);
                }
            }
        }
        contacts.sort();
        contacts.dedup();
        contacts.retain(|c| c != user);
        contacts.truncate(self.presence_settings.max_contacts);
        Ok(contacts)
    }

    /// The room's members and their presence (counts only for large groups).
    pub async fn presence(&self, user: &UserId, room: &str) -> ChatResult<RoomPresence> {
        let room = self.room(user, room).await?;
        let states = self
            .presence
            .snapshot(&room.members)
            .await
            .map_err(|e| ChatError::Bus(e.to_string()))?;
        let online = states
            .iter()
            .filter(|p| p.state != PresenceState::Offline)
            .count();
        let total = room.members.len();
        let members = if total <= self.presence_settings.roster_max_members {
            states.into_iter().map(MemberPresence::from).collect()
        } else {
            Vec::new()
        };
        Ok(RoomPresence {
            members,
            online,
            total,
        })
    }

    /// Passes a typing start or stop on to the room's members (the caller checked that
    /// `user` is one: typing is too frequent for a store read each time).
    pub async fn typing(&self, user: &UserId, room: &RoomId, typing: bool) {
        metrics::counter!("chatd_typing_events_total").increment(1);
        let event = BusEvent::Typing {
            room: room.clone(),
            user: user.clone(),
            typing,
        };
        self.publish_quietly(&Topic::Room(room.clone()), &event)
            .await;
    }

    pub async fn settings(&self, user: &UserId) -> ChatResult<UserSettings> {
        Ok(self.store.user_settings(user).await?)
    }

    /// Stores the settings, then applies them (presence shows the change at once).
    pub async fn update_settings(
        &self,
        user: &UserId,
        settings: UserSettings,
    ) -> ChatResult<UserSettings> {
        self.store.set_user_settings(user, settings).await?;
        self.presence
            .set_hidden(user, settings.hide_presence)
            .await
            .map_err(|e| ChatError::Bus(e.to_string()))?;
        Ok(settings)
    }
}
