//! `chatd-check`: a load generator that is also an auditor.
//!
//! It signs up simulated users, puts them in group and direct rooms, and runs each as a
//! [`Session`] (the SDK's rules: reconnect, resume, resend, fill gaps) against one or several
//! node URLs, at a bounded rate for a bounded time. Then it audits every client against the
//! store through REST history ([`audit`]) and reports sent, acked, delivered, lost,
//! duplicated and misordered messages, end-to-end latency and throughput. A run is clean
//! only if nothing acked was lost, nothing was shown twice and every client shows the
//! store's order.
//!
//! The fault tests run this same code with a fault injected meanwhile (see [`run`]).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use chatd_protocol::model::{RoomId, UserId};

use crate::{
    Client, Session, SessionConfig, Tally,
    audit::{AuditReport, audit},
};

#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Node base URLs (`http://host:port`); users are spread over them round-robin.
    pub urls: Vec<String>,
    pub users: usize,
    /// Group rooms: users are dealt into them round-robin.
    pub groups: usize,
    /// Direct rooms, each between two users.
    pub directs: usize,
    /// Messages per second, all users together.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// After sending: how long clients may take to receive everything before it counts.
    pub settle: Duration,
    /// The nodes' `auth.jwt_secret`, to sign the users' tokens.
    pub secret: String,
    /// Prefix of the simulated user ids; a fresh one keeps runs apart.
    pub run_id: String,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
}

impl CheckConfig {
    pub fn new(urls: Vec<String>, secret: String) -> Self {
        Self {
            urls,
            users: 20,
            groups: 3,
            directs: 3,
            rate: 50.0,
            duration: Duration::from_secs(10),
            settle: Duration::from_secs(60),
            secret,
            run_id: format!("chk{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            progress: false,
        }
    }

    /// Messages each user sends (at least one).
    fn per_user(&self) -> usize {
        ((self.rate * self.duration.as_secs_f64()) / self.users as f64)
            .ceil()
            .max(1.0) as usize
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub run_id: String,
    pub urls: Vec<String>,
    pub users: usize,
    pub rooms: usize,
    pub seconds: f64,
    #[serde(flatten)]
    pub audit: AuditReport,
    /// Sessions that did not converge before the deadline, with why.
    pub incomplete: Vec<String>,
    pub latency: Latency,
    pub acked_per_second: f64,
    pub delivered_per_second: f64,
    pub clean: bool,
}

impl CheckReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        let a = &self.audit;
        format!(
            "{verdict}: sent {} acked {} delivered {} | lost {} duplicated {} misordered {} phantom {} | \
             latency p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms max {:.1} ms | {:.0} acked/s {:.0} delivered/s | \
             reconnects {} resent {}",
            a.sent,
            a.acked,
            a.delivered,
            a.lost,
            a.duplicated,
            a.misordered,
            a.phantom,
            self.latency.p50_ms,
            self.latency.p90_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.acked_per_second,
            self.delivered_per_second,
            a.reconnects,
            a.resent,
            verdict = if self.clean { "CLEAN" } else { "FAILED" },
        )
    }
}

/// Who is in which room.
struct Plan {
    /// Per user: the rooms they are in.
    rooms_of: Vec<Vec<RoomId>>,
    /// Per room: a member who can read its history for the audit.
    readers: HashMap<RoomId, Client>,
}

fn user_id(config: &CheckConfig, i: usize) -> String {
    format!("{}-u{i}", config.run_id)
}

fn client_for(config: &CheckConfig, i: usize) -> anyhow::Result<Client> {
    let user = UserId::parse(&user_id(config, i)).context("run_id makes invalid user ids")?;
    let token = crate::token::mint(&config.secret, &user, Duration::from_secs(24 * 3600));
    Ok(Client::new(&config.urls[i % config.urls.len()], token))
}

