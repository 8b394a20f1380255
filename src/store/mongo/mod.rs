//! The shared store: MongoDB, for any number of nodes.
//!
//! Collections: `rooms`, `members` (one document per membership, with the read position) and
//! `messages` (indexed {chatRoomId, createdAt}; unique {chatRoomId, seq}; unique
//! {chatRoomId, sender, clientMsgId}). Indexes are created at start-up.
//!
//! How `append` orders concurrent senders on many nodes without a lock server: insert the
//! seq after the room's newest message, and let the unique {chatRoomId, seq} index decide
//! between racing nodes; the loser reads the newest again and takes the next seq. The node
//! remembers each room's newest seq and createdAt from its own appends, so in the common case
//! (no other node wrote to the room since) an append is one insert, one round trip; a stale
//! memory only costs the loser's re-read. A seq exists
//! only if its message was inserted, so there are never holes, even if a node dies midway,
//! and createdAt is derived from the previous message, so it never decreases with seq however
//! skewed the nodes' clocks are. Senders on the same node take turns per room (a striped
//! local lock), so only nodes race each other. This uses single-document writes only: no
//! replica set or transaction is needed.
//!
//! The documents and their conversions are in [`docs`], the indexes and the operations that
//! several queries share in [`collections`], which errors pass and which are bugs in
//! [`errors`]; rooms are created by the composition every store shares
//! ([`super::rooms::create_room`]).

use std::{
    hash::{Hash, Hasher},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::{
    Client, Collection,
    bson::{Bson, doc},
    options::{ClientOptions, ReturnDocument},
};
use std::collections::HashMap;

use mongodb::event::{EventHandler, command::CommandEvent};
use tokio::sync::Mutex;

use super::{
    Appended, Entries, HistoryQuery, Mark, Marked, MemberReceipt, NewGroup, NewMessage, Order,
    Positions, Store, StoreError, StoreResult, UserSettings,
    rooms::{NewRoom, RoomWrites, create_room},
    seq_from_i64, seq_to_i64, successor,
};
use crate::domain::{EntryKind, Membership, Message, Role, Room, RoomId, Seq, UserId};

mod collections;
mod docs;
mod errors;
mod push;

use collections::{collect, insert_once, within};
use docs::{MemberDoc, MessageDoc, RoomDoc, from_bson_time, member_id, to_bson_time};
use errors::{is_duplicate_key, store_err};

/// Racing nodes per room can push one append through several rounds; past this it gives up
/// with a retryable error rather than spin.
const MAX_APPEND_ROUNDS: usize = 64;
const APPEND_LOCK_STRIPES: usize = 256;
/// How long a request waits for a reachable server before the caller gets "unavailable".
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);

pub struct MongoStore {
    client: Client,
    database: String,
    rooms: Collection<RoomDoc>,
    members: Collection<MemberDoc>,
    messages: Collection<MessageDoc>,
    /// One document per user who changed a setting: `{_id: user, hidePresence}`.
    settings: Collection<mongodb::bson::Document>,
    /// One document per user whose tokens were revoked: `{_id: user, before}`.
    revocations: Collection<mongodb::bson::Document>,
    push: push::PushCollections,
    append_locks: Vec<Mutex<()>>,
    /// Each room's newest (seq, createdAt) as this node last stored or read it: never ahead
    /// of the store (a seq is remembered only once its message is stored).
    newest_known: std::sync::Mutex<HashMap<RoomId, (Seq, DateTime<Utc>)>>,
}

/// Rooms whose newest seq a node remembers; past it the memory starts over.
const MAX_KNOWN_ROOMS: usize = 100_000;

impl MongoStore {
    /// Connects, checks the server answers, and creates the indexes.
    pub async fn connect(uri: &str, database: &str) -> StoreResult<Self> {
        Self::connect_counting(uri, database, false).await
    }

