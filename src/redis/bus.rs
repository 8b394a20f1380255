//! The cluster bus: Redis Pub/Sub. One publishing connection (multiplexed, reconnecting) and
//! one subscribing connection per node, whatever the number of clients.
//!
//! Channels are `<prefix>:room:<room id>` and `<prefix>:user:<user id>`. Pub/Sub is fire and
//! forget: while the subscriber is disconnected, events are lost. So when it reconnects it
//! subscribes to everything again and then sends [`Delivery::Resynced`], and the node reads
//! what it missed from the store.
//!
//! Subscriptions are kept as a wanted set, not a queue of commands: `subscribe` and
//! `unsubscribe` edit the set and wake the subscriber task, which makes the connection match
//! it. However many calls come in, the memory is bounded by the number of channels, and the
//! outcome is the last call's intent.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt, future::BoxFuture};
use rand::Rng;
use redis::{AsyncCommands, Client, aio::ConnectionManager};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::connect_manager;
use crate::{
    bus::{Bus, BusError, DELIVERY_QUEUE, Delivery, Topic},
    domain::{RoomId, UserId},
};

/// The subscriber pings this often, so a silently dead connection is noticed.
const KEEPALIVE: Duration = Duration::from_secs(5);

fn bus_err(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("redis: {e}"))
}

type Waiter = oneshot::Sender<Result<(), BusError>>;

/// What this node wants to receive, edited by the bus handle, applied by the subscriber.
#[derive(Default)]
struct Wanted {
    channels: HashSet<String>,
    /// Subscribe calls waiting for their channel to be live.
    waiters: HashMap<String, Vec<Waiter>>,
}

#[derive(Default)]
struct Shared {
    wanted: Mutex<Wanted>,
    changed: Notify,
}

impl Shared {
    fn wanted(&self) -> std::sync::MutexGuard<'_, Wanted> {
        self.wanted.lock().expect("wanted lock")
    }

    /// Answers the subscribe calls whose channel is now live, and those whose channel is no
    /// longer wanted.
    fn settle(&self, live: &HashSet<String>) {
        let mut wanted = self.wanted();
        let Wanted { channels, waiters } = &mut *wanted;
        waiters.retain(|channel, waiting| {
            let answer = if live.contains(channel) {
                Ok(())
            } else if !channels.contains(channel) {
                Err(bus_err("unsubscribed before it was live"))
            } else {
                return true;
            };
            for waiter in waiting.drain(..) {
                let _ = waiter.send(answer.clone());
            }
            false
        });
    }

    /// While disconnected: every pending subscribe fails at once (the caller retries).
    fn fail_waiters(&self) {
        for (_, waiting) in self.wanted().waiters.drain() {
            for waiter in waiting {
                let _ = waiter.send(Err(bus_err("not connected to Redis")));
            }
        }
    }
}

pub struct RedisBus {
    channels: Channels,
    publisher: ConnectionManager,
    shared: Arc<Shared>,
    timeout: Duration,
    /// Stops the subscriber when the bus is dropped.
    stop: CancellationToken,
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Topic <-> channel name.
#[derive(Clone)]
struct Channels {
    prefix: String,
}

impl Channels {
    fn name(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(room) => format!("{}:room:{room}", self.prefix),
            Topic::User(user) => format!("{}:user:{user}", self.prefix),
            Topic::Presence(user) => format!("{}:presence:{user}", self.prefix),
        }
    }

    fn topic(&self, channel: &str) -> Option<Topic> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        if let Some(room) = rest.strip_prefix("room:") {
            return RoomId::parse(room).ok().map(Topic::Room);
        }
        if let Some(user) = rest.strip_prefix("presence:") {
            return UserId::parse(user).ok().map(Topic::Presence);
        }
        let user = rest.strip_prefix("user:")?;
        UserId::parse(user).ok().map(Topic::User)
    }
}

