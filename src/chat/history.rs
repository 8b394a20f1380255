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
        // Two store reads whatever the number of rooms named (and never the user's whole
        // membership list): which are the user's, then every replay at once. One read of
        // the store beats a cache read and a last-seq read per room.
        let mut resumption = Resumption::default();
        let named: Vec<RoomId> = rooms
            .keys()
            .filter_map(|name| RoomId::parse(name).ok())
            .collect();
        let theirs: std::collections::HashSet<RoomId> = self
            .store
            .memberships_among(user, &named)
            .await?
            .into_iter()
            .map(|m| m.room)
            .collect();
        let mut from = Vec::with_capacity(theirs.len());
        for (name, &after) in rooms {
            match RoomId::parse(name) {
                Ok(room) if theirs.contains(&room) => from.push((room, after)),
                _ => resumption.unknown.push(name.clone()),
            }
        }
        let limit = self.limits.resume_max_per_room;
        let histories = self.store.histories_after(&from, limit + 1).await?;
        for ((room, _), mut messages) in from.into_iter().zip(histories) {
            let more = messages.len() > limit;
            messages.truncate(limit);
            metrics::histogram!("chatd_resume_replayed_messages").record(messages.len() as f64);
            resumption.replays.push(Replay {
                room,
                messages,
                more,
            });
        }
        Ok(resumption)
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
            && let Some(messages) = self.cached_latest(room, query.limit).await?
        {
            return Ok(messages);
        }
        Ok(self.store.history(room, query).await?)
    }

    /// The newest `limit` entries from the recent cache, if it can prove that is what the
    /// store holds: contiguous (checked by the cache) and reaching the store's last seq. The
    /// last check matters: a node that died between storing a message and caching it leaves
    /// the store ahead of the cache.
    async fn cached_latest(&self, room: &RoomId, limit: usize) -> ChatResult<Option<Vec<Message>>> {
        let Some(recent) = &self.recent else {
            return Ok(None);
        };
        let (found, last_seq) = tokio::join!(recent.latest(room, limit), self.store.last_seq(room));
        let (Some(found), last_seq) = (found, last_seq?) else {
            return Ok(None);
        };
        let complete = found.first().map_or(0, |m| m.seq) == last_seq;
        metrics::counter!("chatd_recent_cache_reads_total", "hit" => complete.to_string())
            .increment(1);
        Ok(complete.then_some(found))
    }
}
