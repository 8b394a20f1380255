//! Tokens for test users: HS256 with a node's shared secret (the tools and tests talk to
//! nodes they run themselves).

use std::time::Duration;

use chatd_protocol::model::UserId;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

/// A token for `user`, valid for `ttl`, signed with `secret`.
pub fn mint(secret: &str, user: &UserId, ttl: Duration) -> String {
    let now = chrono::Utc::now().timestamp();
    let exp = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let claims = json!({"sub": user.as_str(), "exp": exp, "iat": now});
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}
