//! One client connection, from the accepted upgrade to the close: authenticate, go live in
//! the user's rooms, then read frames until the client leaves, misbehaves, falls silent, its
//! token expires, or the node shuts down.
//!
//! Frames of one connection are handled in order, so a client's sends are stored in the
//! order it sent them. Sends that arrive back to back are stored as one batch (see
//! [`MAX_PIPELINED_SENDS`]). What a frame may cost is in `admission`, the resume in `resume`.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, StreamExt, stream::SplitStream};
use tokio::{sync::mpsc, time::Instant};

use super::{Admitted, Refusal, writer};
use crate::{
    chat::{ChatError, ChatResult, Pending, PublicError, Write},
    domain::{RoomId, UserId},
    hub::{ConnHandle, Outbound},
    protocol::{
        ClientFrame, CloseReason, ErrorCode, ErrorFrame, PROTOCOL_VERSION, SendFrame, ServerFrame,
        encode, parse_client_frame,
    },
    state::Node,
    store::Mark,
    throttle::FrameThrottle,
};

/// How long the connection's own replies may wait for queue space.
pub(super) const REPLY_PATIENCE: Duration = Duration::from_secs(5);

/// The most sends stored as one batch. A client with many sends in flight (a bot, a burst
/// after a reconnect) gets one store write and one wake-up of each receiver's writer per
/// batch instead of one per message; a batch waits only for frames already read off the
/// socket, never for more to come.
pub(super) const MAX_PIPELINED_SENDS: usize = 64;

pub async fn serve(socket: WebSocket, node: Arc<Node>, admission: Result<Admitted, Refusal>) {
    // Shutdown waits for this connection until the token is dropped.
    let _tracked = node.tasks.token();
    let Admitted { verified, slot } = match admission {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let (code, reason) = refusal.close();
            if let Refusal::Full(user, _) = &refusal {
                tracing::info!(user = %user, reason = %refusal.message(), "websocket refused");
                metrics::counter!("chatd_refused_connections_total").increment(1);
            } else {
                tracing::info!(reason = %refusal.message(), "websocket refused");
            }
            return refuse(socket, code, &refusal.message(), reason).await;
        }
    };
    let (sink, stream) = socket.split();
    let (queue, queue_rx) = mpsc::channel(node.settings.limits.outbound_queue);
    let conn = Arc::new(
        ConnHandle::new(node.hub.new_conn_id(), verified.user.clone(), queue)
            .token_issued_at(verified.issued_at),
    );
    tracing::Span::current().record("conn", conn.id);
    // From here on, every way out of this task (a panic included) undoes what the
    // connection holds: hub registration, presence, its slot under the caps.
    let _cleanup = Cleanup {
        node: node.clone(),
        conn: conn.clone(),
        _slot: slot,
    };
    let heartbeat = Duration::from_millis(node.settings.websocket.heartbeat_interval_ms);
    let writer = node.tasks.spawn(writer::run(
        sink,
        queue_rx,
        conn.clone(),
        heartbeat,
        node.settings.limits.outbound_queue,
    ));
    tracing::debug!(conn = conn.id, user = %verified.user, "connected");

    let mut session = Session {
        frames: FrameThrottle::new(&node.settings.limits),
        node: node.clone(),
        conn: conn.clone(),
        user: verified.user.clone(),
        resumed: false,
        bad_frames: 0,
        throttled: 0,
        live: LiveState::new(),
        sends: Vec::new(),
    };
    session.run(stream, verified.valid_until).await;
    conn.close(CloseReason::Normal); // no-op if a reason was already given
    let _ = writer.await;
    let code = conn.close_reason().map_or(1006, |r| r.code()).to_string();
    metrics::counter!("chatd_disconnects_total", "code" => code).increment(1);
    tracing::debug!(conn = conn.id, reason = ?conn.close_reason(), "disconnected");
}

