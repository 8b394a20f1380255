//! What a notification says, and how each sender spells it (docs/protocol.md, "Web Push"
//! and "Push gateway").

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::domain::{RoomId, Seq, UserId};

/// One notification: new messages of a room, or a badge update.
#[derive(Debug, Clone)]
pub enum Notice {
    Messages {
        room: RoomId,
        /// The group's name, or the sender for a direct room; none without text.
        room_name: Option<String>,
        /// The newest message covered.
        seq: Seq,
        message_id: String,
        sender: UserId,
        /// Everyone whose messages it covers, in the order they wrote.
        senders: Vec<UserId>,
        /// Its current text (cut), unless notifications carry ids only.
        text: Option<String>,
        count: usize,
        unread: u64,
    },
    Badge {
        room: RoomId,
        unread: u64,
    },
}

impl Notice {
    pub fn room(&self) -> &RoomId {
        match self {
            Notice::Messages { room, .. } | Notice::Badge { room, .. } => room,
        }
    }

    /// The decrypted Web Push payload; `id` is the job's, the same on every resend.
    pub fn webpush_payload(&self, id: &str) -> Vec<u8> {
        let value = match self {
            Notice::Messages {
                room,
                room_name,
                seq,
                message_id,
                sender,
                senders,
                text,
                count,
                unread,
            } => {
                let mut v = json!({
                    "type": "message", "id": id, "room": room, "seq": seq,
                    "messageId": message_id, "sender": sender, "senders": senders,
                    "count": count, "unread": unread,
                });
                if let Some(name) = room_name {
                    v["roomName"] = Value::from(name.as_str());
                }
                if let Some(text) = text {
                    v["text"] = Value::from(text.as_str());
                }
                v
            }
            Notice::Badge { room, unread } => {
                json!({"type": "badge", "id": id, "room": room, "unread": unread})
            }
        };
        serde_json::to_vec(&value).expect("JSON values serialize")
    }

    /// The gateway API's `notification` object, without `devices`.
    pub fn gateway_notification(&self) -> Map<String, Value> {
        let value = match self {
            Notice::Messages {
                room,
                room_name,
                seq,
                message_id,
                sender,
                senders,
                text,
                count,
                unread,
            } => {
                let mut v = json!({
                    "event_id": message_id, "room_id": room, "type": "m.room.message",
                    "sender": sender, "prio": "high",
                    "counts": {"unread": unread},
                    "chatd": {"type": "message", "seq": seq, "count": count, "senders": senders},
                });
                if let Some(name) = room_name {
                    v["room_name"] = Value::from(name.as_str());
                }
                if let Some(text) = text {
                    v["content"] = json!({"msgtype": "m.text", "body": text});
                }
                v
            }
            Notice::Badge { room, unread } => json!({
                "room_id": room, "prio": "low", "counts": {"unread": unread},
                "chatd": {"type": "badge"},
            }),
        };
        match value {
            Value::Object(map) => map,
            _ => unreachable!("built as an object"),
        }
    }
}

/// The RFC 8030 `Topic` of a user's notifications of a room: at most 32 characters of the
/// URL-safe alphabet, and the same every time, so a push service replaces an undelivered one.
pub fn topic(user: &UserId, room: &RoomId) -> String {
    let digest = Sha256::digest(format!("{user}\n{room}").as_bytes());
    hex::encode(&digest[..16])
}

/// `text` cut to `max` characters, with "…" when it was longer.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        assert_eq!(cut("héllo", 10), "héllo");
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(cut("", 2), "");
    }

    #[test]
    fn a_topic_is_short_url_safe_and_stable() {
        let user = UserId::parse("alice").unwrap();
        let room = RoomId::parse("0190f7b0-0000-7000-8000-000000000000").unwrap();
        let t = topic(&user, &room);
        assert_eq!(t.len(), 32);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(t, topic(&user, &room));
    }
}