    /// As [`connect`](Self::connect); with `count_commands`, every command this node sends
    /// is counted by name (`chatd_mongodb_commands_total`: the driver's command monitoring,
    /// which copies every command and reply, so it is off unless asked for).
    pub async fn connect_counting(
        uri: &str,
        database: &str,
        count_commands: bool,
    ) -> StoreResult<Self> {
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| StoreError::Unavailable(format!("mongodb_uri: {e}")))?;
        // Fail fast so a send during an outage gets a retryable error within seconds,
        // unless the URI says otherwise.
        if !uri.contains("serverSelectionTimeoutMS") {
            options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        }
        if !uri.contains("connectTimeoutMS") {
            options.connect_timeout = Some(SERVER_SELECTION_TIMEOUT);
        }
        options.app_name.get_or_insert_with(|| "chatd".into());
        // Every command this node sends, by name: what a message costs in round trips.
        if count_commands {
            options.command_event_handler = Some(EventHandler::callback(|event| {
                if let CommandEvent::Started(started) = event {
                    metrics::counter!("chatd_mongodb_commands_total", "command" => started.command_name)
                        .increment(1);
                }
            }));
        }
        let client = Client::with_options(options).map_err(store_err)?;
        let db = client.database(database);
        let store = Self {
            rooms: db.collection("rooms"),
            members: db.collection("members"),
            messages: db.collection("messages"),
            settings: db.collection("user_settings"),
            revocations: db.collection("revocations"),
            push: push::PushCollections::new(&db),
            database: database.to_owned(),
            client,
            append_locks: (0..APPEND_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            newest_known: std::sync::Mutex::default(),
        };
        store.ping().await?;
        collections::create_indexes(&store.messages, &store.members).await?;
        store.push.create_indexes(&store.messages).await?;
        Ok(store)
    }

