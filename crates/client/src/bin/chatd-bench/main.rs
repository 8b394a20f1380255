//! Load runs against a running node or cluster, or the bare broadcast fixture (see
//! scripts/bench and docs/benchmarks.md). The suite's scenarios are in [`suite`]:
//!
//!   chatd-bench [--bare] fanout --members M --messages K (--window W | --rate R)
//!   chatd-bench [--bare] pairs --pairs P (--rate R | --window W) --seconds S
//!   chatd-bench [--bare] idle --pid P --connections N
//!   chatd-bench history --clients C --seconds S
//!   chatd-bench storm --clients N --groups G
//!   chatd-bench group --pid P [--chatter]        a busy group: frames and server CPU, with or
//!                                                without the SDK's receipts and typing
//!   chatd-bench slow-reader --pid P              a reader that stops: memory stays flat
//!
//! Each prints one JSON object. `--url` takes several nodes, comma-separated; `--pid` the
//! server processes whose CPU counts. Figures are comparisons within one run on a shared,
//! noisy machine; they are reported, never asserted by tests.

mod suite;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chatd_client::{Client, Connection, ServerFrame, token};
use chatd_protocol::{DEV_SECRET, model::UserId};
use clap::{Parser, Subcommand};
use futures_util::{StreamExt, stream};

#[derive(Parser)]
#[command(about = "Quick load runs against a running chatd node")]
struct Cli {
    /// The node's base URL; for a cluster, every node's, comma-separated (users are spread
    /// over them in turn).
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// Drive the bare broadcast fixture (bare-broadcast) at `--url` instead of chatd.
    #[arg(long, global = true)]
    bare: bool,
    /// The server processes whose CPU time the suite's scenarios report, comma-separated.
    #[arg(long, global = true, value_delimiter = ',')]
    pids: Vec<u32>,
    /// The node's auth.jwt_secret (to mint tokens).
    #[arg(long, default_value = DEV_SECRET, global = true)]
    secret: String,
    /// The most seconds a scenario may take, set-up included: past it the run fails (a
    /// stalled server ends the run instead of holding the suite).
    #[arg(long, default_value_t = 600, global = true)]
    within: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Opens N idle, live connections and reports the server's RSS per connection.
    Idle {
        /// The server's process id (its RSS is read from /proc).
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 5000)]
        connections: usize,
    },
    /// One sender, M members: a window of messages in flight, or a fixed rate.
    Fanout {
        #[arg(long, default_value_t = 500)]
        members: usize,
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        /// Closed loop: at most this many of the sender's messages not yet echoed back.
        #[arg(long, conflicts_with = "rate")]
        window: Option<usize>,
        /// Open loop: messages per second.
        #[arg(long)]
        rate: Option<u64>,
    },
    /// P two-member rooms: a fixed total rate, or a window per user (persisted messages/s).
    Pairs {
        #[arg(long, default_value_t = 500)]
        pairs: usize,
        #[arg(long, conflicts_with = "rate")]
        window: Option<usize>,
        #[arg(long)]
        rate: Option<u64>,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Requests/s for a room's newest 50 messages.
    History {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// N clients dropped at once reconnect and resume: time until all are live, store calls
    /// per client.
    Storm {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Shared groups each client is in, besides its direct room.
        #[arg(long, default_value_t = 0)]
        groups: usize,
    },
    /// A busy group at a steady rate: frames each way and the server's CPU, with or without
    /// the chatter an SDK adds (delivered and read reports from every member, typing before
    /// each message).
    Group {
        /// The server's process id (its CPU time is read from /proc).
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 500)]
        members: usize,
        /// Messages per second into the group, from 10 senders.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Every member reports delivered (every 500 ms) and read (every second) like the SDK,
        /// and senders type before each message.
        #[arg(long)]
        chatter: bool,
    },
    /// One member stops reading while messages flow into its room: the server's memory must
    /// stay flat, the reader must be cut off (4100) and must resume without loss.
    SlowReader {
        /// The server's process id (its RSS is sampled).
        #[arg(long)]
        pid: u32,
        /// Messages per second into the room.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// The process's user + system CPU time, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat format")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let per_second = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Ok(ticks / per_second)
}

struct Bench {
    url: String,
    secret: String,
    run: String,
}

impl Bench {
    fn client(&self, user: &str) -> Client {
        let user = UserId::parse(user).expect("bench user ids are valid");
        Client::new(
            &self.url,
            token::mint(&self.secret, &user, Duration::from_secs(3600)),
        )
    }

    fn user(&self, i: usize) -> String {
        format!("{}-u{i}", self.run)
    }

