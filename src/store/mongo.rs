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

use std::{
    hash::{Hash, Hasher},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::{
    Client, Collection, IndexModel,
    bson::{self, Document, doc},
    error::{Error as MongoError, ErrorKind, WriteFailure},
    options::{ClientOptions, IndexOptions, ReturnDocument},
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{
    Appended, HistoryQuery, NewGroup, NewMessage, Order, ReadMark, Store, StoreError, StoreResult,
    seq_from_i64, seq_to_i64,
};
use crate::{
    clock::next_created_at,
    domain::{Membership, Message, Room, RoomId, RoomKind, Seq, UserId},
};

/// Racing nodes per room can push one append through several rounds; past this it gives up
/// with a retryable error rather than spin.
const MAX_APPEND_ROUNDS: usize = 64;
const APPEND_LOCK_STRIPES: usize = 256;
const DUPLICATE_KEY: i32 = 11000;
/// How long a request waits for a reachable server before the caller gets "unavailable".
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoomDoc {
    #[serde(rename = "_id")]
    id: String,
    kind: String,
    name: Option<String>,
    #[serde(rename = "createdBy")]
    created_by: String,
    #[serde(rename = "createdAt")]
    created_at: bson::DateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MemberDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "roomId")]
    room_id: String,
    #[serde(rename = "userId")]
    user_id: String,
    #[serde(rename = "joinedAt")]
    joined_at: bson::DateTime,
    #[serde(rename = "readSeq")]
    read_seq: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MessageDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "chatRoomId")]
    room_id: String,
    seq: i64,
    sender: String,
    #[serde(rename = "clientMsgId")]
    client_msg_id: String,
    text: String,
    #[serde(rename = "createdAt")]
    created_at: bson::DateTime,
}

pub struct MongoStore {
    client: Client,
    database: String,
    rooms: Collection<RoomDoc>,
    members: Collection<MemberDoc>,
    messages: Collection<MessageDoc>,
    append_locks: Vec<Mutex<()>>,
}

/// Server states that pass: not (or no longer) primary, shutting down, interrupted.
const TRANSIENT_CODES: [i32; 8] = [91, 189, 10107, 11600, 11602, 13435, 13436, 262];

/// Network trouble, a server that cannot be selected, a pool being reset, a primary that is
/// stepping down: retry later. Anything else is a bug or corrupt data.
fn store_err(e: MongoError) -> StoreError {
    let code = match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(c)) => Some(c.code),
        _ => None,
    };
    let transient_code = code.is_some_and(|c| TRANSIENT_CODES.contains(&c));
    let transient = transient_code
        || matches!(
            e.kind.as_ref(),
            ErrorKind::ServerSelection { .. }
                | ErrorKind::Io(_)
                | ErrorKind::ConnectionPoolCleared { .. }
                | ErrorKind::DnsResolve { .. }
                | ErrorKind::Shutdown
        )
        || e.contains_label("RetryableWriteError")
        || e.contains_label("TransientTransactionError");
    if transient {
        StoreError::Unavailable(format!("mongodb: {e}"))
    } else {
        StoreError::Internal(format!("mongodb: {e}"))
    }
}

fn is_duplicate_key(e: &MongoError) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|ws| ws.iter().any(|w| w.code == DUPLICATE_KEY)),
        _ => false,
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("mongodb: bad {what} in stored document"))
}

