//! What every presence registry must do. Instantiate with `presence_conformance!()` in a
//! module that has `async fn registry() -> Arc<dyn PresenceRegistry>` (a fresh, empty one).

use chatd::{domain::UserId, presence::PresenceRegistry};

#[macro_export]
macro_rules! presence_conformance {
    () => {
        $crate::presence_conformance!(@tests
            swap_replaces_only_what_was_read,
            load_answers_in_the_order_asked,
            due_users_come_when_their_time_comes,
            leases_run_out_and_are_forgotten,
            node_users_are_tracked_per_node
        );
    };
    (@tests $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let registry = registry().await;
                $crate::conformance::presence::$name(&*registry).await;
            }
        )*
    };
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

pub async fn swap_replaces_only_what_was_read(r: &dyn PresenceRegistry) {
    let alice = user("alice");
    assert!(
        !r.swap(&alice, Some("old"), "v1", None).await.unwrap(),
        "nothing stored yet"
    );
    assert!(r.swap(&alice, None, "v1", None).await.unwrap());
    assert!(
        !r.swap(&alice, None, "v2", None).await.unwrap(),
        "no longer absent"
    );
    assert!(
        !r.swap(&alice, Some("v0"), "v2", None).await.unwrap(),
        "stale read"
    );
    assert!(r.swap(&alice, Some("v1"), "v2", None).await.unwrap());
    assert_eq!(r.load(&[alice]).await.unwrap(), vec![Some("v2".to_owned())]);
}

pub async fn load_answers_in_the_order_asked(r: &dyn PresenceRegistry) {
    let (a, b, c) = (user("a"), user("b"), user("c"));
    r.swap(&a, None, "A", None).await.unwrap();
    r.swap(&c, None, "C", None).await.unwrap();
    assert_eq!(
        r.load(&[c.clone(), b.clone(), a.clone()]).await.unwrap(),
        vec![Some("C".into()), None, Some("A".into())]
    );
    assert_eq!(r.load(&[b]).await.unwrap(), vec![None]);
    assert!(r.load(&[]).await.unwrap().is_empty());
}

pub async fn due_users_come_when_their_time_comes(r: &dyn PresenceRegistry) {
    let (a, b) = (user("a"), user("b"));
    r.swap(&a, None, "A", Some(1_000)).await.unwrap();
    r.swap(&b, None, "B", Some(2_000)).await.unwrap();
    assert!(r.due(999, 10).await.unwrap().is_empty());
    assert_eq!(r.due(1_000, 10).await.unwrap(), vec![a.clone()]);
    let mut both = r.due(5_000, 10).await.unwrap();
    both.sort();
    assert_eq!(both, vec![a.clone(), b.clone()]);
    assert_eq!(r.due(5_000, 1).await.unwrap().len(), 1, "at most the limit");
    // Rescheduling moves a user; no due time takes them off.
    r.swap(&a, Some("A"), "A2", Some(3_000)).await.unwrap();
    r.swap(&b, Some("B"), "B2", None).await.unwrap();
    assert!(r.due(2_500, 10).await.unwrap().is_empty());
    assert_eq!(r.due(3_000, 10).await.unwrap(), vec![a]);
    // A failed swap schedules nothing.
    assert!(!r.swap(&b, Some("B"), "B3", Some(10)).await.unwrap());
    assert!(!r.due(2_500, 10).await.unwrap().contains(&b));
}

pub async fn leases_run_out_and_are_forgotten(r: &dyn PresenceRegistry) {
    r.renew_lease("n1", 1_000).await.unwrap();
    r.renew_lease("n2", 5_000).await.unwrap();
    assert!(
        r.expired_nodes(1_000).await.unwrap().is_empty(),
        "valid until then"
    );
    assert_eq!(r.expired_nodes(1_001).await.unwrap(), vec!["n1".to_owned()]);
    r.renew_lease("n1", 9_000).await.unwrap();
    assert!(r.expired_nodes(2_000).await.unwrap().is_empty(), "renewed");
    r.forget_node("n2").await.unwrap();
    assert_eq!(r.expired_nodes(9_500).await.unwrap(), vec!["n1".to_owned()]);
    // One claim of an expired lease wins; it holds the lease until its own deadline.
    assert!(
        !r.claim_expired("n1", 9_000, 20_000).await.unwrap(),
        "not expired yet"
    );
    assert!(r.claim_expired("n1", 9_500, 20_000).await.unwrap());
    assert!(
        !r.claim_expired("n1", 9_500, 20_000).await.unwrap(),
        "already claimed"
    );
    assert!(r.expired_nodes(19_000).await.unwrap().is_empty());
    assert!(
        r.claim_expired("n1", 20_001, 30_000).await.unwrap(),
        "a claim runs out too"
    );
    assert!(
        !r.claim_expired("gone", 9_500, 20_000).await.unwrap(),
        "no lease, no claim"
    );
}

pub async fn node_users_are_tracked_per_node(r: &dyn PresenceRegistry) {
    let (a, b) = (user("a"), user("b"));
    r.set_node_user("n1", &a, true).await.unwrap();
    r.set_node_user("n1", &b, true).await.unwrap();
    r.set_node_user("n1", &a, true).await.unwrap();
    r.set_node_user("n2", &a, true).await.unwrap();
    let mut n1 = r.node_users("n1").await.unwrap();
    n1.sort();
    assert_eq!(n1, vec![a.clone(), b.clone()]);
    r.set_node_user("n1", &a, false).await.unwrap();
    assert_eq!(r.node_users("n1").await.unwrap(), vec![b]);
    r.forget_node("n1").await.unwrap();
    assert!(r.node_users("n1").await.unwrap().is_empty());
    assert_eq!(r.node_users("n2").await.unwrap(), vec![a]);
}
