//! Quick load runs against a running node (see scripts/bench and docs/benchmarks.md):
//!
//!   chatd-bench idle   --pid P --connections N   server RSS per idle connection
//!   chatd-bench fanout --members M --messages K  deliveries/s from one sender to a group
//!
//! Figures are comparisons within one run on a shared, noisy machine; they are reported,
//! never asserted by tests.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chatd_client::{Client, Connection, ServerFrame, Session, token};
use chatd_protocol::{DEV_SECRET, model::UserId};
use clap::{Parser, Subcommand};
use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;

#[derive(Parser)]
#[command(about = "Quick load runs against a running chatd node")]
struct Cli {
    /// The node's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// The node's auth.jwt_secret (to mint tokens).
    #[arg(long, default_value = DEV_SECRET, global = true)]
    secret: String,
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
    /// One sender, M members: how fast does a node fan messages out?
    Fanout {
        #[arg(long, default_value_t = 500)]
        members: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// The server's process id, to report its RSS.
        #[arg(long)]
        pid: Option<u32>,
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
    match cli.command {
        Command::Idle { pid, connections } => idle(&bench, pid, connections).await,
        Command::Fanout {
            members,
            messages,
            pid,
        } => fanout(&bench, members, messages, pid).await,
        Command::SlowReader { pid, rate, seconds } => slow_reader(&bench, pid, rate, seconds).await,
    }
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

async fn idle(bench: &Bench, pid: u32, n: usize) -> anyhow::Result<()> {
    // Each user shares a direct room with a partner, so connections hold real subscriptions.
    let pairs: Vec<usize> = (0..n).step_by(2).collect();
    stream::iter(pairs)
        .map(|i| async move {
            let peer = bench.user(i + 1);
            bench.client(&bench.user(i)).open_direct(&peer).await
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    // Warm up: one connection open and closed, so lazily built state is counted in "before".
    drop(bench.connect(&bench.client(&bench.user(0))).await?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let conns: Vec<Connection> = stream::iter(0..n)
        .map(|i| async move { bench.connect(&bench.client(&bench.user(i))).await })
        .buffer_unordered(128)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    let per_conn = (after.saturating_sub(before) as f64 * 1024.0) / n as f64;
    println!(
        "{}",
        serde_json::json!({
            "connections": conns.len(),
            "server_rss_before_kib": before,
            "server_rss_after_kib": after,
            "bytes_per_idle_connection": per_conn.round(),
            "connect_seconds": (connect_secs * 100.0).round() / 100.0,
        })
    );
    drop(conns);
    Ok(())
}

async fn fanout(
    bench: &Bench,
    members: usize,
    messages: usize,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let names: Vec<String> = (0..members).map(|i| bench.user(i)).collect();
    let others: Vec<&str> = names[1..].iter().map(String::as_str).collect();
    let owner = bench.client(&names[0]);
    let room = owner.create_group("fanout", &others).await?;
    let conns: Vec<Connection> = stream::iter(names.iter())
        .map(|name| async move { bench.connect(&bench.client(name)).await })
        .buffer_unordered(128)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;

    let delivered = Arc::new(AtomicU64::new(0));
    let expected = (members * messages) as u64;
    let mut readers = Vec::new();
    // The writing halves keep the sockets open; the first member is the sender.
    let mut writers = Vec::new();
    for conn in conns {
        let (tx, mut rx) = conn.split();
        writers.push(tx);
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("histogram");
            let mut got = 0;
            while got < messages {
                match rx.event(Duration::from_secs(60)).await {
                    Ok(ServerFrame::Message(m)) => {
                        got += 1;
                        delivered.fetch_add(1, Ordering::Relaxed);
                        if let Some((_, stamp)) = m.text.rsplit_once(" @") {
                            let now = chrono::Utc::now().timestamp_micros() as u64;
                            let _ =
                                latencies.record(now.saturating_sub(stamp.parse().unwrap_or(now)));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(latencies)
        }));
    }
    let sender = writers.first_mut().context("no sender")?;
    let rss_before = pid.map(rss_kib).transpose()?;
    let started = Instant::now();
    for k in 0..messages {
        sender
            .send_message(
                &room.id,
                &format!("f{k}"),
                &Session::stamp(&format!("fanout {k}")),
            )
            .await?;
    }
    let mut latencies = Histogram::<u64>::new(3)?;
    for reader in readers {
        latencies.add(reader.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = pid.map(rss_kib).transpose()?;
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "members": members,
            "messages": messages,
            "deliveries": delivered.load(Ordering::Relaxed),
            "expected": expected,
            "seconds": (elapsed * 1000.0).round() / 1000.0,
            "deliveries_per_second": (delivered.load(Ordering::Relaxed) as f64 / elapsed).round(),
            "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": latencies.max() as f64 / 1000.0},
            "server_rss_kib": {"before": rss_before, "after": rss_after},
        })
    );
    Ok(())
}
