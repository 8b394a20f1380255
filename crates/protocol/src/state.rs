//! The current state of a room's messages: the log's entries folded by seq.
//!
//! Every device must end with the same state whatever order entries reach it in (live, then
//! a resume, then an older history page), so the fold is order-independent: an edit applies
//! only over a lower-seq edit, a delete is absorbing (so is an entry the store marked
//! `deleted`: its delete may not be held), and for each (user, emoji) the reaction entry
//! with the highest seq decides. A change whose message is not held yet waits for it. The server folds for `GET …/messages?view=state`; the Rust client and the JS SDK
//! fold the same way (docs/protocol-rules.json carries a sample the SDK's tests replay).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{EntryKind, Message, Seq, UserId, timestamp};

/// Characters of the answered message a reply preview shows.
pub const REPLY_PREVIEW_CHARS: usize = 140;

/// A message as it stands after every change to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MessageState {
    /// The message entry, with the current text (`""` and `deleted` for a tombstone).
    #[serde(flatten)]
    pub message: Message,
    /// When the text shown was written by an edit.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "timestamp::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub edited_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "timestamp::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub deleted_at: Option<DateTime<Utc>>,
    /// Per emoji, in the order of its earliest standing reaction.
    #[serde(default)]
    pub reactions: Vec<ReactionCount>,
    /// The answered message, when this is a reply and that message is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyPreview>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReactionCount {
    pub emoji: String,
    pub count: u64,
    /// Whether the reader is one of them.
    pub me: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplyPreview {
    pub seq: Seq,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub sender: UserId,
    /// The answered message's current text, cut to [`REPLY_PREVIEW_CHARS`] characters.
    pub text: String,
    pub deleted: bool,
}

/// One message while folding: its entry and the winning change of each kind.
#[derive(Debug, Clone)]
struct Folding {
    message: Message,
    /// (seq, text, createdAt) of the highest-seq edit.
    edit: Option<(Seq, String, DateTime<Utc>)>,
    /// (seq, createdAt) of the first delete.
    deleted: Option<(Seq, DateTime<Utc>)>,
    /// The store removed the text (the message or one of its edits says `deleted`).
    erased: bool,
    /// (user, emoji) -> seq -> on (react) or off (unreact): every entry, so that the start
    /// of the current run of reacts (the emoji's place in the order) is known in any order.
    reactions: HashMap<(UserId, String), BTreeMap<Seq, bool>>,
}

impl Folding {
    fn new(message: Message) -> Self {
        Self {
            erased: message.deleted,
            message,
            edit: None,
            deleted: None,
            reactions: HashMap::new(),
        }
    }

    fn apply(&mut self, change: &Message) {
        self.erased |= change.deleted;
        match change.kind {
            EntryKind::Message => {}
            EntryKind::Edit => {
                if self.edit.as_ref().is_none_or(|(seq, ..)| *seq < change.seq) {
                    self.edit = Some((change.seq, change.text.clone(), change.created_at));
                }
            }
            EntryKind::Delete => {
                if self.deleted.is_none_or(|(seq, _)| change.seq < seq) {
                    self.deleted = Some((change.seq, change.created_at));
                }
            }
            EntryKind::React | EntryKind::Unreact => {
                let Some(emoji) = &change.emoji else { return };
                self.reactions
                    .entry((change.sender.clone(), emoji.clone()))
                    .or_default()
                    .insert(change.seq, change.kind == EntryKind::React);
            }
        }
    }

    /// The message and its current text, without the reply preview.
    fn current(&self, viewer: &UserId) -> MessageState {
        let mut message = self.message.clone();
        if self.deleted.is_some() || self.erased {
            message.text.clear();
            message.deleted = true;
            return MessageState {
                message,
                edited_at: None,
                deleted_at: self.deleted.map(|(_, at)| at),
                reactions: Vec::new(),
                reply: None,
            };
        }
        let mut edited_at = None;
        if let Some((_, text, at)) = &self.edit {
            message.text.clone_from(text);
            edited_at = Some(*at);
        }
        // Per emoji: the seq of its earliest standing reaction, how many, and the viewer's.
        let mut by_emoji: BTreeMap<&str, (Seq, u64, bool)> = BTreeMap::new();
        for ((user, emoji), entries) in &self.reactions {
            if let Some(since) = standing_since(entries) {
                let entry = by_emoji.entry(emoji).or_insert((since, 0, false));
                entry.0 = entry.0.min(since);
                entry.1 += 1;
                entry.2 |= user == viewer;
            }
        }
        let mut reactions: Vec<(Seq, ReactionCount)> = by_emoji
            .into_iter()
            .map(|(emoji, (first, count, me))| {
                let emoji = emoji.to_owned();
                (first, ReactionCount { emoji, count, me })
            })
            .collect();
        reactions.sort_by_key(|(first, _)| *first);
        MessageState {
            message,
            edited_at,
            deleted_at: None,
            reactions: reactions.into_iter().map(|(_, r)| r).collect(),
            reply: None,
        }
    }
}

