//! What every Bus must do. Instantiate with `bus_conformance!()` in a module that has
//! `async fn factory() -> impl BusFactory`.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use chatd::{
    bus::{Bus, Delivery, Topic},
    domain::{RoomId, UserId},
};
use tokio::sync::mpsc;

pub type BusNode = (Arc<dyn Bus>, mpsc::Receiver<Delivery>);

#[async_trait::async_trait]
pub trait BusFactory: Send + Sync {
    /// A new node attached to the factory's one backend.
    async fn node(&self) -> BusNode;
}

#[macro_export]
macro_rules! bus_conformance {
    () => {
        $crate::bus_conformance!(@tests
            a_publish_reaches_every_subscribed_node_once,
            unsubscribed_topics_are_not_delivered,
            unsubscribe_stops_delivery,
            one_publishers_events_keep_their_order,
            room_and_user_topics_do_not_mix,
            ping_answers
        );
    };
    (@tests $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let factory = factory().await;
                $crate::conformance::bus::$name(&factory).await;
            }
        )*
    };
}

const QUIET: Duration = Duration::from_millis(300);

fn room_topic() -> Topic {
    Topic::Room(RoomId::new_group())
}

async fn next_event(rx: &mut mpsc::Receiver<Delivery>) -> (Topic, Bytes) {
    loop {
        match tokio::time::timeout(crate::helpers::WAIT, rx.recv()).await {
            Ok(Some(Delivery::Event { topic, payload })) => return (topic, payload),
            Ok(Some(Delivery::Resynced)) => continue,
            Ok(None) => panic!("bus closed"),
            Err(_) => panic!("no event in time"),
        }
    }
}

async fn silent(rx: &mut mpsc::Receiver<Delivery>) {
    if let Ok(Some(Delivery::Event { topic, payload })) =
        tokio::time::timeout(QUIET, rx.recv()).await
    {
        panic!("unexpected event on {topic:?}: {payload:?}");
    }
}

pub async fn a_publish_reaches_every_subscribed_node_once(f: &impl BusFactory) {
    let (a, mut a_rx) = f.node().await;
    let (b, mut b_rx) = f.node().await;
    let topic = room_topic();
    a.subscribe(&topic).await.unwrap();
    b.subscribe(&topic).await.unwrap();
    a.publish(&topic, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    for rx in [&mut a_rx, &mut b_rx] {
        assert_eq!(
            next_event(rx).await,
            (topic.clone(), Bytes::from_static(b"hello"))
        );
        silent(rx).await;
    }
}

pub async fn unsubscribed_topics_are_not_delivered(f: &impl BusFactory) {
    let (a, mut a_rx) = f.node().await;
    let (b, _b_rx) = f.node().await;
    let mine = room_topic();
    a.subscribe(&mine).await.unwrap();
    b.publish(&room_topic(), Bytes::from_static(b"not for a"))
        .await
        .unwrap();
    silent(&mut a_rx).await;
}

pub async fn unsubscribe_stops_delivery(f: &impl BusFactory) {
    let (a, mut a_rx) = f.node().await;
    let topic = room_topic();
    a.subscribe(&topic).await.unwrap();
    a.publish(&topic, Bytes::from_static(b"1")).await.unwrap();
    next_event(&mut a_rx).await;
    a.unsubscribe(&topic);
    // Calls take effect in call order: once a subscribe made after the unsubscribe is
    // confirmed, the unsubscribe has taken effect too.
    let marker = room_topic();
    a.subscribe(&marker).await.unwrap();
    a.publish(&topic, Bytes::from_static(b"2")).await.unwrap();
    a.publish(&marker, Bytes::from_static(b"marker"))
        .await
        .unwrap();
    // One publisher's events arrive in order: had "2" been delivered, it would come first.
    assert_eq!(
        next_event(&mut a_rx).await,
        (marker, Bytes::from_static(b"marker"))
    );
    // And subscribing again works.
    a.subscribe(&topic).await.unwrap();
    a.publish(&topic, Bytes::from_static(b"3")).await.unwrap();
    assert_eq!(next_event(&mut a_rx).await.1, Bytes::from_static(b"3"));
}

pub async fn one_publishers_events_keep_their_order(f: &impl BusFactory) {
    let (a, _a_rx) = f.node().await;
    let (b, mut b_rx) = f.node().await;
    let topic = room_topic();
    b.subscribe(&topic).await.unwrap();
    for i in 0..200u32 {
        a.publish(&topic, Bytes::from(i.to_string())).await.unwrap();
    }
    for i in 0..200u32 {
        assert_eq!(next_event(&mut b_rx).await.1, Bytes::from(i.to_string()));
    }
}

pub async fn room_and_user_topics_do_not_mix(f: &impl BusFactory) {
    let (a, mut a_rx) = f.node().await;
    let room = RoomId::new_group();
    // A user whose id is the room's id string: the topics must still be distinct.
    let user = Topic::User(UserId::parse(room.as_str()).unwrap());
    a.subscribe(&user).await.unwrap();
    a.publish(&Topic::Room(room), Bytes::from_static(b"room"))
        .await
        .unwrap();
    silent(&mut a_rx).await;
    a.publish(&user, Bytes::from_static(b"user")).await.unwrap();
    assert_eq!(
        next_event(&mut a_rx).await,
        (user, Bytes::from_static(b"user"))
    );
}

/// A ping of a working bus answers Ok, promptly, and delivers nothing.
pub async fn ping_answers(f: &impl BusFactory) {
    let (a, mut a_rx) = f.node().await;
    let answer = tokio::time::timeout(crate::helpers::WAIT, a.ping()).await;
    assert_eq!(answer, Ok(Ok(())));
    silent(&mut a_rx).await;
}
