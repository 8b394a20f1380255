//! The dispatcher: one task per node that turns bus deliveries into frames for local
//! connections. It alone owns the per-room cursors, so ordering needs no locks.
//!
//! For each room with local members it delivers messages in seq order and exactly once
//! (see [`RoomCursor`]); when a gap persists, or after the bus reconnected, it reads the
//! missing range from the store. Each message is serialized once per node and the same bytes
//! are queued to every recipient.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    Hub, LiveMessage, Outbound,
    cursor::{MAX_HELD, RoomCursor},
};
use crate::{
    bus::{BusEvent, Delivery, Topic},
    domain::{Message, RoomId, Seq},
    protocol::ServerFrame,
    store::{HistoryQuery, Store, StoreError, StoreResult},
};

/// How long a gap may stay open before it is read from the store. Messages published at the
/// same moment by two nodes arrive within milliseconds of each other; a gap older than this
/// means a lost publish (or a sender that crashed between storing and publishing).
const GAP_PATIENCE: Duration = Duration::from_millis(300);
const GAP_CHECK_EVERY: Duration = Duration::from_millis(100);
/// Messages read per store round trip when filling a gap or catching up.
const FETCH_LIMIT: usize = 500;
/// Fills of one gap that found nothing before the gap is declared permanent (skipped).
const MAX_EMPTY_FILLS: u32 = 3;
/// A store read that takes longer is abandoned (and retried by the next tick).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages held behind a gap beyond which the gap is skipped rather than waited for.
const HARD_MAX_HELD: usize = 5 * MAX_HELD;
/// News waiting for the dispatcher. Senders (joining connections, finished fetches) wait
/// for room; at most a few items per local room are ever in flight.
pub const CONTROL_QUEUE: usize = 4096;

/// News for the dispatcher from the rest of the node.
#[derive(Debug)]
pub enum Control {
    /// A room subscription is starting: hold its messages until `Activated`.
    Activating {
        room: RoomId,
        generation: u64,
    },
    /// The subscription is live and the store's newest seq was `last_seq` after it went live.
    Activated {
        room: RoomId,
        generation: u64,
        last_seq: Seq,
    },
    Deactivated {
        room: RoomId,
        generation: u64,
    },
    Fetched {
        room: RoomId,
        generation: u64,
        /// Catch-up reads continue until a short page; gap fills stop after one.
        catch_up: bool,
        result: StoreResult<Vec<Message>>,
    },
}

enum Phase {
    Activating { early: Vec<Message> },
    Active(RoomCursor),
}

struct RoomState {
    generation: u64,
    phase: Phase,
    filling: bool,
    empty_fills: u32,
    /// The bus lost events: read the store after the last delivered seq until a read
    /// succeeds and comes back short.
    catching_up: CatchUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CatchUp {
    Done,
    Due,
    Reading,
}

pub struct Dispatcher {
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    control: mpsc::Sender<Control>,
    rooms: HashMap<RoomId, RoomState>,
    /// Store reads run here, and are abandoned when the node stops.
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Dispatcher {
    pub fn new(
        hub: Arc<Hub>,
        store: Arc<dyn Store>,
        control: mpsc::Sender<Control>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            hub,
            store,
            control,
            rooms: HashMap::new(),
            tasks,
            shutdown,
        }
    }

