//! The writer: the only task that writes to a connection's socket. It drains the bounded
//! queue, pings on a timer, and sends the close frame. What goes out, and in which order, is
//! decided by [`LiveOrder`] (each room's messages in seq order and once; live traffic held
//! during a resume).

use std::{sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, stream::SplitSink};
use tokio::sync::mpsc;

use super::order::LiveOrder;
use crate::{
    hub::{ConnHandle, Outbound},
    protocol::CloseReason,
};

/// A write that takes longer than this means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Queued items written together, at most: under load a burst goes out in a few writes
/// instead of one per frame; a lone frame still goes out at once.
const BATCH: usize = 64;
/// Bytes gathered before they are written (a flush writes what is left): see `BATCH`. An
/// idle connection holds no more than its last frame.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;

type Sink = SplitSink<WebSocket, WsMessage>;

struct Writer {
    sink: Sink,
    conn: Arc<ConnHandle>,
    order: LiveOrder,
    /// Frames to write now, reused between items.
    ready: Vec<Utf8Bytes>,
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
        order: LiveOrder::new(hold_limit),
        ready: Vec::new(),
    };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let stop = loop {
        let step = tokio::select! {
            biased;
            _ = writer.conn.closed() => break Stop::Closed,
            item = queue.recv() => match item {
                Some(item) => writer.handle(item, &mut queue).await,
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
    /// Writes `item` and whatever else is queued by now (up to [`BATCH`] items), then
    /// flushes once.
    async fn handle(
        &mut self,
        item: Outbound,
        queue: &mut mpsc::Receiver<Outbound>,
    ) -> Result<(), Stop> {
        self.take(item);
        for _ in 1..BATCH {
            match queue.try_recv() {
                Ok(item) => self.take(item),
                Err(_) => break,
            }
        }
        let mut ready = std::mem::take(&mut self.ready);
        let written = self.write_all(&mut ready).await;
        ready.clear();
        self.ready = ready;
        written
    }

    fn take(&mut self, item: Outbound) {
        if self.order.accept(item, &mut self.ready).is_err() {
            self.conn.close(CloseReason::SlowConsumer);
        }
    }

    /// Feeds every frame into the socket's write buffer (written out as it fills), then
    /// flushes: one deadline for the lot, abandoned like a single write.
    async fn write_all(&mut self, frames: &mut Vec<Utf8Bytes>) -> Result<(), Stop> {
        if frames.is_empty() {
            return Ok(());
        }
        let (sink, conn) = (&mut self.sink, &self.conn);
        let send = async {
            for frame in frames.drain(..) {
                crate::telemetry::count_frame_out(crate::protocol::frame_type(frame.as_str()));
                sink.feed(WsMessage::Text(frame)).await?;
            }
            sink.flush().await
        };
        tokio::select! {
            biased;
            _ = conn.abandoned() => Err(Stop::Closed),
            sent = tokio::time::timeout(WRITE_TIMEOUT, send) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Stop::Broken),
                Err(_) => {
                    conn.close(CloseReason::SlowConsumer);
                    Err(Stop::Broken)
                }
            },
        }
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
            self.order.stop_holding();
            while let Ok(item) = queue.try_recv() {
                if !matches!(
                    item,
                    Outbound::Frame(_) | Outbound::Replay(_) | Outbound::Live(_)
                ) {
                    continue;
                }
                self.take(item);
            }
            let mut ready = std::mem::take(&mut self.ready);
            if self.write_all(&mut ready).await.is_err() {
                return;
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
