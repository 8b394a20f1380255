//! Edits, deletes, reactions, replies and group roles, end to end: the same scenarios on one
//! node (SQLite, in-process bus) and on three (MongoDB-wire server, Redis), over real
//! sockets to real chatd processes, with users spread over the nodes. Every device's state is
//! the fold of the entries it received (the protocol crate's `Fold`, as the SDK folds) and
//! must equal `view=state` history.

use std::collections::BTreeMap;

use chatd::domain::{EntryKind, Message, RoomId, Seq, UserId};
use chatd_client::ServerFrame;
use chatd_protocol::state::{Fold, MessageState};
use serde_json::{Value, json};

use crate::{
    alive::{Deployment, Live},
    helpers::{WAIT, reply},
};

fn one_node() -> Deployment {
    Deployment::single(&[])
}

fn three_nodes() -> Deployment {
    Deployment::cluster(3, &[])
}

/// A write frame (`send`, `edit`, `delete`, `react`) and its ack's seq; panics on an error.
async fn write(live: &mut Live, frame: Value) -> Seq {
    let id = frame["clientMsgId"].as_str().unwrap().to_owned();
    live.send(frame).await;
    match live.next_matching(|f| answers(f, &id)).await {
        ServerFrame::Ack { seq, .. } => seq,
        other => panic!("{id}: {other:?}"),
    }
}

/// The error code a write frame gets.
async fn refused(live: &mut Live, frame: Value) -> String {
    let id = frame["clientMsgId"].as_str().unwrap().to_owned();
    live.send(frame).await;
    match live.next_matching(|f| answers(f, &id)).await {
        ServerFrame::Error(e) => e.code.as_str().to_owned(),
        other => panic!("{id} was not refused: {other:?}"),
    }
}

fn answers(frame: &ServerFrame, id: &str) -> bool {
    match frame {
        ServerFrame::Ack { client_msg_id, .. } => client_msg_id == id,
        ServerFrame::Error(e) => e.client_msg_id.as_deref() == Some(id),
        _ => false,
    }
}

/// The entries of `room` this connection receives up to seq `last`, in arrival order.
async fn entries_until(live: &mut Live, room: &RoomId, last: Seq) -> Vec<Message> {
    let mut got = Vec::new();
    while got.last().is_none_or(|m: &Message| m.seq < last) {
        let frame = live
            .next_matching(|f| matches!(f, ServerFrame::Message(m) if m.room == *room))
            .await;
        if let ServerFrame::Message(m) = frame {
            got.push(m);
        }
    }
    got
}

fn fold(entries: &[Message], viewer: &UserId) -> Vec<MessageState> {
    let mut fold = Fold::new();
    entries.iter().for_each(|e| fold.apply(e));
    fold.states(viewer)
}

/// `view=state` history of `room` as `user` sees it.
async fn state(d: &Deployment, node: usize, user: &str, room: &RoomId) -> Vec<MessageState> {
    let body = d
        .get(node, user, &format!("/v1/rooms/{room}/messages?view=state"))
        .await;
    serde_json::from_value(body["messages"].clone()).unwrap()
}

async fn log(d: &Deployment, node: usize, user: &str, room: &RoomId) -> Vec<Message> {
    let body = d
        .get(node, user, &format!("/v1/rooms/{room}/messages?limit=200"))
        .await;
    serde_json::from_value(body["messages"].clone()).unwrap()
}

fn send(room: &RoomId, id: &str, text: &str) -> Value {
    json!({"type": "send", "room": room, "clientMsgId": id, "text": text})
}

fn edit(room: &RoomId, id: &str, seq: Seq, text: &str) -> Value {
    json!({"type": "edit", "room": room, "clientMsgId": id, "seq": seq, "text": text})
}

fn delete(room: &RoomId, id: &str, seq: Seq) -> Value {
    json!({"type": "delete", "room": room, "clientMsgId": id, "seq": seq})
}

