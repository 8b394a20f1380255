//! A Rust client for chatd, in three layers:
//! - [`Client`] (REST) and [`Connection`] (one WebSocket, frame by frame);
//! - [`RoomLog`]: one room's messages by the same rules as the JS SDK (web/sdk/chatd.js):
//!   sorted by seq, duplicates dropped, gaps reported;
//! - [`Session`]: a client that behaves like the SDK: reconnects with backoff, resumes from
//!   what it holds, resends unacknowledged messages, fills gaps from REST history.
//!
//! The server's integration tests, `chatd-check` (load + audit, [`check`]) and `chatd-bench`
//! use it, so the rules are exercised in Rust too. Frames are the protocol crate's types.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, client::IntoClientRequest, protocol::frame::coding::CloseCode},
};

use chatd_protocol::{
    ClientFrame, ResumeFrame, SendFrame,
    model::{Message, Room, RoomId, RoomSummary, Seq},
};
pub use chatd_protocol::{ErrorCode, ErrorFrame, ResumedRoom, ServerFrame};

pub mod audit;
pub mod check;
mod room_log;
mod session;
pub mod stats;
pub mod token;

pub use room_log::{Inserted, RoomLog};
pub use session::{Outgoing, Session, SessionConfig};
pub use stats::{SessionStats, Tally};

/// What reading a connection produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Event(ServerFrame),
    /// The server closed the connection (code 1006 if it vanished without a close frame).
    Closed {
        code: u16,
        reason: String,
    },
}

