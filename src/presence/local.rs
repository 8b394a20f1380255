//! The presence registry of a single node: a map in memory.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Presence, PresenceEntry, PresenceError};
use crate::domain::UserId;

/// The registry of a single node.
#[derive(Default)]
pub struct LocalPresence {
    entries: Mutex<HashMap<UserId, HashMap<String, DateTime<Utc>>>>,
}

#[async_trait]
impl Presence for LocalPresence {
    async fn refresh(
        &self,
        entries: &[PresenceEntry],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let mut map = self.entries.lock().expect("presence lock");
        for (user, conn) in entries {
            map.entry(user.clone())
                .or_default()
                .insert(conn.clone(), until);
        }
        Ok(())
    }

    async fn remove(
        &self,
        user: &UserId,
        conn: &str,
        _now: DateTime<Utc>,
    ) -> Result<(), PresenceError> {
        let mut map = self.entries.lock().expect("presence lock");
        if let Some(conns) = map.get_mut(user) {
            conns.remove(conn);
            if conns.is_empty() {
                map.remove(user);
            }
        }
        Ok(())
    }

    async fn online(
        &self,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, PresenceError> {
        let mut map = self.entries.lock().expect("presence lock");
        Ok(users
            .iter()
            .map(|user| {
                let Some(conns) = map.get_mut(user) else {
                    return false;
                };
                conns.retain(|_, until| *until > now);
                !conns.is_empty()
            })
            .collect())
    }
}
