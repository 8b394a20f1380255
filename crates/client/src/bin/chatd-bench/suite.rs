//! The scenarios of `scripts/bench` (issue 13), each against chatd (one node or several) or
//! the bare broadcast fixture, driven the same way so that one run gives ratios:
//! - fan-out: one sender, M members, closed loop (a window of messages in flight) or open
//!   loop (a fixed rate);
//! - pairs: P two-member rooms at a fixed total rate (or closed loop: persisted messages/s);
//! - idle: N live connections, the server's RSS per connection;
//! - history: requests/s for a room's newest 50 (chatd only);
//! - storm: N clients dropped at once reconnect and resume (chatd only): time until all are
//!   live and store calls per client.
//!
//! Every delivery is audited: each receiver must see each sender's messages once, in the
//! order sent, and (chatd) each room's seqs without a hole. A message's text carries its
//! sender, its number and its send time: `"<sender>:<k> @<µs since the epoch>"`.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chatd_client::{Client, token};
use chatd_protocol::model::UserId;
use futures_util::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::{Mutex, Semaphore},
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use crate::{cpu_seconds, rss_kib};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Source = futures_util::stream::SplitStream<Ws>;

/// What the scenarios drive.
#[derive(Clone)]
pub enum Target {
    /// chatd nodes (a user connects to `urls[user % len]`), tokens signed with `secret`.
    Chatd { urls: Vec<String>, secret: String },
    /// The bare broadcast fixture.
    Bare { url: String },
}

/// How long any one step (a connect, a frame) may take before the run fails.
const STEP: Duration = Duration::from_secs(60);
/// How long receivers may take after the last send before what is missing counts as lost.
const SETTLE: Duration = Duration::from_secs(20);
/// Connections opened at once while setting up.
const CONNECTING: usize = 128;
/// Loopback source addresses used in turn, each good for about 28,000 ports.
const SOURCES_PER_ADDRESS: usize = 20_000;

impl Target {
    fn is_bare(&self) -> bool {
        matches!(self, Target::Bare { .. })
    }

    fn node_url(&self, user: usize) -> &str {
        match self {
            Target::Chatd { urls, .. } => &urls[user % urls.len()],
            Target::Bare { url } => url,
        }
    }

    fn client(&self, run: &str, user: usize) -> Client {
        let Target::Chatd { secret, .. } = self else {
            unreachable!("REST is chatd's")
        };
        let id = UserId::parse(&user_name(run, user)).expect("bench user ids are valid");
        Client::new(
            self.node_url(user),
            token::mint(secret, &id, Duration::from_secs(3 * 3600)),
        )
    }

