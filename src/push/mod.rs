//! Offline push notifications (docs/protocol.md, "Push notifications").
//!
//! Nothing here is on the path of a message's delivery: the send pipeline only stores the
//! message with a "to decide" mark (in the same write) and hands it to this node's bounded
//! queue, which may drop it (the mark makes another pass find it). From there:
//! - [`decide`]: one decision per member (online, no device, queued) goes to the ledger,
//!   and a job per queued member, collapsing a burst per (member, room);
//! - [`send`]: due jobs are claimed under a lease by one node, checked again (read? online?
//!   deleted?), sent by the gateway or Web Push, and finished or rescheduled with backoff.
//!
//! Every step is idempotent and the ledger is the authority on what was notified, so a node
//! that dies anywhere leaves work another node completes, and a job done twice sends once
//! (or, at worst, twice with the same idempotency key).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    clock::Clock,
    config::PushSettings,
    domain::{Message, RoomId, Seq, UserId},
    presence::PresenceService,
    store::Store,
};

mod decide;
pub mod devices;
pub mod gateway;
mod payload;
mod send;
pub mod webpush;

/// What became of a notification at one device.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Sent,
    /// The device is gone (404/410, or the gateway rejected its push key): remove it.
    Rejected(String),
    /// Try again later (timeouts, 429, 5xx, unreachable).
    Retry(String),
    /// The request was refused for good (other 4xx).
    Refused(String),
}

/// Work this node's push worker is handed.
enum Work {
    /// A message was stored here: decide its notifications.
    Decide(Message),
    /// A member's read position moved: clear their badges if they were notified.
    Read {
        user: UserId,
        room: RoomId,
        before: Seq,
        after: Seq,
    },
}

/// What the deployment offers (`GET /v1/push`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushOffer {
    pub web_push: Option<WebPushOffer>,
    pub gateway: bool,
    pub include_text: bool,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebPushOffer {
    /// The `applicationServerKey` for `pushManager.subscribe` (base64url).
    pub vapid_public_key: String,
}

pub struct Push {
    store: Arc<dyn Store>,
    presence: Arc<PresenceService>,
    clock: Arc<dyn Clock>,
    settings: PushSettings,
    node: String,
    gateway: Option<gateway::Gateway>,
    webpush: Option<webpush::WebPush>,
    work: mpsc::Sender<Work>,
    inbox: Mutex<Option<mpsc::Receiver<Work>>>,
}