/// Undoes a connection's registrations when its task ends, however it ends.
struct Cleanup {
    node: Arc<Node>,
    conn: Arc<ConnHandle>,
    _slot: crate::hub::ConnectionSlot,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (node, conn) = (&self.node, &self.conn);
        conn.close(CloseReason::Internal); // no-op after a polite close; stops the writer
        node.hub.unregister(conn);
        let presence = node.presence.clone();
        let (user, id) = (conn.user.clone(), conn.id);
        // Left on purpose (the client's close, or this node's: stopping, token expired): gone
        // at once. Anything else may be a network blip: the user keeps their state for the
        // leave grace, so a quick reconnect shows nothing.
        let cleanly = conn.left_cleanly()
            || matches!(
                conn.close_reason(),
                Some(CloseReason::ServiceRestart | CloseReason::TokenExpired)
            );
        let last_here = node.hub.connection_count_of(&user) == 0;
        // Drop cannot await; the node's reconciliation clears the entry if this never runs.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let _guard = runtime.enter();
            node.tasks.spawn(async move {
                if let Err(e) = presence.disconnected(&user, id, cleanly, last_here).await {
                    tracing::warn!(error = %e, "presence not cleared; reconciliation will");
                }
            });
        }
    }
}

/// Refuses a connection with a reason a browser can read: an `error` frame, then the close.
async fn refuse(mut socket: WebSocket, code: ErrorCode, message: &str, reason: CloseReason) {
    let frame = encode(&ServerFrame::error(code, message));
    let close = WsMessage::Close(Some(CloseFrame {
        code: reason.code(),
        reason: Utf8Bytes::from_static(reason.text()),
    }));
    // Short: a refused socket holds no slot under the caps, so it must not linger.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        socket.send(WsMessage::Text(frame)).await?;
        socket.send(close).await
    })
    .await;
}

pub(super) struct Session {
    pub(super) node: Arc<Node>,
    pub(super) conn: Arc<ConnHandle>,
    pub(super) user: UserId,
    /// Whether live traffic has been released (by a resume or the resume deadline).
    pub(super) resumed: bool,
    pub(super) bad_frames: u32,
    pub(super) frames: FrameThrottle,
    /// Frames refused by a rate limit since the last accepted one.
    pub(super) throttled: u32,
    /// Presence, typing and activity of this connection.
    pub(super) live: LiveState,
    /// Sends read but not yet stored: the batch being gathered.
    sends: Vec<SendFrame>,
}

/// What the connection tracks for presence and typing.
pub(super) struct LiveState {
    /// The users whose presence this connection follows.
    contacts: Vec<UserId>,
    /// When the user's activity was last recorded in the registry.
    activity_recorded: Instant,
    /// Rooms where a typing start was passed on, and when.
    typing: HashMap<RoomId, Instant>,
    /// Whether the first snapshot went out (and the gate opened).
    snapshot_sent: bool,
}

impl LiveState {
    pub(super) fn new() -> Self {
        Self {
            contacts: Vec::new(),
            activity_recorded: Instant::now(),
            typing: HashMap::new(),
            snapshot_sent: false,
        }
    }
}

