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
        async fn store(&self) -> Arc<dyn Store> {
            let path = self.0.path().join(format!("{}.db", uuid::Uuid::new_v4()));
            Arc::new(SqliteStore::open(&path, SqliteSynchronous::Normal).unwrap())
        }
    }

    async fn factory() -> Factory {
        Factory(TempDir::new().unwrap())
    }

    crate::store_conformance!();
}
