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
        if self.order.accept(item, &mut self.ready).is_err() {
            self.conn.close(CloseReason::SlowConsumer);
        }
        let mut ready = std::mem::take(&mut self.ready);
        let mut written = Ok(());
        for frame in ready.drain(..) {
            let kind = crate::protocol::frame_type(frame.as_str());
            metrics::counter!("chatd_frames_out_total", "type" => kind).increment(1);
            written = self.write(WsMessage::Text(frame)).await;
            if written.is_err() {
                break;
            }
        }
        ready.clear();
        self.ready = ready;
        written
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
