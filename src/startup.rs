//! Builds a node from its settings and runs it: store, bus, hub, chat service, router,
//! listener; and the orderly stop (drain) on shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use crate::state::Node;
use crate::{
    api,
    auth::TokenAuthority,
    bus::{self, Bus, Delivery},
    cache::RecentCache,
    chat::{Chat, ChatParts, ReceiptBatcher},
    clock::{Clock, SystemClock},
    config::{BusKind, Settings, StoreKind},
    domain::UserId,
    hub::{Hub, HubSettings},
    nodes::{LocalNodeDirectory, NodeDirectory},
    presence::{LocalPresence, PresenceRegistry, PresenceService},
    redis::{RedisBus, RedisNodeDirectory, RedisPresence, RedisRecentCache},
    store::{self, DeadlineStore, Store},
    telemetry,
    throttle::UserLimits,
};

pub struct Application {
    listener: TcpListener,
    node: Arc<Node>,
}

/// The implementations a node runs on, chosen by configuration.
pub struct Backends {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub deliveries: mpsc::Receiver<Delivery>,
    pub recent: Option<Arc<dyn RecentCache>>,
    pub presence: Arc<dyn PresenceRegistry>,
    pub directory: Arc<dyn NodeDirectory>,
}

/// Connects the configured store, bus, cache and presence registry. Background tasks (the
/// Redis subscriber) run on `tasks` and stop with `shutdown`. Every store call answers within
/// `store.timeout_ms`, every Redis call within `bus.timeout_ms`.
pub async fn connect_backends(
    settings: &Settings,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Backends> {
    let store: Arc<dyn Store> = match settings.store.kind {
        StoreKind::Sqlite => {
            let path = &settings.store.sqlite_path;
            let store = store::SqliteStore::open(path, settings.store.sqlite_synchronous)
                .with_context(|| format!("opening SQLite store {}", path.display()))?;
            Arc::new(store)
        }
        StoreKind::Mongodb => Arc::new(
            store::MongoStore::connect_counting(
                &settings.store.mongodb_uri,
                &settings.store.mongodb_database,
                settings.store.mongodb_count_commands,
            )
            .await
            .context("connecting to MongoDB (store.mongodb_uri)")?,
        ),
    };
    let store: Arc<dyn Store> = Arc::new(DeadlineStore::new(
        store,
        Duration::from_millis(settings.store.timeout_ms),
    ));
    Ok(match settings.bus.kind {
        BusKind::Local => {
            let (bus, deliveries) = bus::LocalBus::new(Arc::default());
            Backends {
                store,
                bus: Arc::new(bus),
                deliveries,
                // The embedded store is local and fast; a cache would only add a copy.
                recent: None,
                presence: Arc::new(LocalPresence::default()),
                directory: Arc::new(LocalNodeDirectory::default()),
            }
        }
        BusKind::Redis => {
            let bus_settings = &settings.bus;
            let timeout = Duration::from_millis(bus_settings.timeout_ms);
            let client =
                redis::Client::open(bus_settings.redis_url.as_str()).context("bus.redis_url")?;
            let (bus, deliveries) = RedisBus::connect(
                &client,
                &bus_settings.redis_prefix,
                timeout,
                tasks,
                shutdown,
            )
            .await
            .context("connecting to Redis (bus.redis_url)")?;
            let conn = crate::redis::connect_manager(&client, timeout).await?;
            Backends {
                store,
                bus: Arc::new(bus),
                deliveries,
                recent: Some(Arc::new(RedisRecentCache::new(
                    conn.clone(),
                    &bus_settings.redis_prefix,
                    bus_settings.recent_cache_size,
                    timeout,
                ))),
                presence: Arc::new(RedisPresence::new(
                    conn.clone(),
                    &bus_settings.redis_prefix,
                    timeout,
                )),
                directory: Arc::new(RedisNodeDirectory::new(
                    conn,
                    &bus_settings.redis_prefix,
                    timeout,
                )),
            }
        }
    })
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let clock = Arc::new(SystemClock::with_offset_ms(settings.server.clock_offset_ms));
        Self::build_with_clock(settings, clock).await
    }

    /// As [`build`](Self::build), with the clock injected (tests step it backwards).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        telemetry::init_metrics();
        raise_open_file_limit(&settings);
        let auth = TokenAuthority::from_settings(&settings.auth, clock.clone()).await?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let Backends {
            store,
            bus,
            deliveries,
            recent,
            presence,
            directory,
        } = connect_backends(&settings, &tasks, &shutdown).await?;
        let id = settings.node_id();
        let hub_settings = HubSettings {
            node: id.clone(),
            typing_ttl: Duration::from_millis(settings.typing.ttl_ms),
            typing_coalesce: Duration::from_millis(settings.typing.coalesce_ms),
            roster_max_members: settings.presence.roster_max_members,
        };
        let hub = Hub::start(
            bus.clone(),
            deliveries,
            store.clone(),
            hub_settings,
            shutdown.clone(),
            &tasks,
        );
        let presence = Arc::new(PresenceService::new(
            presence,
            bus.clone(),
            store.clone(),
            clock.clone(),
            &id,
            &settings.presence,
        ));
        // A previous process of this name may have died with connections on record.
        if let Err(e) = presence.release_self().await {
            tracing::warn!(error = %e, "stale presence of this node not released");
        }
        // The lease exists before the first connection does, so a crash at any time after
        // this is noticed by the other nodes.
        if let Err(e) = presence.renew_lease().await {
            tracing::warn!(error = %e, "presence lease not taken yet");
        }
        let receipts = Arc::new(ReceiptBatcher::new(
            store.clone(),
            bus.clone(),
            Duration::from_millis(settings.receipts.coalesce_ms),
            settings.receipts.live_max_members,
        ));
        tasks.spawn(receipts.clone().run(shutdown.clone()));
        let push = Arc::new(crate::push::Push::new(
            &settings.push,
            store.clone(),
            presence.clone(),
            clock.clone(),
            &id,
        )?);
        tasks.spawn(push.clone().run(shutdown.clone(), tasks.clone()));
        let chat = Chat::new(
            store.clone(),
            bus.clone(),
            ChatParts {
                recent,
                presence: presence.clone(),
                receipts,
                push: push.clone(),
                clock: clock.clone(),
                limits: settings.limits.clone(),
                presence_settings: settings.presence.clone(),
                node: id.clone(),
                memberships: hub.memberships.clone(),
            },
        );
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let node = Arc::new(Node {
            address: match settings.server.advertise_address.as_str() {
                "" => listener.local_addr()?.to_string(),
                advertised => advertised.to_owned(),
            },
            started_at: clock.now(),
            directory,
            id,
            limits: UserLimits::new(&settings.limits),
            origins: crate::origins::Origins::new(&settings.server.allowed_origins),
            auth,
            clock,
            settings,
            chat,
            hub,
            store,
            bus,
            presence,
            push,
            shutdown,
            tasks,
        });
        for task in [
            PresenceTask::Lease,
            PresenceTask::Sweep,
            PresenceTask::Reconcile,
        ] {
            node.tasks.spawn(run_presence(node.clone(), task));
        }
        node.tasks.spawn(forget_idle_senders(node.clone()));
        node.tasks.spawn(withdraw_when_stopping(node.clone()));
        Ok(Self { listener, node })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Cancel it to stop the node (what SIGTERM does in `chatd serve`).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.node.shutdown.clone()
    }

    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains: stops accepting, closes
    /// every WebSocket with 1012 (reconnect elsewhere) after its in-flight frame, and waits up
    /// to `server.shutdown_grace_ms` for connections to finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let node = self.node;
        let settings = &node.settings;
        log_security_posture(settings);
        tracing::info!(
            node = %node.id,
            addr = %self.listener.local_addr()?,
            store = ?settings.store.kind,
            bus = ?settings.bus.kind,
            "chatd listening"
        );
        let grace = Duration::from_millis(settings.server.shutdown_grace_ms);
        let limits = crate::server::HttpLimits {
            handshake_timeout: Duration::from_millis(settings.server.handshake_timeout_ms),
            request_timeout: Duration::from_millis(settings.server.request_timeout_ms),
            max_lifetime: Duration::from_millis(settings.server.max_http_lifetime_ms),
            max_connections: settings.server.max_http_connections,
            grace,
        };
        crate::server::serve(
            self.listener,
            api::router(node.clone()),
            node.shutdown.clone(),
            limits,
        )
        .await;
        node.tasks.close();
        if tokio::time::timeout(grace, node.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = node.hub.connection_count(),
                "grace period over; dropping remaining connections"
            );
        }
        // Connections announced their own leaving; this catches any that could not.
        match tokio::time::timeout(Duration::from_secs(2), node.presence.release_self()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "presence not released; its lease runs out"),
            Err(_) => tracing::warn!("presence release timed out; its lease runs out"),
        }
        tracing::info!(node = %node.id, "stopped");
        Ok(())
    }
}

