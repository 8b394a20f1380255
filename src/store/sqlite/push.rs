//! Devices, notification jobs and the ledger in the SQLite file (schema v4). Structured
//! parts (a device's target, a job's seqs, a ledger entry) are JSON in one column: they are
//! read whole, never queried inside.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    SqliteStore, rows::MESSAGE_COLUMNS, rows::bad_column, rows::message_from_row, sql_err,
};
use crate::{
    domain::{Message, RoomId, Seq, UserId, timestamp::from_millis},
    store::{
        StoreError, StoreResult,
        push::{Device, JobKind, LedgerEntry, MAX_JOB_SEQS, PushJob, PushStore, Registered},
        seq_to_i64,
    },
};

const DEVICE_COLUMNS: &str = "id, user_id, name, created_at, target";
const JOB_COLUMNS: &str =
    "id, user_id, room_id, kind, seqs, due_at, created_at, attempts, done, lease, lease_until";

fn json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(format!("json: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(i: usize, s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| bad_column(i, e))
}

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<Device> {
    let user: String = row.get(1)?;
    let target: String = row.get(4)?;
    Ok(Device {
        id: row.get(0)?,
        user: UserId::from_stored(&user).map_err(|e| bad_column(1, e))?,
        name: row.get(2)?,
        created_at: from_millis(row.get(3)?),
        target: from_json(4, &target)?,
    })
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<PushJob> {
    let user: String = row.get(1)?;
    let room: String = row.get(2)?;
    let kind: String = row.get(3)?;
    let seqs: String = row.get(4)?;
    let done: String = row.get(8)?;
    Ok(PushJob {
        id: row.get(0)?,
        user: UserId::from_stored(&user).map_err(|e| bad_column(1, e))?,
        room: RoomId::parse(&room).map_err(|e| bad_column(2, e))?,
        kind: JobKind::parse(&kind)
            .ok_or_else(|| bad_column(3, std::io::Error::other(format!("job kind {kind:?}"))))?,
        seqs: from_json(4, &seqs)?,
        due_at: from_millis(row.get(5)?),
        created_at: from_millis(row.get(6)?),
        attempts: row.get(7)?,
        done_devices: from_json(8, &done)?,
        lease: row.get(9)?,
        lease_until: from_millis(row.get(10)?),
    })
}

fn device_by_key(conn: &Connection, key: &str) -> StoreResult<Option<Device>> {
    conn.prepare_cached(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE key = ?1"
    ))
    .and_then(|mut s| s.query_row([key], device_from_row).optional())
    .map_err(sql_err)
}

/// Writes `entry`: with `replace`, over what the ledger has (its owner stays); else only if
/// the ledger has nothing for it.
fn write_ledger(conn: &Connection, entry: &LedgerEntry, replace: bool) -> StoreResult<bool> {
    let on_conflict = if replace {
        "DO UPDATE SET outcome = excluded.outcome, updated_at = excluded.updated_at,
             entry = excluded.entry"
    } else {
        "DO NOTHING"
    };
    conn.prepare_cached(&format!(
        "INSERT INTO push_ledger (user_id, room_id, seq, outcome, decided_at, updated_at, entry)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (user_id, room_id, seq) {on_conflict}"
    ))
    .and_then(|mut s| {
        s.execute(params![
            entry.user.as_str(),
            entry.room.as_str(),
            seq_to_i64(entry.seq),
            entry.outcome.as_str(),
            entry.decided_at.timestamp_millis(),
            entry.updated_at.timestamp_millis(),
            json(entry).map_err(|e| bad_column(6, e))?,
        ])
    })
    .map(|n| n == 1)
    .map_err(sql_err)
}

fn ledger_entry(
    conn: &Connection,
    user: &UserId,
    room: &RoomId,
    seq: Seq,
) -> StoreResult<Option<LedgerEntry>> {
    conn.prepare_cached(
        "SELECT entry FROM push_ledger WHERE user_id = ?1 AND room_id = ?2 AND seq = ?3",
    )
    .and_then(|mut s| {
        s.query_row(
            params![user.as_str(), room.as_str(), seq_to_i64(seq)],
            |r| from_json::<LedgerEntry>(0, &r.get::<_, String>(0)?),
        )
        .optional()
    })
    .map_err(sql_err)
}

#[async_trait]
impl PushStore for SqliteStore {
    async fn register_device(
        &self,
        device: Device,
        max_per_user: usize,
    ) -> StoreResult<Registered> {
        // One write job: the lookup, the cap and the write are atomic.
        self.write(move |conn| {
            let key = device.target.key();
            let target = json(&device.target)?;
            let count: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM devices WHERE user_id = ?1")
                .and_then(|mut s| s.query_row([device.user.as_str()], |r| r.get(0)))
                .map_err(sql_err)?;
            let full = usize::try_from(count).unwrap_or(usize::MAX) >= max_per_user;
            match device_by_key(conn, &key)? {
                Some(mut mine) if mine.user == device.user => {
                    conn.prepare_cached("UPDATE devices SET name = ?2, target = ?3 WHERE id = ?1")
                        .and_then(|mut s| s.execute(params![mine.id, device.name, target]))
                        .map_err(sql_err)?;
                    mine.name = device.name;
                    mine.target = device.target;
                    return Ok(Registered::Existing(mine));
                }
                // Checked before another user's device is taken: a refusal changes nothing.
                _ if full => return Ok(Registered::TooMany),
                Some(theirs) => {
                    conn.prepare_cached("DELETE FROM devices WHERE id = ?1")
                        .and_then(|mut s| s.execute([theirs.id]))
                        .map_err(sql_err)?;
                }
                None => {}
            }
            conn.prepare_cached(&format!(
                "INSERT INTO devices ({DEVICE_COLUMNS}, key) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    device.id,
                    device.user.as_str(),
                    device.name,
                    device.created_at.timestamp_millis(),
                    target,
                    key
                ])
            })
            .map_err(sql_err)?;
            Ok(Registered::Created(device))
        })
        .await
    }

    async fn devices(&self, users: &[UserId]) -> StoreResult<Vec<Device>> {
        let mut users = users.to_vec();
        users.sort();
        users.dedup();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = ?1 ORDER BY created_at, id"
                ))
                .map_err(sql_err)?;
            let mut all = Vec::new();
            for user in &users {
                let rows = stmt
                    .query_map([user.as_str()], device_from_row)
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(sql_err)?;
                all.extend(rows);
            }
            Ok(all)
        })
        .await
    }

    async fn remove_device(&self, user: &UserId, id: &str) -> StoreResult<bool> {
        let (user, id) = (user.clone(), id.to_owned());
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM devices WHERE id = ?1 AND user_id = ?2")
                .and_then(|mut s| s.execute([id.as_str(), user.as_str()]))
                .map(|n| n == 1)
                .map_err(sql_err)
        })
        .await
    }

    async fn remove_devices(&self, ids: &[String]) -> StoreResult<()> {
        let ids = ids.to_vec();
        self.write(move |conn| {
            let mut stmt = conn
                .prepare_cached("DELETE FROM devices WHERE id = ?1")
                .map_err(sql_err)?;
            for id in &ids {
                stmt.execute([id]).map_err(sql_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn claim_undecided(
        &self,
        stored_before: DateTime<Utc>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "UPDATE messages SET push_lease = ?3 WHERE rowid IN (
                     SELECT rowid FROM messages
                     WHERE push_pending = 1 AND created_at < ?1 AND push_lease < ?2
                     ORDER BY created_at LIMIT ?4)
                 RETURNING {MESSAGE_COLUMNS}"
            ))
            .and_then(|mut s| {
                s.query_map(
                    params![
                        stored_before.timestamp_millis(),
                        now.timestamp_millis(),
                        lease_until.timestamp_millis(),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    message_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql_err)
        })
        .await
    }

    async fn mark_decided(&self, room: &RoomId, seq: Seq) -> StoreResult<()> {
        let room = room.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE messages SET push_pending = NULL, push_lease = 0
                 WHERE room_id = ?1 AND seq = ?2",
            )
            .and_then(|mut s| s.execute(params![room.as_str(), seq_to_i64(seq)]))
            .map(|_| ())
            .map_err(sql_err)
        })
        .await
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
        let (user, room) = (user.clone(), room.clone());
        self.write(move |conn| {
            let open = conn
                .prepare_cached(
                    "SELECT id, seqs FROM push_jobs
                     WHERE user_id = ?1 AND room_id = ?2 AND kind = ?3 AND open = 1",
                )
                .and_then(|mut s| {
                    s.query_row(params![user.as_str(), room.as_str(), kind.as_str()], |r| {
                        let seqs: Vec<Seq> = from_json(1, &r.get::<_, String>(1)?)?;
                        Ok((r.get::<_, String>(0)?, seqs))
                    })
                    .optional()
                })
                .map_err(sql_err)?;
            let insert_new = |conn: &Connection| {
                conn.prepare_cached(
                    "INSERT INTO push_jobs (id, user_id, room_id, kind, open, seqs, due_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        uuid::Uuid::now_v7().to_string(),
                        user.as_str(),
                        room.as_str(),
                        kind.as_str(),
                        json(&[seq]).map_err(|e| bad_column(5, e))?,
                        due_at.timestamp_millis(),
                        now.timestamp_millis()
                    ])
                })
                .map(|_| ())
                .map_err(sql_err)
            };
            match open {
                Some((id, seqs)) if seqs.len() >= MAX_JOB_SEQS => {
                    // Full: it goes as it is, the next messages start a new job.
                    conn.prepare_cached("UPDATE push_jobs SET open = 0 WHERE id = ?1")
                        .and_then(|mut s| s.execute([id]))
                        .map_err(sql_err)?;
                    insert_new(conn)?;
                }
                Some((id, mut seqs)) => {
                    match kind {
                        // A badge carries the newest read position only.
                        JobKind::Badge => seqs = vec![seq.max(seqs.first().copied().unwrap_or(0))],
                        JobKind::Message if !seqs.contains(&seq) => {
                            seqs.push(seq);
                            seqs.sort_unstable();
                        }
                        JobKind::Message => return Ok(()),
                    }
                    conn.prepare_cached("UPDATE push_jobs SET seqs = ?2 WHERE id = ?1")
                        .and_then(|mut s| s.execute(params![id, json(&seqs).map_err(|e| bad_column(1, e))?]))
                        .map_err(sql_err)?;
                }
                None => insert_new(conn)?,
            }
            Ok(())
        })
        .await
    }

    async fn claim_jobs(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<PushJob>> {
        let node = node.to_owned();
        let lease = uuid::Uuid::new_v4().to_string();
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "UPDATE push_jobs SET open = 0, lease_node = ?2, lease_until = ?3, lease = ?5
                 WHERE id IN (
                     SELECT id FROM push_jobs WHERE due_at <= ?1 AND lease_until < ?1
                     ORDER BY due_at LIMIT ?4)
                 RETURNING {JOB_COLUMNS}"
            ))
            .and_then(|mut s| {
                s.query_map(
                    params![
                        now.timestamp_millis(),
                        node,
                        lease_until.timestamp_millis(),
                        i64::try_from(limit).unwrap_or(i64::MAX),
                        lease
                    ],
                    job_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql_err)
        })
        .await
    }

    async fn reschedule_job(&self, job: &PushJob) -> StoreResult<bool> {
        let job = job.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE push_jobs SET due_at = ?2, attempts = ?3, done = ?4, lease_node = NULL,
                     lease_until = 0, lease = '' WHERE id = ?1 AND lease = ?5",
            )
            .and_then(|mut s| {
                s.execute(params![
                    job.id,
                    job.due_at.timestamp_millis(),
                    job.attempts,
                    json(&job.done_devices).map_err(|e| bad_column(3, e))?,
                    job.lease
                ])
            })
            .map(|n| n == 1)
            .map_err(sql_err)
        })
        .await
    }

    async fn finish_job(&self, job: &PushJob) -> StoreResult<bool> {
        let (id, lease) = (job.id.clone(), job.lease.clone());
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM push_jobs WHERE id = ?1 AND lease = ?2")
                .and_then(|mut s| s.execute([id, lease]))
                .map(|n| n == 1)
                .map_err(sql_err)
        })
        .await
    }

    async fn record_decisions(&self, entries: &[LedgerEntry]) -> StoreResult<Vec<LedgerEntry>> {
        let entries = entries.to_vec();
        self.write(move |conn| {
            entries
                .iter()
                .map(|e| {
                    write_ledger(conn, e, false)?;
                    Ok(ledger_entry(conn, &e.user, &e.room, e.seq)?.unwrap_or_else(|| e.clone()))
                })
                .collect()
        })
        .await
    }

    async fn update_ledger(&self, entries: &[LedgerEntry]) -> StoreResult<()> {
        let entries = entries.to_vec();
        self.write(move |conn| {
            for entry in &entries {
                write_ledger(conn, entry, true)?;
            }
            Ok(())
        })
        .await
    }

    async fn claim_ledger(
        &self,
        user: &UserId,
        room: &RoomId,
        seqs: &[Seq],
        owner: &str,
    ) -> StoreResult<Vec<LedgerEntry>> {
        let (user, room, owner, mut seqs) =
            (user.clone(), room.clone(), owner.to_owned(), seqs.to_vec());
        seqs.sort_unstable();
        seqs.dedup();
        self.write(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE push_ledger SET owner = ?4
                     WHERE user_id = ?1 AND room_id = ?2 AND seq = ?3 AND outcome = 'queued'
                       AND (owner IS NULL OR owner = ?4)
                     RETURNING entry",
                )
                .map_err(sql_err)?;
            let mut owned = Vec::new();
            for seq in seqs {
                let entry = stmt
                    .query_row(
                        params![user.as_str(), room.as_str(), seq_to_i64(seq), owner],
                        |r| from_json::<LedgerEntry>(0, &r.get::<_, String>(0)?),
                    )
                    .optional()
                    .map_err(sql_err)?;
                owned.extend(entry);
            }
            Ok(owned)
        })
        .await
    }

    async fn ledger(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        limit: usize,
    ) -> StoreResult<Vec<LedgerEntry>> {
        let (user, room) = (user.clone(), room.cloned());
        self.read(move |conn| {
            // An empty room matches every room.
            conn.prepare_cached(
                "SELECT entry FROM push_ledger
                 WHERE user_id = ?1 AND (?2 = '' OR room_id = ?2)
                 ORDER BY decided_at DESC, seq DESC LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![
                        user.as_str(),
                        room.as_ref().map_or("", |r| r.as_str()),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |r| from_json::<LedgerEntry>(0, &r.get::<_, String>(0)?),
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql_err)
        })
        .await
    }

    async fn notified_between(
        &self,
        user: &UserId,
        room: &RoomId,
        after: Seq,
        upto: Seq,
    ) -> StoreResult<bool> {
        let (user, room) = (user.clone(), room.clone());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM push_ledger
                 WHERE user_id = ?1 AND room_id = ?2 AND seq > ?3 AND seq <= ?4
                   AND outcome IN ('sent', 'collapsed'))",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        user.as_str(),
                        room.as_str(),
                        seq_to_i64(after),
                        seq_to_i64(upto)
                    ],
                    |r| r.get::<_, bool>(0),
                )
            })
            .map_err(sql_err)
        })
        .await
    }

    async fn expire_ledger(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM push_ledger WHERE (user_id, room_id, seq) IN (
                     SELECT user_id, room_id, seq FROM push_ledger WHERE updated_at < ?1 LIMIT ?2)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    before.timestamp_millis(),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ])
            })
            .map(|n| n as u64)
            .map_err(sql_err)
        })
        .await
    }
}
