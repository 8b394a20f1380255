//! Offline push notifications end to end: real chatd processes (three sharing the
//! MongoDB-wire server and Redis, or one on SQLite), a real push gateway and a real Web Push
//! service on 127.0.0.1 (tests/api/push_receivers.rs), real sockets throughout.

use std::time::{Duration, Instant};

use chatd::domain::RoomId;
use chatd_client::ServerFrame;
use serde_json::{Value, json};

use crate::{
    alive::{Deployment, Live},
    helpers::{Reply, reply},
    push_receivers::{Behaviour, Gateway, PushService, eventually, signature_holds},
};

const SECRET: &str = "gateway-secret-for-tests";

/// Push settings for a test: short windows, the gateway at `url`.
fn push_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CHATD__PUSH__GATEWAY_URL", url.to_owned()),
        ("CHATD__PUSH__GATEWAY_SECRET", SECRET.to_owned()),
        ("CHATD__PUSH__COLLAPSE_MS", "1000".to_owned()),
        ("CHATD__PUSH__POLL_MS", "50".to_owned()),
        ("CHATD__PUSH__REQUEST_TIMEOUT_MS", "1000".to_owned()),
        ("CHATD__STORE__TIMEOUT_MS", "2000".to_owned()),
        ("CHATD__PUSH__LEASE_MS", "6000".to_owned()),
        ("CHATD__PUSH__SWEEP_AFTER_MS", "6000".to_owned()),
        ("CHATD__PUSH__RETRY_INITIAL_MS", "200".to_owned()),
        ("CHATD__PUSH__RETRY_MAX_MS", "2000".to_owned()),
    ]
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn call(
    d: &Deployment,
    node: usize,
    user: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let client = d.client(node, user);
    let url = format!("{}{path}", client.base());
    let http = reqwest::Client::new();
    let request = match method {
        "POST" => http.post(url),
        "DELETE" => http.delete(url),
        _ => http.get(url),
    };
    let request = request.bearer_auth(client.token());
    reply(match body {
        Some(body) => request.json(&body),
        None => request,
    })
    .await
}

