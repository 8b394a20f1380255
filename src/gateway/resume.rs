//! `resume`: replay what the client missed in each room it names, then release live
//! traffic above it (the writer drops anything the replay covered; see `gateway::order`).

use super::connection::{REPLY_PATIENCE, Session};
use crate::{
    hub::{LiveMessage, Outbound},
    protocol::{ErrorCode, ErrorFrame, ResumeFrame, ResumedRoom, ServerFrame},
};

impl Session {
    /// Replays each named room after the client's seq, then releases live traffic above it.
    /// Rooms that are not the user's are named in one `error` frame.
    pub(super) async fn resume(&mut self, resume: ResumeFrame) {
        self.resumed = true;
        self.conn.send(Outbound::HoldLive, REPLY_PATIENCE).await;
        let resumption = match self.node.chat.resume(&self.user, &resume.rooms).await {
            Ok(resumption) => resumption,
            Err(e) => {
                self.reply_chat_error(&e, None, None).await;
                self.conn.send(Outbound::ReleaseLive, REPLY_PATIENCE).await;
                return;
            }
        };
        if !resumption.unknown.is_empty() {
            self.reply(ServerFrame::Error(ErrorFrame {
                rooms: Some(resumption.unknown),
                ..ErrorFrame::new(ErrorCode::RoomNotFound, "not rooms of yours")
            }))
            .await;
        }
        let mut summary = std::collections::BTreeMap::new();
        for replay in &resumption.replays {
            // The writer skips what this connection was already sent.
            for message in &replay.messages {
                let item = Outbound::Replay(LiveMessage::new(message));
                self.conn.send(item, REPLY_PATIENCE).await;
            }
            let after = resume.rooms.get(replay.room.as_str()).copied().unwrap_or(0);
            let last_seq = replay.messages.last().map_or(after, |m| m.seq);
            summary.insert(
                replay.room.clone(),
                ResumedRoom {
                    last_seq,
                    more: replay.more,
                },
            );
        }
        self.reply(ServerFrame::Resumed { rooms: summary }).await;
        self.conn.send(Outbound::ReleaseLive, REPLY_PATIENCE).await;
    }
}