    /// A room of `members` (user numbers; the first creates it): its id.
    async fn room(&self, run: &str, label: &str, members: &[usize]) -> anyhow::Result<String> {
        if self.is_bare() {
            return Ok(format!("{run}-{label}"));
        }
        let owner = self.client(run, members[0]);
        let names: Vec<String> = members[1..].iter().map(|&m| user_name(run, m)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if members.len() == 2 {
            let room = retried(|| owner.open_direct(names[0])).await?;
            return Ok(room.id.to_string());
        }
        // A big group is made in steps (adding members again is harmless, so a step that timed
        // out can be retried): one request for 1,000 members can outlast the store deadline on
        // a slow store such as the MongoDB-wire stand-in.
        let mut chunks = names.chunks(GROUP_STEP);
        let first = chunks.next().unwrap_or_default();
        let room = retried(|| owner.create_group(label, first)).await?;
        for chunk in chunks {
            retried(|| owner.add_members(&room.id, chunk)).await?;
        }
        Ok(room.id.to_string())
    }

    /// A live connection for `user`: with chatd, welcome read and resumed (from `held`, per
    /// room); with the fixture, joined to `room`. Returns the frames replayed before live.
    async fn connect(
        &self,
        run: &str,
        user: usize,
        room: &str,
        held: &BTreeMap<String, u64>,
    ) -> anyhow::Result<(Ws, Vec<String>)> {
        let source = source_address(user);
        match self {
            Target::Bare { url } => {
                let ws = open(&format!("{}/?room={room}", ws_base(url)), source).await?;
                Ok((ws, Vec::new()))
            }
            Target::Chatd { .. } => {
                let client = self.client(run, user);
                let mut ws = open(&client.ws_url(), source).await?;
                let welcome = next_text(&mut ws).await?;
                if !welcome.contains("\"welcome\"") {
                    bail!("expected welcome, got {welcome}");
                }
                let resume = json!({"type": "resume", "rooms": held});
                ws.send(Message::text(resume.to_string())).await?;
                let mut replayed = Vec::new();
                loop {
                    let text = next_text(&mut ws).await?;
                    if text.contains("\"type\":\"resumed\"") {
                        return Ok((ws, replayed));
                    }
                    replayed.push(text);
                }
            }
        }
    }

    /// The frame that sends `text` to `room`.
    fn send_frame(&self, room: &str, id: &str, text: &str) -> Message {
        let frame = json!({"type": "send", "room": room, "clientMsgId": id, "text": text});
        Message::text(frame.to_string())
    }
}

/// Members per request when the suite makes a group.
const GROUP_STEP: usize = 100;

/// Setting up retries what a busy store refuses for now (503, as a client would), up to 8
/// times with growing pauses; other errors end the run.
async fn retried<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    mut call: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let mut pause = Duration::from_millis(100);
    for _ in 0..8 {
        match call().await {
            Err(e) if e.to_string().contains("503") => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            done => return done,
        }
    }
    call().await
}

fn user_name(run: &str, user: usize) -> String {
    format!("{run}-u{user}")
}

fn ws_base(url: &str) -> String {
    url.replacen("http", "ws", 1)
}

/// None (the kernel's choice, 127.0.0.1) for the first connections, then 127.0.0.2, …: one
/// source address runs out of ports near 28,000 connections to one server port.
fn source_address(user: usize) -> Option<IpAddr> {
    let step = u8::try_from(user / SOURCES_PER_ADDRESS).unwrap_or(200);
    (step > 0).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + step)))
}

async fn open(url: &str, source: Option<IpAddr>) -> anyhow::Result<Ws> {
    let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse()?;
    let host = uri.host().context("no host")?;
    let port = uri.port_u16().context("no port")?;
    let addr: SocketAddr = format!("{host}:{port}").parse()?;
    let socket = TcpSocket::new_v4()?;
    // An explicit bind picks the port before the server is known, so it must not skip the
    // ports that earlier runs left in TIME_WAIT; connecting unbound picks by the whole
    // address pair, so the first address is left to connect.
    if let Some(source) = source {
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = tokio::time::timeout(STEP, socket.connect(addr))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    // A small read buffer: 50,000 idle connections in one load generator.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(stream),
            Some(config),
        ),
    )
    .await
    .context("handshake timed out")??;
    Ok(ws)
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match tokio::time::timeout(STEP, ws.next()).await {
            Err(_) => bail!("no frame within {STEP:?}"),
            Ok(None) => bail!("connection closed"),
            Ok(Some(frame)) => {
                if let Message::Text(text) = frame? {
                    return Ok(text.to_string());
                }
            }
        }
    }
}

/// The fields of a delivered frame the audit reads (chatd's `message`, the fixture's echo of
/// the `send` frame), found by scanning rather than parsing: the load generator shares the
/// machine with the server, and a cheap reader leaves it more of the CPU.
struct Delivered<'a> {
    kind: &'a str,
    seq: Option<u64>,
    text: Option<&'a str>,
    code: Option<&'a str>,
}

impl<'a> Delivered<'a> {
    fn scan(frame: &'a str) -> Option<Self> {
        Some(Self {
            kind: string_field(frame, "type")?,
            seq: field_after(frame, "\"seq\":").and_then(|rest| {
                let end = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                rest[..end].parse().ok()
            }),
            text: string_field(frame, "text"),
            code: string_field(frame, "code"),
        })
    }
}

