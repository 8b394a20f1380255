//! The cluster bus: Redis Pub/Sub. One publishing connection (multiplexed, reconnecting) and
//! one subscribing connection per node, whatever the number of clients.
//!
//! Channels are `<prefix>:room:<room id>` and `<prefix>:user:<user id>`. Pub/Sub is fire and
//! forget: while the subscriber is disconnected, events are lost. So when it reconnects it
//! subscribes to everything again and then sends [`Delivery::Resynced`], and the node reads
//! what it missed from the store.

use std::{collections::HashSet, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt, future::BoxFuture};
use rand::Rng;
use redis::{
    AsyncCommands, Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::sync::{mpsc, oneshot};

use super::{Bus, BusError, DELIVERY_QUEUE, Delivery, Topic};
use crate::domain::{RoomId, UserId};

/// Each Redis round trip gets this long before the caller is told the bus is unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// The subscriber pings this often, so a silently dead connection is noticed.
const KEEPALIVE: Duration = Duration::from_secs(5);

fn bus_err(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("redis: {e}"))
}

/// A reconnecting connection for commands, shared (cloned) by everything Redis in a node.
pub async fn connect_manager(client: &Client) -> Result<ConnectionManager, BusError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    tokio::time::timeout(
        REDIS_TIMEOUT * 2,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| bus_err("connect timed out"))?
    .map_err(bus_err)
}

enum Command {
    Subscribe {
        channel: String,
        done: oneshot::Sender<Result<(), BusError>>,
    },
    Unsubscribe {
        channel: String,
    },
}

pub struct RedisBus {
    channels: Channels,
    publisher: ConnectionManager,
    commands: mpsc::UnboundedSender<Command>,
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
        }
    }

    fn topic(&self, channel: &str) -> Option<Topic> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        if let Some(room) = rest.strip_prefix("room:") {
            return RoomId::parse(room).ok().map(Topic::Room);
        }
        let user = rest.strip_prefix("user:")?;
        UserId::parse(user).ok().map(Topic::User)
    }
}

impl RedisBus {
    pub async fn connect(
        client: &Client,
        prefix: &str,
    ) -> Result<(Self, mpsc::Receiver<Delivery>), BusError> {
        let publisher = connect_manager(client).await?;
        let channels = Channels {
            prefix: prefix.to_owned(),
        };
        let (deliveries, rx) = mpsc::channel(DELIVERY_QUEUE);
        let (commands, inbox) = mpsc::unbounded_channel();
        let subscriber = Subscriber {
            client: client.clone(),
            channels: channels.clone(),
            inbox,
            deliveries,
            wanted: HashSet::new(),
        };
        tokio::spawn(subscriber.run());
        Ok((
            Self {
                channels,
                publisher,
                commands,
            },
            rx,
        ))
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BusError> {
        let mut conn = self.publisher.clone();
        let channel = self.channels.name(topic);
        tokio::time::timeout(
            REDIS_TIMEOUT,
            conn.publish::<_, _, i64>(channel, payload.as_ref()),
        )
        .await
        .map_err(|_| bus_err("publish timed out"))?
        .map(|_| ())
        .map_err(bus_err)
    }

    fn subscribe(&self, topic: &Topic) -> BoxFuture<'static, Result<(), BusError>> {
        let (done, confirmed) = oneshot::channel();
        let channel = self.channels.name(topic);
        let sent = self.commands.send(Command::Subscribe { channel, done });
        async move {
            sent.map_err(|_| bus_err("subscriber stopped"))?;
            confirmed.await.map_err(|_| bus_err("subscriber stopped"))?
        }
        .boxed()
    }

    fn unsubscribe(&self, topic: &Topic) {
        let channel = self.channels.name(topic);
        let _ = self.commands.send(Command::Unsubscribe { channel });
    }

    async fn ping(&self) -> Result<(), BusError> {
        let mut conn = self.publisher.clone();
        tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map_err(|_| bus_err("ping timed out"))?
        .map(|_| ())
        .map_err(bus_err)
    }
}

/// Owns the node's one Pub/Sub connection: applies (un)subscribe commands in order, forwards
/// messages, and reconnects with backoff, subscribing to everything wanted again.
struct Subscriber {
    client: Client,
    channels: Channels,
    inbox: mpsc::UnboundedReceiver<Command>,
    deliveries: mpsc::Sender<Delivery>,
    /// Channels this node wants, whether or not the connection is up.
    wanted: HashSet<String>,
}

/// Why a connected session ended.
enum Ended {
    /// The node is gone (bus dropped or its receiver closed): stop for good.
    Stop,
    Disconnected,
}

impl Subscriber {
    async fn run(mut self) {
        let mut delay = Duration::from_millis(100);
        let mut connected_before = false;
        loop {
            let pubsub = tokio::time::timeout(REDIS_TIMEOUT, self.client.get_async_pubsub()).await;
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
            // Back off (with jitter, so a fleet does not reconnect in lockstep), still applying
            // commands so the wanted set stays current.
            let jitter = rand::rng().random_range(0.5..1.5);
            let pause = tokio::time::sleep(delay.mul_f64(jitter));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    command = self.inbox.recv() => match command {
                        None => return,
                        Some(Command::Subscribe { done, .. }) => {
                            let _ = done.send(Err(bus_err("not connected to Redis")));
                        }
                        Some(Command::Unsubscribe { channel }) => {
                            self.wanted.remove(&channel);
                        }
                    },
                }
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn serve(
        &mut self,
        mut sink: redis::aio::PubSubSink,
        mut stream: redis::aio::PubSubStream,
        resynced: bool,
    ) -> Ended {
        if !self.wanted.is_empty() {
            let all: Vec<&String> = self.wanted.iter().collect();
            if !matches!(
                tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(all)).await,
                Ok(Ok(()))
            ) {
                return Ended::Disconnected;
            }
        }
        if resynced {
            tracing::info!(channels = self.wanted.len(), "redis pub/sub reconnected");
            if self.deliveries.send(Delivery::Resynced).await.is_err() {
                return Ended::Stop;
            }
        }
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        loop {
            tokio::select! {
                command = self.inbox.recv() => match command {
                    None => return Ended::Stop,
                    Some(Command::Subscribe { channel, done }) => {
                        let ok = matches!(
                            tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(&channel)).await,
                            Ok(Ok(()))
                        );
                        if ok {
                            self.wanted.insert(channel);
                            let _ = done.send(Ok(()));
                        } else {
                            let _ = done.send(Err(bus_err("subscribe failed")));
                            return Ended::Disconnected;
                        }
                    }
                    Some(Command::Unsubscribe { channel }) => {
                        self.wanted.remove(&channel);
                        let unsubscribed = tokio::time::timeout(REDIS_TIMEOUT, sink.unsubscribe(&channel)).await;
                        if !matches!(unsubscribed, Ok(Ok(()))) {
                            return Ended::Disconnected;
                        }
                    }
                },
                message = stream.next() => {
                    let Some(message) = message else {
                        return Ended::Disconnected;
                    };
                    let Some(topic) = self.channels.topic(message.get_channel_name()) else {
                        continue;
                    };
                    let payload = Bytes::copy_from_slice(message.get_payload_bytes());
                    if self.deliveries.send(Delivery::Event { topic, payload }).await.is_err() {
                        return Ended::Stop;
                    }
                }
                _ = keepalive.tick() => {
                    let pong = tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await;
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
