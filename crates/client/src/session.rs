//! A client that behaves like the JS SDK: it survives reconnects, node deaths and retries
//! without losing, repeating or misordering anything it shows.
//!
//! - On every (re)connect it resumes each room from the highest seq it holds without a gap.
//! - Every message it sends keeps its clientMsgId until acknowledged; unacknowledged ones are
//!   sent again after a reconnect, after a retryable error, or when no ack came in time (the
//!   server's idempotency makes that safe).
//! - Messages go into a [`RoomLog`] per room; a gap that stays open is filled from REST history.
//!
//! It also measures what a load test needs: end-to-end latency (when message texts carry
//! their send time, see [`Session::stamp`]), frames that arrived twice or out of order,
//! reconnects.
//!
//! Over 400 lines because the rules (reconnect, resume, resend, gap fill) are one state machine around one connection; the statistics are in `stats`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::bail;
use rand::Rng;

use chatd_protocol::{
    ClientAction, ErrorFrame, close_action,
    model::{RoomId, Seq},
};

use super::{
    Client, ConnSender, Connection, Incoming, Inserted, RoomLog, ServerFrame,
    stats::{SessionStats, Tally, now_us},
};

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Where to connect; may differ from the REST base (e.g. a load balancer).
    pub ws_url: String,
    /// How long a gap may stay open before it is read from REST history.
    pub gap_wait: Duration,
    /// Pause between two new messages (resends are not paced).
    pub send_interval: Duration,
    /// New messages sent but not yet acknowledged, at most (a window, like the SDK's).
    pub max_in_flight: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl SessionConfig {
    pub fn new(ws_url: String) -> Self {
        Self {
            ws_url,
            gap_wait: Duration::from_millis(500),
            send_interval: Duration::from_millis(10),
            max_in_flight: 16,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(3),
        }
    }
}

/// A message this client wants stored.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub room: RoomId,
    pub client_msg_id: String,
    pub text: String,
    /// After a retryable error: when to send it again. A frame is never lost on a live
    /// connection, so without an error a message is only sent again after a reconnect.
    retry_at: Option<Instant>,
    /// Append the send time to the text when first sent (see [`Session::stamp`]).
    stamp: bool,
}

pub struct Session {
    rest: Client,
    config: SessionConfig,
    logs: BTreeMap<RoomId, RoomLog>,
    /// New messages not sent yet, in order.
    outbox: VecDeque<Outgoing>,
    /// Sent, not yet acknowledged, by clientMsgId.
    unacked: BTreeMap<String, Outgoing>,
    /// clientMsgId -> (room, seq) of every acknowledged message.
    acks: HashMap<String, (RoomId, Seq)>,
    /// When each open gap was first seen.
    gaps_seen: HashMap<RoomId, Instant>,
    /// Per room, the last seq received on the current connection.
    last_on_connection: HashMap<RoomId, Seq>,
    reported_done: bool,
    stats: SessionStats,
}

/// Why a connection ended.
enum Ended {
    Finished,
    Closed(u16),
}

impl Session {
    pub fn new(rest: Client, config: SessionConfig) -> Self {
        Self {
            rest,
            config,
            logs: BTreeMap::new(),
            outbox: VecDeque::new(),
            unacked: BTreeMap::new(),
            acks: HashMap::new(),
            gaps_seen: HashMap::new(),
            last_on_connection: HashMap::new(),
            reported_done: false,
            stats: SessionStats::default(),
        }
    }

    /// A text that carries its send time, so receivers can measure end-to-end latency.
    pub fn stamp(label: &str) -> String {
        super::stats::stamp(label)
    }

    /// Follows a room from its first message.
    pub fn track(&mut self, room: RoomId) {
        self.logs.entry(room).or_default();
    }

    /// Queues a message; it is sent when the session runs.
    pub fn queue(&mut self, room: RoomId, client_msg_id: String, text: String) {
        self.outbox.push_back(Outgoing {
            room,
            client_msg_id,
            text,
            retry_at: None,
            stamp: false,
        });
    }

    /// Queues a message whose text gets its send time appended when it is first sent, so
    /// receivers measure end-to-end latency (not time spent in this queue).
    pub fn queue_stamped(&mut self, room: RoomId, client_msg_id: String, label: String) {
        self.outbox.push_back(Outgoing {
            room,
            client_msg_id,
            text: label,
            retry_at: None,
            stamp: true,
        });
    }