    /// A live connection: welcome read, resume sent, `resumed` read.
    async fn connect(&self, client: &Client) -> anyhow::Result<Connection> {
        let mut conn = client.connect().await?;
        match conn.event(Duration::from_secs(30)).await? {
            ServerFrame::Welcome { .. } => {}
            other => bail!("expected welcome, got {other:?}"),
        }
        conn.resume(&BTreeMap::new()).await?;
        loop {
            if let ServerFrame::Resumed { .. } = conn.event(Duration::from_secs(30)).await? {
                return Ok(conn);
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bench = Bench {
        url: cli.url.clone(),
        secret: cli.secret.clone(),
        run: format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..6]),
    };
    let target = if cli.bare {
        suite::Target::Bare {
            url: cli.url.clone(),
        }
    } else {
        suite::Target::Chatd {
            urls: cli.url.split(',').map(str::to_owned).collect(),
            secret: cli.secret.clone(),
        }
    };
    let within = Duration::from_secs(cli.within);
    match tokio::time::timeout(within, run(&cli, &bench, &target)).await {
        Ok(result) => result,
        Err(_) => bail!("the scenario did not finish within {} s", cli.within),
    }
}

/// Runs the scenario the command line names and prints its report.
async fn run(cli: &Cli, bench: &Bench, target: &suite::Target) -> anyhow::Result<()> {
    let pace = |window: Option<usize>, rate: Option<u64>| match (window, rate) {
        (_, Some(rate)) => suite::Pace::Rate(rate),
        (window, None) => suite::Pace::Window(window.unwrap_or(64)),
    };
    let report = match cli.command {
        Command::Idle { pid, connections } => suite::idle(target, pid, connections).await?,
        Command::Fanout {
            members,
            messages,
            window,
            rate,
        } => suite::fanout(target, &cli.pids, members, messages, pace(window, rate)).await?,
        Command::Pairs {
            pairs,
            window,
            rate,
            seconds,
        } => suite::pairs(target, &cli.pids, pairs, pace(window, rate), seconds).await?,
        Command::History { clients, seconds } => suite::history(target, clients, seconds).await?,
        Command::Storm { clients, groups } => suite::storm(target, clients, groups).await?,
        Command::SlowReader { pid, rate, seconds } => {
            return slow_reader(bench, pid, rate, seconds).await;
        }
        Command::Group {
            pid,
            members,
            rate,
            seconds,
            chatter,
        } => return group(bench, pid, members, rate, seconds, chatter).await,
    };
    println!("{report}");
    Ok(())
}

/// Microseconds since the epoch (what the suite's texts carry).
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn slow_reader(bench: &Bench, pid: u32, rate: u64, seconds: u64) -> anyhow::Result<()> {
    // Several senders: one connection's sends are handled one after another, so a single one
    // could not keep up the rate on its own.
    const SENDERS: usize = 10;
    let names: Vec<String> = (0..=SENDERS).map(|i| bench.user(i)).collect();
    let reader_name = names[SENDERS].clone();
    let others: Vec<&str> = names[1..].iter().map(String::as_str).collect();
    let room = bench
        .client(&names[0])
        .create_group("busy", &others)
        .await?;
    let reader_client = bench.client(&reader_name);
    let stalled = bench.connect(&reader_client).await?; // live, and from now on never read
    let mut senders = Vec::new();
    let mut drains = Vec::new();
    for name in &names[..SENDERS] {
        let (tx, mut rx) = bench.connect(&bench.client(name)).await?.split();
        // Senders read their acks and echoes, so they are not slow consumers themselves.
        drains.push(tokio::spawn(async move {
            while rx.event(Duration::from_secs(30)).await.is_ok() {}
        }));
        senders.push(tx);
    }

    let before = rss_kib(pid)?;
    let mut samples = vec![(0u64, before)];
    let total = rate * seconds;
    let started = Instant::now();
    let text = "m".repeat(200);
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let sender = &mut senders[n as usize % SENDERS];
        sender
            .send_message(&room.id, &format!("s{n}"), &text)
            .await?;
        if n % rate == rate - 1 {
            samples.push((n / rate + 1, rss_kib(pid)?));
        }
    }
    let sent_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;

    // The stalled reader now reads: what was written before the cut, then the close.
    let mut stalled = stalled;
    let mut received = 0u64;
    let mut last_seq = 0;
    let close = loop {
        match stalled.next(Duration::from_secs(30)).await? {
            chatd_client::Incoming::Event(ServerFrame::Message(m)) => {
                received += 1;
                last_seq = m.seq;
            }
            chatd_client::Incoming::Event(_) => {}
            chatd_client::Incoming::Closed { code, .. } => break code,
        }
    };
    // It resumes from what it holds and pages the rest from history, as the SDK does.
    let rest = reader_client.history_after(&room.id, last_seq).await?;
    let holds = last_seq + rest.len() as u64;
    for drain in drains {
        drain.abort();
    }
    let max = samples.iter().map(|s| s.1).max().unwrap_or(before);
    println!(
        "{}",
        serde_json::json!({
            "rate_per_second": rate,
            "seconds": (sent_seconds * 10.0).round() / 10.0,
            "messages": total,
            "server_rss_kib": {"before": before, "max_during": max, "after": after},
            "rss_samples_kib": samples,
            "stalled_reader": {
                "received_before_cut": received,
                "close_code": close,
                "holds_after_resume": holds,
                "lost": total.saturating_sub(holds),
            },
        })
    );
    Ok(())
}

