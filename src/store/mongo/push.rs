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
    collections::{collect, index},
    docs::{MessageDoc, corrupt, from_bson_time, to_bson_time},
    errors::{is_duplicate_key, store_err},
};
use crate::{
    domain::{Message, RoomId, Seq, UserId},
    store::{
        StoreError, StoreResult,
        push::{
            Device, JobKind, LedgerEntry, MAX_JOB_SEQS, Outcome, PushJob, PushStore, Registered,
        },
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
        // One open job per (user, room, kind): only open jobs carry `openKey`.
        let open_key = IndexModel::builder()
            .keys(doc! {"openKey": 1})
            .options(
                IndexOptions::builder()
                    .name("open_key".to_owned())
                    .unique(true)
                    .sparse(true)
                    .build(),
            )
            .build();
        self.jobs
            .create_indexes([open_key, index(doc! {"dueAt": 1}, "due", false)])
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
        lease: doc.get_str("lease").unwrap_or_default().to_owned(),
        lease_until: time(doc, "leaseUntil")?,
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
            // Counted before another user's device is taken, so a refusal changes nothing.
            // (Concurrent registrations of one user may pass the cap by the number racing.)
            let count = devices
                .count_documents(doc! {"userId": device.user.as_str()})
                .await
                .map_err(store_err)?;
            let full = usize::try_from(count).unwrap_or(usize::MAX) >= max_per_user;
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
                if full {
                    return Ok(Registered::TooMany);
                }
                devices
                    .delete_one(doc! {"_id": &stored.id})
                    .await
                    .map_err(store_err)?;
            }
            if full {
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
        let open_key = format!("{user}|{room}|{}", kind.as_str());
        let seq = seq_to_i64(seq);
        // Three rounds at most: a racing upsert made the open job (join it), or the open
        // job is full (close it, start another).
        for _ in 0..3 {
            let on_insert = doc! {
                "_id": uuid::Uuid::now_v7().to_string(),
                "userId": user.as_str(),
                "roomId": room.as_str(),
                "kind": kind.as_str(),
                "dueAt": to_bson_time(due_at),
                "createdAt": to_bson_time(now),
                "attempts": 0_i64,
                "done": Bson::Array(Vec::new()),
                "lease": "",
                "leaseUntil": bson::DateTime::from_millis(0),
            };
            let (filter, update) = match kind {
                JobKind::Message => (
                    doc! {"openKey": &open_key, format!("seqs.{}", MAX_JOB_SEQS - 1): {"$exists": false}},
                    doc! {"$addToSet": {"seqs": seq}, "$setOnInsert": on_insert},
                ),
                JobKind::Badge => (
                    doc! {"openKey": &open_key},
                    doc! {"$max": {"readSeq": seq}, "$setOnInsert": on_insert},
                ),
            };
            match self.push.jobs.update_one(filter, update).upsert(true).await {
                Ok(_) => return Ok(()),
                Err(e) if is_duplicate_key(&e) => {
                    // Either way the open job exists now; if it is full, it goes as it is.
                    let full = doc! {
                        "openKey": &open_key,
                        format!("seqs.{}", MAX_JOB_SEQS - 1): {"$exists": true},
                    };
                    self.push
                        .jobs
                        .update_one(full, doc! {"$unset": {"openKey": ""}})
                        .await
                        .map_err(store_err)?;
                }
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(StoreError::Unavailable(
            "push job enqueue raced; retry".into(),
        ))
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
            let claim = doc! {
                "$set": {
                    "leaseNode": node,
                    "lease": uuid::Uuid::new_v4().to_string(),
                    "leaseUntil": to_bson_time(lease_until),
                },
                "$unset": {"openKey": ""},
            };
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

    async fn reschedule_job(&self, job: &PushJob) -> StoreResult<bool> {
        let set = doc! {
            "dueAt": to_bson_time(job.due_at),
            "attempts": i64::from(job.attempts),
            "done": &job.done_devices,
            "leaseNode": Bson::Null,
            "lease": "",
            "leaseUntil": bson::DateTime::from_millis(0),
        };
        let updated = self
            .push
            .jobs
            .update_one(
                doc! {"_id": &job.id, "lease": &job.lease},
                doc! {"$set": set},
            )
            .await
            .map_err(store_err)?;
        Ok(updated.matched_count == 1)
    }

    async fn finish_job(&self, job: &PushJob) -> StoreResult<bool> {
        let deleted = self
            .push
            .jobs
            .delete_one(doc! {"_id": &job.id, "lease": &job.lease})
            .await
            .map_err(store_err)?;
        Ok(deleted.deleted_count == 1)
    }

    async fn record_decisions(&self, entries: &[LedgerEntry]) -> StoreResult<Vec<LedgerEntry>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let docs = entries
            .iter()
            .map(ledger_doc)
            .collect::<StoreResult<Vec<_>>>()?;
        // One round trip for the whole group; entries decided before are left as they are.
        match self.push.ledger.insert_many(docs).ordered(false).await {
            Ok(_) => return Ok(entries.to_vec()),
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(store_err(e)),
        }
        let ids: Vec<String> = entries.iter().map(ledger_id).collect();
        let stored = collect(self.push.ledger.find(doc! {"_id": {"$in": &ids}})).await?;
        let mut by_id = std::collections::HashMap::new();
        for doc in &stored {
            by_id.insert(
                field(doc, "_id")?.to_owned(),
                from_json::<LedgerEntry>("entry", field(doc, "entry")?)?,
            );
        }
        Ok(entries
            .iter()
            .map(|e| by_id.remove(&ledger_id(e)).unwrap_or_else(|| e.clone()))
            .collect())
    }

    async fn update_ledger(&self, entries: &[LedgerEntry]) -> StoreResult<()> {
        for entry in entries {
            // Field by field, so the entry's owner stays.
            let mut fields = ledger_doc(entry)?;
            fields.remove("_id");
            self.push
                .ledger
                .update_one(doc! {"_id": ledger_id(entry)}, doc! {"$set": fields})
                .upsert(true)
                .await
                .map_err(store_err)?;
        }
        Ok(())
    }

    async fn claim_ledger(
        &self,
        user: &UserId,
        room: &RoomId,
        seqs: &[Seq],
        owner: &str,
    ) -> StoreResult<Vec<LedgerEntry>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let seqs: Vec<i64> = seqs.iter().map(|&s| seq_to_i64(s)).collect();
        let queued = Outcome::Queued.as_str();
        let free = doc! {
            "userId": user.as_str(), "roomId": room.as_str(), "seq": {"$in": &seqs},
            "outcome": queued, "owner": {"$in": [Bson::Null, Bson::from(owner)]},
        };
        self.push
            .ledger
            .update_many(free, doc! {"$set": {"owner": owner}})
            .await
            .map_err(store_err)?;
        let mine = doc! {
            "userId": user.as_str(), "roomId": room.as_str(), "seq": {"$in": &seqs},
            "outcome": queued, "owner": owner,
        };
        let find = self.push.ledger.find(mine).sort(doc! {"seq": 1});
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

    async fn expire_ledger(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        let old = self
            .push
            .ledger
            .find(doc! {"updatedAt": {"$lt": to_bson_time(before)}})
            .projection(doc! {"_id": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let ids: Vec<Bson> = collect(old)
            .await?
            .into_iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let deleted = self
            .push
            .ledger
            .delete_many(doc! {"_id": {"$in": ids}})
            .await
            .map_err(store_err)?;
        Ok(deleted.deleted_count)
    }
}