/// A REST client for one user.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// `base` is `http://host:port`.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.into(),
            token: token.into(),
        }
    }

    /// Logs in through the development endpoint.
    pub async fn dev_login(base: &str, user: &str) -> anyhow::Result<Self> {
        let reply: Value = reqwest::Client::new()
            .post(format!("{base}/v1/dev/login"))
            .json(&json!({"user": user}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = reply["token"].as_str().context("no token")?;
        Ok(Self::new(base, token))
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `ws://host:port/ws?token=...`
    pub fn ws_url(&self) -> String {
        format!(
            "{}/ws?token={}",
            self.base.replacen("http", "ws", 1),
            self.token
        )
    }

    pub async fn connect(&self) -> anyhow::Result<Connection> {
        Connection::open(&self.ws_url()).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request.bearer_auth(&self.token).send().await?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            bail!("HTTP {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("decoding {body}"))
    }

    pub async fn open_direct(&self, peer: &str) -> anyhow::Result<Room> {
        let url = format!("{}/v1/rooms/direct", self.base);
        self.call(self.http.post(url).json(&json!({"peer": peer})))
            .await
    }

    pub async fn create_group(&self, name: &str, members: &[&str]) -> anyhow::Result<Room> {
        let url = format!("{}/v1/rooms", self.base);
        self.call(
            self.http
                .post(url)
                .json(&json!({"name": name, "members": members})),
        )
        .await
    }

    /// Adds members to a group (`POST /v1/rooms/{room}/members`; members already in it stay
    /// as they are): the room.
    pub async fn add_members(&self, room: &RoomId, members: &[&str]) -> anyhow::Result<Room> {
        let url = format!("{}/v1/rooms/{room}/members", self.base);
        self.call(self.http.post(url).json(&json!({ "members": members })))
            .await
    }

    /// Sends a message over REST (`POST /v1/rooms/{room}/messages`): the stored message.
    pub async fn post_message(
        &self,
        room: &RoomId,
        client_msg_id: &str,
        text: &str,
    ) -> anyhow::Result<Message> {
        let url = format!("{}/v1/rooms/{room}/messages", self.base);
        self.call(
            self.http
                .post(url)
                .json(&json!({"clientMsgId": client_msg_id, "text": text})),
        )
        .await
    }

    /// Every room of the user, following the list's pages, most recently active first.
    pub async fn rooms(&self) -> anyhow::Result<Vec<RoomSummary>> {
        #[derive(serde::Deserialize)]
        struct Page {
            rooms: Vec<RoomSummary>,
            next: Option<String>,
        }
        let mut rooms = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = self
                .http
                .get(format!("{}/v1/rooms", self.base))
                .query(&[("limit", "500")]);
            if let Some(after) = &after {
                request = request.query(&[("after", after)]);
            }
            let page: Page = self.call(request).await?;
            rooms.extend(page.rooms);
            match page.next {
                Some(next) if Some(&next) != after.as_ref() => after = Some(next),
                _ => break,
            }
        }
        let activity = |s: &RoomSummary| {
            s.last_message
                .as_ref()
                .map_or(s.room.created_at, |m| m.message.created_at)
        };
        rooms.sort_by_key(|s| std::cmp::Reverse(activity(s)));
        Ok(rooms)
    }

    /// One page of history; `query` is the query string, e.g. `after=10&limit=200`.
    pub async fn history_page(
        &self,
        room: &RoomId,
        query: &str,
    ) -> anyhow::Result<(Vec<Message>, bool)> {
        #[derive(Deserialize)]
        struct Page {
            messages: Vec<Message>,
            more: bool,
        }
        let url = format!("{}/v1/rooms/{room}/messages?{query}", self.base);
        let page: Page = self.call(self.http.get(url)).await?;
        Ok((page.messages, page.more))
    }

    /// The whole history after `after`, oldest first.
    pub async fn history_after(
        &self,
        room: &RoomId,
        mut after: Seq,
    ) -> anyhow::Result<Vec<Message>> {
        let mut all = Vec::new();
        loop {
            let (page, more) = self
                .history_page(room, &format!("after={after}&limit=200"))
                .await?;
            if let Some(last) = page.last() {
                after = last.seq;
            }
            all.extend(page);
            if !more {
                return Ok(all);
            }
        }
    }
}

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One WebSocket connection, frame by frame. [`split`](Self::split) it to read and write
/// from different tasks.
pub struct Connection {
    sender: ConnSender,
    receiver: ConnReceiver,
}

/// The writing half of a [`Connection`].
pub struct ConnSender {
    sink: futures_util::stream::SplitSink<WsStream, tungstenite::Message>,
}

/// The reading half of a [`Connection`].
pub struct ConnReceiver {
    stream: futures_util::stream::SplitStream<WsStream>,
    /// Whether presence, typing and unread frames are returned (off by default: tools that
    /// check messages have no use for them).
    ambient: bool,
}

/// Frames about the people rather than the messages: presence, typing, unread counts.
pub fn is_ambient(frame: &ServerFrame) -> bool {
    matches!(
        frame,
        ServerFrame::Presence { .. } | ServerFrame::Typing { .. } | ServerFrame::Unread { .. }
    )
}

impl Connection {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        Self::open_with_headers(url, &[]).await
    }

    /// Opens with extra handshake headers (e.g. `Sec-WebSocket-Protocol`).
    pub async fn open_with_headers(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes())?,
                value.parse()?,
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        let (sink, stream) = ws.split();
        Ok(Self {
            sender: ConnSender { sink },
            receiver: ConnReceiver {
                stream,
                ambient: false,
            },
        })
    }

    /// Also returns presence, typing and unread frames from now on.
    pub fn with_ambient(mut self) -> Self {
        self.receiver.ambient = true;
        self
    }

    pub fn split(self) -> (ConnSender, ConnReceiver) {
        (self.sender, self.receiver)
    }

    pub async fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.sender.send_text(text).await
    }

    pub async fn send_json(&mut self, frame: &Value) -> anyhow::Result<()> {
        self.sender.send_json(frame).await
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.sender.send_binary(bytes).await
    }

    pub async fn send_message(
        &mut self,
        room: &RoomId,
        client_msg_id: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        self.sender.send_message(room, client_msg_id, text).await
    }

    pub async fn send_frame(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        self.sender.send_frame(frame).await
    }

    pub async fn send_frames(&mut self, frames: &[ClientFrame]) -> anyhow::Result<()> {
        self.sender.send_frames(frames).await
    }

    pub async fn resume(&mut self, rooms: &BTreeMap<RoomId, Seq>) -> anyhow::Result<()> {
        self.sender.resume(rooms).await
    }

    pub async fn next(&mut self, wait: Duration) -> anyhow::Result<Incoming> {
        self.receiver.next(wait).await
    }

    pub async fn event(&mut self, wait: Duration) -> anyhow::Result<ServerFrame> {
        self.receiver.event(wait).await
    }

    pub async fn closed(&mut self, wait: Duration) -> anyhow::Result<u16> {
        self.receiver.closed(wait).await
    }

    pub async fn close(mut self) {
        self.sender.close().await
    }
}

