//! Rooms over REST: direct rooms, groups and their members, the room list, read positions,
//! history paging.

use std::time::Duration;

use chatd::domain::RoomKind;
use chatd_client::ServerFrame;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_direct_room_is_the_same_whoever_asks_however_often() {
    let app = TestApp::spawn().await;
    let open = |user: &'static str, peer: &str| {
        app.post_json_as(user, "/v1/rooms/direct", json!({"peer": peer}))
    };
    let first = open("alice", "bob").await;
    assert_eq!(first.status, 201);
    let first: chatd::domain::Room = first.json();
    for (user, peer) in [("alice", "bob"), ("bob", "alice"), ("bob", "alice")] {
        let again = open(user, peer).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.json::<chatd::domain::Room>().id, first.id);
    }
    assert_eq!(first.kind, RoomKind::Direct);
    assert_eq!(first.members.len(), 2);
    let carol = app.client("carol").open_direct("alice").await.unwrap();
    assert_ne!(carol.id, first.id);
}

#[tokio::test]
async fn owners_manage_groups_and_non_members_cannot() {
    let app = TestApp::spawn().await;
    let room = group(&app, "team", &["alice", "bob"]).await;
    assert_eq!(room.name.as_deref(), Some("team"));
    let mut dave = app.connect("dave").await;
    let mut bob = app.connect("bob").await;

    // bob, a plain member, may not add anyone; alice (who created it: the owner) adds dave,
    // whose live connection joins the room.
    let members_path = format!("/v1/rooms/{}/members", room.id);
    let r = app
        .post_json_as("bob", &members_path, json!({"members": ["dave"]}))
        .await;
    assert_eq!(r.status, 403);
    let r = app
        .post_json_as(
            "alice",
            &members_path,
            json!({"members": ["dave", "carol"]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let joined = dave
        .wait_for(|e| match e {
            ServerFrame::RoomAdded { room } => Some(room),
            _ => None,
        })
        .await;
    assert_eq!(joined.id, room.id);
    let members = bob
        .wait_for(|e| match e {
            ServerFrame::Members { members, .. } => Some(members),
            _ => None,
        })
        .await;
    assert_eq!(
        members.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        ["alice", "bob", "carol", "dave"]
    );
    bob.send_acked(&room.id, "hi", "welcome dave").await;
    assert_eq!(dave.messages(&room.id, 1).await[0].text, "welcome dave");

    // A non-member cannot add anyone.
    let r = app
        .post_json_as("eve", &members_path, json!({"members": ["eve"]}))
        .await;
    assert_eq!(r.status, 404);

    // dave is removed: told so, and gets nothing more.
    let r = app
        .delete_as("alice", &format!("{members_path}/dave"))
        .await;
    assert_eq!(r.status, 204);
    dave.wait_for(|e| matches!(e, ServerFrame::RoomRemoved { .. }).then_some(()))
        .await;
    bob.send_acked(&room.id, "bye", "dave is gone").await;
    dave.no_message_within(Duration::from_millis(300)).await;
    let r = app
        .get_json_as("dave", &format!("/v1/rooms/{}/messages", room.id))
        .await;
    assert_eq!(r.status, 404);

    // Direct rooms keep their two members.
    let direct = app.client("alice").open_direct("bob").await.unwrap();
    let r = app
        .post_json_as(
            "alice",
            &format!("/v1/rooms/{}/members", direct.id),
            json!({"members": ["carol"]}),
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn room_list_shows_last_message_read_position_and_unread() {
    let app = TestApp::spawn().await;
    let quiet = group(&app, "quiet", &["alice", "bob"]).await;
    let busy = app.client("alice").open_direct("bob").await.unwrap();
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    for i in 1..=3 {
        bob.send_acked(&busy.id, &format!("b{i}"), &format!("msg {i}"))
            .await;
    }
    alice.send_acked(&busy.id, "a1", "mine").await;

    let rooms = app.client("alice").rooms().await.unwrap();
    assert_eq!(rooms.len(), 2);
    assert_eq!(rooms[0].room.id, busy.id, "most recently active first");
    assert_eq!(rooms[0].last_seq, 4);
    assert_eq!(rooms[0].last_message.as_ref().unwrap().message.text, "mine");
    assert_eq!(
        (rooms[0].read_seq, rooms[0].unread),
        (0, 3),
        "own messages are not unread"
    );
    assert_eq!(rooms[1].room.id, quiet.id);
    assert!(rooms[1].last_message.is_none());

    // Reading over the WebSocket moves the position and tells the other members.
    alice
        .send_json(json!({"type": "read", "room": busy.id, "seq": 2}))
        .await;
    let receipt = bob
        .wait_for(|e| match e {
            ServerFrame::Receipt { user, read_seq, .. } => Some((user, read_seq)),
            _ => None,
        })
        .await;
    assert_eq!((receipt.0.as_str(), receipt.1), ("alice", 2));
    let rooms = app.client("alice").rooms().await.unwrap();
    assert_eq!((rooms[0].read_seq, rooms[0].unread), (2, 1));

    // Never backwards, never past the end (REST).
    for (seq, expect) in [(1, 2), (99, 4)] {
        let r = app
            .post_json_as(
                "alice",
                &format!("/v1/rooms/{}/read", busy.id),
                json!({"seq": seq}),
            )
            .await;
        assert_eq!((r.status, &r.body["readSeq"]), (200, &json!(expect)));
    }
}

#[tokio::test]
async fn history_pages_by_seq_and_by_time_both_ways() {
    let app = TestApp::spawn().await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut alice = app.connect("alice").await;
    for i in 1..=30 {
        alice
            .send_acked(&room.id, &format!("m{i}"), &format!("{i}"))
            .await;
    }
    let bob = app.client("bob");
    let (page, more) = bob.history_page(&room.id, "limit=10").await.unwrap();
    assert_eq!((seqs(&page), more), ((1..=10).collect(), true));
    let (page, more) = bob.history_page(&room.id, "after=25").await.unwrap();
    assert_eq!((seqs(&page), more), ((26..=30).collect(), false));
    let (page, more) = bob
        .history_page(&room.id, "order=desc&limit=5")
        .await
        .unwrap();
    assert_eq!((seqs(&page), more), (vec![30, 29, 28, 27, 26], true));
    let (page, _) = bob
        .history_page(&room.id, "before=11&order=desc&limit=3")
        .await
        .unwrap();
    assert_eq!(seqs(&page), vec![10, 9, 8]);
    let (page, _) = bob
        .history_page(&room.id, "after=5&before=9")
        .await
        .unwrap();
    assert_eq!(seqs(&page), vec![6, 7, 8]);

    let all = bob.history_after(&room.id, 0).await.unwrap();
    let t = chatd::domain::timestamp::format(&all[14].created_at);
    let since = bob
        .history_page(&room.id, &format!("since={}&limit=200", urlencode(&t)))
        .await
        .unwrap()
        .0;
    assert!(since.iter().all(|m| m.created_at >= all[14].created_at));
    assert!(since.iter().any(|m| m.seq == 15));
    let until = bob
        .history_page(&room.id, &format!("until={}&limit=200", urlencode(&t)))
        .await
        .unwrap()
        .0;
    assert!(until.iter().all(|m| m.created_at < all[14].created_at));
    assert_eq!(since.len() + until.len(), 30);
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}