fn react(room: &RoomId, id: &str, seq: Seq, emoji: &str) -> Value {
    json!({"type": "react", "room": room, "clientMsgId": id, "seq": seq, "emoji": emoji})
}

// ---------------------------------------------------------------------------------------------

/// Two devices of the sender, on two nodes, edit one message at once: every device ends
/// with the text of the edit with the higher seq, and so does history.
async fn racing_edits_end_with_the_higher_seq(d: Deployment) {
    let (alice, bob) = (d.user("alice"), d.user("bob"));
    let room = d.client(0, "alice").open_direct(&bob).await.unwrap().id;
    let mut phone = d.live(0, "alice").await;
    let mut laptop = d.live(1, "alice").await;
    let mut reader = d.live(2, "bob").await;
    let seq = write(&mut phone, send(&room, "m1", "draft")).await;
    // Both edits leave before either is answered.
    phone
        .send(edit(&room, "e-phone", seq, "from the phone"))
        .await;
    laptop
        .send(edit(&room, "e-laptop", seq, "from the laptop"))
        .await;
    let a = match phone.next_matching(|f| answers(f, "e-phone")).await {
        ServerFrame::Ack { seq, .. } => seq,
        other => panic!("{other:?}"),
    };
    let b = match laptop.next_matching(|f| answers(f, "e-laptop")).await {
        ServerFrame::Ack { seq, .. } => seq,
        other => panic!("{other:?}"),
    };
    let winner = if a > b {
        "from the phone"
    } else {
        "from the laptop"
    };
    let last = a.max(b);
    let alice = UserId::parse(&alice).unwrap();
    let bob = UserId::parse(&bob).unwrap();
    for (live, who) in [
        (&mut phone, &alice),
        (&mut laptop, &alice),
        (&mut reader, &bob),
    ] {
        let entries = entries_until(live, &room, last).await;
        let states = fold(&entries, who);
        assert_eq!(states.len(), 1, "{entries:?}");
        assert_eq!(states[0].message.text, winner);
    }
    let history = state(&d, 2, "bob", &room).await;
    assert_eq!(history, fold(&log(&d, 1, "bob", &room).await, &bob));
    assert_eq!(history[0].message.text, winner);
    assert!(history[0].edited_at.is_some());
}

#[tokio::test]
async fn racing_edits_end_with_the_higher_seq_on_one_node() {
    racing_edits_end_with_the_higher_seq(one_node()).await;
}

#[tokio::test]
async fn racing_edits_end_with_the_higher_seq_across_nodes() {
    racing_edits_end_with_the_higher_seq(three_nodes()).await;
}