/// The presence upkeep, each in its own task so that none delays another (a slow release of
/// a dead node's many users must never delay this node's own lease).
#[derive(Debug, Clone, Copy)]
enum PresenceTask {
    /// Renews this node's lease, every `presence.refresh_ms`.
    Lease,
    /// Claims and releases dead nodes, re-evaluates due users, every 250 ms.
    Sweep,
    /// Makes the registry agree with the live connections, every `presence.refresh_ms`.
    Reconcile,
}

async fn run_presence(node: Arc<Node>, task: PresenceTask) {
    const SWEEP_EVERY: Duration = Duration::from_millis(250);
    let every = match task {
        PresenceTask::Sweep => SWEEP_EVERY.min(node.presence.refresh_every()),
        PresenceTask::Lease | PresenceTask::Reconcile => node.presence.refresh_every(),
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let presence = &node.presence;
        let done = match task {
            // The directory's announcement lives as long as the lease.
            PresenceTask::Lease => match presence.renew_lease().await {
                Ok(()) => announce(&node).await,
                Err(e) => Err(e),
            },
            PresenceTask::Sweep => match presence.release_expired().await {
                Ok(()) => presence.sweep_due().await,
                Err(e) => Err(e),
            },
            PresenceTask::Reconcile => {
                let hub = &node.hub;
                let live = |user: &UserId| hub.connections_of(user).iter().map(|c| c.id).collect();
                presence.reconcile(&hub.local_users(), live).await
            }
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, ?task, "presence upkeep failed");
        }
    }
}

