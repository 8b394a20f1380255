//! The shared store: MongoDB, for any number of nodes.
//!
//! Collections: `rooms`, `members` (one document per membership, with the read position) and
//! `messages` (indexed {chatRoomId, createdAt}; unique {chatRoomId, seq}; unique
//! {chatRoomId, sender, clientMsgId}). Indexes are created at start-up.
//!
//! How `append` orders concurrent senders on many nodes without a lock server: read the
//! room's newest message, insert the next seq, and let the unique {chatRoomId, seq} index
//! decide between racing nodes; the loser reads again and takes the next seq. A seq exists
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
use tokio::sync::Mutex;

use super::{
    Appended, HistoryQuery, Mark, Marked, MemberReceipt, NewGroup, NewMessage, Order, Positions,
    Store, StoreError, StoreResult, UserSettings,
    rooms::{NewRoom, RoomWrites, create_room},
    seq_from_i64, seq_to_i64,
};
use crate::domain::{Membership, Message, Room, RoomId, Seq, UserId};

mod collections;
mod docs;
mod errors;

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
    append_locks: Vec<Mutex<()>>,
}

impl MongoStore {
    /// Connects, checks the server answers, and creates the indexes.
    pub async fn connect(uri: &str, database: &str) -> StoreResult<Self> {
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
        let client = Client::with_options(options).map_err(store_err)?;
        let db = client.database(database);
        let store = Self {
            rooms: db.collection("rooms"),
            members: db.collection("members"),
            messages: db.collection("messages"),
            settings: db.collection("user_settings"),
            database: database.to_owned(),
            client,
            append_locks: (0..APPEND_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        };
        store.ping().await?;
        collections::create_indexes(&store.messages, &store.members).await?;
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

    async fn by_client_msg_id(&self, new: &NewMessage) -> StoreResult<Option<Message>> {
        let filter = doc! {
            "chatRoomId": new.room.as_str(),
            "sender": new.sender.as_str(),
            "clientMsgId": &new.client_msg_id,
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
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UserId>> {
        let mut added = Vec::new();
        for user in users {
            let member = MemberDoc::new(room, user, now);
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
        let _turn = self.append_lock(&new.room).lock().await;
        for _ in 0..MAX_APPEND_ROUNDS {
            let previous = self.newest(&new.room).await?;
            let message = new.stored_after(
                previous.map(|p| (seq_from_i64(p.seq), from_bson_time(p.created_at))),
                now,
            );
            match self
                .messages
                .insert_one(MessageDoc::from_message(&message))
                .await
            {
                Ok(_) => {
                    return Ok(Appended {
                        message,
                        duplicate: false,
                    });
                }
                Err(e) if is_duplicate_key(&e) => {
                    // Either this clientMsgId is stored already, or another node took the seq.
                    if let Some(stored) = self.by_client_msg_id(&new).await? {
                        return Ok(Appended {
                            message: stored,
                            duplicate: true,
                        });
                    }
                }
                Err(e) => {
                    // The insert may have happened (e.g. the reply was lost): a retry with the
                    // same clientMsgId will find it.
                    return Err(store_err(e));
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "room {} is too contended; retry",
            new.room
        )))
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
        self.insert_members(room, users, now).await
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> StoreResult<bool> {
        let result = self
            .members
            .delete_one(doc! {"_id": member_id(room, user)})
            .await
            .map_err(store_err)?;
        Ok(result.deleted_count == 1)
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

    async fn ping(&self) -> StoreResult<()> {
        self.client
            .database(&self.database)
            .run_command(doc! {"ping": 1})
            .await
            .map(|_| ())
            .map_err(store_err)
    }
}