impl Session {
    async fn run(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        valid_until: chrono::DateTime<chrono::Utc>,
    ) {
        let node = self.node.clone();
        let settings = &node.settings;
        // Live first (subscribed, present), then welcome: a client that has its welcome can
        // rely on being reachable in all its rooms.
        if let Err(e) = Box::pin(self.go_live()).await {
            self.reply_chat_error(&e, None, None).await;
            self.conn.close(CloseReason::TryAgainLater);
            return;
        }
        if let Err(e) = self.node.presence.connected(&self.user, self.conn.id).await {
            tracing::warn!(error = %e, "presence not recorded");
        }
        let conn_id = format!("{}:{}", self.node.id, self.conn.id);
        self.reply(ServerFrame::Welcome {
            v: PROTOCOL_VERSION,
            conn_id,
            user: self.user.clone(),
            node: self.node.id.clone(),
            heartbeat_ms: settings.websocket.heartbeat_interval_ms,
            resume_wait_ms: settings.websocket.resume_wait_ms,
            max_text_chars: settings.limits.max_text_chars,
            typing_ttl_ms: settings.typing.ttl_ms,
        })
        .await;
        metrics::counter!("chatd_connects_total").increment(1);
        // Then the contacts' presence: one snapshot, changes after it.
        if let Err(e) = Box::pin(self.follow_contacts(true)).await {
            tracing::warn!(error = %e, user = %self.user, "contacts' presence unavailable");
            // Changes flow; the snapshot follows with the next reconciliation.
            self.conn.release_presence(None);
            self.conn.presence_lost();
        }

        let idle_timeout = Duration::from_millis(settings.websocket.idle_timeout_ms);
        let resume_deadline =
            Instant::now() + Duration::from_millis(settings.websocket.resume_wait_ms);
        // valid_until is at most year 9999 (the token check refuses later ones); tokio's
        // sleep saturates far-future deadlines.
        let token_left = (valid_until - self.node.clock.now())
            .to_std()
            .unwrap_or_default();
        let token_expiry = tokio::time::sleep(token_left);
        tokio::pin!(token_expiry);
        let shutdown = self.node.shutdown.clone();

        loop {
            tokio::select! {
                biased;
                // Checked between frames only: the frames being handled are finished, nothing
                // new is read, the writer flushes the replies queued so far and closes with
                // 1012. However fast the client sends, the close follows within one batch.
                _ = shutdown.cancelled() => {
                    self.conn.close(CloseReason::ServiceRestart);
                    break;
                }
                _ = self.conn.closed() => break,
                _ = &mut token_expiry => {
                    self.reply_error(ErrorCode::TokenExpired, "token expired").await;
                    self.conn.close(CloseReason::TokenExpired);
                    break;
                }
                _ = tokio::time::sleep_until(resume_deadline), if !self.resumed => {
                    self.resumed = true;
                    self.conn.send(Outbound::ReleaseLive, REPLY_PATIENCE).await;
                }
                _ = self.conn.memberships_change() => Box::pin(self.reconcile_rooms()).await,
                frame = tokio::time::timeout(idle_timeout, stream.next()) => match frame {
                    Err(_) => {
                        self.conn.close(CloseReason::HeartbeatTimeout);
                        break;
                    }
                    Ok(Some(Ok(message))) => {
                        if !Box::pin(self.on_ws_messages(message, &mut stream)).await {
                            break;
                        }
                    }
                    Ok(end) => {
                        self.stream_ended(end);
                        break;
                    }
                },
            }
        }
    }

    /// Subscribes the connection to the user's rooms; from here on their messages queue up.
    /// The user's own topic comes first, so a membership change made while the rooms are
    /// being read is signalled, and reconciled right after.
    async fn go_live(&self) -> Result<(), ChatError> {
        let hub = &self.node.hub;
        hub.register(&self.conn).await.map_err(join_error)?;
        // Listening to the user's topic now: a revocation from here on reaches this node.
        // One made before (the handshake may have used a cached answer) is read here.
        match hub
            .revocations
            .check_fresh(&self.user, self.conn.issued_at)
            .await
        {
            Ok(()) => {}
            Err(crate::auth::AuthError::Revoked) => {
                self.conn.mark_left_cleanly();
                self.conn.close(CloseReason::Revoked);
            }
            Err(e) => {
                return Err(ChatError::Store(crate::store::StoreError::Unavailable(
                    e.to_string(),
                )));
            }
        }
        let rooms = self.node.chat.room_ids(&self.user).await?;
        hub.join_all(&self.conn, &rooms).await.map_err(join_error)
    }

