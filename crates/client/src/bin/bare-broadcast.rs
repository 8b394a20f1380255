//! The bare broadcast fixture (issue 13): what this machine can do for fan-out at all, so that
//! `scripts/bench` reports chatd as ratios to it, measured in the same run.
//!
//! `ws://127.0.0.1:PORT/?room=NAME` joins a room. Every text frame a connection sends is
//! queued, as the same bytes, to every connection of its room (the sender's too, as chatd
//! echoes a message to its sender). Nothing else: no auth, no store, no seq, no protocol.
//! It shares chatd's transport choices so that the difference is chatd's own work: the same
//! read buffer (2 KiB), a bounded queue per connection (a frame for a full queue is dropped,
//! which the benchmark's audit reports as lost), and a writer that feeds what is queued and
//! flushes once.
//!
//!   bare-broadcast --port 18090

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_tungstenite::tungstenite::{
    Message, Utf8Bytes,
    handshake::server::{Request, Response},
    protocol::WebSocketConfig,
};

#[derive(Parser)]
#[command(about = "A minimal WebSocket broadcast server: the fan-out limit of this machine")]
struct Cli {
    #[arg(long, default_value_t = 18090)]
    port: u16,
}

/// Frames queued per connection (chatd's `websocket.outbound_queue` default).
const QUEUE: usize = 1024;
/// What one write gathers before it flushes, in frames and bytes (chatd's writer takes the
/// same).
const BATCH: usize = 64;
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

type Outbox = mpsc::Sender<Utf8Bytes>;
/// A room's connections, by connection id.
type Members = Arc<Vec<(u64, Outbox)>>;

/// Rooms to their connections, copied on write: a broadcast clones one `Arc`.
#[derive(Default)]
struct Rooms {
    by_name: RwLock<HashMap<String, Members>>,
}

impl Rooms {
    fn join(&self, room: &str, id: u64, outbox: Outbox) {
        let mut rooms = self.by_name.write().expect("rooms lock");
        let members = rooms.entry(room.to_owned()).or_default();
        let mut next = members.as_ref().clone();
        next.push((id, outbox));
        *members = Arc::new(next);
    }

    fn leave(&self, room: &str, id: u64) {
        let mut rooms = self.by_name.write().expect("rooms lock");
        if let Some(members) = rooms.get_mut(room) {
            let next: Vec<_> = members.iter().filter(|m| m.0 != id).cloned().collect();
            if next.is_empty() {
                rooms.remove(room);
            } else {
                *members = Arc::new(next);
            }
        }
    }

    fn members(&self, room: &str) -> Members {
        let rooms = self.by_name.read().expect("rooms lock");
        rooms.get(room).cloned().unwrap_or_default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listener = TcpListener::bind(("127.0.0.1", cli.port)).await?;
    println!("bare-broadcast listening on 127.0.0.1:{}", cli.port);
    let rooms = Arc::new(Rooms::default());
    let mut next_id = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        next_id += 1;
        // Detached: a connection's task ends with its socket; the fixture ends with its process.
        tokio::spawn(serve(stream, next_id, rooms.clone()));
    }
}

async fn serve(stream: tokio::net::TcpStream, id: u64, rooms: Arc<Rooms>) {
    let mut room = String::new();
    let config = WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(WRITE_BUFFER_BYTES + 1024 * 1024);
    // The callback's error type is tungstenite's (an HTTP response), large or not.
    #[allow(clippy::result_large_err)]
    let accepted = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |request: &Request, response| {
            room = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("room=")))
                .unwrap_or("lobby")
                .to_owned();
            Ok::<Response, _>(response)
        },
        Some(config),
    )
    .await;
    let Ok(socket) = accepted else { return };
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut queued) = mpsc::channel::<Utf8Bytes>(QUEUE);
    rooms.join(&room, id, outbox);
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while queued.recv_many(&mut batch, BATCH).await > 0 {
            for text in batch.drain(..) {
                if sink.feed(Message::Text(text)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(text) = frame else { continue };
        for (_, member) in rooms.members(&room).iter() {
            // Never waits on a member; a full queue loses the frame (and the audit says so).
            let _ = member.try_send(text.clone());
        }
    }
    rooms.leave(&room, id);
    writer.abort();
}