async fn register_gateway(d: &Deployment, node: usize, user: &str, key: &str) -> String {
    let body =
        json!({"kind": "gateway", "appId": "com.example.chat", "pushKey": key, "data": {"k": key}});
    let r = call(d, node, user, "POST", "/v1/me/devices", Some(body)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn group(d: &Deployment, node: usize, owner: &str, members: &[&str]) -> RoomId {
    let members: Vec<String> = members.iter().map(|m| d.user(m)).collect();
    let r = call(
        d,
        node,
        owner,
        "POST",
        "/v1/rooms",
        Some(json!({"name": "team", "members": members})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    RoomId::parse(r.body["id"].as_str().unwrap()).unwrap()
}

async fn send(live: &mut Live, room: &RoomId, id: &str, text: &str) -> u64 {
    live.send(json!({"type": "send", "room": room, "clientMsgId": id, "text": text}))
        .await;
    match live
        .next_matching(
            |f| matches!(f, ServerFrame::Ack { client_msg_id, .. } if client_msg_id == id),
        )
        .await
    {
        ServerFrame::Ack { seq, .. } => seq,
        other => panic!("{other:?}"),
    }
}

async fn ledger(d: &Deployment, node: usize, user: &str, room: &RoomId) -> Vec<Value> {
    let r = call(
        d,
        node,
        user,
        "GET",
        &format!("/v1/me/notifications?room={room}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["notifications"].as_array().unwrap().clone()
}

/// The ledger entry of `seq`, once it has settled past `queued`.
async fn settled(d: &Deployment, node: usize, user: &str, room: &RoomId, seq: u64) -> Value {
    let deadline = Instant::now() + crate::helpers::WAIT;
    loop {
        let entries = ledger(d, node, user, room).await;
        if let Some(e) = entries
            .iter()
            .find(|e| e["seq"] == seq && e["outcome"] != "queued")
        {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "seq {seq} never settled: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With three nodes: an offline member gets one signed notification per message (one per
/// burst, with its count), an online one none, a message read before it was due none; a
/// read sends a badge-only update to every device; a rejected push key removes its device;
/// the ledger explains each case.
#[tokio::test(flavor = "multi_thread")]
async fn offline_members_are_notified_once_per_message_across_three_nodes() {
    let gateway = Gateway::start(SECRET).await;
    let env = push_env(&gateway.url);
    let d = Deployment::cluster(3, &as_refs(&env));
    let (alice, bob, carol) = ("alice", "bob", "carol");
    let bob_phone = register_gateway(&d, 1, bob, "bob-phone").await;
    let bob_tablet = register_gateway(&d, 2, bob, "bob-tablet").await;
    register_gateway(&d, 0, carol, "carol-phone").await;
    let room = group(&d, 0, alice, &[bob, carol]).await;
    let mut alice_live = d.live(0, alice).await;
    let _carol_live = d.live(2, carol).await;

    // One message: one request, signed, naming both of bob's devices; none for carol.
    let s1 = send(&mut alice_live, &room, "m1", "hello bob").await;
    let first = gateway.wait_for(room.as_str(), 1).await.remove(0);
    assert!(first.signed, "the signature must verify");
    let n = first.notification();
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["sender"], d.user(alice));
    assert_eq!(n["room_name"], "team");
    assert_eq!(n["content"]["body"], "hello bob");
    assert_eq!(n["chatd"]["count"], 1);
    assert_eq!(n["chatd"]["seq"], s1);
    let keys: Vec<&str> = n["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["pushkey"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["bob-phone", "bob-tablet"]);
    assert_eq!(n["devices"][0]["data"], json!({"k": "bob-phone"}));
    let history = d.get(1, bob, &format!("/v1/rooms/{room}/messages")).await;
    assert_eq!(n["event_id"], history["messages"][0]["id"]);
    // A tampered body fails the receiver's check.
    let mut tampered = first.raw.clone();
    *tampered.iter_mut().find(|b| **b == b'h').unwrap() = b'j';
    assert!(!signature_holds(
        SECRET.as_bytes(),
        &first.timestamp,
        &tampered,
        &first.signature
    ));
    assert!(signature_holds(
        SECRET.as_bytes(),
        &first.timestamp,
        &first.raw,
        &first.signature
    ));

    // A burst within the collapse window: one notification that counts three.
    let mut burst = Vec::new();
    for i in 0..3 {
        burst.push(
            send(
                &mut alice_live,
                &room,
                &format!("b{i}"),
                &format!("burst {i}"),
            )
            .await,
        );
    }
    let second = gateway.wait_for(room.as_str(), 2).await.remove(1);
    assert_eq!(second.notification()["chatd"]["count"], 3);
    assert_eq!(second.notification()["content"]["body"], "burst 2");

    // Read before it was due: nothing is sent.
    let s_read = send(&mut alice_live, &room, "r1", "read me at once").await;
    let r = call(
        &d,
        1,
        bob,
        "POST",
        &format!("/v1/rooms/{room}/read"),
        Some(json!({"seq": s_read})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let read_entry = settled(&d, 2, bob, &room, s_read).await;
    assert_eq!(
        (
            read_entry["outcome"].as_str(),
            read_entry["reason"].as_str()
        ),
        (Some("skipped"), Some("read"))
    );

    // That read passed notified messages: a badge-only update to every device of bob's.
    let badge = eventually("a badge update", || {
        gateway
            .requests_for(room.as_str())
            .into_iter()
            .find(|r| r.notification()["chatd"]["type"] == "badge")
    })
    .await;
    assert!(badge.signed);
    let b = badge.notification();
    assert!(
        b.get("content").is_none() && b.get("event_id").is_none(),
        "{b}"
    );
    assert_eq!(b["counts"]["unread"], 0);
    assert_eq!(b["prio"], "low");
    assert_eq!(b["devices"].as_array().unwrap().len(), 2);

    // The ledger, from any node: sent, collapsed, skipped because read; carol: online.
    let entries = ledger(&d, 0, bob, &room).await;
    let entry = |seq: u64| entries.iter().find(|e| e["seq"] == seq).unwrap().clone();
    assert_eq!(entry(s1)["outcome"], "sent");
    let first_entry = entry(s1);
    let devices: Vec<&str> = first_entry["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices.len(), 2);
    assert!(devices.contains(&bob_phone.as_str()) && devices.contains(&bob_tablet.as_str()));
    assert_eq!(entry(burst[0])["outcome"], "collapsed");
    assert_eq!(entry(burst[0])["collapsedInto"], burst[2]);
    assert_eq!(entry(burst[2])["outcome"], "sent");
    let carols = ledger(&d, 2, carol, &room).await;
    assert!(
        carols
            .iter()
            .all(|e| e["outcome"] == "skipped" && e["reason"] == "online"),
        "{carols:?}"
    );
    assert_eq!(carols.len(), 5, "m1, the burst of three, the read one");
    let alices = ledger(&d, 0, alice, &room).await;
    assert!(alices.is_empty(), "never for the sender: {alices:?}");

    // The gateway rejects the tablet's key: that device is removed, the phone stays.
    gateway.set(Behaviour::Reject(vec!["bob-tablet".into()]));
    let s_last = send(&mut alice_live, &room, "m-last", "after the rejection").await;
    let last = settled(&d, 1, bob, &room, s_last).await;
    assert_eq!(last["outcome"], "sent");
    let statuses: Vec<(&str, &str)> = last["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["device"].as_str().unwrap(), d["status"].as_str().unwrap()))
        .collect();
    assert!(
        statuses.contains(&(bob_tablet.as_str(), "rejected")),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&(bob_phone.as_str(), "sent")),
        "{statuses:?}"
    );
    let devices = call(&d, 0, bob, "GET", "/v1/me/devices", None).await;
    let ids: Vec<&str> = devices.body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [bob_phone.as_str()]);

    // Exactly one request per notification: every idempotency key once.
    let all = gateway.requests_for(room.as_str());
    let keys: std::collections::HashSet<_> = all.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys.len(), all.len(), "a notification was sent twice");
    // Messages: m1, the burst, the last. A read that races the sending of a notification may
    // clear the badge twice (once for the read, once when that notification settles).
    let kinds: Vec<_> = all
        .iter()
        .map(|r| {
            r.notification()["chatd"]["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let messages = kinds.iter().filter(|k| *k == "message").count();
    let badges = kinds.iter().filter(|k| *k == "badge").count();
    assert_eq!(
        (messages, (1..=2).contains(&badges)),
        (3, true),
        "{:?}",
        all.iter()
            .map(|r| r.notification().clone())
            .collect::<Vec<_>>()
    );
}

/// SIGKILL the node holding a claimed job: another node sends it, with the same
/// idempotency key, and the receiver delivers it once.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_held_by_a_killed_node_is_sent_by_another() {
    let gateway = Gateway::start(SECRET).await;
    gateway.set(Behaviour::Hang);
    let mut env = push_env(&gateway.url);
    // The holder's request hangs (3 s to its deadline): it is killed well before that.
    let longer = [
        ("CHATD__PUSH__REQUEST_TIMEOUT_MS", "3000"),
        ("CHATD__STORE__TIMEOUT_MS", "1000"),
        ("CHATD__PUSH__LEASE_MS", "8000"),
    ];
    env.retain(|(k, _)| !longer.iter().any(|(l, _)| l == k));
    env.extend(longer.iter().map(|(k, v)| (*k, v.to_string())));
    let mut d = Deployment::cluster(3, &as_refs(&env));
    register_gateway(&d, 1, "bob", "bob-phone").await;
    let room = group(&d, 0, "alice", &["bob"]).await;
    let mut alice = d.live(0, "alice").await;
    send(&mut alice, &room, "k1", "survive the crash").await;
    let held = gateway.wait_for(room.as_str(), 1).await.remove(0);
    // Which node holds it: the job's lease names it.
    let client = mongodb::Client::with_uri_str(&crate::servers::Mongo::shared().uri)
        .await
        .unwrap();
    let jobs = client
        .database(d.database.as_deref().unwrap())
        .collection::<mongodb::bson::Document>("pushJobs");
    let job = jobs
        .find_one(mongodb::bson::doc! {"_id": &held.key})
        .await
        .unwrap()
        .expect("the job is stored");
    let holder = job.get_str("leaseNode").unwrap().to_owned();
    let index = d
        .nodes
        .iter()
        .position(|n| n.name == holder)
        .expect("a node of ours holds it");
    d.nodes[index].kill();
    gateway.set(Behaviour::Accept);
    eventually("the job sent by another node", || {
        gateway.delivered().contains(&held.key).then_some(())
    })
    .await;
    let again = gateway.requests_for(room.as_str());
    assert!(
        again.iter().all(|r| r.key == held.key),
        "one key for the one notification"
    );
    let answered = again.iter().filter(|r| r.answered == 200).count();
    assert_eq!(answered, 1, "delivered once: {again:?}");
    let survivor = (index + 1) % 3;
    let entry = settled(&d, survivor, "bob", &room, 1).await;
    assert_eq!(entry["outcome"], "sent");
}

/// A gateway that fails (500s), then hangs, is retried with growing delays until it
/// answers, while chat between online members goes on at its pace.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_gateway_is_retried_with_backoff_and_never_holds_chat() {
    let gateway = Gateway::start(SECRET).await;
    let env = push_env(&gateway.url);
    let d = Deployment::single(&as_refs(&env));
    register_gateway(&d, 0, "bob", "bob-phone").await;
    let room = group(&d, 0, "alice", &["bob", "carol"]).await;
    let mut alice = d.live(0, "alice").await;
    let mut carol = d.live(0, "carol").await;

    // Chat latency with a healthy gateway, then with one that fails and hangs.
    let healthy = chat(&mut alice, &mut carol, &room, "h", 20).await;
    gateway.set(Behaviour::Status(500));
    let s = send(&mut alice, &room, "fail", "retry me").await;
    eventually("three failed attempts", || {
        (gateway
            .requests_for(room.as_str())
            .iter()
            .filter(|r| r.answered == 500)
            .count()
            >= 3)
            .then_some(())
    })
    .await;
    gateway.set(Behaviour::Hang);
    eventually("a held request", || (gateway.held() > 0).then_some(())).await;
    let hanging = chat(&mut alice, &mut carol, &room, "x", 20).await;
    // Delivered while the gateway held a request: push work is off the chat path.
    let still_held = gateway.held();
    gateway.set(Behaviour::Accept);
    let entry = settled(&d, 0, "bob", &room, s).await;
    assert_eq!(entry["outcome"], "sent", "{entry}");
    let attempts: Vec<Instant> = gateway
        .requests_for(room.as_str())
        .iter()
        .filter(|r| r.notification()["chatd"]["seq"] == s)
        .map(|r| r.at)
        .collect();
    assert!(attempts.len() >= 5, "{} attempts", attempts.len());
    assert!(entry["attempts"].as_u64().unwrap() >= 4, "{entry}");
    // Equal jitter: the k-th delay is at least half of 200 ms x 2^(k-1) (capped at 2 s).
    for (k, pair) in attempts.windows(2).enumerate().take(3) {
        let floor = Duration::from_millis((100u64 << k).min(1000));
        assert!(
            pair[1] - pair[0] >= floor,
            "retry {k} came after {:?}",
            pair[1] - pair[0]
        );
    }
    let keys: std::collections::HashSet<_> = gateway
        .requests_for(room.as_str())
        .iter()
        .filter(|r| r.notification()["chatd"]["seq"] == s)
        .map(|r| r.key.clone())
        .collect();
    assert_eq!(keys.len(), 1, "every attempt carries the job's one key");
    let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "chat latency, healthy gateway: p50 {:?} p95 {:?}; failing then hanging gateway \
         ({still_held} request held): p50 {:?} p95 {:?}",
        p(&healthy, 0.5),
        p(&healthy, 0.95),
        p(&hanging, 0.5),
        p(&hanging, 0.95)
    );
    assert!(still_held > 0, "the chat ran while a request was held");
}

/// Send-to-receive times of `n` messages from `from` to `to`, sorted.
async fn chat(
    from: &mut Live,
    to: &mut Live,
    room: &RoomId,
    label: &str,
    n: usize,
) -> Vec<Duration> {
    let mut took = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        let seq = send(from, room, &format!("{label}{i}"), "chat").await;
        to.next_matching(|f| matches!(f, ServerFrame::Message(m) if m.seq == seq))
            .await;
        took.push(started.elapsed());
    }
    took.sort();
    took
}

/// Web Push: the payload reaches the subscription encrypted for its keys with a valid VAPID
/// token, after edits (current text) and without deleted messages; a 410 removes the
/// subscription; registration refuses what it must.
#[tokio::test(flavor = "multi_thread")]
async fn web_push_is_encrypted_for_the_subscription_and_a_410_removes_it() {
    let service = PushService::start().await;
    let (private, public) = chatd::push::webpush::VapidKey::generate();
    let env = vec![
        ("CHATD__PUSH__VAPID_PRIVATE_KEY", private),
        (
            "CHATD__PUSH__WEBPUSH_ALLOWED_HOSTS",
            "[\"127.0.0.1\"]".to_owned(),
        ),
        ("CHATD__PUSH__WEBPUSH_ALLOW_HTTP", "true".to_owned()),
        ("CHATD__PUSH__WEBPUSH_TTL_SECS", "3600".to_owned()),
        ("CHATD__PUSH__COLLAPSE_MS", "1000".to_owned()),
        ("CHATD__PUSH__POLL_MS", "50".to_owned()),
        ("CHATD__PUSH__MAX_DEVICES_PER_USER", "2".to_owned()),
    ];
    let d = Deployment::single(&as_refs(&env));
    let offer = d.get(0, "bob", "/v1/push").await;
    assert_eq!(
        offer,
        json!({"webPush": {"vapidPublicKey": public}, "gateway": false, "includeText": true})
    );

    let browser = service.subscriber("bob-browser");
    let subscription = browser.subscription(&service.base);
    let register = |subscription: Value| {
        call(
            &d,
            0,
            "bob",
            "POST",
            "/v1/me/devices",
            Some(json!({"kind": "webpush", "subscription": subscription, "name": "Firefox"})),
        )
    };
    let r = register(subscription.clone()).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let again = register(subscription.clone()).await;
    assert_eq!(
        (again.status, again.body["id"].as_str()),
        (200, Some(id.as_str())),
        "idempotent"
    );
    // What registration refuses, storing nothing.
    let mut bad_keys = subscription.clone();
    bad_keys["keys"]["p256dh"] = json!("bm90IGEga2V5");
    let mut elsewhere = subscription.clone();
    elsewhere["endpoint"] = json!("http://169.254.169.254/latest");
    for (bad, code) in [(bad_keys, "bad_field"), (elsewhere, "bad_field")] {
        let r = register(bad).await;
        assert_eq!((r.status, r.code()), (400, code), "{:?}", r.body);
    }
    let gw = call(
        &d,
        0,
        "bob",
        "POST",
        "/v1/me/devices",
        Some(json!({"kind": "gateway", "appId": "a", "pushKey": "k"})),
    )
    .await;
    assert_eq!((gw.status, gw.code()), (409, "push_not_configured"));
    for i in 0..2 {
        let other = service
            .subscriber(&format!("spare{i}"))
            .subscription(&service.base);
        let r = register(other).await;
        assert_eq!(r.status, if i == 0 { 201 } else { 409 }, "{:?}", r.body);
        if i == 1 {
            assert_eq!(r.code(), "too_many_devices");
        }
    }
    let spare = call(&d, 0, "bob", "GET", "/v1/me/devices", None).await.body["devices"][1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        call(
            &d,
            0,
            "bob",
            "DELETE",
            &format!("/v1/me/devices/{spare}"),
            None
        )
        .await
        .status,
        204
    );
    let gone = call(
        &d,
        0,
        "bob",
        "DELETE",
        &format!("/v1/me/devices/{spare}"),
        None,
    )
    .await;
    assert_eq!((gone.status, gone.code()), (404, "device_not_found"));

    let room = group(&d, 0, "alice", &["bob"]).await;
    let mut alice = d.live(0, "alice").await;
    // Edited within the window: the notification shows the edit.
    let s1 = send(&mut alice, &room, "w1", "typo").await;
    alice
        .send(
            json!({"type": "edit", "room": room, "clientMsgId": "w1e", "seq": s1, "text": "fixed"}),
        )
        .await;
    alice
        .next_matching(
            |f| matches!(f, ServerFrame::Ack { client_msg_id, .. } if client_msg_id == "w1e"),
        )
        .await;
    let pushed = service.wait_for(1).await.remove(0);
    assert_eq!(pushed.subscriber, "bob-browser");
    assert_eq!(pushed.payload["type"], "message");
    assert_eq!(pushed.payload["text"], "fixed");
    assert_eq!(pushed.payload["count"], 1);
    assert_eq!(pushed.payload["seq"], s1);
    assert_eq!(pushed.payload["sender"], d.user("alice"));
    assert_eq!(pushed.payload["roomName"], "team");
    assert_eq!(pushed.payload["unread"], 1);
    let id = pushed.payload["id"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "the job's id, the same on a resend");
    assert!(pushed.vapid_ok, "the VAPID token must verify");
    assert_eq!(pushed.vapid_key, public);
    assert_eq!(
        (pushed.ttl.as_str(), pushed.urgency.as_str()),
        ("3600", "high")
    );
    assert_eq!(pushed.topic.len(), 32);

    // Deleted within the window: nothing is sent for it.
    let s2 = send(&mut alice, &room, "w2", "oops").await;
    alice
        .send(json!({"type": "delete", "room": room, "clientMsgId": "w2d", "seq": s2}))
        .await;
    alice
        .next_matching(
            |f| matches!(f, ServerFrame::Ack { client_msg_id, .. } if client_msg_id == "w2d"),
        )
        .await;
    let deleted = settled(&d, 0, "bob", &room, s2).await;
    assert_eq!(
        (deleted["outcome"].as_str(), deleted["reason"].as_str()),
        (Some("skipped"), Some("deleted"))
    );
    assert_eq!(service.received().len(), 1);

    // The push service says the subscription is gone: it is removed.
    service.answer(410);
    let s3 = send(&mut alice, &room, "w3", "anyone there?").await;
    let failed = settled(&d, 0, "bob", &room, s3).await;
    assert_eq!(
        (failed["outcome"].as_str(), failed["reason"].as_str()),
        (Some("failed"), Some("rejected")),
        "{failed}"
    );
    let devices = call(&d, 0, "bob", "GET", "/v1/me/devices", None).await;
    assert_eq!(devices.body["devices"], json!([]));
    let s4 = send(&mut alice, &room, "w4", "no device now").await;
    let none = settled(&d, 0, "bob", &room, s4).await;
    assert_eq!(none["reason"], "no_device");
}