    /// Brings the connection's rooms in line with the user's memberships in the store, and
    /// tells the client what changed. Runs when a membership event arrives for this user or
    /// when events may have been lost (the bus reconnected); reading the store (rather than
    /// applying events) makes the outcome right whatever the order the events came in.
    async fn reconcile_rooms(&mut self) {
        let wanted: HashSet<RoomId> = match self.node.chat.room_ids(&self.user).await {
            Ok(rooms) => rooms.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, user = %self.user, "cannot re-read memberships");
                return self.conn.close(CloseReason::TryAgainLater);
            }
        };
        let current: HashSet<RoomId> = self.conn.rooms().into_iter().collect();
        for room in current.difference(&wanted) {
            self.node.hub.leave(&self.conn, room);
            self.reply(ServerFrame::RoomRemoved { room: room.clone() })
                .await;
        }
        for room in wanted.difference(&current) {
            if let Err(e) = self.node.hub.join(&self.conn, room).await {
                tracing::warn!(error = %e, user = %self.user, "cannot join a new room");
                return self.conn.close(CloseReason::TryAgainLater);
            }
            if let Ok(room) = self.node.chat.room(&self.user, room.as_str()).await {
                self.reply(ServerFrame::RoomAdded { room }).await;
            }
        }
        let fresh = self.conn.take_presence_lost();
        if let Err(e) = Box::pin(self.follow_contacts(fresh)).await {
            tracing::warn!(error = %e, user = %self.user, "contacts' presence not updated");
        }
    }

    /// Follows the presence of the user's contacts as they are now. With `snapshot` (the
    /// first time, or when changes may have been lost) sends all of them (the first time
    /// also opening the gate for changes); otherwise (rooms or members changed) the newly
    /// gained ones. Stops following the lost ones.
    async fn follow_contacts(&mut self, snapshot: bool) -> Result<(), ChatError> {
        let rooms = self.conn.rooms();
        let contacts = self.node.chat.contacts(&self.user, &rooms).await?;
        let lost: Vec<UserId> = self
            .live
            .contacts
            .iter()
            .filter(|c| contacts.binary_search(c).is_err())
            .cloned()
            .collect();
        let gained: Vec<UserId> = if snapshot {
            contacts.clone()
        } else {
            contacts
                .iter()
                .filter(|c| self.live.contacts.binary_search(c).is_err())
                .cloned()
                .collect()
        };
        self.node.hub.unwatch(&self.conn, &lost);
        self.node
            .hub
            .watch(&self.conn, &gained)
            .await
            .map_err(join_error)?;
        self.live.contacts = contacts;
        let states = self
            .node
            .presence
            .snapshot(&gained)
            .await
            .map_err(|e| ChatError::Bus(e.to_string()))?;
        if snapshot && !self.live.snapshot_sent {
            self.live.snapshot_sent = true;
            self.conn.release_presence(Some(states));
        } else if snapshot {
            self.reply(ServerFrame::Presence {
                snapshot: true,
                users: states,
            })
            .await;
        } else if !states.is_empty() {
            self.reply(ServerFrame::Presence {
                snapshot: false,
                users: states,
            })
            .await;
        }
        Ok(())
    }

    /// Records that the user is active here (in the registry at most every few seconds:
    /// the away timer is minutes long).
    async fn note_activity(&mut self) {
        let every = Duration::from_millis(self.node.settings.presence.away_after_ms / 10)
            .min(Duration::from_secs(30));
        if self.live.activity_recorded.elapsed() < every {
            return;
        }
        self.live.activity_recorded = Instant::now();
        if let Err(e) = self.node.presence.active(&self.user, self.conn.id).await {
            tracing::debug!(error = %e, "activity not recorded");
        }
    }

    /// A typing start or stop: passed on if the user is in the room, starts at most every
    /// `typing.throttle_ms`, stops only after a start that may still show.
    async fn on_typing(&mut self, room: &str, typing: bool) {
        let Some(room_id) = RoomId::parse(room).ok().filter(|r| self.conn.in_room(r)) else {
            let error = ErrorFrame {
                room: Some(room.to_owned()),
                ..ErrorFrame::new(ErrorCode::RoomNotFound, "room not found")
            };
            self.reply(ServerFrame::Error(error)).await;
            return;
        };
        let room = room_id;
        let settings = &self.node.settings.typing;
        let (throttle, ttl) = (
            Duration::from_millis(settings.throttle_ms),
            Duration::from_millis(settings.ttl_ms),
        );
        let last = self.live.typing.get(&room).copied();
        let pass = if typing {
            last.is_none_or(|at| at.elapsed() >= throttle)
        } else {
            last.is_some_and(|at| at.elapsed() < ttl)
        };
        if typing {
            if pass {
                self.live.typing.retain(|_, at| at.elapsed() < ttl);
                self.live.typing.insert(room.clone(), Instant::now());
            }
        } else {
            self.live.typing.remove(&room);
        }
        if pass {
            self.node.chat.typing(&self.user, &room, typing).await;
        }
    }

    /// Handles `message` and, while sends are gathering, the frames already read behind it;
    /// then stores the gathered sends. Returns false when the connection should end.
    ///
    /// Boxed by the caller: the handling future exists only while frames are handled, so an
    /// idle connection's task stays small (see docs/benchmarks.md).
    async fn on_ws_messages(
        &mut self,
        message: WsMessage,
        stream: &mut SplitStream<WebSocket>,
    ) -> bool {
        let mut go_on = self.on_ws_message(message).await;
        let mut ended = None;
        // Polled without waiting: only what has already arrived joins the batch. The loop
        // ends at the latest when a full batch is stored (the sends are empty again).
        while go_on && !self.sends.is_empty() {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => go_on = self.on_ws_message(message).await,
                Some(end) => {
                    ended = Some(end);
                    break;
                }
                None => break,
            }
        }
        self.store_sends().await;
        if let Some(end) = ended {
            self.stream_ended(end);
            return false;
        }
        go_on
    }

    /// The client's side ended: a clean end of the stream, or a read that failed.
    fn stream_ended(&self, end: Option<Result<WsMessage, axum::Error>>) {
        if let Some(Err(e)) = end
            && let Some(reason) = close_reason_for(e)
        {
            self.conn.close(reason);
        }
    }

    /// Returns false when the connection should end. A send joins the batch; everything
    /// else first lets the batch be stored, so replies keep the order of the frames.
    async fn on_ws_message(&mut self, message: WsMessage) -> bool {
        match message {
            WsMessage::Text(text) => match parse_client_frame(&text) {
                Ok(frame) => {
                    metrics::counter!("chatd_frames_in_total", "type" => frame.kind()).increment(1);
                    self.bad_frames = 0;
                    if let Err(refused) = self.admit(&frame) {
                        self.store_sends().await;
                        return self.throttle(&frame, refused).await;
                    }
                    self.throttled = 0;
                    match frame {
                        ClientFrame::Send(send) => self.gather_send(send).await,
                        frame => {
                            self.store_sends().await;
                            self.on_frame(frame).await;
                        }
                    }
                }
                Err(e) => {
                    self.store_sends().await;
                    return self.strike(e.code, &e.message).await;
                }
            },
            WsMessage::Binary(_) => {
                self.store_sends().await;
                return self
                    .strike(
                        ErrorCode::BinaryUnsupported,
                        "binary frames are not supported; send JSON text",
                    )
                    .await;
            }
            // Control frames count against the same bucket as every other frame; over it they
            // get no reply (answering a flood would amplify it), only a strike.
            WsMessage::Ping(_) | WsMessage::Pong(_) => {
                if self.frames.check().is_err() {
                    return self.count_refusal("frames");
                }
            }
            WsMessage::Close(_) => {
                self.conn.mark_left_cleanly();
                return false;
            }
        }
        true
    }

    /// A send joins the batch; a full batch is stored at once.
    async fn gather_send(&mut self, send: SendFrame) {
        self.note_activity().await;
        // A sent message ends the typing that led to it.
        if RoomId::parse(&send.room).is_ok_and(|r| self.live.typing.contains_key(&r)) {
            self.on_typing(&send.room, false).await;
        }
        self.sends.push(send);
        if self.sends.len() >= MAX_PIPELINED_SENDS {
            self.store_sends().await;
        }
    }

    /// Stores the gathered sends as one batch, in their order, and answers each.
    async fn store_sends(&mut self) {
        if self.sends.is_empty() {
            return;
        }
        // Taken, not drained: an idle connection keeps no batch capacity.
        let sends = std::mem::take(&mut self.sends);
        let writes: Vec<Pending<'_>> = sends
            .iter()
            .map(|send| Pending {
                room: &send.room,
                client_msg_id: &send.client_msg_id,
                write: Write::Message {
                    text: &send.text,
                    reply_to: send.reply_to,
                },
            })
            .collect();
        let answers = self.node.chat.write_all(&self.user, &writes).await;
        for (send, answer) in sends.iter().zip(answers) {
            self.answer_write(&send.room, &send.client_msg_id, answer)
                .await;
        }
    }

    async fn on_frame(&mut self, frame: ClientFrame) {
        match frame {
            // Gathered before (`gather_send`); here only if handed on directly.
            ClientFrame::Send(send) => {
                self.gather_send(send).await;
                self.store_sends().await;
            }
            ClientFrame::Edit(edit) => {
                self.note_activity().await;
                let change = Write::Edit {
                    seq: edit.seq,
                    text: &edit.text,
                };
                self.write(&edit.room, &edit.client_msg_id, change).await;
            }
            ClientFrame::Delete(delete) => {
                self.note_activity().await;
                let change = Write::Delete { seq: delete.seq };
                self.write(&delete.room, &delete.client_msg_id, change)
                    .await;
            }
            ClientFrame::React(react) => {
                self.note_activity().await;
                let change = Write::React {
                    seq: react.seq,
                    emoji: &react.emoji,
                    remove: react.remove,
                };
                self.write(&react.room, &react.client_msg_id, change).await;
            }
            ClientFrame::Resume(resume) => self.resume(resume).await,
            ClientFrame::Read(read) => {
                self.note_activity().await;
                let mark = if read.private {
                    Mark::PrivateRead
                } else {
                    Mark::Read
                };
                self.mark(&read.room, mark, read.seq).await;
            }
            ClientFrame::Delivered(delivered) => {
                self.mark(&delivered.room, Mark::Delivered, delivered.seq)
                    .await;
            }
            ClientFrame::Typing(typing) => {
                self.note_activity().await;
                self.on_typing(&typing.room, typing.typing).await;
            }
            ClientFrame::Active => self.note_activity().await,
            ClientFrame::Ping(ping) => self.reply(ServerFrame::Pong { id: ping.id }).await,
        }
    }

    /// A message or a change: `ack` once stored and announced, else an `error` naming it.
    async fn write(&self, room: &str, client_msg_id: &str, write: Write<'_>) {
        let written = self
            .node
            .chat
            .write(&self.user, room, client_msg_id, write)
            .await;
        self.answer_write(room, client_msg_id, written).await;
    }

    async fn answer_write(
        &self,
        room: &str,
        client_msg_id: &str,
        written: ChatResult<crate::store::Appended>,
    ) {
        match written {
            Ok(appended) => {
                let m = appended.message;
                self.reply(ServerFrame::Ack {
                    client_msg_id: m.client_msg_id,
                    room: m.room,
                    id: m.id,
                    seq: m.seq,
                    created_at: m.created_at,
                    duplicate: appended.duplicate,
                })
                .await;
            }
            Err(e) => {
                self.reply_chat_error(&e, Some(client_msg_id), Some(room))
                    .await;
            }
        }
    }

    async fn mark(&self, room: &str, mark: Mark, seq: crate::domain::Seq) {
        if let Err(e) = self.node.chat.mark(&self.user, room, mark, seq).await {
            self.reply_chat_error(&e, None, Some(room)).await;
        }
    }

    pub(super) async fn reply(&self, frame: ServerFrame) {
        self.conn
            .send(Outbound::Frame(encode(&frame)), REPLY_PATIENCE)
            .await;
    }

    pub(super) async fn reply_error(&self, code: ErrorCode, message: &str) {
        self.reply(ServerFrame::error(code, message)).await;
    }

    /// A service error as the client may see it (internal detail logged, not sent).
    pub(super) async fn reply_chat_error(
        &self,
        e: &ChatError,
        client_msg_id: Option<&str>,
        room: Option<&str>,
    ) {
        let PublicError {
            code,
            message,
            request_id,
        } = e.public();
        self.reply(ServerFrame::Error(ErrorFrame {
            client_msg_id: client_msg_id.map(str::to_owned),
            room: room.map(str::to_owned),
            request_id,
            ..ErrorFrame::new(code, message)
        }))
        .await;
    }
}

fn join_error(e: crate::hub::JoinError) -> ChatError {
    match e {
        crate::hub::JoinError::Store(e) => ChatError::Store(e),
        crate::hub::JoinError::Bus(e) => ChatError::Bus(e.to_string()),
    }
}

/// The close code for a failed read, by RFC 6455: 1009 for a frame or message over the
/// configured maximum, 1007 for text that is not UTF-8, 1002 for any other protocol error
/// (unmasked frame, reserved opcode or bits, oversized or fragmented control frame). `None`
/// when the socket itself is gone: there is nobody to tell.
fn close_reason_for(error: axum::Error) -> Option<CloseReason> {
    use tokio_tungstenite::tungstenite::Error;
    let inner = error.into_inner();
    match inner.downcast_ref::<Error>()? {
        Error::Capacity(_) => Some(CloseReason::TooBig),
        Error::Utf8(_) => Some(CloseReason::InvalidData),
        Error::Protocol(_) => Some(CloseReason::ProtocolError),
        _ => None,
    }
}
