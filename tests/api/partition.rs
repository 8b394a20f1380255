//! A node's link to MongoDB, then to Redis, silently stops carrying bytes for 10 s (no close,
//! no reset: see [`Proxy`]) while a user keeps sending. This proves that such a fault fails
//! instead of hanging: every send is answered within the deadline
//! (`store_unavailable` or `bus_unavailable`, carrying its clientMsgId), `/readyz` says 503.
//! It also proves that the node recovers by itself once the link carries bytes again (sends
//! are acked, `/readyz` says 200), and that nothing is lost or doubled: the history holds
//! every acked message once, seqs 1..N without a gap, and the recipient, connected to the
//! same node all along, received all of them live.
//!
//! Over 400 lines: the one scenario, its timeline and its evidence (what each send got and
//! when) are kept together so that the assertions can be read against them.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use chatd::{
    auth::TokenAuthority,
    config::Settings,
    domain::{RoomId, Seq, UserId},
};
use chatd_client::{Client, Connection, Incoming, RoomLog, ServerFrame};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{helpers::TestConn, proxy::Proxy, servers::*};

/// The deadline the node is given for each store call and each Redis call.
const DEADLINE_MS: u64 = 2000;
/// A send must be answered within its deadline plus this (scheduling, a second store call).
const SLACK: Duration = Duration::from_secs(3);
/// Alice sends (or retries) once per this interval.
const PACE: Duration = Duration::from_millis(50);
/// Traffic before the link is cut.
const BEFORE: Duration = Duration::from_secs(1);
/// How long the link carries nothing.
const PAUSE: Duration = Duration::from_secs(10);
/// `/readyz` must say 503 this soon after the cut (its own checks give up after 2 s).
const UNREADY_WITHIN: Duration = Duration::from_secs(6);
/// After the link is back: the first ack and `/readyz` 200 must come within this.
const RECOVER_WITHIN: Duration = Duration::from_secs(30);
/// Acked messages sent after recovery before alice stops.
const AFTER: usize = 20;
/// Bob must hold everything this soon after alice's last ack.
const DELIVER_WITHIN: Duration = Duration::from_secs(15);
/// The whole scenario; every wait inside has its own, shorter deadline.
const SCENARIO_WITHIN: Duration = Duration::from_secs(150);

#[derive(Clone, Copy, Debug)]
enum Link {
    Mongo,
    Redis,
}