    pub async fn run(
        mut self,
        mut deliveries: mpsc::Receiver<Delivery>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let shutdown = self.shutdown.clone();
        let mut gap_check = tokio::time::interval(GAP_CHECK_EVERY);
        gap_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Control first: a room's Activating must be seen before its messages.
                biased;
                _ = shutdown.cancelled() => break,
                Some(news) = control.recv() => self.on_control(news),
                delivery = deliveries.recv() => match delivery {
                    Some(delivery) => self.on_delivery(delivery),
                    None => break,
                },
                _ = gap_check.tick() => self.fill_overdue_gaps(),
            }
        }
        tracing::debug!("dispatcher stopped");
    }

    fn on_delivery(&mut self, delivery: Delivery) {
        let (topic, payload) = match delivery {
            Delivery::Event { topic, payload } => (topic, payload),
            Delivery::Resynced => {
                // Membership events may have been lost too.
                self.hub.recheck_all_memberships();
                return self.catch_up_all();
            }
        };
        let event = match BusEvent::decode(&payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, ?topic, "skipping undecodable bus event");
                return;
            }
        };
        match (topic, event) {
            (Topic::Room(room), BusEvent::Message { message }) if message.room == room => {
                self.on_message(message)
            }
            (Topic::Room(room), BusEvent::Receipt { user, read_seq, .. }) => {
                let frame = ServerFrame::Receipt {
                    room: &room,
                    user: &user,
                    read_seq,
                };
                self.hub.offer_room(&room, &Outbound::Frame(frame.encode()));
            }
            (Topic::Room(room), BusEvent::Members { members, .. }) => {
                let frame = ServerFrame::Members {
                    room: &room,
                    members: &members,
                };
                self.hub.offer_room(&room, &Outbound::Frame(frame.encode()));
            }
            // Each connection re-reads the user's memberships and reconciles (in its own task,
            // so that events arriving in any order, or lost, still end in the right state).
            (Topic::User(user), BusEvent::RoomAdded { .. } | BusEvent::RoomRemoved { .. }) => {
                for conn in self.hub.connections_of(&user) {
                    conn.memberships_changed();
                }
            }
            (topic, event) => tracing::warn!(?topic, ?event, "bus event on the wrong topic"),
        }
    }

    fn on_message(&mut self, message: Message) {
        let Some(state) = self.rooms.get_mut(&message.room) else {
            return; // no local members (any more)
        };
        match &mut state.phase {
            Phase::Activating { early } => {
                if early.len() < MAX_HELD {
                    early.push(message);
                }
            }
            Phase::Active(cursor) => {
                let room = message.room.clone();
                let mut ready = Vec::new();
                cursor.accept(message, Instant::now(), &mut ready);
                self.deliver(&room, ready);
            }
        }
    }

    /// Hands messages, already in order, to every local member's connection.
    fn deliver(&self, room: &RoomId, messages: Vec<Message>) {
        for message in messages {
            let item = Outbound::Live(LiveMessage::new(&message));
            let recipients = self.hub.offer_room(room, &item);
            metrics::counter!("chatd_deliveries_total").increment(recipients as u64);
        }
    }

    fn on_control(&mut self, news: Control) {
        match news {
            Control::Activating { room, generation } => {
                let state = RoomState {
                    generation,
                    phase: Phase::Activating { early: Vec::new() },
                    filling: false,
                    empty_fills: 0,
                    catching_up: CatchUp::Done,
                };
                self.rooms.insert(room, state);
            }
            Control::Activated {
                room,
                generation,
                last_seq,
            } => {
                let Some(state) = self.rooms.get_mut(&room) else {
                    return;
                };
                if state.generation != generation {
                    return;
                }
                if let Phase::Activating { early } = &mut state.phase {
                    let early = std::mem::take(early);
                    let mut cursor = RoomCursor::new(last_seq);
                    let mut ready = Vec::new();
                    let now = Instant::now();
                    for message in early {
                        cursor.accept(message, now, &mut ready);
                    }
                    state.phase = Phase::Active(cursor);
                    self.deliver(&room, ready);
                }
            }
            Control::Deactivated { room, generation } => {
                if self
                    .rooms
                    .get(&room)
                    .is_some_and(|s| s.generation == generation)
                {
                    self.rooms.remove(&room);
                }
            }
            Control::Fetched {
                room,
                generation,
                catch_up,
                result,
            } => self.on_fetched(room, generation, catch_up, result),
        }
    }

    fn on_fetched(
        &mut self,
        room: RoomId,
        generation: u64,
        catch_up: bool,
        result: StoreResult<Vec<Message>>,
    ) {
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        let Phase::Active(cursor) = &mut state.phase else {
            return;
        };
        if state.generation != generation {
            return;
        }
        if !catch_up {
            state.filling = false;
        }
        let messages = match result {
            Ok(messages) => messages,
            Err(e) => {
                // Retried by the next gap check.
                tracing::warn!(error = %e, %room, "cannot read missing messages");
                if catch_up {
                    state.catching_up = CatchUp::Due;
                }
                return;
            }
        };
        let full_page = messages.len() == FETCH_LIMIT;
        let gap_before = cursor.gap();
        let mut ready = Vec::new();
        let now = Instant::now();
        for message in messages {
            cursor.accept(message, now, &mut ready);
        }
        if !catch_up {
            if cursor.gap().is_some() && cursor.gap() == gap_before {
                state.empty_fills += 1;
                if state.empty_fills >= MAX_EMPTY_FILLS {
                    tracing::error!(%room, gap = ?gap_before, "store lacks these seqs; skipping");
                    cursor.skip_gap(&mut ready);
                    state.empty_fills = 0;
                }
            } else {
                state.empty_fills = 0;
            }
        }
        if cursor.gap().is_some() && cursor.held() > HARD_MAX_HELD {
            // The store cannot fill it (or not yet); deliver rather than hold without bound.
            tracing::error!(%room, "too many messages held behind a gap; skipping it");
            cursor.skip_gap(&mut ready);
        }
        let after = cursor.delivered_up_to();
        if catch_up {
            state.catching_up = if full_page {
                CatchUp::Reading
            } else {
                CatchUp::Done
            };
        }
        self.deliver(&room, ready);
        if catch_up && full_page {
            self.fetch(room, generation, after, None, true);
        }
    }

    fn fill_overdue_gaps(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut catch_up = Vec::new();
        for (room, state) in &mut self.rooms {
            if let Phase::Active(cursor) = &state.phase
                && state.catching_up == CatchUp::Due
            {
                state.catching_up = CatchUp::Reading;
                catch_up.push((room.clone(), state.generation, cursor.delivered_up_to()));
            }
            if let Phase::Active(cursor) = &state.phase
                && !state.filling
                && cursor.gap_overdue(now, GAP_PATIENCE)
                && let Some((after, before)) = cursor.gap()
            {
                state.filling = true;
                due.push((room.clone(), state.generation, after, before));
            }
        }
        for (room, generation, after, before) in due {
            metrics::counter!("chatd_gap_fills_total").increment(1);
            self.fetch(room, generation, after, Some(before), false);
        }
        for (room, generation, after) in catch_up {
            self.fetch(room, generation, after, None, true);
        }
    }

    /// After a bus reconnection: read whatever each local room missed meanwhile.
    fn catch_up_all(&self) {
        tracing::info!(
            rooms = self.rooms.len(),
            "bus resynced; catching up from the store"
        );
        for (room, state) in &self.rooms {
            if let Phase::Active(cursor) = &state.phase {
                self.fetch(
                    room.clone(),
                    state.generation,
                    cursor.delivered_up_to(),
                    None,
                    true,
                );
            }
        }
    }

    fn fetch(
        &self,
        room: RoomId,
        generation: u64,
        after: Seq,
        before: Option<Seq>,
        catch_up: bool,
    ) {
        let store = self.store.clone();
        let control = self.control.clone();
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
            }
            .unwrap_or_else(|_| Err(StoreError::Unavailable("read timed out".into())));
            let _ = control
                .send(Control::Fetched {
                    room,
                    generation,
                    catch_up,
                    result,
                })
                .await;
        });
    }
}
