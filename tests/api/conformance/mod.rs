//! The conformance suites: each property of the Store and Bus traits is one generic test
//! function, written once, and instantiated for every implementation by a macro.

pub mod bus;
pub mod store;

mod local_bus {
    use std::sync::Arc;

    use chatd::bus::{LocalBroker, LocalBus};

    use super::bus::BusFactory;

    /// Nodes attached to one in-process broker.
    pub struct Factory(Arc<LocalBroker>);

    #[async_trait::async_trait]
    impl BusFactory for Factory {
        async fn node(&self) -> super::bus::BusNode {
            let (bus, deliveries) = LocalBus::new(self.0.clone());
            (Arc::new(bus), deliveries)
        }
    }

    async fn factory() -> Factory {
        Factory(Arc::default())
    }

    crate::bus_conformance!();
}

mod sqlite_store {
    use std::sync::Arc;

    use chatd::{
        config::SqliteSynchronous,
        store::{SqliteStore, Store},
    };
    use tempfile::TempDir;

    use super::store::StoreFactory;

    /// A fresh database file per store.
    pub struct Factory(TempDir);

    #[async_trait::async_trait]
    impl StoreFactory for Factory {
        async fn nodes(&self, n: usize) -> Vec<Arc<dyn Store>> {
            let path = self.0.path().join(format!("{}.db", uuid::Uuid::new_v4()));
            (0..n)
                .map(|_| {
                    Arc::new(SqliteStore::open(&path, SqliteSynchronous::Normal).unwrap()) as _
                })
                .collect()
        }
    }

    async fn factory() -> Factory {
        Factory(TempDir::new().unwrap())
    }

    crate::store_conformance!();
}

mod mongo_store {
    use std::sync::Arc;

    use chatd::store::{MongoStore, Store};

    use super::store::StoreFactory;
    use crate::servers::{Mongo, unique};

    /// A new database per store on the shared MongoDB-wire server.
    pub struct Factory;

    #[async_trait::async_trait]
    impl StoreFactory for Factory {
        async fn nodes(&self, n: usize) -> Vec<Arc<dyn Store>> {
            let uri = &Mongo::shared().uri;
            let database = unique("chatd_conformance");
            let mut nodes: Vec<Arc<dyn Store>> = Vec::new();
            for _ in 0..n {
                nodes.push(Arc::new(MongoStore::connect(uri, &database).await.unwrap()));
            }
            nodes
        }
    }

    async fn factory() -> Factory {
        Factory
    }

    crate::store_conformance!();
}

mod redis_bus {
    use std::sync::Arc;

    use chatd::{bus::Bus, redis::RedisBus};

    use super::bus::{BusFactory, BusNode};
    use crate::servers::{Redis, unique};

    /// Nodes on the shared redis-server, under a prefix of their own.
    pub struct Factory {
        prefix: String,
        tasks: tokio_util::task::TaskTracker,
        shutdown: tokio_util::sync::CancellationToken,
    }

    #[async_trait::async_trait]
    impl BusFactory for Factory {
        async fn node(&self) -> BusNode {
            let client = redis::Client::open(Redis::shared().url()).unwrap();
            let (bus, deliveries) = RedisBus::connect(
                &client,
                &self.prefix,
                std::time::Duration::from_secs(2),
                &self.tasks,
                &self.shutdown,
            )
            .await
            .unwrap();
            (Arc::new(bus), deliveries)
        }
    }

    async fn factory() -> Factory {
        Factory {
            prefix: unique("chatd_conformance"),
            tasks: Default::default(),
            shutdown: Default::default(),
        }
    }

    crate::bus_conformance!();

    /// A bus whose Redis is gone answers a ping with an error within its deadline: readiness
    /// checks report the outage instead of hanging.
    #[tokio::test]
    async fn ping_fails_within_its_deadline_when_redis_is_gone() {
        let mut redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
        let client = redis::Client::open(redis.url()).unwrap();
        let deadline = std::time::Duration::from_secs(1);
        let factory = factory().await;
        let (bus, _deliveries) = RedisBus::connect(
            &client,
            &factory.prefix,
            deadline,
            &factory.tasks,
            &factory.shutdown,
        )
        .await
        .unwrap();
        bus.ping().await.unwrap();
        redis.stop();
        let asked = std::time::Instant::now();
        let answer = tokio::time::timeout(deadline * 5, bus.ping())
            .await
            .expect("a ping answers even when Redis is gone");
        let took = asked.elapsed();
        assert!(answer.is_err(), "{answer:?}");
        // The deadline, and a little for a busy machine.
        assert!(took < deadline * 2, "answered after {took:?}");
    }
}