/// Takes this node out of the directory as soon as it starts to stop (a drain lasts up to
/// the grace period; operators must not see it as serving meanwhile).
async fn withdraw_when_stopping(node: Arc<Node>) {
    node.shutdown.cancelled().await;
    if let Err(e) = node.directory.withdraw(&node.id).await {
        tracing::warn!(error = %e, "not withdrawn from the node directory; it expires");
    }
}

/// Puts this node in the directory until its presence lease would run out.
async fn announce(node: &Node) -> crate::presence::PresenceResult<()> {
    let ttl = Duration::from_millis(node.settings.presence.ttl_ms);
    if let Err(e) = node.directory.announce(&node.info(), ttl).await {
        tracing::warn!(error = %e, "node not announced in the directory");
    }
    Ok(())
}

/// Drops the rate-limit state of users who have been quiet (their buckets are full again).
async fn forget_idle_senders(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => node.limits.forget_idle(),
        }
    }
}

/// One line that says how this node trusts its callers, and warnings for what is unsafe.
fn log_security_posture(settings: &Settings) {
    let auth = &settings.auth;
    let secret = match auth.jwt_secret.as_str() {
        "" => "none (no HS256)",
        crate::auth::DEV_SECRET => "DEVELOPMENT SECRET (public)",
        _ => "configured",
    };
    let keys = match (auth.public_key_file.is_empty(), auth.jwks_url.is_empty()) {
        (true, true) => "none".to_owned(),
        (false, true) => format!("PEM {}", auth.public_key_file),
        (true, false) => format!("JWKS {}", auth.jwks_url),
        (false, false) => format!("PEM {} + JWKS {}", auth.public_key_file, auth.jwks_url),
    };
    tracing::info!(
        environment = %settings.environment,
        bind = %settings.server.host,
        hs256_secret = secret,
        public_keys = %keys,
        audience = %auth.audience,
        issuer = %auth.issuer,
        dev_login = auth.dev_login,
        allowed_origins = %crate::origins::Origins::new(&settings.server.allowed_origins).describe(),
        "security posture"
    );
    if auth.dev_login {
        tracing::warn!(
            "DEV LOGIN IS ENABLED: anyone can get a token for any user at POST /v1/dev/login. \
             Set auth.dev_login = false (CHATD_ENV=production does) for real deployments."
        );
    }
    if auth.allow_insecure_dev_auth && !settings.listens_on_loopback() {
        tracing::warn!(
            bind = %settings.server.host,
            "INSECURE: auth.allow_insecure_dev_auth lets the development secret or dev login \
             serve a network address; anyone who reaches this node can act as any user"
        );
    }
}

/// Raises the open-file limit to the hard limit: every connection is a file descriptor, and
/// the default soft limit (often 1024) would let a thousand idle sockets stop the node.
fn raise_open_file_limit(settings: &Settings) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let wanted =
                (settings.server.max_http_connections + settings.limits.max_connections) as u64;
            if limit < wanted {
                tracing::warn!(
                    open_files = limit,
                    wanted,
                    "the open-file limit is below server.max_http_connections + \
                     limits.max_connections; lower them or raise the hard limit"
                );
            } else {
                tracing::info!(open_files = limit, "open-file limit");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}
