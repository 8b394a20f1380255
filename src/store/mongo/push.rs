//! Devices (`devices`), notification jobs (`pushJobs`) and the ledger (`pushLedger`) in
//! MongoDB, with single-document operations only, like the rest of this store: a claim is
//! one findOneAndUpdate, so two nodes never hold the same job or message.
//!
//! A device's target and a ledger entry are kept as JSON strings: read whole, never queried
//! inside (the fields queries need sit beside them).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::{
    Collection, IndexModel,
    bson::{self, Bson, Document, doc},
    options::{IndexOptions, ReturnDocument},
};

use super::{
    MongoStore,
    collections::{collect, insert_once},
    docs::{MessageDoc, corrupt, from_bson_time, to_bson_time},
    errors::{is_duplicate_key, store_err},
};
use crate::{
    domain::{Message, RoomId, Seq, UserId},
    store::{
        StoreError, StoreResult,
        push::{Device, JobKind, LedgerEntry, Outcome, PushJob, PushStore, Registered},
        seq_from_i64, seq_to_i64,
    },
};

/// The collections of push notifications.
pub struct PushCollections {
    devices: Collection<Document>,
    jobs: Collection<Document>,
    ledger: Collection<Document>,
}

impl PushCollections {
    pub fn new(db: &mongodb::Database) -> Self {
        Self {
            devices: db.collection("devices"),
            jobs: db.collection("pushJobs"),
            ledger: db.collection("pushLedger"),
        }
    }

    /// The indexes the queries below rely on (and the one on messages that finds those still
    /// to be decided). Creating existing ones changes nothing.
    pub async fn create_indexes(&self, messages: &Collection<MessageDoc>) -> StoreResult<()> {
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
        messages
            .create_index(index(
                doc! {"pushPending": 1, "createdAt": 1},
                "push_pending",
                false,
            ))
            .await
            .map_err(store_err)?;
        self.devices
            .create_indexes([
                index(doc! {"key": 1}, "device_key", true),
                index(doc! {"userId": 1, "createdAt": 1}, "user_devices", false),
            ])
            .await
            .map_err(store_err)?;
        self.jobs
            .create_indexes([
                index(
                    doc! {"userId": 1, "roomId": 1, "kind": 1, "open": 1},
                    "open_job",
                    false,
                ),
                index(doc! {"dueAt": 1}, "due", false),
            ])
            .await
            .map_err(store_err)?;
        self.ledger
            .create_indexes([
                index(doc! {"userId": 1, "decidedAt": -1}, "user_recent", false),
                index(
                    doc! {"userId": 1, "roomId": 1, "seq": 1},
                    "user_room_seq",
                    false,
                ),
                index(doc! {"updatedAt": 1}, "age", false),
            ])
            .await
            .map_err(store_err)?;
        Ok(())
    }
}

fn json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(format!("json: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|_| corrupt(what))
}

fn field<'a>(doc: &'a Document, key: &str) -> StoreResult<&'a str> {
    doc.get_str(key).map_err(|_| corrupt(key))
}

fn time(doc: &Document, key: &str) -> StoreResult<DateTime<Utc>> {
    doc.get_datetime(key)
        .map(|t| from_bson_time(*t))
        .map_err(|_| corrupt(key))
}

fn device_doc(device: &Device) -> StoreResult<Document> {
    Ok(doc! {
        "_id": &device.id,
        "userId": device.user.as_str(),
        "key": device.target.key(),
        "name": &device.name,
        "createdAt": to_bson_time(device.created_at),
        "target": json(&device.target)?,
    })
}

fn device_from_doc(doc: &Document) -> StoreResult<Device> {
    Ok(Device {
        id: field(doc, "_id")?.to_owned(),
        user: UserId::from_stored(field(doc, "userId")?).map_err(|_| corrupt("userId"))?,
        name: field(doc, "name")?.to_owned(),
        created_at: time(doc, "createdAt")?,
        target: from_json("target", field(doc, "target")?)?,
    })
}

fn job_from_doc(doc: &Document) -> StoreResult<PushJob> {
    let kind = JobKind::parse(field(doc, "kind")?).ok_or_else(|| corrupt("kind"))?;
    let seqs = match kind {
        JobKind::Badge => vec![seq_from_i64(
            doc.get_i64("readSeq").map_err(|_| corrupt("readSeq"))?,
        )],
        JobKind::Message => doc
            .get_array("seqs")
            .map_err(|_| corrupt("seqs"))?
            .iter()
            .map(|s| s.as_i64().map(seq_from_i64).ok_or_else(|| corrupt("seqs")))
            .collect::<StoreResult<Vec<_>>>()?,
    };
    let done = doc
        .get_array("done")
        .map_err(|_| corrupt("done"))?
        .iter()
        .map(|d| d.as_str().map(str::to_owned).ok_or_else(|| corrupt("done")))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(PushJob {
        id: field(doc, "_id")?.to_owned(),
        user: UserId::from_stored(field(doc, "userId")?).map_err(|_| corrupt("userId"))?,
        room: RoomId::parse(field(doc, "roomId")?).map_err(|_| corrupt("roomId"))?,
        kind,
        seqs,
        due_at: time(doc, "dueAt")?,
        created_at: time(doc, "createdAt")?,
        attempts: u32::try_from(doc.get_i64("attempts").map_err(|_| corrupt("attempts"))?)
            .unwrap_or(u32::MAX),
        done_devices: done,
    })
}

