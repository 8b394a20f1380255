//! The presence registry of a single node: maps in memory, one lock.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Mutex,
};

use async_trait::async_trait;

use super::{Millis, PresenceRegistry, PresenceResult};
use crate::domain::UserId;

#[derive(Default)]
pub struct LocalPresence {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    records: HashMap<UserId, String>,
    due: BTreeSet<(Millis, UserId)>,
    due_of: HashMap<UserId, Millis>,
    leases: HashMap<String, Millis>,
    node_users: HashMap<String, HashSet<UserId>>,
}

impl LocalPresence {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section below leaves the maps consistent, so a poisoned lock (a
        // panic elsewhere) holds nothing half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PresenceRegistry for LocalPresence {
    async fn load(&self, users: &[UserId]) -> PresenceResult<Vec<Option<String>>> {
        let state = self.state();
        Ok(users
            .iter()
            .map(|u| state.records.get(u).cloned())
            .collect())
    }

    async fn swap(
        &self,
        user: &UserId,
        expected: Option<&str>,
        record: &str,
        due: Option<Millis>,
    ) -> PresenceResult<bool> {
        let mut state = self.state();
        if state.records.get(user).map(String::as_str) != expected {
            return Ok(false);
        }
        state.records.insert(user.clone(), record.to_owned());
        if let Some(old) = state.due_of.remove(user) {
            state.due.remove(&(old, user.clone()));
        }
        if let Some(at) = due {
            state.due_of.insert(user.clone(), at);
            state.due.insert((at, user.clone()));
        }
        Ok(true)
    }

    async fn due(&self, now: Millis, limit: usize) -> PresenceResult<Vec<UserId>> {
        let state = self.state();
        Ok(state
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, user)| user.clone())
            .collect())
    }

    async fn renew_lease(&self, node: &str, until: Millis) -> PresenceResult<()> {
        self.state().leases.insert(node.to_owned(), until);
        Ok(())
    }

    async fn expired_nodes(&self, now: Millis) -> PresenceResult<Vec<String>> {
        let state = self.state();
        Ok(state
            .leases
            .iter()
            .filter(|(_, until)| **until < now)
            .map(|(node, _)| node.clone())
            .collect())
    }

    async fn claim_expired(&self, node: &str, now: Millis, until: Millis) -> PresenceResult<bool> {
        let mut state = self.state();
        match state.leases.get_mut(node) {
            Some(lease) if *lease < now => {
                *lease = until;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_node_user(&self, node: &str, user: &UserId, present: bool) -> PresenceResult<()> {
        let mut state = self.state();
        let users = state.node_users.entry(node.to_owned()).or_default();
        if present {
            users.insert(user.clone());
        } else {
            users.remove(user);
        }
        Ok(())
    }

    async fn node_users(&self, node: &str) -> PresenceResult<Vec<UserId>> {
        let state = self.state();
        Ok(state
            .node_users
            .get(node)
            .map(|users| users.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn forget_node(&self, node: &str) -> PresenceResult<()> {
        let mut state = self.state();
        state.leases.remove(node);
        state.node_users.remove(node);
        Ok(())
    }
}