impl ConnSender {
    pub async fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.sink
            .send(tungstenite::Message::text(text.into()))
            .await?;
        Ok(())
    }

    pub async fn send_json(&mut self, frame: &Value) -> anyhow::Result<()> {
        self.send_text(frame.to_string()).await
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.sink.send(tungstenite::Message::binary(bytes)).await?;
        Ok(())
    }

    pub async fn send_message(
        &mut self,
        room: &RoomId,
        client_msg_id: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        let frame = ClientFrame::Send(SendFrame {
            room: room.to_string(),
            client_msg_id: client_msg_id.to_owned(),
            text: text.to_owned(),
            reply_to: None,
        });
        self.send_frame(&frame).await
    }

    /// Any client frame (edits, deletes, reactions, replies...).
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        self.send_text(frame.to_json()).await
    }

    /// Several frames written back to back and flushed once: pipelined, the way a busy
    /// client's frames reach the server.
    pub async fn send_frames(&mut self, frames: &[ClientFrame]) -> anyhow::Result<()> {
        for frame in frames {
            self.sink
                .feed(tungstenite::Message::text(frame.to_json()))
                .await?;
        }
        self.sink.flush().await?;
        Ok(())
    }

    pub async fn resume(&mut self, rooms: &BTreeMap<RoomId, Seq>) -> anyhow::Result<()> {
        let rooms = rooms.iter().map(|(r, s)| (r.to_string(), *s)).collect();
        let frame = ClientFrame::Resume(ResumeFrame { rooms });
        self.send_text(frame.to_json()).await
    }

    pub async fn close(&mut self) {
        let _ = self
            .sink
            .send(tungstenite::Message::Close(Some(
                tungstenite::protocol::CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                },
            )))
            .await;
        let _ = self.sink.close().await;
    }
}

impl ConnReceiver {
    /// The next frame, skipping pings (and ambient frames unless asked for: see
    /// [`Connection::with_ambient`]); `Err` if nothing arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> anyhow::Result<Incoming> {
        let vanished = || Incoming::Closed {
            code: 1006,
            reason: String::new(),
        };
        loop {
            let frame = tokio::time::timeout(wait, self.stream.next())
                .await
                .map_err(|_| anyhow!("no frame within {wait:?}"))?;
            let frame = match frame {
                None => return Ok(vanished()),
                Some(Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(_)
                    | tungstenite::Error::Io(_),
                )) => return Ok(vanished()),
                Some(frame) => frame?,
            };
            match frame {
                tungstenite::Message::Text(text) => {
                    let event: ServerFrame = serde_json::from_str(&text)
                        .with_context(|| format!("undecodable frame {text}"))?;
                    if !self.ambient && is_ambient(&event) {
                        continue;
                    }
                    return Ok(Incoming::Event(event));
                }
                tungstenite::Message::Close(close) => {
                    let (code, reason) = close.map_or((1005, String::new()), |c| {
                        (u16::from(c.code), c.reason.to_string())
                    });
                    return Ok(Incoming::Closed { code, reason });
                }
                _ => continue,
            }
        }
    }

    /// The next event; an error if the connection closed instead.
    pub async fn event(&mut self, wait: Duration) -> anyhow::Result<ServerFrame> {
        match self.next(wait).await? {
            Incoming::Event(event) => Ok(event),
            Incoming::Closed { code, reason } => bail!("closed {code} {reason}"),
        }
    }

    /// Reads until the connection closes; returns the close code.
    pub async fn closed(&mut self, wait: Duration) -> anyhow::Result<u16> {
        loop {
            if let Incoming::Closed { code, .. } = self.next(wait).await? {
                return Ok(code);
            }
        }
    }
}
