//! The dispatcher: drives the [`DeliveryCore`] with real I/O. Rooms are spread over several
//! shard tasks by room hash, so one task is not the node's ceiling; each shard owns the core
//! of its rooms, so ordering needs no locks.
//!
//! A router task reads the bus: room messages go to the room's shard, receipts and member
//! lists go straight to the room's connections (they need no order), membership events to
//! the user's connections, and a resync to every shard. Subscriptions tell a room's shard
//! when it activates ([`Shards::tell`]); they do so before subscribing to the bus, and one
//! channel per shard carries both, so a room's activation always precedes its messages.
//! Store reads run as tracked tasks that end with the node. Each message is serialized once
//! per node and the same bytes are queued to every recipient.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    Hub, LiveMessage, Outbound,
    delivery::{Action, DeliveryCore, FETCH_LIMIT, Input},
};
use crate::{
    bus::{BusEvent, Delivery, Topic},
    domain::{Message, RoomId},
    protocol::{ServerFrame, encode},
    store::{HistoryQuery, Store},
};

const GAP_CHECK_EVERY: Duration = Duration::from_millis(100);
/// A store read that takes longer is abandoned (and retried by the next tick).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Inputs waiting for one shard. Senders (the router, joining connections, finished reads)
/// wait for room: back-pressure, never loss.
const SHARD_QUEUE: usize = 4096;

/// The shards' inboxes, by room hash.
pub struct Shards {
    inboxes: Vec<mpsc::Sender<Input>>,
}

impl Shards {
    fn of(&self, room: &RoomId) -> &mpsc::Sender<Input> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut hasher);
        &self.inboxes[hasher.finish() as usize % self.inboxes.len()]
    }

    /// Gives `input` (about `room`) to the room's shard, waiting for room in its queue; a
    /// stopped shard needs no news.
    pub async fn tell(&self, room: &RoomId, input: Input) {
        let _ = self.of(room).send(input).await;
    }

    async fn tell_all(&self, input: impl Fn() -> Input) {
        for inbox in &self.inboxes {
            let _ = inbox.send(input()).await;
        }
    }
}

/// How many shards: one per core, at least two (so a slow fetch of one room's shard is not
/// every room's problem).
fn shard_count() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 16))
}

/// The shards' inboxes, and their receiving ends for [`start`].
pub fn shards() -> (Arc<Shards>, Vec<mpsc::Receiver<Input>>) {
    let (inboxes, receivers) = (0..shard_count())
        .map(|_| mpsc::channel(SHARD_QUEUE))
        .unzip();
    (Arc::new(Shards { inboxes }), receivers)
}

/// Starts the shards and the router on `tasks`; they stop with `shutdown`.
pub fn start(
    hub: &Arc<Hub>,
    store: Arc<dyn Store>,
    (shards, receivers): (Arc<Shards>, Vec<mpsc::Receiver<Input>>),
    deliveries: mpsc::Receiver<Delivery>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    for (index, inbox) in receivers.into_iter().enumerate() {
        let shard = Shard {
            index,
            hub: hub.clone(),
            store: store.clone(),
            shards: shards.clone(),
            core: DeliveryCore::default(),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        };
        tasks.spawn(shard.run(inbox));
    }
    tasks.spawn(route(
        hub.clone(),
        store,
        shards,
        deliveries,
        tasks.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(flush_typing(hub.clone(), shutdown.clone()));
}

/// Sends the typing lists that changed (or expired), every `typing.coalesce_ms`.
async fn flush_typing(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(hub.settings().typing_coalesce);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        for change in hub.typing.changes(Instant::now()) {
            change.send_to(&hub.room_connections(&change.room));
        }
    }
}

/// Reads the bus and hands each event to whoever needs it.
async fn route(
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    shards: Arc<Shards>,
    mut deliveries: mpsc::Receiver<Delivery>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            delivery = deliveries.recv() => match delivery {
                Some(delivery) => delivery,
                None => break,
            },
        };
        let (topic, payload) = match delivery {
            Delivery::Event { topic, payload } => (topic, payload),
            Delivery::Resynced => {
                tracing::info!("bus resynced; catching up from the store");
                metrics::counter!("chatd_bus_resyncs_total").increment(1);
                // Membership, presence and revocation events may have been lost too.
                hub.memberships.forget_all();
                hub.recheck_all_memberships();
                hub.refresh_all_presence();
                hub.recheck_revocations(&tracker);
                shards.tell_all(|| Input::Resynced).await;
                continue;
            }
        };
        let event = match BusEvent::decode(&payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, ?topic, "skipping undecodable bus event");
                continue;
            }
        };
        match (topic, event) {
            (Topic::Room(room), BusEvent::Message { message, trace }) if message.room == room => {
                if let Some(trace) = trace {
                    hub.traces.note(&message, trace);
                }
                // Another node's append: this node's next one in the room need not find out.
                store.observed(&message);
                shards.tell(&room, Input::Message(message)).await;
            }
            (
                Topic::Room(room),
                BusEvent::Receipt {
                    user,
                    delivered_seq,
                    read_seq,
                    ..
                },
            ) => {
                let frame = encode(&ServerFrame::Receipt {
                    room: room.clone(),
                    user,
                    delivered_seq,
                    read_seq,
                });
                hub.offer_room(&room, &Outbound::Frame(frame));
            }
            (Topic::Room(room), BusEvent::Typing { user, typing, .. }) => {
                hub.typing.apply(&room, &user, typing, Instant::now());
            }
            (Topic::Room(room), BusEvent::Members { members, roles, .. }) => {
                hub.memberships.forget_room(&room);
                // In small groups members see each other's presence: their contacts changed
                // (also when the group just outgrew the size).
                if hub.resized(&room, members.len()) {
                    for conn in hub.room_connections(&room) {
                        conn.memberships_changed();
                    }
                }
                let frame = encode(&ServerFrame::Members {
                    room: room.clone(),
                    members,
                    roles,
                });
                hub.offer_room(&room, &Outbound::Frame(frame));
            }
            (
                Topic::User(user),
                BusEvent::Unread {
                    room,
                    unread,
                    read_seq,
                    total,
                },
            ) => {
                let frame = Outbound::Frame(encode(&ServerFrame::Unread {
                    room,
                    unread,
                    read_seq,
                    total,
                }));
                for conn in hub.connections_of(&user) {
                    conn.offer(frame.clone());
                }
            }
            (Topic::Presence(user), BusEvent::Presence { presence }) if presence.user == user => {
                hub.offer_presence(&presence);
            }
            // Each connection re-reads the user's memberships and reconciles (in its own task,
            // so that events arriving in any order, or lost, still end in the right state).
            (
                Topic::User(user),
                event @ (BusEvent::RoomAdded { .. } | BusEvent::RoomRemoved { .. }),
            ) => {
                if let BusEvent::RoomRemoved { room } = &event {
                    // Before the room's members event, maybe: the user is out either way.
                    hub.memberships.forget_room(room);
                }
                for conn in hub.connections_of(&user) {
                    conn.memberships_changed();
                }
            }
            (Topic::User(user), BusEvent::Revoked { before }) => {
                let before = hub.revocations.learned(&user, Some(before));
                hub.close_revoked(&user, before);
            }
            (topic, event) => tracing::warn!(?topic, ?event, "bus event on the wrong topic"),
        }
    }
    tracing::debug!("dispatcher router stopped");
}

