//! Builds a node from its settings and runs it: store, bus, hub, chat service, router,
//! listener; and the orderly stop (drain) on shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api,
    auth::TokenAuthority,
    bus::{self, Bus, Delivery},
    chat::Chat,
    clock::{Clock, SystemClock},
    config::{BusKind, Settings, StoreKind},
    hub::Hub,
    store::{self, Store},
    telemetry,
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
    /// Cancelled when the node starts to stop.
    pub shutdown: CancellationToken,
    /// Connection and background tasks, awaited (up to the grace period) on shutdown.
    pub tasks: TaskTracker,
}

pub struct Application {
    listener: TcpListener,
    node: Arc<Node>,
}

/// Connects the configured store.
pub async fn connect_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match settings.store.kind {
        StoreKind::Sqlite => {
            let path = &settings.store.sqlite_path;
            let store = store::SqliteStore::open(path, settings.store.sqlite_synchronous)
                .with_context(|| format!("opening SQLite store {}", path.display()))?;
            Arc::new(store)
        }
        StoreKind::Mongodb => anyhow::bail!("todo mongo"),
    })
}

/// Connects the configured bus; the receiver carries what it delivers to this node.
pub async fn connect_bus(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn Bus>, tokio::sync::mpsc::Receiver<Delivery>)> {
    Ok(match settings.bus.kind {
        BusKind::Local => {
            let (bus, deliveries) = bus::LocalBus::new(Arc::default());
            (Arc::new(bus), deliveries)
        }
        BusKind::Redis => anyhow::bail!("todo redis"),
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
        let store = connect_store(&settings).await?;
        let (bus, deliveries) = connect_bus(&settings).await?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let hub = Hub::start(
            bus.clone(),
            deliveries,
            store.clone(),
            shutdown.clone(),
            &tasks,
        );
        let chat = Chat::new(store.clone(), bus.clone(), clock, settings.limits.clone());
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let node = Arc::new(Node {
            id: settings.node_id(),
            auth: TokenAuthority::new(&settings.auth.jwt_secret, settings.auth.leeway_secs),
            settings,
            chat,
            hub,
            store,
            bus,
            shutdown,
            tasks,
        });
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
        let shutdown = node.shutdown.clone();
        // axum's graceful shutdown covers plain HTTP; upgraded WebSockets are tracked in
        // `node.tasks` and closed by their own tasks when `shutdown` fires.
        axum::serve(self.listener, api::router(node.clone()))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("serving")?;
        node.tasks.close();
        let grace = Duration::from_millis(settings.server.shutdown_grace_ms);
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
