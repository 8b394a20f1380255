//! The nouns of the protocol: users, rooms, messages, and the rules their ids obey.
//!
//! Plain data, shared by the server (store, bus, REST, WebSocket) and every client.
//! Timestamps are kept at millisecond precision everywhere (MongoDB dates are milliseconds),
//! so a message reads back from any store exactly as it was written.

use std::{collections::BTreeMap, fmt, sync::Arc};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Position of a message in its room: 1, 2, 3, ... with no gaps and no repeats.
pub type Seq = u64;

/// The largest seq there can be: stores keep seqs as signed 64-bit integers. Larger ones
/// from a client are refused (`bad_field`), never wrapped.
pub const MAX_SEQ: Seq = i64::MAX as Seq;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub String);

/// A user id: the `sub` claim of a verified token. chatd keeps no user table; ids are kept to
/// a safe alphabet so they can appear in URLs, Redis channel names and logs without escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[A-Za-z0-9_.@-]{1,64}$", example = "alice"))]
pub struct UserId(Arc<str>);

impl UserId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        // "." and ".." would be path segments in URLs (/members/..), not names.
        if s == "." || s == ".." {
            return Err(Self::invalid());
        }
        Self::from_stored(s)
    }

    /// An id read back from a store: as [`parse`](Self::parse), but `.` and `..` (accepted
    /// before they were refused) still read, so rooms that hold them keep working and they
    /// can be removed.
    pub fn from_stored(s: &str) -> Result<Self, InvalidId> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@');
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.chars().all(ok_char) {
            return Err(Self::invalid());
        }
        Ok(Self(Arc::from(s)))
    }

    fn invalid() -> InvalidId {
        InvalidId(format!(
            "user id must be 1 to {} characters of A-Z a-z 0-9 _ - . @, not . or ..",
            Self::MAX_LEN
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        UserId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

/// A room id: a UUID in its canonical lowercase hyphenated form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "6f1c2a4e-2b7d-4d3f-9a1e-0c5b7e9d2f10"))]
pub struct RoomId(Arc<str>);

/// Direct rooms get a name-based UUID (v5) of the sorted pair, so "get or create" is the same
/// room whoever asks and however often, on every node, with no lookup table.
const DIRECT_ROOM_NAMESPACE: Uuid = Uuid::from_u128(0x5c1e_7a3b_90d4_4c1f_8e2a_6b7d_3f10_c0de);

impl RoomId {
    pub fn new_group() -> Self {
        Self::from_uuid(Uuid::new_v4())
    }

    /// The one room shared by `a` and `b`, whichever order they come in.
    pub fn direct(a: &UserId, b: &UserId) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        // NUL cannot occur in a user id, so the pair encoding is unambiguous.
        let name = format!("{}\0{}", lo.as_str(), hi.as_str());
        Self::from_uuid(Uuid::new_v5(&DIRECT_ROOM_NAMESPACE, name.as_bytes()))
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        Uuid::try_parse(s)
            .map(Self::from_uuid)
            .map_err(|_| InvalidId("room id must be a UUID".into()))
    }

    fn from_uuid(u: Uuid) -> Self {
        Self(Arc::from(u.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RoomId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RoomId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomId({})", self.0)
    }
}

/// What an entry of a room's log is: a message, or a change to the message at `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    #[default]
    Message,
    Edit,
    Delete,
    React,
    Unreact,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Message => "message",
            EntryKind::Edit => "edit",
            EntryKind::Delete => "delete",
            EntryKind::React => "react",
            EntryKind::Unreact => "unreact",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            EntryKind::Message,
            EntryKind::Edit,
            EntryKind::Delete,
            EntryKind::React,
            EntryKind::Unreact,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One entry of a room's log, as stored: a message, or a change to one (see [`EntryKind`]).
/// Once written it never changes, except that a delete removes the text of the message and
/// of its edits (`deleted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub room: RoomId,
    pub seq: Seq,
    pub sender: UserId,
    pub client_msg_id: String,
    /// Absent in entries from before changes existed: a message.
    #[serde(default)]
    pub kind: EntryKind,
    pub text: String,
    /// The message a change applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Seq>,
    /// The message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Seq>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    /// The text was removed because the message was deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
}

impl Message {
    /// Message `seq` of the direct room of "a" and "b", sent by "a": the one builder tests
    /// and examples share.
    pub fn example(seq: Seq) -> Self {
        let (a, b) = (UserId(Arc::from("a")), UserId(Arc::from("b")));
        Self {
            id: format!("m{seq}"),
            room: RoomId::direct(&a, &b),
            seq,
            sender: a,
            client_msg_id: format!("c{seq}"),
            kind: EntryKind::Message,
            text: String::new(),
            target: None,
            reply_to: None,
            emoji: None,
            deleted: false,
            created_at: timestamp::from_millis(1_790_000_000_000),
        }
    }

    /// Whether this entry is a message (not a change to one).
    pub fn is_message(&self) -> bool {
        self.kind == EntryKind::Message
    }
}

/// A member's role in a group. Direct rooms have no roles.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    #[default]
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Role::Owner, Role::Admin, Role::Member]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// Owners and admins moderate: add and remove members, delete others' messages.
    pub fn moderates(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    Direct,
    Group,
}

impl RoomKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Direct => "direct",
            RoomKind::Group => "group",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(RoomKind::Direct),
            "group" => Some(RoomKind::Group),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Room {
    pub id: RoomId,
    pub kind: RoomKind,
    /// Groups have a name; direct rooms do not.
    pub name: Option<String>,
    /// Sorted by user id.
    pub members: Vec<UserId>,
    /// Owners and admins of a group (members not listed are plain members); empty for
    /// direct rooms.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, Role>))]
    pub roles: BTreeMap<UserId, Role>,
    pub created_by: UserId,
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
}

impl Room {
    /// The direct room of `a` and `b` as it is first stored (`a` asked for it).
    pub fn new_direct(a: &UserId, b: &UserId, now: DateTime<Utc>) -> Self {
        let mut members = vec![a.clone(), b.clone()];
        members.sort();
        Self {
            id: RoomId::direct(a, b),
            kind: RoomKind::Direct,
            name: None,
            members,
            roles: BTreeMap::new(),
            created_by: a.clone(),
            created_at: now,
        }
    }

    /// `user`'s role here (direct rooms: everybody is a plain member).
    pub fn role_of(&self, user: &UserId) -> Role {
        self.roles.get(user).copied().unwrap_or_default()
    }
}

/// A room as listed for one user: the room, its newest message and the user's unread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RoomSummary {
    #[serde(flatten)]
    pub room: Room,
    /// The newest message that is not deleted, in its current state.
    pub last_message: Option<crate::state::MessageState>,
    pub last_seq: Seq,
    pub read_seq: Seq,
    /// Messages after `readSeq` sent by others.
    pub unread: u64,
}

/// Timestamps on the wire: RFC 3339 in UTC with milliseconds, e.g. `2026-11-21T21:22:15.123Z`.
/// What others see of a user: `online` (active on some connection), `away` (connected, none
/// active lately) or `offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    Online,
    Away,
    #[default]
    Offline,
}