/// One shard: the delivery core of its rooms, and the I/O its actions ask for.
struct Shard {
    index: usize,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    shards: Arc<Shards>,
    core: DeliveryCore,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Shard {
    async fn run(mut self, mut inbox: mpsc::Receiver<Input>) {
        let mut tick = tokio::time::interval(GAP_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.shutdown.clone();
        let mut actions = Vec::new();
        loop {
            let input = tokio::select! {
                _ = shutdown.cancelled() => break,
                input = inbox.recv() => match input {
                    Some(input) => input,
                    None => break,
                },
                _ = tick.tick() => Input::Tick,
            };
            self.core.handle(input, Instant::now(), &mut actions);
            for action in actions.drain(..) {
                self.act(action);
            }
        }
        tracing::debug!(shard = self.index, "dispatcher shard stopped");
    }

    fn act(&self, action: Action) {
        match action {
            Action::Deliver { room, messages } => self.deliver(&room, messages),
            Action::Fetch {
                room,
                generation,
                after,
                before,
                catch_up,
            } => {
                if !catch_up {
                    metrics::counter!("chatd_gap_fills_total").increment(1);
                }
                self.fetch(room, generation, after, before, catch_up);
            }
        }
    }

    /// Hands messages, already in order, to every local member's connection.
    fn deliver(&self, room: &RoomId, messages: Vec<Message>) {
        for message in messages {
            let item = Outbound::Live(LiveMessage::new(&message));
            let recipients = self.hub.offer_room(room, &item);
            metrics::counter!("chatd_deliveries_total").increment(recipients as u64);
            // Read from the store (a gap filled) or from a node that did not trace: no trace.
            let trace = self.hub.traces.take(&message);
            if let Some(trace) = &trace {
                let waited = chrono::Utc::now().timestamp_millis() - trace.published_at_ms;
                let waited = Duration::from_millis(u64::try_from(waited).unwrap_or(0));
                metrics::histogram!("chatd_delivery_seconds").record(waited);
            }
            tracing::info!(
                target: "chatd::trace", hop = "delivered", room = %room, seq = message.seq,
                id = %message.id, trace = trace.as_ref().map_or("", |t| t.id.as_str()),
                node = %self.hub.settings().node,
                from = trace.as_ref().map_or("store", |t| t.node.as_str()), recipients,
                "message handed to local connections"
            );
        }
    }

    /// Reads from the store in a tracked task, and tells this shard the result.
    fn fetch(
        &self,
        room: RoomId,
        generation: u64,
        after: u64,
        before: Option<u64>,
        catch_up: bool,
    ) {
        let store = self.store.clone();
        let shards = self.shards.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let query = HistoryQuery {
                before,
                ..HistoryQuery::after(after, FETCH_LIMIT)
            };
            let read = tokio::time::timeout(FETCH_TIMEOUT, store.history(&room, &query));
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                read = read => read,
            };
            let result = match result {
                Ok(Ok(messages)) => Ok(messages),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, %room, "cannot read missing messages");
                    Err(())
                }
                Err(_) => {
                    tracing::warn!(%room, "reading missing messages timed out");
                    Err(())
                }
            };
            let fetched = Input::Fetched {
                room: room.clone(),
                generation,
                catch_up,
                result,
            };
            shards.tell(&room, fetched).await;
        });
    }
}
