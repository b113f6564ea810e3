//! The Updraft delivery server: an immutable, content-addressed artifact
//! repository, a device registry with enrollment, the device API (check-in,
//! events, health, downloads with Range), the operator API (releases,
//! channels, rollouts, devices, tokens, audit) with role-checked API tokens,
//! Prometheus metrics and an OpenAPI 3.1 document. It drives the rollout
//! controller with the real clock and journals every change before
//! acknowledging it.

mod api;
mod core;
mod error;
mod journal;
pub mod metrics;
mod openapi;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use updraft_bundle::TrustedRoot;
use updraft_proto::Role;
use updraft_store::{BlobStore, Store};

pub use api::ROUTES;
pub use openapi::document as openapi_document;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// Folder of the blob store (and of uploads being verified).
    pub blob_dir: PathBuf,
    /// An object store for blobs instead of the folder: `s3://BUCKET/PREFIX`
    /// (with the standard `AWS_*` variables) or `file:///PATH`.
    pub blob_url: Option<String>,
    /// The trust root bundles are verified against (none: uploads are refused).
    pub trust: Option<TrustedRoot>,
    /// The URL devices use to reach this server (for download links).
    pub public_url: Option<String>,
    /// How often devices should check in.
    pub poll_interval_s: u32,
    /// Serve HTTPS with this certificate chain and private key (PEM files).
    pub tls: Option<TlsFiles>,
}

/// PEM files of a TLS certificate chain and its private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn tls_config(
    files: &TlsFiles,
) -> Result<std::sync::Arc<tokio_rustls::rustls::ServerConfig>, Box<dyn std::error::Error + Send + Sync>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("cannot read TLS certificate {}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid TLS certificate {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", files.cert.display()).into());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("invalid TLS key {}: {e}", files.key.display()))?;
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}

/// Serves HTTPS: TLS with rustls on each accepted connection, then HTTP/1.1.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%e, "accept failed");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = router.clone().layer(axum::Extension(axum::extract::ConnectInfo(remote)));
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%e, %remote, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(service);
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service).await {
                tracing::debug!(%e, %remote, "connection ended with an error");
            }
        });
    }
}

/// The shared state of the handlers.
pub struct App {
    pub store: Store,
    pub blobs: BlobStore,
    pub trust: Option<TrustedRoot>,
    pub public_url: Option<String>,
    pub poll_interval_s: u32,
    core: tokio::sync::Mutex<core::Core>,
    /// Several server processes may share the database (PostgreSQL): state
    /// changes go through the journal lock, and only the leader ticks.
    pub replicated: bool,
    leadership: tokio::sync::Mutex<Option<updraft_store::Leadership>>,
    /// Device token hash → device id (so that check-ins do not query the database).
    device_tokens: std::sync::RwLock<std::collections::HashMap<String, updraft_types::DeviceId>>,
}

impl App {
    /// Whether this replica leads (runs the periodic controller work),
    /// trying to become the leader if nobody is.
    pub async fn try_lead(&self) -> bool {
        let mut guard = self.leadership.lock().await;
        if let Some(l) = guard.as_mut() {
            if l.alive().await {
                return true;
            }
            tracing::warn!("lost the leadership: its database connection died");
            *guard = None;
        }
        match self.store.try_lead().await {
            Ok(Some(l)) => {
                tracing::info!("leading: this replica runs the periodic controller work");
                *guard = Some(l);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(%e, "leader election failed");
                false
            }
        }
    }

    /// Rebuilds the controller from the journal (after a failed commit).
    async fn rebuild(&self) {
        match core::Core::load(&self.store).await {
            Ok(mut fresh) => {
                fresh.set_writer(core::JournalWriter::spawn(self.store.clone()));
                *self.core.lock().await = fresh;
            }
            Err(e) => tracing::error!(%e, "cannot rebuild the controller from the journal"),
        }
    }
}

/// What starting a server produced.
pub struct Started {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    /// The admin token created on first start (shown once), if any.
    pub first_admin_token: Option<String>,
    pub handle: tokio::task::JoinHandle<()>,
}

fn now_ms() -> i64 {
    updraft_store::now_ms()
}

impl App {
    /// Opens the store and blobs, rebuilds the controller from the journal,
    /// and creates the first admin token if there is none.
    pub async fn open(config: &Config) -> Result<(Arc<App>, Option<String>), updraft_store::StoreError> {
        let store = Store::open(&config.database_url).await?;
        let blobs = match &config.blob_url {
            Some(url) => BlobStore::open_url(url, &config.blob_dir.join("tmp")).await?,
            None => BlobStore::open(&config.blob_dir).await?,
        };
        let store_kind = store.kind();
        let mut core = core::Core::load(&store).await?;
        core.set_writer(core::JournalWriter::spawn(store.clone()));
        tracing::info!(entries = core.journaled, "controller rebuilt from the journal");
        let first_admin_token = if store.count_api_tokens().await? == 0 {
            let (_, secret) = store.create_api_token("admin", Role::Admin, now_ms()).await?;
            Some(secret)
        } else {
            None
        };
        let app = Arc::new(App {
            store,
            blobs,
            trust: config.trust.clone(),
            public_url: config.public_url.clone(),
            poll_interval_s: config.poll_interval_s,
            core: tokio::sync::Mutex::new(core),
            replicated: store_kind == updraft_store::DbKind::Postgres,
            leadership: tokio::sync::Mutex::new(None),
            device_tokens: Default::default(),
        });
        Ok((app, first_admin_token))
    }
}

/// Imports devices with known device tokens (bulk registration from another
/// system, and benchmarks): the rows and their controller journal entries,
/// before the server starts. Returns how many were imported.
pub async fn import_devices(
    store: &Store,
    devices: &[(updraft_store::DeviceRow, String)],
) -> Result<usize, updraft_store::StoreError> {
    for chunk in devices.chunks(5000) {
        let rows: Vec<(updraft_store::DeviceRow, String)> =
            chunk.iter().map(|(d, token)| (d.clone(), updraft_store::hash_secret(token))).collect();
        store.insert_devices(&rows).await?;
        let entries: Vec<(i64, String)> = chunk
            .iter()
            .map(|(d, _)| (d.enrolled_ms, serde_json::to_string(&api::device_entry(d)).expect("entry serialises")))
            .collect();
        store.append_journal(&entries).await?;
    }
    Ok(devices.len())
}

/// Starts serving on `config.listen` (port 0 picks a free port) and runs
/// the controller's periodic work. Returns once the socket is bound.
pub async fn start(config: Config) -> Result<Started, Box<dyn std::error::Error + Send + Sync>> {
    let tls = config.tls.as_ref().map(tls_config).transpose()?;
    let (app, first_admin_token) = App::open(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let router = api::router(app.clone());
    let ticker = app.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if ticker.try_lead().await {
                api::tick(&ticker).await;
            } else if let Err(e) = api::catch_up(&ticker).await {
                tracing::error!(message = %e.message, "catching up with the journal failed");
            }
        }
    });
    let handle = tokio::spawn(async move {
        match tls {
            Some(tls) => {
                tokio::select! {
                    () = serve_tls(listener, router, tls) => {},
                    () = shutdown_signal() => {},
                }
            }
            None => {
                let service = router.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await {
                    tracing::error!(%e, "server stopped");
                }
            }
        }
    });
    Ok(Started { app, addr, first_admin_token, handle })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