impl Link {
    /// The answer to a send while this link is cut.
    fn code(self) -> &'static str {
        match self {
            Link::Mongo => "store_unavailable",
            Link::Redis => "bus_unavailable",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_mongodb_link_fails_sends_in_time_and_recovers_without_loss() {
    tokio::time::timeout(SCENARIO_WITHIN, scenario(Link::Mongo))
        .await
        .expect("the scenario finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_link_fails_sends_in_time_and_recovers_without_loss() {
    tokio::time::timeout(SCENARIO_WITHIN, scenario(Link::Redis))
        .await
        .expect("the scenario finishes in time");
}

/// Tokens for nodes running the default development secret.
fn token(user: &str) -> String {
    let s = Settings::defaults();
    TokenAuthority::new(&s.auth.jwt_secret, 30)
        .mint(&UserId::parse(user).unwrap(), Duration::from_secs(3600))
}

/// The port of a MongoDB URI naming one server on this machine (`None` for anything else:
/// credentials aside, the proxy can only stand in front of 127.0.0.1).
fn local_mongo_port(uri: &str) -> Option<u16> {
    let rest = uri.strip_prefix("mongodb://")?;
    let hosts = rest.split(['/', '?']).next()?;
    let host_port = hosts.rsplit('@').next()?;
    let (host, port) = host_port.rsplit_once(':')?;
    if host_port.contains(',') || !matches!(host, "127.0.0.1" | "localhost") {
        return None;
    }
    port.parse().ok()
}

/// What the fault controller saw.
struct Timeline {
    paused_at: Instant,
    resumed_at: Instant,
    /// From the cut to the first 503 of `/readyz`.
    unready: Result<Duration, String>,
    /// From the resume to the first 200 of `/readyz`.
    ready: Result<Duration, String>,
}

/// One send frame and its answer.
#[derive(Debug)]
struct Attempt {
    id: String,
    started: Instant,
    took: Duration,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    Acked { seq: Seq, duplicate: bool },
    Failed { code: String },
}

async fn scenario(link: Link) {
    // The real servers (blocking: the first call may start them).
    let (redis_port, mongo_uri) =
        tokio::task::spawn_blocking(|| (Redis::shared().port, Mongo::shared().uri.clone()))
            .await
            .unwrap();
    // A MONGODB_URI elsewhere cannot be proxied from here: then use a local server.
    let (mongo_port, _own_mongo) = match local_mongo_port(&mongo_uri) {
        Some(port) => (port, None),
        None => {
            let mongo = tokio::task::spawn_blocking(Mongo::start_local)
                .await
                .unwrap();
            (local_mongo_port(&mongo.uri).unwrap(), Some(mongo))
        }
    };
    let direct_mongo = format!("mongodb://127.0.0.1:{mongo_port}/?directConnection=true");
    let direct_redis = format!("redis://127.0.0.1:{redis_port}");
    let proxy = std::sync::Arc::new(
        Proxy::start(match link {
            Link::Mongo => mongo_port,
            Link::Redis => redis_port,
        })
        .await,
    );
    let (mongo, redis) = match link {
        Link::Mongo => (
            format!(
                "mongodb://127.0.0.1:{}/?directConnection=true",
                proxy.port()
            ),
            direct_redis,
        ),
        Link::Redis => (direct_mongo, format!("redis://127.0.0.1:{}", proxy.port())),
    };

    let tag = unique("chatd_partition");
    let name = format!(
        "{}-link-{}",
        format!("{link:?}").to_lowercase(),
        &tag[16..22]
    );
    let mut env = cluster_env(&redis, &mongo, &tag, &tag);
    // The deadlines under test (replacing any default cluster_env sets for load tests).
    for key in ["CHATD__STORE__TIMEOUT_MS", "CHATD__BUS__TIMEOUT_MS"] {
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), DEADLINE_MS.to_string()));
    }
    let node = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || ChatdNode::start(&name, &env))
            .await
            .unwrap()
    };
    let logs = format!("see target/test-logs/chatd-{name}.log");

    let alice_rest = Client::new(node.base(), token("alice"));
    // Setup, not the property under test: the shared MongoDB-wire server may be busy with
    // other tests for longer than the short deadline this node runs with.
    let mut attempts = 0;
    let room = loop {
        attempts += 1;
        match alice_rest.open_direct("bob").await {
            Ok(room) => break room,
            Err(e) if attempts < 5 && e.to_string().contains("unavailable") => continue,
            Err(e) => panic!("direct room: {e} ({logs})"),
        }
    };
    let mut alice = TestConn::connect(&alice_rest).await.conn;
    let bob = TestConn::connect(&Client::new(node.base(), token("bob")))
        .await
        .conn;
    let bob = Receiver::start(bob, room.id.clone());

    // The fault: cut after BEFORE, watch /readyz, restore after PAUSE, watch /readyz again.
    // When the link came back: alice stops once she has sent AFTER messages since.
    let (resumed_tx, resumed) = watch::channel(None::<Instant>);
    let controller: JoinHandle<Timeline> = {
        let proxy = proxy.clone();
        let base = node.base();
        tokio::spawn(async move {
            tokio::time::sleep(BEFORE).await; // deliberate: traffic before the fault
            proxy.pause();
            let paused_at = Instant::now();
            let unready = readyz_becomes(&base, 503, UNREADY_WITHIN).await;
            // Deliberate: the link stays silent for PAUSE, whatever happened meanwhile.
            tokio::time::sleep_until((paused_at + PAUSE).into()).await;
            proxy.resume();
            let resumed_at = Instant::now();
            resumed_tx.send_replace(Some(resumed_at));
            let ready = readyz_becomes(&base, 200, RECOVER_WITHIN).await;
            Timeline {
                paused_at,
                resumed_at,
                unready,
                ready,
            }
        })
    };

    let sent = send_steadily(&mut alice, &room.id, link, &resumed).await;
    let timeline = controller.await.expect("controller");
    let attempts = match sent {
        Ok(attempts) => attempts,
        Err((attempts, why)) => {
            print_summary(link, &timeline, &attempts);
            panic!("{why} ({logs})");
        }
    };
    print_summary(link, &timeline, &attempts);

    // While paused: every send answered in time (checked as they went), every answer that
    // fell wholly inside the pause an error with the link's code, and at least one.
    let within_pause =
        |a: &Attempt| a.started >= timeline.paused_at && a.started + a.took <= timeline.resumed_at;
    let acked_while_cut: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| within_pause(a) && matches!(a.outcome, Outcome::Acked { .. }))
        .collect();
    assert!(
        acked_while_cut.is_empty(),
        "acked while the {link:?} link carried nothing: {acked_while_cut:?}"
    );
    let failed_while_cut = attempts
        .iter()
        .filter(|a| within_pause(a) && matches!(a.outcome, Outcome::Failed { .. }))
        .count();
    assert!(
        failed_while_cut > 0,
        "no send failed while the {link:?} link was cut ({logs})"
    );
    if let Err(why) = &timeline.unready {
        panic!("/readyz while the {link:?} link was cut: {why} ({logs})");
    }
    // After: recovered by itself (send_steadily saw acks again), and ready again.
    if let Err(why) = &timeline.ready {
        panic!("/readyz after the {link:?} link came back: {why} ({logs})");
    }

    // The store: every acked message once, in alice's order, seqs 1..N.
    let acked: Vec<(&str, Seq)> = attempts
        .iter()
        .filter_map(|a| match a.outcome {
            Outcome::Acked { seq, .. } => Some((a.id.as_str(), seq)),
            Outcome::Failed { .. } => None,
        })
        .collect();
    let history = tokio::time::timeout(
        Duration::from_secs(15),
        alice_rest.history_after(&room.id, 0),
    )
    .await
    .expect("history answers in time")
    .expect("history");
    let stored: Vec<(&str, Seq)> = history
        .iter()
        .map(|m| (m.client_msg_id.as_str(), m.seq))
        .collect();
    assert_eq!(
        stored, acked,
        "history (clientMsgId, seq) differs from alice's acks"
    );
    let n = history.len() as Seq;
    assert_eq!(
        history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "seqs with gaps"
    );

    // Bob, on the same node all along, received every stored message live.
    let received = bob.finish(n, DELIVER_WITHIN).await;
    println!(
        "bob: {} messages held, {} repeats dropped{}",
        received.log.len(),
        received.log.duplicates(),
        received
            .ended
            .as_ref()
            .map(|why| format!(", then {why}"))
            .unwrap_or_default()
    );
    let missing: Vec<Seq> = (1..=n)
        .filter(|seq| !received.log.seqs().contains(seq))
        .collect();
    assert!(
        missing.is_empty(),
        "bob lacks seqs {missing:?} of 1..={n} (his connection: {}) ({logs})",
        received.ended.as_deref().unwrap_or("still open")
    );
    if let Some(why) = &received.ended {
        panic!("bob got everything, but his connection did not stay live: {why} ({logs})");
    }
    let held: Vec<(&str, Seq)> = received
        .log
        .messages()
        .map(|m| (m.client_msg_id.as_str(), m.seq))
        .collect();
    assert_eq!(held, stored, "bob holds other messages than the store");
    drop(node);
}