    fn append_lock(&self, room: &RoomId) -> &Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut hasher);
        &self.append_locks[hasher.finish() as usize % APPEND_LOCK_STRIPES]
    }

    async fn newest(&self, room: &RoomId) -> StoreResult<Option<MessageDoc>> {
        self.messages
            .find_one(doc! {"chatRoomId": room.as_str()})
            .sort(doc! {"seq": -1})
            .await
            .map_err(store_err)
    }

    /// When a group's last owner left: its successor owns it.
    async fn hand_on_ownership(&self, room: &RoomId) -> StoreResult<()> {
        let Some(group) = self
            .rooms
            .find_one(doc! {"_id": room.as_str(), "kind": "group"})
            .await
            .map_err(store_err)?
        else {
            return Ok(());
        };
        let members = collect(self.members.find(doc! {"roomId": room.as_str()})).await?;
        let ranked = group.ranked(&members)?;
        if let Some(heir) = successor(&ranked) {
            self.store_role(room, &heir, Role::Owner).await?;
        }
        Ok(())
    }

    async fn store_role(&self, room: &RoomId, user: &UserId, role: Role) -> StoreResult<bool> {
        let result = self
            .members
            .update_one(
                doc! {"_id": member_id(room, user)},
                doc! {"$set": {"role": role.as_str()}},
            )
            .await
            .map_err(store_err)?;
        Ok(result.matched_count == 1)
    }

    fn known_newest(&self, room: &RoomId) -> Option<(Seq, DateTime<Utc>)> {
        self.newest_known
            .lock()
            .expect("newest lock")
            .get(room)
            .copied()
    }

    /// `newest` stored in `room`, if it is newer than what this node remembers. With `add`,
    /// a room it does not remember yet is added (its own appends); without, only rooms it
    /// already remembers move (what it sees other nodes store: no growth from rooms it only
    /// reads).
    /// After a failed write: the store may have changed under the node (a failover can roll
    /// back what a former primary acknowledged), so the next append reads the newest again
    /// rather than risk a seq past a hole.
    fn forget_newest(&self, room: &RoomId) {
        self.newest_known.lock().expect("newest lock").remove(room);
    }

    fn remember_newest(&self, room: &RoomId, newest: (Seq, DateTime<Utc>), add: bool) {
        let mut known = self.newest_known.lock().expect("newest lock");
        if let Some(entry) = known.get_mut(room) {
            if newest.0 > entry.0 {
                *entry = newest;
            }
            return;
        }
        if add {
            if known.len() >= MAX_KNOWN_ROOMS {
                known.clear();
            }
            known.insert(room.clone(), newest);
        }
    }

    /// Inserts `new` under the next seq (see the module's comment), or finds it stored.
    async fn insert_next(&self, new: &NewMessage, now: DateTime<Utc>) -> StoreResult<Appended> {
        let _turn = self.append_lock(&new.room).lock().await;
        // The remembered newest first; after a lost race, the store's.
        let mut previous = self.known_newest(&new.room).map(Some);
        for _ in 0..MAX_APPEND_ROUNDS {
            let newest = match previous.take() {
                Some(known) => known,
                None => self
                    .newest(&new.room)
                    .await?
                    .map(|p| (seq_from_i64(p.seq), from_bson_time(p.created_at))),
            };
            let message = new.stored_after(newest, now);
            match self
                .messages
                .insert_one(MessageDoc::from_message(&message, new.notify))
                .await
            {
                Ok(_) => {
                    self.remember_newest(&message.room, (message.seq, message.created_at), true);
                    return Ok(Appended {
                        message,
                        duplicate: false,
                    });
                }
                Err(e) if is_duplicate_key(&e) => {
                    // Either this clientMsgId is stored already, or another node took the seq.
                    let stored = self
                        .by_client_msg_id(&new.room, &new.sender, &new.client_msg_id)
                        .await?;
                    if let Some(stored) = stored {
                        return Ok(Appended {
                            message: stored,
                            duplicate: true,
                        });
                    }
                }
                Err(e) => {
                    // The insert may have happened (e.g. the reply was lost): a retry with the
                    // same clientMsgId will find it.
                    self.forget_newest(&new.room);
                    return Err(store_err(e));
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "room {} is too contended; retry",
            new.room
        )))
    }

    /// Messages of one room in a row (plain messages: no scrub, no edit check): one
    /// `insertMany` of the seqs after the remembered newest, in order. Where the store stops
    /// it (a seq another node took, a repeated clientMsgId), the entries from there on are
    /// appended one by one, which sorts out either case; what it inserted before stands.
    async fn insert_run(
        &self,
        mut run: Vec<NewMessage>,
        now: DateTime<Utc>,
    ) -> Vec<StoreResult<Appended>> {
        let room = run[0].room.clone();
        let mut answers = Vec::with_capacity(run.len());
        if self.known_newest(&room).is_none() {
            // The first one reads the room's newest (and remembers it); the rest follow it.
            answers.push(self.append(run.remove(0), now).await);
        }
        let turn = self.append_lock(&room).lock().await;
        let Some(mut previous) = self.known_newest(&room).filter(|_| !run.is_empty()) else {
            drop(turn);
            answers.extend(super::append_one_by_one(self, run, now).await);
            return answers;
        };
        let messages: Vec<Message> = run
            .iter()
            .map(|new| {
                let message = new.stored_after(Some(previous), now);
                previous = (message.seq, message.created_at);
                message
            })
            .collect();
        let docs = run
            .iter()
            .zip(&messages)
            .map(|(new, message)| MessageDoc::from_message(message, new.notify));
        let inserted = match self.messages.insert_many(docs).ordered(true).await {
            Ok(_) => messages.len(),
            Err(e) => match e.kind.as_ref() {
                // Ordered: everything before the first failing entry is in.
                mongodb::error::ErrorKind::InsertMany(failure)
                    if failure.write_concern_error.is_none() =>
                {
                    let first_failed = failure
                        .write_errors
                        .as_ref()
                        .and_then(|errors| errors.iter().map(|w| w.index).min());
                    first_failed.unwrap_or(0).min(messages.len())
                }
                // Unknown how far it got: a retry with the same clientMsgIds finds out.
                _ => {
                    self.forget_newest(&room);
                    let error = store_err(e);
                    answers.extend(run.iter().map(|_| Err(error.clone())));
                    return answers;
                }
            },
        };
        if let Some(last) = messages[..inserted].last() {
            self.remember_newest(&room, (last.seq, last.created_at), true);
        }
        drop(turn);
        answers.extend(messages.into_iter().take(inserted).map(|message| {
            Ok(Appended {
                message,
                duplicate: false,
            })
        }));
        answers.extend(
            super::append_one_by_one(self, run.into_iter().skip(inserted).collect(), now).await,
        );
        answers
    }

    /// Removes the text of the message at `target`, then of its edits.
    async fn scrub(&self, room: &RoomId, target: Seq) -> StoreResult<()> {
        let removed = doc! {"$set": {"text": "", "deleted": true}};
        let target = seq_to_i64(target);
        self.messages
            .update_one(
                doc! {"chatRoomId": room.as_str(), "seq": target},
                removed.clone(),
            )
            .await
            .map_err(store_err)?;
        let edits = doc! {"chatRoomId": room.as_str(), "target": target, "kind": "edit"};
        self.messages
            .update_many(edits, removed)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn is_deleted(&self, room: &RoomId, seq: Seq) -> StoreResult<bool> {
        let found = self
            .messages
            .find_one(doc! {"chatRoomId": room.as_str(), "seq": seq_to_i64(seq)})
            .await
            .map_err(store_err)?;
        Ok(found.is_some_and(|m| m.deleted))
    }

    /// The entries of `room` whose `field` (`seq` or `target`) is one of `seqs`, by seq.
    async fn find_where(
        &self,
        room: &RoomId,
        field: &str,
        seqs: &[Seq],
    ) -> StoreResult<Vec<Message>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let seqs: Vec<i64> = seqs.iter().map(|&s| seq_to_i64(s)).collect();
        let find = self
            .messages
            .find(doc! {"chatRoomId": room.as_str(), field: {"$in": seqs}})
            .sort(doc! {"seq": 1});
        collect(find)
            .await?
            .into_iter()
            .map(MessageDoc::into_message)
            .collect()
    }

    async fn by_client_msg_id(
        &self,
        room: &RoomId,
        sender: &UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<Message>> {
        let filter = doc! {
            "chatRoomId": room.as_str(),
            "sender": sender.as_str(),
            "clientMsgId": client_msg_id,
        };
        match self.messages.find_one(filter).await.map_err(store_err)? {
            Some(doc) => Ok(Some(doc.into_message()?)),
            None => Ok(None),
        }
    }
}

