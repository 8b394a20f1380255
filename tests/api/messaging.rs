//! The message pipeline end to end: delivery, order, idempotency, durability, resume.
//!
//! Over 400 lines because it is one scenario per property of the pipeline, each short and
//! independent; splitting them would only scatter one area over several files.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chatd::{
    clock::ManualClock,
    domain::{Message, RoomId, Seq},
};
use chatd_client::{RoomLog, ServerFrame};
use chrono::{Duration as ChronoDuration, Utc};

use crate::helpers::*;

async fn room_added(conn: &mut TestConn) -> RoomId {
    conn.wait_for(|e| match e {
        ServerFrame::RoomAdded { room } => Some(room.id),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn two_users_chat_one_to_one() {
    let app = TestApp::spawn().await;
    let mut alice = app.connect("alice").await;
    let mut alice_phone = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let ServerFrame::Welcome {
        v,
        user,
        heartbeat_ms,
        max_text_chars,
        ..
    } = &bob.welcome
    else {
        unreachable!()
    };
    assert_eq!((*v, user.as_str()), (1, "bob"));
    assert_eq!((*heartbeat_ms, *max_text_chars), (20_000, 4000));

    // The room is created after everyone connected: it goes live on their connections.
    let room = app.client("alice").open_direct("bob").await.unwrap();
    assert_eq!(room_added(&mut bob).await, room.id);
    assert_eq!(room_added(&mut alice).await, room.id);
    assert_eq!(room_added(&mut alice_phone).await, room.id);

    alice.send(&room.id, "a1", "hi bob").await;
    let ack = alice.ack("a1").await;
    let ServerFrame::Ack {
        seq, id, duplicate, ..
    } = ack
    else {
        unreachable!()
    };
    assert_eq!((seq, duplicate), (1, false));

    let at_bob = bob.messages(&room.id, 1).await;
    assert_eq!(
        (at_bob[0].id.as_str(), at_bob[0].text.as_str()),
        (id.as_str(), "hi bob")
    );
    assert_eq!(at_bob[0].sender.as_str(), "alice");
    // The sender's own connections get the message too.
    assert_eq!(alice.messages(&room.id, 1).await[0].id, id);
    assert_eq!(alice_phone.messages(&room.id, 1).await[0].id, id);

    bob.send_acked(&room.id, "b1", "hi alice").await;
    let back = alice.messages(&room.id, 1).await;
    assert_eq!((back[0].seq, back[0].text.as_str()), (2, "hi alice"));
}

#[tokio::test]
async fn every_group_member_receives_every_message_once() {
    let app = TestApp::spawn().await;
    let names = ["ann", "ben", "cat", "dan", "eve"];
    let room = group(&app, "five", &names).await;
    let mut conns = Vec::new();
    for name in names {
        conns.push(app.connect(name).await);
    }
    for (i, conn) in conns.iter_mut().enumerate() {
        for j in 0..4 {
            conn.send(&room.id, &format!("{i}-{j}"), &format!("from {i}: {j}"))
                .await;
        }
    }
    for conn in &mut conns {
        // `messages` skips the acks.
        let got = conn.messages(&room.id, 20).await;
        assert_eq!(seqs(&got), (1..=20).collect::<Vec<_>>());
        conn.no_message_within(Duration::from_millis(300)).await;
    }
}

/// 5 clients send 1,000 messages at once into one room: everyone ends with one order,
/// the store's, with no gap and no duplicate; each sender's messages keep its send order.
#[tokio::test]
async fn concurrent_senders_all_see_the_store_order() {
    const CLIENTS: usize = 5;
    const EACH: usize = 200;
    let app = TestApp::spawn().await;
    let names: Vec<String> = (0..CLIENTS).map(|i| format!("user{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let room = group(&app, "busy", &name_refs).await;

    // Everyone is live before anyone sends.
    let mut conns = Vec::new();
    for name in &names {
        conns.push((name, app.connect(name).await));
    }
    let mut tasks = Vec::new();
    for (name, conn) in conns {
        let room = room.id.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = conn.conn.split();
            let sender = tokio::spawn({
                let (room, name) = (room.clone(), name.clone());
                async move {
                    for i in 0..EACH {
                        tx.send_message(&room, &format!("{name}-{i}"), &format!("{name} says {i}"))
                            .await
                            .unwrap();
                    }
                    tx
                }
            });
            let mut received: Vec<Message> = Vec::new();
            let mut acks: Vec<(String, Seq)> = Vec::new();
            while received.len() < CLIENTS * EACH || acks.len() < EACH {
                let event = rx.event(WAIT).await.unwrap_or_else(|e| {
                    let got: std::collections::BTreeSet<Seq> =
                        received.iter().map(|m| m.seq).collect();
                    let missing: Vec<Seq> = (1..=(CLIENTS * EACH) as Seq)
                        .filter(|s| !got.contains(s))
                        .collect();
                    panic!(
                        "{name}: {e} after {} messages, {} acks; missing {missing:?}",
                        received.len(),
                        acks.len()
                    )
                });
                match event {
                    ServerFrame::Message(m) => received.push(m),
                    ServerFrame::Ack {
                        client_msg_id, seq, ..
                    } => acks.push((client_msg_id, seq)),
                    other => panic!("{name}: unexpected {other:?}"),
                }
            }
            let _tx = sender.await.unwrap();
            (received, acks)
        }));
    }

    let mut orders = Vec::new();
    for task in tasks {
        let (received, acks) = task.await.unwrap();
        // Delivered in seq order, each once.
        assert_eq!(
            seqs(&received),
            (1..=(CLIENTS * EACH) as Seq).collect::<Vec<_>>()
        );
        // Acks come in send order with increasing seqs: a sender's order is kept.
        assert!(
            acks.windows(2).all(|w| w[0].1 < w[1].1),
            "ack seqs not increasing"
        );
        orders.push(received.iter().map(|m| m.id.clone()).collect::<Vec<_>>());
    }
    let history = app
        .client("user0")
        .history_after(&room.id, 0)
        .await
        .unwrap();
    let stored: Vec<String> = history.iter().map(|m| m.id.clone()).collect();
    assert_eq!(stored.len(), CLIENTS * EACH);
    for order in orders {
        assert_eq!(order, stored, "a client's order differs from the store's");
    }
    // createdAt never decreases along seq.
    assert!(
        history
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );
}

#[tokio::test]
async fn a_retried_send_is_stored_once_and_acked_identically() {
    let app = TestApp::spawn().await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;

    alice.send(&room.id, "same-id", "hello").await;
    let first = alice.ack("same-id").await;
    // The retry, even with a different text, answers the stored message.
    alice.send(&room.id, "same-id", "hello (retry)").await;
    let second = alice.ack("same-id").await;
    let (
        ServerFrame::Ack {
            id: id1,
            seq: s1,
            created_at: t1,
            duplicate: d1,
            ..
        },
        ServerFrame::Ack {
            id: id2,
            seq: s2,
            created_at: t2,
            duplicate: d2,
            ..
        },
    ) = (first, second)
    else {
        unreachable!()
    };
    assert_eq!((&id1, s1, &t1), (&id2, s2, &t2));
    assert_eq!((d1, d2), (false, true));

    // Over REST too: 200 (not 201) and the same message.
    let response = app
        .post_json_as(
            "alice",
            &format!("/v1/rooms/{}/messages", room.id),
            serde_json::json!({"clientMsgId": "same-id", "text": "again"}),
        )
        .await;
    assert_eq!(response.status, 200);
    let message: Message = response.json();
    assert_eq!(
        (message.id.as_str(), message.text.as_str()),
        (id1.as_str(), "hello")
    );

    // Bob sees it once, and history holds it once.
    assert_eq!(bob.messages(&room.id, 1).await[0].id, id1);
    bob.no_message_within(Duration::from_millis(400)).await;
    let history = app.client("bob").history_after(&room.id, 0).await.unwrap();
    assert_eq!(history.len(), 1);
}

#[tokio::test]
async fn history_and_seq_survive_a_restart() {
    let app = TestApp::spawn().await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut alice = app.connect("alice").await;
    for i in 1..=10 {
        assert_eq!(alice.send_acked(&room.id, &format!("m{i}"), "x").await, i);
    }
    drop(alice);
    let before = app.client("bob").history_after(&room.id, 0).await.unwrap();
    let (settings, dir) = app.stop().await;

    let app = TestApp::start(settings, dir, None).await;
    let after = app.client("bob").history_after(&room.id, 0).await.unwrap();
    assert_eq!(after, before);
    let mut alice = app.connect("alice").await;
    assert_eq!(alice.send_acked(&room.id, "m11", "after restart").await, 11);
    // A retry of a message from before the restart is still recognised.
    assert_eq!(alice.send_acked(&room.id, "m3", "x").await, 3);
    let history = app.client("bob").history_after(&room.id, 0).await.unwrap();
    assert_eq!(seqs(&history), (1..=11).collect::<Vec<_>>());
    assert!(history[10].created_at >= history[9].created_at);
}

#[tokio::test]
async fn a_reconnecting_client_receives_exactly_what_it_missed() {
    let app = TestApp::spawn().await;
    let room = group(&app, "trio", &["alice", "bob", "carol"]).await;
    let mut alice = app.connect("alice").await;
    let mut carol = app.connect("carol").await;
    for i in 1..=5 {
        alice.send_acked(&room.id, &format!("a{i}"), "before").await;
    }
    let seen = carol.messages(&room.id, 5).await;
    drop(carol);

    let mut bob = app.connect("bob").await;
    for i in 1..=5 {
        alice
            .send_acked(&room.id, &format!("b{i}"), "while away")
            .await;
        bob.send_acked(&room.id, &format!("c{i}"), "while away")
            .await;
    }

    let last_seen = seen.last().unwrap().seq;
    let resume = BTreeMap::from([(room.id.clone(), last_seen)]);
    let (mut carol, replayed) = TestConn::connect_and_replay(&app.client("carol"), &resume).await;
    assert_eq!(seqs(&replayed), (6..=15).collect::<Vec<_>>());

    alice.send_acked(&room.id, "live", "back again").await;
    let live = carol.messages(&room.id, 1).await;
    assert_eq!(live[0].seq, 16);
    carol.no_message_within(Duration::from_millis(400)).await;
}

/// Resume while the room is busy: whatever races between replay and live traffic, the
/// client gets every message once, in order.
#[tokio::test]
async fn resume_during_traffic_has_no_gap_and_no_overlap() {
    const TOTAL: usize = 300;
    let app = TestApp::spawn().await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;

    let room_id = room.id.clone();
    let sender = tokio::spawn(async move {
        let (mut tx, mut rx) = alice.conn.split();
        for i in 0..TOTAL {
            tx.send_message(&room_id, &format!("m{i}"), "busy")
                .await
                .unwrap();
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut acks = 0;
        while acks < TOTAL {
            if let ServerFrame::Ack { .. } = rx.event(WAIT).await.unwrap() {
                acks += 1;
            }
        }
    });

    let mut log = RoomLog::default();
    let mut wire_order = Vec::new();
    for m in bob.messages(&room.id, 40).await {
        wire_order.push(m.seq);
        log.insert(m);
    }
    drop(bob);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let resume = BTreeMap::from([(room.id.clone(), log.contiguous())]);
    let (mut bob, replayed) = TestConn::connect_and_replay(&app.client("bob"), &resume).await;
    for m in replayed {
        wire_order.push(m.seq);
        log.insert(m);
    }
    while log.len() < TOTAL {
        let m = bob.messages(&room.id, 1).await.remove(0);
        wire_order.push(m.seq);
        log.insert(m);
    }
    sender.await.unwrap();
    assert_eq!(log.duplicates(), 0, "a message arrived twice");
    assert_eq!(log.seqs(), (1..=TOTAL as Seq).collect::<Vec<_>>());
    assert!(
        wire_order.windows(2).all(|w| w[0] < w[1]),
        "out of order on the wire"
    );
}

#[tokio::test]
async fn created_at_never_decreases_when_the_clock_steps_back() {
    let dir = Arc::new(tempfile::TempDir::new().unwrap());
    let settings = test_settings(dir.path());
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = TestApp::start(settings, dir, Some(clock.clone())).await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut alice = app.connect("alice").await;

    alice.send_acked(&room.id, "1", "first").await;
    clock.advance(ChronoDuration::hours(-1));
    alice
        .send_acked(&room.id, "2", "clock went back an hour")
        .await;
    clock.advance(ChronoDuration::hours(2));
    alice.send_acked(&room.id, "3", "clock is ahead").await;

    let history = app.client("bob").history_after(&room.id, 0).await.unwrap();
    assert_eq!(seqs(&history), vec![1, 2, 3]);
    assert_eq!(
        history[1].created_at, history[0].created_at,
        "held at the previous stamp"
    );
    assert!(history[2].created_at > history[1].created_at);
}

/// Subscriptions belong to the node, not to connections: one per room with local members
/// and one per connected user, however many connections; gone shortly after the last leaves.
#[tokio::test]
async fn bus_subscriptions_are_counted_per_node() {
    let app = TestApp::spawn().await;
    let room = group(&app, "shared", &["ann", "ben", "cat"]).await;
    let _other = app.client("ann").open_direct("ben").await.unwrap();
    let mut conns = Vec::new();
    for user in ["ann", "ann", "ben", "cat", "cat"] {
        conns.push(app.connect(user).await);
    }
    // 2 rooms + 3 users + the presence of 3 users (each the others' contact), for 5
    // connections.
    assert_eq!(app.node.hub.subscription_count(), 8);
    assert_eq!(app.node.hub.connection_count(), 5);
    conns[0]
        .send_acked(&room.id, "x", "one frame for all")
        .await;
    for conn in &mut conns {
        assert_eq!(
            conn.messages(&room.id, 1).await[0].text,
            "one frame for all"
        );
    }
    drop(conns);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.node.hub.subscription_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "subscriptions outlived their users"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.node.hub.connection_count(), 0);
}

/// A resume that comes after live traffic was released (the client was slow to send it)
/// replays only what this connection has not been sent: no repeats, no step back in seq.
#[tokio::test]
async fn a_late_resume_never_repeats_what_the_connection_was_sent() {
    let app = TestApp::spawn().await; // resume_wait_ms = 500
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut bob = app.client("bob").connect().await.unwrap();
    assert!(matches!(
        bob.event(WAIT).await.unwrap(),
        ServerFrame::Welcome { .. }
    ));
    let mut alice = app.connect("alice").await;
    for i in 1..=3 {
        alice.send_acked(&room.id, &format!("a{i}"), "early").await;
    }
    // No resume yet: after the wait these come live.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        if let ServerFrame::Message(m) = bob.event(WAIT).await.unwrap() {
            seen.push(m.seq);
        }
    }
    bob.resume(&BTreeMap::from([(room.id.clone(), 0)]))
        .await
        .unwrap();
    loop {
        match bob.event(WAIT).await.unwrap() {
            ServerFrame::Message(m) => seen.push(m.seq),
            ServerFrame::Resumed { .. } => break,
            other => panic!("{other:?}"),
        }
    }
    alice.send_acked(&room.id, "a4", "after the resume").await;
    loop {
        if let ServerFrame::Message(m) = bob.event(WAIT).await.unwrap() {
            seen.push(m.seq);
            if m.seq == 4 {
                break;
            }
        }
    }
    assert_eq!(
        seen,
        vec![1, 2, 3, 4],
        "each seq once, in order, on the wire"
    );
}

/// Membership changes in quick succession (added, then removed at once) end in the state
/// the store holds, whatever order the events are handled in.
#[tokio::test]
async fn added_then_removed_at_once_ends_outside_the_room() {
    let app = TestApp::spawn().await;
    let mut bob = app.connect("bob").await;
    let alice = app.client("alice");
    let room = alice.create_group("flicker", &["bob"]).await.unwrap();
    let removed = app
        .delete_as("alice", &format!("/v1/rooms/{}/members/bob", room.id))
        .await;
    assert_eq!(removed.status, 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alice_ws = app.connect("alice").await;
    alice_ws
        .send_acked(&room.id, "secret", "bob must not see this")
        .await;
    bob.no_message_within(Duration::from_millis(500)).await;
    assert!(
        bob.conn_rooms(&app).is_empty(),
        "bob's connection is in no room"
    );
}
