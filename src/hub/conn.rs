//! The hub's handle on one WebSocket connection: its bounded outbound queue and its kill
//! switch. Whoever holds a handle may offer it frames; only the connection's writer task
//! touches the socket.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{RoomId, Seq, UserId, UserPresence},
    protocol::{CloseReason, ServerFrame, encode},
};

pub type ConnId = u64;

/// What a connection's writer is asked to do, in queue order.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A frame for this connection alone (welcome, ack, error, pong, replayed history...).
    Frame(Utf8Bytes),
    /// A live message of a room, shared by every local recipient (one reference count per
    /// recipient). Held while a resume is in progress.
    Live(Arc<LiveMessage>),
    /// A message replayed by a resume: never held.
    Replay(Arc<LiveMessage>),
    /// A resume starts: hold live messages from here on.
    HoldLive,
    /// The resume is done: held live messages go out (those the replay covered are dropped:
    /// a connection never gets a room's seq twice).
    ReleaseLive,
}

/// A message frame, encoded once (live: for all local recipients).
#[derive(Debug)]
pub struct LiveMessage {
    pub room: RoomId,
    pub seq: Seq,
    pub frame: Utf8Bytes,
}

impl LiveMessage {
    pub fn new(message: &crate::domain::Message) -> Arc<Self> {
        Arc::new(Self {
            room: message.room.clone(),
            seq: message.seq,
            frame: crate::protocol::encode(&crate::protocol::ServerFrame::Message(message.clone())),
        })
    }
}

#[derive(Default)]
struct Rooms {
    closed: bool,
    joined: HashSet<RoomId>,
}

pub struct ConnHandle {
    pub id: ConnId,
    pub user: UserId,
    /// The `iat` of the token it was opened with (a revocation closes older ones).
    pub issued_at: Option<chrono::DateTime<chrono::Utc>>,
    queue: mpsc::Sender<Outbound>,
    close: CancellationToken,
    reason: OnceLock<CloseReason>,
    rooms: Mutex<Rooms>,
    /// Signalled when the user's memberships may have changed (coalescing: one pending
    /// signal at most); the connection then re-reads them from the store.
    memberships: Notify,
    /// Contacts whose presence this connection follows.
    pub(super) watching: Mutex<HashSet<UserId>>,
    /// While `Some`, presence changes wait here (newest per user) for the snapshot they
    /// follow: a client never sees a change before its snapshot.
    presence_gate: Mutex<Option<HashMap<UserId, UserPresence>>>,
    /// The client closed the connection itself (a close frame): its user leaves at once,
    /// without the grace a dropped connection gets.
    left_cleanly: AtomicBool,
    /// Presence changes may have been lost (the bus reconnected, or the snapshot failed):
    /// the connection sends a fresh snapshot when it next reconciles.
    presence_stale: AtomicBool,
}

impl ConnHandle {
    pub fn token_issued_at(mut self, at: Option<chrono::DateTime<chrono::Utc>>) -> Self {
        self.issued_at = at;
        self
    }

    pub fn new(id: ConnId, user: UserId, queue: mpsc::Sender<Outbound>) -> Self {
        Self {
            id,
            user,
            issued_at: None,
            queue,
            close: CancellationToken::new(),
            reason: OnceLock::new(),
            rooms: Mutex::default(),
            memberships: Notify::new(),
            watching: Mutex::default(),
            presence_gate: Mutex::new(Some(HashMap::new())),
            left_cleanly: AtomicBool::new(false),
            presence_stale: AtomicBool::new(false),
        }
    }

    /// Asks for a fresh presence snapshot at the next reconciliation (see
    /// [`memberships_changed`](Self::memberships_changed)).
    pub fn presence_lost(&self) {
        self.presence_stale.store(true, Ordering::Relaxed);
        self.memberships_changed();
    }

    /// Whether a fresh snapshot is due (and no longer, once asked).
    pub fn take_presence_lost(&self) -> bool {
        self.presence_stale.swap(false, Ordering::Relaxed)
    }

    pub fn mark_left_cleanly(&self) {
        self.left_cleanly.store(true, Ordering::Relaxed);
    }

    pub fn left_cleanly(&self) -> bool {
        self.left_cleanly.load(Ordering::Relaxed)
    }