impl RoomWrites for MongoStore {
    async fn insert_room(&self, room: &Room) -> StoreResult<()> {
        let doc = RoomDoc::from_room(room);
        insert_once(&self.rooms, &doc.id, &doc).await.map(|_| ())
    }

    async fn insert_members(
        &self,
        room: &RoomId,
        users: &[UserId],
        role: Role,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UserId>> {
        let mut added = Vec::new();
        for user in users {
            let member = MemberDoc::new(room, user, role, now);
            if insert_once(&self.members, &member.id, &member).await? {
                added.push(user.clone());
            }
        }
        Ok(added)
    }

    async fn load_room(&self, room: &RoomId) -> StoreResult<Option<Room>> {
        let Some(doc) = self
            .rooms
            .find_one(doc! {"_id": room.as_str()})
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let members = collect(
            self.members
                .find(doc! {"roomId": room.as_str()})
                .sort(doc! {"userId": 1}),
        )
        .await?;
        doc.into_room(room.clone(), &members).map(Some)
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn append(&self, new: NewMessage, now: DateTime<Utc>) -> StoreResult<Appended> {
        // Without transactions, a delete removes the text before its entry is inserted, so
        // that no failure in between leaves the text behind (the message reads as a
        // tombstone meanwhile; a retry inserts the entry). An edit that raced a delete
        // removes its own text: the delete marks the message before it scrubs the edits,
        // the edit checks the mark after its insert.
        if let (EntryKind::Delete, Some(target)) = (new.kind, new.target) {
            self.scrub(&new.room, target).await?;
        }
        let mut appended = self.insert_next(&new, now).await?;
        let message = &mut appended.message;
        match (message.kind, message.target) {
            (EntryKind::Edit, Some(target))
                if !message.deleted && self.is_deleted(&message.room, target).await? =>
            {
                self.scrub(&message.room, target).await?;
                message.text.clear();
                message.deleted = true;
            }
            _ => {}
        }
        Ok(appended)
    }

    /// Plain messages to one room in a row go in as one `insertMany` (see `insert_run`);
    /// everything else one append after the other.
    async fn append_batch(
        &self,
        news: Vec<NewMessage>,
        now: DateTime<Utc>,
    ) -> Vec<StoreResult<Appended>> {
        let mut answers = Vec::with_capacity(news.len());
        let mut news = news.into_iter().peekable();
        while let Some(first) = news.next() {
            let mut run = vec![first];
            while run[0].kind == EntryKind::Message
                && let Some(next) =
                    news.next_if(|n| n.kind == EntryKind::Message && n.room == run[0].room)
            {
                run.push(next);
            }
            if run.len() == 1 {
                answers.extend(super::append_one_by_one(self, run, now).await);
            } else {
                answers.extend(self.insert_run(run, now).await);
            }
        }
        answers
    }

    async fn history(&self, room: &RoomId, query: &HistoryQuery) -> StoreResult<Vec<Message>> {
        let mut filter = doc! {"chatRoomId": room.as_str()};
        let seq = |s: Seq| Bson::from(seq_to_i64(s));
        let time = |t: DateTime<Utc>| Bson::from(to_bson_time(t));
        let seqs = [
            ("$gt", query.after.map(seq)),
            ("$lt", query.before.map(seq)),
        ];
        within(&mut filter, "seq", seqs);
        let times = [
            ("$gte", query.since.map(time)),
            ("$lt", query.until.map(time)),
        ];
        within(&mut filter, "createdAt", times);
        // Messages are stored without a `kind` (as before changes existed).
        // (`kind: null` matches the missing field and uses the {chatRoomId, kind, seq} index.)
        match query.entries {
            Entries::All => {}
            Entries::Messages => {
                filter.insert("kind", Bson::Null);
            }
            Entries::Standing => {
                filter.insert("kind", Bson::Null);
                filter.insert("deleted", doc! {"$ne": true});
            }
        }
        let direction = match query.order {
            Order::Asc => 1,
            Order::Desc => -1,
        };
        let find = self
            .messages
            .find(filter)
            .sort(doc! {"seq": direction})
            .limit(query.limit as i64);
        collect(find)
            .await?
            .into_iter()
            .map(MessageDoc::into_message)
            .collect()
    }

    async fn entry_by_client_msg_id(
        &self,
        room: &RoomId,
        sender: &UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<Message>> {
        self.by_client_msg_id(room, sender, client_msg_id).await
    }

    async fn entries(&self, room: &RoomId, seqs: &[Seq]) -> StoreResult<Vec<Message>> {
        self.find_where(room, "seq", seqs).await
    }

    async fn changes(&self, room: &RoomId, targets: &[Seq]) -> StoreResult<Vec<Message>> {
        self.find_where(room, "target", targets).await
    }

    async fn last_seq(&self, room: &RoomId) -> StoreResult<Seq> {
        Ok(self.newest(room).await?.map_or(0, |m| seq_from_i64(m.seq)))
    }

    async fn count_unread(
        &self,
        room: &RoomId,
        user: &UserId,
        after_seq: Seq,
        cap: u64,
    ) -> StoreResult<u64> {
        let filter = doc! {
            "chatRoomId": room.as_str(),
            "seq": {"$gt": seq_to_i64(after_seq)},
            "sender": {"$ne": user.as_str()},
            "kind": Bson::Null,
            "deleted": {"$ne": true},
        };
        self.messages
            .count_documents(filter)
            .limit(cap)
            .await
            .map_err(store_err)
    }

    async fn ensure_direct_room(
        &self,
        a: &UserId,
        b: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Room> {
        create_room(self, NewRoom::direct(a, b, now)).await
    }

    async fn create_group(&self, group: NewGroup, now: DateTime<Utc>) -> StoreResult<Room> {
        create_room(self, NewRoom::group(group, now)).await
    }

    async fn add_members(
        &self,
        room: &RoomId,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UserId>> {
        self.insert_members(room, users, Role::Member, now).await
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> StoreResult<bool> {
        let result = self
            .members
            .delete_one(doc! {"_id": member_id(room, user)})
            .await
            .map_err(store_err)?;
        if result.deleted_count != 1 {
            return Ok(false);
        }
        // After the removal, not atomically with it: two owners leaving at once both see
        // no owner left and promote the same successor (the rule is deterministic); if this
        // is cut short, rooms read with that successor as owner all the same (`group_roles`),
        // so a failure here must not hide that the member is gone (the caller announces it).
        if let Err(e) = self.hand_on_ownership(room).await {
            tracing::warn!(error = %e, "ownership not handed on; rooms read name the successor");
        }
        Ok(true)
    }

    async fn set_role(&self, room: &RoomId, user: &UserId, role: Role) -> StoreResult<bool> {
        self.store_role(room, user, role).await
    }

    async fn room(&self, room: &RoomId) -> StoreResult<Option<Room>> {
        self.load_room(room).await
    }

    async fn membership(&self, room: &RoomId, user: &UserId) -> StoreResult<Option<Membership>> {
        self.members
            .find_one(doc! {"_id": member_id(room, user)})
            .await
            .map_err(store_err)?
            .map(MemberDoc::into_membership)
            .transpose()
    }

    async fn memberships_of(&self, user: &UserId) -> StoreResult<Vec<Membership>> {
        let find = self
            .members
            .find(doc! {"userId": user.as_str()})
            .sort(doc! {"roomId": 1});
        collect(find)
            .await?
            .into_iter()
            .map(MemberDoc::into_membership)
            .collect()
    }

    /// Two queries: the rooms, then all their members.
    async fn rooms(&self, ids: &[RoomId]) -> StoreResult<Vec<Room>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = ids.iter().map(RoomId::as_str).collect();
        let docs = collect(self.rooms.find(doc! {"_id": {"$in": &names}})).await?;
        let members = collect(
            self.members
                .find(doc! {"roomId": {"$in": &names}})
                .sort(doc! {"roomId": 1, "userId": 1}),
        )
        .await?;
        let mut members_of: HashMap<String, Vec<MemberDoc>> = HashMap::new();
        for member in members {
            members_of
                .entry(member.room_id.clone())
                .or_default()
                .push(member);
        }
        let mut docs: HashMap<String, RoomDoc> =
            docs.into_iter().map(|d| (d.id.clone(), d)).collect();
        ids.iter()
            .filter_map(|id| docs.remove(id.as_str()).map(|doc| (id, doc)))
            .map(|(id, doc)| {
                let members = members_of.get(id.as_str()).map_or(&[][..], Vec::as_slice);
                doc.into_room(id.clone(), members)
            })
            .collect()
    }

    async fn memberships_among(
        &self,
        user: &UserId,
        rooms: &[RoomId],
    ) -> StoreResult<Vec<Membership>> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = rooms.iter().map(|room| member_id(room, user)).collect();
        let mut found: HashMap<String, Membership> = HashMap::new();
        for doc in collect(self.members.find(doc! {"_id": {"$in": &ids}})).await? {
            found.insert(doc.id.clone(), doc.into_membership()?);
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// One query: seqs have no holes, so "after `a`, at most `limit`" is the seq range
    /// (a, a + limit] of each room.
    async fn histories_after(
        &self,
        from: &[(RoomId, Seq)],
        limit: usize,
    ) -> StoreResult<Vec<Vec<Message>>> {
        if from.is_empty() {
            return Ok(Vec::new());
        }
        let ranges: Vec<_> = from
            .iter()
            .map(|(room, after)| {
                let last = after.saturating_add(limit as Seq).min(super::MAX_SEQ);
                doc! {"chatRoomId": room.as_str(), "seq": {"$gt": seq_to_i64(*after), "$lte": seq_to_i64(last)}}
            })
            .collect();
        let find = self
            .messages
            .find(doc! {"$or": ranges})
            .sort(doc! {"chatRoomId": 1, "seq": 1});
        let mut by_room: HashMap<String, Vec<Message>> = HashMap::new();
        for doc in collect(find).await? {
            let message = doc.into_message()?;
            by_room
                .entry(message.room.as_str().to_owned())
                .or_default()
                .push(message);
        }
        // By range rather than by room alone: a room may be named twice.
        Ok(from
            .iter()
            .map(|(room, after)| {
                let in_range = |m: &&Message| m.seq > *after && m.seq - after <= limit as Seq;
                by_room
                    .get(room.as_str())
                    .map(|all| all.iter().filter(in_range).cloned().collect())
                    .unwrap_or_default()
            })
            .collect())
    }

    async fn memberships_page(
        &self,
        user: &UserId,
        after: Option<&RoomId>,
        limit: usize,
    ) -> StoreResult<Vec<Membership>> {
        let mut filter = doc! {"userId": user.as_str()};
        if let Some(after) = after {
            filter.insert("roomId", doc! {"$gt": after.as_str()});
        }
        let find = self
            .members
            .find(filter)
            .sort(doc! {"roomId": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX));
        collect(find)
            .await?
            .into_iter()
            .map(MemberDoc::into_membership)
            .collect()
    }

    async fn membership_counts(&self, users: &[UserId]) -> StoreResult<Vec<u64>> {
        // One index-only count per user ({userId, roomId}), a few at a time.
        let mut counts = Vec::with_capacity(users.len());
        for chunk in users.chunks(8) {
            let counted = futures_util::future::try_join_all(chunk.iter().map(|user| {
                self.members
                    .count_documents(doc! {"userId": user.as_str()})
                    .into_future()
            }))
            .await
            .map_err(store_err)?;
            counts.extend(counted);
        }
        Ok(counts)
    }

    async fn mark(
        &self,
        room: &RoomId,
        user: &UserId,
        mark: Mark,
        seq: Seq,
    ) -> StoreResult<Marked> {
        let target = seq.min(self.last_seq(room).await?);
        let value = seq_to_i64(target);
        let mut raise = doc! {"deliveredSeq": value};
        if matches!(mark, Mark::Read | Mark::PrivateRead) {
            raise.insert("readSeq", value);
        }
        if mark == Mark::Read {
            raise.insert("publicReadSeq", value);
        }
        // `$max` only ever raises, so concurrent reports from several nodes commute.
        let before = self
            .members
            .find_one_and_update(doc! {"_id": member_id(room, user)}, doc! {"$max": raise})
            .return_document(ReturnDocument::Before)
            .await
            .map_err(store_err)?;
        Ok(match before {
            Some(member) => {
                let before = member.positions();
                let after = before.advanced(mark, target);
                if member.delivered_seq.is_none() || member.public_read_seq.is_none() {
                    // A document from before receipts: `$max` on its missing fields set them
                    // to the report, which may be below the positions `readSeq` implies.
                    // Raise them to what they are.
                    let fix = doc! {
                        "deliveredSeq": seq_to_i64(after.delivered_seq),
                        "publicReadSeq": seq_to_i64(after.public_read_seq),
                    };
                    self.members
                        .update_one(doc! {"_id": member_id(room, user)}, doc! {"$max": fix})
                        .await
                        .map_err(store_err)?;
                }
                Marked { before, after }
            }
            None => Marked {
                before: Positions::default(),
                after: Positions::default(),
            },
        })
    }

    async fn receipts(&self, room: &RoomId) -> StoreResult<Vec<MemberReceipt>> {
        let find = self
            .members
            .find(doc! {"roomId": room.as_str()})
            .sort(doc! {"userId": 1});
        collect(find)
            .await?
            .into_iter()
            .map(|member| {
                let positions = member.positions();
                Ok(MemberReceipt {
                    user: member.into_membership()?.user,
                    delivered_seq: positions.delivered_seq,
                    read_seq: positions.public_read_seq,
                })
            })
            .collect()
    }

    async fn user_settings(&self, user: &UserId) -> StoreResult<UserSettings> {
        let found = self
            .settings
            .find_one(doc! {"_id": user.as_str()})
            .await
            .map_err(store_err)?;
        Ok(UserSettings {
            hide_presence: found
                .and_then(|d| d.get_bool("hidePresence").ok())
                .unwrap_or(false),
        })
    }

    async fn set_user_settings(&self, user: &UserId, settings: UserSettings) -> StoreResult<()> {
        self.settings
            .update_one(
                doc! {"_id": user.as_str()},
                doc! {"$set": {"hidePresence": settings.hide_presence}},
            )
            .upsert(true)
            .await
            .map(|_| ())
            .map_err(store_err)
    }

    async fn revoke_tokens(
        &self,
        user: &UserId,
        before: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>> {
        // `$max` only moves the time forward, so concurrent revocations commute.
        let after = self
            .revocations
            .find_one_and_update(
                doc! {"_id": user.as_str()},
                doc! {"$max": {"before": to_bson_time(before)}},
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(store_err)?;
        let stored = after.and_then(|d| d.get_datetime("before").ok().copied());
        Ok(stored.map_or(before, from_bson_time))
    }

    async fn tokens_revoked_before(&self, user: &UserId) -> StoreResult<Option<DateTime<Utc>>> {
        let found = self
            .revocations
            .find_one(doc! {"_id": user.as_str()})
            .await
            .map_err(store_err)?;
        Ok(found
            .and_then(|d| d.get_datetime("before").ok().copied())
            .map(from_bson_time))
    }

    fn observed(&self, message: &Message) {
        self.remember_newest(&message.room, (message.seq, message.created_at), false);
    }

    async fn ping(&self) -> StoreResult<()> {
        self.client
            .database(&self.database)
            .run_command(doc! {"ping": 1})
            .await
            .map(|_| ())
            .map_err(store_err)
    }
}
