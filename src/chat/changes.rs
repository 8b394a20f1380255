//! Writing to a room's log: messages (with replies) and the changes to them (edit, delete,
//! react), who may make each, and reading messages in their current state.
//!
//! Every write takes the one pipeline of `Chat::append_all` (store, then cache, then
//! bus), so changes get their own seq, idempotency by clientMsgId and the same delivery,
//! resume and gap filling as messages. The current state is the protocol crate's fold
//! (`chatd_protocol::state`), the same rules every client applies.

use std::collections::BTreeSet;

use chatd_protocol::state::{Fold, MessageState};

use super::{Chat, ChatError, ChatResult, parse_room, validate_client_msg_id};
use crate::{
    domain::{EntryKind, Message, RoomId, RoomKind, Seq, UserId},
    protocol::ErrorCode,
    store::{Appended, NewMessage},
};

/// The longest emoji accepted, in bytes (sequences with modifiers and joiners included).
pub const MAX_EMOJI_BYTES: usize = 32;
/// Different emojis one user may have standing on one message.
pub const MAX_REACTIONS_PER_USER: usize = 20;
/// Different emojis one message may carry: the state every reader gets stays small.
pub const MAX_EMOJIS_PER_MESSAGE: usize = 50;

/// One write as a client asked for it: where, under which clientMsgId, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending<'a> {
    pub room: &'a str,
    pub client_msg_id: &'a str,
    pub write: Write<'a>,
}

/// What a user asks to add to a room's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Write<'a> {
    Message {
        text: &'a str,
        reply_to: Option<Seq>,
    },
    Edit {
        seq: Seq,
        text: &'a str,
    },
    Delete {
        seq: Seq,
    },
    React {
        seq: Seq,
        emoji: &'a str,
        remove: bool,
    },
}

impl Write<'_> {
    fn kind(&self) -> EntryKind {
        match self {
            Write::Message { .. } => EntryKind::Message,
            Write::Edit { .. } => EntryKind::Edit,
            Write::Delete { .. } => EntryKind::Delete,
            Write::React { remove: false, .. } => EntryKind::React,
            Write::React { remove: true, .. } => EntryKind::Unreact,
        }
    }

    /// The message a change applies to, or a reply answers.
    fn names(&self) -> Option<Seq> {
        match *self {
            Write::Message { reply_to, .. } => reply_to,
            Write::Edit { seq, .. } | Write::Delete { seq } | Write::React { seq, .. } => Some(seq),
        }
    }
}

impl Chat {
    /// Adds `write` to the room's log if `user` may make it; returns the stored entry (the
    /// first one, for a retry with the same clientMsgId).
    pub async fn write(
        &self,
        user: &UserId,
        room: &str,
        client_msg_id: &str,
        write: Write<'_>,
    ) -> ChatResult<Appended> {
        let one = Pending {
            room,
            client_msg_id,
            write,
        };
        let mut answers = self.write_all(user, std::slice::from_ref(&one)).await;
        answers.pop().unwrap_or(Err(ChatError::RoomNotFound))
    }

