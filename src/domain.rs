//! The nouns of chatd. The wire types (ids, messages, rooms) are the protocol crate's; what
//! only the server keeps (memberships) is here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use chatd_protocol::model::*;

/// One user's place in one room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    pub room: RoomId,
    pub user: UserId,
    /// Highest seq this user has read (0: none).
    pub read_seq: Seq,
    #[serde(with = "timestamp")]
    pub joined_at: DateTime<Utc>,
}
