//! What every store must do for push notifications (the `PushStore` part of the trait):
//! devices, the marks on messages still to decide, jobs and their leases, the ledger. Run
//! by `store_conformance!` with the rest.

use chatd::{
    domain::UserId,
    store::{
        NewMessage,
        push::{Device, DeviceTarget, JobKind, LedgerEntry, Outcome, Reason, Registered},
    },
};
use chrono::Duration;
use serde_json::json;

use super::store::{StoreFactory, now, room};
use crate::helpers::new_message;

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn gateway_device(owner: &str, key: &str, name: &str) -> Device {
    Device {
        id: uuid::Uuid::now_v7().to_string(),
        user: user(owner),
        name: name.to_owned(),
        created_at: now(),
        target: DeviceTarget::Gateway {
            app_id: "app".into(),
            push_key: key.into(),
            data: json!({"k": key}).as_object().unwrap().clone(),
        },
    }
}

/// A device is registered once per target and belongs to the user who registered it last;
/// each user has at most the cap.
pub async fn devices_belong_to_one_user_and_are_capped(f: &impl StoreFactory) {
    let store = f.store().await;
    let first = gateway_device("alice", "k1", "phone");
    let Registered::Created(created) = store.register_device(first.clone(), 2).await.unwrap()
    else {
        panic!("a new device is created");
    };
    assert_eq!(created, first);
    let again = Device {
        id: "other-id".into(),
        name: "renamed".into(),
        ..first.clone()
    };
    match store.register_device(again, 2).await.unwrap() {
        Registered::Existing(d) => assert_eq!(
            (d.id.as_str(), d.name.as_str()),
            (first.id.as_str(), "renamed")
        ),
        other => panic!("the same target again is the same device: {other:?}"),
    }
    let second = gateway_device("alice", "k2", "tablet");
    assert!(matches!(
        store.register_device(second.clone(), 2).await.unwrap(),
        Registered::Created(_)
    ));
    assert_eq!(
        store
            .register_device(gateway_device("alice", "k3", "x"), 2)
            .await
            .unwrap(),
        Registered::TooMany
    );
    // A user at the cap cannot take another's device either, and its owner keeps it.
    let carols = gateway_device("carol", "kc", "carol's");
    assert!(matches!(
        store.register_device(carols.clone(), 2).await.unwrap(),
        Registered::Created(_)
    ));
    let grab = gateway_device("alice", "kc", "grab");
    assert_eq!(
        store.register_device(grab, 2).await.unwrap(),
        Registered::TooMany
    );
    assert_eq!(
        store.devices(&[user("carol")]).await.unwrap(),
        std::slice::from_ref(&carols)
    );
    store
        .remove_devices(std::slice::from_ref(&carols.id))
        .await
        .unwrap();
    // Bob registers alice's phone: it is his now.
    let taken = gateway_device("bob", "k1", "bob's");
    assert!(matches!(
        store.register_device(taken.clone(), 2).await.unwrap(),
        Registered::Created(_)
    ));
    let listed = store.devices(&[user("alice"), user("bob")]).await.unwrap();
    let ids: Vec<(&str, &str)> = listed
        .iter()
        .map(|d| (d.user.as_str(), d.id.as_str()))
        .collect();
    assert_eq!(
        ids,
        [("alice", second.id.as_str()), ("bob", taken.id.as_str())]
    );
    assert!(
        !store
            .remove_device(&user("alice"), &taken.id)
            .await
            .unwrap(),
        "not hers"
    );
    assert!(store.remove_device(&user("bob"), &taken.id).await.unwrap());
    store
        .remove_devices(std::slice::from_ref(&second.id))
        .await
        .unwrap();
    assert!(
        store
            .devices(&[user("alice"), user("bob")])
            .await
            .unwrap()
            .is_empty()
    );
}