/// Alice sends a message per PACE until AFTER messages were acked after the resume. A failed
/// send is retried with the same clientMsgId until acked, as the SDK does. Returns every
/// attempt, or the attempts so far and why it stopped (an answer late or missing, a wrong
/// code, no recovery).
async fn send_steadily(
    alice: &mut Connection,
    room: &RoomId,
    link: Link,
    resumed: &watch::Receiver<Option<Instant>>,
) -> Result<Vec<Attempt>, (Vec<Attempt>, String)> {
    let answer_within = Duration::from_millis(DEADLINE_MS) + SLACK;
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut acked_after_resume = 0;
    for i in 0.. {
        let id = format!("{}-{i:04}", format!("{link:?}").to_lowercase());
        loop {
            pace.tick().await;
            let now = Instant::now();
            let resumed_at = *resumed.borrow();
            if let Some(at) = resumed_at
                && acked_after_resume == 0
                && now > at + RECOVER_WITHIN
            {
                let why = format!("no send acked within {RECOVER_WITHIN:?} of the resume");
                return Err((attempts, why));
            }
            if let Err(e) = alice
                .send_message(room, &id, &format!("text of {id}"))
                .await
            {
                return Err((attempts, format!("alice cannot send {id}: {e}")));
            }
            let outcome = match answer(alice, &id, answer_within).await {
                Ok(outcome) => outcome,
                Err(why) => return Err((attempts, why)),
            };
            let attempt = Attempt {
                id: id.clone(),
                started: now,
                took: now.elapsed(),
                outcome,
            };
            let done = match &attempt.outcome {
                Outcome::Acked { .. } => {
                    if resumed_at.is_some() {
                        acked_after_resume += 1;
                    }
                    true
                }
                Outcome::Failed { code } if code == link.code() => false,
                Outcome::Failed { code } => {
                    let why = format!("{id} failed with {code}, not {}", link.code());
                    attempts.push(attempt);
                    return Err((attempts, why));
                }
            };
            attempts.push(attempt);
            if done {
                break;
            }
        }
        if acked_after_resume >= AFTER {
            break;
        }
    }
    Ok(attempts)
}

