//! The conformance suites: each property of the Store and Bus traits is one generic test
//! function, written once, and instantiated for every implementation by a macro.

pub mod bus;
pub mod presence;
pub mod push_store;
pub mod store;

mod local_presence {
    use std::sync::Arc;

    use chatd::presence::{LocalPresence, PresenceRegistry};

    async fn registry() -> Arc<dyn PresenceRegistry> {
        Arc::new(LocalPresence::default())
    }

    crate::presence_conformance!();
}

mod redis_presence {
    use std::{sync::Arc, time::Duration};

    use chatd::{presence::PresenceRegistry, redis::RedisPresence};

    use crate::servers::{Redis, unique};

    /// A registry on the shared redis-server, under a prefix of its own.
    async fn registry() -> Arc<dyn PresenceRegistry> {
        let url = tokio::task::spawn_blocking(|| Redis::shared().url())
            .await
            .unwrap();
        let client = redis::Client::open(url).unwrap();
        let timeout = Duration::from_secs(2);
        let conn = chatd::redis::connect_manager(&client, timeout)
            .await
            .unwrap();
        Arc::new(RedisPresence::new(conn, &unique("chatd_presence"), timeout))
    }

    crate::presence_conformance!();
}

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

    /// Handles on one file close at the same time without waiting on each other forever.
    /// SQLite 3.51.1 took two of its mutexes in opposite orders when two connections of one
    /// file closed on two threads (a writer's close checks for other users of the WAL while
    /// a reader's close unlinks itself), which hung a CI run; 3.51.3 fixed it.
    #[test]
    fn handles_on_one_file_close_together_without_hanging() {
        use std::{sync::mpsc, time::Duration};
        const ROUNDS: usize = 100;
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("closing.db");
        let (done, finished) = mpsc::channel();
        // On its own thread, so that a hang is a failure rather than a stuck test run.
        std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                let handles: Vec<SqliteStore> = (0..2)
                    .map(|_| SqliteStore::open(&path, SqliteSynchronous::Normal).unwrap())
                    .collect();
                std::thread::scope(|s| {
                    for handle in handles {
                        s.spawn(move || drop(handle));
                    }
                });
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(Duration::from_secs(120))
            .expect("closing handles on one file hung");
    }

    /// What is committed reaches the database file itself soon after, with no further writes:
    /// the checkpointer thread copies the log back (the writer's commits never do).
    #[tokio::test]
    async fn committed_messages_reach_the_database_file_without_more_writes() {
        use std::time::{Duration, Instant};

        let dir = TempDir::new().unwrap();
        let path = dir.path().join("checkpointed.db");
        let store = SqliteStore::open(&path, SqliteSynchronous::Normal).unwrap();
        let room = super::store::room(&store).await;
        for i in 0..20 {
            let message = crate::helpers::new_message(&room, "alice", &format!("c{i}"));
            store.append(message, super::store::now()).await.unwrap();
        }
        // The file alone (copied without its log) holds them once a checkpoint has run.
        let copy = dir.path().join("copy.db");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            std::fs::copy(&path, &copy).unwrap();
            let in_file = rusqlite::Connection::open(&copy)
                .and_then(|c| c.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)))
                .unwrap_or(0i64);
            if in_file == 20 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{in_file} of 20 messages in the file after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A file written by the first schema (read positions only) opens with every position
    /// where it was: an old read counts as delivered and as public.
    #[tokio::test]
    async fn a_version_1_file_is_brought_forward() {
        use chatd::{
            domain::{RoomId, UserId},
            store::MemberReceipt,
        };
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("v1.db");
        let (room, orphan) = (RoomId::new_group(), RoomId::new_group());
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            // The version 1 schema, as files of that version hold it.
            conn.execute_batch(&format!(
                "CREATE TABLE rooms (id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT,
                     created_by TEXT NOT NULL, created_at INTEGER NOT NULL);
                 CREATE TABLE members (room_id TEXT NOT NULL REFERENCES rooms(id),
                     user_id TEXT NOT NULL, joined_at INTEGER NOT NULL,
                     read_seq INTEGER NOT NULL DEFAULT 0,
                     PRIMARY KEY (room_id, user_id)) WITHOUT ROWID;
                 CREATE TABLE messages (room_id TEXT NOT NULL, seq INTEGER NOT NULL,
                     id TEXT NOT NULL UNIQUE, sender TEXT NOT NULL,
                     client_msg_id TEXT NOT NULL, text TEXT NOT NULL,
                     created_at INTEGER NOT NULL, PRIMARY KEY (room_id, seq),
                     UNIQUE (room_id, sender, client_msg_id));
                 INSERT INTO rooms VALUES ('{room}', 'group', 'old', 'alice', 0);
                 INSERT INTO members VALUES ('{room}', 'alice', 0, 3);
                 INSERT INTO messages VALUES ('{room}', 1, 'm1', 'alice', 'c1', 'hi', 0);
                 INSERT INTO rooms VALUES ('{orphan}', 'group', 'left', 'zed', 0);
                 INSERT INTO members VALUES ('{orphan}', 'bob', 5, 0);
                 INSERT INTO members VALUES ('{orphan}', 'carol', 2, 0);
                 PRAGMA user_version = 1;"
            ))
            .unwrap();
        }
        let store = SqliteStore::open(&path, SqliteSynchronous::Normal).unwrap();
        let alice = UserId::parse("alice").unwrap();
        assert_eq!(
            store.receipts(&room).await.unwrap(),
            vec![MemberReceipt {
                user: alice.clone(),
                delivered_seq: 3,
                read_seq: 3
            }]
        );
        assert!(!store.user_settings(&alice).await.unwrap().hide_presence);
        // Creators own their groups; a group whose creator left, its first member.
        let owners = |room: chatd::domain::Room| room.roles.into_keys().collect::<Vec<_>>();
        let carol = UserId::parse("carol").unwrap();
        assert_eq!(owners(store.room(&room).await.unwrap().unwrap()), [alice]);
        assert_eq!(owners(store.room(&orphan).await.unwrap().unwrap()), [carol]);
        let messages = store
            .history(&room, &chatd::store::HistoryQuery::after(0, 5))
            .await
            .unwrap();
        assert_eq!(messages[0].kind, chatd::domain::EntryKind::Message);
        assert_eq!(messages[0].text, "hi");
    }
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

    /// Member documents from before receipts (no `deliveredSeq`, no `publicReadSeq`) keep
    /// what their `readSeq` implies: a private read does not make it public, a public read
    /// below it does not lower it.
    #[tokio::test]
    async fn member_documents_from_before_receipts_keep_their_positions() {
        use chatd::{
            domain::UserId,
            store::{Mark, NewMessage},
        };
        use mongodb::bson::doc;
        let uri = &Mongo::shared().uri;
        let database = unique("chatd_legacy");
        let store = MongoStore::connect(uri, &database).await.unwrap();
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        let room = store
            .ensure_direct_room(&alice, &bob, chrono::Utc::now())
            .await
            .unwrap()
            .id;
        for i in 0..6 {
            let new = NewMessage::text(room.clone(), bob.clone(), &format!("c{i}"), "hi");
            store.append(new, chrono::Utc::now()).await.unwrap();
        }
        let members = mongodb::Client::with_uri_str(uri)
            .await
            .unwrap()
            .database(&database)
            .collection::<mongodb::bson::Document>("members");
        let legacy =
            doc! {"$set": {"readSeq": 4_i64}, "$unset": {"deliveredSeq": "", "publicReadSeq": ""}};
        members
            .update_many(doc! {"userId": "alice"}, legacy)
            .await
            .unwrap();
        store
            .mark(&room, &alice, Mark::PrivateRead, 5)
            .await
            .unwrap();
        store.mark(&room, &alice, Mark::Read, 2).await.unwrap();
        let receipts = store.receipts(&room).await.unwrap();
        let alices = receipts.iter().find(|r| r.user == alice).unwrap();
        assert_eq!((alices.delivered_seq, alices.read_seq), (5, 4));
    }
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