/// One user's presence as a contact sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub user: UserId,
    pub state: PresenceState,
    /// When an offline user's last connection ended (absent if hidden or never seen).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "timestamp::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
    /// Increases with every change of this user's presence: apply only newer ones.
    pub v: u64,
}

pub mod timestamp {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    /// For optional timestamps (absent or RFC 3339).
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] DateTime<Utc>);
            Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(t)| t))
        }
    }

    /// Milliseconds since the epoch <-> DateTime, as the stores keep them.
    pub fn from_millis(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_room_id_is_symmetric_and_distinct() {
        let a = UserId::parse("alice").unwrap();
        let b = UserId::parse("bob").unwrap();
        let c = UserId::parse("carol").unwrap();
        assert_eq!(RoomId::direct(&a, &b), RoomId::direct(&b, &a));
        assert_ne!(RoomId::direct(&a, &b), RoomId::direct(&a, &c));
        assert!(RoomId::parse(RoomId::direct(&a, &b).as_str()).is_ok());
    }

    #[test]
    fn user_ids_are_restricted() {
        assert!(UserId::parse("alice.smith@example-1_x").is_ok());
        for bad in ["", "a b", "a/b", "a\0b", "é", ".", "..", &"x".repeat(65)] {
            assert!(UserId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        let t = timestamp::from_millis(1_790_000_000_123);
        let s = timestamp::format(&t);
        assert_eq!(s, "2026-09-21T14:13:20.123Z");
        let m = Message {
            id: "x".into(),
            room: RoomId::new_group(),
            seq: 1,
            sender: UserId::parse("a").unwrap(),
            text: "hi".into(),
            created_at: t,
            ..Message::example(1)
        };
        let back: Message = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