    pub fn log(&self, room: &RoomId) -> Option<&RoomLog> {
        self.logs.get(room)
    }

    pub fn logs(&self) -> &BTreeMap<RoomId, RoomLog> {
        &self.logs
    }

    pub fn acks(&self) -> &HashMap<String, (RoomId, Seq)> {
        &self.acks
    }

    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Nothing left to send or to be acknowledged.
    pub fn all_acked(&self) -> bool {
        self.outbox.is_empty() && self.unacked.is_empty()
    }

    /// Holds, without a gap, every message the tally knows was acked in each tracked room.
    pub fn caught_up(&self, tally: &Tally) -> bool {
        self.logs
            .iter()
            .all(|(room, log)| log.contiguous() >= tally.max_acked(room))
    }

    /// Runs (reconnecting as needed) until this session has sent everything, every sender
    /// of the tally is done, and it holds everything acked in its rooms; or until `deadline`.
    pub async fn run(&mut self, tally: &Tally, deadline: Instant) -> anyhow::Result<()> {
        let mut backoff = self.config.reconnect_min;
        loop {
            if self.finished(tally) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "deadline passed: {} unacked, {} queued",
                    self.unacked.len(),
                    self.outbox.len()
                );
            }
            let ended = self.connected(tally, deadline).await;
            let pause = match ended {
                Ok(Ended::Finished) => return Ok(()),
                Ok(Ended::Closed(code)) => {
                    *self.stats.closes.entry(code).or_default() += 1;
                    if close_action(code) == ClientAction::Now {
                        self.config.reconnect_min
                    } else {
                        backoff
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connection attempt failed");
                    backoff
                }
            };
            self.stats.reconnects += 1;
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
            let jitter = rand::rng().random_range(0.5..1.5);
            tokio::time::sleep(pause.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(self.config.reconnect_max);
        }
    }

    fn finished(&mut self, tally: &Tally) -> bool {
        if self.all_acked() && !self.reported_done {
            self.reported_done = true;
            tally.sender_done();
        }
        self.reported_done && tally.all_sent() && self.caught_up(tally)
    }

    async fn connected(&mut self, tally: &Tally, deadline: Instant) -> anyhow::Result<Ended> {
        let (mut tx, mut rx) = Connection::open(&self.config.ws_url).await?.split();
        match rx.event(Duration::from_secs(10)).await? {
            ServerFrame::Welcome { .. } => {}
            ServerFrame::Error(ErrorFrame { code, message, .. }) => {
                bail!("refused: {code}: {message}")
            }
            other => bail!("expected welcome, got {other:?}"),
        }
        self.last_on_connection.clear();
        let resume = self
            .logs
            .iter()
            .map(|(room, log)| (room.clone(), log.contiguous()))
            .collect();
        tx.resume(&resume).await?;
        // Everything unacknowledged goes again: the server answers a stored one with its ack.
        for outgoing in self.unacked.values_mut() {
            tx.send_message(&outgoing.room, &outgoing.client_msg_id, &outgoing.text)
                .await?;
            outgoing.retry_at = None;
            self.stats.resent += 1;
        }
        let mut send_tick =
            tokio::time::interval(self.config.send_interval.max(Duration::from_micros(1)));
        let mut check = tokio::time::interval(Duration::from_millis(100));
        loop {
            if self.finished(tally) {
                tx.close().await;
                return Ok(Ended::Finished);
            }
            if Instant::now() >= deadline {
                bail!("deadline passed");
            }
            tokio::select! {
                incoming = rx.next(Duration::from_secs(30)) => match incoming? {
                    Incoming::Event(event) => self.on_event(event, tally).await?,
                    Incoming::Closed { code, .. } => return Ok(Ended::Closed(code)),
                },
                _ = send_tick.tick(), if !self.outbox.is_empty() && self.unacked.len() < self.config.max_in_flight => {
                    let mut outgoing = self.outbox.pop_front().expect("not empty");
                    if std::mem::take(&mut outgoing.stamp) {
                        outgoing.text = Self::stamp(&outgoing.text);
                    }
                    // Unacked before it is written: a write that fails (the node closed the
                    // socket) leaves it to be sent again after the reconnect, not dropped.
                    let (room, id, text) =
                        (outgoing.room.clone(), outgoing.client_msg_id.clone(), outgoing.text.clone());
                    self.unacked.insert(id.clone(), outgoing);
                    self.stats.sent += 1;
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    tx.send_message(&room, &id, &text).await?;
                }
                _ = check.tick() => {
                    self.fill_gaps().await?;
                    self.retry_due(&mut tx).await?;
                }
            }
        }
    }

