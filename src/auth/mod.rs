//! Authentication: JWTs signed by the customer's backend or identity provider (or by
//! `chatd token` and the dev login). `sub` is the user id and `exp` is required. Verified on
//! every WebSocket connect and every REST request; nothing else is trusted about the caller.
//!
//! Keys: HS256 with `auth.jwt_secret`, and RS256/ES256 with a PEM public key
//! (`auth.public_key_file`) or the keys an identity provider publishes as a JWKS
//! (`auth.jwks_url`: fetched at start, fetched again when a token names an unknown `kid`, at
//! most once per `auth.jwks_refresh_min_ms`; an outage of the JWKS keeps the cached keys).
//!
//! jsonwebtoken checks the signature and the algorithm; the claims (`exp`, `nbf`, `aud`,
//! `iss`) are checked here, against chatd's clock, so that fractional NumericDates are
//! accepted and absurd dates are refused rather than overflowing later.
//!
//! Over 400 lines: a third is the tests of the claim rules; the key sources are in `jwks`.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context;

mod jwks;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use jwks::{Jwks, pem_key};
use serde::{Deserialize, Serialize};

use crate::{clock::Clock, config::AuthSettings, domain::UserId};

/// The development secret in `config/default.toml`; refused in production and on any
/// non-loopback address (see `Settings::validate`).
pub use chatd_protocol::DEV_SECRET;

/// Browsers cannot set headers on a WebSocket, so a token may travel as a subprotocol
/// `bearer.<jwt>` next to the protocol name (JWTs use only characters valid there).
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// The latest `exp` accepted: 9999-12-31T23:59:59Z. Later dates are not plausible and would
/// overflow date arithmetic.
pub const MAX_EXP: i64 = 253_402_300_799;

/// How long one JWKS fetch may take.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// What chatd mints (dev login, `chatd token`).
#[derive(Debug, Clone, Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    exp: i64,
    iat: i64,
}

/// What chatd reads from a token. NumericDates may be fractional (RFC 7519 §2).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    #[serde(default)]
    aud: Option<Audience>,
    iss: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(all) => all.iter().any(|a| a == wanted),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no token: send 'Authorization: Bearer <token>', ?token=, or a bearer.<token> subprotocol"
    )]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Issued before an administrator revoked the user's tokens (see `revocation`).
    #[error("token revoked: sign in again")]
    Revoked,
    /// Whether the token was revoked cannot be read now (the store is down).
    #[error("token check unavailable: {0}")]
    Unavailable(String),
}

fn invalid(why: &str) -> AuthError {
    AuthError::Invalid(why.to_owned())
}

#[derive(Debug, Clone)]
pub struct Verified {
    pub user: UserId,
    /// When the token stops being accepted: `exp` plus the leeway.
    pub valid_until: DateTime<Utc>,
    /// The `iat` claim, if the token has one (revocations refuse tokens without it).
    pub issued_at: Option<DateTime<Utc>>,
}

/// Signs (HS256) and verifies tokens.
#[derive(Clone)]
pub struct TokenAuthority {
    inner: Arc<Inner>,
}

struct Inner {
    secret: Option<(EncodingKey, DecodingKey)>,
    public_key: Option<(Algorithm, DecodingKey)>,
    jwks: Option<Jwks>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: chrono::Duration,
    clock: Arc<dyn Clock>,
}

impl TokenAuthority {
    /// HS256 with `secret` only: what `chatd token`, the load tools and tests mint with.
    pub fn new(secret: &str, leeway_secs: u64) -> Self {
        Self::hs256(
            secret,
            leeway_secs,
            Arc::new(crate::clock::SystemClock::default()),
        )
    }

    fn hs256(secret: &str, leeway_secs: u64, clock: Arc<dyn Clock>) -> Self {
        let secret = (!secret.is_empty()).then(|| {
            (
                EncodingKey::from_secret(secret.as_bytes()),
                DecodingKey::from_secret(secret.as_bytes()),
            )
        });
        Self {
            inner: Arc::new(Inner {
                secret,
                public_key: None,
                jwks: None,
                audience: None,
                issuer: None,
                leeway: chrono::Duration::seconds(leeway_secs.min(86_400) as i64),
                clock,
            }),
        }
    }

