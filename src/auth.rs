//! Authentication: HS256 JWTs signed by the customer's backend (or by `chatd token` and the dev
//! login). `sub` is the user id and `exp` is required. Verified on every WebSocket connect and
//! every REST request; nothing else is trusted about the caller.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::domain::UserId;

/// The development secret in `config/default.toml`; a production node refuses to start with it.
pub const DEV_SECRET: &str = "chatd-development-secret-do-not-use-in-production";

/// Browsers cannot set headers on a WebSocket, so a token may travel as a subprotocol
/// `bearer.<jwt>` next to the protocol name (JWTs use only characters valid there).
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
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
}

#[derive(Debug, Clone)]
pub struct Verified {
    pub user: UserId,
    pub expires_at: DateTime<Utc>,
}

/// Signs and verifies tokens with one shared secret.
#[derive(Clone)]
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenAuthority {
    pub fn new(secret: &str, leeway_secs: u64) -> Self {
        // Only HS256: a token whose header names another algorithm (including "none") fails.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = leeway_secs;
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn mint(&self, user: &UserId, ttl: Duration) -> String {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user.to_string(),
            exp: now + ttl.as_secs() as i64,
            iat: Some(now),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::Invalid("algorithm must be HS256".into())
                }
                ErrorKind::MissingRequiredClaim(c) => AuthError::Invalid(format!("missing {c}")),
                _ => AuthError::Invalid("malformed token".into()),
            })?;
        let user =
            UserId::parse(&data.claims.sub).map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        let expires_at = DateTime::from_timestamp(data.claims.exp, 0)
            .ok_or_else(|| AuthError::Invalid("exp out of range".into()))?;
        Ok(Verified { user, expires_at })
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
    use super::*;

    fn authority() -> TokenAuthority {
        TokenAuthority::new("test-secret-test-secret", 0)
    }

    #[test]
    fn minted_tokens_verify() {
        let alice = UserId::parse("alice").unwrap();
        let token = authority().mint(&alice, Duration::from_secs(60));
        assert_eq!(authority().verify(&token).unwrap().user, alice);
    }

    #[test]
    fn rejects_other_secret_and_alg_none() {
        let alice = UserId::parse("alice").unwrap();
        let other =
            TokenAuthority::new("another-secret-entirely", 0).mint(&alice, Duration::from_secs(60));
        assert_eq!(
            authority().verify(&other).unwrap_err(),
            AuthError::Invalid("bad signature".into())
        );
        // {"alg":"none","typ":"JWT"} . {"sub":"alice","exp":9999999999} . (no signature)
        let none =
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(matches!(
            authority().verify(none),
            Err(AuthError::Invalid(_))
        ));
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