    /// A contact's presence changed: held until the snapshot went out, then queued.
    pub fn offer_presence(&self, presence: &UserPresence, frame: &Utf8Bytes) {
        let mut gate = self.presence_gate.lock().expect("presence gate");
        match gate.as_mut() {
            Some(held) => {
                let newer = held.get(&presence.user).is_none_or(|p| p.v < presence.v);
                if newer {
                    held.insert(presence.user.clone(), presence.clone());
                }
            }
            None => self.offer(Outbound::Frame(frame.clone())),
        }
    }

    /// Queues the presence snapshot (`None`: the registry could not be read), then the
    /// changes held meanwhile that are newer than it, and opens the gate.
    pub fn release_presence(&self, snapshot: Option<Vec<UserPresence>>) {
        let mut gate = self.presence_gate.lock().expect("presence gate");
        let held = gate.take().unwrap_or_default();
        let snapshot = snapshot.map(|users| {
            let versions: HashMap<UserId, u64> =
                users.iter().map(|p| (p.user.clone(), p.v)).collect();
            self.offer(Outbound::Frame(encode(&ServerFrame::Presence {
                snapshot: true,
                users,
            })));
            versions
        });
        let newer: Vec<UserPresence> = held
            .into_values()
            .filter(|p| {
                let known = snapshot.as_ref().and_then(|v| v.get(&p.user));
                known.is_none_or(|&v| p.v > v)
            })
            .collect();
        if !newer.is_empty() {
            self.offer(Outbound::Frame(encode(&ServerFrame::Presence {
                snapshot: false,
                users: newer,
            })));
        }
    }

    pub fn in_room(&self, room: &RoomId) -> bool {
        self.rooms.lock().expect("rooms lock").joined.contains(room)
    }

    /// The user was added to or removed from a room (or events may have been lost).
    pub fn memberships_changed(&self) {
        self.memberships.notify_one();
    }

    pub async fn memberships_change(&self) {
        self.memberships.notified().await
    }

    /// Queues without waiting: the fan-out path never awaits a recipient. A full queue means
    /// the client is not keeping up; it is closed (4100) and will resume without loss.
    pub fn offer(&self, item: Outbound) {
        match self.queue.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.is_closed() {
                    tracing::info!(conn = self.id, user = %self.user, "closing slow consumer: queue full");
                    metrics::counter!("chatd_slow_consumer_closes_total").increment(1);
                }
                self.close(CloseReason::SlowConsumer);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Queues, waiting for room: for the connection's own replies, which should slow down
    /// that client rather than be dropped. Gives up (and closes) after `patience`.
    pub async fn send(&self, item: Outbound, patience: std::time::Duration) {
        match tokio::time::timeout(patience, self.queue.send(item)).await {
            Ok(_) => {}
            Err(_) => self.close(CloseReason::SlowConsumer),
        }
    }

    /// Asks the writer to close the socket; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.close.cancel();
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }

    pub async fn closed(&self) {
        self.close.cancelled().await
    }

    /// Resolves when the connection is being dropped rather than closed politely (slow,
    /// silent or oversized: see [`crate::protocol::flush_queue_first`]).
    pub async fn abandoned(&self) {
        self.closed().await;
        if self
            .close_reason()
            .is_some_and(crate::protocol::flush_queue_first)
        {
            std::future::pending::<()>().await;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.close.is_cancelled()
    }

    /// Records that the connection is in `room` and runs `publish` (which makes it findable by
    /// room) under the same lock, so a concurrent [`exit_all`](Self::exit_all) sees both or
    /// neither. False if it already was in the room or is shutting down.
    pub(super) fn enter(&self, room: &RoomId, publish: impl FnOnce()) -> bool {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let entered = !rooms.closed && rooms.joined.insert(room.clone());
        if entered {
            publish();
        }
        entered
    }

    pub(super) fn exit(&self, room: &RoomId) -> bool {
        self.rooms.lock().expect("rooms lock").joined.remove(room)
    }

    /// Marks the connection gone and returns the rooms it was in.
    pub(super) fn exit_all(&self) -> Vec<RoomId> {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        rooms.closed = true;
        rooms.joined.drain().collect()
    }

    pub fn rooms(&self) -> Vec<RoomId> {
        let rooms = self.rooms.lock().expect("rooms lock");
        rooms.joined.iter().cloned().collect()
    }
}