/// Reads alice's connection until the answer to `id`: her own `message` frames and other
/// events are skipped; anything else (nothing in time, a close, an answer to another
/// message) is the reason the test fails.
async fn answer(conn: &mut Connection, id: &str, within: Duration) -> Result<Outcome, String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.next(left).await {
            Err(_) => return Err(format!("{id} was not answered within {within:?}: it hangs")),
            Ok(Incoming::Closed { code, reason }) => {
                return Err(format!(
                    "alice's connection closed ({code} {reason}) awaiting {id}"
                ));
            }
            Ok(Incoming::Event(ServerFrame::Ack {
                client_msg_id,
                seq,
                duplicate,
                ..
            })) => {
                if client_msg_id != id {
                    return Err(format!("ack for {client_msg_id} while awaiting {id}"));
                }
                return Ok(Outcome::Acked { seq, duplicate });
            }
            Ok(Incoming::Event(ServerFrame::Error(chatd_client::ErrorFrame {
                code,
                message,
                client_msg_id,
                ..
            }))) => {
                if client_msg_id.as_deref() != Some(id) {
                    return Err(format!(
                        "error {code} ({message}) for {client_msg_id:?} while awaiting {id}"
                    ));
                }
                return Ok(Outcome::Failed {
                    code: code.to_string(),
                });
            }
            Ok(Incoming::Event(_)) => {}
        }
    }
}

/// Polls `/readyz` until it answers `status`; the time that took, or what it answered last.
async fn readyz_becomes(base: &str, status: u16, within: Duration) -> Result<Duration, String> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut last = String::from("nothing");
    while started.elapsed() < within {
        let response = http
            .get(format!("{base}/readyz"))
            .timeout(within.saturating_sub(started.elapsed()))
            .send()
            .await;
        match response {
            Ok(r) if r.status().as_u16() == status => return Ok(started.elapsed()),
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = format!("no answer: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // polling interval
    }
    Err(format!(
        "not {status} within {within:?}; last answer: {last}"
    ))
}

fn print_summary(link: Link, timeline: &Timeline, attempts: &[Attempt]) {
    let since = |at: Instant| at.saturating_duration_since(timeline.paused_at);
    let mut codes: HashMap<&str, usize> = HashMap::new();
    for a in attempts {
        if let Outcome::Failed { code } = &a.outcome {
            *codes.entry(code.as_str()).or_default() += 1;
        }
    }
    let slowest = attempts.iter().map(|a| a.took).max().unwrap_or_default();
    let acks = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Acked { .. }))
        .count();
    let duplicates = attempts
        .iter()
        .filter(|a| {
            matches!(
                a.outcome,
                Outcome::Acked {
                    duplicate: true,
                    ..
                }
            )
        })
        .count();
    let first_ack_after = attempts
        .iter()
        .find(|a| a.started >= timeline.resumed_at && matches!(a.outcome, Outcome::Acked { .. }))
        .map(|a| a.started + a.took - timeline.resumed_at);
    println!(
        "{link:?} link cut for {:?}: {} attempts, {acks} acked ({duplicates} as duplicates), \
         errors {codes:?}, slowest answer {slowest:?}; /readyz 503 after {:?}, 200 {:?} after \
         the resume; first ack {first_ack_after:?} after the resume",
        since(timeline.resumed_at),
        attempts.len(),
        timeline.unready,
        timeline.ready,
    );
    for a in attempts.iter().filter(|a| {
        !matches!(
            a.outcome,
            Outcome::Acked {
                duplicate: false,
                ..
            }
        )
    }) {
        println!(
            "  {} at +{:?} (from the cut) took {:?}: {:?}",
            a.id,
            a.started.checked_duration_since(timeline.paused_at),
            a.took,
            a.outcome
        );
    }
}

/// Bob's connection, read in its own task: every message of the room goes into a RoomLog
/// (deduplicated by seq, as the SDK does). No reconnect: he should stay live throughout.
struct Receiver {
    contiguous: watch::Receiver<Seq>,
    stop: CancellationToken,
    task: JoinHandle<Received>,
}

struct Received {
    log: RoomLog,
    /// Why his connection stopped being read before the end, if it did.
    ended: Option<String>,
}

impl Receiver {
    fn start(mut conn: Connection, room: RoomId) -> Self {
        let (progress, contiguous) = watch::channel(0);
        let stop = CancellationToken::new();
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut log = RoomLog::default();
                let ended = loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => break None,
                        next = conn.next(SCENARIO_WITHIN) => next,
                    };
                    match next {
                        Ok(Incoming::Event(ServerFrame::Message(m))) if m.room == room => {
                            log.insert(m);
                            progress.send_replace(log.contiguous());
                        }
                        Ok(Incoming::Event(_)) => {}
                        Ok(Incoming::Closed { code, reason }) => {
                            break Some(format!("closed {code} {reason}"));
                        }
                        Err(e) => break Some(format!("unreadable: {e}")),
                    }
                };
                Received { log, ended }
            })
        };
        Self {
            contiguous,
            stop,
            task,
        }
    }

    /// Waits (up to `within`) until bob holds seqs 1..=n, then stops reading.
    async fn finish(mut self, n: Seq, within: Duration) -> Received {
        let _ = tokio::time::timeout(within, self.contiguous.wait_for(|c| *c >= n)).await;
        self.stop.cancel();
        self.task.await.expect("bob's reader")
    }
}
