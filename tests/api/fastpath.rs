//! The send's fast path in a cluster: one database round trip per message in the common
//! case (counted by the MongoDB driver's command monitoring, `chatd_mongodb_commands_total`),
//! and what the memberships it trusts without the store may cost: nothing beyond the bus's
//! reach.

use std::collections::BTreeMap;

use chatd::domain::RoomId;
use chatd::protocol::{ClientFrame, SendFrame};
use chatd_client::ServerFrame;
use serde_json::json;

use crate::{
    alive::{Deployment, Live},
    helpers::reply,
    ops::scrape,
};

/// The node's counts of one labelled counter family so far, by the label's value
/// (`family{label="value"}`).
async fn counts(d: &Deployment, node: usize, family: &str, label: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{family}{{{label}=\"");
    scrape(&d.base(node))
        .await
        .into_iter()
        .filter_map(|(series, n)| {
            let value = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            Some((value.to_owned(), n))
        })
        .collect()
}

/// The node's MongoDB commands so far, by command name.
async fn commands(d: &Deployment, node: usize) -> BTreeMap<String, f64> {
    counts(d, node, "chatd_mongodb_commands_total", "command").await
}

/// Every store call of the node so far, by method (`chatd_store_calls_total`).
async fn all_store_calls(d: &Deployment, node: usize) -> BTreeMap<String, f64> {
    counts(d, node, "chatd_store_calls_total", "call").await
}

fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n != 0.0)
        .collect()
}

async fn group(d: &Deployment, node: usize, owner: &str, members: &[&str]) -> RoomId {
    let client = d.client(node, owner);
    let members: Vec<String> = members.iter().map(|m| d.user(m)).collect();
    let r = reply(
        reqwest::Client::new()
            .post(format!("{}/v1/rooms", client.base()))
            .bearer_auth(client.token())
            .json(&json!({"name": "fast", "members": members})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    RoomId::parse(r.body["id"].as_str().unwrap()).unwrap()
}

/// The answer to a send: its seq, or the error code.
async fn send(live: &mut Live, room: &RoomId, id: &str) -> Result<u64, String> {
    live.send(json!({"type": "send", "room": room, "clientMsgId": id, "text": id}))
        .await;
    let answer = live
        .next_matching(|f| match f {
            ServerFrame::Ack { client_msg_id, .. } => client_msg_id == id,
            ServerFrame::Error(e) => e.client_msg_id.as_deref() == Some(id),
            _ => false,
        })
        .await;
    match answer {
        ServerFrame::Ack { seq, .. } => Ok(seq),
        ServerFrame::Error(e) => Err(e.code.as_str().to_owned()),
        other => panic!("{other:?}"),
    }
}

/// After the first message of a room (which reads the membership and the newest seq), each
/// message is one insert on its node and nothing on the others: they deliver from the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_costs_one_database_round_trip_in_the_common_case() {
    let d = Deployment::cluster(3, &[("CHATD__STORE__MONGODB_COUNT_COMMANDS", "true")]);
    let room = group(&d, 0, "alice", &["bob", "carol"]).await;
    let mut alice = d.live(0, "alice").await;
    let mut bob = d.live(1, "bob").await;
    let _carol = d.live(2, "carol").await;
    let first = send(&mut alice, &room, "warm").await.unwrap();
    bob.next_matching(|f| matches!(f, ServerFrame::Message(m) if m.seq == first))
        .await;
    let before: Vec<_> = futures_util::future::join_all((0..3).map(|n| commands(&d, n))).await;
    const N: u64 = 20;
    let mut last = first;
    for i in 0..N {
        last = send(&mut alice, &room, &format!("m{i}")).await.unwrap();
    }
    assert_eq!(last, first + N);
    bob.next_matching(|f| matches!(f, ServerFrame::Message(m) if m.seq == last))
        .await;
    let after: Vec<_> = futures_util::future::join_all((0..3).map(|n| commands(&d, n))).await;
    let sender = moved(&before[0], &after[0]);
    assert_eq!(
        sender,
        BTreeMap::from([("insert".to_owned(), N as f64)]),
        "one insert per message, nothing else"
    );
    for n in 1..3 {
        assert_eq!(
            moved(&before[n], &after[n]),
            BTreeMap::new(),
            "node {n} needs no store to deliver"
        );
    }
}

/// Two nodes writing to one room: each sometimes finds its remembered seq taken and reads
/// the newest again; every message still gets its own seq, with none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_remember_stale_seqs_still_number_without_gaps() {
    let d = Deployment::cluster(2, &[]);
    let room = group(&d, 0, "alice", &["bob"]).await;
    let mut alice = d.live(0, "alice").await;
    let mut bob = d.live(1, "bob").await;
    let mut seqs = Vec::new();
    for i in 0..10 {
        seqs.push(send(&mut alice, &room, &format!("a{i}")).await.unwrap());
        seqs.push(send(&mut bob, &room, &format!("b{i}")).await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    let history = d
        .get(0, "alice", &format!("/v1/rooms/{room}/messages"))
        .await;
    let times: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["createdAt"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "createdAt never decreases with seq: {times:?}"
    );
}

/// A member removed on one node can no longer send (or read) on another once that node hears
/// of it: here bob uses REST only on a node that follows the room through carol's connection,
/// so only the room's members event can tell that node (docs: ARCHITECTURE.md, the fast path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_cannot_send_once_their_node_hears_of_it() {
    let d = Deployment::cluster(2, &[]);
    let room = group(&d, 0, "alice", &["bob", "carol"]).await;
    let mut carol = d.live(1, "carol").await;
    let rest = |node: usize,
                user: &str,
                method: reqwest::Method,
                path: String,
                body: Option<serde_json::Value>| {
        let client = d.client(node, user);
        let request = reqwest::Client::new()
            .request(method, format!("{}{path}", client.base()))
            .bearer_auth(client.token());
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        reply(request)
    };
    let post = |id: &str| {
        rest(
            1,
            "bob",
            reqwest::Method::POST,
            format!("/v1/rooms/{room}/messages"),
            Some(json!({"clientMsgId": id, "text": id})),
        )
    };
    // Bob's node now trusts his membership without the store.
    assert_eq!(post("before").await.status, 201);
    assert_eq!(post("again").await.status, 201);
    let removed = rest(
        0,
        "alice",
        reqwest::Method::DELETE,
        format!("/v1/rooms/{room}/members/{}", d.user("bob")),
        None,
    )
    .await;
    assert_eq!(removed.status, 204, "{:?}", removed.body);
    // Bob's node hears of it: carol is told the new members.
    carol
        .next_matching(|f| matches!(f, ServerFrame::Members { room: r, members, .. } if *r == room && members.len() == 2))
        .await;
    let after = post("after").await;
    assert_eq!(
        (after.status, after.code()),
        (404, "room_not_found"),
        "{:?}",
        after.body
    );
    let read = rest(
        1,
        "bob",
        reqwest::Method::GET,
        format!("/v1/rooms/{room}/messages"),
        None,
    )
    .await;
    assert_eq!(read.status, 404);
    let history = d
        .get(0, "alice", &format!("/v1/rooms/{room}/messages"))
        .await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["before", "again"]);
}

