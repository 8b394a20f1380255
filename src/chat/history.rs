//! Reading a room: history pages, the replay of a resume, and the recent cache's part in
//! both (it answers only what it can prove the store holds).

use std::collections::BTreeMap;

use chatd_protocol::state::MessageState;

use super::{Chat, ChatError, ChatResult, HistoryPage, MAX_PAGE, Replay, Resumption, parse_room};
use crate::{
    domain::{Message, RoomId, Seq, UserId},
    store::{Entries, HistoryQuery},
};

impl Chat {
    /// For a reconnecting client: per named room, the messages after its seq (up to the
    /// configured replay limit).
    pub async fn resume(
        &self,
        user: &UserId,
        rooms: &BTreeMap<String, Seq>,
    ) -> ChatResult<Resumption> {
        // Reads in proportion to the rooms named (never the user's whole membership list).
        let mut resumption = Resumption::default();
        for (name, &after) in rooms {
            let room = match RoomId::parse(name) {
                Ok(room) if self.store.membership(&room, user).await?.is_some() => room,
                _ => {
                    resumption.unknown.push(name.clone());
                    continue;
                }
            };
            resumption.replays.push(self.replay(room, after).await?);
        }
        Ok(resumption)
    }

    async fn replay(&self, room: RoomId, after: Seq) -> ChatResult<Replay> {
        let limit = self.limits.resume_max_per_room;
        let mut messages = match self
            .cached(&room, &HistoryQuery::after(after, limit + 1))
            .await?
        {
            Some(messages) => messages,
            None => {
                self.store
                    .history(&room, &HistoryQuery::after(after, limit + 1))
                    .await?
            }
        };
        let more = messages.len() > limit;
        messages.truncate(limit);
        metrics::histogram!("chatd_resume_replayed_messages").record(messages.len() as f64);
        Ok(Replay {
            room,
            messages,
            more,
        })
    }

    pub async fn history(
        &self,
        user: &UserId,
        room: &str,
        mut query: HistoryQuery,
    ) -> ChatResult<HistoryPage> {
        let room = parse_room(room)?;
        if query.limit == 0 || query.limit > MAX_PAGE {
            return Err(ChatError::bad_field(format!(
                "limit must be 1 to {MAX_PAGE}"
            )));
        }
        self.require_member(&room, user).await?;
        let limit = query.limit;
        query.limit += 1;
        let mut messages = self.read(&room, &query).await?;
        let more = messages.len() > limit;
        messages.truncate(limit);
        Ok(HistoryPage { messages, more })
    }

    /// A page of the room's messages (not the changes) in their current state, as `user`
    /// sees them (`view=state`).
    pub async fn history_state(
        &self,
        user: &UserId,
        room: &str,
        mut query: HistoryQuery,
    ) -> ChatResult<HistoryPage<MessageState>> {
        query.entries = Entries::Messages;
        let page = self.history(user, room, query).await?;
        let room = parse_room(room)?;
        Ok(HistoryPage {
            messages: self.current(&room, page.messages, user).await?,
            more: page.more,
        })
    }

    /// A history read: the newest page comes from the recent cache when it can vouch for it.
    pub(super) async fn read(
        &self,
        room: &RoomId,
        query: &HistoryQuery,
    ) -> ChatResult<Vec<Message>> {
        if *query == HistoryQuery::latest(query.limit)
            && let Some(messages) = self.cached(room, query).await?
        {
            return Ok(messages);
        }
        Ok(self.store.history(room, query).await?)
    }

    /// What the recent cache holds for `query` (the newest page, or everything after a seq),
    /// if it can prove that is what the store holds: contiguous (checked by the cache) and
    /// reaching the store's last seq. The last check matters: a node that died between
    /// storing a message and caching it leaves the store ahead of the cache.
    async fn cached(
        &self,
        room: &RoomId,
        query: &HistoryQuery,
    ) -> ChatResult<Option<Vec<Message>>> {
        let Some(recent) = &self.recent else {
            return Ok(None);
        };
        let (found, last_seq) = match query.after {
            Some(after) => tokio::join!(
                recent.after(room, after, query.limit),
                self.store.last_seq(room)
            ),
            None => tokio::join!(recent.latest(room, query.limit), self.store.last_seq(room)),
        };
        let (Some(found), last_seq) = (found, last_seq?) else {
            return Ok(None);
        };
        let newest = match query.after {
            Some(after) => found.last().map_or(after, |m| m.seq),
            None => found.first().map_or(0, |m| m.seq),
        };
        // A page that is full may legitimately stop short of the last seq.
        let complete = newest == last_seq || (query.after.is_some() && found.len() == query.limit);
        metrics::counter!("chatd_recent_cache_reads_total", "hit" => complete.to_string())
            .increment(1);
        Ok(complete.then_some(found))
    }
}
