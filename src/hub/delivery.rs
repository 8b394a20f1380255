//! The delivery core: for each room with local members, which messages go to the room's
//! connections and when the store must be read. A pure state machine: inputs (a subscription
//! activated, a message from the bus, a store read's result, the bus resynced, time passing)
//! go in with the current time, actions (deliver these messages, read this range) come out.
//! No tokio, no hub, no store: the driver ([`super::dispatcher`]) owns all I/O, and the
//! tests below run every rule without a socket or a clock.
//!
//! The rules (invariant 3 of ARCHITECTURE.md):
//! - until a room's subscription is live and the store's newest seq is known, its messages
//!   are held; after, everything up to that seq is the resume's business, not live traffic;
//! - messages go out in seq order, each once ([`RoomCursor`]);
//! - a gap older than [`GAP_PATIENCE`] is read from the store; a gap the store cannot fill
//!   after [`MAX_EMPTY_FILLS`] reads (a sender that died between storing and publishing
//!   never leaves one: a seq exists only once stored; this is the last resort) is skipped;
//! - after the bus reconnects, every room is read from the store after its last delivered seq
//!   until a read comes back short;
//! - news about an old subscription of a room (its generation) never touches a newer one.
//!
//! Over 400 lines: half of it is the table-driven tests, which read as the specification of the rules above.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::cursor::{MAX_HELD, RoomCursor};
use crate::domain::{Message, RoomId, Seq};

/// How long a gap may stay open before it is read from the store. Messages published at the
/// same moment by two nodes arrive within milliseconds of each other; a gap older than this
/// means a lost publish (or a publish still in flight from a slow node).
pub const GAP_PATIENCE: Duration = Duration::from_millis(300);
/// Messages read per store round trip when filling a gap or catching up.
pub const FETCH_LIMIT: usize = 500;
/// Fills of one gap that found nothing before the gap is declared permanent (skipped).
pub const MAX_EMPTY_FILLS: u32 = 3;
/// Messages held behind a gap beyond which the gap is skipped rather than waited for.
pub const HARD_MAX_HELD: usize = 5 * MAX_HELD;

/// What the core is told, by the subscriptions (activation), the bus and the store reads.
#[derive(Debug)]
pub enum Input {
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
    /// A stored message, as the bus brought it.
    Message(Message),
    /// A store read asked for by [`Action::Fetch`]; `Err` if it failed (retried later).
    Fetched {
        room: RoomId,
        generation: u64,
        catch_up: bool,
        result: Result<Vec<Message>, ()>,
    },
    /// The bus was disconnected: whatever was published meanwhile may be lost.
    Resynced,
    /// Time passed: overdue gaps and failed catch-ups are read again.
    Tick,
}

/// What the driver must do.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Hand these messages, in this order, to the room's local connections.
    Deliver {
        room: RoomId,
        messages: Vec<Message>,
    },
    /// Read the room's messages after `after` (and before `before`), at most
    /// [`FETCH_LIMIT`], and report them as [`Input::Fetched`].
    Fetch {
        room: RoomId,
        generation: u64,
        after: Seq,
        before: Option<Seq>,
        catch_up: bool,
    },
}

enum Phase {
    Activating { early: Vec<Message> },
    Active(RoomCursor),
}

struct RoomState {
    generation: u64,
    phase: Phase,
    /// A gap fill is in flight.
    filling: bool,
    empty_fills: u32,
    catching_up: CatchUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CatchUp {
    Done,
    /// A catch-up read failed: try again on the next tick.
    Due,
    Reading,
}

/// The state of every room this core delivers.
#[derive(Default)]
pub struct DeliveryCore {
    rooms: HashMap<RoomId, RoomState>,
}

impl DeliveryCore {
    /// Rooms being delivered.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Applies one input; appends what must be done to `out`.
    pub fn handle(&mut self, input: Input, now: Instant, out: &mut Vec<Action>) {
        match input {
            Input::Activating { room, generation } => {
                let state = RoomState {
                    generation,
                    phase: Phase::Activating { early: Vec::new() },
                    filling: false,
                    empty_fills: 0,
                    catching_up: CatchUp::Done,
                };
                self.rooms.insert(room, state);
            }
            Input::Activated {
                room,
                generation,
                last_seq,
            } => self.activated(room, generation, last_seq, now, out),
            Input::Deactivated { room, generation } => {
                if self
                    .rooms
                    .get(&room)
                    .is_some_and(|s| s.generation == generation)
                {
                    self.rooms.remove(&room);
                }
            }
            Input::Message(message) => self.message(message, now, out),
            Input::Fetched {
                room,
                generation,
                catch_up,
                result,
            } => self.fetched(room, generation, catch_up, result, now, out),
            Input::Resynced => self.catch_up_all(out),
            Input::Tick => self.tick(now, out),
        }
    }

    fn activated(
        &mut self,
        room: RoomId,
        generation: u64,
        last_seq: Seq,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
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
            for message in early {
                cursor.accept(message, now, &mut ready);
            }
            state.phase = Phase::Active(cursor);
            deliver(room, ready, out);
        }
    }

