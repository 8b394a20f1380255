//! This node's live connections, by room and by user, and the fan-out to them.
//!
//! The hub never awaits a recipient: fan-out is `try_send` into each connection's bounded
//! queue, and a connection whose queue is full is closed as a slow consumer. The maps are
//! sharded (DashMap), so there is no global lock on the delivery path.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    bus::{Bus, Delivery, Topic},
    domain::{RoomId, UserId, UserPresence},
    store::Store,
};

pub mod conn;
pub mod cursor;
pub mod delivery;
pub mod dispatcher;
pub mod subscriptions;
pub mod typing;

pub use conn::{ConnHandle, ConnId, LiveMessage, Outbound};
pub use subscriptions::JoinError;
use subscriptions::Subscriptions;

/// How long a topic stays subscribed after its last local user left.
const SUBSCRIPTION_LINGER: Duration = Duration::from_secs(2);

/// What the hub's own tasks need to know of the configuration.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub typing_ttl: Duration,
    pub typing_coalesce: Duration,
    /// Member changes in groups up to this size change their members' contacts.
    pub roster_max_members: usize,
    /// This node's id (in trace logs).
    pub node: String,
}

/// Room sizes remembered for [`Hub::resized`], at most.
const MAX_ROOM_SIZES: usize = 100_000;

/// Bus subscriptions taken at once when a connection starts following its contacts.
const WATCH_CONCURRENCY: usize = 64;

pub struct Hub {
    rooms: DashMap<RoomId, Vec<Arc<ConnHandle>>>,
    users: DashMap<UserId, Vec<Arc<ConnHandle>>>,
    /// Connections by the contacts whose presence they follow.
    watchers: DashMap<UserId, Vec<Arc<ConnHandle>>>,
    pub(crate) typing: typing::TypingBoard,
    /// Traces of messages on their way from the bus to the delivery core.
    pub traces: Traces,
    /// Revoked tokens, as this node knows them (the bus tells it of new ones).
    pub revocations: crate::revocation::Revocations,
    /// Memberships this node may trust without the store (it follows their rooms).
    pub memberships: Arc<crate::membership::MembershipCache>,
    /// Member counts of rooms whose member list changed, as last heard (see `resized`).
    room_sizes: DashMap<RoomId, usize>,
    settings: HubSettings,
    subscriptions: Arc<Subscriptions>,
    next_conn: AtomicU64,
    /// Registered connections (kept apart from the maps so counting is O(1)).
    live: AtomicUsize,
    /// Connection slots, reserved before a WebSocket upgrade (see [`Hub::reserve`]).
    slots: Slots,
}

/// The traces of messages that arrived from the bus, until the delivery core hands them to
/// connections. A repeat the core drops leaves its trace behind: past a bound, traces older
/// than a few seconds go (those in flight stay).
#[derive(Default)]
pub struct Traces(DashMap<(RoomId, crate::domain::Seq), (crate::bus::Trace, Instant)>);

impl Traces {
    const MAX: usize = 10_000;
    const KEEP: Duration = Duration::from_secs(10);

    pub fn note(&self, message: &crate::domain::Message, trace: crate::bus::Trace) {
        if self.0.len() >= Self::MAX {
            self.0.retain(|_, (_, at)| at.elapsed() < Self::KEEP);
        }
        if self.0.len() < Self::MAX {
            let key = (message.room.clone(), message.seq);
            self.0.insert(key, (trace, Instant::now()));
        }
    }

    pub fn take(&self, message: &crate::domain::Message) -> Option<crate::bus::Trace> {
        self.0
            .remove(&(message.room.clone(), message.seq))
            .map(|(_, (trace, _))| trace)
    }
}

#[derive(Default)]
struct Slots {
    total: AtomicUsize,
    per_user: DashMap<UserId, usize>,
}

/// A reserved place for one connection under the node's caps; given back when dropped,
/// however the connection ends (a panic included).
pub struct ConnectionSlot {
    hub: Arc<Hub>,
    user: UserId,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let slots = &self.hub.slots;
        if let dashmap::Entry::Occupied(mut e) = slots.per_user.entry(self.user.clone()) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        slots.total.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hub {
    /// Builds the hub and starts its dispatcher, which consumes `deliveries` until `shutdown`.
    pub fn start(
        bus: Arc<dyn Bus>,
        deliveries: mpsc::Receiver<Delivery>,
        store: Arc<dyn Store>,
        settings: HubSettings,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Arc<Self> {
        let (shards, inboxes) = dispatcher::shards();
        let hub = Arc::new(Self {
            revocations: crate::revocation::Revocations::new(store.clone()),
            memberships: Arc::default(),
            traces: Traces::default(),
            rooms: DashMap::new(),
            users: DashMap::new(),
            watchers: DashMap::new(),
            typing: typing::TypingBoard::new(settings.typing_ttl),
            room_sizes: DashMap::new(),
            settings,
            subscriptions: Subscriptions::new(
                bus,
                store.clone(),
                shards.clone(),
                SUBSCRIPTION_LINGER,
                tracker.clone(),
                shutdown.clone(),
            ),
            next_conn: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            slots: Slots::default(),
        });
        dispatcher::start(
            &hub,
            store,
            (shards, inboxes),
            deliveries,
            tracker,
            &shutdown,
        );
        hub
    }

    /// Reserves a connection slot for `user`, atomically against concurrent reservations, so
    /// the caps hold exactly: at most `max_total` on the node, `max_per_user` per user.
    pub fn reserve(
        self: &Arc<Self>,
        user: &UserId,
        max_total: usize,
        max_per_user: usize,
    ) -> Result<ConnectionSlot, &'static str> {
        let slots = &self.slots;
        if slots.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            slots.total.fetch_sub(1, Ordering::AcqRel);
            return Err("this node has too many connections");
        }
        // The entry holds its shard's lock: check and increment are one step.
        let mut count = slots.per_user.entry(user.clone()).or_insert(0);
        if *count >= max_per_user {
            let unused = *count == 0;
            drop(count);
            if unused {
                slots.per_user.remove_if(user, |_, n| *n == 0);
            }
            slots.total.fetch_sub(1, Ordering::AcqRel);
            return Err("too many connections for this user");
        }
        *count += 1;
        Ok(ConnectionSlot {
            hub: self.clone(),
            user: user.clone(),
        })
    }

