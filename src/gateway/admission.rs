//! Who may connect and what a connection may cost: the caps checked before the upgrade
//! ([`Admitted`], [`Refusal`]), the rate limits every frame passes (frames per connection;
//! sends, reads and resumed rooms per user), and the policy for clients that ignore them or
//! keep sending bad frames.

use std::time::Duration;

use super::connection::Session;
use crate::{
    auth::{AuthError, Verified},
    domain::UserId,
    hub::ConnectionSlot,
    protocol::{ClientFrame, CloseReason, ErrorCode, ErrorFrame, ServerFrame},
};

/// Consecutive bad frames tolerated before the connection is closed (1008).
const MAX_CONSECUTIVE_BAD_FRAMES: u32 = 20;

/// A connection allowed in: its user and its slot under the caps.
pub struct Admitted {
    pub verified: Verified,
    pub slot: ConnectionSlot,
}

/// Why a connection is refused (told to the client after the upgrade, so browsers can read it).
pub enum Refusal {
    Auth(AuthError),
    Full(UserId, &'static str),
}

impl Refusal {
    pub fn close(&self) -> (ErrorCode, CloseReason) {
        match self {
            Refusal::Auth(AuthError::Expired) => {
                (ErrorCode::TokenExpired, CloseReason::TokenExpired)
            }
            Refusal::Auth(AuthError::Unavailable(_)) => {
                (ErrorCode::StoreUnavailable, CloseReason::TryAgainLater)
            }
            Refusal::Auth(_) => (ErrorCode::Unauthorized, CloseReason::Unauthorized),
            Refusal::Full(..) => (
                ErrorCode::TooManyConnections,
                CloseReason::TooManyConnections,
            ),
        }
    }

    pub fn message(&self) -> String {
        match self {
            // The cause stays in the log: nothing internal reaches a client.
            Refusal::Auth(AuthError::Unavailable(_)) => {
                ErrorCode::StoreUnavailable.public_message().to_owned()
            }
            Refusal::Auth(e) => e.to_string(),
            Refusal::Full(_, why) => (*why).to_owned(),
        }
    }
}

impl Session {
    /// Applies the rate limits: every frame counts against the connection's bucket, every
    /// send (and change: edit, delete, react) also against the user's.
    /// Refused: how long to wait, and which limit (the metric's `kind`).
    pub(super) fn admit(&self, frame: &ClientFrame) -> Result<(), (Duration, &'static str)> {
        self.frames.check().map_err(|w| (w, "frames"))?;
        let limits = &self.node.limits;
        match frame {
            ClientFrame::Send(_)
            | ClientFrame::Edit(_)
            | ClientFrame::Delete(_)
            | ClientFrame::React(_) => limits.sends.check(&self.user).map_err(|w| (w, "sends")),
            // Both write a position to the store.
            ClientFrame::Read(_) | ClientFrame::Delivered(_) => {
                limits.reads.check(&self.user).map_err(|w| (w, "reads"))
            }
            // A resume costs one per room it names: its work grows with them.
            ClientFrame::Resume(resume) => {
                // At least one: an empty resume still does work.
                let rooms = u32::try_from(resume.rooms.len()).unwrap_or(u32::MAX).max(1);
                limits
                    .resumed_rooms
                    .check_n(&self.user, rooms)
                    .map_err(|w| (w, "resumes"))
            }
            // Cheap: typing is throttled before it reaches the bus, activity is recorded at
            // most every few seconds (see `Session::note_activity`).
            ClientFrame::Ping(_) | ClientFrame::Typing(_) | ClientFrame::Active => Ok(()),
        }
    }

    /// Counts a refused frame; a client that keeps going is closed (4101). False: closed.
    pub(super) fn count_refusal(&mut self, kind: &'static str) -> bool {
        self.throttled += 1;
        if self.throttled == 1 {
            tracing::info!(user = %self.user, conn = self.conn.id, "rate limited");
        }
        metrics::counter!("chatd_rate_limited_total", "kind" => kind).increment(1);
        if self.throttled >= self.node.settings.limits.rate_limit_strikes {
            tracing::info!(user = %self.user, conn = self.conn.id, "closing: ignored the rate limit");
            self.conn.close(CloseReason::RateLimited);
            return false;
        }
        true
    }

    /// Answers a throttled frame with when to retry; a client that keeps going is closed.
    pub(super) async fn throttle(
        &mut self,
        frame: &ClientFrame,
        (wait, kind): (Duration, &'static str),
    ) -> bool {
        if !self.count_refusal(kind) {
            return false;
        }
        let (room, client_msg_id) = frame
            .entry_ids()
            .map(|(room, id)| (room.to_owned(), id.to_owned()))
            .unzip();
        let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        self.reply(ServerFrame::Error(ErrorFrame {
            client_msg_id,
            room,
            retry_after_ms: Some(retry_after_ms),
            ..ErrorFrame::new(ErrorCode::RateLimited, "too many frames; retry later")
        }))
        .await;
        true
    }

    /// Answers a bad frame; too many in a row close the connection.
    pub(super) async fn strike(&mut self, code: ErrorCode, message: &str) -> bool {
        self.bad_frames += 1;
        if self.bad_frames == 1 {
            tracing::info!(user = %self.user, conn = self.conn.id, ?code, message, "bad frame");
        } else {
            tracing::debug!(user = %self.user, conn = self.conn.id, ?code, message, "bad frame");
        }
        self.reply_error(code, message).await;
        if self.bad_frames >= MAX_CONSECUTIVE_BAD_FRAMES {
            tracing::info!(user = %self.user, conn = self.conn.id, "closing: too many bad frames");
            self.conn.close(CloseReason::PolicyViolation);
            return false;
        }
        true
    }
}
