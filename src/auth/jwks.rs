//! Public keys of identity providers: a JWKS fetched from a URL (refreshed when a token
//! names an unknown kid, at most once per interval; cached keys survive an outage), and PEM
//! public keys.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use anyhow::Context;
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse},
};

/// Public keys by `kid`, each with the one algorithm it verifies.
pub(super) type KeyRing = HashMap<String, (Algorithm, DecodingKey)>;

/// The keys of an identity provider, as published at a JWKS URL.
pub(super) struct Jwks {
    pub(super) url: String,
    pub(super) http: reqwest::Client,
    pub(super) keys: RwLock<KeyRing>,
    /// When the keys were last fetched; held while fetching, so concurrent requests with an
    /// unknown kid cause one fetch, not one each.
    pub(super) fetched: tokio::sync::Mutex<Instant>,
    pub(super) min_refresh: Duration,
}

impl Jwks {
    pub(super) async fn fetch(&self) -> anyhow::Result<KeyRing> {
        let set: JwkSet = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .context("fetching the JWKS")?
            .json()
            .await
            .context("parsing the JWKS")?;
        let mut ring = KeyRing::new();
        for jwk in &set.keys {
            match ring_entry(jwk) {
                Some((kid, entry)) => {
                    ring.insert(kid, entry);
                }
                None => tracing::debug!(kid = ?jwk.common.key_id, "skipping an unusable JWK"),
            }
        }
        Ok(ring)
    }

    fn find(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        self.keys.read().expect("jwks lock").get(kid).cloned()
    }

    /// The key for `kid`, fetching the set again if it is unknown and the last fetch is old
    /// enough. A failed fetch keeps the keys already known.
    pub(super) async fn key(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        if let Some(found) = self.find(kid) {
            return Some(found);
        }
        let mut fetched = self.fetched.lock().await;
        if let Some(found) = self.find(kid) {
            return Some(found); // fetched by someone else meanwhile
        }
        if fetched.elapsed() < self.min_refresh {
            return None;
        }
        *fetched = Instant::now();
        match self.fetch().await {
            // An empty set is an outage in disguise: keep what is cached.
            Ok(ring) if ring.is_empty() => {
                tracing::warn!("JWKS refresh returned no usable key; keeping the cached keys")
            }
            Ok(ring) => {
                tracing::info!(keys = ring.len(), "JWKS refreshed");
                *self.keys.write().expect("jwks lock") = ring;
            }
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys"),
        }
        self.find(kid)
    }
}

/// A JWK chatd can use: RSA (RS256) or P-256 (ES256), with a kid.
fn ring_entry(jwk: &Jwk) -> Option<(String, (Algorithm, DecodingKey))> {
    // A key published for encryption never verifies a signature.
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let kid = jwk.common.key_id.clone()?;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, (algorithm, key)))
}

/// A PEM public key: RSA (RS256) or EC P-256 (ES256).
pub(super) fn pem_key(pem: &[u8]) -> anyhow::Result<(Algorithm, DecodingKey)> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((Algorithm::RS256, key));
    }
    let key = DecodingKey::from_ec_pem(pem)
        .context("auth.public_key_file: not an RSA or EC public key in PEM")?;
    Ok((Algorithm::ES256, key))
}
