//! Builds a node from its settings and runs it: store, bus, hub, chat service, router,
//! listener; and the orderly stop (drain) on shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api,
    auth::TokenAuthority,
    bus::{self, Bus, Delivery},
    cache::{RecentCache, RedisRecentCache},
    chat::Chat,
    clock::{Clock, SystemClock},
    config::{BusKind, Settings, StoreKind},
    hub::Hub,
    presence::{LocalPresence, Presence, RedisPresence},
    store::{self, Store},
    telemetry,
    throttle::SendThrottle,
};

/// Everything a request or a connection needs, shared by all of them.
pub struct Node {
    pub id: String,
    pub settings: Settings,
    pub auth: TokenAuthority,
    pub chat: Chat,
    pub hub: Arc<Hub>,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<dyn Presence>,
    /// Per-user limit on sent messages (WebSocket and REST).
    pub sends: SendThrottle,
    /// Cancelled when the node starts to stop.
    pub shutdown: CancellationToken,
    /// Connection and background tasks, awaited (up to the grace period) on shutdown.
    pub tasks: TaskTracker,
}

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
    pub presence: Arc<dyn Presence>,
}

/// Connects the configured store, bus, cache and presence registry.
pub async fn connect_backends(settings: &Settings) -> anyhow::Result<Backends> {
    let store: Arc<dyn Store> = match settings.store.kind {
        StoreKind::Sqlite => {
            let path = &settings.store.sqlite_path;
            let store = store::SqliteStore::open(path, settings.store.sqlite_synchronous)
                .with_context(|| format!("opening SQLite store {}", path.display()))?;
            Arc::new(store)
        }
        StoreKind::Mongodb => Arc::new(
            store::MongoStore::connect(
                &settings.store.mongodb_uri,
                &settings.store.mongodb_database,
            )
            .await
            .context("connecting to MongoDB (store.mongodb_uri)")?,
        ),
    };
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
            }
        }
        BusKind::Redis => {
            let bus_settings = &settings.bus;
            let client =
                redis::Client::open(bus_settings.redis_url.as_str()).context("bus.redis_url")?;
            let (bus, deliveries) = bus::RedisBus::connect(&client, &bus_settings.redis_prefix)
                .await
                .context("connecting to Redis (bus.redis_url)")?;
            let conn = bus::redis::connect_manager(&client).await?;
            Backends {
                store,
                bus: Arc::new(bus),
                deliveries,
                recent: Some(Arc::new(RedisRecentCache::new(
                    conn.clone(),
                    &bus_settings.redis_prefix,
                    bus_settings.recent_cache_size,
                ))),
                presence: Arc::new(RedisPresence::new(conn, &bus_settings.redis_prefix)),
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
        let Backends {
            store,
            bus,
            deliveries,
            recent,
            presence,
        } = connect_backends(&settings).await?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let hub = Hub::start(
            bus.clone(),
            deliveries,
            store.clone(),
            shutdown.clone(),
            &tasks,
        );
        let chat = Chat::new(
            store.clone(),
            bus.clone(),
            recent,
            presence.clone(),
            clock,
            settings.limits.clone(),
        );
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let node = Arc::new(Node {
            id: settings.node_id(),
            sends: SendThrottle::new(&settings.limits),
            auth: TokenAuthority::new(&settings.auth.jwt_secret, settings.auth.leeway_secs),
            settings,
            chat,
            hub,
            store,
            bus,
            presence,
            shutdown,
            tasks,
        });
        node.tasks.spawn(refresh_presence(node.clone()));
        node.tasks.spawn(forget_idle_senders(node.clone()));
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
        if settings.auth.dev_login {
            tracing::warn!(
                "DEV LOGIN IS ENABLED: anyone can get a token for any user at POST /v1/dev/login. \
                 Set auth.dev_login = false (CHATD_ENV=production does) for real deployments."
            );
        }
        tracing::info!(
            node = %node.id,
            addr = %self.listener.local_addr()?,
            store = ?settings.store.kind,
            bus = ?settings.bus.kind,
            "chatd listening"
        );
        let grace = Duration::from_millis(settings.server.shutdown_grace_ms);
        let handshake = Duration::from_millis(settings.server.handshake_timeout_ms);
        crate::server::serve(
            self.listener,
            api::router(node.clone()),
            node.shutdown.clone(),
            handshake,
            grace,
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
        tracing::info!(node = %node.id, "stopped");
        Ok(())
    }
}

/// The key of a connection in the presence registry: unique across the cluster.
pub fn presence_key(node: &str, conn: crate::hub::ConnId) -> String {
    format!("{node}:{conn}")
}

/// Vouches for this node's connections until the node stops; if the node dies, its users
/// expire from the registry by themselves.
async fn refresh_presence(node: Arc<Node>) {
    let every = Duration::from_millis(node.settings.presence.refresh_ms);
    let ttl = Duration::from_millis(node.settings.presence.ttl_ms);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let entries: Vec<_> = node
            .hub
            .connections()
            .into_iter()
            .map(|(user, conn)| (user, presence_key(&node.id, conn)))
            .collect();
        if let Err(e) = node.presence.refresh(&entries, ttl).await {
            tracing::warn!(error = %e, "presence refresh failed");
        }
    }
}

/// Drops the rate-limit state of users who have been quiet (their buckets are full again).
async fn forget_idle_senders(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => node.sends.forget_idle(),
        }
    }
}