fn field_after<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    frame.find(key).map(|at| &frame[at + key.len()..])
}

/// A string field without escapes (the suite's texts and codes have none).
fn string_field<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    let rest = field_after(frame, &format!("\"{name}\":\""))?;
    rest.find('"').map(|end| &rest[..end])
}

/// What one receiver saw.
struct Audit {
    latencies_us: Histogram<u64>,
    deliveries: u64,
    /// A message seen again, or one from a sender before an earlier one (misordered).
    duplicated_or_misordered: u64,
    /// chatd: a seq that is not the room's previous + 1.
    seq_breaks: u64,
    errors: BTreeMap<String, u64>,
    last_k: HashMap<u32, u64>,
    last_seq: Option<u64>,
}

impl Audit {
    fn new() -> Self {
        Self {
            latencies_us: Histogram::new(3).expect("histogram"),
            deliveries: 0,
            duplicated_or_misordered: 0,
            seq_breaks: 0,
            errors: BTreeMap::new(),
            last_k: HashMap::new(),
            last_seq: None,
        }
    }

    /// Takes one frame; returns the sender of a delivered message.
    fn take(&mut self, text: &str, measure_latency_unless_from: Option<u32>) -> Option<u32> {
        let frame = Delivered::scan(text)?;
        match frame.kind {
            "message" | "send" => {}
            "error" => {
                *self
                    .errors
                    .entry(frame.code.unwrap_or("?").to_owned())
                    .or_default() += 1;
                return None;
            }
            _ => return None,
        }
        let body = frame.text?;
        let (id, stamp) = body.rsplit_once(" @")?;
        let (sender, k) = id.split_once(':')?;
        let (sender, k): (u32, u64) = (sender.parse().ok()?, k.parse().ok()?);
        self.deliveries += 1;
        // A skipped number is either late (then counted here when it comes) or lost (then
        // missing from the totals).
        if self.last_k.get(&sender).is_some_and(|&last| k <= last) {
            self.duplicated_or_misordered += 1;
        }
        let last = self.last_k.entry(sender).or_insert(k);
        *last = (*last).max(k);
        if let Some(seq) = frame.seq {
            if self.last_seq.is_some_and(|last| seq != last + 1) {
                self.seq_breaks += 1;
            }
            self.last_seq = Some(seq);
        }
        if measure_latency_unless_from != Some(sender) {
            let now = crate::now_us();
            let _ = self
                .latencies_us
                .record(now.saturating_sub(stamp.parse().unwrap_or(now)));
        }
        Some(sender)
    }
}

/// The totals of a run, merged from every receiver.
struct Totals {
    latencies_us: Histogram<u64>,
    deliveries: u64,
    duplicated_or_misordered: u64,
    seq_breaks: u64,
    errors: BTreeMap<String, u64>,
}

impl Totals {
    fn merge(audits: Vec<Audit>) -> anyhow::Result<Self> {
        let mut totals = Totals {
            latencies_us: Histogram::new(3)?,
            deliveries: 0,
            duplicated_or_misordered: 0,
            seq_breaks: 0,
            errors: BTreeMap::new(),
        };
        for audit in audits {
            totals.latencies_us.add(&audit.latencies_us)?;
            totals.deliveries += audit.deliveries;
            totals.duplicated_or_misordered += audit.duplicated_or_misordered;
            totals.seq_breaks += audit.seq_breaks;
            for (code, n) in audit.errors {
                *totals.errors.entry(code).or_default() += n;
            }
        }
        Ok(totals)
    }

