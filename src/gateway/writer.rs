//! The writer: the only task that writes to a connection's socket. It drains the bounded
//! queue, holds live messages while a resume is replaying history (so the client sees the
//! replay, then live traffic, with no overlap), pings on a timer, and sends the close frame.

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
    /// Per room, the seq a resume replayed up to: live messages at or below it are duplicates.
    floors: HashMap<RoomId, Seq>,
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
        floors: HashMap::new(),
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
    if let Stop::Closed = stop {
        writer.finish(&mut queue).await;
    }
}

impl Writer {
    async fn handle(&mut self, item: Outbound) -> Result<(), Stop> {
        match item {
            Outbound::Frame(frame) => self.write(WsMessage::Text(frame)).await,
            Outbound::Live(live) => {
                if self.replayed(&live) {
                    return Ok(());
                }
                match &mut self.held {
                    Some(held) if held.len() >= self.hold_limit => {
                        self.conn.close(CloseReason::SlowConsumer);
                        Ok(())
                    }
                    Some(held) => {
                        held.push(live);
                        Ok(())
                    }
                    None => self.write(WsMessage::Text(live.frame.clone())).await,
                }
            }
            Outbound::HoldLive => {
                self.held.get_or_insert_with(Vec::new);
                Ok(())
            }
            Outbound::ReleaseLive { floors } => {
                self.floors.extend(floors);
                // Held messages of a room are in seq order already (the dispatcher sends them
                // so); they go out as they came, minus what the replay covered.
                for live in self.held.take().unwrap_or_default() {
                    if !self.replayed(&live) {
                        self.write(WsMessage::Text(live.frame.clone())).await?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether a resume already sent this message.
    fn replayed(&self, live: &LiveMessage) -> bool {
        self.floors
            .get(&live.room)
            .is_some_and(|&floor| live.seq <= floor)
    }

    async fn write(&mut self, message: WsMessage) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = self.conn.closed() => Err(Stop::Closed),
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
        if reason.flush_queue_first() {
            while let Ok(item) = queue.try_recv() {
                let sent =
                    tokio::time::timeout(WRITE_TIMEOUT, self.handle_ignoring_close(item)).await;
                if !matches!(sent, Ok(Ok(()))) {
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

    /// Like `handle`, for the final flush, when the close signal is already set.
    async fn handle_ignoring_close(&mut self, item: Outbound) -> Result<(), axum::Error> {
        let frame = match item {
            Outbound::Frame(frame) => frame,
            Outbound::Live(live) if self.held.is_none() && !self.replayed(&live) => {
                live.frame.clone()
            }
            _ => return Ok(()),
        };
        self.sink.send(WsMessage::Text(frame)).await
    }
}