fn ledger_id(entry: &LedgerEntry) -> String {
    format!("{}|{}|{}", entry.user, entry.room, entry.seq)
}

fn ledger_doc(entry: &LedgerEntry) -> StoreResult<Document> {
    Ok(doc! {
        "_id": ledger_id(entry),
        "userId": entry.user.as_str(),
        "roomId": entry.room.as_str(),
        "seq": seq_to_i64(entry.seq),
        "outcome": entry.outcome.as_str(),
        "decidedAt": to_bson_time(entry.decided_at),
        "updatedAt": to_bson_time(entry.updated_at),
        "entry": json(entry)?,
    })
}

#[async_trait]
impl PushStore for MongoStore {
    async fn register_device(
        &self,
        device: Device,
        max_per_user: usize,
    ) -> StoreResult<Registered> {
        let devices = &self.push.devices;
        let key = device.target.key();
        // Twice at most: a registration racing ours for the same key wins, then ours finds it.
        for _ in 0..2 {
            let found = devices
                .find_one(doc! {"key": &key})
                .await
                .map_err(store_err)?;
            if let Some(found) = found {
                let mut stored = device_from_doc(&found)?;
                if stored.user == device.user {
                    let set = doc! {"name": &device.name, "target": json(&device.target)?};
                    devices
                        .update_one(doc! {"_id": &stored.id}, doc! {"$set": set})
                        .await
                        .map_err(store_err)?;
                    stored.name = device.name;
                    stored.target = device.target;
                    return Ok(Registered::Existing(stored));
                }
                devices
                    .delete_one(doc! {"_id": &stored.id})
                    .await
                    .map_err(store_err)?;
            }
            let count = devices
                .count_documents(doc! {"userId": device.user.as_str()})
                .await
                .map_err(store_err)?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= max_per_user {
                return Ok(Registered::TooMany);
            }
            match devices.insert_one(device_doc(&device)?).await {
                Ok(_) => return Ok(Registered::Created(device)),
                Err(e) if is_duplicate_key(&e) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(StoreError::Unavailable(
            "device registration raced; retry".into(),
        ))
    }

    async fn devices(&self, users: &[UserId]) -> StoreResult<Vec<Device>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<&str> = users.iter().map(|u| u.as_str()).collect();
        let find = self
            .push
            .devices
            .find(doc! {"userId": {"$in": users}})
            .sort(doc! {"userId": 1, "createdAt": 1, "_id": 1});
        collect(find).await?.iter().map(device_from_doc).collect()
    }

    async fn remove_device(&self, user: &UserId, id: &str) -> StoreResult<bool> {
        let deleted = self
            .push
            .devices
            .delete_one(doc! {"_id": id, "userId": user.as_str()})
            .await
            .map_err(store_err)?;
        Ok(deleted.deleted_count == 1)
    }

    async fn remove_devices(&self, ids: &[String]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.push
            .devices
            .delete_many(doc! {"_id": {"$in": ids}})
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn claim_undecided(
        &self,
        stored_before: DateTime<Utc>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let mut claimed = Vec::new();
        for _ in 0..limit {
            let filter = doc! {
                "pushPending": true,
                "createdAt": {"$lt": to_bson_time(stored_before)},
                "pushLease": {"$lt": to_bson_time(now)},
            };
            let found = self
                .messages
                .find_one_and_update(
                    filter,
                    doc! {"$set": {"pushLease": to_bson_time(lease_until)}},
                )
                .sort(doc! {"pushPending": 1, "createdAt": 1})
                .return_document(ReturnDocument::After)
                .await
                .map_err(store_err)?;
            match found {
                Some(doc) => claimed.push(doc.into_message()?),
                None => break,
            }
        }
        Ok(claimed)
    }

    async fn mark_decided(&self, room: &RoomId, seq: Seq) -> StoreResult<()> {
        self.messages
            .update_one(
                doc! {"chatRoomId": room.as_str(), "seq": seq_to_i64(seq)},
                doc! {"$unset": {"pushPending": "", "pushLease": ""}},
            )
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn enqueue_job(
        &self,
        user: &UserId,
        room: &RoomId,
        kind: JobKind,
        seq: Seq,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let filter = doc! {
            "userId": user.as_str(), "roomId": room.as_str(), "kind": kind.as_str(), "open": true,
        };
        let on_insert = doc! {
            "_id": uuid::Uuid::now_v7().to_string(),
            "dueAt": to_bson_time(due_at),
            "createdAt": to_bson_time(now),
            "attempts": 0_i64,
            "done": Bson::Array(Vec::new()),
            "leaseUntil": bson::DateTime::from_millis(0),
        };
        let seq = seq_to_i64(seq);
        // Messages collect in the open job; a badge keeps the furthest read position only.
        let update = match kind {
            JobKind::Message => doc! {"$addToSet": {"seqs": seq}, "$setOnInsert": on_insert},
            JobKind::Badge => doc! {"$max": {"readSeq": seq}, "$setOnInsert": on_insert},
        };
        if let Err(e) = self
            .push
            .jobs
            .update_one(filter.clone(), update)
            .upsert(true)
            .await
        {
            if !is_duplicate_key(&e) {
                return Err(store_err(e));
            }
            // A racing upsert made the open job: join it.
            let update = match kind {
                JobKind::Message => doc! {"$addToSet": {"seqs": seq}},
                JobKind::Badge => doc! {"$max": {"readSeq": seq}},
            };
            self.push
                .jobs
                .update_one(filter, update)
                .await
                .map_err(store_err)?;
        }
        Ok(())
    }

    async fn claim_jobs(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<PushJob>> {
        let mut claimed = Vec::new();
        for _ in 0..limit {
            let filter = doc! {
                "dueAt": {"$lte": to_bson_time(now)},
                "leaseUntil": {"$lt": to_bson_time(now)},
            };
            let claim = doc! {"$set": {
                "open": false, "leaseNode": node, "leaseUntil": to_bson_time(lease_until),
            }};
            let found = self
                .push
                .jobs
                .find_one_and_update(filter, claim)
                .sort(doc! {"dueAt": 1})
                .return_document(ReturnDocument::After)
                .await
                .map_err(store_err)?;
            match found {
                Some(doc) => {
                    let mut job = job_from_doc(&doc)?;
                    job.seqs.sort_unstable();
                    claimed.push(job);
                }
                None => break,
            }
        }
        Ok(claimed)
    }

    async fn reschedule_job(&self, job: &PushJob) -> StoreResult<()> {
        let set = doc! {
            "dueAt": to_bson_time(job.due_at),
            "attempts": i64::from(job.attempts),
            "done": &job.done_devices,
            "leaseNode": Bson::Null,
            "leaseUntil": bson::DateTime::from_millis(0),
        };
        self.push
            .jobs
            .update_one(doc! {"_id": &job.id}, doc! {"$set": set})
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn finish_job(&self, id: &str) -> StoreResult<()> {
        self.push
            .jobs
            .delete_one(doc! {"_id": id})
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn record_decisions(&self, entries: &[LedgerEntry]) -> StoreResult<Vec<bool>> {
        let mut written = Vec::with_capacity(entries.len());
        for entry in entries {
            let doc = ledger_doc(entry)?;
            written.push(insert_once(&self.push.ledger, &ledger_id(entry), &doc).await?);
        }
        Ok(written)
    }

    async fn update_ledger(&self, entries: &[LedgerEntry]) -> StoreResult<()> {
        for entry in entries {
            self.push
                .ledger
                .replace_one(doc! {"_id": ledger_id(entry)}, ledger_doc(entry)?)
                .upsert(true)
                .await
                .map_err(store_err)?;
        }
        Ok(())
    }

    async fn ledger_entries(
        &self,
        user: &UserId,
        room: &RoomId,
        seqs: &[Seq],
    ) -> StoreResult<Vec<LedgerEntry>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let seqs: Vec<i64> = seqs.iter().map(|&s| seq_to_i64(s)).collect();
        let filter = doc! {"userId": user.as_str(), "roomId": room.as_str(), "seq": {"$in": seqs}};
        let find = self.push.ledger.find(filter).sort(doc! {"seq": 1});
        collect(find)
            .await?
            .iter()
            .map(|doc| from_json("entry", field(doc, "entry")?))
            .collect()
    }

    async fn ledger(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        limit: usize,
    ) -> StoreResult<Vec<LedgerEntry>> {
        let mut filter = doc! {"userId": user.as_str()};
        if let Some(room) = room {
            filter.insert("roomId", room.as_str());
        }
        let find = self
            .push
            .ledger
            .find(filter)
            .sort(doc! {"decidedAt": -1, "seq": -1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX));
        collect(find)
            .await?
            .iter()
            .map(|doc| from_json("entry", field(doc, "entry")?))
            .collect()
    }

    async fn notified_between(
        &self,
        user: &UserId,
        room: &RoomId,
        after: Seq,
        upto: Seq,
    ) -> StoreResult<bool> {
        let filter = doc! {
            "userId": user.as_str(),
            "roomId": room.as_str(),
            "seq": {"$gt": seq_to_i64(after), "$lte": seq_to_i64(upto)},
            "outcome": {"$in": [Outcome::Sent.as_str(), Outcome::Collapsed.as_str()]},
        };
        let found = self.push.ledger.find_one(filter).await.map_err(store_err)?;
        Ok(found.is_some())
    }

    async fn expire_ledger(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let deleted = self
            .push
            .ledger
            .delete_many(doc! {"updatedAt": {"$lt": to_bson_time(before)}})
            .await
            .map_err(store_err)?;
        Ok(deleted.deleted_count)
    }
}