/// A client that holds 1..3 and was offline during an edit, a delete and three reactions
/// gets exactly those entries on resume, in order, once; its state equals history's.
async fn changes_made_offline_arrive_on_resume(d: Deployment) {
    let (bob, carol) = (d.user("bob"), d.user("carol"));
    let alice_client = d.client(0, "alice");
    let room = alice_client
        .create_group("trip", &[&bob, &carol])
        .await
        .unwrap()
        .id;
    let mut alice = d.live(0, "alice").await;
    let mut carol_live = d.live(2, "carol").await;
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        write(&mut alice, send(&room, &format!("m{i}"), text)).await;
    }
    // bob held 1..3 and went away; meanwhile:
    write(&mut alice, edit(&room, "e1", 1, "one, edited")).await;
    write(&mut alice, delete(&room, "d2", 2)).await;
    write(&mut alice, react(&room, "r1", 3, "👍")).await;
    write(&mut carol_live, react(&room, "r2", 3, "👍")).await;
    write(&mut carol_live, react(&room, "r3", 1, "🎉")).await;

    let mut conn = d.client(1, "bob").connect().await.unwrap();
    assert!(matches!(
        conn.event(WAIT).await.unwrap(),
        ServerFrame::Welcome { .. }
    ));
    conn.resume(&BTreeMap::from([(room.clone(), 3)]))
        .await
        .unwrap();
    let mut replayed = Vec::new();
    loop {
        match conn.event(WAIT).await.unwrap() {
            ServerFrame::Message(m) => replayed.push(m),
            ServerFrame::Resumed { .. } => break,
            _ => {}
        }
    }
    let kinds: Vec<(Seq, EntryKind)> = replayed.iter().map(|m| (m.seq, m.kind)).collect();
    let (edit, delete, react) = (EntryKind::Edit, EntryKind::Delete, EntryKind::React);
    assert_eq!(
        kinds,
        [(4, edit), (5, delete), (6, react), (7, react), (8, react)]
    );
    // What bob held, then what the resume brought.
    let bob_id = UserId::parse(&bob).unwrap();
    let held = log(&d, 1, "bob", &room).await;
    let mut entries: Vec<Message> = held.into_iter().filter(|m| m.seq <= 3).collect();
    entries.extend(replayed);
    let mine = fold(&entries, &bob_id);
    assert_eq!(mine, state(&d, 2, "bob", &room).await);
    assert_eq!(mine[0].message.text, "one, edited");
    assert!(mine[1].message.deleted);
    let thumbs = &mine[2].reactions;
    assert_eq!((thumbs[0].emoji.as_str(), thumbs[0].count), ("👍", 2));
}

#[tokio::test]
async fn changes_made_offline_arrive_on_resume_on_one_node() {
    changes_made_offline_arrive_on_resume(one_node()).await;
}

#[tokio::test]
async fn changes_made_offline_arrive_on_resume_across_nodes() {
    changes_made_offline_arrive_on_resume(three_nodes()).await;
}

/// Who may do what: only the sender edits; a member cannot delete another's message, an
/// admin can; reacting twice changes nothing; targets must be standing messages.
async fn changes_are_authorized(d: Deployment) {
    let (bob, carol) = (d.user("bob"), d.user("carol"));
    let room = d
        .client(0, "alice")
        .create_group("team", &[&bob, &carol])
        .await
        .unwrap()
        .id;
    let mut alice = d.live(0, "alice").await;
    let mut bob_live = d.live(1, "bob").await;
    let mut carol_live = d.live(2, "carol").await;
    let carols = write(&mut carol_live, send(&room, "c1", "carol's")).await;
    assert_eq!(
        refused(&mut bob_live, edit(&room, "x1", carols, "bob's now")).await,
        "forbidden"
    );
    assert_eq!(
        refused(&mut bob_live, delete(&room, "x2", carols)).await,
        "forbidden"
    );
    // Reacting twice (two clientMsgIds): one reaction.
    write(&mut bob_live, react(&room, "r1", carols, "👍")).await;
    let twice = write(&mut bob_live, react(&room, "r2", carols, "👍")).await;
    // A change names a message, not a change; seqs past the end name nothing.
    assert_eq!(
        refused(&mut bob_live, react(&room, "x3", twice, "👍")).await,
        "message_not_found"
    );
    assert_eq!(
        refused(&mut bob_live, edit(&room, "x4", 999, "nothing")).await,
        "message_not_found"
    );
    assert_eq!(
        refused(&mut bob_live, react(&room, "x5", carols, "two words")).await,
        "bad_field"
    );
    let path = format!("/v1/rooms/{room}/members/{bob}/role");
    d.put(0, "alice", &path, json!({"role": "admin"})).await;
    let deleted = write(&mut bob_live, delete(&room, "d1", carols)).await;
    // A retried delete is answered as the first one, though its message is gone now.
    bob_live.send(delete(&room, "d1", carols)).await;
    match bob_live.next_matching(|f| answers(f, "d1")).await {
        ServerFrame::Ack { seq, duplicate, .. } => assert!(duplicate && seq == deleted),
        other => panic!("{other:?}"),
    }
    // Deleting it again (another clientMsgId: an admin and the sender at once) is answered.
    write(&mut carol_live, delete(&room, "d2", carols)).await;
    assert_eq!(
        refused(&mut carol_live, edit(&room, "x6", carols, "undo")).await,
        "message_not_found"
    );
    assert_eq!(
        refused(&mut alice, react(&room, "x7", carols, "👍")).await,
        "message_not_found"
    );
    let alices = write(&mut alice, send(&room, "a1", "alice's")).await;
    write(&mut bob_live, react(&room, "r3", alices, "👍")).await;
    write(&mut bob_live, react(&room, "r4", alices, "👍")).await;
    let history = state(&d, 1, "bob", &room).await;
    let reactions = &history.last().unwrap().reactions;
    assert_eq!(reactions.len(), 1);
    assert_eq!((reactions[0].count, reactions[0].me), (1, true));
    // One user holds at most 20 different emojis on a message; again with one held passes.
    for i in 1..20 {
        write(
            &mut bob_live,
            react(&room, &format!("many{i}"), alices, &format!("e{i}")),
        )
        .await;
    }
    assert_eq!(
        refused(&mut bob_live, react(&room, "many20", alices, "e20")).await,
        "bad_field"
    );
    write(&mut bob_live, react(&room, "again", alices, "e3")).await;
    write(&mut carol_live, react(&room, "carols", alices, "e20")).await;
}