    /// Everything `[auth]` configures; fetches the JWKS once (start-up fails if it cannot).
    pub async fn from_settings(auth: &AuthSettings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let mut this = Self::hs256(&auth.jwt_secret, auth.leeway_secs, clock);
        let inner = Arc::get_mut(&mut this.inner).expect("not shared yet");
        if !auth.public_key_file.is_empty() {
            let pem = std::fs::read(&auth.public_key_file).with_context(|| {
                format!("auth.public_key_file: reading {}", auth.public_key_file)
            })?;
            inner.public_key = Some(pem_key(&pem)?);
        }
        if !auth.jwks_url.is_empty() {
            let jwks = Jwks {
                url: auth.jwks_url.clone(),
                http: reqwest::Client::builder()
                    .timeout(JWKS_FETCH_TIMEOUT)
                    .build()
                    .context("building the JWKS client")?,
                keys: RwLock::default(),
                // As if fetched long ago: a key rotated right after start is fetched at once.
                fetched: tokio::sync::Mutex::new(
                    Instant::now()
                        .checked_sub(Duration::from_millis(auth.jwks_refresh_min_ms))
                        .unwrap_or_else(Instant::now),
                ),
                min_refresh: Duration::from_millis(auth.jwks_refresh_min_ms),
            };
            let ring = jwks
                .fetch()
                .await
                .with_context(|| format!("auth.jwks_url: {}", auth.jwks_url))?;
            tracing::info!(keys = ring.len(), url = %auth.jwks_url, "JWKS loaded");
            *jwks.keys.write().expect("jwks lock") = ring;
            inner.jwks = Some(jwks);
        }
        inner.audience = Some(auth.audience.clone()).filter(|a| !a.is_empty());
        inner.issuer = Some(auth.issuer.clone()).filter(|i| !i.is_empty());
        Ok(this)
    }

    /// A token for `user` valid for `ttl`. Needs `auth.jwt_secret`.
    pub fn mint(&self, user: &UserId, ttl: Duration) -> String {
        let (encoding, _) = self
            .inner
            .secret
            .as_ref()
            .expect("minting needs auth.jwt_secret");
        let now = self.inner.clock.now().timestamp();
        let claims = MintedClaims {
            sub: user.as_str(),
            exp: now
                .saturating_add(ttl.as_secs().min(MAX_EXP as u64) as i64)
                .min(MAX_EXP),
            iat: now,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)
            .expect("HS256 signing cannot fail")
    }

    pub fn can_mint(&self) -> bool {
        self.inner.secret.is_some()
    }

    pub async fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        let (algorithm, key) = self.key_for(&header).await?;
        let mut validation = Validation::new(algorithm);
        // The claims are checked below; jsonwebtoken checks signature and algorithm only.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::InvalidSignature => invalid("bad signature"),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                invalid("algorithm not accepted")
            }
            _ => invalid("malformed token"),
        })?;
        self.check_claims(data.claims)
    }

    /// The key a token's header asks for; a token cannot choose a key of another kind.
    async fn key_for(&self, header: &Header) -> Result<(Algorithm, DecodingKey), AuthError> {
        let inner = &self.inner;
        match header.alg {
            Algorithm::HS256 => inner
                .secret
                .as_ref()
                .map(|(_, key)| (Algorithm::HS256, key.clone()))
                .ok_or_else(|| invalid("algorithm not accepted")),
            Algorithm::RS256 | Algorithm::ES256 => {
                let from_jwks = match (&inner.jwks, &header.kid) {
                    (Some(jwks), Some(kid)) => jwks.key(kid).await,
                    _ => None,
                };
                let (algorithm, key) = from_jwks
                    .or_else(|| inner.public_key.clone())
                    .ok_or_else(|| invalid("unknown signing key"))?;
                if algorithm != header.alg {
                    return Err(invalid("algorithm not accepted"));
                }
                Ok((algorithm, key))
            }
            _ => Err(invalid("algorithm not accepted")),
        }
    }

    fn check_claims(&self, claims: Claims) -> Result<Verified, AuthError> {
        let inner = &self.inner;
        let sub = claims.sub.ok_or_else(|| invalid("missing sub"))?;
        let user = UserId::parse(&sub).map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        let exp = claims.exp.ok_or_else(|| invalid("missing exp"))?;
        if !exp.is_finite() || exp < 0.0 || exp > MAX_EXP as f64 {
            return Err(invalid("exp out of range"));
        }
        let expires_at =
            DateTime::from_timestamp(exp as i64, 0).ok_or_else(|| invalid("exp out of range"))?;
        let valid_until = expires_at
            .checked_add_signed(inner.leeway)
            .ok_or_else(|| invalid("exp out of range"))?;
        let now = inner.clock.now();
        if now >= valid_until {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.nbf {
            if !nbf.is_finite() || nbf > MAX_EXP as f64 {
                return Err(invalid("nbf out of range"));
            }
            let not_before = DateTime::from_timestamp(nbf.max(0.0) as i64, 0)
                .and_then(|t| t.checked_sub_signed(inner.leeway))
                .ok_or_else(|| invalid("nbf out of range"))?;
            if now < not_before {
                return Err(invalid("token not valid yet (nbf)"));
            }
        }
        if let Some(wanted) = &inner.audience
            && !claims.aud.as_ref().is_some_and(|a| a.contains(wanted))
        {
            return Err(invalid("wrong audience"));
        }
        if let Some(wanted) = &inner.issuer
            && claims.iss.as_deref() != Some(wanted)
        {
            return Err(invalid("wrong issuer"));
        }
        let issued_at = claims
            .iat
            .filter(|iat| iat.is_finite() && (0.0..=MAX_EXP as f64).contains(iat))
            .and_then(|iat| DateTime::from_timestamp_millis((iat * 1000.0) as i64));
        Ok(Verified {
            user,
            valid_until,
            issued_at,
        })
    }
}