/// Messages stored with the mark are claimed by one caller at a time until decided.
pub async fn undecided_messages_are_claimed_once_until_decided(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    let t = now();
    for (id, notify) in [("m1", true), ("m2", false), ("m3", true)] {
        let new = NewMessage {
            notify,
            ..new_message(&room, "alice", id)
        };
        store.append(new, t).await.unwrap();
    }
    let later = t + Duration::seconds(1);
    let lease = later + Duration::seconds(10);
    let claim = |at, until| {
        let store = store.clone();
        async move {
            store
                .claim_undecided(later + Duration::seconds(1), at, until, 10)
                .await
                .unwrap()
        }
    };
    let too_recent = store.claim_undecided(t, later, lease, 10).await.unwrap();
    assert!(too_recent.is_empty(), "stored too recently");
    let first: Vec<u64> = claim(later, lease).await.iter().map(|m| m.seq).collect();
    assert_eq!(first, [1, 3], "only marked messages, oldest first");
    assert!(
        claim(later, lease).await.is_empty(),
        "held until the lease runs out"
    );
    let after = lease + Duration::seconds(1);
    assert_eq!(
        claim(after, after + Duration::seconds(10)).await.len(),
        2,
        "free again"
    );
    store.mark_decided(&room, 1).await.unwrap();
    let far = after + Duration::minutes(1);
    let left: Vec<u64> = claim(far, far + Duration::seconds(1))
        .await
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(left, [3]);
}

