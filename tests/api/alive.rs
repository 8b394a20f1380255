//! Presence, typing, receipts and unread counts, end to end: the same scenarios on one node
//! (SQLite, in-process bus) and on three (MongoDB-wire server, Redis), over real sockets to
//! real chatd processes, with users spread over the nodes. Then what only a cluster has:
//! a node killed (its users go offline within the presence TTL) and a node stopped (at once).
//!
//! Over 400 lines: one function per scenario, each run on both deployments.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use chatd::{
    auth::TokenAuthority,
    config::Settings,
    domain::{PresenceState, RoomId, UserId, UserPresence},
};
use chatd_client::{Client, Connection, ServerFrame};
use serde_json::{Value, json};

use crate::{
    helpers::{WAIT, reply},
    servers::{ChatdNode, Mongo, Redis, cluster_env, unique},
};

/// Timings short enough for tests, long enough for a busy machine.
const FAST: [(&str, &str); 6] = [
    ("CHATD__PRESENCE__TTL_MS", "3000"),
    ("CHATD__PRESENCE__REFRESH_MS", "1000"),
    ("CHATD__PRESENCE__LEAVE_GRACE_MS", "2000"),
    ("CHATD__TYPING__TTL_MS", "1500"),
    ("CHATD__TYPING__THROTTLE_MS", "1000"),
    ("CHATD__RECEIPTS__COALESCE_MS", "100"),
];
const GRACE: Duration = Duration::from_millis(2000);

fn token(user: &str) -> String {
    let s = Settings::defaults();
    TokenAuthority::new(&s.auth.jwt_secret, 30)
        .mint(&UserId::parse(user).unwrap(), Duration::from_secs(3600))
}

/// chatd processes sharing one store and bus; users are placed on a node by index.
pub(crate) struct Deployment {
    pub(crate) nodes: Vec<ChatdNode>,
    /// The SQLite file's directory (one node only).
    dir: Option<tempfile::TempDir>,
    /// The Redis bus's channel prefix (cluster only).
    prefix: Option<String>,
    /// Makes user names unique to this deployment (the MongoDB-wire server is shared).
    tag: String,
    /// The MongoDB database (cluster only).
    pub(crate) database: Option<String>,
}

impl Deployment {
    pub(crate) fn single(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        let mut env = vec![(
            "CHATD__STORE__SQLITE_PATH".to_owned(),
            dir.path().join("chatd.db").display().to_string(),
        )];
        env.extend(
            FAST.iter()
                .chain(extra)
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let tag = unique("n")[2..8].to_owned();
        Self {
            nodes: vec![ChatdNode::start(&format!("alive1-{tag}"), &env)],
            dir: Some(dir),
            prefix: None,
            tag,
            database: None,
        }
    }

    pub(crate) fn cluster(n: usize, extra: &[(&str, &str)]) -> Self {
        Self::cluster_on(&Redis::shared().url(), n, extra)
    }

    pub(crate) fn cluster_on(redis: &str, n: usize, extra: &[(&str, &str)]) -> Self {
        let prefix = unique("chatd_alive");
        let mut env = cluster_env(redis, &Mongo::shared().uri, &prefix, &prefix);
        env.extend(
            FAST.iter()
                .chain(extra)
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let tag = prefix[12..18].to_owned();
        let nodes = (0..n)
            .map(|i| ChatdNode::start(&format!("alive{n}-{tag}-{i}"), &env))
            .collect();
        Self {
            nodes,
            dir: None,
            database: Some(prefix.clone()),
            prefix: Some(prefix),
            tag,
        }
    }

    /// The SQLite file (one node only).
    pub(crate) fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("chatd.db"))
    }

    pub(crate) fn user(&self, name: &str) -> String {
        format!("{name}-{}", self.tag)
    }

    pub(crate) fn base(&self, node: usize) -> String {
        self.nodes[node % self.nodes.len()].base()
    }

