//! Reference-counted bus subscriptions of this node: the first local connection that needs a
//! topic subscribes, the last one to leave unsubscribes (after a short linger, so a client
//! that reconnects at once does not churn the subscription).
//!
//! For a room topic, "subscribed" also means the dispatcher knows where the room stands: once
//! the subscription is live the store's newest seq is read and handed over, so everything
//! newer arrives through the dispatcher and everything older through the connection's resume.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::OnceCell;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{delivery::Input, dispatcher::Shards};
use crate::{
    bus::{Bus, BusError, Topic},
    store::{Store, StoreError},
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Entry {
    refs: usize,
    /// Identifies this subscription in the dispatcher, so that late news of an old one
    /// cannot be mistaken for the current one.
    generation: u64,
    ready: Arc<OnceCell<()>>,
}

pub struct Subscriptions {
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    /// Where rooms' activations go (bounded: a full queue makes joining connections wait;
    /// they are not on the fan-out path). Generations make the order of news about different
    /// subscriptions irrelevant.
    shards: Arc<Shards>,
    entries: Mutex<HashMap<Topic, Entry>>,
    generations: AtomicU64,
    linger: Duration,
    /// Linger timers run here and end with the node.
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Subscriptions {
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Arc<dyn Store>,
        shards: Arc<Shards>,
        linger: Duration,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            bus,
            store,
            shards,
            entries: Mutex::default(),
            generations: AtomicU64::new(1),
            linger,
            tasks,
            shutdown,
        })
    }

    /// Takes a reference on `topic`; returns once its events flow to this node. On error the
    /// reference is not taken. Dropping the future midway gives the reference back.
    pub async fn acquire(self: &Arc<Self>, topic: &Topic) -> Result<(), JoinError> {
        let (ready, generation) = {
            let mut entries = self.entries.lock().expect("subscriptions lock");
            let entry = entries.entry(topic.clone()).or_insert_with(|| {
                let generation = self.generations.fetch_add(1, Ordering::Relaxed);
                Entry {
                    refs: 0,
                    generation,
                    ready: Arc::new(OnceCell::new()),
                }
            });
            entry.refs += 1;
            (entry.ready.clone(), entry.generation)
        };
        let mut guard = ReleaseOnDrop {
            subs: Some(self),
            topic,
        };
        ready
            .get_or_try_init(|| async {
                if let Topic::Room(room) = topic {
                    // Before subscribing, so it precedes every message of the room.
                    let activating = Input::Activating {
                        room: room.clone(),
                        generation,
                    };
                    self.shards.tell(room, activating).await;
                }
                self.bus.subscribe(topic).await?;
                if let Topic::Room(room) = topic {
                    let last_seq = self.store.last_seq(room).await?;
                    let activated = Input::Activated {
                        room: room.clone(),
                        generation,
                        last_seq,
                    };
                    self.shards.tell(room, activated).await;
                }
                Ok::<_, JoinError>(())
            })
            .await?;
        guard.subs = None;
        Ok(())
    }

    /// Gives back a reference taken by [`acquire`](Self::acquire).
    pub fn release(self: &Arc<Self>, topic: &Topic) {
        let generation = {
            let mut entries = self.entries.lock().expect("subscriptions lock");
            let Some(entry) = entries.get_mut(topic) else {
                return;
            };
            entry.refs -= 1;
            if entry.refs > 0 {
                return;
            }
            entry.generation
        };
        let subs = Arc::clone(self);
        let topic = topic.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = subs.shutdown.cancelled() => return,
                _ = tokio::time::sleep(subs.linger) => {}
            }
            subs.drop_if_unused(&topic, generation).await;
        });
    }

    async fn drop_if_unused(&self, topic: &Topic, generation: u64) {
        {
            let mut entries = self.entries.lock().expect("subscriptions lock");
            let unused = entries
                .get(topic)
                .is_some_and(|e| e.refs == 0 && e.generation == generation);
            if !unused {
                return;
            }
            entries.remove(topic);
            // Under the lock: a new subscription of this topic is ordered after this.
            self.bus.unsubscribe(topic);
        }
        if let Topic::Room(room) = topic {
            let deactivated = Input::Deactivated {
                room: room.clone(),
                generation,
            };
            self.shards.tell(room, deactivated).await;
        }
    }

    /// Topics this node is subscribed to, for metrics and tests.
    pub fn count(&self) -> usize {
        self.entries.lock().expect("subscriptions lock").len()
    }
}

struct ReleaseOnDrop<'a> {
    subs: Option<&'a Arc<Subscriptions>>,
    topic: &'a Topic,
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(subs) = self.subs {
            subs.release(self.topic);
        }
    }
}