    /// `sent` messages, each for `copies` receivers; a send the server refused (an `error`
    /// frame to its sender, e.g. `store_unavailable` from an overloaded store) is expected
    /// nowhere: a client retries it, and the run reports how many there were.
    fn json(&self, sent: u64, copies: u64, seconds: f64, cpu: f64) -> Value {
        let refused: u64 = self.errors.values().sum();
        let expected = sent.saturating_sub(refused) * copies;
        let ms = |q: f64| (self.latencies_us.value_at_quantile(q) as f64 / 10.0).round() / 100.0;
        json!({
            "expected_deliveries": expected,
            "refused_sends": refused,
            "deliveries": self.deliveries,
            "lost": expected.saturating_sub(self.deliveries),
            "duplicated_or_misordered": self.duplicated_or_misordered,
            "seq_breaks": self.seq_breaks,
            "errors": self.errors,
            "clean": self.deliveries == expected && self.duplicated_or_misordered == 0
                && self.seq_breaks == 0,
            "seconds": round3(seconds),
            "deliveries_per_second": (self.deliveries as f64 / seconds).round(),
            "latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": ms(1.0)},
            "server_cpu_seconds": round3(cpu),
            "server_cpu_us_per_delivery": if self.deliveries > 0 {
                round3(cpu * 1e6 / self.deliveries as f64)
            } else { 0.0 },
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The CPU seconds all server processes used so far.
fn servers_cpu(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&pid| cpu_seconds(pid)).sum()
}

/// A connection's reading half under audit, until `stop` is set and a short read times out.
/// `window` (closed loop) gets a permit back for each of the connection's own messages.
fn spawn_reader(
    mut source: Source,
    me: u32,
    window: Option<Arc<Semaphore>>,
    delivered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Audit> {
    tokio::spawn(async move {
        let mut audit = Audit::new();
        loop {
            let frame = match tokio::time::timeout(Duration::from_millis(200), source.next()).await
            {
                Err(_) if stop.load(Ordering::Relaxed) => break,
                Err(_) => continue,
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => break,
            };
            if let Some(sender) = audit.take(&frame, Some(me)) {
                delivered.fetch_add(1, Ordering::Relaxed);
                if sender == me
                    && let Some(window) = &window
                {
                    window.add_permits(1);
                }
            }
        }
        audit
    })
}

/// Waits until `delivered` reaches `expected` or `SETTLE` passed since `from`.
async fn settle(delivered: &AtomicU64, expected: u64) -> Instant {
    let from = Instant::now();
    while delivered.load(Ordering::Relaxed) < expected && from.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instant::now()
}

/// How a scenario sends.
#[derive(Clone, Copy)]
pub enum Pace {
    /// Each sender keeps at most this many of its messages not yet echoed back.
    Window(usize),
    /// So many messages per second in all, spread evenly.
    Rate(u64),
}

/// One sender, `members` in one room, `messages` sent at `pace`.
pub async fn fanout(
    target: &Target,
    pids: &[u32],
    members: usize,
    messages: u64,
    pace: Pace,
) -> anyhow::Result<Value> {
    let run = run_id();
    let users: Vec<usize> = (0..members).collect();
    let room = target.room(&run, "fanout", &users).await?;
    let conns = connect_all(target, &run, &users, |_| room.clone()).await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let window = match pace {
        Pace::Window(w) => Some(Arc::new(Semaphore::new(w))),
        Pace::Rate(_) => None,
    };
    let mut sinks = Vec::new();
    let mut readers = Vec::new();
    for (i, ws) in conns.into_iter().enumerate() {
        let (sink, source) = ws.split();
        sinks.push(sink);
        let window = if i == 0 { window.clone() } else { None };
        readers.push(spawn_reader(
            source,
            i as u32,
            window,
            delivered.clone(),
            stop.clone(),
        ));
    }
    let sender = &mut sinks[0];
    let cpu_before = servers_cpu(pids)?;
    let started = Instant::now();
    for k in 0..messages {
        match pace {
            Pace::Window(_) => window.as_ref().expect("a window").acquire().await?.forget(),
            Pace::Rate(rate) => {
                let due = started + Duration::from_secs_f64(k as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let text = format!("0:{k} @{}", crate::now_us());
        sender
            .send(target.send_frame(&room, &format!("f{k}"), &text))
            .await?;
    }
    let sending = started.elapsed().as_secs_f64();
    let done = settle(&delivered, messages * members as u64).await;
    let cpu = servers_cpu(pids)? - cpu_before;
    let totals = finish(readers, stop).await?;
    let mut result = totals.json(
        messages,
        members as u64,
        (done - started).as_secs_f64(),
        cpu,
    );
    result["members"] = json!(members);
    result["messages"] = json!(messages);
    result["sending_seconds"] = json!(round3(sending));
    result["pace"] = pace_json(pace);
    Ok(result)
}

/// `pairs` two-member rooms; every user sends to their partner at `pace` (a total rate, or a
/// window per user).
pub async fn pairs(
    target: &Target,
    pids: &[u32],
    pairs: usize,
    pace: Pace,
    seconds: f64,
) -> anyhow::Result<Value> {
    let run = run_id();
    let users: Vec<usize> = (0..pairs * 2).collect();
    let rooms: Vec<String> = stream::iter(0..pairs)
        .map(|p| {
            let (target, run) = (target, &run);
            async move {
                target
                    .room(run, &format!("pair{p}"), &[2 * p, 2 * p + 1])
                    .await
            }
        })
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let conns = connect_all(target, &run, &users, |u| rooms[u / 2].clone()).await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut sinks = Vec::new();
    let mut windows = Vec::new();
    let mut readers = Vec::new();
    for (i, ws) in conns.into_iter().enumerate() {
        let (sink, source) = ws.split();
        sinks.push(Arc::new(Mutex::new(sink)));
        let window = match pace {
            Pace::Window(w) => Some(Arc::new(Semaphore::new(w))),
            Pace::Rate(_) => None,
        };
        windows.push(window.clone());
        readers.push(spawn_reader(
            source,
            i as u32,
            window,
            delivered.clone(),
            stop.clone(),
        ));
    }
    let cpu_before = servers_cpu(pids)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    match pace {
        Pace::Rate(rate) => {
            let total = (rate as f64 * seconds) as u64;
            let mut numbers = vec![0u64; users.len()];
            for n in 0..total {
                let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let user = (n as usize * 7919) % users.len();
                let k = numbers[user];
                numbers[user] += 1;
                let text = format!("{user}:{k} @{}", crate::now_us());
                let frame = target.send_frame(&rooms[user / 2], &format!("p{k}"), &text);
                sinks[user].lock().await.send(frame).await?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        Pace::Window(_) => {
            let mut senders = Vec::new();
            for (user, sink) in sinks.iter().enumerate() {
                let (sink, window) = (sink.clone(), windows[user].clone().expect("a window"));
                let (room, sent, target) = (rooms[user / 2].clone(), sent.clone(), target.clone());
                senders.push(tokio::spawn(async move {
                    let mut k = 0u64;
                    while Instant::now() < deadline {
                        let permit = tokio::time::timeout_at(deadline.into(), window.acquire());
                        let Ok(permit) = permit.await else { break };
                        permit?.forget();
                        let text = format!("{user}:{k} @{}", crate::now_us());
                        let frame = target.send_frame(&room, &format!("p{k}"), &text);
                        sink.lock().await.send(frame).await?;
                        sent.fetch_add(1, Ordering::Relaxed);
                        k += 1;
                    }
                    anyhow::Ok(())
                }));
            }
            for sender in senders {
                sender.await??;
            }
        }
    }
    let sending = started.elapsed().as_secs_f64();
    let done = settle(&delivered, sent.load(Ordering::Relaxed) * 2).await;
    let cpu = servers_cpu(pids)? - cpu_before;
    let totals = finish(readers, stop).await?;
    let seconds_taken = (done - started).as_secs_f64();
    let mut result = totals.json(sent.load(Ordering::Relaxed), 2, seconds_taken, cpu);
    let messages = sent.load(Ordering::Relaxed);
    result["pairs"] = json!(pairs);
    result["messages"] = json!(messages);
    result["sending_seconds"] = json!(round3(sending));
    result["messages_per_second"] = json!((messages as f64 / seconds_taken).round());
    result["pace"] = pace_json(pace);
    // Kept open until here: closing earlier would end a reader before it settled.
    drop(sinks);
    Ok(result)
}

fn pace_json(pace: Pace) -> Value {
    match pace {
        Pace::Window(w) => json!({"closed_loop_window": w}),
        Pace::Rate(r) => json!({"open_loop_rate": r}),
    }
}

async fn finish(
    readers: Vec<tokio::task::JoinHandle<Audit>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Totals> {
    stop.store(true, Ordering::Relaxed);
    let mut audits = Vec::new();
    for reader in readers {
        audits.push(reader.await?);
    }
    Totals::merge(audits)
}

/// Opens a live connection for every user (to `room_of(user)` on the fixture).
async fn connect_all(
    target: &Target,
    run: &str,
    users: &[usize],
    room_of: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<Ws>> {
    let none = BTreeMap::new();
    stream::iter(users.iter().map(|&u| (u, room_of(u))))
        .map(|(user, room)| {
            let none = &none;
            async move { Ok(target.connect(run, user, &room, none).await?.0) }
        })
        .buffered(CONNECTING)
        .collect::<Vec<anyhow::Result<Ws>>>()
        .await
        .into_iter()
        .collect()
}

fn run_id() -> String {
    format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}

/// `n` live connections that do nothing: the server's RSS per connection. With chatd each
/// user shares a direct room with a partner, so connections hold real subscriptions.
pub async fn idle(target: &Target, pid: u32, n: usize) -> anyhow::Result<Value> {
    let run = run_id();
    let users: Vec<usize> = (0..n).collect();
    if !target.is_bare() {
        stream::iter((0..n).step_by(2))
            .map(|u| {
                let (target, run) = (target, &run);
                async move { target.room(run, "idle", &[u, u + 1]).await }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
    }
    // One connection opened and closed first, so lazily built state counts in "before".
    drop(connect_all(target, &run, &[0], |u| format!("idle{}", u / 2)).await?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let conns = connect_all(target, &run, &users, |u| format!("idle{}", u / 2)).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    // RSS settles once the handshakes' transient buffers are returned.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    let per_conn = (after.saturating_sub(before) as f64 * 1024.0) / n as f64;
    drop(conns);
    Ok(json!({
        "connections": n,
        "server_rss_before_kib": before,
        "server_rss_after_kib": after,
        "bytes_per_connection": per_conn.round(),
        "connect_seconds": round3(connect_secs),
    }))
}

/// Requests/s for a room's newest 50 messages, from `clients` members at once for `seconds`.
pub async fn history(target: &Target, clients: usize, seconds: f64) -> anyhow::Result<Value> {
    let run = run_id();
    let users: Vec<usize> = (0..clients.max(2)).collect();
    let room = target.room(&run, "history", &users).await?;
    let owner = target.client(&run, 0);
    let room_id = chatd_protocol::model::RoomId::parse(&room).context("room id")?;
    // 200 messages to read from, sent over REST by the members in turn.
    for k in 0..200 {
        let client = target.client(&run, k % users.len());
        let (id, text) = (format!("h{k}"), format!("history {k}"));
        retried(|| client.post_message(&room_id, &id, &text)).await?;
    }
    drop(owner);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let workers: Vec<_> = users
        .iter()
        .map(|&u| {
            let client = target.client(&run, u);
            let room_id = room_id.clone();
            tokio::spawn(async move {
                let mut latencies = Histogram::<u64>::new(3)?;
                let mut bad = 0u64;
                while Instant::now() < deadline {
                    let at = Instant::now();
                    let newest = || client.history_page(&room_id, "order=desc&limit=50");
                    let (page, _) = retried(newest).await?;
                    let _ = latencies.record(at.elapsed().as_micros() as u64);
                    let ordered = page.windows(2).all(|w| w[0].seq == w[1].seq + 1);
                    if page.len() != 50 || !ordered {
                        bad += 1;
                    }
                }
                anyhow::Ok((latencies, bad))
            })
        })
        .collect();
    let mut latencies = Histogram::<u64>::new(3)?;
    let mut bad = 0;
    for worker in workers {
        let (l, b) = worker.await??;
        latencies.add(&l)?;
        bad += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |q: f64| (latencies.value_at_quantile(q) as f64 / 10.0).round() / 100.0;
    Ok(json!({
        "clients": users.len(),
        "requests": latencies.len(),
        "wrong_pages": bad,
        "clean": bad == 0,
        "requests_per_second": (latencies.len() as f64 / elapsed).round(),
        "latency_ms": {"p50": ms(0.5), "p99": ms(0.99)},
    }))
}

/// `n` clients, each in a direct room and `groups` shared groups, all live; then every
/// socket is dropped at once and every client reconnects and resumes from what it holds
/// (`CONNECTING` handshakes at a time). Reports the time until all are live again and the
/// store calls each reconnect cost (the nodes' `chatd_store_calls_total`).
pub async fn storm(target: &Target, n: usize, groups: usize) -> anyhow::Result<Value> {
    let Target::Chatd { urls, .. } = target else {
        bail!("the storm needs chatd");
    };
    let run = run_id();
    let users: Vec<usize> = (0..n).collect();
    let mut rooms_of: Vec<Vec<String>> = vec![Vec::new(); n];
    let directs: Vec<String> = stream::iter((0..n).step_by(2))
        .map(|u| {
            let run = &run;
            async move { target.room(run, "storm", &[u, u + 1]).await }
        })
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    for (u, rooms) in rooms_of.iter_mut().enumerate() {
        rooms.push(directs[u / 2].clone());
    }
    // Groups of up to 1,000 members (the default cap), each client in `groups` of them.
    let per_group = 1000.min(n);
    for g in 0..groups {
        for chunk in 0..n.div_ceil(per_group) {
            let members: Vec<usize> =
                (chunk * per_group..((chunk + 1) * per_group).min(n)).collect();
            if members.len() < 3 {
                continue;
            }
            let room = target.room(&run, &format!("storm-g{g}"), &members).await?;
            for &m in &members {
                rooms_of[m].push(room.clone());
            }
        }
    }
    let conns = connect_all(target, &run, &users, |_| String::new()).await?;
    let calls_before = store_calls(urls).await?;
    drop(conns);
    let dropped = Instant::now();
    let held: Vec<BTreeMap<String, u64>> = rooms_of
        .iter()
        .map(|rooms| rooms.iter().map(|r| (r.clone(), 0)).collect())
        .collect();
    let conns: Vec<Ws> = stream::iter(users.iter())
        .map(|&user| {
            let (run, held) = (&run, &held[user]);
            async move { Ok::<_, anyhow::Error>(target.connect(run, user, "", held).await?.0) }
        })
        .buffer_unordered(CONNECTING)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let all_live = dropped.elapsed().as_secs_f64();
    let calls_after = store_calls(urls).await?;
    let mut per_call: BTreeMap<String, f64> = BTreeMap::new();
    for (call, after) in &calls_after {
        let delta = after - calls_before.get(call).copied().unwrap_or(0.0);
        if delta > 0.0 {
            per_call.insert(call.clone(), round3(delta / n as f64));
        }
    }
    let total: f64 = per_call.values().sum();
    drop(conns);
    Ok(json!({
        "clients": n,
        "rooms_per_client": 1 + groups,
        "seconds_until_all_live": round3(all_live),
        "store_calls_per_client": round3(total),
        "store_calls_per_client_by_call": per_call,
    }))
}

/// Every node's `chatd_store_calls_total`, summed per call.
async fn store_calls(urls: &[String]) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut calls = BTreeMap::new();
    for url in urls {
        let text = reqwest::get(format!("{url}/metrics")).await?.text().await?;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("chatd_store_calls_total{call=\"") else {
                continue;
            };
            let Some((call, value)) = rest.split_once("\"} ") else {
                continue;
            };
            *calls.entry(call.to_owned()).or_default() += value.trim().parse::<f64>()?;
        }
    }
    Ok(calls)
}