/// The node's calls of one store method so far.
async fn store_calls(d: &Deployment, node: usize, call: &str) -> f64 {
    all_store_calls(d, node)
        .await
        .get(call)
        .copied()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_are_stored_in_batches_and_answered_in_order_on_sqlite() {
    pipelined_sends_are_stored_in_batches_and_answered_in_order(&Deployment::single(&[])).await;
}

/// In MongoDB a batch's messages to one room in a row are one `insert` command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_are_stored_in_batches_and_answered_in_order_in_a_cluster() {
    let d = Deployment::cluster(2, &[("CHATD__STORE__MONGODB_COUNT_COMMANDS", "true")]);
    let before = commands(&d, 0).await;
    let sent = pipelined_sends_are_stored_in_batches_and_answered_in_order(&d).await;
    let inserts = moved(&before, &commands(&d, 0).await)
        .get("insert")
        .copied()
        .unwrap_or(0.0);
    // The rooms and memberships the test creates are a few more.
    assert!(
        inserts < (sent / 4) as f64,
        "{inserts} inserts for {sent} pipelined sends"
    );
}

/// Sends written back to back on one connection: stored as a few batches rather than one
/// write each, answered one by one in the order sent (a refused one among them included),
/// and stored in that order. Returns how many were sent.
async fn pipelined_sends_are_stored_in_batches_and_answered_in_order(d: &Deployment) -> usize {
    const N: usize = 200;
    let (empty, stranger, repeat, repeated) = (50, 100, 150, 10);
    let rooms = [
        group(d, 0, "alice", &["bob"]).await,
        group(d, 0, "alice", &["carol"]).await,
    ];
    let not_hers = group(d, 0, "bob", &["carol"]).await;
    let mut alice = d.live(0, "alice").await;
    let frames: Vec<ClientFrame> = (0..N)
        .map(|i| {
            let (room, id, text) = match i {
                _ if i == empty => (&rooms[0], format!("p{i}"), " ".to_owned()),
                _ if i == stranger => (&not_hers, format!("p{i}"), format!("m{i}")),
                _ if i == repeat => (&rooms[0], format!("p{repeated}"), "again".to_owned()),
                _ => (&rooms[room_of(i)], format!("p{i}"), format!("m{i}")),
            };
            ClientFrame::Send(SendFrame {
                room: room.to_string(),
                client_msg_id: id,
                text,
                reply_to: None,
            })
        })
        .collect();
    let batches_before = store_calls(d, 0, "append_batch").await;
    alice.conn.send_frames(&frames).await.unwrap();
    let mut answers = Vec::new();
    while answers.len() < N {
        let answer = alice
            .next_matching(|f| matches!(f, ServerFrame::Ack { .. } | ServerFrame::Error(_)))
            .await;
        answers.push(answer);
    }
    let batches = store_calls(d, 0, "append_batch").await - batches_before;
    assert!(
        (1.0..(N / 4) as f64).contains(&batches),
        "{batches} store writes for {N} pipelined sends"
    );
    let mut seqs: [Vec<u64>; 2] = Default::default();
    for (i, answer) in answers.iter().enumerate() {
        let wanted = if i == repeat { repeated } else { i };
        match answer {
            ServerFrame::Error(e) if i == empty || i == stranger => {
                let code = if i == empty {
                    "empty_text"
                } else {
                    "room_not_found"
                };
                assert_eq!(e.code.as_str(), code, "answer {i}");
                assert_eq!(e.client_msg_id.as_deref(), Some(&*format!("p{i}")));
            }
            ServerFrame::Ack {
                client_msg_id,
                seq,
                duplicate,
                ..
            } if i != empty && i != stranger => {
                assert_eq!(
                    *client_msg_id,
                    format!("p{wanted}"),
                    "answer {i} out of order"
                );
                assert_eq!(*duplicate, i == repeat, "answer {i}");
                if i != repeat {
                    seqs[room_of(i)].push(*seq);
                }
            }
            other => panic!("answer {i}: {other:?}"),
        }
    }
    for (room, seqs) in rooms.iter().zip(&seqs) {
        assert_eq!(*seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        let history = d
            .get(0, "alice", &format!("/v1/rooms/{room}/messages?limit=200"))
            .await;
        let stored: Vec<&str> = history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["clientMsgId"].as_str().unwrap())
            .collect();
        let sent: Vec<String> = (0..N)
            .filter(|&i| i != empty && i != stranger && i != repeat)
            .filter(|&i| frames_room(&frames[i]) == room.as_str())
            .map(|i| format!("p{i}"))
            .collect();
        assert_eq!(stored, sent, "stored in the order sent");
    }
    N
}

