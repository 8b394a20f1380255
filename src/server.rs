//! The HTTP server loop. axum's own `serve` offers no handshake deadline, so chatd accepts
//! connections itself (hyper-util) to bound how long a client may take to send its request
//! headers (which, for a WebSocket, carry the token): slow or silent sockets are closed
//! before they hold anything but a file descriptor. It also caps the HTTP connections a node
//! holds (those not upgraded to WebSockets): past `server.max_http_connections` a new one gets
//! a fast 503 `overloaded` and is closed, so half-open or trickling sockets cannot take every
//! file descriptor and starve the health checks and everyone else.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{Router, body::Body};
use hyper::{Request, body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

/// Serves `router` until `shutdown`, then stops accepting and waits (up to `grace`) for
/// in-flight HTTP requests. Upgraded WebSockets are not HTTP requests any more: their own
/// tasks close them (see `gateway::connection`).
/// How the HTTP side of a node is bounded.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub handshake_timeout: Duration,
    /// A non-upgraded connection is asked to close after this long (keep-alive included), and
    /// dropped if it has not within another request deadline: a client that stops reading its
    /// responses cannot hold its slot.
    pub max_lifetime: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub grace: Duration,
}

/// The answer to a connection over the cap: written at once, then the socket is closed.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 83\r\n\r\n\
{\"error\":{\"code\":\"overloaded\",\"message\":\"too many open connections; retry later\"}}\n";

pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: HttpLimits,
) {
    let HttpLimits {
        handshake_timeout,
        max_lifetime,
        request_timeout,
        max_connections,
        grace,
    } = limits;
    let slots = Arc::new(Semaphore::new(max_connections));
    // HTTP/1.1 only: what browsers use for WebSockets and what nginx speaks to upstreams.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout);
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning; connections close soon.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("chatd_http_overloaded_total").increment(1);
            connections.spawn(refuse_overloaded(stream));
            continue;
        };
        let service = router
            .clone()
            .map_request(|request: Request<Incoming>| request.map(Body::new))
            .map_err(|never: Infallible| match never {});
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            // Held until the request ends or the connection becomes a WebSocket.
            let _slot = slot;
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    // Finish the request in flight, then close (keep-alive ends here).
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                _ = tokio::time::sleep(max_lifetime) => {
                    connection.as_mut().graceful_shutdown();
                    // A peer that does not read its response is dropped.
                    tokio::time::timeout(request_timeout, connection)
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still running after the grace period");
    }
}

async fn refuse_overloaded(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(OVERLOADED).await?;
        stream.shutdown().await
    })
    .await;
}
