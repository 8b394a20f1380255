//! The documents of the three collections, and how they become values and back. Field names
//! are camelCase, as the collections have always held them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mongodb::bson;
use serde::{Deserialize, Serialize};

use crate::{
    domain::{EntryKind, Membership, Message, Role, Room, RoomId, RoomKind, UserId},
    store::{
        Positions, RankedMember, StoreError, StoreResult, group_roles, seq_from_i64, seq_to_i64,
    },
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub kind: String,
    pub name: Option<String>,
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "createdAt")]
    pub created_at: bson::DateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberDoc {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "roomId")]
    pub room_id: String,
    #[serde(rename = "userId")]
    pub user_id: String,
    #[serde(rename = "joinedAt")]
    pub joined_at: bson::DateTime,
    #[serde(rename = "readSeq")]
    pub read_seq: i64,
    /// Absent in documents written before receipts: read as `readSeq`.
    #[serde(
        rename = "deliveredSeq",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub delivered_seq: Option<i64>,
    #[serde(
        rename = "publicReadSeq",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub public_read_seq: Option<i64>,
    /// Absent in documents written before roles: see [`MemberDoc::role`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageDoc {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "chatRoomId")]
    pub room_id: String,
    pub seq: i64,
    pub sender: String,
    #[serde(rename = "clientMsgId")]
    pub client_msg_id: String,
    pub text: String,
    #[serde(rename = "createdAt")]
    pub created_at: bson::DateTime,
    /// Absent for messages (and in documents written before changes existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<i64>,
    #[serde(rename = "replyTo", default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Its push notifications are still to be decided (removed once they are).
    #[serde(
        rename = "pushPending",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub push_pending: Option<bool>,
    /// Until when a node deciding them holds it (epoch: nobody).
    #[serde(rename = "pushLease", default, skip_serializing_if = "Option::is_none")]
    pub push_lease: Option<bson::DateTime>,
}

pub fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("mongodb: bad {what} in stored document"))
}

pub fn to_bson_time(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

pub fn from_bson_time(t: bson::DateTime) -> DateTime<Utc> {
    crate::domain::timestamp::from_millis(t.timestamp_millis())
}

/// The `_id` of a membership: one document per (room, user).
pub fn member_id(room: &RoomId, user: &UserId) -> String {
    format!("{room}|{user}")
}

impl RoomDoc {
    pub fn from_room(room: &Room) -> Self {
        Self {
            id: room.id.to_string(),
            kind: room.kind.as_str().into(),
            name: room.name.clone(),
            created_by: room.created_by.to_string(),
            created_at: to_bson_time(room.created_at),
        }
    }

    /// The room `id` (found under it) with these members (their documents, in order).
    pub fn into_room(self, id: RoomId, members: &[MemberDoc]) -> StoreResult<Room> {
        let kind = RoomKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?;
        let members = self.ranked(members)?;
        let roles = match kind {
            RoomKind::Group => group_roles(&members),
            RoomKind::Direct => BTreeMap::new(),
        };
        Ok(Room {
            id,
            kind,
            name: self.name,
            members: members.into_iter().map(|(user, ..)| user).collect(),
            roles,
            created_by: UserId::from_stored(&self.created_by).map_err(|_| corrupt("createdBy"))?,
            created_at: from_bson_time(self.created_at),
        })
    }
}

impl RoomDoc {
    /// The members with their roles and when they joined (what roles and hand-offs need).
    pub fn ranked(&self, members: &[MemberDoc]) -> StoreResult<Vec<RankedMember>> {
        members
            .iter()
            .map(|m| {
                let user = UserId::from_stored(&m.user_id).map_err(|_| corrupt("userId"))?;
                Ok((user, m.role(&self.created_by)?, from_bson_time(m.joined_at)))
            })
            .collect()
    }
}

impl MessageDoc {
    /// The document of a stored message; `notify`: marked for its push decision.
    pub fn from_message(m: &Message, notify: bool) -> Self {
        Self {
            id: m.id.clone(),
            room_id: m.room.to_string(),
            seq: seq_to_i64(m.seq),
            sender: m.sender.to_string(),
            client_msg_id: m.client_msg_id.clone(),
            text: m.text.clone(),
            created_at: to_bson_time(m.created_at),
            kind: (!m.is_message()).then(|| m.kind.as_str().to_owned()),
            target: m.target.map(seq_to_i64),
            reply_to: m.reply_to.map(seq_to_i64),
            emoji: m.emoji.clone(),
            deleted: m.deleted,
            push_pending: notify.then_some(true),
            push_lease: notify.then(|| bson::DateTime::from_millis(0)),
        }
    }

    pub fn into_message(self) -> StoreResult<Message> {
        Ok(Message {
            room: RoomId::parse(&self.room_id).map_err(|_| corrupt("chatRoomId"))?,
            sender: UserId::from_stored(&self.sender).map_err(|_| corrupt("sender"))?,
            id: self.id,
            seq: seq_from_i64(self.seq),
            client_msg_id: self.client_msg_id,
            text: self.text,
            created_at: from_bson_time(self.created_at),
            kind: match &self.kind {
                None => EntryKind::Message,
                Some(kind) => EntryKind::parse(kind).ok_or_else(|| corrupt("kind"))?,
            },
            target: self.target.map(seq_from_i64),
            reply_to: self.reply_to.map(seq_from_i64),
            emoji: self.emoji,
            deleted: self.deleted,
        })
    }
}

impl MemberDoc {
    pub fn new(room: &RoomId, user: &UserId, role: Role, now: DateTime<Utc>) -> Self {
        Self {
            id: member_id(room, user),
            room_id: room.to_string(),
            user_id: user.to_string(),
            joined_at: to_bson_time(now),
            read_seq: 0,
            delivered_seq: Some(0),
            public_read_seq: Some(0),
            role: Some(role.as_str().to_owned()),
        }
    }

    /// The member's role. Documents from before roles have none: the group's creator
    /// (`created_by`) owns it, everybody else is a plain member.
    pub fn role(&self, created_by: &str) -> StoreResult<Role> {
        match &self.role {
            Some(role) => Role::parse(role).ok_or_else(|| corrupt("role")),
            None if self.user_id == created_by => Ok(Role::Owner),
            None => Ok(Role::Member),
        }
    }

    /// The positions, with the invariants restored for documents that predate some fields
    /// (`$max` on a missing field sets it to the report, which may lie below `readSeq`).
    pub fn positions(&self) -> Positions {
        let read = seq_from_i64(self.read_seq);
        Positions {
            delivered_seq: self.delivered_seq.map_or(read, seq_from_i64).max(read),
            read_seq: read,
            public_read_seq: self.public_read_seq.map_or(read, seq_from_i64).min(read),
        }
    }

    pub fn into_membership(self) -> StoreResult<Membership> {
        Ok(Membership {
            room: RoomId::parse(&self.room_id).map_err(|_| corrupt("roomId"))?,
            user: UserId::from_stored(&self.user_id).map_err(|_| corrupt("userId"))?,
            read_seq: seq_from_i64(self.read_seq),
            joined_at: from_bson_time(self.joined_at),
        })
    }
}
