//! A TCP proxy the test controls, to cut a link without closing it.
//!
//! Stopping a server (as the cluster tests do) makes every call fail at once with "connection
//! refused" or a reset: easy to handle. A link that silently stops carrying bytes (a dropped
//! route, a full conntrack table, a frozen peer) is the case where a client without deadlines
//! hangs forever. [`Proxy::pause`] produces exactly that: sockets stay open, bytes stop in
//! both directions, nothing is closed or reset. [`Proxy::resume`] lets everything held meanwhile
//! flow on, as when the route comes back.
//!
//! It only ever listens on and connects to 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::{JoinHandle, JoinSet},
};

/// Forwards 127.0.0.1:[`port`](Self::port) to 127.0.0.1:`upstream`. Dropping it aborts every
/// task it runs, which closes all its sockets.
pub struct Proxy {
    port: u16,
    /// `true` while bytes flow; every copy loop waits on it before reading on and before writing.
    running: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port (port 0: the kernel picks one, so parallel tests never collide).
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let (running, watching) = watch::channel(true);
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream));
        let accept = tokio::spawn(accept_loop(listener, upstream, watching));
        Self {
            port,
            running,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops forwarding, in both directions, on existing and new connections. New connections
    /// are still accepted (the kernel would complete their handshake anyway), but nothing is
    /// sent upstream, not even the connect, until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.running.send_replace(false);
    }

    /// Forwards again; what was held while paused (including a close) goes through now.
    pub fn resume(&self) {
        self.running.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of links: aborting it drops the set, which aborts
        // every link task and so closes every socket.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, running: watch::Receiver<bool>) {
    let mut links = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    links.spawn(link(client, upstream, running.clone()));
                }
            }
            // Reap finished links so the set does not grow for the whole test.
            Some(_) = links.join_next(), if !links.is_empty() => {}
        }
    }
}

/// One proxied connection: connects upstream once running, then copies both ways.
async fn link(client: TcpStream, upstream: SocketAddr, mut running: watch::Receiver<bool>) {
    if running.wait_for(|r| *r).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // the client sees its connection close, as with a refused upstream
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, running.clone()),
        pump(server_read, client_write, running),
    );
}

/// Copies one direction. It waits for `running` after every read, so whatever it read (bytes,
/// end of stream or an error) is acted on only once forwarding is allowed: while paused
/// nothing is written and nothing is closed. It does not read while paused either, so the
/// sender's socket buffers fill up as on a stalled link.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut running: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if running.wait_for(|r| *r).await.is_err() {
            return;
        }
        let read = from.read(&mut buffer).await;
        if running.wait_for(|r| *r).await.is_err() {
            return;
        }
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    // Pass the end of stream on (half-close); the other direction goes on by itself.
    let _ = to.shutdown().await;
}