    pub fn new_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes a new connection reachable by user: subscribed to its user's topic, so it hears
    /// of membership changes. Its rooms follow with [`join_all`](Self::join_all).
    pub async fn register(&self, conn: &Arc<ConnHandle>) -> Result<(), JoinError> {
        self.subscriptions
            .acquire(&Topic::User(conn.user.clone()))
            .await?;
        self.users
            .entry(conn.user.clone())
            .or_default()
            .push(conn.clone());
        self.live.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("chatd_connections").increment(1.0);
        Ok(())
    }

    /// Joins `rooms`; returns once events of all of them reach this node.
    pub async fn join_all(
        &self,
        conn: &Arc<ConnHandle>,
        rooms: &[RoomId],
    ) -> Result<(), JoinError> {
        futures_util::future::try_join_all(rooms.iter().map(|room| self.join(conn, room))).await?;
        Ok(())
    }

    /// Asks every local connection to re-read its user's memberships (after the bus may
    /// have lost membership events).
    pub fn recheck_all_memberships(&self) {
        for conns in self.users.iter() {
            conns.iter().for_each(|c| c.memberships_changed());
        }
    }

    /// Asks every local connection for a fresh presence snapshot (after the bus may have
    /// lost presence changes); it comes with the memberships' re-read.
    pub fn refresh_all_presence(&self) {
        for conns in self.users.iter() {
            conns.iter().for_each(|c| c.presence_lost());
        }
    }

    /// Records a room's new member count; true if the room is or was small enough for its
    /// members to see each other's presence (their contacts changed).
    pub fn resized(&self, room: &RoomId, members: usize) -> bool {
        let max = self.settings.roster_max_members;
        if self.room_sizes.len() >= MAX_ROOM_SIZES {
            self.room_sizes.clear(); // unknown sizes only cost a re-read of contacts
        }
        let before = self.room_sizes.insert(room.clone(), members);
        members <= max || before.is_none_or(|n| n <= max)
    }

    /// Follows the presence of `users` on `conn`; returns once their changes reach this node.
    /// On error, what was taken stays recorded on the connection and `unregister` gives it
    /// back.
    pub async fn watch(&self, conn: &Arc<ConnHandle>, users: &[UserId]) -> Result<(), JoinError> {
        use futures_util::TryStreamExt;
        let new: Vec<UserId> = {
            let watching = conn.watching.lock().expect("watching lock");
            users
                .iter()
                .filter(|u| !watching.contains(*u))
                .cloned()
                .collect()
        };
        futures_util::stream::iter(new.into_iter().map(Ok))
            .try_for_each_concurrent(WATCH_CONCURRENCY, |user| async move {
                let topic = Topic::Presence(user.clone());
                self.subscriptions.acquire(&topic).await?;
                // Recorded only once the reference is held, so unwatch gives back exactly
                // what was taken.
                if conn
                    .watching
                    .lock()
                    .expect("watching lock")
                    .insert(user.clone())
                {
                    self.watchers.entry(user).or_default().push(conn.clone());
                } else {
                    self.subscriptions.release(&topic);
                }
                Ok::<_, JoinError>(())
            })
            .await
    }

    /// Stops following these users' presence on `conn`.
    pub fn unwatch(&self, conn: &Arc<ConnHandle>, users: &[UserId]) {
        for user in users {
            let was = conn.watching.lock().expect("watching lock").remove(user);
            if was && self.remove_watcher(conn, user) {
                self.subscriptions.release(&Topic::Presence(user.clone()));
            }
        }
    }

    fn remove_watcher(&self, conn: &ConnHandle, user: &UserId) -> bool {
        remove_conn(&self.watchers, user, conn)
    }

    /// Offers a contact's presence change to every local connection following it.
    pub fn offer_presence(&self, presence: &UserPresence) {
        let Some(conns) = self.watchers.get(&presence.user).map(|c| c.clone()) else {
            return;
        };
        let frame = crate::protocol::encode(&crate::protocol::ServerFrame::Presence {
            snapshot: false,
            users: vec![presence.clone()],
        });
        for conn in conns {
            conn.offer_presence(presence, &frame);
        }
    }