fn to_bson_time(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

fn from_bson_time(t: bson::DateTime) -> DateTime<Utc> {
    crate::domain::timestamp::from_millis(t.timestamp_millis())
}

fn member_id(room: &RoomId, user: &UserId) -> String {
    format!("{room}|{user}")
}

impl MessageDoc {
    fn from_message(m: &Message) -> Self {
        Self {
            id: m.id.clone(),
            room_id: m.room.to_string(),
            seq: seq_to_i64(m.seq),
            sender: m.sender.to_string(),
            client_msg_id: m.client_msg_id.clone(),
            text: m.text.clone(),
            created_at: to_bson_time(m.created_at),
        }
    }

    fn into_message(self) -> StoreResult<Message> {
        Ok(Message {
            room: RoomId::parse(&self.room_id).map_err(|_| corrupt("chatRoomId"))?,
            sender: UserId::parse(&self.sender).map_err(|_| corrupt("sender"))?,
            id: self.id,
            seq: seq_from_i64(self.seq),
            client_msg_id: self.client_msg_id,
            text: self.text,
            created_at: from_bson_time(self.created_at),
        })
    }
}

impl MemberDoc {
    fn new(room: &RoomId, user: &UserId, now: DateTime<Utc>) -> Self {
        Self {
            id: member_id(room, user),
            room_id: room.to_string(),
            user_id: user.to_string(),
            joined_at: to_bson_time(now),
            read_seq: 0,
        }
    }

    fn into_membership(self) -> StoreResult<Membership> {
        Ok(Membership {
            room: RoomId::parse(&self.room_id).map_err(|_| corrupt("roomId"))?,
            user: UserId::parse(&self.user_id).map_err(|_| corrupt("userId"))?,
            read_seq: seq_from_i64(self.read_seq),
            joined_at: from_bson_time(self.joined_at),
        })
    }
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
            database: database.to_owned(),
            client,
            append_locks: (0..APPEND_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        };
        store.ping().await?;
        store.create_indexes().await?;
        Ok(store)
    }

    async fn create_indexes(&self) -> StoreResult<()> {
        let index = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique)
                        .build(),
                )
                .build()
        };
        self.messages
            .create_indexes([
                index(doc! {"chatRoomId": 1, "createdAt": 1}, "room_time", false),
                index(doc! {"chatRoomId": 1, "seq": 1}, "room_seq", true),
                index(
                    doc! {"chatRoomId": 1, "sender": 1, "clientMsgId": 1},
                    "idempotency",
                    true,
                ),
            ])
            .await
            .map_err(store_err)?;
        self.members
            .create_indexes([
                index(doc! {"roomId": 1, "userId": 1}, "room_user", true),
                index(doc! {"userId": 1, "roomId": 1}, "user_room", false),
            ])
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// Drops this store's database (tests use one database each).
    pub async fn drop_database(&self) -> StoreResult<()> {
        self.client
            .database(&self.database)
            .drop()
            .await
            .map_err(store_err)
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

    /// Inserts the members missing from `room`; returns them.
    async fn insert_members(
        &self,
        room: &RoomId,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UserId>> {
        let mut added = Vec::new();
        for user in users {
            let member = MemberDoc::new(room, user, now);
            let set_on_insert = bson::to_document(&member)
                .map_err(|e| StoreError::Internal(format!("bson: {e}")))?;
            let result = self
                .members
                .update_one(
                    doc! {"_id": &member.id},
                    doc! {"$setOnInsert": set_on_insert},
                )
                .upsert(true)
                .await;
            match result {
                Ok(r) if r.upserted_id.is_some() => added.push(user.clone()),
                Ok(_) => {}
                // Two upserts of the same new document raced; the other one inserted it.
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(store_err(e)),
            }
        }
        Ok(added)
    }

    async fn insert_room(&self, room: &Room) -> StoreResult<()> {
        let doc = RoomDoc {
            id: room.id.to_string(),
            kind: room.kind.as_str().into(),
            name: room.name.clone(),
            created_by: room.created_by.to_string(),
            created_at: to_bson_time(room.created_at),
        };
        let set_on_insert =
            bson::to_document(&doc).map_err(|e| StoreError::Internal(format!("bson: {e}")))?;
        match self
            .rooms
            .update_one(doc! {"_id": &doc.id}, doc! {"$setOnInsert": set_on_insert})
            .upsert(true)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn append(&self, new: NewMessage, now: DateTime<Utc>) -> StoreResult<Appended> {
        let _turn = self.append_lock(&new.room).lock().await;
        for _ in 0..MAX_APPEND_ROUNDS {
            let previous = self.newest(&new.room).await?;
            let message = Message {
                id: uuid::Uuid::now_v7().to_string(),
                room: new.room.clone(),
                seq: previous.as_ref().map_or(1, |p| seq_from_i64(p.seq) + 1),
                sender: new.sender.clone(),
                client_msg_id: new.client_msg_id.clone(),
                text: new.text.clone(),
                created_at: next_created_at(previous.map(|p| from_bson_time(p.created_at)), now),
            };
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
        let mut seq = Document::new();
        if let Some(after) = query.after {
            seq.insert("$gt", seq_to_i64(after));
        }
        if let Some(before) = query.before {
            seq.insert("$lt", seq_to_i64(before));
        }
        if !seq.is_empty() {
            filter.insert("seq", seq);
        }
        let mut time = Document::new();
        if let Some(since) = query.since {
            time.insert("$gte", to_bson_time(since));
        }
        if let Some(until) = query.until {
            time.insert("$lt", to_bson_time(until));
        }
        if !time.is_empty() {
            filter.insert("createdAt", time);
        }
        let direction = match query.order {
            Order::Asc => 1,
            Order::Desc => -1,
        };
        self.messages
            .find(filter)
            .sort(doc! {"seq": direction})
            .limit(query.limit as i64)
            .await
            .map_err(store_err)?
            .try_collect::<Vec<_>>()
            .await
            .map_err(store_err)?
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
        let room = Room::new_direct(a, b, now);
        self.insert_room(&room).await?;
        self.insert_members(&room.id, &room.members, now).await?;
        self.room(&room.id)
            .await?
            .ok_or_else(|| StoreError::Internal("direct room vanished".into()))
    }

    async fn create_group(&self, group: NewGroup, now: DateTime<Utc>) -> StoreResult<Room> {
        let room = Room {
            id: group.id,
            kind: RoomKind::Group,
            name: Some(group.name),
            members: Vec::new(),
            created_by: group.created_by,
            created_at: now,
        };
        self.insert_room(&room).await?;
        self.insert_members(&room.id, &group.members, now).await?;
        self.room(&room.id)
            .await?
            .ok_or_else(|| StoreError::Internal("new group vanished".into()))
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
        let Some(doc) = self
            .rooms
            .find_one(doc! {"_id": room.as_str()})
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let members: Vec<MemberDoc> = self
            .members
            .find(doc! {"roomId": room.as_str()})
            .sort(doc! {"userId": 1})
            .await
            .map_err(store_err)?
            .try_collect()
            .await
            .map_err(store_err)?;
        Ok(Some(Room {
            id: room.clone(),
            kind: RoomKind::parse(&doc.kind).ok_or_else(|| corrupt("kind"))?,
            name: doc.name,
            members: members
                .iter()
                .map(|m| UserId::parse(&m.user_id).map_err(|_| corrupt("userId")))
                .collect::<Result<_, _>>()?,
            created_by: UserId::parse(&doc.created_by).map_err(|_| corrupt("createdBy"))?,
            created_at: from_bson_time(doc.created_at),
        }))
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
        let docs: Vec<MemberDoc> = self
            .members
            .find(doc! {"userId": user.as_str()})
            .sort(doc! {"roomId": 1})
            .await
            .map_err(store_err)?
            .try_collect()
            .await
            .map_err(store_err)?;
        docs.into_iter().map(MemberDoc::into_membership).collect()
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
        let docs: Vec<MemberDoc> = self
            .members
            .find(filter)
            .sort(doc! {"roomId": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(store_err)?
            .try_collect()
            .await
            .map_err(store_err)?;
        docs.into_iter().map(MemberDoc::into_membership).collect()
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

    async fn mark_read(&self, room: &RoomId, user: &UserId, seq: Seq) -> StoreResult<ReadMark> {
        let target = seq_to_i64(seq.min(self.last_seq(room).await?));
        let id = member_id(room, user);
        // Only forward: a report that moves nothing matches no document and changes nothing.
        let moved = self
            .members
            .find_one_and_update(
                doc! {"_id": &id, "readSeq": {"$lt": target}},
                doc! {"$set": {"readSeq": target}},
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(store_err)?;
        let read_seq = match moved {
            Some(member) => {
                return Ok(ReadMark {
                    read_seq: seq_from_i64(member.read_seq),
                    moved: true,
                });
            }
            None => self
                .members
                .find_one(doc! {"_id": &id})
                .await
                .map_err(store_err)?
                .map_or(0, |m| seq_from_i64(m.read_seq)),
        };
        Ok(ReadMark {
            read_seq,
            moved: false,
        })
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