/// Messages collect in the open job of (user, room) until it is first claimed; a claimed
/// job is held under its lease, rescheduled with what it did, finished for good.
pub async fn jobs_collapse_until_claimed_and_are_leased(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    let (bob, t) = (user("bob"), now());
    let due = t + Duration::seconds(1);
    for seq in [2, 1, 2] {
        store
            .enqueue_job(&bob, &room, JobKind::Message, seq, due, t)
            .await
            .unwrap();
    }
    assert!(
        store
            .claim_jobs("n1", t, t + Duration::seconds(5), 10)
            .await
            .unwrap()
            .is_empty(),
        "not due"
    );
    let mut jobs = store
        .claim_jobs("n1", due, due + Duration::seconds(5), 10)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let mut job = jobs.remove(0);
    assert_eq!(
        (job.seqs.clone(), job.kind, job.attempts, job.user.clone()),
        (vec![1, 2], JobKind::Message, 0, bob.clone())
    );
    assert!(
        store
            .claim_jobs("n2", due, due + Duration::seconds(5), 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    // A message after the claim starts a new job.
    store
        .enqueue_job(&bob, &room, JobKind::Message, 3, due, t)
        .await
        .unwrap();
    let newer = store
        .claim_jobs("n2", due, due + Duration::seconds(5), 10)
        .await
        .unwrap();
    assert_eq!(
        newer.iter().map(|j| j.seqs.clone()).collect::<Vec<_>>(),
        [vec![3]]
    );
    job.attempts = 1;
    job.done_devices = vec!["d1".into()];
    job.due_at = due + Duration::seconds(2);
    assert!(store.reschedule_job(&job).await.unwrap());
    assert!(
        !store.reschedule_job(&job).await.unwrap(),
        "that lease was given back"
    );
    assert!(
        store
            .claim_jobs(
                "n2",
                due + Duration::seconds(1),
                due + Duration::seconds(9),
                10
            )
            .await
            .unwrap()
            .is_empty()
    );
    let retried = store
        .claim_jobs("n2", job.due_at, job.due_at + Duration::seconds(5), 10)
        .await
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (
            retried[0].id.as_str(),
            retried[0].attempts,
            retried[0].done_devices.clone()
        ),
        (job.id.as_str(), 1, vec!["d1".to_owned()])
    );
    // The first claim's holder comes back late: it can neither finish nor reschedule it.
    assert!(!store.finish_job(&job).await.unwrap());
    assert!(!store.reschedule_job(&job).await.unwrap());
    assert!(store.finish_job(&retried[0]).await.unwrap());
    assert!(store.finish_job(&newer[0]).await.unwrap());
    let far = due + Duration::minutes(5);
    assert!(
        store
            .claim_jobs("n3", far, far + Duration::seconds(5), 10)
            .await
            .unwrap()
            .is_empty(),
        "finished for good"
    );
    // A badge keeps the furthest read position.
    for seq in [5, 3] {
        store
            .enqueue_job(&bob, &room, JobKind::Badge, seq, t, t)
            .await
            .unwrap();
    }
    let badges = store
        .claim_jobs("n1", far, far + Duration::seconds(5), 10)
        .await
        .unwrap();
    assert_eq!(
        badges
            .iter()
            .map(|j| (j.kind, j.seqs.clone()))
            .collect::<Vec<_>>(),
        [(JobKind::Badge, vec![5])]
    );
}

/// Enqueues racing from several nodes make one open job per (user, room).
pub async fn concurrent_enqueues_make_one_job(f: &impl StoreFactory) {
    let nodes = f.nodes(4).await;
    let room = room(&*nodes[0]).await;
    let (bob, t) = (user("bob"), now());
    let enqueues: Vec<_> = (1..=40u64)
        .map(|seq| {
            let (store, room, bob) = (nodes[seq as usize % 4].clone(), room.clone(), bob.clone());
            tokio::spawn(async move {
                store
                    .enqueue_job(&bob, &room, JobKind::Message, seq, t, t)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for e in enqueues {
        e.await.unwrap();
    }
    let jobs = nodes[0]
        .claim_jobs("n", t, t + Duration::seconds(5), 10)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].seqs, (1..=40).collect::<Vec<_>>());
}

/// The first decision about a message and member stands; later writes replace it only
/// through `update_ledger`; reads go by user, room and seq, newest first.
pub async fn the_ledger_keeps_first_decisions_and_answers_by_room_and_seq(f: &impl StoreFactory) {
    let store = f.store().await;
    let room = room(&*store).await;
    let t = now();
    let mut messages = Vec::new();
    for id in ["m1", "m2", "m3"] {
        messages.push(
            store
                .append(new_message(&room, "alice", id), t)
                .await
                .unwrap()
                .message,
        );
    }
    let bob = user("bob");
    let entry = |i: usize, outcome, reason, at| {
        LedgerEntry::decided(&messages[i], &bob, outcome, reason, at)
    };
    let first = [
        entry(0, Outcome::Queued, None, t),
        entry(
            1,
            Outcome::Skipped,
            Some(Reason::Online),
            t + Duration::seconds(1),
        ),
    ];
    assert_eq!(store.record_decisions(&first).await.unwrap(), first);
    let late = [
        entry(0, Outcome::Skipped, Some(Reason::NoDevice), t),
        entry(2, Outcome::Queued, None, t + Duration::seconds(2)),
    ];
    let stored = store.record_decisions(&late).await.unwrap();
    assert_eq!(
        stored,
        [first[0].clone(), late[1].clone()],
        "the first decision stands"
    );
    // One job owns a queued entry until it settles it; skipped ones are nobody's.
    let got = store
        .claim_ledger(&bob, &room, &[3, 1, 9, 2], "job-a")
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|e| (e.seq, e.outcome)).collect::<Vec<_>>(),
        [(1, Outcome::Queued), (3, Outcome::Queued)]
    );
    let theirs = store
        .claim_ledger(&bob, &room, &[1, 3], "job-b")
        .await
        .unwrap();
    assert!(theirs.is_empty(), "owned by job-a");
    assert_eq!(
        store
            .claim_ledger(&bob, &room, &[1], "job-a")
            .await
            .unwrap()
            .len(),
        1
    );
    let mut retrying = late[1].clone();
    retrying.attempts = 2;
    store
        .update_ledger(std::slice::from_ref(&retrying))
        .await
        .unwrap();
    let theirs = store
        .claim_ledger(&bob, &room, &[3], "job-b")
        .await
        .unwrap();
    assert!(theirs.is_empty(), "an update keeps the owner");
    assert!(!store.notified_between(&bob, &room, 0, 3).await.unwrap());
    let mut sent = first[0].clone();
    sent.outcome = Outcome::Sent;
    sent.updated_at = t + Duration::seconds(3);
    store.update_ledger(&[sent.clone()]).await.unwrap();
    assert!(store.notified_between(&bob, &room, 0, 1).await.unwrap());
    assert!(!store.notified_between(&bob, &room, 1, 3).await.unwrap());
    let newest: Vec<u64> = store
        .ledger(&bob, Some(&room), 2)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(newest, [3, 2], "newest decision first");
    assert_eq!(store.ledger(&bob, None, 10).await.unwrap()[2], sent);
    assert!(
        store
            .ledger(&user("carol"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let cutoff = t + Duration::milliseconds(1500);
    assert_eq!(
        store.expire_ledger(cutoff, 10).await.unwrap(),
        1,
        "only m2 was last updated before"
    );
    assert_eq!(store.ledger(&bob, None, 10).await.unwrap().len(), 2);
}
