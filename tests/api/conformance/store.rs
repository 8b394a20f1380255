//! What every Store must do. Instantiate with `store_conformance!()` in a module that has
//! `async fn factory() -> impl StoreFactory`.
//!
//! Over 400 lines: one function per property of the Store trait, each run against every
//! backend; they belong in one list with the macro that instantiates them.

use std::{collections::HashSet, sync::Arc};

use chatd::{
    domain::{EntryKind, Role, RoomId, RoomKind, Seq, UserId},
    store::{
        Entries, HistoryQuery, MAX_SEQ, Mark, MemberReceipt, NewGroup, NewMessage, Order,
        Positions, RoomState, Store, UserSettings,
    },
};
use chrono::{DateTime, Duration, Utc};

use crate::helpers::new_message;

pub use super::push_store::*;

#[async_trait::async_trait]
pub trait StoreFactory: Send + Sync {
    /// `n` handles on one new, empty store (its own file or database): like `n` nodes.
    async fn nodes(&self, n: usize) -> Vec<Arc<dyn Store>>;

    /// One handle on a new, empty store.
    async fn store(&self) -> Arc<dyn Store> {
        self.nodes(1).await.remove(0)
    }
}

#[macro_export]
macro_rules! store_conformance {
    () => {
        $crate::store_conformance!(@tests
            append_numbers_from_one_without_gaps,
            append_is_idempotent_per_sender_and_client_msg_id,
            created_at_never_decreases_when_the_clock_goes_back,
            concurrent_appends_get_unique_consecutive_seqs,
            concurrent_retries_store_one_message,
            a_batch_appends_as_one_append_after_the_other,
            concurrent_batches_on_two_nodes_keep_each_batch_in_order,
            history_pages_by_seq_and_time_both_ways,
            time_bounds_hold_where_the_clock_went_back,
            last_seq_and_unread_counts,
            direct_rooms_are_idempotent_and_symmetric,
            groups_add_and_remove_members,
            positions_only_move_forward_and_never_pass_the_end,
            receipts_show_public_positions_only,
            user_settings_default_and_persist,
            rooms_are_independent,
            messages_read_back_exactly,
            unknown_rooms_are_empty,
            reads_for_many_rooms_answer_what_reads_room_by_room_do,
            room_states_show_the_newest_standing_message_with_what_its_state_needs,
            memberships_page_by_room_id_and_count,
            seqs_at_the_top_of_the_range_do_not_wrap,
            changes_are_entries_and_a_delete_removes_text,
            roles_and_the_last_owner_handing_on,
            revocations_only_move_forward,
            devices_belong_to_one_user_and_are_capped,
            undecided_messages_are_claimed_once_until_decided,
            jobs_collapse_until_claimed_and_are_leased,
            concurrent_enqueues_make_one_job,
            the_ledger_keeps_first_decisions_and_answers_by_room_and_seq
        );
    };
    (@tests $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let factory = factory().await;
                $crate::conformance::store::$name(&factory).await;
            }
        )*
    };
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// A direct room of alice and bob in `store`.
pub(super) async fn room(store: &dyn Store) -> RoomId {
    store
        .ensure_direct_room(&user("alice"), &user("bob"), Utc::now())
        .await
        .unwrap()
        .id
}

pub(super) fn now() -> DateTime<Utc> {
    chatd::clock::truncate_to_millis(Utc::now())
}

pub async fn append_numbers_from_one_without_gaps(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    for i in 1..=5u64 {
        let a = store
            .append(new_message(&room, "alice", &format!("c{i}")), now())
            .await
            .unwrap();
        assert_eq!((a.message.seq, a.duplicate), (i, false));
    }
    assert_eq!(store.last_seq(&room).await.unwrap(), 5);
}

pub async fn append_is_idempotent_per_sender_and_client_msg_id(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    let first = store
        .append(new_message(&room, "alice", "x"), now())
        .await
        .unwrap();
    let mut retry = new_message(&room, "alice", "x");
    retry.text = "different text".into();
    let again = store
        .append(retry, now() + Duration::seconds(5))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        again.message, first.message,
        "the stored message, unchanged"
    );
    // Same clientMsgId from another sender, or in another room, is another message.
    let bob = store
        .append(new_message(&room, "bob", "x"), now())
        .await
        .unwrap();
    assert_eq!((bob.message.seq, bob.duplicate), (2, false));
    let other = store
        .ensure_direct_room(&user("alice"), &user("carol"), now())
        .await
        .unwrap()
        .id;
    let elsewhere = store
        .append(new_message(&other, "alice", "x"), now())
        .await
        .unwrap();
    assert_eq!((elsewhere.message.seq, elsewhere.duplicate), (1, false));
    assert_eq!(store.last_seq(&room).await.unwrap(), 2);
}