/// What one member of the busy group saw and sent.
#[derive(Default)]
struct MemberTally {
    frames_in: BTreeMap<String, u64>,
    frames_out: u64,
    messages: u64,
}

async fn group(
    bench: &Bench,
    pid: u32,
    members: usize,
    rate: u64,
    seconds: u64,
    chatter: bool,
) -> anyhow::Result<()> {
    const SENDERS: usize = 10;
    let names: Vec<String> = (0..members).map(|i| bench.user(i)).collect();
    let others: Vec<&str> = names[1..].iter().map(String::as_str).collect();
    let room = bench
        .client(&names[0])
        .create_group("busy", &others)
        .await?;
    let conns: Vec<Connection> = stream::iter(names.iter())
        .map(|name| async move {
            let conn = bench.connect(&bench.client(name)).await?;
            Ok::<_, anyhow::Error>(conn.with_ambient())
        })
        .buffer_unordered(128)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let total = rate * seconds;
    let done = Arc::new(GroupRun::default());
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let (tx, rx) = conn.split();
        let tx = Arc::new(tokio::sync::Mutex::new(tx));
        if i < SENDERS {
            senders.push(tx.clone());
        }
        tasks.push(tokio::spawn(member(
            rx,
            tx,
            room.id.clone(),
            chatter,
            done.clone(),
        )));
    }
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let text = "m".repeat(100);
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut sender = senders[n as usize % SENDERS].lock().await;
        if chatter {
            let typing = serde_json::json!({"type": "typing", "room": room.id, "typing": true});
            sender.send_json(&typing).await?;
        }
        sender
            .send_message(&room.id, &format!("g{n}"), &text)
            .await?;
    }
    let sending = started.elapsed().as_secs_f64();
    // Until every member holds every message (or a minute passed).
    let settle = Instant::now();
    while done.delivered.load(Ordering::Relaxed) < total * members as u64
        && settle.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last reports go out with the next ticks.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    done.stop.store(true, Ordering::Relaxed);
    let mut tally = MemberTally::default();
    for task in tasks {
        let t = task.await??;
        for (kind, n) in t.frames_in {
            *tally.frames_in.entry(kind).or_default() += n;
        }
        tally.frames_out += t.frames_out;
        tally.messages += t.messages;
    }
    let frames_in: u64 = tally.frames_in.values().sum();
    println!(
        "{}",
        serde_json::json!({
            "members": members,
            "rate_per_second": rate,
            "chatter": chatter,
            "messages_sent": total,
            "sending_seconds": (sending * 100.0).round() / 100.0,
            "seconds": (elapsed * 100.0).round() / 100.0,
            "deliveries": tally.messages,
            "frames_to_clients_per_second": (frames_in as f64 / elapsed).round(),
            "frames_to_clients_by_type": tally.frames_in,
            "frames_from_clients_per_second": ((tally.frames_out + total) as f64 / elapsed).round(),
            "server_cpu_seconds": (cpu * 100.0).round() / 100.0,
            "server_cpu_share": (cpu / elapsed * 1000.0).round() / 1000.0,
            "server_cpu_us_per_message": (cpu * 1e6 / total as f64).round(),
        })
    );
    Ok(())
}

/// Shared between the run and its members.
#[derive(Default)]
struct GroupRun {
    delivered: AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

/// One member: reads everything; with `chatter`, reports delivered every 500 ms and read
/// every second, as the SDK does, each only when it moves.
async fn member(
    mut rx: chatd_client::ConnReceiver,
    tx: Arc<tokio::sync::Mutex<chatd_client::ConnSender>>,
    room: chatd_protocol::model::RoomId,
    chatter: bool,
    run: Arc<GroupRun>,
) -> anyhow::Result<MemberTally> {
    let mut tally = MemberTally::default();
    let (mut held, mut delivered, mut read) = (0, 0, 0);
    let mut deliver_tick = tokio::time::interval(Duration::from_millis(500));
    let mut read_tick = tokio::time::interval(Duration::from_secs(1));
    while !run.stop.load(Ordering::Relaxed) {
        tokio::select! {
            event = rx.event(Duration::from_millis(200)) => {
                let Ok(event) = event else { continue };
                let kind = serde_json::to_value(&event)?["type"].as_str().unwrap_or("?").to_owned();
                *tally.frames_in.entry(kind).or_default() += 1;
                if let ServerFrame::Message(m) = event {
                    held = held.max(m.seq);
                    tally.messages += 1;
                    run.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = deliver_tick.tick(), if chatter && held > delivered => {
                delivered = held;
                let frame = serde_json::json!({"type": "delivered", "room": room, "seq": held});
                tx.lock().await.send_json(&frame).await?;
                tally.frames_out += 1;
            }
            _ = read_tick.tick(), if chatter && held > read => {
                read = held;
                let frame = serde_json::json!({"type": "read", "room": room, "seq": held});
                tx.lock().await.send_json(&frame).await?;
                tally.frames_out += 1;
            }
        }
    }
    Ok(tally)
}
