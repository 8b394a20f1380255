//! Cluster mode end to end: chatd processes on one MongoDB-wire server and one redis-server,
//! behind nginx where it matters, loaded by `chatd check` (the library behind the command);
//! then the failures: a node killed, nodes restarted one by one, Redis restarted, MongoDB
//! stopped. Every scenario ends with the same audit: nothing acked is lost, nothing is shown
//! twice, every client shows the store's order.
//!
//! Over 400 lines: one scenario per failure, each with its own setup and audit, sharing the
//! helpers at the top.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use chatd::{auth::TokenAuthority, config::Settings, domain::UserId};
use chatd_client::{
    Client,
    check::{CheckConfig, CheckReport, run},
};

use crate::{helpers::reply, servers::*};

/// Tokens for the cluster's nodes (they all run the default development secret).
fn token(user: &str) -> String {
    let s = Settings::defaults();
    TokenAuthority::new(&s.auth.jwt_secret, 30)
        .mint(&UserId::parse(user).unwrap(), Duration::from_secs(3600))
}

struct Servers {
    redis: String,
    mongo: String,
    database: String,
    prefix: String,
}

impl Servers {
    fn shared() -> Self {
        Self {
            redis: Redis::shared().url(),
            mongo: Mongo::shared().uri.clone(),
            database: unique("chatd_cluster"),
            prefix: unique("chatd_cluster"),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        cluster_env(&self.redis, &self.mongo, &self.database, &self.prefix)
    }

    fn nodes(&self, n: usize, extra: &[(&str, &str)]) -> Vec<ChatdNode> {
        let mut env = self.env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        (0..n)
            .map(|i| ChatdNode::start(&format!("{}-{i}", &self.prefix[14..20]), &env))
            .collect()
    }
}

/// A `chatd check` run: `users` in `groups` group rooms and `directs` direct rooms, each
/// user sending `per_user` messages over about two seconds.
fn load(
    urls: Vec<String>,
    users: usize,
    groups: usize,
    directs: usize,
    per_user: usize,
) -> CheckConfig {
    let mut config = CheckConfig::new(urls, Settings::defaults().auth.jwt_secret);
    config.users = users;
    config.groups = groups;
    config.directs = directs;
    config.duration = Duration::from_secs(2);
    config.rate = (users * per_user) as f64 / 2.0;
    config.settle = Duration::from_secs(240);
    config
}

fn assert_clean(report: &CheckReport, expected_stored: u64) {
    println!("{}", report.summary());
    assert!(report.clean, "check failed: {report:#?}");
    assert_eq!(report.audit.stored, expected_stored, "{report:#?}");
    assert_eq!(
        report.audit.duplicate_frames, 0,
        "a frame was sent twice: {report:#?}"
    );
    assert_eq!(
        report.audit.misordered_frames, 0,
        "frames out of order: {report:#?}"
    );
}

fn bases(nodes: &[ChatdNode]) -> Vec<String> {
    nodes.iter().map(ChatdNode::base).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_everything_once_in_one_order() {
    let servers = Servers::shared();
    let nodes = servers.nodes(3, &[]);
    // 30 clients over 3 nodes (user i on node i % 3), dealt into 5 groups (group i % 5), so
    // every room has members on every node: a message sent on one node must reach the
    // others. 100 messages each = 3,000, all at once.
    let (report, ()) = run(&load(bases(&nodes), 30, 5, 0, 100), async {})
        .await
        .unwrap();
    assert_clean(&report, 3000);
    assert_eq!(
        report.audit.delivered,
        3000 * 6,
        "every member of every room holds every message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_is_behind_cannot_reorder_time() {
    let servers = Servers::shared();
    let mut nodes = servers.nodes(2, &[]);
    nodes.extend(servers.nodes(1, &[("CHATD__SERVER__CLOCK_OFFSET_MS", "-5000")]));
    let [normal, _, behind] = &nodes[..] else {
        unreachable!()
    };
    let alice = Client::new(normal.base(), token("alice"));
    let room = alice.create_group("skew", &["bob"]).await.unwrap();

    let send = |node: &ChatdNode, user: &str, id: &str| {
        let client = Client::new(node.base(), token(user));
        let (room, id) = (room.id.clone(), id.to_owned());
        async move {
            let response = reply(
                reqwest::Client::new()
                    .post(format!("{}/v1/rooms/{room}/messages", client.base()))
                    .bearer_auth(client.token())
                    .json(&serde_json::json!({"clientMsgId": id, "text": id})),
            )
            .await;
            assert!((200..300).contains(&response.status), "{response:?}");
            response.json::<chatd::domain::Message>()
        }
    };
    let first = send(behind, "bob", "first-from-behind").await;
    let wall = chrono::Utc::now();
    assert!(
        first.created_at < wall - chrono::Duration::seconds(4),
        "node is not behind: {first:?}"
    );
    let second = send(normal, "alice", "from-normal").await;
    let third = send(behind, "bob", "behind-again").await;
    assert!(second.created_at > first.created_at);
    assert_eq!(
        third.created_at, second.created_at,
        "held at the previous stamp, not 5 s earlier"
    );

    // And under concurrent traffic from all three nodes (the audit reads every room).
    let (report, ()) = run(&load(bases(&nodes), 12, 2, 2, 30), async {})
        .await
        .unwrap();
    assert_clean(&report, 360);
    let history = alice.history_after(&room.id, 0).await.unwrap();
    assert!(
        history
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_resume_elsewhere_through_nginx() {
    let servers = Servers::shared();
    let mut nodes = servers.nodes(3, &[]);
    let nginx = Nginx::start(&nodes.iter().map(|n| n.port).collect::<Vec<_>>());
    let victim = nodes.remove(1);
    let (report, _victim) = run(&load(vec![nginx.base()], 18, 3, 0, 60), async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut victim = victim;
        victim.kill();
        victim
    })
    .await
    .unwrap();
    assert!(
        report.audit.reconnects > 0,
        "nobody was connected to the killed node"
    );
    assert_clean(&report, 18 * 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_started_again_loses_nothing() {
    let servers = Servers::shared();
    let mut nodes = servers.nodes(3, &[]);
    let nginx = Nginx::start(&nodes.iter().map(|n| n.port).collect::<Vec<_>>());
    let mut victim = nodes.remove(0);
    let (report, _victim) = run(&load(vec![nginx.base()], 12, 2, 2, 50), async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        victim.kill();
        tokio::time::sleep(Duration::from_millis(800)).await;
        tokio::task::spawn_blocking(move || {
            victim.resume();
            victim
        })
        .await
        .unwrap()
    })
    .await
    .unwrap();
    assert!(report.audit.reconnects > 0);
    assert_clean(&report, 12 * 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing() {
    let servers = Servers::shared();
    let nodes = servers.nodes(3, &[("CHATD__SERVER__SHUTDOWN_GRACE_MS", "5000")]);
    let nginx = Nginx::start(&nodes.iter().map(|n| n.port).collect::<Vec<_>>());
    let (report, nodes) = run(&load(vec![nginx.base()], 12, 2, 2, 60), async move {
        let mut restarted = Vec::new();
        for mut node in nodes {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // SIGTERM: drain (close 1012 after in-flight sends), exit, start again.
            let node = tokio::task::spawn_blocking(move || {
                assert!(
                    node.terminate(Duration::from_secs(10)),
                    "{} did not drain in time",
                    node.name
                );
                node.resume();
                node
            })
            .await
            .unwrap();
            restarted.push(node);
        }
        restarted
    })
    .await
    .unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(report.audit.reconnects > 0, "the restarts went unnoticed");
    assert_clean(&report, 12 * 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_message_arrives_across_a_redis_restart() {
    let mut redis = Redis::start();
    let servers = Servers {
        redis: redis.url(),
        ..Servers::shared()
    };
    let nodes = servers.nodes(2, &[]);
    let (report, _redis) = run(&load(bases(&nodes), 8, 2, 2, 50), async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        redis.stop();
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis.resume();
        redis
    })
    .await
    .unwrap();
    assert!(
        report.audit.resent + report.audit.reconnects > 0,
        "the restart went unnoticed"
    );
    assert_clean(&report, 8 * 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_seconds_without_mongodb_lose_nothing() {
    let mut mongo = Mongo::start_local();
    let servers = Servers {
        mongo: mongo.uri.clone(),
        ..Servers::shared()
    };
    let nodes = servers.nodes(2, &[]);
    // Sending lasts 4 s, so the outage falls in the middle of it.
    let mut config = load(bases(&nodes), 8, 2, 2, 40);
    config.duration = Duration::from_secs(4);
    config.rate = (8 * 40) as f64 / 4.0;
    let (report, _mongo) = run(&config, async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mongo = tokio::task::spawn_blocking(move || {
            mongo.stop();
            mongo
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        tokio::task::spawn_blocking(move || {
            let mut mongo = mongo;
            mongo.resume();
            mongo
        })
        .await
        .unwrap()
    })
    .await
    .unwrap();
    assert!(report.audit.resent > 0, "the outage went unnoticed");
    assert_clean(&report, 8 * 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_fail_retryably_while_mongodb_is_down_and_retries_store_once() {
    let mut mongo = Mongo::start_local();
    let servers = Servers {
        mongo: mongo.uri.clone(),
        ..Servers::shared()
    };
    let node = servers.nodes(1, &[]).remove(0);
    let alice = Client::new(node.base(), token("alice"));
    let room = alice.open_direct("bob").await.unwrap();
    let url = format!("{}?token={}", node.ws_url(), alice.token());
    let mut conn = chatd_client::Connection::open(&url).await.unwrap();
    conn.event(Duration::from_secs(10)).await.unwrap();
    let wait = Duration::from_secs(15);
    let ack = |event: chatd_client::ServerFrame| match event {
        chatd_client::ServerFrame::Ack { seq, duplicate, .. } => Some((seq, duplicate)),
        _ => None,
    };
    conn.send_message(&room.id, "m1", "before").await.unwrap();
    let mut first = None;
    while first.is_none() {
        first = ack(conn.event(wait).await.unwrap());
    }

    mongo.stop();
    let http = reqwest::Client::new();
    for attempt in ["m2", "m2", "m3"] {
        conn.send_message(&room.id, attempt, "while down")
            .await
            .unwrap();
        loop {
            match conn.event(wait).await.unwrap() {
                chatd_client::ServerFrame::Error(chatd_client::ErrorFrame {
                    code,
                    client_msg_id,
                    message,
                    request_id,
                    ..
                }) => {
                    assert_eq!(
                        (code.as_str(), client_msg_id.as_deref()),
                        ("store_unavailable", Some(attempt))
                    );
                    assert_no_internals(&message);
                    assert!(request_id.is_some_and(|id| !id.is_empty()));
                    break;
                }
                chatd_client::ServerFrame::Ack { .. } => panic!("acked while MongoDB is down"),
                _ => {}
            }
        }
    }
    let r = reply(
        http.get(format!("{}/v1/rooms/{}/messages", node.base(), room.id))
            .bearer_auth(alice.token()),
    )
    .await;
    assert_eq!((r.status, r.code()), (503, "store_unavailable"));
    assert_no_internals(r.body["error"]["message"].as_str().unwrap());
    // The detail is in the node's log, under the id the client got.
    let request_id = r.body["error"]["requestId"].as_str().unwrap().to_owned();
    let log = std::fs::read_to_string(log_dir().join(format!("chatd-{}.log", node.name))).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains(&request_id) && l.contains("unavailable")),
        "request {request_id} not in the log"
    );
    let ready = reply(http.get(format!("{}/readyz", node.base()))).await;
    assert_eq!(ready.status, 503);

    mongo.resume();
    // The same connection's retries now succeed, each stored once.
    let mut acked = Vec::new();
    for attempt in ["m2", "m3", "m2"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        'retry: loop {
            assert!(
                Instant::now() < deadline,
                "MongoDB never came back for {attempt}"
            );
            conn.send_message(&room.id, attempt, "after").await.unwrap();
            loop {
                match conn.event(wait).await.unwrap() {
                    chatd_client::ServerFrame::Ack {
                        client_msg_id,
                        seq,
                        duplicate,
                        ..
                    } if client_msg_id == attempt => {
                        acked.push((attempt, seq, duplicate));
                        break 'retry;
                    }
                    chatd_client::ServerFrame::Error(chatd_client::ErrorFrame {
                        code,
                        client_msg_id,
                        ..
                    }) if client_msg_id.as_deref() == Some(attempt) => {
                        assert_eq!(code, "store_unavailable");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue 'retry;
                    }
                    chatd_client::ServerFrame::Message(_) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    assert_eq!(
        acked,
        vec![("m2", 2, false), ("m3", 3, false), ("m2", 2, true)]
    );
    let history = alice.history_after(&room.id, 0).await.unwrap();
    let ids: Vec<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    let ready = reply(http.get(format!("{}/readyz", node.base()))).await;
    assert_eq!(ready.status, 200);
}

/// A client-facing message with nothing of the node's insides: no driver text, no address.
fn assert_no_internals(message: &str) {
    for leak in [
        "mongodb",
        "127.0.0.1",
        "Kind",
        "topology",
        "redis",
        "sqlite",
    ] {
        assert!(
            !message.to_lowercase().contains(&leak.to_lowercase()),
            "{leak:?} leaked in {message:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_a_dead_node_go_offline_within_the_presence_ttl() {
    let servers = Servers::shared();
    let fast = [
        ("CHATD__PRESENCE__TTL_MS", "3000"),
        ("CHATD__PRESENCE__REFRESH_MS", "1000"),
    ];
    let mut nodes = servers.nodes(2, &fast);
    let alice = Client::new(nodes[0].base(), token("alice"));
    let room = alice.open_direct("bob").await.unwrap();
    let online = |base: String| {
        let room = room.id.clone();
        let token = alice.token().to_owned();
        async move {
            let body = reply(
                reqwest::Client::new()
                    .get(format!("{base}/v1/rooms/{room}/presence"))
                    .bearer_auth(token),
            )
            .await
            .body;
            body["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["user"] == "bob")
                .unwrap()["online"]
                .as_bool()
                .unwrap()
        }
    };
    assert!(!online(nodes[0].base()).await);
    let bob_url = format!("{}?token={}", nodes[1].ws_url(), token("bob"));
    let mut bob = chatd_client::Connection::open(&bob_url).await.unwrap();
    bob.event(Duration::from_secs(10)).await.unwrap();
    assert!(
        online(nodes[0].base()).await,
        "bob on node 1 is seen online from node 0"
    );

    nodes[1].kill();
    let killed = Instant::now();
    while online(nodes[0].base()).await {
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "still online long after the ttl"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The TTL, a sweep (250 ms), this loop's poll (200 ms), and room for a busy machine.
    assert!(
        killed.elapsed() <= Duration::from_millis(3000 + 250 + 200 + 500),
        "offline after {:?}",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_tells_its_clients_to_reconnect_elsewhere() {
    const SENDS: usize = 30;
    let servers = Servers::shared();
    let mut node = servers.nodes(1, &[]).remove(0);
    let alice = Client::new(node.base(), token("alice"));
    let room = alice.open_direct("bob").await.unwrap();
    let url = format!("{}?token={}", node.ws_url(), alice.token());
    let mut conn = chatd_client::Connection::open(&url).await.unwrap();
    conn.event(Duration::from_secs(10)).await.unwrap();
    // Sends pipelined, and the stop while they are handled: however far the node got, every
    // frame it took is answered before the close; the rest were never taken (a client
    // resends them elsewhere).
    for i in 0..SENDS {
        conn.send_message(
            &room.id,
            &format!("last-words-{i}"),
            "sent just before the stop",
        )
        .await
        .unwrap();
    }
    let stopped = tokio::task::spawn_blocking(move || node.terminate(Duration::from_secs(15)));
    let mut acked = BTreeSet::new();
    let code = loop {
        match conn.next(Duration::from_secs(15)).await.unwrap() {
            chatd_client::Incoming::Event(chatd_client::ServerFrame::Ack {
                client_msg_id, ..
            }) => {
                acked.insert(client_msg_id);
            }
            chatd_client::Incoming::Event(_) => {}
            chatd_client::Incoming::Closed { code, .. } => break code,
        }
    };
    assert_eq!(code, 1012);
    assert!(
        stopped.await.unwrap(),
        "the node did not exit within its grace period"
    );
    let other = servers.nodes(1, &[]).remove(0);
    let stored: BTreeSet<String> = Client::new(other.base(), token("alice"))
        .history_after(&room.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.client_msg_id)
        .collect();
    assert_eq!(
        stored, acked,
        "a stored send went unanswered (or the reverse)"
    );
}