/// Where the current run of reacts began, if the last entry is a react (reacting again
/// while on changes nothing, the place in the order included).
fn standing_since(entries: &BTreeMap<Seq, bool>) -> Option<Seq> {
    let mut since = None;
    for (&seq, &on) in entries.iter().rev() {
        if !on {
            break;
        }
        since = Some(seq);
    }
    since
}

/// Messages and the changes to them, from entries in any order.
#[derive(Debug, Clone, Default)]
pub struct Fold {
    messages: BTreeMap<Seq, Folding>,
    /// Changes whose message is not held yet, by its seq.
    waiting: BTreeMap<Seq, Vec<Message>>,
}

impl Fold {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in one entry (a repeat changes nothing).
    pub fn apply(&mut self, entry: &Message) {
        if entry.is_message() {
            if let Some(held) = self.messages.get_mut(&entry.seq) {
                // A later copy may say what an earlier one could not: the text was removed.
                held.erased |= entry.deleted;
                return;
            }
            let mut folding = Folding::new(entry.clone());
            for change in self.waiting.remove(&entry.seq).unwrap_or_default() {
                folding.apply(&change);
            }
            self.messages.insert(entry.seq, folding);
            return;
        }
        let Some(target) = entry.target else { return };
        match self.messages.get_mut(&target) {
            Some(folding) => folding.apply(entry),
            None => self.waiting.entry(target).or_default().push(entry.clone()),
        }
    }

    /// The message at `seq` as `viewer` sees it, with its reply preview when the answered
    /// message is held.
    pub fn state(&self, seq: Seq, viewer: &UserId) -> Option<MessageState> {
        let mut state = self.messages.get(&seq)?.current(viewer);
        if let Some(answered) = state.message.reply_to {
            state.reply = self.messages.get(&answered).map(|f| {
                let answered = f.current(viewer).message;
                ReplyPreview {
                    seq: answered.seq,
                    sender: answered.sender,
                    text: answered.text.chars().take(REPLY_PREVIEW_CHARS).collect(),
                    deleted: answered.deleted,
                }
            });
        }
        Some(state)
    }

    /// Every message held, in seq order.
    pub fn states(&self, viewer: &UserId) -> Vec<MessageState> {
        self.seqs()
            .filter_map(|seq| self.state(seq, viewer))
            .collect()
    }

    /// The seqs of the messages held, ascending.
    pub fn seqs(&self) -> impl Iterator<Item = Seq> + '_ {
        self.messages.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timestamp::from_millis;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn entry(seq: Seq, sender: &str, kind: EntryKind, target: Option<Seq>) -> Message {
        Message {
            seq,
            sender: user(sender),
            kind,
            target,
            created_at: from_millis(1_790_000_000_000 + seq as i64),
            ..Message::example(seq)
        }
    }

    fn text(seq: Seq, sender: &str, text: &str) -> Message {
        Message {
            text: text.into(),
            ..entry(seq, sender, EntryKind::Message, None)
        }
    }

    fn edit(seq: Seq, target: Seq, text: &str) -> Message {
        Message {
            text: text.into(),
            ..entry(seq, "a", EntryKind::Edit, Some(target))
        }
    }

    fn react(seq: Seq, sender: &str, target: Seq, emoji: &str, on: bool) -> Message {
        let kind = if on {
            EntryKind::React
        } else {
            EntryKind::Unreact
        };
        Message {
            emoji: Some(emoji.into()),
            ..entry(seq, sender, kind, Some(target))
        }
    }