#[tokio::test]
async fn changes_are_authorized_on_one_node() {
    changes_are_authorized(one_node()).await;
}

#[tokio::test]
async fn changes_are_authorized_across_nodes() {
    changes_are_authorized(three_nodes()).await;
}

#[tokio::test]
async fn an_edit_after_the_window_is_refused() {
    let d = Deployment::single(&[("CHATD__LIMITS__EDIT_WINDOW_MS", "1")]);
    let bob = d.user("bob");
    let room = d.client(0, "alice").open_direct(&bob).await.unwrap().id;
    let mut alice = d.live(0, "alice").await;
    let seq = write(&mut alice, send(&room, "m1", "typo")).await;
    // The window is one millisecond: what this waits for is time itself passing.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        refused(&mut alice, edit(&room, "e1", seq, "fixed")).await,
        "edit_window_closed"
    );
}

/// A delete leaves a tombstone in the database: no trace of the text, neither the
/// message's nor its edits'; and no replay (a resume from the start) shows it.
async fn a_delete_leaves_no_text(d: Deployment) {
    let bob = d.user("bob");
    let room = d.client(0, "alice").open_direct(&bob).await.unwrap().id;
    let mut alice = d.live(0, "alice").await;
    let secret = format!("secret-{}", d.user("x"));
    let seq = write(&mut alice, send(&room, "m1", &secret)).await;
    write(&mut alice, edit(&room, "e1", seq, &format!("{secret} v2"))).await;
    write(&mut alice, send(&room, "m2", "kept")).await;
    write(&mut alice, delete(&room, "d1", seq)).await;

    let stored: Vec<String> = match (d.sqlite_path(), &d.database) {
        (Some(path), _) => {
            let db = rusqlite::Connection::open(path).unwrap();
            let mut rows = db
                .prepare("SELECT text FROM messages WHERE room_id = ?1")
                .unwrap();
            rows.query_map([room.as_str()], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
        (None, Some(database)) => {
            use futures_util::TryStreamExt;
            let client = mongodb::Client::with_uri_str(&crate::servers::Mongo::shared().uri)
                .await
                .unwrap();
            let docs: Vec<mongodb::bson::Document> = client
                .database(database)
                .collection("messages")
                .find(mongodb::bson::doc! {"chatRoomId": room.as_str()})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            docs.iter()
                .map(|doc| doc.get_str("text").unwrap().to_owned())
                .collect()
        }
        _ => unreachable!(),
    };
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().all(|t| !t.contains("secret")), "{stored:?}");
    assert!(stored.contains(&"kept".to_owned()));

    // A device that resumes from the start (the cluster's recent cache answers resumes).
    let mut conn = d.client(1, "bob").connect().await.unwrap();
    conn.event(WAIT).await.unwrap();
    conn.resume(&BTreeMap::from([(room.clone(), 0)]))
        .await
        .unwrap();
    let mut replayed = Vec::new();
    loop {
        match conn.event(WAIT).await.unwrap() {
            ServerFrame::Message(m) => replayed.push(m),
            ServerFrame::Resumed { .. } => break,
            _ => {}
        }
    }
    assert_eq!(replayed.len(), 4);
    assert!(replayed.iter().all(|m| !m.text.contains("secret")));
    assert!(replayed[0].deleted && replayed[1].deleted);
}

#[tokio::test]
async fn a_delete_leaves_no_text_on_one_node() {
    a_delete_leaves_no_text(one_node()).await;
}

#[tokio::test]
async fn a_delete_leaves_no_text_across_nodes() {
    a_delete_leaves_no_text(three_nodes()).await;
}

/// Unread counts and the room list's last message count and show messages only: not
/// edits, not reactions, not deleted messages. Replies carry a preview.
async fn counts_and_lists_ignore_changes(d: Deployment) {
    let bob = d.user("bob");
    let room = d.client(0, "alice").open_direct(&bob).await.unwrap().id;
    let mut alice = d.live(0, "alice").await;
    let first = write(&mut alice, send(&room, "m1", "first")).await;
    let second = write(&mut alice, send(&room, "m2", "second")).await;
    write(&mut alice, edit(&room, "e1", first, "first, edited")).await;
    write(&mut alice, react(&room, "r1", first, "👍")).await;
    write(&mut alice, delete(&room, "d1", second)).await;
    let reply = json!({"type": "send", "room": room, "clientMsgId": "m3", "text": "again",
                       "replyTo": first});
    let third = write(&mut alice, reply).await;
    write(&mut alice, delete(&room, "d3", third)).await;

    let rooms = d.get(1, "bob", "/v1/rooms").await;
    let summary = &rooms["rooms"][0];
    assert_eq!(summary["unread"], 1, "{summary}");
    assert_eq!(summary["lastSeq"], 7);
    assert_eq!(summary["lastMessage"]["seq"], first);
    assert_eq!(summary["lastMessage"]["text"], "first, edited");
    assert_eq!(summary["lastMessage"]["reactions"][0]["count"], 1);

    let history = state(&d, 2, "bob", &room).await;
    let seqs: Vec<Seq> = history.iter().map(|m| m.message.seq).collect();
    assert_eq!(seqs, [first, second, third]);
    let preview = history[2].reply.clone().unwrap();
    assert_eq!(
        (preview.seq, preview.text.as_str()),
        (first, "first, edited")
    );
    // A reply to a deleted message is refused.
    let mut bob_live = d.live(1, "bob").await;
    let to_deleted = json!({"type": "send", "room": room, "clientMsgId": "b1", "text": "?",
                            "replyTo": second});
    assert_eq!(
        refused(&mut bob_live, to_deleted).await,
        "message_not_found"
    );
}

#[tokio::test]
async fn counts_and_lists_ignore_changes_on_one_node() {
    counts_and_lists_ignore_changes(one_node()).await;
}

#[tokio::test]
async fn counts_and_lists_ignore_changes_across_nodes() {
    counts_and_lists_ignore_changes(three_nodes()).await;
}

/// A member can remove nobody but themselves; an admin removes plain members but not
/// owners; only owners change roles; the last owner leaving hands ownership to the
/// longest-standing admin, and every member hears of each change.
async fn group_roles(d: Deployment) {
    let [alice, bob, carol, dave, erin] =
        ["alice", "bob", "carol", "dave", "erin"].map(|u| d.user(u));
    let room = d
        .client(0, "alice")
        .create_group("club", &[&bob, &carol])
        .await
        .unwrap();
    assert_eq!(room.roles.len(), 1);
    let room = room.id;
    let mut watcher = d.live(2, "carol").await;
    let status = |d: &Deployment, node: usize, user: &str, method: &str, path: String, body| {
        let client = d.client(node, user);
        let url = format!("{}{path}", client.base());
        let http = reqwest::Client::new();
        let request = match method {
            "PUT" => http.put(url).json(&body),
            "POST" => http.post(url).json(&body),
            _ => http.delete(url),
        };
        async move { reply(request.bearer_auth(client.token())).await.status }
    };
    let members = format!("/v1/rooms/{room}/members");
    let role_of = |user: &str| format!("{members}/{user}/role");
    // Plain members: no adding, no removing others, no roles.
    assert_eq!(
        status(
            &d,
            1,
            "bob",
            "POST",
            members.clone(),
            json!({"members": [dave]})
        )
        .await,
        403
    );
    assert_eq!(
        status(
            &d,
            1,
            "bob",
            "DELETE",
            format!("{members}/{carol}"),
            json!(null)
        )
        .await,
        403
    );
    assert_eq!(
        status(&d, 1, "bob", "PUT", role_of(&bob), json!({"role": "admin"})).await,
        403
    );
    // The owner makes bob an admin: everybody hears it.
    d.put(0, "alice", &role_of(&bob), json!({"role": "admin"}))
        .await;
    let roles = match watcher
        .next_matching(|f| matches!(f, ServerFrame::Members { roles, .. } if roles.len() == 2))
        .await
    {
        ServerFrame::Members { roles, .. } => roles,
        _ => unreachable!(),
    };
    assert_eq!(roles[&UserId::parse(&bob).unwrap()].as_str(), "admin");
    // An admin adds and removes plain members, but not owners, and changes no roles.
    assert_eq!(
        status(
            &d,
            1,
            "bob",
            "POST",
            members.clone(),
            json!({"members": [dave, erin]})
        )
        .await,
        200
    );
    assert_eq!(
        status(
            &d,
            1,
            "bob",
            "DELETE",
            format!("{members}/{dave}"),
            json!(null)
        )
        .await,
        204
    );
    assert_eq!(
        status(
            &d,
            1,
            "bob",
            "DELETE",
            format!("{members}/{alice}"),
            json!(null)
        )
        .await,
        403
    );
    assert_eq!(
        status(
            &d,
            1,
            "bob",
            "PUT",
            role_of(&erin),
            json!({"role": "admin"})
        )
        .await,
        403
    );
    // The last owner cannot step down, but may leave: the admin takes over.
    assert_eq!(
        status(
            &d,
            0,
            "alice",
            "PUT",
            role_of(&alice),
            json!({"role": "member"})
        )
        .await,
        403
    );
    assert_eq!(
        status(
            &d,
            0,
            "alice",
            "DELETE",
            format!("{members}/{alice}"),
            json!(null)
        )
        .await,
        204
    );
    let roles = match watcher
        .next_matching(|f| matches!(f, ServerFrame::Members { members, .. } if members.len() == 3))
        .await
    {
        ServerFrame::Members { roles, .. } => roles,
        _ => unreachable!(),
    };
    let bob_id = UserId::parse(&bob).unwrap();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[&bob_id].as_str(), "owner");
    // And when he leaves too, the longest-standing member (carol, a founder) owns it.
    assert_eq!(
        status(
            &d,
            1,
            "bob",
            "DELETE",
            format!("{members}/{bob}"),
            json!(null)
        )
        .await,
        204
    );
    let room = d.get(2, "carol", &format!("/v1/rooms/{room}")).await;
    assert_eq!(room["roles"], json!({ carol.clone(): "owner" }));
}

#[tokio::test]
async fn group_roles_on_one_node() {
    group_roles(one_node()).await;
}

#[tokio::test]
async fn group_roles_across_nodes() {
    group_roles(three_nodes()).await;
}