/// Which of the two rooms the `i`th send goes to: runs of 20 in one room.
fn room_of(i: usize) -> usize {
    (i / 20) % 2
}

fn frames_room(frame: &ClientFrame) -> &str {
    match frame {
        ClientFrame::Send(send) => &send.room,
        other => panic!("{other:?}"),
    }
}

/// What connecting and resuming every room cost `user` in store calls, by method. The
/// user's other device is live meanwhile, so the node follows the rooms already (a room's
/// first connection on a node also reads its last seq, once per node rather than per client).
async fn reconnect_cost(d: &Deployment, user: &str, rooms: &[RoomId]) -> BTreeMap<String, f64> {
    let _other_device = d.live(0, user).await;
    let before = all_store_calls(d, 0).await;
    let mut conn = d.client(0, user).connect().await.unwrap();
    let held: BTreeMap<RoomId, u64> = rooms.iter().map(|r| (r.clone(), 1)).collect();
    conn.resume(&held).await.unwrap();
    let mut replayed = 0;
    loop {
        match conn.event(crate::helpers::WAIT).await.unwrap() {
            ServerFrame::Message(_) => replayed += 1,
            ServerFrame::Resumed { rooms: resumed } => {
                assert_eq!(resumed.len(), rooms.len());
                break;
            }
            _ => {}
        }
    }
    assert_eq!(replayed, rooms.len(), "one message missed per room");
    moved(&before, &all_store_calls(d, 0).await)
}

/// A reconnect storm's cost per client: the same store calls for a user in one room as for
/// a user in twenty (the rooms, memberships and replays are read for all rooms at once), on
/// SQLite and on MongoDB; and the same for a page of the room list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_and_a_room_list_cost_the_same_store_calls_in_one_room_as_in_twenty() {
    for d in [Deployment::single(&[]), Deployment::cluster(2, &[])] {
        let mut rooms_of = Vec::new();
        for (user, count) in [("solo", 1), ("busy", 20)] {
            let mut rooms = Vec::new();
            for i in 0..count {
                let room = group(&d, 0, user, &[&format!("peer{i}")]).await;
                let sender = d.client(0, user);
                sender.post_message(&room, "m1", "first").await.unwrap();
                sender.post_message(&room, "m2", "second").await.unwrap();
                rooms.push(room);
            }
            rooms_of.push((user, rooms));
        }
        // One after the other: the counters are the node's.
        let mut costs = Vec::new();
        for (user, rooms) in &rooms_of {
            costs.push(reconnect_cost(&d, user, rooms).await);
        }
        assert_eq!(costs[0], costs[1], "one room, then twenty");
        let mut listings = Vec::new();
        for (user, rooms) in &rooms_of {
            let before = all_store_calls(&d, 0).await;
            let listed = d.get(0, user, "/v1/rooms").await;
            assert_eq!(listed["rooms"].as_array().unwrap().len(), rooms.len());
            listings.push(moved(&before, &all_store_calls(&d, 0).await));
        }
        assert_eq!(listings[0], listings[1], "room list: one room, then twenty");
    }
}