    /// The fold of `entries` in the given order and in reverse: both must agree.
    fn folded(entries: &[Message], viewer: &str) -> Vec<MessageState> {
        let (mut forward, mut backward) = (Fold::new(), Fold::new());
        entries.iter().for_each(|e| forward.apply(e));
        entries.iter().rev().for_each(|e| backward.apply(e));
        let states = forward.states(&user(viewer));
        assert_eq!(
            states,
            backward.states(&user(viewer)),
            "order changed the state"
        );
        states
    }

    #[test]
    fn the_highest_seq_edit_wins_in_any_order() {
        let states = folded(
            &[text(1, "a", "one"), edit(3, 1, "three"), edit(2, 1, "two")],
            "b",
        );
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].message.text, "three");
        assert_eq!(states[0].edited_at, Some(from_millis(1_790_000_000_003)));
    }

    #[test]
    fn a_delete_is_absorbing() {
        let delete = entry(3, "a", EntryKind::Delete, Some(1));
        let states = folded(
            &[
                text(1, "a", "one"),
                edit(2, 1, "two"),
                delete,
                edit(4, 1, "four"),
                react(5, "b", 1, "👍", true),
            ],
            "b",
        );
        assert!(states[0].message.deleted);
        assert_eq!(states[0].message.text, "");
        assert_eq!(states[0].deleted_at, Some(from_millis(1_790_000_000_003)));
        assert!(states[0].reactions.is_empty() && states[0].edited_at.is_none());
    }

    #[test]
    fn per_user_and_emoji_the_last_reaction_entry_decides() {
        let states = folded(
            &[
                text(1, "a", "one"),
                react(2, "b", 1, "👍", true),
                react(3, "b", 1, "👍", true),
                react(4, "c", 1, "❤️", true),
                react(5, "a", 1, "👍", true),
                react(6, "c", 1, "❤️", false),
                react(7, "c", 1, "🎉", true),
            ],
            "b",
        );
        let counts: Vec<_> = states[0]
            .reactions
            .iter()
            .map(|r| (r.emoji.as_str(), r.count, r.me))
            .collect();
        assert_eq!(counts, [("👍", 2, true), ("🎉", 1, false)]);
    }

    #[test]
    fn reacting_again_keeps_an_emojis_place() {
        let states = folded(
            &[
                text(1, "a", "one"),
                react(2, "b", 1, "👍", true),
                react(3, "c", 1, "❤️", true),
                react(4, "b", 1, "👍", true),
            ],
            "a",
        );
        let order: Vec<_> = states[0]
            .reactions
            .iter()
            .map(|r| r.emoji.as_str())
            .collect();
        assert_eq!(order, ["👍", "❤️"]);
        // Taken back and given again, it goes to the end.
        let states = folded(
            &[
                text(1, "a", "one"),
                react(2, "b", 1, "👍", true),
                react(3, "c", 1, "❤️", true),
                react(4, "b", 1, "👍", false),
                react(5, "b", 1, "👍", true),
            ],
            "a",
        );
        let order: Vec<_> = states[0]
            .reactions
            .iter()
            .map(|r| r.emoji.as_str())
            .collect();
        assert_eq!(order, ["❤️", "👍"]);
    }

    #[test]
    fn text_the_store_removed_is_a_tombstone_without_its_delete() {
        let erased = Message {
            deleted: true,
            ..text(1, "a", "")
        };
        let states = folded(&[erased.clone(), react(2, "b", 1, "👍", true)], "b");
        assert!(states[0].message.deleted && states[0].reactions.is_empty());
        assert_eq!(states[0].deleted_at, None);
        // A copy read before the delete, then the erased one: deleted whichever came first.
        let states = folded(&[text(1, "a", "secret"), erased], "b");
        assert!(states[0].message.deleted && states[0].message.text.is_empty());
        let erased_edit = Message {
            deleted: true,
            ..edit(2, 1, "")
        };
        let states = folded(&[text(1, "a", "secret"), erased_edit], "b");
        assert!(states[0].message.deleted);
    }

    #[test]
    fn a_reply_previews_the_answered_message_as_it_stands() {
        let long = "x".repeat(200);
        let reply = Message {
            reply_to: Some(1),
            ..text(2, "b", "yes")
        };
        let states = folded(&[text(1, "a", "one"), reply, edit(3, 1, &long)], "b");
        let preview = states[1].reply.clone().unwrap();
        assert_eq!((preview.seq, preview.deleted), (1, false));
        assert_eq!(preview.text.chars().count(), REPLY_PREVIEW_CHARS);
    }
}