/// The token carried in a `Sec-WebSocket-Protocol` header value, if any.
pub fn token_from_subprotocols(header: &str) -> Option<&str> {
    header
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
        .filter(|t| !t.is_empty())
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn token_from_authorization(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &str = "test-secret-test-secret";

    fn authority() -> TokenAuthority {
        TokenAuthority::new(SECRET, 0)
    }

    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> i64 {
        Utc::now().timestamp()
    }

    #[tokio::test]
    async fn minted_tokens_verify() {
        let alice = UserId::parse("alice").unwrap();
        let token = authority().mint(&alice, Duration::from_secs(60));
        assert_eq!(authority().verify(&token).await.unwrap().user, alice);
    }

    #[tokio::test]
    async fn rejects_other_secret_and_alg_none() {
        let alice = UserId::parse("alice").unwrap();
        let other =
            TokenAuthority::new("another-secret-entirely", 0).mint(&alice, Duration::from_secs(60));
        assert_eq!(
            authority().verify(&other).await.unwrap_err(),
            invalid("bad signature")
        );
        // {"alg":"none","typ":"JWT"} . {"sub":"alice","exp":9999999999} . (no signature)
        let none =
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(matches!(
            authority().verify(none).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn numeric_dates_may_be_fractional_and_absurd_ones_are_refused() {
        let fractional = sign(json!({"sub": "alice", "exp": now() as f64 + 60.5}));
        assert!(authority().verify(&fractional).await.is_ok());
        for exp in [json!(MAX_EXP + 1), json!(8.2e15), json!(-5), json!("soon")] {
            let token = sign(json!({"sub": "alice", "exp": exp}));
            assert!(
                matches!(authority().verify(&token).await, Err(AuthError::Invalid(_))),
                "exp {exp} accepted"
            );
        }
        // The largest accepted exp, plus a leeway, must not overflow anything.
        let far = sign(json!({"sub": "alice", "exp": MAX_EXP}));
        let verified = TokenAuthority::new(SECRET, 86_400)
            .verify(&far)
            .await
            .unwrap();
        assert!(verified.valid_until > Utc::now());
    }

    #[tokio::test]
    async fn nbf_is_honoured() {
        let later = sign(json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 300}));
        assert_eq!(
            authority().verify(&later).await.unwrap_err(),
            invalid("token not valid yet (nbf)")
        );
        let past = sign(json!({"sub": "alice", "exp": now() + 600, "nbf": now() - 1}));
        assert!(authority().verify(&past).await.is_ok());
    }

    #[tokio::test]
    async fn audience_and_issuer_are_checked_when_configured() {
        let mut settings = crate::config::Settings::defaults().auth;
        settings.jwt_secret = SECRET.into();
        settings.audience = "chatd".into();
        settings.issuer = "https://id.example".into();
        let strict = TokenAuthority::from_settings(
            &settings,
            Arc::new(crate::clock::SystemClock::default()),
        )
        .await
        .unwrap();
        let exp = now() + 600;
        let good = sign(
            json!({"sub": "a", "exp": exp, "aud": ["x", "chatd"], "iss": "https://id.example"}),
        );
        assert!(strict.verify(&good).await.is_ok());
        let wrong_aud =
            sign(json!({"sub": "a", "exp": exp, "aud": "other", "iss": "https://id.example"}));
        assert_eq!(
            strict.verify(&wrong_aud).await.unwrap_err(),
            invalid("wrong audience")
        );
        let wrong_iss =
            sign(json!({"sub": "a", "exp": exp, "aud": "chatd", "iss": "https://evil"}));
        assert_eq!(
            strict.verify(&wrong_iss).await.unwrap_err(),
            invalid("wrong issuer")
        );
        // Without configuration, a token that carries aud is fine.
        assert!(authority().verify(&wrong_aud).await.is_ok());
    }

    #[test]
    fn finds_tokens_in_headers() {
        assert_eq!(
            token_from_subprotocols("chatd.v1, bearer.abc.def"),
            Some("abc.def")
        );
        assert_eq!(token_from_subprotocols("chatd.v1"), None);
        assert_eq!(token_from_authorization("Bearer xyz"), Some("xyz"));
        assert_eq!(token_from_authorization("Basic xyz"), None);
    }
}
