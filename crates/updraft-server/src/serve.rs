//! The accept loop (HTTP and HTTPS): HTTP/1.1 through hyper with a
//! deadline for each request head, and a cap on open connections that no
//! client can use up. At the cap, a new connection takes the place of the
//! oldest one that has not yet sent a complete request head (a slow or
//! idle client: the slowloris attack), so that `/healthz`, devices and
//! operators are still answered; if every connection is serving a request,
//! the new one gets a `503` with the JSON error body and `Retry-After`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use tokio::io::AsyncWriteExt;

use crate::metrics::METRICS;

/// How long a client has to send a request head (request line and headers).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors kept free for the database, the blob store and logs.
const RESERVED_FDS: usize = 128;
/// How long a stop waits for the requests being served.
const GRACE: Duration = Duration::from_secs(10);

/// The open connections, oldest first, and whether each has sent a request head.
#[derive(Default)]
struct Registry {
    next: u64,
    open: BTreeMap<u64, (Arc<AtomicBool>, tokio::task::AbortHandle)>,
}

/// Removes a connection from the registry when its task ends (or is aborted).
struct Registered {
    registry: Arc<Mutex<Registry>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).open.remove(&self.id);
    }
}

/// Connections the kernel queues before the server accepts them (the
/// kernel caps it at `net.core.somaxconn`): a burst of connections waits
/// here instead of being dropped and retried a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket.
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The connection cap: the configured one, below the process's limit on
/// open files (read from /proc on Linux) so that accepting never fails for
/// want of a descriptor.
pub fn connection_cap(configured: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<usize>().ok())
    });
    match soft {
        Some(n) => configured.min(n.saturating_sub(RESERVED_FDS).max(16)),
        None => configured,
    }
}

/// The answer to a connection over the cap when no connection can give way.
async fn refuse(mut tcp: tokio::net::TcpStream) {
    let body = r#"{"error":"overloaded","message":"the server has as many connections as it takes; hint: retry after a second"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tcp.write_all(head.as_bytes()).await;
        let _ = tcp.write_all(body.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

/// Serves `router` on `listener` (TLS with `tls`) until `stop` resolves,
/// then lets the requests being served finish (up to [`GRACE`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    max_connections: usize,
    stop: impl std::future::Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let registry = Arc::new(Mutex::new(Registry::default()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut stop => break,
        };
        let (tcp, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors or memory: give the connections being
                // served a moment instead of spinning.
                tracing::warn!(%e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let mut reg = registry.lock().unwrap_or_else(|e| e.into_inner());
        if reg.open.len() >= max_connections {
            let idle = reg.open.iter().find(|(_, (served, _))| !served.load(Ordering::Relaxed)).map(|(id, _)| *id);
            match idle.and_then(|id| reg.open.remove(&id)) {
                Some((_, task)) => {
                    task.abort();
                    METRICS.connections_evicted.inc();
                }
                None => {
                    drop(reg);
                    METRICS.connections_refused.inc();
                    tokio::spawn(refuse(tcp));
                    continue;
                }
            }
        }
        let id = reg.next;
        reg.next += 1;
        let served = Arc::new(AtomicBool::new(false));
        let registered = Registered { registry: registry.clone(), id };
        let task = tokio::spawn(connection(
            tcp,
            remote,
            router.clone(),
            acceptor.clone(),
            served.clone(),
            graceful.watcher(),
            registered,
        ));
        reg.open.insert(id, (served, task.abort_handle()));
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("stopping with requests still being served");
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    router: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    served: Arc<AtomicBool>,
    watcher: hyper_util::server::graceful::Watcher,
    _registered: Registered,
) {
    // The caller's address reaches handlers as `ConnectInfo` (set on each
    // request: `Router::layer` per connection would rebuild every route).
    let secure = crate::dashboard::Secure(acceptor.is_some());
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        served.store(true, Ordering::Relaxed);
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(axum::extract::ConnectInfo(remote));
        req.extensions_mut().insert(secure);
        tower::ServiceExt::oneshot(router.clone(), req)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let result = match acceptor {
        None => watcher.watch(http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service)).await,
        Some(acceptor) => {
            let tls = match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%e, %remote, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            watcher.watch(http.serve_connection(hyper_util::rt::TokioIo::new(tls), service)).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%e, %remote, "connection ended with an error");
    }
}
