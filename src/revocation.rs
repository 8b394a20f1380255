//! Revoked tokens: an administrator refuses a user's tokens issued before a time (after a
//! ban, a stolen device, a password change). The store holds the time; each node keeps what
//! it read for a few seconds, so checking a token costs a store read per user and
//! [`FRESH_FOR`] at most, and learns of a revocation at once when it comes over the bus (the
//! node the administrator asked, and every node with a connection of that user). Other nodes
//! may accept an old token for up to [`FRESH_FOR`] after the revocation for REST; a new
//! connection is checked against the store again once it follows the user's bus topic, and
//! after the bus reconnects every local user is (events may have been lost).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use dashmap::DashMap;

use crate::{
    auth::{AuthError, Verified},
    domain::UserId,
    store::Store,
};

/// How long a node trusts what it read of a user's revocation.
pub const FRESH_FOR: Duration = Duration::from_secs(10);
/// Users whose revocation state a node keeps; past it the memory starts over.
const MAX_CACHED: usize = 100_000;

/// Whether a revocation of tokens issued before `before` refuses a token issued at
/// `issued`. `iat` counts whole seconds, so seconds are compared: a token issued in the
/// second of the revocation passes (an issuer's new token must). A token without `iat`
/// cannot show its age: refused.
pub fn revokes(before: DateTime<Utc>, issued: Option<DateTime<Utc>>) -> bool {
    issued.is_none_or(|issued| issued.timestamp() < before.timestamp())
}

fn refuse_if(
    before: Option<DateTime<Utc>>,
    issued_at: Option<DateTime<Utc>>,
) -> Result<(), AuthError> {
    match before {
        Some(before) if revokes(before, issued_at) => Err(AuthError::Revoked),
        _ => Ok(()),
    }
}

pub struct Revocations {
    store: Arc<dyn Store>,
    /// user -> (revoked before, when read).
    known: DashMap<UserId, (Option<DateTime<Utc>>, Instant)>,
}

impl Revocations {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            known: DashMap::new(),
        }
    }

    /// Refuses a token issued before the user's revocation (or without `iat`, when there is
    /// one: its age cannot be told).
    pub async fn check(&self, token: &Verified) -> Result<(), AuthError> {
        let before = match self.cached(&token.user) {
            Some(before) => before,
            None => self.read(&token.user).await?,
        };
        refuse_if(before, token.issued_at)
    }

    /// As [`check`](Self::check), from the store whatever this node knows: for a connection
    /// once it follows the user's bus topic, so that a revocation made while its handshake
    /// used a cached answer (and published before it listened) still closes it.
    pub async fn check_fresh(
        &self,
        user: &UserId,
        issued_at: Option<DateTime<Utc>>,
    ) -> Result<(), AuthError> {
        refuse_if(self.read(user).await?, issued_at)
    }

    async fn read(&self, user: &UserId) -> Result<Option<DateTime<Utc>>, AuthError> {
        let read = self
            .store
            .tokens_revoked_before(user)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        Ok(self.learned(user, read))
    }

    /// Revokes `user`'s tokens issued before `before`; returns the time in force.
    pub async fn revoke(
        &self,
        user: &UserId,
        before: DateTime<Utc>,
    ) -> crate::store::StoreResult<DateTime<Utc>> {
        let in_force = self.store.revoke_tokens(user, before).await?;
        self.learned(user, Some(in_force));
        Ok(in_force)
    }

    /// What a node heard (over the bus, or from the store); returns what it knows now. A
    /// revocation only ever moves forward, so the later time wins: a store read that began
    /// before a bus event arrived cannot undo it, nor can events arriving out of order.
    pub fn learned(&self, user: &UserId, before: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        if self.known.len() >= MAX_CACHED {
            self.known.clear();
        }
        let mut entry = self
            .known
            .entry(user.clone())
            .or_insert((None, Instant::now()));
        entry.0 = entry.0.max(before);
        entry.1 = Instant::now();
        entry.0
    }

    fn cached(&self, user: &UserId) -> Option<Option<DateTime<Utc>>> {
        let entry = self.known.get(user)?;
        let (before, read_at) = *entry;
        (read_at.elapsed() < FRESH_FOR).then_some(before)
    }
}