    /// Several writes of one user, answered each as [`Chat::write`] would and in their
    /// order: stored together (one transaction in the embedded store), then announced one
    /// after the other. A change's target must be stored before the batch: its check reads
    /// the store.
    pub async fn write_all(
        &self,
        user: &UserId,
        writes: &[Pending<'_>],
    ) -> Vec<ChatResult<Appended>> {
        let mut answers = Vec::with_capacity(writes.len());
        let mut news = Vec::new();
        for pending in writes {
            match self.prepare(user, pending).await {
                Ok(new) => {
                    news.push(new);
                    answers.push(None);
                }
                Err(e) => answers.push(Some(Err(e))),
            }
        }
        let mut stored = self.append_all(news).await.into_iter();
        answers
            .into_iter()
            .map(|refused| {
                refused
                    .or_else(|| stored.next())
                    .unwrap_or(Err(ChatError::RoomNotFound))
            })
            .collect()
    }

    /// The entry to store for one write, once it is valid and allowed.
    async fn prepare(&self, user: &UserId, pending: &Pending<'_>) -> ChatResult<NewMessage> {
        let room = parse_room(pending.room)?;
        validate_client_msg_id(pending.client_msg_id)?;
        self.validate(&pending.write)?;
        self.require_member(&room, user).await?;
        self.authorize(user, &room, pending.client_msg_id, &pending.write)
            .await
    }

    fn validate(&self, write: &Write<'_>) -> ChatResult<()> {
        match write {
            Write::Message { text, .. } | Write::Edit { text, .. } => self.validate_text(text),
            Write::Delete { .. } => Ok(()),
            Write::React { emoji, .. } => validate_emoji(emoji),
        }
    }

    /// The entry to store, once `write` is allowed. A change's target is checked against the
    /// store, except for a retry (its first attempt stored it; the target may have changed
    /// since, e.g. a retried delete finds its message deleted), which the store answers.
    async fn authorize(
        &self,
        user: &UserId,
        room: &RoomId,
        client_msg_id: &str,
        write: &Write<'_>,
    ) -> ChatResult<NewMessage> {
        let mut new = NewMessage {
            kind: write.kind(),
            ..NewMessage::text(room.clone(), user.clone(), client_msg_id, "")
        };
        match *write {
            Write::Message { text, reply_to } => {
                new.text = text.to_owned();
                new.reply_to = reply_to;
            }
            Write::Edit { seq, text } => {
                new.text = text.to_owned();
                new.target = Some(seq);
            }
            Write::Delete { seq } => new.target = Some(seq),
            Write::React { seq, emoji, .. } => {
                new.target = Some(seq);
                new.emoji = Some(emoji.to_owned());
            }
        }
        let Some(named) = write.names() else {
            return Ok(new);
        };
        if self
            .store
            .entry_by_client_msg_id(room, user, client_msg_id)
            .await?
            .is_some()
        {
            return Ok(new);
        }
        let target = self.message_at(room, named).await?;
        // A delete of a deleted message is answered like the first (it changes nothing);
        // everything else needs the message standing.
        if target.deleted && !matches!(write, Write::Delete { .. }) {
            return Err(not_found(named));
        }
        match write {
            Write::Edit { .. } if target.sender != *user => Err(ChatError::Forbidden(
                "only its sender may edit a message".into(),
            )),
            Write::Edit { .. } => {
                let window = self.limits.edit_window_ms;
                let age = self.clock.now() - target.created_at;
                if age.num_milliseconds() > i64::try_from(window).unwrap_or(i64::MAX) {
                    return Err(ChatError::invalid(
                        ErrorCode::EditWindowClosed,
                        format!("a message can be edited for {window} ms after it was sent"),
                    ));
                }
                Ok(new)
            }
            Write::Delete { .. } if target.sender != *user => {
                let room = self
                    .store
                    .room(room)
                    .await?
                    .ok_or(ChatError::RoomNotFound)?;
                if room.kind == RoomKind::Group && room.role_of(user).moderates() {
                    return Ok(new);
                }
                Err(ChatError::Forbidden(
                    "only its sender, or a group's owners and admins, may delete a message".into(),
                ))
            }
            Write::React {
                emoji,
                remove: false,
                ..
            } => {
                self.require_reaction_room(target, user, emoji).await?;
                Ok(new)
            }
            _ => Ok(new),
        }
    }

    /// Refuses a reaction past [`MAX_REACTIONS_PER_USER`] or [`MAX_EMOJIS_PER_MESSAGE`]
    /// (reacting again with one already standing always passes). Concurrent reactions may
    /// overshoot by the number racing.
    async fn require_reaction_room(
        &self,
        target: Message,
        user: &UserId,
        emoji: &str,
    ) -> ChatResult<()> {
        let room = target.room.clone();
        let state = self.current(&room, vec![target], user).await?.pop();
        let reactions = state.map(|s| s.reactions).unwrap_or_default();
        if reactions.iter().any(|r| r.emoji == emoji && r.me) {
            return Ok(());
        }
        let mine = reactions.iter().filter(|r| r.me).count();
        let new_emoji = !reactions.iter().any(|r| r.emoji == emoji);
        if mine < MAX_REACTIONS_PER_USER && (!new_emoji || reactions.len() < MAX_EMOJIS_PER_MESSAGE)
        {
            return Ok(());
        }
        Err(ChatError::bad_field(format!(
            "a message carries at most {MAX_EMOJIS_PER_MESSAGE} different emojis, at most \
             {MAX_REACTIONS_PER_USER} of them from one user"
        )))
    }

    /// The message at `seq` (deleted or not), if that seq is a message, not a change.
    async fn message_at(&self, room: &RoomId, seq: Seq) -> ChatResult<Message> {
        let found = self.store.entries(room, &[seq]).await?.pop();
        match found {
            Some(m) if m.is_message() && m.seq == seq => Ok(m),
            _ => Err(not_found(seq)),
        }
    }

    /// `messages` (message entries of `room`) in their current state as `viewer` sees them,
    /// in the order given: one read for the changes to them and the messages they answer,
    /// one for the answered messages outside the page.
    pub(super) async fn current(
        &self,
        room: &RoomId,
        messages: Vec<Message>,
        viewer: &UserId,
    ) -> ChatResult<Vec<MessageState>> {
        let held: BTreeSet<Seq> = messages.iter().map(|m| m.seq).collect();
        let answered: BTreeSet<Seq> = messages
            .iter()
            .filter_map(|m| m.reply_to)
            .filter(|seq| !held.contains(seq))
            .collect();
        let targets: Vec<Seq> = held.iter().chain(&answered).copied().collect();
        let answered: Vec<Seq> = answered.into_iter().collect();
        let (mut related, answered) = tokio::try_join!(
            self.store.changes(room, &targets),
            self.store.entries(room, &answered)
        )?;
        related.extend(answered);
        Ok(fold_states(&messages, &related, viewer))
    }
}

/// `messages` in their current state as `viewer` sees them, given `related`: their changes
/// and the messages they answer (with those messages' changes).
pub(super) fn fold_states(
    messages: &[Message],
    related: &[Message],
    viewer: &UserId,
) -> Vec<MessageState> {
    let mut fold = Fold::new();
    for entry in messages.iter().chain(related) {
        fold.apply(entry);
    }
    messages
        .iter()
        .filter_map(|m| fold.state(m.seq, viewer))
        .collect()
}

fn not_found(seq: Seq) -> ChatError {
    ChatError::invalid(
        ErrorCode::MessageNotFound,
        format!("seq {seq} is no message of this room, or a deleted one"),
    )
}

/// An emoji: a short string without whitespace or control characters (which emoji is not
/// checked: new ones appear every year).
fn validate_emoji(emoji: &str) -> ChatResult<()> {
    let ok = !emoji.is_empty()
        && emoji.len() <= MAX_EMOJI_BYTES
        && !emoji.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        return Ok(());
    }
    Err(ChatError::bad_field(format!(
        "emoji must be 1 to {MAX_EMOJI_BYTES} bytes without whitespace or control characters"
    )))
}