pub async fn created_at_never_decreases_when_the_clock_goes_back(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    let t0 = now();
    let a = store
        .append(new_message(&room, "alice", "1"), t0)
        .await
        .unwrap()
        .message;
    let b = store
        .append(new_message(&room, "bob", "2"), t0 - Duration::seconds(5))
        .await
        .unwrap()
        .message;
    let c = store
        .append(
            new_message(&room, "bob", "3"),
            t0 + Duration::milliseconds(7),
        )
        .await
        .unwrap()
        .message;
    assert_eq!(a.created_at, t0);
    assert_eq!(
        b.created_at, t0,
        "a clock 5 s behind does not stamp earlier"
    );
    assert_eq!(c.created_at, t0 + Duration::milliseconds(7));
    assert_eq!((a.seq, b.seq, c.seq), (1, 2, 3));
}

/// Appends race from two "nodes" (two handles on one store) and within each.
pub async fn concurrent_appends_get_unique_consecutive_seqs(f: &impl StoreFactory) {
    const N: usize = 100;
    let nodes = f.nodes(2).await;
    let store = nodes[0].clone();
    let room = room(&*store).await;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (store, room) = (nodes[i % 2].clone(), room.clone());
            tokio::spawn(async move {
                let sender = if i % 2 == 0 { "alice" } else { "bob" };
                store
                    .append(new_message(&room, sender, &format!("c{i}")), now())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut seqs = HashSet::new();
    for t in tasks {
        let a = t.await.unwrap();
        assert!(!a.duplicate);
        assert!(
            seqs.insert(a.message.seq),
            "seq {} given twice",
            a.message.seq
        );
    }
    assert_eq!(seqs, (1..=N as Seq).collect());
    let all = store
        .history(&room, &HistoryQuery::after(0, 200))
        .await
        .unwrap();
    assert_eq!(all.len(), N);
    assert!(
        all.windows(2)
            .all(|w| w[0].seq + 1 == w[1].seq && w[0].created_at <= w[1].created_at)
    );
}

pub async fn concurrent_retries_store_one_message(f: &impl StoreFactory) {
    let nodes = f.nodes(2).await;
    let store = nodes[0].clone();
    let room = room(&*store).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (store, room) = (nodes[i % 2].clone(), room.clone());
            tokio::spawn(async move {
                store
                    .append(new_message(&room, "alice", "retry"), now())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut originals = 0;
    for t in tasks {
        let a = t.await.unwrap();
        ids.insert(a.message.id.clone());
        originals += usize::from(!a.duplicate);
    }
    assert_eq!((ids.len(), originals), (1, 1));
    assert_eq!(store.last_seq(&room).await.unwrap(), 1);
}

/// Rooms mixed, a repeat of an earlier entry and one of an entry in the same batch: each
/// answer is what appending them one after the other gives.
pub async fn a_batch_appends_as_one_append_after_the_other(f: &impl StoreFactory) {
    let store = f.store().await;
    let a = room(&*store).await;
    let b = store
        .ensure_direct_room(&user("alice"), &user("carol"), now())
        .await
        .unwrap()
        .id;
    let earlier = store
        .append(new_message(&a, "alice", "x"), now())
        .await
        .unwrap();
    let batch = vec![
        new_message(&a, "alice", "c1"),
        new_message(&b, "alice", "c1"),
        new_message(&a, "alice", "x"),
        new_message(&a, "bob", "c2"),
        new_message(&a, "alice", "c1"),
        new_message(&b, "alice", "c2"),
    ];
    let answers: Vec<(RoomId, Seq, bool)> = store
        .append_batch(batch, now())
        .await
        .into_iter()
        .map(|a| {
            let a = a.unwrap();
            (a.message.room, a.message.seq, a.duplicate)
        })
        .collect();
    assert_eq!(
        answers,
        [
            (a.clone(), 2, false),
            (b.clone(), 1, false),
            (a.clone(), 1, true),
            (a.clone(), 3, false),
            (a.clone(), 2, true),
            (b.clone(), 2, false),
        ]
    );
    let stored = store
        .history(&a, &HistoryQuery::after(0, 10))
        .await
        .unwrap();
    let ids: Vec<&str> = stored.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(ids, ["x", "c1", "c2"]);
    assert_eq!(stored[0], earlier.message);
    assert!(
        stored
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );
    assert!(store.append_batch(Vec::new(), now()).await.is_empty());
}

/// Two nodes appending batches to one room at once (and retrying one): every entry gets
/// its own seq with none missing, and each batch's seqs rise in the batch's order.
pub async fn concurrent_batches_on_two_nodes_keep_each_batch_in_order(f: &impl StoreFactory) {
    const BATCHES: usize = 6;
    const EACH: usize = 10;
    let nodes = f.nodes(2).await;
    let room = room(&*nodes[0]).await;
    let tasks: Vec<_> = (0..BATCHES)
        .map(|b| {
            let (store, room) = (nodes[b % 2].clone(), room.clone());
            tokio::spawn(async move {
                let sender = if b % 2 == 0 { "alice" } else { "bob" };
                let batch: Vec<NewMessage> = (0..EACH)
                    .map(|i| new_message(&room, sender, &format!("b{b}-{i}")))
                    .collect();
                let first: Vec<Seq> = store
                    .append_batch(batch.clone(), now())
                    .await
                    .into_iter()
                    .map(|a| a.unwrap().message.seq)
                    .collect();
                let retried: Vec<Seq> = store
                    .append_batch(batch, now())
                    .await
                    .into_iter()
                    .map(|a| {
                        let a = a.unwrap();
                        assert!(a.duplicate);
                        a.message.seq
                    })
                    .collect();
                assert_eq!(
                    first, retried,
                    "a retried batch finds what the first stored"
                );
                first
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "out of order: {seqs:?}"
        );
        all.extend(seqs);
    }
    assert_eq!(all, (1..=(BATCHES * EACH) as Seq).collect());
}

pub async fn history_pages_by_seq_and_time_both_ways(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    let t0 = now();
    for i in 0..10i64 {
        store
            .append(
                new_message(&room, "alice", &format!("c{i}")),
                t0 + Duration::seconds(i),
            )
            .await
            .unwrap();
    }
    let seqs = |v: Vec<chatd::domain::Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    let q = |q: HistoryQuery| {
        let (store, room) = (store.clone(), room.clone());
        async move { seqs(store.history(&room, &q).await.unwrap()) }
    };
    assert_eq!(q(HistoryQuery::after(0, 3)).await, vec![1, 2, 3]);
    assert_eq!(q(HistoryQuery::after(8, 100)).await, vec![9, 10]);
    assert_eq!(q(HistoryQuery::latest(3)).await, vec![10, 9, 8]);
    assert_eq!(
        q(HistoryQuery {
            before: Some(4),
            order: Order::Desc,
            limit: 10,
            ..Default::default()
        })
        .await,
        vec![3, 2, 1]
    );
    assert_eq!(
        q(HistoryQuery {
            after: Some(2),
            before: Some(6),
            limit: 10,
            ..Default::default()
        })
        .await,
        vec![3, 4, 5]
    );
    let since = t0 + Duration::seconds(7);
    assert_eq!(
        q(HistoryQuery {
            since: Some(since),
            limit: 10,
            ..Default::default()
        })
        .await,
        vec![8, 9, 10]
    );
    assert_eq!(
        q(HistoryQuery {
            until: Some(t0 + Duration::seconds(2)),
            limit: 10,
            ..Default::default()
        })
        .await,
        vec![1, 2]
    );
    assert_eq!(
        q(HistoryQuery {
            since: Some(t0 + Duration::seconds(3)),
            until: Some(since),
            order: Order::Desc,
            limit: 2,
            ..Default::default()
        })
        .await,
        vec![7, 6]
    );
}

/// A clock that went back stamps its messages with the newest createdAt: several entries
/// share one time, and a time bound takes all of them or none.
pub async fn time_bounds_hold_where_the_clock_went_back(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    let empty = store
        .ensure_direct_room(&user("alice"), &user("zed"), now())
        .await
        .unwrap()
        .id;
    let t0 = now();
    for (i, offset) in [0, 5, 2, 3, 9].into_iter().enumerate() {
        store
            .append(
                new_message(&room, "alice", &format!("c{i}")),
                t0 + Duration::seconds(offset),
            )
            .await
            .unwrap();
    }
    let at = |s| t0 + Duration::seconds(s);
    let q = |room: RoomId, since: Option<i64>, until: Option<i64>| {
        let store = store.clone();
        async move {
            let query = HistoryQuery {
                since: since.map(at),
                until: until.map(at),
                limit: 10,
                ..Default::default()
            };
            let got = store.history(&room, &query).await.unwrap();
            got.into_iter().map(|m| m.seq).collect::<Vec<_>>()
        }
    };
    assert_eq!(q(room.clone(), Some(5), None).await, vec![2, 3, 4, 5]);
    assert_eq!(q(room.clone(), Some(1), None).await, vec![2, 3, 4, 5]);
    assert_eq!(q(room.clone(), None, Some(5)).await, vec![1]);
    assert_eq!(q(room.clone(), Some(5), Some(9)).await, vec![2, 3, 4]);
    assert_eq!(q(room.clone(), Some(0), Some(1)).await, vec![1]);
    assert_eq!(q(room.clone(), Some(10), None).await, Vec::<Seq>::new());
    assert_eq!(q(room.clone(), None, Some(0)).await, Vec::<Seq>::new());
    assert_eq!(q(empty, Some(0), None).await, Vec::<Seq>::new());
}

pub async fn last_seq_and_unread_counts(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    assert_eq!(store.last_seq(&room).await.unwrap(), 0);
    for (i, sender) in ["alice", "bob", "bob", "alice", "bob"].iter().enumerate() {
        store
            .append(new_message(&room, sender, &format!("c{i}")), now())
            .await
            .unwrap();
    }
    assert_eq!(store.last_seq(&room).await.unwrap(), 5);
    assert_eq!(
        store
            .count_unread(&room, &user("alice"), 0, 100)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .count_unread(&room, &user("alice"), 3, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_unread(&room, &user("bob"), 0, 100)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count_unread(&room, &user("alice"), 0, 2)
            .await
            .unwrap(),
        2,
        "capped"
    );
}

pub async fn direct_rooms_are_idempotent_and_symmetric(f: &impl StoreFactory) {
    let nodes = f.nodes(2).await;
    let store = nodes[0].clone();
    let t = now();
    let a = store
        .ensure_direct_room(&user("bob"), &user("alice"), t)
        .await
        .unwrap();
    let b = store
        .ensure_direct_room(&user("alice"), &user("bob"), t + Duration::seconds(9))
        .await
        .unwrap();
    assert_eq!(a, b, "the same room, unchanged");
    assert_eq!(a.id, RoomId::direct(&user("alice"), &user("bob")));
    assert_eq!((a.kind, a.name.clone()), (RoomKind::Direct, None));
    assert_eq!(a.members, vec![user("alice"), user("bob")]);
    let both = futures_util::future::join_all((0..10).map(|i| {
        let store = nodes[i % 2].clone();
        async move {
            store
                .ensure_direct_room(&user("x"), &user("y"), now())
                .await
                .unwrap()
        }
    }))
    .await;
    assert!(both.windows(2).all(|w| w[0] == w[1]));
}

pub async fn groups_add_and_remove_members(f: &impl StoreFactory) {
    let store = f.store().await;
    let id = RoomId::new_group();
    let group = NewGroup {
        id: id.clone(),
        name: "team".into(),
        created_by: user("alice"),
        members: vec![user("alice"), user("bob")],
    };
    let room = store.create_group(group, now()).await.unwrap();
    assert_eq!(
        (room.kind, room.name.as_deref()),
        (RoomKind::Group, Some("team"))
    );
    assert_eq!(room.created_by, user("alice"));
    let added = store
        .add_members(&id, &[user("bob"), user("carol"), user("dave")], now())
        .await
        .unwrap();
    assert_eq!(
        added,
        vec![user("carol"), user("dave")],
        "bob was already in"
    );
    assert!(store.remove_member(&id, &user("dave")).await.unwrap());
    assert!(!store.remove_member(&id, &user("dave")).await.unwrap());
    let room = store.room(&id).await.unwrap().unwrap();
    assert_eq!(
        room.members,
        vec![user("alice"), user("bob"), user("carol")]
    );
    assert!(
        store
            .membership(&id, &user("carol"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .membership(&id, &user("dave"))
            .await
            .unwrap()
            .is_none()
    );
    let carols: Vec<_> = store
        .memberships_of(&user("carol"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.room)
        .collect();
    assert_eq!(carols, vec![id]);
    assert!(
        store
            .memberships_of(&user("dave"))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn positions_only_move_forward_and_never_pass_the_end(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    for i in 0..5 {
        store
            .append(new_message(&room, "bob", &format!("c{i}")), now())
            .await
            .unwrap();
    }
    let alice = user("alice");
    let at = |delivered_seq, read_seq, public_read_seq| Positions {
        delivered_seq,
        read_seq,
        public_read_seq,
    };
    let mark = |mark, seq| {
        let (store, room, alice) = (store.clone(), room.clone(), alice.clone());
        async move { store.mark(&room, &alice, mark, seq).await.unwrap() }
    };
    // Delivery alone moves delivery only.
    let m = mark(Mark::Delivered, 2).await;
    assert_eq!((m.before, m.after), (at(0, 0, 0), at(2, 0, 0)));
    assert!(m.receipt_moved() && !m.read_moved());
    // A read implies delivery.
    let m = mark(Mark::Read, 3).await;
    assert_eq!(m.after, at(3, 3, 3));
    assert!(m.receipt_moved() && m.read_moved());
    // Old reports change nothing.
    for (kind, seq) in [(Mark::Read, 2), (Mark::Delivered, 1), (Mark::Read, 3)] {
        let m = mark(kind, seq).await;
        assert_eq!(m.before, m.after, "{kind:?} {seq}");
        assert!(!m.receipt_moved() && !m.read_moved());
    }
    // A private read moves the user's own position and delivery, not what members see.
    let m = mark(Mark::PrivateRead, 4).await;
    assert_eq!(m.after, at(4, 4, 3));
    assert!(m.read_moved() && m.receipt_moved(), "delivery moved");
    let m = mark(Mark::PrivateRead, 4).await;
    assert!(!m.read_moved() && !m.receipt_moved());
    // Never past the newest message, and the largest seq a store holds does not wrap.
    assert_eq!(mark(Mark::Read, 50).await.after, at(5, 5, 5));
    assert_eq!(mark(Mark::Read, MAX_SEQ).await.after, at(5, 5, 5));
    assert_eq!(
        store
            .membership(&room, &alice)
            .await
            .unwrap()
            .unwrap()
            .read_seq,
        5
    );
    // Non-members have no positions and get none.
    let zed = store
        .mark(&room, &user("zed"), Mark::Read, 3)
        .await
        .unwrap();
    assert_eq!((zed.before, zed.after), (at(0, 0, 0), at(0, 0, 0)));
    assert_eq!(
        store.receipts(&room).await.unwrap(),
        vec![
            MemberReceipt {
                user: alice.clone(),
                delivered_seq: 5,
                read_seq: 5
            },
            MemberReceipt {
                user: user("bob"),
                delivered_seq: 0,
                read_seq: 0
            },
        ]
    );
}

pub async fn receipts_show_public_positions_only(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    for i in 0..3 {
        store
            .append(new_message(&room, "alice", &format!("c{i}")), now())
            .await
            .unwrap();
    }
    let bob = user("bob");
    store.mark(&room, &bob, Mark::Read, 1).await.unwrap();
    store.mark(&room, &bob, Mark::PrivateRead, 3).await.unwrap();
    let receipts = store.receipts(&room).await.unwrap();
    let bobs = receipts.iter().find(|r| r.user == bob).unwrap();
    assert_eq!((bobs.delivered_seq, bobs.read_seq), (3, 1));
    assert!(
        store
            .receipts(&RoomId::new_group())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn user_settings_default_and_persist(f: &impl StoreFactory) {
    let store = f.store().await;
    let alice = user("alice");
    assert_eq!(
        store.user_settings(&alice).await.unwrap(),
        UserSettings::default()
    );
    let hidden = UserSettings {
        hide_presence: true,
    };
    store.set_user_settings(&alice, hidden).await.unwrap();
    assert_eq!(store.user_settings(&alice).await.unwrap(), hidden);
    assert_eq!(
        store.user_settings(&user("bob")).await.unwrap(),
        UserSettings::default()
    );
    store
        .set_user_settings(&alice, UserSettings::default())
        .await
        .unwrap();
    assert_eq!(
        store.user_settings(&alice).await.unwrap(),
        UserSettings::default()
    );
}

pub async fn rooms_are_independent(f: &impl StoreFactory) {
    let store = f.store().await;
    let a = room(&*store).await;
    let b = store
        .ensure_direct_room(&user("alice"), &user("zed"), now())
        .await
        .unwrap()
        .id;
    for i in 0..3 {
        store
            .append(new_message(&a, "alice", &format!("a{i}")), now())
            .await
            .unwrap();
    }
    let first_b = store
        .append(new_message(&b, "alice", "b0"), now())
        .await
        .unwrap();
    assert_eq!(first_b.message.seq, 1);
    let in_b = store
        .history(&b, &HistoryQuery::after(0, 10))
        .await
        .unwrap();
    assert_eq!(in_b.len(), 1);
    assert!(in_b.iter().all(|m| m.room == b));
}

pub async fn messages_read_back_exactly(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    let mut m = new_message(&room, "alice", "unicode");
    m.text = "héllo 👋 — \"quoted\" \\ <b>not html</b>\nline two".into();
    let stored = store.append(m, now()).await.unwrap().message;
    let read = store
        .history(&room, &HistoryQuery::after(0, 1))
        .await
        .unwrap();
    assert_eq!(read, vec![stored.clone()]);
    assert_eq!(
        stored.created_at.timestamp_subsec_nanos() % 1_000_000,
        0,
        "millisecond precision"
    );
}

/// The batched reads of a reconnect (rooms, memberships, replays) give what one read per
/// room gives, in the order asked, leaving out unknown rooms and the user's non-rooms.
pub async fn reads_for_many_rooms_answer_what_reads_room_by_room_do(f: &impl StoreFactory) {
    let store = f.store().await;
    let direct = room(&*store).await;
    let group = NewGroup {
        id: RoomId::new_group(),
        name: "g".into(),
        created_by: user("alice"),
        members: vec![user("alice"), user("bob"), user("carol")],
    };
    let group = store.create_group(group, now()).await.unwrap().id;
    let not_hers = store
        .ensure_direct_room(&user("bob"), &user("carol"), now())
        .await
        .unwrap()
        .id;
    let nowhere = RoomId::new_group();
    for (room, n) in [(&direct, 5), (&group, 3), (&not_hers, 2)] {
        for i in 0..n {
            let sender = if room == &not_hers { "bob" } else { "alice" };
            store
                .append(new_message(room, sender, &format!("m{i}")), now())
                .await
                .unwrap();
        }
    }
    let asked = [
        direct.clone(),
        nowhere.clone(),
        not_hers.clone(),
        group.clone(),
    ];
    let rooms = store.rooms(&asked).await.unwrap();
    let one_by_one = [
        store.room(&direct).await.unwrap().unwrap(),
        store.room(&not_hers).await.unwrap().unwrap(),
        store.room(&group).await.unwrap().unwrap(),
    ];
    assert_eq!(rooms, one_by_one);
    let memberships = store
        .memberships_among(&user("alice"), &asked)
        .await
        .unwrap();
    let one_by_one = [
        store
            .membership(&direct, &user("alice"))
            .await
            .unwrap()
            .unwrap(),
        store
            .membership(&group, &user("alice"))
            .await
            .unwrap()
            .unwrap(),
    ];
    assert_eq!(memberships, one_by_one);
    let from = [
        (direct.clone(), 2),
        (group.clone(), 0),
        (nowhere.clone(), 0),
        (group.clone(), 3),
        (direct.clone(), 4),
    ];
    let histories = store.histories_after(&from, 2).await.unwrap();
    let mut one_by_one = Vec::new();
    for (room, after) in &from {
        one_by_one.push(
            store
                .history(room, &HistoryQuery::after(*after, 2))
                .await
                .unwrap(),
        );
    }
    assert_eq!(histories, one_by_one);
    let seqs: Vec<Vec<Seq>> = histories
        .iter()
        .map(|h| h.iter().map(|m| m.seq).collect())
        .collect();
    assert_eq!(seqs, [vec![3, 4], vec![1, 2], vec![], vec![], vec![5]]);
    assert!(store.rooms(&[]).await.unwrap().is_empty());
    assert!(store.histories_after(&[], 5).await.unwrap().is_empty());
}

/// A room list's view of each room in one call: the newest message that is not deleted
/// (here a reply), its changes and the message it answers with that one's changes, the
/// log's last seq and the unread count; an empty room has none of them.
pub async fn room_states_show_the_newest_standing_message_with_what_its_state_needs(
    f: &impl StoreFactory,
) {
    let store = f.store().await;
    let busy = room(&*store).await;
    let empty = store
        .ensure_direct_room(&user("alice"), &user("carol"), now())
        .await
        .unwrap()
        .id;
    let entries = [
        new_message(&busy, "alice", "m1"),
        NewMessage {
            reply_to: Some(1),
            ..new_message(&busy, "bob", "m2")
        },
        change(&busy, "alice", "e1", EntryKind::Edit, 1),
        change(&busy, "bob", "r2", EntryKind::React, 2),
        new_message(&busy, "bob", "m3"),
        change(&busy, "bob", "d5", EntryKind::Delete, 5),
    ];
    for entry in entries {
        store.append(entry, now()).await.unwrap();
    }
    let memberships = store
        .memberships_among(&user("alice"), &[busy.clone(), empty.clone()])
        .await
        .unwrap();
    let states = store.room_states(&memberships, 999).await.unwrap();
    assert_eq!(states.len(), 2);
    let newest = states[0].newest.as_ref().expect("a standing message");
    assert_eq!((newest.seq, newest.client_msg_id.as_str()), (2, "m2"));
    let mut related: Vec<Seq> = states[0].related.iter().map(|m| m.seq).collect();
    related.sort_unstable();
    assert_eq!(
        related,
        [1, 3, 4],
        "the answered message, its edit, the reaction"
    );
    assert_eq!((states[0].last_seq, states[0].unread), (6, 1));
    assert_eq!(states[1], RoomState::default());
    assert!(store.room_states(&[], 999).await.unwrap().is_empty());
}

pub async fn unknown_rooms_are_empty(f: &impl StoreFactory) {
    let store = f.store().await;
    let nowhere = RoomId::new_group();
    assert!(store.room(&nowhere).await.unwrap().is_none());
    assert_eq!(store.last_seq(&nowhere).await.unwrap(), 0);
    assert!(
        store
            .history(&nowhere, &HistoryQuery::after(0, 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .membership(&nowhere, &user("alice"))
            .await
            .unwrap()
            .is_none()
    );
    store.ping().await.unwrap();
}

pub async fn memberships_page_by_room_id_and_count(f: &impl StoreFactory) {
    let store = f.store().await;
    let alice = user("alice");
    let mut rooms = Vec::new();
    for i in 0..5 {
        let group = NewGroup {
            id: RoomId::new_group(),
            name: format!("g{i}"),
            created_by: alice.clone(),
            members: vec![alice.clone(), user("bob")],
        };
        rooms.push(store.create_group(group, now()).await.unwrap().id);
    }
    rooms.sort();
    let first = store.memberships_page(&alice, None, 2).await.unwrap();
    let ids =
        |ms: &[chatd::domain::Membership]| ms.iter().map(|m| m.room.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), rooms[..2]);
    let rest = store
        .memberships_page(&alice, Some(&rooms[1]), 10)
        .await
        .unwrap();
    assert_eq!(ids(&rest), rooms[2..]);
    assert!(
        store
            .memberships_page(&alice, Some(&rooms[4]), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .membership_counts(&[user("bob"), user("nobody"), alice])
            .await
            .unwrap(),
        vec![5, 0, 5]
    );
}

pub async fn seqs_at_the_top_of_the_range_do_not_wrap(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    for i in 0..3 {
        store
            .append(new_message(&room, "bob", &format!("c{i}")), now())
            .await
            .unwrap();
    }
    let after_max = store
        .history(&room, &HistoryQuery::after(MAX_SEQ, 10))
        .await
        .unwrap();
    assert!(after_max.is_empty(), "nothing follows the largest seq");
    let before_max = HistoryQuery {
        before: Some(MAX_SEQ),
        ..HistoryQuery::after(0, 10)
    };
    assert_eq!(store.history(&room, &before_max).await.unwrap().len(), 3);
    assert_eq!(
        store
            .count_unread(&room, &user("alice"), MAX_SEQ, 999)
            .await
            .unwrap(),
        0
    );
}

/// A change to the message at `target`, as `sender`'s `client_msg_id`.
fn change(room: &RoomId, sender: &str, id: &str, kind: EntryKind, target: Seq) -> NewMessage {
    NewMessage {
        kind,
        target: Some(target),
        emoji: matches!(kind, EntryKind::React | EntryKind::Unreact).then(|| "👍".into()),
        ..new_message(room, sender, id)
    }
}

/// Changes take seqs like messages and read back as they were written; a delete removes the
/// text of its message and of the message's edits (a retried delete, or an edit stored
/// after it, too); counts and the filtered histories see messages only.
pub async fn changes_are_entries_and_a_delete_removes_text(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    let append = |new: NewMessage| {
        let store = store.clone();
        async move { store.append(new, now()).await.unwrap() }
    };
    append(new_message(&room, "alice", "m1")).await;
    let reply = NewMessage {
        reply_to: Some(1),
        ..new_message(&room, "alice", "m2")
    };
    assert_eq!(append(reply).await.message.reply_to, Some(1));
    append(change(&room, "alice", "e1", EntryKind::Edit, 1)).await;
    append(change(&room, "bob", "r1", EntryKind::React, 1)).await;
    append(change(&room, "bob", "r2", EntryKind::Unreact, 2)).await;
    let log = store
        .history(&room, &HistoryQuery::after(0, 10))
        .await
        .unwrap();
    let kinds: Vec<_> = log.iter().map(|m| (m.seq, m.kind, m.target)).collect();
    assert_eq!(
        kinds,
        [
            (1, EntryKind::Message, None),
            (2, EntryKind::Message, None),
            (3, EntryKind::Edit, Some(1)),
            (4, EntryKind::React, Some(1)),
            (5, EntryKind::Unreact, Some(2))
        ]
    );
    assert_eq!(log[3].emoji.as_deref(), Some("👍"));
    assert_eq!(
        store.entries(&room, &[2, 4, 9]).await.unwrap(),
        vec![log[1].clone(), log[3].clone()]
    );
    let changes = store.changes(&room, &[1]).await.unwrap();
    assert_eq!(changes, vec![log[2].clone(), log[3].clone()]);
    let found = store
        .entry_by_client_msg_id(&room, &user("bob"), "r1")
        .await
        .unwrap();
    assert_eq!(found.as_ref(), Some(&log[3]));
    // bob counts alice's two messages, not her edit; alice counts nothing of bob's reactions.
    assert_eq!(
        store
            .count_unread(&room, &user("bob"), 0, 99)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count_unread(&room, &user("alice"), 0, 99)
            .await
            .unwrap(),
        0
    );

    let delete = change(&room, "alice", "d1", EntryKind::Delete, 1);
    let deleted = append(delete.clone()).await;
    assert!(!deleted.duplicate);
    assert!(append(delete).await.duplicate, "a retry stores nothing new");
    let late = append(change(&room, "alice", "e2", EntryKind::Edit, 1)).await;
    assert!(late.message.deleted && late.message.text.is_empty());
    let log = store
        .history(&room, &HistoryQuery::after(0, 10))
        .await
        .unwrap();
    for seq in [1, 3, 7] {
        let entry = &log[seq - 1];
        assert!(entry.deleted && entry.text.is_empty(), "{entry:?}");
    }
    assert_eq!(log[1].text, "text of m2", "other messages keep their text");
    assert_eq!(store.last_seq(&room).await.unwrap(), 7);
    assert_eq!(
        store
            .count_unread(&room, &user("bob"), 0, 99)
            .await
            .unwrap(),
        1
    );
    let only = |entries| HistoryQuery {
        entries,
        ..HistoryQuery::after(0, 10)
    };
    let seqs = |messages: Vec<chatd::domain::Message>| -> Vec<Seq> {
        messages.iter().map(|m| m.seq).collect()
    };
    let messages = store
        .history(&room, &only(Entries::Messages))
        .await
        .unwrap();
    assert_eq!(seqs(messages), [1, 2]);
    let standing = store
        .history(&room, &only(Entries::Standing))
        .await
        .unwrap();
    assert_eq!(seqs(standing), [2]);
}

/// A group's creator owns it; roles change one member at a time; when the last owner goes,
/// the longest-standing admin takes over, else the longest-standing member. Direct rooms
/// have no roles.
pub async fn roles_and_the_last_owner_handing_on(f: &impl StoreFactory) {
    let store = f.store().await;
    let id = RoomId::new_group();
    let group = NewGroup {
        id: id.clone(),
        name: "club".into(),
        created_by: user("carol"),
        members: vec![user("alice"), user("bob"), user("carol")],
    };
    let room = store.create_group(group, now()).await.unwrap();
    assert_eq!(
        room.roles.into_iter().collect::<Vec<_>>(),
        [(user("carol"), Role::Owner)]
    );
    let later = now() + Duration::seconds(5);
    store
        .add_members(&id, &[user("dave")], later)
        .await
        .unwrap();
    assert!(
        store
            .set_role(&id, &user("dave"), Role::Admin)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_role(&id, &user("erin"), Role::Admin)
            .await
            .unwrap()
    );
    let roles = |store: Arc<dyn Store>| {
        let id = id.clone();
        async move {
            store
                .room(&id)
                .await
                .unwrap()
                .unwrap()
                .roles
                .into_iter()
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        roles(store.clone()).await,
        [(user("carol"), Role::Owner), (user("dave"), Role::Admin)]
    );
    // The owner leaves: dave, the only admin, though he joined last.
    assert!(store.remove_member(&id, &user("carol")).await.unwrap());
    assert_eq!(roles(store.clone()).await, [(user("dave"), Role::Owner)]);
    // dave leaves: of the members who joined first (alice and bob), alice by name.
    assert!(store.remove_member(&id, &user("dave")).await.unwrap());
    assert_eq!(roles(store.clone()).await, [(user("alice"), Role::Owner)]);
    // Removing a plain member hands nothing on.
    assert!(store.remove_member(&id, &user("bob")).await.unwrap());
    assert_eq!(roles(store.clone()).await, [(user("alice"), Role::Owner)]);
    // No owner stored (two owners demoted each other at once; a hand-off cut short): the
    // same rule names one on every read.
    store
        .add_members(&id, &[user("erin")], later)
        .await
        .unwrap();
    assert!(
        store
            .set_role(&id, &user("erin"), Role::Admin)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_role(&id, &user("alice"), Role::Member)
            .await
            .unwrap()
    );
    assert_eq!(roles(store.clone()).await, [(user("erin"), Role::Owner)]);
    let direct = room_of(&*store).await;
    assert!(direct.roles.is_empty());
}

async fn room_of(store: &dyn Store) -> chatd::domain::Room {
    store
        .ensure_direct_room(&user("alice"), &user("bob"), Utc::now())
        .await
        .unwrap()
}

/// A revocation keeps the latest time it was given, per user.
pub async fn revocations_only_move_forward(f: &impl StoreFactory) {
    let store = f.store().await;
    let (alice, bob) = (user("alice"), user("bob"));
    assert_eq!(store.tokens_revoked_before(&alice).await.unwrap(), None);
    let t = now();
    assert_eq!(store.revoke_tokens(&alice, t).await.unwrap(), t);
    let earlier = t - Duration::hours(1);
    assert_eq!(store.revoke_tokens(&alice, earlier).await.unwrap(), t);
    assert_eq!(store.tokens_revoked_before(&alice).await.unwrap(), Some(t));
    let later = t + Duration::seconds(5);
    assert_eq!(store.revoke_tokens(&alice, later).await.unwrap(), later);
    assert_eq!(store.tokens_revoked_before(&bob).await.unwrap(), None);
}
