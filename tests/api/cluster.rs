//! Cluster mode end to end: chatd processes on one MongoDB-wire server and one redis-server,
//! behind nginx where it matters; then the failures: a node killed, Redis restarted, MongoDB
//! stopped. Every scenario ends with the same audit: nothing acked is lost, nothing is shown
//! twice, every client shows the store's order.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chatd::{
    auth::TokenAuthority,
    client::{Client, Session, SessionConfig, Tally, audit::audit},
    config::Settings,
    domain::{RoomId, UserId},
};

use crate::servers::*;

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

/// One simulated user: where it connects and what it sends.
struct Member {
    user: String,
    rest: String,
    ws: String,
    rooms: Vec<RoomId>,
    sends: usize,
}

/// Creates `rooms` groups of `per_room` users each ("r<room>u<i>"), user i of a room using
/// node i % nodes; returns the members and one reader per room.
async fn groups(
    rest: &[String],
    ws: &[String],
    rooms: usize,
    per_room: usize,
    sends: usize,
) -> (Vec<Member>, HashMap<RoomId, Client>) {
    let mut members = Vec::new();
    let mut readers = HashMap::new();
    for r in 0..rooms {
        let users: Vec<String> = (0..per_room).map(|i| format!("r{r}u{i}")).collect();
        let owner = Client::new(&rest[0], token(&users[0]));
        let others: Vec<&str> = users[1..].iter().map(String::as_str).collect();
        let room = owner
            .create_group(&format!("room {r}"), &others)
            .await
            .unwrap();
        for (i, user) in users.iter().enumerate() {
            members.push(Member {
                user: user.clone(),
                rest: rest[i % rest.len()].clone(),
                ws: ws[i % ws.len()].clone(),
                rooms: vec![room.id.clone()],
                sends,
            });
        }
        readers.insert(room.id, owner);
    }
    (members, readers)
}

/// Runs every member as a [`Session`] until all is sent, acked and seen; `during` runs
/// meanwhile (the fault), and what it returns is kept alive until the sessions end.
async fn run<F, T>(
    members: Vec<Member>,
    within: Duration,
    configure: impl Fn(&mut SessionConfig),
    during: F,
) -> (Vec<Session>, T)
where
    F: std::future::Future<Output = T>,
{
    let tally = Arc::new(Tally::new(members.len()));
    let deadline = Instant::now() + within;
    let mut tasks = Vec::new();
    for member in members {
        let mut config = SessionConfig::new(member.ws.clone());
        configure(&mut config);
        let rest = Client::new(&member.rest, token(&member.user));
        let config = SessionConfig {
            ws_url: format!("{}?token={}", config.ws_url, rest.token()),
            ..config
        };
        let mut session = Session::new(rest, config);
        for room in &member.rooms {
            session.track(room.clone());
            for n in 0..member.sends {
                session.queue(
                    room.clone(),
                    format!("{}-{n}", member.user),
                    Session::stamp(&format!("{} #{n}", member.user)),
                );
            }
        }
        let tally = tally.clone();
        let user = member.user.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = session.run(&tally, deadline).await {
                panic!("{user}: {e}");
            }
            session
        }));
    }
    let kept = during.await;
    let mut sessions = Vec::new();
    for task in tasks {
        sessions.push(task.await.expect("session finished"));
    }
    (sessions, kept)
}

