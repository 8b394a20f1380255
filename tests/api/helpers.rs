//! Test support: spawns real chatd nodes (in-process on port 0, or as processes of the built
//! binary) with their own temp dirs, and wraps the Rust client for terse assertions.

use std::{
    collections::BTreeMap,
    sync::{Arc, Once},
    time::Duration,
};

use chatd::{
    auth::TokenAuthority,
    clock::Clock,
    config::Settings,
    domain::{Message, Room, RoomId, Seq, UserId},
    startup::Application,
    store::NewMessage,
};
use chatd_client::{Client, Connection, Incoming, ServerFrame};
use serde_json::Value;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every wait in a test has a deadline; a hung test is a failure.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        }
    });
}

/// Settings for a test node: random port, SQLite in `dir`, short waits.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings::defaults();
    s.server.port = 0;
    s.server.node_id = "test".into();
    s.server.shutdown_grace_ms = 3000;
    s.store.sqlite_path = dir.join("chatd.db");
    s.websocket.resume_wait_ms = 500;
    // Tests send in bursts; the rate-limit tests set their own limits.
    s.limits.frames_per_second = 100_000;
    s.limits.frames_burst = 100_000;
    s.limits.sends_per_second = 100_000;
    s.limits.sends_burst = 100_000;
    s
}

