//! What operators and integrators see: health, readiness, metrics, the OpenAPI document,
//! and the web app's files.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    let http = app.http();
    let health: Value = http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        (ready["store"].as_str(), ready["bus"].as_str()),
        (Some("ok"), Some("ok"))
    );

    let room = app.client("alice").open_direct("bob").await.unwrap();
    app.connect("alice")
        .await
        .send_acked(&room.id, "m", "counted")
        .await;
    let metrics = http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("chatd_messages_stored_total"), "{metrics}");
    assert!(metrics.contains("chatd_deliveries_total"), "{metrics}");
}

#[tokio::test]
async fn the_openapi_document_describes_every_rest_route() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .http()
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in [
        "/v1/rooms",
        "/v1/rooms/direct",
        "/v1/rooms/{room}",
        "/v1/rooms/{room}/members",
        "/v1/rooms/{room}/members/{user}",
        "/v1/rooms/{room}/messages",
        "/v1/rooms/{room}/read",
        "/v1/rooms/{room}/presence",
        "/v1/me",
        "/v1/dev/login",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn the_web_app_and_sdk_are_served_without_a_cdn() {
    let app = TestApp::spawn().await;
    for (path, content_type, needle) in [
        ("/", "text/html", "/app.js"),
        ("/app.js", "text/javascript", "ChatClient"),
        ("/app.css", "text/css", ".msg"),
        (
            "/sdk/chatd.js",
            "text/javascript",
            "export class ChatClient",
        ),
        (
            "/sdk/chatd.d.ts",
            "text/plain",
            "export declare class ChatClient",
        ),
    ] {
        let response = app
            .http()
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
        let body = response.text().await.unwrap();
        assert!(body.contains(needle), "{path}");
        if !path.ends_with(".d.ts") {
            assert!(
                !body.contains("https://"),
                "{path} loads something from elsewhere"
            );
        }
    }
}