async fn plan(config: &CheckConfig, clients: &[Client]) -> anyhow::Result<Plan> {
    let n = config.users;
    let mut rooms_of = vec![Vec::new(); n];
    let mut readers = HashMap::new();
    let groups = config.groups.min(n);
    for g in 0..groups {
        let members: Vec<usize> = (0..n).filter(|u| u % groups == g).collect();
        let names: Vec<String> = members[1..].iter().map(|&u| user_id(config, u)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let owner = &clients[members[0]];
        let room = owner
            .create_group(&format!("{} group {g}", config.run_id), &names)
            .await
            .context("creating a group")?;
        for &u in &members {
            rooms_of[u].push(room.id.clone());
        }
        readers.insert(room.id, owner.clone());
    }
    for d in 0..config.directs.min(n / 2) {
        let (a, b) = ((2 * d) % n, (2 * d + 1) % n);
        let room = clients[a]
            .open_direct(&user_id(config, b))
            .await
            .context("opening a direct room")?;
        rooms_of[a].push(room.id.clone());
        rooms_of[b].push(room.id.clone());
        readers.insert(room.id, clients[a].clone());
    }
    Ok(Plan { rooms_of, readers })
}

/// Runs the load and the audit. `during` runs alongside the load (a fault to inject); its
/// output is returned once the run is over, so whatever it holds lives until then.
pub async fn run<F: Future>(
    config: &CheckConfig,
    during: F,
) -> anyhow::Result<(CheckReport, F::Output)> {
    anyhow::ensure!(!config.urls.is_empty(), "no node URL");
    anyhow::ensure!(config.users >= 2, "at least two users");
    anyhow::ensure!(config.rate > 0.0, "rate must be positive");
    anyhow::ensure!(config.groups + config.directs > 0, "at least one room");
    let clients: Vec<Client> = (0..config.users)
        .map(|i| client_for(config, i))
        .collect::<anyhow::Result<_>>()?;
    let plan = plan(config, &clients).await?;

    let per_user = config.per_user();
    let send_interval = Duration::from_secs_f64(config.users as f64 / config.rate);
    let tally = Arc::new(Tally::new(config.users));
    let started = Instant::now();
    let deadline = started + config.duration + config.settle;
    let mut tasks = Vec::with_capacity(config.users);
    for (i, client) in clients.into_iter().enumerate() {
        let mut session_config = SessionConfig::new(client.ws_url());
        session_config.send_interval = send_interval;
        let mut session = Session::new(client, session_config);
        let rooms = &plan.rooms_of[i];
        for room in rooms {
            session.track(room.clone());
        }
        // A user in no room (more users than rooms can hold) only listens.
        for k in 0..per_user * usize::from(!rooms.is_empty()) {
            let room = rooms[k % rooms.len()].clone();
            let label = format!("{} #{k}", user_id(config, i));
            session.queue_stamped(room, format!("{}-{i}-{k}", config.run_id), label);
        }
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = session.run(&tally, deadline).await;
            (session, outcome)
        }));
    }

    let progress = config.progress.then(|| {
        let tally = tally.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "[{:6.1}s] sent {} acked {} delivered {} reconnects {}",
                    started.elapsed().as_secs_f64(),
                    tally.sent.load(Ordering::Relaxed),
                    tally.acked.load(Ordering::Relaxed),
                    tally.delivered.load(Ordering::Relaxed),
                    tally.reconnects.load(Ordering::Relaxed),
                );
            }
        })
    });
    let fault = during.await;
    let mut sessions = Vec::with_capacity(tasks.len());
    let mut incomplete = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (session, outcome) = task.await.context("a session task panicked")?;
        if let Err(e) = outcome {
            incomplete.push(format!("{}: {e}", user_id(config, i)));
        }
        sessions.push(session);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(progress) = progress {
        progress.abort();
    }

    let audit = audit(&sessions, &plan.readers).await?;
    let mut histogram = Histogram::<u64>::new(3).expect("histogram bounds");
    for session in &sessions {
        for &us in &session.stats().latencies_us {
            let _ = histogram.record(us.max(1));
        }
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let latency = Latency {
        samples: histogram.len(),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
    };
    let clean = audit.is_clean() && incomplete.is_empty();
    let report = CheckReport {
        run_id: config.run_id.clone(),
        urls: config.urls.clone(),
        users: config.users,
        rooms: plan.readers.len(),
        seconds,
        acked_per_second: audit.acked as f64 / seconds,
        delivered_per_second: audit.delivered as f64 / seconds,
        audit,
        incomplete,
        latency,
        clean,
    };
    Ok((report, fault))
}
