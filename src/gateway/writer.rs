//! The writer: the only task that writes to a connection's socket. It drains the bounded
//! queue, pings on a timer, and sends the close frame.
//!
//! It also enforces, per connection, the promise that a room's messages go out in seq order
//! and each once: it remembers the highest seq it sent in each room and drops any message
//! at or below it, whether it comes live or from a resume. During a resume it holds live
//! messages back, so the replay goes first and live traffic follows without overlap.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, stream::SplitSink};
use tokio::sync::mpsc;

use crate::{
    domain::{RoomId, Seq},
    hub::{ConnHandle, LiveMessage, Outbound},
    protocol::CloseReason,
};

/// A write that takes longer than this means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

type Sink = SplitSink<WebSocket, WsMessage>;

struct Writer {
    sink: Sink,
    conn: Arc<ConnHandle>,
    /// Live messages held during a resume; `None` when not holding.
    held: Option<Vec<Arc<LiveMessage>>>,
    /// Per room, the highest seq sent on this connection.
    sent: HashMap<RoomId, Seq>,
    hold_limit: usize,
}

/// Why writing stopped.
enum Stop {
    Closed,
    Broken,
}

pub async fn run(
    sink: Sink,
    mut queue: mpsc::Receiver<Outbound>,
    conn: Arc<ConnHandle>,
    heartbeat: Duration,
    hold_limit: usize,
) {
    let mut writer = Writer {
        sink,
        conn,
        // Live traffic waits for the client's resume (or the resume deadline).
        held: Some(Vec::new()),
        sent: HashMap::new(),
        hold_limit,
    };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let stop = loop {
        let step = tokio::select! {
            biased;
            _ = writer.conn.closed() => break Stop::Closed,
            item = queue.recv() => match item {
                Some(item) => writer.handle(item).await,
                None => break Stop::Closed,
            },
            _ = ping.tick() => writer.write(WsMessage::Ping(Default::default())).await,
        };
        if let Err(stop) = step {
            break stop;
        }
    };
    match stop {
        Stop::Closed => writer.finish(&mut queue).await,
        // The socket is gone: make the reader stop too, so the connection is dropped at once.
        Stop::Broken => writer.conn.close(CloseReason::Normal),
    }
}

impl Writer {
    async fn handle(&mut self, item: Outbound) -> Result<(), Stop> {
        match item {
            Outbound::Frame(frame) => self.write(WsMessage::Text(frame)).await,
            Outbound::Replay(message) => self.write_message(&message).await,
            Outbound::Live(live) => match &mut self.held {
                Some(held) if held.len() >= self.hold_limit => {
                    self.conn.close(CloseReason::SlowConsumer);
                    Ok(())
                }
                Some(held) => {
                    held.push(live);
                    Ok(())
                }
                None => self.write_message(&live).await,
            },
            Outbound::HoldLive => {
                self.held.get_or_insert_with(Vec::new);
                Ok(())
            }
            Outbound::ReleaseLive => {
                // Held messages of a room are in seq order already (the dispatcher sends them
                // so); those the replay covered are dropped by write_message.
                for live in self.held.take().unwrap_or_default() {
                    self.write_message(&live).await?;
                }
                Ok(())
            }
        }
    }

    /// Writes a message frame unless this connection already had it (or a later one).
    async fn write_message(&mut self, message: &LiveMessage) -> Result<(), Stop> {
        let sent = self.sent.entry(message.room.clone()).or_default();
        if message.seq <= *sent {
            return Ok(());
        }
        *sent = message.seq;
        self.write(WsMessage::Text(message.frame.clone())).await
    }

    async fn write(&mut self, message: WsMessage) -> Result<(), Stop> {
        tokio::select! {
            biased;
            // Only a connection being dropped (slow, silent, oversized) abandons the frame in
            // flight; one that is closed politely (drain, normal) finishes it first.
            _ = self.conn.abandoned() => Err(Stop::Closed),
            sent = tokio::time::timeout(WRITE_TIMEOUT, self.sink.send(message)) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Stop::Broken),
                Err(_) => {
                    self.conn.close(CloseReason::SlowConsumer);
                    Err(Stop::Broken)
                }
            },
        }
    }

    /// Sends what must precede the close frame, then the close frame.
    async fn finish(mut self, queue: &mut mpsc::Receiver<Outbound>) {
        let reason = self.conn.close_reason().unwrap_or(CloseReason::Normal);
        if crate::protocol::flush_queue_first(reason) {
            // Acks and replies already queued go out; held live traffic does not matter any
            // more (the client resumes elsewhere).
            self.held = None;
            while let Ok(item) = queue.try_recv() {
                if !matches!(
                    item,
                    Outbound::Frame(_) | Outbound::Replay(_) | Outbound::Live(_)
                ) {
                    continue;
                }
                if self.handle(item).await.is_err() {
                    return;
                }
            }
        }
        let close = WsMessage::Close(Some(CloseFrame {
            code: reason.code(),
            reason: Utf8Bytes::from_static(reason.text()),
        }));
        let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
            self.sink.send(close).await?;
            self.sink.close().await
        })
        .await;
    }
}