impl Push {
    pub fn new(
        settings: &PushSettings,
        store: Arc<dyn Store>,
        presence: Arc<PresenceService>,
        clock: Arc<dyn Clock>,
        node: &str,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.request_timeout_ms))
            // A push service or gateway never sends us elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("chatd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let gateway = (!settings.gateway_url.is_empty()).then(|| {
            gateway::Gateway::new(
                &settings.gateway_url,
                &settings.gateway_secret,
                http.clone(),
            )
        });
        let webpush = match settings.vapid_private_key.as_str() {
            "" => None,
            key => Some(webpush::WebPush::new(
                webpush::VapidKey::parse(key).map_err(anyhow::Error::msg)?,
                &settings.vapid_subject,
                settings.webpush_ttl_secs,
                http,
            )),
        };
        let (work, inbox) = mpsc::channel(settings.queue);
        Ok(Self {
            store,
            presence,
            clock,
            settings: settings.clone(),
            node: node.to_owned(),
            gateway,
            webpush,
            work,
            inbox: Mutex::new(Some(inbox)),
        })
    }

    /// Whether anything is sent (else nothing is queued or marked).
    pub fn enabled(&self) -> bool {
        self.gateway.is_some() || self.webpush.is_some()
    }

    pub fn offer(&self) -> PushOffer {
        PushOffer {
            web_push: self.webpush.as_ref().map(|w| WebPushOffer {
                vapid_public_key: w.public_key().to_owned(),
            }),
            gateway: self.gateway.is_some(),
            include_text: self.settings.include_text,
        }
    }

    /// A message was stored (with the mark, see [`Store::append`]): decide soon. Never waits;
    /// when the queue is full the mark leaves it to a later sweep.
    pub fn message_stored(&self, message: &Message) {
        self.hand(Work::Decide(message.clone()));
    }

    /// The user's read position in `room` moved from `before` to `after`.
    pub fn read_moved(&self, user: &UserId, room: &RoomId, before: Seq, after: Seq) {
        if self.enabled() {
            self.hand(Work::Read {
                user: user.clone(),
                room: room.clone(),
                before,
                after,
            });
        }
    }

    fn hand(&self, work: Work) {
        if self.work.try_send(work).is_err() {
            metrics::counter!("chatd_push_queue_full_total").increment(1);
        }
    }

    /// The worker: decides what it is handed (one task), and every `push.poll_ms` sweeps for
    /// messages left undecided by dead nodes and claims due jobs (another task, so a full
    /// queue never holds up sending); at most `push.concurrency` decisions and sends at once;
    /// and forgets old ledger entries. Until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, tasks: TaskTracker) {
        let Some(mut inbox) = self.inbox.lock().expect("push inbox").take() else {
            return;
        };
        if !self.enabled() {
            return;
        }
        let deciding = Arc::new(Semaphore::new(self.settings.concurrency));
        let sending = Arc::new(Semaphore::new(self.settings.concurrency));
        let (push, stop, spawner, permits) = (
            self.clone(),
            shutdown.clone(),
            tasks.clone(),
            deciding.clone(),
        );
        tasks.spawn(async move {
            loop {
                let work = tokio::select! {
                    _ = stop.cancelled() => return,
                    work = inbox.recv() => match work { Some(work) => work, None => return },
                };
                // Waiting here is the queue's back-pressure: new work is dropped meanwhile.
                let permit = tokio::select! {
                    _ = stop.cancelled() => return,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                };
                let push = push.clone();
                spawner.spawn(async move {
                    push.handle(work).await;
                    drop(permit);
                });
            }
        });
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.poll_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut expire = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    self.sweep(&deciding, &tasks).await;
                    self.claim(&sending, &tasks).await;
                }
                _ = expire.tick() => self.expire_ledger().await,
            }
        }
    }

    async fn handle(&self, work: Work) {
        let done = match &work {
            Work::Decide(message) => self.decide(message).await,
            Work::Read {
                user,
                room,
                before,
                after,
            } => self.clear_badges(user, room, *before, *after).await,
        };
        if let Err(e) = done {
            // A message stays marked and is decided by a later sweep; a lost badge update
            // clears at the next notification.
            tracing::warn!(error = %e, "push decision failed");
        }
    }

    /// Messages whose node did not decide them within `push.sweep_after_ms`.
    async fn sweep(self: &Arc<Self>, deciding: &Arc<Semaphore>, tasks: &TaskTracker) {
        let free = deciding.available_permits();
        if free == 0 {
            return;
        }
        let now = self.clock.now();
        let stored_before = now - ms(self.settings.sweep_after_ms);
        let lease_until = now + ms(self.settings.lease_ms);
        let claimed = self
            .store
            .claim_undecided(stored_before, now, lease_until, free)
            .await;
        for message in claimed.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "push sweep failed");
            Vec::new()
        }) {
            let Ok(permit) = deciding.clone().try_acquire_owned() else {
                return;
            };
            metrics::counter!("chatd_push_swept_total").increment(1);
            let push = self.clone();
            tasks.spawn(async move {
                push.handle(Work::Decide(message)).await;
                drop(permit);
            });
        }
    }

    /// Due jobs, as many as there are free senders.
    async fn claim(self: &Arc<Self>, sending: &Arc<Semaphore>, tasks: &TaskTracker) {
        let free = sending.available_permits();
        if free == 0 {
            return;
        }
        let now = self.clock.now();
        let lease_until = now + ms(self.settings.lease_ms);
        let jobs = match self
            .store
            .claim_jobs(&self.node, now, lease_until, free)
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "push jobs not claimed");
                return;
            }
        };
        for job in jobs {
            // The lease runs out and another node takes it if this one cannot start it.
            let Ok(permit) = sending.clone().try_acquire_owned() else {
                return;
            };
            let push = self.clone();
            tasks.spawn(async move {
                if let Err(e) = push.execute(job.clone()).await {
                    tracing::warn!(error = %e, job = %job.id, "push attempt failed");
                    if let Err(e) = push.attempt_failed(job).await {
                        tracing::warn!(error = %e, "push job not rescheduled; its lease runs out");
                    }
                }
                drop(permit);
            });
        }
    }

    /// In chunks, each its own store call: the store's other work goes on in between.
    async fn expire_ledger(&self) {
        const CHUNK: usize = 2000;
        let before = self.clock.now() - ms(self.settings.ledger_ttl_ms);
        loop {
            match self.store.expire_ledger(before, CHUNK).await {
                Ok(n) if n as usize >= CHUNK => tokio::task::yield_now().await,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "push ledger not expired");
                    return;
                }
            }
        }
    }
}

fn ms(ms: u64) -> chrono::Duration {
    chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
}