/// A node running inside the test process.
pub struct TestApp {
    pub base: String,
    pub settings: Settings,
    pub node: Arc<chatd::startup::Node>,
    pub dir: Arc<TempDir>,
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let dir = Arc::new(TempDir::new().expect("temp dir"));
        let mut settings = test_settings(dir.path());
        configure(&mut settings);
        Self::start(settings, dir, None).await
    }

    /// Starts a node on existing settings and dir (a restart), optionally with a clock.
    pub async fn start(
        settings: Settings,
        dir: Arc<TempDir>,
        clock: Option<Arc<dyn Clock>>,
    ) -> Self {
        init_tracing();
        let app = match clock {
            Some(clock) => Application::build_with_clock(settings.clone(), clock).await,
            None => Application::build(settings.clone()).await,
        }
        .expect("node builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        let node = app.node();
        let handle = tokio::spawn(async move {
            app.run_until_stopped().await.expect("node runs");
        });
        Self {
            base,
            settings,
            node,
            dir,
            shutdown,
            handle,
        }
    }

    /// Stops the node (drain) and waits until it has.
    pub async fn stop(self) -> (Settings, Arc<TempDir>) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("node stops in time")
            .expect("node task");
        (self.settings, self.dir)
    }

    pub fn token(&self, user: &str) -> String {
        authority(&self.settings).mint(&UserId::parse(user).unwrap(), Duration::from_secs(3600))
    }

    pub fn client(&self, user: &str) -> Client {
        Client::new(&self.base, self.token(user))
    }

    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.base.replacen("http", "ws", 1))
    }

    /// A connected, live WebSocket for `user` (welcome read, empty resume sent).
    pub async fn connect(&self, user: &str) -> TestConn {
        TestConn::connect(&self.client(user)).await
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// `GET path` (under the node's base), without a token.
    pub async fn get_json(&self, path: &str) -> Reply {
        reply(self.http().get(format!("{}{path}", self.base))).await
    }

    /// `GET path` as `user`.
    pub async fn get_json_as(&self, user: &str, path: &str) -> Reply {
        self.get_json_with(&self.token(user), path).await
    }

    /// `GET path` with this bearer token, whatever it is.
    pub async fn get_json_with(&self, token: &str, path: &str) -> Reply {
        reply(
            self.http()
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    /// `POST path` with a JSON body, without a token.
    pub async fn post_json(&self, path: &str, body: Value) -> Reply {
        reply(self.http().post(format!("{}{path}", self.base)).json(&body)).await
    }

    /// `POST path` with a JSON body, as `user`.
    pub async fn post_json_as(&self, user: &str, path: &str, body: Value) -> Reply {
        let request = self.http().post(format!("{}{path}", self.base));
        reply(request.bearer_auth(self.token(user)).json(&body)).await
    }

    /// `DELETE path` as `user`.
    pub async fn delete_as(&self, user: &str, path: &str) -> Reply {
        let request = self.http().delete(format!("{}{path}", self.base));
        reply(request.bearer_auth(self.token(user))).await
    }
}

/// What a REST call answered: the status, the headers and the body as JSON (`Null` when it
/// has none or it is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The body as a `T`; panics, showing the reply, if it is not one.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("not a {}: {e}: {self:?}", std::any::type_name::<T>()))
    }

    /// The `code` of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// Sends `request` and reads the whole answer.
pub async fn reply(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("reply read");
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

pub fn authority(settings: &Settings) -> TokenAuthority {
    TokenAuthority::new(&settings.auth.jwt_secret, settings.auth.leeway_secs)
}

/// A WebSocket connection with assertions.
pub struct TestConn {
    pub conn: Connection,
    pub welcome: ServerFrame,
}

impl TestConn {
    /// Connects and resumes nothing (live traffic starts at once).
    pub async fn connect(client: &Client) -> Self {
        Self::connect_resuming(client, &BTreeMap::new()).await
    }

    /// Connects and resumes `rooms`; returns after the `resumed` frame, with the replayed
    /// messages.
    pub async fn connect_resuming(client: &Client, rooms: &BTreeMap<RoomId, Seq>) -> Self {
        let (conn, _) = Self::connect_and_replay(client, rooms).await;
        conn
    }

    pub async fn connect_and_replay(
        client: &Client,
        rooms: &BTreeMap<RoomId, Seq>,
    ) -> (Self, Vec<Message>) {
        let mut conn = client.connect().await.expect("connects");
        let welcome = conn.event(WAIT).await.expect("welcome");
        assert!(
            matches!(welcome, ServerFrame::Welcome { .. }),
            "{welcome:?}"
        );
        conn.resume(rooms).await.expect("resume");
        let mut this = Self { conn, welcome };
        let mut replayed = Vec::new();
        loop {
            match this.event().await {
                ServerFrame::Message(m) => replayed.push(m),
                ServerFrame::Resumed { .. } => return (this, replayed),
                other => panic!("unexpected during resume: {other:?}"),
            }
        }
    }

    pub async fn event(&mut self) -> ServerFrame {
        self.conn.event(WAIT).await.expect("event")
    }

    pub async fn send(&mut self, room: &RoomId, client_msg_id: &str, text: &str) {
        self.conn
            .send_message(room, client_msg_id, text)
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, frame: Value) {
        self.conn.send_json(&frame).await.expect("send");
    }

    /// Skips frames until one satisfies `pick`.
    pub async fn wait_for<T>(&mut self, mut pick: impl FnMut(ServerFrame) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.conn.event(left).await.expect("awaited frame");
            if let Some(found) = pick(event) {
                return found;
            }
        }
    }

    pub async fn ack(&mut self, client_msg_id: &str) -> ServerFrame {
        let wanted = client_msg_id.to_owned();
        self.wait_for(|e| match &e {
            ServerFrame::Ack { client_msg_id, .. } if *client_msg_id == wanted => Some(e),
            ServerFrame::Error(chatd_client::ErrorFrame {
                client_msg_id: Some(id),
                ..
            }) if *id == wanted => {
                panic!("send {wanted} failed: {e:?}")
            }
            _ => None,
        })
        .await
    }

    /// Sends and waits for the ack; returns its seq.
    pub async fn send_acked(&mut self, room: &RoomId, client_msg_id: &str, text: &str) -> Seq {
        self.send(room, client_msg_id, text).await;
        match self.ack(client_msg_id).await {
            ServerFrame::Ack { seq, .. } => seq,
            _ => unreachable!(),
        }
    }

    pub async fn error(&mut self) -> (String, String) {
        self.wait_for(|e| match e {
            ServerFrame::Error(chatd_client::ErrorFrame { code, message, .. }) => {
                Some((code.to_string(), message))
            }
            _ => None,
        })
        .await
    }

    /// Collects `n` message frames of `room`, skipping other frames.
    pub async fn messages(&mut self, room: &RoomId, n: usize) -> Vec<Message> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let m = self
                .wait_for(|e| match e {
                    ServerFrame::Message(m) if &m.room == room => Some(m),
                    _ => None,
                })
                .await;
            got.push(m);
        }
        got
    }

    /// Asserts that no message frame arrives within `quiet`.
    pub async fn no_message_within(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.conn.next(left).await {
                Err(_) => return, // nothing within the window
                Ok(Incoming::Event(ServerFrame::Message(m))) => panic!("unexpected message {m:?}"),
                Ok(Incoming::Closed { code, .. }) => panic!("closed {code}"),
                Ok(Incoming::Event(_)) => {}
            }
        }
    }

    pub async fn closed(&mut self) -> u16 {
        self.conn.closed(WAIT).await.expect("close frame")
    }

    /// The rooms this user's connections on `app` are live in.
    pub fn conn_rooms(&self, app: &TestApp) -> Vec<RoomId> {
        let ServerFrame::Welcome { user, .. } = &self.welcome else {
            unreachable!("connections start with a welcome")
        };
        app.node
            .hub
            .connections_of(user)
            .iter()
            .flat_map(|c| c.rooms())
            .collect()
    }
}

/// Opens a group of `members` created by the first one.
pub async fn group(app: &TestApp, name: &str, members: &[&str]) -> Room {
    app.client(members[0])
        .create_group(name, &members[1..])
        .await
        .expect("group created")
}

pub fn seqs(messages: &[Message]) -> Vec<Seq> {
    messages.iter().map(|m| m.seq).collect()
}

/// A message for `Store::append`: `sender`'s `client_msg_id` in `room`, with a text that
/// names it.
pub fn new_message(room: &RoomId, sender: &str, client_msg_id: &str) -> NewMessage {
    NewMessage::text(
        room.clone(),
        UserId::parse(sender).unwrap(),
        client_msg_id,
        &format!("text of {client_msg_id}"),
    )
}