    /// Undoes [`register`](Self::register) and every [`join`](Self::join).
    pub fn unregister(&self, conn: &Arc<ConnHandle>) {
        let watched: Vec<UserId> = conn
            .watching
            .lock()
            .expect("watching lock")
            .iter()
            .cloned()
            .collect();
        self.unwatch(conn, &watched);
        for room in conn.exit_all() {
            self.remove_from_room(conn, &room);
            self.subscriptions.release(&Topic::Room(room));
        }
        let registered = remove_conn(&self.users, &conn.user, conn);
        if registered {
            self.subscriptions.release(&Topic::User(conn.user.clone()));
            self.live.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!("chatd_connections").decrement(1.0);
        }
    }

    /// Adds `conn` to the recipients of `room`.
    pub async fn join(&self, conn: &Arc<ConnHandle>, room: &RoomId) -> Result<(), JoinError> {
        let topic = Topic::Room(room.clone());
        self.subscriptions.acquire(&topic).await?;
        let entered = conn.enter(room, || {
            self.rooms
                .entry(room.clone())
                .or_default()
                .push(conn.clone());
            // Its topic is subscribed: the room's members events reach this node.
            self.memberships.follow(room);
        });
        if !entered {
            self.subscriptions.release(&topic);
        }
        Ok(())
    }

    pub fn leave(&self, conn: &Arc<ConnHandle>, room: &RoomId) {
        if conn.exit(room) {
            self.remove_from_room(conn, room);
            self.subscriptions.release(&Topic::Room(room.clone()));
        }
    }

    fn remove_from_room(&self, conn: &ConnHandle, room: &RoomId) {
        remove_conn(&self.rooms, room, conn);
        if !self.rooms.contains_key(room) {
            self.memberships.unfollow(room);
        }
    }

    /// Offers `item` to every local connection in `room`; never waits.
    pub fn offer_room(&self, room: &RoomId, item: &Outbound) -> usize {
        match self.rooms.get(room) {
            Some(conns) => {
                for conn in conns.iter() {
                    conn.offer(item.clone());
                }
                conns.len()
            }
            None => 0,
        }
    }

    /// The local connections in `room`.
    pub fn room_connections(&self, room: &RoomId) -> Vec<Arc<ConnHandle>> {
        self.rooms
            .get(room)
            .map(|conns| conns.clone())
            .unwrap_or_default()
    }

    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    pub fn connections_of(&self, user: &UserId) -> Vec<Arc<ConnHandle>> {
        self.users
            .get(user)
            .map(|conns| conns.clone())
            .unwrap_or_default()
    }

    /// The users with a connection on this node.
    pub fn local_users(&self) -> Vec<UserId> {
        self.users.iter().map(|e| e.key().clone()).collect()
    }

    /// Closes `user`'s connections opened with tokens a revocation before `before` refuses
    /// (4403); a revoked user leaves at once, without the grace of a dropped connection.
    pub fn close_revoked(&self, user: &UserId, before: Option<chrono::DateTime<chrono::Utc>>) {
        let Some(before) = before else { return };
        for conn in self.connections_of(user) {
            if crate::revocation::revokes(before, conn.issued_at) {
                conn.mark_left_cleanly();
                conn.close(crate::protocol::CloseReason::Revoked);
            }
        }
    }

    /// Reads every local user's revocation again (a bus reconnection may have lost some),
    /// in a tracked task, one user at a time (a resync is rare; the store is not flooded).
    pub fn recheck_revocations(self: &Arc<Self>, tracker: &TaskTracker) {
        let hub = self.clone();
        tracker.spawn(async move {
            for user in hub.local_users() {
                match hub.revocations.check_fresh(&user, None).await {
                    Err(crate::auth::AuthError::Revoked) => {
                        let known = hub.revocations.learned(&user, None);
                        hub.close_revoked(&user, known);
                    }
                    Ok(()) => {}
                    Err(e) => tracing::warn!(error = %e, "revocations not re-read after a resync"),
                }
            }
        });
    }

    /// Rooms with at least one member connected here.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Users with at least one connection here.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn connection_count(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub fn connection_count_of(&self, user: &UserId) -> usize {
        self.users.get(user).map_or(0, |conns| conns.len())
    }

    /// Topics this node is subscribed to.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.count()
    }
}

/// Removes `conn` from the list under `key`, and the list once empty; true if it was there.
fn remove_conn<K: std::hash::Hash + Eq + Clone>(
    map: &DashMap<K, Vec<Arc<ConnHandle>>>,
    key: &K,
    conn: &ConnHandle,
) -> bool {
    match map.entry(key.clone()) {
        dashmap::Entry::Occupied(mut e) => {
            let before = e.get().len();
            e.get_mut().retain(|c| c.id != conn.id);
            let removed = e.get().len() < before;
            if e.get().is_empty() {
                e.remove();
            }
            removed
        }
        dashmap::Entry::Vacant(_) => false,
    }
}
