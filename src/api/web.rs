//! The web app and the JS SDK, compiled into the binary so a node serves them from any
//! directory, with no CDN: `/`, `/app.js`, `/app.css`, `/sw.js`, and the SDK's package at `/sdk/`.

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

const JS: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file served: its path, its type and its contents (compiled in).
const FILES: [(&str, &str, &str); 12] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    ("/app.js", JS, include_str!("../../web/app.js")),
    // The service worker that shows push notifications (scope: the whole app).
    ("/sw.js", JS, include_str!("../../web/sw.js")),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_str!("../../web/app.css"),
    ),
    ("/sdk/chatd.js", JS, include_str!("../../web/sdk/chatd.js")),
    (
        "/sdk/errors.js",
        JS,
        include_str!("../../web/sdk/errors.js"),
    ),
    ("/sdk/rules.js", JS, include_str!("../../web/sdk/rules.js")),
    ("/sdk/rest.js", JS, include_str!("../../web/sdk/rest.js")),
    (
        "/sdk/transport.js",
        JS,
        include_str!("../../web/sdk/transport.js"),
    ),
    ("/sdk/rooms.js", JS, include_str!("../../web/sdk/rooms.js")),
    (
        "/sdk/chatd.d.ts",
        TEXT,
        include_str!("../../web/sdk/chatd.d.ts"),
    ),
    (
        "/sdk/package.json",
        "application/json",
        include_str!("../../web/sdk/package.json"),
    ),
];

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES
        .into_iter()
        .fold(Router::new(), |router, (path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
}