    async fn on_event(&mut self, event: ServerFrame, tally: &Tally) -> anyhow::Result<()> {
        match event {
            ServerFrame::Message(message) => {
                self.stats.frames += 1;
                let last = self
                    .last_on_connection
                    .entry(message.room.clone())
                    .or_default();
                if message.seq < *last {
                    self.stats.misordered_frames += 1;
                }
                *last = (*last).max(message.seq);
                if let Some(sent_us) = message
                    .text
                    .rsplit_once(" @")
                    .and_then(|(_, t)| t.parse::<u64>().ok())
                {
                    self.stats
                        .latencies_us
                        .push(now_us().saturating_sub(sent_us));
                }
                let log = self.logs.entry(message.room.clone()).or_default();
                if log.insert(message) == Inserted::Duplicate {
                    self.stats.duplicate_frames += 1;
                } else {
                    tally.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            ServerFrame::Ack {
                client_msg_id,
                room,
                seq,
                ..
            } => {
                if self.unacked.remove(&client_msg_id).is_some() {
                    self.stats.acked += 1;
                    tally.acked.fetch_add(1, Ordering::Relaxed);
                }
                tally.acked(&room, seq);
                self.acks.insert(client_msg_id, (room, seq));
            }
            ServerFrame::Error(ErrorFrame {
                code,
                client_msg_id: Some(id),
                retry_after_ms,
                ..
            }) => {
                if code.retryable() {
                    *self.stats.retried.entry(code.to_string()).or_default() += 1;
                    if let Some(outgoing) = self.unacked.get_mut(&id) {
                        let wait = Duration::from_millis(retry_after_ms.unwrap_or(300));
                        outgoing.retry_at = Some(Instant::now() + wait);
                    }
                } else {
                    *self.stats.rejected.entry(code.to_string()).or_default() += 1;
                    self.unacked.remove(&id);
                }
            }
            ServerFrame::Resumed { rooms } => {
                for (room, resumed) in rooms {
                    if resumed.more {
                        // More than the server replays: page the rest over REST.
                        self.fill_from(&room).await?;
                    }
                }
            }
            ServerFrame::RoomAdded { room } => {
                self.track(room.id.clone());
                self.fill_from(&room.id).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads everything after what the room's log holds without a gap.
    async fn fill_from(&mut self, room: &RoomId) -> anyhow::Result<()> {
        let after = self.logs.get(room).map_or(0, RoomLog::contiguous);
        let messages = self.rest.history_after(room, after).await?;
        let log = self.logs.entry(room.clone()).or_default();
        for message in messages {
            log.insert(message);
        }
        Ok(())
    }

    async fn fill_gaps(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (room, log) in &self.logs {
            match log.gap() {
                Some((after, before)) => {
                    let seen = *self.gaps_seen.entry(room.clone()).or_insert(now);
                    if now.duration_since(seen) >= self.config.gap_wait {
                        due.push((room.clone(), after, before));
                    }
                }
                None => {
                    self.gaps_seen.remove(room);
                }
            }
        }
        for (room, after, before) in due {
            self.stats.gap_fills += 1;
            let (messages, _) = self
                .rest
                .history_page(&room, &format!("after={after}&before={before}&limit=200"))
                .await?;
            let log = self.logs.entry(room.clone()).or_default();
            for message in messages {
                log.insert(message);
            }
            self.gaps_seen.remove(&room);
        }
        Ok(())
    }

    /// Sends again what a retryable error asked to retry, once its wait is over.
    async fn retry_due(&mut self, tx: &mut ConnSender) -> anyhow::Result<()> {
        let now = Instant::now();
        for outgoing in self.unacked.values_mut() {
            if outgoing.retry_at.is_some_and(|at| at <= now) {
                tx.send_message(&outgoing.room, &outgoing.client_msg_id, &outgoing.text)
                    .await?;
                outgoing.retry_at = None;
                self.stats.resent += 1;
            }
        }
        Ok(())
    }
}