    fn message(&mut self, message: Message, now: Instant, out: &mut Vec<Action>) {
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
                cursor.accept(message, now, &mut ready);
                deliver(room, ready, out);
            }
        }
    }

    fn fetched(
        &mut self,
        room: RoomId,
        generation: u64,
        catch_up: bool,
        result: Result<Vec<Message>, ()>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        if state.generation != generation {
            return;
        }
        let Phase::Active(cursor) = &mut state.phase else {
            return;
        };
        if !catch_up {
            state.filling = false;
        }
        let Ok(messages) = result else {
            if catch_up {
                state.catching_up = CatchUp::Due;
            }
            return;
        };
        let full_page = messages.len() == FETCH_LIMIT;
        let gap_before = cursor.gap();
        let mut ready = Vec::new();
        for message in messages {
            cursor.accept(message, now, &mut ready);
        }
        if !catch_up {
            if cursor.gap().is_some() && cursor.gap() == gap_before {
                state.empty_fills += 1;
                if state.empty_fills >= MAX_EMPTY_FILLS {
                    tracing::error!(%room, gap = ?gap_before, "store lacks these seqs; skipping");
                    cursor.skip_gap(now, &mut ready);
                    state.empty_fills = 0;
                }
            } else {
                state.empty_fills = 0;
            }
        }
        if cursor.gap().is_some() && cursor.held() > HARD_MAX_HELD {
            // The store cannot fill it (or not yet); deliver rather than hold without bound.
            tracing::error!(%room, "too many messages held behind a gap; skipping it");
            cursor.skip_gap(now, &mut ready);
        }
        let after = cursor.delivered_up_to();
        if catch_up {
            state.catching_up = if full_page {
                CatchUp::Reading
            } else {
                CatchUp::Done
            };
        }
        deliver(room.clone(), ready, out);
        if catch_up && full_page {
            out.push(Action::Fetch {
                room,
                generation,
                after,
                before: None,
                catch_up: true,
            });
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        for (room, state) in &mut self.rooms {
            let Phase::Active(cursor) = &state.phase else {
                continue;
            };
            if state.catching_up == CatchUp::Due {
                state.catching_up = CatchUp::Reading;
                out.push(Action::Fetch {
                    room: room.clone(),
                    generation: state.generation,
                    after: cursor.delivered_up_to(),
                    before: None,
                    catch_up: true,
                });
            }
            if !state.filling
                && cursor.gap_overdue(now, GAP_PATIENCE)
                && let Some((after, before)) = cursor.gap()
            {
                state.filling = true;
                out.push(Action::Fetch {
                    room: room.clone(),
                    generation: state.generation,
                    after,
                    before: Some(before),
                    catch_up: false,
                });
            }
        }
    }

    /// After a bus reconnection: read whatever each room missed meanwhile.
    fn catch_up_all(&mut self, out: &mut Vec<Action>) {
        for (room, state) in &mut self.rooms {
            if let Phase::Active(cursor) = &state.phase {
                state.catching_up = CatchUp::Reading;
                out.push(Action::Fetch {
                    room: room.clone(),
                    generation: state.generation,
                    after: cursor.delivered_up_to(),
                    before: None,
                    catch_up: true,
                });
            }
        }
    }
}

