//! The web app and the JS SDK, compiled into the binary so a node serves them from any
//! directory, with no CDN: `/`, `/app.js`, `/app.css`, `/sdk/chatd.js`, `/sdk/chatd.d.ts`.

use axum::{
    Router,
    http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS},
    response::IntoResponse,
    routing::get,
};

/// Everything comes from this origin; the page talks to it over HTTP and WebSocket only.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse + Clone {
    (
        [
            (CONTENT_TYPE, content_type),
            // Always revalidated: a new server version is picked up by a reload.
            (CACHE_CONTROL, "no-cache"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    const JS: &str = "text/javascript; charset=utf-8";
    Router::new()
        .route(
            "/",
            get(|| async {
                asset(
                    "text/html; charset=utf-8",
                    include_str!("../../web/index.html"),
                )
            }),
        )
        .route(
            "/app.js",
            get(|| async { asset(JS, include_str!("../../web/app.js")) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("../../web/app.css")) }),
        )
        .route(
            "/sdk/chatd.js",
            get(|| async { asset(JS, include_str!("../../web/sdk/chatd.js")) }),
        )
        .route(
            "/sdk/chatd.d.ts",
            get(|| async {
                asset(
                    "text/plain; charset=utf-8",
                    include_str!("../../web/sdk/chatd.d.ts"),
                )
            }),
        )
}