async fn assert_clean(
    sessions: &[Session],
    readers: &HashMap<RoomId, Client>,
    expected_stored: u64,
) {
    let report = audit(sessions, readers).await.unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(report.is_clean(), "audit failed: {report:#?}");
    assert_eq!(report.stored, expected_stored, "{report:#?}");
    assert_eq!(
        report.duplicate_frames, 0,
        "the server sent a frame twice: {report:#?}"
    );
    assert_eq!(
        report.misordered_frames, 0,
        "the server sent frames out of order: {report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_everything_once_in_one_order() {
    let servers = Servers::shared();
    let nodes = servers.nodes(3, &[]);
    let rest: Vec<String> = nodes.iter().map(ChatdNode::base).collect();
    let ws: Vec<String> = nodes.iter().map(ChatdNode::ws_url).collect();
    // 5 rooms x 6 members = 30 clients, 2 per node per room; 100 messages each = 3,000.
    let (members, readers) = groups(&rest, &ws, 5, 6, 100).await;
    let (sessions, ()) = run(
        members,
        Duration::from_secs(240),
        |c| c.send_interval = Duration::from_millis(5),
        async {},
    )
    .await;
    assert_clean(&sessions, &readers, 3000).await;

    // A message sent through node 0 reached a member connected to node 2.
    let (sender, receiver) = (&sessions[0], &sessions[2]);
    let (room, seq) = sender.acks().values().next().unwrap().clone();
    let held = receiver
        .log(&room)
        .unwrap()
        .messages()
        .find(|m| m.seq == seq)
        .unwrap();
    assert_eq!(held.sender.as_str(), "r0u0");
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
            let response = reqwest::Client::new()
                .post(format!("{}/v1/rooms/{room}/messages", client.base()))
                .bearer_auth(client.token())
                .json(&serde_json::json!({"clientMsgId": id, "text": id}))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.json::<chatd::domain::Message>().await.unwrap()
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

    // And under concurrent traffic from all three nodes.
    let rest: Vec<String> = nodes.iter().map(ChatdNode::base).collect();
    let ws: Vec<String> = nodes.iter().map(ChatdNode::ws_url).collect();
    let (members, readers) = groups(&rest, &ws, 2, 6, 30).await;
    let (sessions, ()) = run(members, Duration::from_secs(120), |_| {}, async {}).await;
    assert_clean(&sessions, &readers, 360).await;
    for (room, reader) in readers.iter().chain([(&room.id, &alice)]) {
        let history = reader.history_after(room, 0).await.unwrap();
        assert!(
            history
                .windows(2)
                .all(|w| w[0].created_at <= w[1].created_at && w[0].seq + 1 == w[1].seq),
            "createdAt decreased along seq in {room}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_resume_elsewhere_through_nginx() {
    let servers = Servers::shared();
    let mut nodes = servers.nodes(3, &[]);
    let nginx = Nginx::start(&nodes.iter().map(|n| n.port).collect::<Vec<_>>());
    let rest = vec![nginx.base()];
    let ws = vec![nginx.ws_url()];
    let (members, readers) = groups(&rest, &ws, 3, 6, 60).await;
    let victim = nodes.remove(1);
    let victim = Arc::new(std::sync::Mutex::new(victim));
    let killer = victim.clone();
    let (sessions, ()) = run(
        members,
        Duration::from_secs(180),
        |c| c.send_interval = Duration::from_millis(20),
        async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            killer.lock().unwrap().kill();
        },
    )
    .await;
    let reconnects: u64 = sessions.iter().map(|s| s.stats().reconnects).sum();
    assert!(reconnects > 0, "nobody was connected to the killed node");
    assert_clean(&sessions, &readers, 3 * 6 * 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_message_arrives_across_a_redis_restart() {
    let mut redis = Redis::start();
    let servers = Servers {
        redis: redis.url(),
        ..Servers::shared()
    };
    let nodes = servers.nodes(2, &[]);
    let rest: Vec<String> = nodes.iter().map(ChatdNode::base).collect();
    let ws: Vec<String> = nodes.iter().map(ChatdNode::ws_url).collect();
    let (members, readers) = groups(&rest, &ws, 2, 4, 50).await;
    let (sessions, _redis) = run(
        members,
        Duration::from_secs(180),
        |c| c.send_interval = Duration::from_millis(20),
        async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            redis.stop();
            tokio::time::sleep(Duration::from_secs(1)).await;
            redis.resume();
            redis
        },
    )
    .await;
    let retried: u64 = sessions
        .iter()
        .map(|s| s.stats().retried.values().sum::<u64>() + s.stats().reconnects)
        .sum();
    assert!(retried > 0, "the restart went unnoticed");
    assert_clean(&sessions, &readers, 2 * 4 * 50).await;
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
    let mut conn = chatd::client::Connection::open(&url).await.unwrap();
    conn.event(Duration::from_secs(10)).await.unwrap();
    let wait = Duration::from_secs(15);
    let ack = |event: chatd::client::ServerEvent| match event {
        chatd::client::ServerEvent::Ack { seq, duplicate, .. } => Some((seq, duplicate)),
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
                chatd::client::ServerEvent::Error {
                    code,
                    client_msg_id,
                    ..
                } => {
                    assert_eq!(
                        (code.as_str(), client_msg_id.as_deref()),
                        ("store_unavailable", Some(attempt))
                    );
                    break;
                }
                chatd::client::ServerEvent::Ack { .. } => panic!("acked while MongoDB is down"),
                _ => {}
            }
        }
    }
    let r = http
        .get(format!("{}/v1/rooms/{}/messages", node.base(), room.id))
        .bearer_auth(alice.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable");
    let ready = http
        .get(format!("{}/readyz", node.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

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
                    chatd::client::ServerEvent::Ack {
                        client_msg_id,
                        seq,
                        duplicate,
                        ..
                    } if client_msg_id == attempt => {
                        acked.push((attempt, seq, duplicate));
                        break 'retry;
                    }
                    chatd::client::ServerEvent::Error {
                        code,
                        client_msg_id,
                        ..
                    } if client_msg_id.as_deref() == Some(attempt) => {
                        assert_eq!(code, "store_unavailable");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue 'retry;
                    }
                    chatd::client::ServerEvent::Message(_) => {}
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
    let ready = http
        .get(format!("{}/readyz", node.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
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
            let body: serde_json::Value = reqwest::Client::new()
                .get(format!("{base}/v1/rooms/{room}/presence"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
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
    let mut bob = chatd::client::Connection::open(&bob_url).await.unwrap();
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
    assert!(
        killed.elapsed() <= Duration::from_millis(3000 + 500),
        "offline after {:?}",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_tells_its_clients_to_reconnect_elsewhere() {
    let servers = Servers::shared();
    let mut node = servers.nodes(1, &[]).remove(0);
    let alice = Client::new(node.base(), token("alice"));
    let room = alice.open_direct("bob").await.unwrap();
    let url = format!("{}?token={}", node.ws_url(), alice.token());
    let mut conn = chatd::client::Connection::open(&url).await.unwrap();
    conn.event(Duration::from_secs(10)).await.unwrap();
    conn.send_message(&room.id, "last-words", "sent just before the stop")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stopped = tokio::task::spawn_blocking(move || node.terminate(Duration::from_secs(15)));
    // The frame in flight is answered before the close.
    let mut acked = false;
    let code = loop {
        match conn.next(Duration::from_secs(15)).await.unwrap() {
            chatd::client::Incoming::Event(chatd::client::ServerEvent::Ack { .. }) => acked = true,
            chatd::client::Incoming::Event(_) => {}
            chatd::client::Incoming::Closed { code, .. } => break code,
        }
    };
    assert_eq!(code, 1012);
    assert!(acked, "the in-flight send was not acked before the close");
    assert!(
        stopped.await.unwrap(),
        "the node did not exit within its grace period"
    );
}