impl RedisBus {
    /// Connects, and starts the subscriber task on `tasks`; it stops with `shutdown` or when
    /// the bus is dropped. Every call answers within `timeout`.
    pub async fn connect(
        client: &Client,
        prefix: &str,
        timeout: Duration,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<(Self, mpsc::Receiver<Delivery>), BusError> {
        let publisher = connect_manager(client, timeout).await?;
        let channels = Channels {
            prefix: prefix.to_owned(),
        };
        let (deliveries, rx) = mpsc::channel(DELIVERY_QUEUE);
        let shared = Arc::new(Shared::default());
        let stop = shutdown.child_token();
        let subscriber = Subscriber {
            client: client.clone(),
            channels: channels.clone(),
            shared: shared.clone(),
            deliveries,
            timeout,
            stop: stop.clone(),
        };
        tasks.spawn(subscriber.run());
        Ok((
            Self {
                channels,
                publisher,
                shared,
                timeout,
                stop,
            },
            rx,
        ))
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BusError> {
        let channel = self.channels.name(topic);
        super::retrying(self.timeout, || {
            let mut conn = self.publisher.clone();
            let channel = channel.clone();
            let payload = payload.clone();
            async move { conn.publish::<_, _, i64>(channel, payload.as_ref()).await }
        })
        .await
        .map(|_| ())
        .map_err(|e| BusError::Unavailable(format!("publish: {e}")))
    }

    fn subscribe(&self, topic: &Topic) -> BoxFuture<'static, Result<(), BusError>> {
        let (done, confirmed) = oneshot::channel();
        let channel = self.channels.name(topic);
        {
            let mut wanted = self.shared.wanted();
            wanted.channels.insert(channel.clone());
            wanted.waiters.entry(channel).or_default().push(done);
        }
        self.shared.changed.notify_one();
        let timeout = self.timeout;
        async move {
            tokio::time::timeout(timeout, confirmed)
                .await
                .map_err(|_| bus_err("subscribe timed out"))?
                .map_err(|_| bus_err("subscriber stopped"))?
        }
        .boxed()
    }

    fn unsubscribe(&self, topic: &Topic) {
        let channel = self.channels.name(topic);
        self.shared.wanted().channels.remove(&channel);
        self.shared.changed.notify_one();
    }

    async fn ping(&self) -> Result<(), BusError> {
        let mut conn = self.publisher.clone();
        tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map_err(|_| bus_err("ping timed out"))?
        .map(|_| ())
        .map_err(bus_err)
    }
}

/// Owns the node's one Pub/Sub connection: makes its subscriptions match the wanted set,
/// forwards messages, and reconnects with backoff, subscribing to everything wanted again.
struct Subscriber {
    client: Client,
    channels: Channels,
    shared: Arc<Shared>,
    deliveries: mpsc::Sender<Delivery>,
    timeout: Duration,
    stop: CancellationToken,
}

/// Why a connected session ended.
enum Ended {
    /// The node is stopping (or the bus was dropped): stop for good.
    Stop,
    Disconnected,
}

impl Subscriber {
    async fn run(self) {
        let mut delay = Duration::from_millis(100);
        let mut connected_before = false;
        loop {
            let pubsub = tokio::select! {
                _ = self.stop.cancelled() => return,
                pubsub = tokio::time::timeout(self.timeout, self.client.get_async_pubsub()) => pubsub,
            };
            match pubsub {
                Ok(Ok(pubsub)) => {
                    let (sink, stream) = pubsub.split();
                    match self.serve(sink, stream, connected_before).await {
                        Ended::Stop => return,
                        Ended::Disconnected => {
                            connected_before = true;
                            delay = Duration::from_millis(100);
                            tracing::warn!("redis pub/sub connection lost; reconnecting");
                        }
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "redis pub/sub connect failed"),
                Err(_) => tracing::warn!("redis pub/sub connect timed out"),
            }
            // Back off (with jitter, so a fleet does not reconnect in lockstep); subscribe
            // calls meanwhile fail at once.
            self.shared.fail_waiters();
            let jitter = rand::rng().random_range(0.5..1.5);
            let pause = tokio::time::sleep(delay.mul_f64(jitter));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = &mut pause => break,
                    _ = self.shared.changed.notified() => self.shared.fail_waiters(),
                }
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Subscribes and unsubscribes until the connection's channels are the wanted ones.
    async fn reconcile(
        &self,
        sink: &mut redis::aio::PubSubSink,
        live: &mut HashSet<String>,
    ) -> Result<(), ()> {
        let (add, remove): (Vec<String>, Vec<String>) = {
            let wanted = self.shared.wanted();
            (
                wanted.channels.difference(live).cloned().collect(),
                live.difference(&wanted.channels).cloned().collect(),
            )
        };
        if !add.is_empty() {
            match tokio::time::timeout(self.timeout, sink.subscribe(&add)).await {
                Ok(Ok(())) => live.extend(add),
                _ => return Err(()),
            }
        }
        if !remove.is_empty() {
            match tokio::time::timeout(self.timeout, sink.unsubscribe(&remove)).await {
                Ok(Ok(())) => remove.iter().for_each(|c| {
                    live.remove(c);
                }),
                _ => return Err(()),
            }
        }
        self.shared.settle(live);
        Ok(())
    }

    async fn serve(
        &self,
        mut sink: redis::aio::PubSubSink,
        mut stream: redis::aio::PubSubStream,
        resynced: bool,
    ) -> Ended {
        let mut live = HashSet::new();
        if self.reconcile(&mut sink, &mut live).await.is_err() {
            return Ended::Disconnected;
        }
        if resynced {
            tracing::info!(channels = live.len(), "redis pub/sub reconnected");
            if self.deliveries.send(Delivery::Resynced).await.is_err() {
                return Ended::Stop;
            }
        }
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Ended::Stop,
                _ = self.shared.changed.notified() => {
                    if self.reconcile(&mut sink, &mut live).await.is_err() {
                        return Ended::Disconnected;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        return Ended::Disconnected;
                    };
                    let Some(topic) = self.channels.topic(message.get_channel_name()) else {
                        continue;
                    };
                    let payload = Bytes::copy_from_slice(message.get_payload_bytes());
                    // Bounded: a node that cannot keep up stops reading (back-pressure).
                    if self.deliveries.send(Delivery::Event { topic, payload }).await.is_err() {
                        return Ended::Stop;
                    }
                }
                _ = keepalive.tick() => {
                    let pong = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return Ended::Disconnected;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        let channels = Channels {
            prefix: "chatd:t1".into(),
        };
        let room = Topic::Room(RoomId::new_group());
        let user = Topic::User(UserId::parse("alice").unwrap());
        for topic in [room, user] {
            assert_eq!(channels.topic(&channels.name(&topic)), Some(topic));
        }
        assert_eq!(channels.topic("other:room:x"), None);
    }
}