    pub(crate) fn client(&self, node: usize, user: &str) -> Client {
        Client::new(self.base(node), token(&self.user(user)))
    }

    /// A live connection of `user` on node `node` (presence, typing and unread included).
    pub(crate) async fn live(&self, node: usize, user: &str) -> Live {
        Live::open(&self.client(node, user)).await
    }

    pub(crate) async fn get(&self, node: usize, user: &str, path: &str) -> Value {
        let client = self.client(node, user);
        let r = reply(
            reqwest::Client::new()
                .get(format!("{}{path}", client.base()))
                .bearer_auth(client.token()),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        r.body
    }

    pub(crate) async fn put(&self, node: usize, user: &str, path: &str, body: Value) -> Value {
        let client = self.client(node, user);
        let r = reply(
            reqwest::Client::new()
                .put(format!("{}{path}", client.base()))
                .bearer_auth(client.token())
                .json(&body),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        r.body
    }
}

pub(crate) struct Live {
    pub(crate) conn: Connection,
    /// Frames read while looking for something else, in order.
    seen: Vec<ServerFrame>,
    pings: u64,
    /// The newest presence version taken from the frames, per user.
    versions: std::collections::HashMap<UserId, u64>,
}

impl Live {
    pub(crate) async fn open(client: &Client) -> Self {
        let mut conn = client.connect().await.expect("connects").with_ambient();
        let welcome = conn.event(WAIT).await.unwrap();
        assert!(
            matches!(welcome, ServerFrame::Welcome { .. }),
            "{welcome:?}"
        );
        conn.resume(&BTreeMap::new()).await.unwrap();
        let mut live = Self {
            conn,
            seen: Vec::new(),
            pings: 0,
            versions: Default::default(),
        };
        live.next_matching(|f| matches!(f, ServerFrame::Resumed { .. }))
            .await;
        live
    }

    pub(crate) async fn send(&mut self, frame: Value) {
        self.conn.send_json(&frame).await.expect("send");
    }

    /// The next frame that `pick` wants (among those kept, first); the others are kept in
    /// `seen`.
    pub(crate) async fn next_matching(
        &mut self,
        pick: impl Fn(&ServerFrame) -> bool,
    ) -> ServerFrame {
        if let Some(i) = self.seen.iter().position(&pick) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.conn.event(left).await.expect("awaited frame");
            if pick(&frame) {
                return frame;
            }
            self.seen.push(frame);
        }
    }

    /// Every frame that arrives before the answer to a ping sent now: what the server had
    /// queued for this connection by the time it handled the ping.
    pub(crate) async fn drain(&mut self) -> Vec<ServerFrame> {
        self.pings += 1;
        let id = self.pings;
        self.send(json!({"type": "ping", "id": id})).await;
        let mut frames = std::mem::take(&mut self.seen);
        loop {
            match self.conn.event(WAIT).await.expect("frame before pong") {
                ServerFrame::Pong { id: Some(got) } if got == json!(id) => return frames,
                frame => frames.push(frame),
            }
        }
    }

    /// Waits for `user`'s presence to show `state` (in a snapshot or a change), going
    /// through their entries in order and only ever forward in version, as a client would.
    async fn presence(&mut self, user: &str, state: PresenceState) -> UserPresence {
        self.changes_until(user, state).await.pop().unwrap()
    }

    /// `user`'s presence entries newer than the last one taken, up to the first that shows
    /// `state`: one entry when nothing happened in between.
    async fn changes_until(&mut self, user: &str, state: PresenceState) -> Vec<UserPresence> {
        let user = UserId::parse(user).unwrap();
        let mut changes = Vec::new();
        loop {
            let known = self.versions.get(&user).copied();
            let newer = |frame: &ServerFrame| match frame {
                ServerFrame::Presence { users, .. } => users
                    .iter()
                    .find(|p| p.user == user && known.is_none_or(|v| p.v > v))
                    .cloned(),
                _ => None,
            };
            let frame = self.next_matching(|f| newer(f).is_some()).await;
            let entry = newer(&frame).unwrap();
            self.versions.insert(user.clone(), entry.v);
            let done = entry.state == state;
            changes.push(entry);
            if done {
                return changes;
            }
        }
    }

    async fn typing(&mut self, room: &RoomId) -> Vec<UserId> {
        match self
            .next_matching(|f| matches!(f, ServerFrame::Typing { room: r, .. } if r == room))
            .await
        {
            ServerFrame::Typing { users, .. } => users,
            _ => unreachable!(),
        }
    }

    async fn receipt(&mut self, room: &RoomId, user: &str) -> (u64, u64) {
        let user = UserId::parse(user).unwrap();
        match self
            .next_matching(|f| {
                matches!(f, ServerFrame::Receipt { room: r, user: u, .. } if r == room && *u == user)
            })
            .await
        {
            ServerFrame::Receipt {
                delivered_seq,
                read_seq,
                ..
            } => (delivered_seq, read_seq),
            _ => unreachable!(),
        }
    }

    async fn unread(&mut self, room: &RoomId) -> (u64, u64, u64) {
        match self
            .next_matching(|f| matches!(f, ServerFrame::Unread { room: r, .. } if r == room))
            .await
        {
            ServerFrame::Unread {
                unread,
                read_seq,
                total,
                ..
            } => (unread, read_seq, total),
            _ => unreachable!(),
        }
    }

    pub(crate) async fn send_acked(&mut self, room: &RoomId, id: &str) -> u64 {
        self.send(json!({"type": "send", "room": room, "clientMsgId": id, "text": id}))
            .await;
        match self
            .next_matching(
                |f| matches!(f, ServerFrame::Ack { client_msg_id, .. } if client_msg_id == id),
            )
            .await
        {
            ServerFrame::Ack { seq, .. } => seq,
            _ => unreachable!(),
        }
    }

    /// Drops the TCP connection without a close frame: what a lost network looks like.
    fn drop_abruptly(self) {
        drop(self.conn);
    }

    async fn close(self) {
        self.conn.close().await;
    }
}

/// Frames in `frames` that mention `user`'s presence.
fn presence_of(frames: &[ServerFrame], user: &str) -> Vec<UserPresence> {
    frames
        .iter()
        .flat_map(|f| match f {
            ServerFrame::Presence { users, .. } => users.clone(),
            _ => Vec::new(),
        })
        .filter(|p| p.user.as_str() == user)
        .collect()
}

/// The entry of `user` in a REST body's `members`.
fn member(body: &Value, user: &str) -> Value {
    let members = body["members"].as_array().expect("members");
    let entry = members.iter().find(|m| m["user"] == user);
    entry
        .cloned()
        .unwrap_or_else(|| panic!("{user} not in {body}"))
}

fn is_typing(frame: &ServerFrame) -> bool {
    matches!(frame, ServerFrame::Typing { .. })
}

// ---------------------------------------------------------------------------------------------
// The scenarios

/// B's online and offline reach A (who shares a room with B) and never C (who does not);
/// two devices keep B online until the last one closes.
async fn presence_reaches_contacts_only(d: &Deployment) {
    let (alice, bob) = (d.user("alice"), d.user("bob"));
    d.client(0, "alice").open_direct(&bob).await.unwrap();
    d.client(2, "carol")
        .open_direct(&d.user("dave"))
        .await
        .unwrap();
    let mut a = d.live(0, "alice").await;
    let first = a.presence(&bob, PresenceState::Offline).await;
    assert_eq!(first.last_seen, None, "never seen yet");
    let mut c = d.live(2, "carol").await;

    let b1 = d.live(1, "bob").await;
    let online = a.presence(&bob, PresenceState::Online).await;
    assert!(online.v > first.v);
    let b2 = d.live(2, "bob").await;
    b1.close().await;
    // Bob's first device is gone, his second is not: nothing to tell.
    let frames = a.drain().await;
    assert!(presence_of(&frames, &bob).is_empty(), "{frames:?}");
    let closing = chrono::Utc::now() - chrono::Duration::milliseconds(5);
    b2.close().await;
    let changes = a.changes_until(&bob, PresenceState::Offline).await;
    assert_eq!(changes.len(), 1, "no change in between: {changes:?}");
    assert!(changes[0].v > online.v);
    // Offline when the second device left, not the first.
    let last_seen = changes[0].last_seen.expect("a last-seen time");
    assert!(last_seen >= closing, "{last_seen} before {closing}");

    let frames = c.drain().await;
    assert!(
        presence_of(&frames, &bob).is_empty(),
        "carol saw bob: {frames:?}"
    );
    assert!(
        presence_of(&frames, &alice).is_empty(),
        "carol saw alice: {frames:?}"
    );
}

/// A connection that drops and comes back within the grace shows no offline; one that does
/// not come back shows offline once the grace is over.
async fn a_quick_reconnect_shows_no_offline(d: &Deployment) {
    let bob = d.user("bob2");
    d.client(0, "alice2").open_direct(&bob).await.unwrap();
    let mut a = d.live(0, "alice2").await;
    let b = d.live(1, "bob2").await;
    let online = a.presence(&bob, PresenceState::Online).await;
    b.drop_abruptly();
    let b = d.live(2, "bob2").await;
    let dropped = Instant::now();
    b.drop_abruptly();
    let changes = a.changes_until(&bob, PresenceState::Offline).await;
    assert!(
        dropped.elapsed() >= GRACE,
        "offline before the grace ran out"
    );
    // The first drop and the reconnect showed nothing.
    assert_eq!(changes.len(), 1, "bob flapped: {changes:?}");
    assert!(changes[0].v > online.v);
}

/// Typing reaches the room's other members on every node as the full list, expires by
/// itself, is never stored, never reaches the typist or a non-member, and a non-member
/// cannot type.
async fn typing_reaches_members_and_expires(d: &Deployment) {
    let (bob, carol) = (d.user("bob3"), d.user("carol3"));
    let room = d
        .client(0, "alice3")
        .create_group("typing", &[&bob, &carol])
        .await
        .unwrap()
        .id;
    d.client(1, "dave3").open_direct(&bob).await.unwrap();
    let mut a = d.live(0, "alice3").await;
    let mut b = d.live(1, "bob3").await;
    let mut c = d.live(2, "carol3").await;
    let mut outsider = d.live(0, "dave3").await;

    b.send(json!({"type": "typing", "room": room, "typing": true}))
        .await;
    assert_eq!(a.typing(&room).await, vec![UserId::parse(&bob).unwrap()]);
    assert_eq!(c.typing(&room).await, vec![UserId::parse(&bob).unwrap()]);
    c.send(json!({"type": "typing", "room": room, "typing": true}))
        .await;
    let both = a.typing(&room).await;
    assert_eq!(both.len(), 2, "{both:?}");
    // Carol's own list leaves her out, so it changed only when bob started.
    c.send(json!({"type": "typing", "room": room, "typing": false}))
        .await;
    assert_eq!(a.typing(&room).await, vec![UserId::parse(&bob).unwrap()]);
    // Bob never stops: his entry expires by itself.
    let started = Instant::now();
    assert_eq!(a.typing(&room).await, Vec::<UserId>::new());
    assert!(started.elapsed() < Duration::from_secs(5));

    let frames = b.drain().await;
    let to_bob: Vec<_> = frames
        .iter()
        .filter(|f| matches!(f, ServerFrame::Typing { users, .. } if users.iter().any(|u| u.as_str() == bob)))
        .collect();
    assert!(to_bob.is_empty(), "bob heard of his own typing: {to_bob:?}");
    let frames = outsider.drain().await;
    assert!(!frames.iter().any(is_typing), "{frames:?}");
    outsider
        .send(json!({"type": "typing", "room": room, "typing": true}))
        .await;
    let refused = outsider
        .next_matching(|f| matches!(f, ServerFrame::Error(_)))
        .await;
    assert!(
        matches!(&refused, ServerFrame::Error(e)
            if e.code == "room_not_found" && e.room.as_deref() == Some(room.as_str())),
        "{refused:?}"
    );
    let history = d
        .get(0, "alice3", &format!("/v1/rooms/{room}/messages"))
        .await;
    assert_eq!(history["messages"], json!([]), "typing is never stored");
}

/// Ticks: sent, then delivered, then read, across nodes; positions never move back; a group
/// counts k of n over REST; a private read tells nobody and still clears the reader's badge.
async fn receipts_move_forward_and_private_reads_tell_nobody(d: &Deployment) {
    let (bob, carol) = (d.user("bob4"), d.user("carol4"));
    let direct = d.client(0, "alice4").open_direct(&bob).await.unwrap().id;
    let mut a = d.live(0, "alice4").await;
    let mut b = d.live(1, "bob4").await;
    a.send_acked(&direct, "m1").await;
    let s2 = a.send_acked(&direct, "m2").await;
    b.send(json!({"type": "delivered", "room": direct, "seq": s2}))
        .await;
    assert_eq!(a.receipt(&direct, &bob).await, (2, 0), "delivered");
    b.send(json!({"type": "read", "room": direct, "seq": 1}))
        .await;
    assert_eq!(a.receipt(&direct, &bob).await, (2, 1), "read up to 1");
    // Old reports: ignored.
    b.send(json!({"type": "delivered", "room": direct, "seq": 1}))
        .await;
    b.send(json!({"type": "read", "room": direct, "seq": 0}))
        .await;
    b.send(json!({"type": "read", "room": direct, "seq": 2}))
        .await;
    assert_eq!(
        a.receipt(&direct, &bob).await,
        (2, 2),
        "nothing moved back in between"
    );
    let positions = d
        .get(0, "alice4", &format!("/v1/rooms/{direct}/receipts"))
        .await;
    assert_eq!(
        member(&positions, &bob),
        json!({"user": bob, "deliveredSeq": 2, "readSeq": 2})
    );

    // A group: read by 1 of 2, delivered to 2 of 2; carol reads privately.
    let group = d
        .client(0, "alice4")
        .create_group("ticks", &[&bob, &carol])
        .await
        .unwrap()
        .id;
    // Both are live in the new room before anything happens in it.
    a.next_matching(|f| matches!(f, ServerFrame::RoomAdded { .. }))
        .await;
    b.next_matching(|f| matches!(f, ServerFrame::RoomAdded { .. }))
        .await;
    let mut c1 = d.live(2, "carol4").await;
    let mut c2 = d.live(0, "carol4").await;
    let seq = a.send_acked(&group, "g1").await;
    b.send(json!({"type": "read", "room": group, "seq": seq}))
        .await;
    assert_eq!(a.receipt(&group, &bob).await, (1, 1));
    c1.send(json!({"type": "read", "room": group, "seq": seq, "private": true}))
        .await;
    assert_eq!(
        c2.unread(&group).await.0,
        0,
        "carol's other device: badge cleared"
    );
    // Her delivery shows, her read does not.
    assert_eq!(a.receipt(&group, &carol).await, (1, 0));
    let positions = d
        .get(1, "bob4", &format!("/v1/rooms/{group}/receipts"))
        .await;
    let others: Vec<&Value> = positions["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["user"] != d.user("alice4").as_str())
        .collect();
    let delivered = others
        .iter()
        .filter(|m| m["deliveredSeq"].as_u64() >= Some(seq))
        .count();
    let read = others
        .iter()
        .filter(|m| m["readSeq"].as_u64() >= Some(seq))
        .count();
    assert_eq!((delivered, read, others.len()), (2, 1, 2));
}

/// B, offline, gets 3 messages: unread 3. B reads on one device: the other device gets the
/// new count live, with the total.
async fn unread_counts_follow_the_user_to_every_device(d: &Deployment) {
    let bob = d.user("bob5");
    let room = d.client(0, "alice5").open_direct(&bob).await.unwrap().id;
    let mut a = d.live(0, "alice5").await;
    for i in 0..3 {
        a.send_acked(&room, &format!("u{i}")).await;
    }
    let rooms = d.client(1, "bob5").rooms().await.unwrap();
    assert_eq!(rooms[0].unread, 3);
    let mut phone = d.live(1, "bob5").await;
    let mut laptop = d.live(2, "bob5").await;
    phone
        .send(json!({"type": "read", "room": room, "seq": 3}))
        .await;
    assert_eq!(laptop.unread(&room).await, (0, 3, 0));
    assert_eq!(phone.unread(&room).await, (0, 3, 0));
}

/// A user who hides their presence looks offline, without a last-seen time, at once.
async fn hidden_presence_looks_offline(d: &Deployment) {
    let bob = d.user("bob6");
    d.client(0, "alice6").open_direct(&bob).await.unwrap();
    let mut a = d.live(0, "alice6").await;
    let _b = d.live(1, "bob6").await;
    a.presence(&bob, PresenceState::Online).await;
    let settings = d
        .put(1, "bob6", "/v1/me/settings", json!({"hidePresence": true}))
        .await;
    assert_eq!(settings, json!({"hidePresence": true}));
    let hidden = a.presence(&bob, PresenceState::Offline).await;
    assert_eq!(hidden.last_seen, None);
    let room_view = d.get(0, "alice6", "/v1/rooms").await;
    let room = room_view["rooms"][0]["id"].as_str().unwrap().to_owned();
    let presence = d
        .get(0, "alice6", &format!("/v1/rooms/{room}/presence"))
        .await;
    assert_eq!(
        member(&presence, &bob),
        json!({"user": bob, "online": false, "state": "offline"})
    );
    d.put(1, "bob6", "/v1/me/settings", json!({"hidePresence": false}))
        .await;
    a.presence(&bob, PresenceState::Online).await;
}

/// Starts of one user in one room reach the bus at most once per `typing.throttle_ms`,
/// however often the client sends them (seen on the Redis channel itself).
async fn typing_is_throttled_on_the_bus(d: &Deployment, prefix: &str) {
    use futures_util::StreamExt;
    let bob = d.user("bob8");
    let room = d.client(0, "alice8").open_direct(&bob).await.unwrap().id;
    let client = redis::Client::open(Redis::shared().url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{prefix}:room:{room}"))
        .await
        .unwrap();
    let mut b = d.live(1, "bob8").await;
    for _ in 0..5 {
        b.send(json!({"type": "typing", "room": room, "typing": true}))
            .await;
    }
    b.send(json!({"type": "typing", "room": room, "typing": false}))
        .await;
    // The stop is the last event: everything before it has been published by then.
    let mut events = Vec::new();
    let mut messages = pubsub.on_message();
    while !events
        .last()
        .is_some_and(|e: &Value| e["typing"] == json!(false))
    {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_slice(message.get_payload_bytes()).unwrap();
        if event["t"] == "typing" {
            events.push(event);
        }
    }
    let starts = events.iter().filter(|e| e["typing"] == json!(true)).count();
    assert_eq!(starts, 1, "{events:?}");
}

async fn every_scenario(d: &Deployment) {
    presence_reaches_contacts_only(d).await;
    a_quick_reconnect_shows_no_offline(d).await;
    typing_reaches_members_and_expires(d).await;
    receipts_move_forward_and_private_reads_tell_nobody(d).await;
    unread_counts_follow_the_user_to_every_device(d).await;
    hidden_presence_looks_offline(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_feels_alive() {
    let d = Deployment::single(&[]);
    every_scenario(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_feel_alive() {
    let d = Deployment::cluster(3, &[]);
    every_scenario(&d).await;
    typing_is_throttled_on_the_bus(&d, d.prefix.as_deref().unwrap()).await;
}

/// A connection without activity for `presence.away_after_ms` shows its user away; activity
/// brings them back online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_user_turns_away_and_back() {
    let d = Deployment::single(&[("CHATD__PRESENCE__AWAY_AFTER_MS", "1000")]);
    let bob = d.user("bob9");
    d.client(0, "alice9").open_direct(&bob).await.unwrap();
    let mut a = d.live(0, "alice9").await;
    let mut b = d.live(0, "bob9").await;
    a.presence(&bob, PresenceState::Online).await;
    let idle_from = Instant::now();
    a.presence(&bob, PresenceState::Away).await;
    assert!(idle_from.elapsed() < Duration::from_secs(5));
    b.send(json!({"type": "active"})).await;
    a.presence(&bob, PresenceState::Online).await;
}

/// SIGKILL the node holding B's only connection: A sees B offline within the presence TTL,
/// announced by a surviving node. SIGTERM the node holding C's: at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_takes_its_users_offline_a_stopped_one_at_once() {
    // A TTL long enough that only the graceful path can be quicker than half of it.
    let ttl = Duration::from_secs(10);
    let mut d = Deployment::cluster(
        3,
        &[
            ("CHATD__PRESENCE__TTL_MS", "10000"),
            ("CHATD__PRESENCE__REFRESH_MS", "1000"),
        ],
    );
    let (bob, carol) = (d.user("bob7"), d.user("carol7"));
    d.client(0, "alice7").open_direct(&bob).await.unwrap();
    d.client(0, "alice7").open_direct(&carol).await.unwrap();
    let mut a = d.live(0, "alice7").await;
    let _b = d.live(1, "bob7").await;
    let _c = d.live(2, "carol7").await;
    a.presence(&bob, PresenceState::Online).await;
    a.presence(&carol, PresenceState::Online).await;

    let killed = Instant::now();
    d.nodes[1].kill();
    a.presence(&bob, PresenceState::Offline).await;
    let took = killed.elapsed();
    // The lease runs out within the TTL; the sweep that notices runs every 250 ms.
    assert!(
        took <= ttl + Duration::from_secs(2),
        "offline after {took:?}"
    );

    let stopped = Instant::now();
    assert!(d.nodes[2].terminate(Duration::from_secs(20)));
    a.presence(&carol, PresenceState::Offline).await;
    assert!(
        stopped.elapsed() < ttl / 2,
        "a graceful stop announced through the lease: {:?}",
        stopped.elapsed()
    );
}

/// A Redis restart loses every presence record and lease (it keeps nothing): the node that
/// holds B's connection rebuilds B's record and announces it again, above the version A
/// holds, so A's view stays right, and B's leaving still shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_rebuilt_after_redis_loses_its_data() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let d = Deployment::cluster_on(&redis.url(), 2, &[]);
    let bob = d.user("bob10");
    d.client(0, "alice10").open_direct(&bob).await.unwrap();
    let mut a = d.live(0, "alice10").await;
    let b = d.live(1, "bob10").await;
    a.presence(&bob, PresenceState::Online).await;
    let _redis = tokio::task::spawn_blocking(move || {
        let mut redis = redis;
        redis.stop();
        redis.resume();
        redis
    })
    .await
    .unwrap();
    // Rebuilt (an announcement, or the snapshot sent after the bus came back), newer.
    a.presence(&bob, PresenceState::Online).await;
    b.close().await;
    a.presence(&bob, PresenceState::Offline).await;
}
