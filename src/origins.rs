//! Which browser origins may talk to this node (the REST API and the WebSocket gateway ask):
//! `server.allowed_origins` lists them exactly ("https://app.example.com"), `"*"` allows any,
//! and a page served by the node itself (its Origin names the Host it asked) is always
//! allowed. Requests without an Origin are not
//! from a browser page and are not restricted (tokens, not cookies, are the credential).
//!
//! WebSocket handshakes from other origins are refused (403 `forbidden`): browsers do not
//! apply CORS to WebSockets. REST answers CORS preflights for allowed origins only, so
//! browsers keep other pages from reading its answers.

use std::{collections::HashSet, time::Duration};

use axum::http::{HeaderMap, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

#[derive(Debug, Clone)]
pub enum Origins {
    Any,
    /// These exactly (lower case, no trailing slash), and the node's own.
    Listed(HashSet<String>),
}

impl Origins {
    pub fn new(allowed: &[String]) -> Self {
        if allowed.iter().any(|o| o == "*") {
            return Origins::Any;
        }
        Origins::Listed(
            allowed
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        )
    }

    /// Whether a request with these headers may come from its page.
    pub fn allow(&self, headers: &HeaderMap) -> bool {
        match headers.get(header::ORIGIN) {
            None => true,
            Some(origin) => self.allows(origin, headers.get(header::HOST)),
        }
    }

    fn allows(&self, origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
        let Origins::Listed(listed) = self else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.to_ascii_lowercase();
        let own = host
            .and_then(|h| h.to_str().ok())
            .zip(origin.split_once("://"))
            .is_some_and(|(host, (_, authority))| authority.eq_ignore_ascii_case(host));
        own || listed.contains(&origin)
    }

    /// CORS for the REST API: preflights answered for allowed origins only.
    pub fn cors(&self) -> CorsLayer {
        let origins = self.clone();
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin, request| {
                origins.allows(origin, request.headers.get(header::HOST))
            }))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::RETRY_AFTER])
            .max_age(Duration::from_secs(600))
    }

    /// For the start-up log line.
    pub fn describe(&self) -> String {
        match self {
            Origins::Any => "any (not restricted)".into(),
            Origins::Listed(listed) if listed.is_empty() => "this node's own pages only".into(),
            Origins::Listed(listed) => {
                let mut listed: Vec<&str> = listed.iter().map(String::as_str).collect();
                listed.sort();
                format!("own pages + {}", listed.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: &str, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        h.insert(header::HOST, host.parse().unwrap());
        h
    }

    #[test]
    fn listed_own_and_originless_requests_pass_others_do_not() {
        let origins = Origins::new(&["https://App.example/".into()]);
        assert!(origins.allow(&headers("https://app.example", "chat.example")));
        assert!(
            origins.allow(&headers("https://chat.example", "chat.example")),
            "own page"
        );
        assert!(!origins.allow(&headers("https://evil.example", "chat.example")));
        assert!(
            !origins.allow(&headers("null", "chat.example")),
            "sandboxed or file pages"
        );
        assert!(origins.allow(&HeaderMap::new()), "not a browser page");
        let any = Origins::new(&["*".into()]);
        assert!(any.allow(&headers("https://evil.example", "chat.example")));
        assert_eq!(Origins::new(&[]).describe(), "this node's own pages only");
    }
}
