//! The in-process bus of the embedded mode. A [`LocalBroker`] plays Redis: every [`LocalBus`]
//! attached to it is a "node". One node normally owns one broker; tests attach several nodes
//! to one broker to run the bus conformance suite exactly as on Redis.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, future::BoxFuture};
use tokio::sync::mpsc;

use super::{Bus, BusError, DELIVERY_QUEUE, Delivery, Topic};

type NodeKey = usize;
/// The nodes subscribed to one topic, with where to deliver to each.
type Subscribers = Vec<(NodeKey, mpsc::Sender<Delivery>)>;

#[derive(Default)]
pub struct LocalBroker {
    topics: RwLock<HashMap<Topic, Subscribers>>,
}

pub struct LocalBus {
    broker: Arc<LocalBroker>,
    node: NodeKey,
    deliveries: mpsc::Sender<Delivery>,
}

impl LocalBus {
    pub fn new(broker: Arc<LocalBroker>) -> (Self, mpsc::Receiver<Delivery>) {
        let (deliveries, rx) = mpsc::channel(DELIVERY_QUEUE);
        static NEXT_NODE: AtomicUsize = AtomicUsize::new(1);
        let node = NEXT_NODE.fetch_add(1, Ordering::Relaxed);
        (
            Self {
                broker,
                node,
                deliveries,
            },
            rx,
        )
    }
}

impl Drop for LocalBus {
    fn drop(&mut self) {
        let mut topics = self.broker.topics.write().expect("broker lock");
        for subs in topics.values_mut() {
            subs.retain(|(node, _)| *node != self.node);
        }
        topics.retain(|_, subs| !subs.is_empty());
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BusError> {
        let targets: Vec<mpsc::Sender<Delivery>> = {
            let topics = self.broker.topics.read().expect("broker lock");
            topics
                .get(topic)
                .map(|subs| subs.iter().map(|(_, tx)| tx.clone()).collect())
                .unwrap_or_default()
        };
        for tx in targets {
            let delivery = Delivery::Event {
                topic: topic.clone(),
                payload: payload.clone(),
            };
            // A full queue slows the publisher down instead of dropping; a stopped node is gone.
            let _ = tx.send(delivery).await;
        }
        Ok(())
    }

    fn subscribe(&self, topic: &Topic) -> BoxFuture<'static, Result<(), BusError>> {
        let mut topics = self.broker.topics.write().expect("broker lock");
        let subs = topics.entry(topic.clone()).or_default();
        if !subs.iter().any(|(node, _)| *node == self.node) {
            subs.push((self.node, self.deliveries.clone()));
        }
        futures_util::future::ready(Ok(())).boxed()
    }

    fn unsubscribe(&self, topic: &Topic) {
        let mut topics = self.broker.topics.write().expect("broker lock");
        if let Some(subs) = topics.get_mut(topic) {
            subs.retain(|(node, _)| *node != self.node);
            if subs.is_empty() {
                topics.remove(topic);
            }
        }
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}