fn deliver(room: RoomId, messages: Vec<Message>, out: &mut Vec<Action>) {
    if !messages.is_empty() {
        out.push(Action::Deliver { room, messages });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Seq;

    fn room() -> RoomId {
        Message::example(1).room
    }

    fn msg(seq: Seq) -> Message {
        Message::example(seq)
    }

    /// One step of a scenario: an input at a time (ms after the start), and the seqs
    /// delivered plus the fetches asked for in answer.
    struct Step {
        at_ms: u64,
        input: Input,
        delivered: &'static [Seq],
        fetches: &'static [(Seq, Option<Seq>, bool)],
    }

    fn step(at_ms: u64, input: Input, delivered: &'static [Seq]) -> Step {
        Step {
            at_ms,
            input,
            delivered,
            fetches: &[],
        }
    }

    fn fetching(mut s: Step, fetches: &'static [(Seq, Option<Seq>, bool)]) -> Step {
        s.fetches = fetches;
        s
    }

    fn activating(generation: u64) -> Input {
        Input::Activating {
            room: room(),
            generation,
        }
    }

    fn activated(generation: u64, last_seq: Seq) -> Input {
        Input::Activated {
            room: room(),
            generation,
            last_seq,
        }
    }

    fn fetched(generation: u64, catch_up: bool, seqs: &[Seq]) -> Input {
        Input::Fetched {
            room: room(),
            generation,
            catch_up,
            result: Ok(seqs.iter().map(|&s| msg(s)).collect()),
        }
    }

    fn run(steps: Vec<Step>) {
        let start = Instant::now();
        let mut core = DeliveryCore::default();
        for (i, step) in steps.into_iter().enumerate() {
            let mut out = Vec::new();
            let what = format!("step {i}: {:?}", step.input);
            core.handle(
                step.input,
                start + Duration::from_millis(step.at_ms),
                &mut out,
            );
            let mut delivered = Vec::new();
            let mut fetches = Vec::new();
            for action in out {
                match action {
                    Action::Deliver { messages, .. } => {
                        delivered.extend(messages.iter().map(|m| m.seq))
                    }
                    Action::Fetch {
                        after,
                        before,
                        catch_up,
                        ..
                    } => fetches.push((after, before, catch_up)),
                }
            }
            assert_eq!(delivered, step.delivered, "{what}: delivered");
            assert_eq!(fetches, step.fetches, "{what}: fetches");
        }
    }

    #[test]
    fn a_publish_racing_the_activation_is_held_then_delivered_once() {
        run(vec![
            step(0, activating(1), &[]),
            // Published while subscribing: seq 5 was stored before the store was read (the
            // resume replays it), seq 6 after.
            step(1, Input::Message(msg(5)), &[]),
            step(2, Input::Message(msg(6)), &[]),
            step(3, activated(1, 5), &[6]),
            step(4, Input::Message(msg(6)), &[]),
            step(5, Input::Message(msg(7)), &[7]),
        ]);
    }

    #[test]
    fn a_lost_publish_is_read_from_the_store_after_the_patience() {
        run(vec![
            step(0, activating(1), &[]),
            step(0, activated(1, 0), &[]),
            step(10, Input::Message(msg(1)), &[1]),
            step(20, Input::Message(msg(3)), &[]),
            step(100, Input::Tick, &[]),
            fetching(step(400, Input::Tick, &[]), &[(1, Some(3), false)]),
            // One fill at a time.
            step(500, Input::Tick, &[]),
            step(510, fetched(1, false, &[2]), &[2, 3]),
            step(900, Input::Tick, &[]),
        ]);
    }

    #[test]
    fn a_gap_the_store_cannot_fill_is_skipped_after_three_empty_reads() {
        run(vec![
            step(0, activating(1), &[]),
            step(0, activated(1, 0), &[]),
            step(0, Input::Message(msg(2)), &[]),
            fetching(step(300, Input::Tick, &[]), &[(0, Some(2), false)]),
            step(301, fetched(1, false, &[]), &[]),
            fetching(step(400, Input::Tick, &[]), &[(0, Some(2), false)]),
            step(401, fetched(1, false, &[]), &[]),
            fetching(step(500, Input::Tick, &[]), &[(0, Some(2), false)]),
            step(501, fetched(1, false, &[]), &[2]),
            step(502, Input::Message(msg(3)), &[3]),
        ]);
    }

    #[test]
    fn after_a_bus_reconnect_rooms_catch_up_until_a_short_read() {
        let full: Vec<Seq> = (3..3 + FETCH_LIMIT as Seq).collect();
        let full: &'static [Seq] = full.leak();
        let after_full = 2 + FETCH_LIMIT as Seq;
        let next: &'static [(Seq, Option<Seq>, bool)] = vec![(after_full, None, true)].leak();
        let last: &'static [Seq] = vec![after_full + 1].leak();
        run(vec![
            step(0, activating(1), &[]),
            step(0, activated(1, 0), &[]),
            step(1, Input::Message(msg(1)), &[1]),
            step(2, Input::Message(msg(2)), &[2]),
            fetching(step(3, Input::Resynced, &[]), &[(2, None, true)]),
            fetching(step(4, fetched(1, true, full), full), next),
            step(5, fetched(1, true, last), last),
            step(6, Input::Tick, &[]),
        ]);
    }

    #[test]
    fn a_failed_catch_up_is_retried_on_the_next_tick() {
        run(vec![
            step(0, activating(1), &[]),
            step(0, activated(1, 4), &[]),
            fetching(step(1, Input::Resynced, &[]), &[(4, None, true)]),
            step(
                2,
                Input::Fetched {
                    room: room(),
                    generation: 1,
                    catch_up: true,
                    result: Err(()),
                },
                &[],
            ),
            fetching(step(3, Input::Tick, &[]), &[(4, None, true)]),
            step(4, fetched(1, true, &[5]), &[5]),
        ]);
    }

    #[test]
    fn news_of_an_old_generation_never_touches_the_new_one() {
        run(vec![
            step(0, activating(1), &[]),
            step(0, activated(1, 0), &[]),
            step(1, Input::Message(msg(2)), &[]),
            // The room is dropped and subscribed again before the old one's news arrive.
            step(2, activating(2), &[]),
            step(
                3,
                Input::Deactivated {
                    room: room(),
                    generation: 1,
                },
                &[],
            ),
            step(4, fetched(1, false, &[1, 2]), &[]),
            step(5, activated(1, 9), &[]),
            step(6, activated(2, 2), &[]),
            step(7, Input::Message(msg(3)), &[3]),
        ]);
    }

    #[test]
    fn messages_of_rooms_without_local_members_are_ignored() {
        run(vec![
            step(0, Input::Message(msg(1)), &[]),
            step(1, activating(1), &[]),
            step(1, activated(1, 1), &[]),
            step(
                2,
                Input::Deactivated {
                    room: room(),
                    generation: 1,
                },
                &[],
            ),
            step(3, Input::Message(msg(2)), &[]),
        ]);
    }
}
