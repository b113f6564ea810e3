//! The Updraft delivery server: an immutable, content-addressed artifact
//! repository, a device registry with enrollment, the device API (check-in,
//! events, health, downloads with Range), the operator API (releases,
//! channels, rollouts, devices, tokens, audit) with role-checked API tokens,
//! Prometheus metrics and an OpenAPI 3.1 document. It drives the rollout
//! controller with the real clock and journals every change before
//! acknowledging it.

mod api;
mod core;
mod dashboard;
pub mod ddi;
mod devices;
mod error;
mod fault;
pub use devices::SCAN_ROWS;
pub use fault::POINTS as FAULT_POINTS;
mod journal;
pub mod metrics;
mod openapi;
mod ratelimit;
pub mod reconcile;
mod serve;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use updraft_bundle::{SignedRoot, TrustedRoot};
use updraft_proto::Role;
use updraft_store::{BlobStore, Store};

pub use api::{Access, ROUTES};
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
    /// The pinned trust root and any newer versions, in order (none: uploads
    /// are refused). Versions an admin adds later are kept in the database.
    pub trust: Option<TrustConfig>,
    /// The URL devices use to reach this server (for download links).
    pub public_url: Option<String>,
    /// How often devices should check in.
    pub poll_interval_s: u32,
    /// Serve HTTPS with this certificate chain and private key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Where the admin token created on first start is written (mode 0600),
    /// instead of only being returned to the caller.
    pub admin_token_file: Option<PathBuf>,
    /// Rate limits per device, per API token, and of the telemetry a device
    /// may add (429 with Retry-After beyond them).
    pub rate_limits: RateLimits,
    /// Most connections open at once (kept below the process's limit on
    /// open files); see `serve` for what happens at the cap.
    pub max_connections: usize,
    /// The hawkBit DDI API: tenant, gateway token, auto-registration.
    pub ddi: ddi::DdiConfig,
    /// Stop gracefully on SIGINT and SIGTERM (`updraft serve`). Off where
    /// the server runs inside another program that owns its signals (the
    /// demo, the tests).
    pub stop_on_signals: bool,
}

impl Config {
    /// Embedded defaults on loopback, as the demo and the tests run it:
    /// SQLite (`server.sqlite`) and the blob folder (`blobs/`) in `dir`, a
    /// free port on 127.0.0.1, uploads verified against `pinned`.
    pub fn local(dir: &std::path::Path, pinned: SignedRoot) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: format!("sqlite://{}", dir.join("server.sqlite").display()),
            blob_dir: dir.join("blobs"),
            blob_url: None,
            trust: Some(TrustConfig { pinned, updates: vec![] }),
            public_url: None,
            poll_interval_s: 30,
            tls: None,
            admin_token_file: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            rate_limits: RateLimits::default(),
            ddi: ddi::DdiConfig::default(),
            stop_on_signals: false,
        }
    }
}

/// How many requests a caller may make (see `updraft_proto::limits` for the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    pub device_per_s: u32,
    pub device_burst: u32,
    pub token_per_s: u32,
    pub token_burst: u32,
    pub health_per_hour: u32,
    pub events_per_hour: u32,
}

impl RateLimits {
    /// No limits that a load test would reach (benchmarks).
    pub fn unlimited() -> RateLimits {
        RateLimits {
            device_per_s: 1_000_000,
            device_burst: 1_000_000,
            token_per_s: 1_000_000,
            token_burst: 1_000_000,
            health_per_hour: 1_000_000_000,
            events_per_hour: 1_000_000_000,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        use updraft_proto::limits::*;
        RateLimits {
            device_per_s: DEVICE_REQUESTS_PER_S,
            device_burst: DEVICE_REQUEST_BURST,
            token_per_s: TOKEN_REQUESTS_PER_S,
            token_burst: TOKEN_REQUEST_BURST,
            health_per_hour: MAX_HEALTH_REPORTS_PER_HOUR,
            events_per_hour: MAX_EVENTS_PER_HOUR,
        }
    }
}

/// Connections open at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The trust root the server starts from.
#[derive(Clone, Debug)]
pub struct TrustConfig {
    pub pinned: SignedRoot,
    pub updates: Vec<SignedRoot>,
}

/// The trust the server verifies uploads with: the newest root version and
/// what it verified to.
#[derive(Clone, Debug)]
pub struct Trust {
    pub latest: SignedRoot,
    pub trusted: TrustedRoot,
    /// Every version from the pinned one to `latest`, oldest first.
    pub versions: Vec<updraft_bundle::trust::TrustRoot>,
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

/// The shared state of the handlers.
pub struct App {
    pub store: Store,
    pub blobs: BlobStore,
    trust: std::sync::RwLock<Option<Trust>>,
    pub public_url: Option<String>,
    pub poll_interval_s: u32,
    core: tokio::sync::Mutex<core::Core>,
    /// Several server processes may share the database (PostgreSQL): state
    /// changes go through the journal lock, and only the leader ticks.
    pub replicated: bool,
    leadership: tokio::sync::Mutex<Option<updraft_store::Leadership>>,
    /// Device token hash → device id (so that check-ins do not query the database).
    device_tokens: std::sync::RwLock<std::collections::HashMap<String, updraft_types::DeviceId>>,
    /// What each device last reported, in this process (see `devices`).
    seen: devices::Tracker,
    /// Device reports waiting to be written (see `devices`).
    reports: devices::Reports,
    limiter: ratelimit::Limiter,
    pub(crate) rates: RateLimits,
    pub(crate) ddi: ddi::DdiConfig,
    /// DDI devices' actions and releases' DDI artifacts, in this process.
    pub(crate) ddi_cache: ddi::Cache,
}

/// Walks from the pinned root through the configured updates and the
/// versions stored in the database.
async fn walk_trust(
    store: &Store,
    pinned: &SignedRoot,
    updates: &[SignedRoot],
) -> Result<Trust, updraft_store::StoreError> {
    let mut chain: Vec<SignedRoot> = updates.to_vec();
    let last = chain.last().unwrap_or(pinned).root.version;
    for (_, body) in store.trust_roots_after(last as i64).await? {
        match SignedRoot::parse(body.as_bytes()) {
            Ok(r) => chain.push(r),
            Err(e) => return Err(updraft_store::StoreError::Corrupt(format!("stored trust root: {e}"))),
        }
    }
    let trusted = updraft_bundle::trust::verify_chain(pinned, &chain, updraft_types::Timestamp::now())
        .map_err(|e| updraft_store::StoreError::Corrupt(format!("trust root chain: {e}")))?;
    let latest = chain.last().cloned().unwrap_or_else(|| pinned.clone());
    let versions = std::iter::once(pinned).chain(&chain).map(|s| s.root.clone()).collect();
    Ok(Trust { latest, trusted, versions })
}

impl App {
    /// The current trust, brought up to date with versions other replicas
    /// stored (`None` if the server has no trust root).
    pub async fn trust(&self) -> Result<Option<Trust>, updraft_store::StoreError> {
        let current = self.trust.read().expect("trust lock").clone();
        let Some(current) = current else { return Ok(None) };
        let newer = self.store.trust_roots_after(current.latest.root.version as i64).await?;
        if newer.is_empty() {
            return Ok(Some(current));
        }
        let mut walked = walk_trust(&self.store, &current.latest, &[]).await?;
        // The walk starts at the current version: keep the ones before it.
        let mut versions = current.versions;
        versions.pop();
        versions.append(&mut walked.versions);
        walked.versions = versions;
        *self.trust.write().expect("trust lock") = Some(walked.clone());
        Ok(Some(walked))
    }

    /// Adopts a new trust root version after checking it against the
    /// current one (stored with its audit entry in one transaction).
    pub(crate) async fn rotate_trust(
        &self,
        next: SignedRoot,
        by: &str,
        remote: SocketAddr,
    ) -> Result<Result<Trust, String>, error::ApiError> {
        let Some(current) = self.trust().await? else {
            return Ok(Err("the server has no trust root to rotate from; hint: start it with --trust".into()));
        };
        let trusted = match updraft_bundle::trust::verify_chain(
            &current.latest,
            std::slice::from_ref(&next),
            updraft_types::Timestamp::now(),
        ) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let body = String::from_utf8_lossy(&next.to_json()).into_owned();
        let version = next.root.version;
        let mut change = core::Change::begin(self).await?;
        if !change.tx().add_trust_root(version as i64, &body, by, now_ms()).await? {
            return Ok(Err(format!("trust root version {version} is already stored")));
        }
        change.audit(by, "trust-root.rotate", &format!("v{version}"), String::new(), remote);
        change.commit().await?;
        let mut versions = current.versions;
        versions.push(next.root.clone());
        let t = Trust { latest: next, trusted, versions };
        *self.trust.write().expect("trust lock") = Some(t.clone());
        Ok(Ok(t))
    }

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
    /// Takes one request from `key`'s allowance, or refuses with 429.
    pub(crate) fn limit(&self, key: &str, rate: ratelimit::Rate, what: &str) -> error::ApiResult<()> {
        self.limiter.take(key, rate, std::time::Instant::now()).map_err(|wait_s| {
            let kind = key.split(':').next().unwrap_or("other").to_owned();
            metrics::METRICS.rate_limited.get_or_create(&metrics::Kind { kind }).inc();
            error::ApiError::too_many(what, wait_s)
        })
    }

    /// Drops cached tokens of a device (after a decommission or a new enrollment).
    pub(crate) fn forget_device_tokens(&self, device: &str) {
        self.device_tokens.write().unwrap_or_else(|e| e.into_inner()).retain(|_, id| id.as_str() != device);
    }

    /// Opens the store and blobs and rebuilds the controller from the
    /// journal, changing nothing.
    async fn load(config: &Config) -> Result<Arc<App>, updraft_store::StoreError> {
        let store = Store::open(&config.database_url).await?;
        let blobs = match &config.blob_url {
            Some(url) => BlobStore::open_url(url, &config.blob_dir.join("tmp")).await?,
            None => BlobStore::open(&config.blob_dir).await?,
        };
        let store_kind = store.kind();
        let trust = match &config.trust {
            Some(t) => Some(walk_trust(&store, &t.pinned, &t.updates).await?),
            None => None,
        };
        let mut core = core::Core::load(&store).await?;
        core.set_writer(core::JournalWriter::spawn(store.clone()));
        tracing::info!(entries = core.journaled, "controller rebuilt from the journal");
        Ok(Arc::new(App {
            store,
            blobs,
            trust: std::sync::RwLock::new(trust),
            public_url: config.public_url.clone(),
            poll_interval_s: config.poll_interval_s,
            core: tokio::sync::Mutex::new(core),
            replicated: store_kind == updraft_store::DbKind::Postgres,
            leadership: tokio::sync::Mutex::new(None),
            device_tokens: Default::default(),
            seen: Default::default(),
            reports: Default::default(),
            limiter: Default::default(),
            rates: config.rate_limits,
            ddi: config.ddi.clone(),
            ddi_cache: Default::default(),
        }))
    }

    /// Opens the store and blobs, rebuilds the controller from the journal,
    /// repairs what a crash left (see `reconcile`), and creates the first
    /// admin token if there is none (written to `config.admin_token_file`
    /// when set).
    pub async fn open(config: &Config) -> Result<(Arc<App>, Option<String>), Box<dyn std::error::Error + Send + Sync>> {
        let app = App::load(config).await?;
        let report = reconcile::reconcile(&app, true).await.map_err(|e| e.message)?;
        for f in report.findings.iter().take(100) {
            tracing::warn!(code = f.code, subject = %f.subject, repaired = f.repaired, "{}", f.detail);
        }
        if !report.findings.is_empty() {
            tracing::warn!(
                findings = report.findings.len(),
                unrepaired = report.unrepaired(),
                "start-up reconciliation found what a crash or an older version left; see `updraft serve --check`"
            );
        }
        let first_admin_token = if app.store.count_api_tokens().await? == 0 {
            let mut tx = app.store.begin_write().await?;
            let (_, secret) = tx.create_api_token("admin", Role::Admin, now_ms()).await?;
            if let Some(path) = &config.admin_token_file {
                write_secret_file(path, &secret)?;
            }
            tx.commit().await?;
            Some(secret)
        } else {
            None
        };
        Ok((app, first_admin_token))
    }
}

/// Reconciles the database, the journal, the blob store and the audit log
/// without changing anything (`updraft serve --check`).
pub async fn check(config: &Config) -> Result<reconcile::Report, Box<dyn std::error::Error + Send + Sync>> {
    let app = App::load(config).await?;
    Ok(reconcile::reconcile(&app, false).await.map_err(|e| e.message)?)
}

/// Creates a new admin token named `admin`, revokes the earlier ones of that
/// name, and writes it to `path` (mode 0600): the way back in when the
/// admin token is lost (`updraft serve admin-token --reset`).
pub async fn reset_admin_token(
    config: &Config,
    path: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let store = Store::open(&config.database_url).await?;
    let mut tx = store.begin_write().await?;
    let revoked = tx.revoke_api_tokens_named("admin").await?;
    let (_, secret) = tx.create_api_token("admin", Role::Admin, now_ms()).await?;
    tx.audit(&updraft_proto::AuditEntry {
        id: 0,
        at_ms: now_ms(),
        actor: "system".into(),
        action: "token.reset-admin".into(),
        subject: "admin".into(),
        detail: format!("{revoked} earlier admin token(s) revoked"),
        remote: "0.0.0.0".into(),
    })
    .await?;
    write_secret_file(path, &secret)?;
    tx.commit().await?;
    Ok(())
}

/// Writes a secret to a file only its owner can read: a temporary file
/// (0600) in the same folder, fsynced, renamed into place, the folder fsynced.
fn write_secret_file(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".admin-token-").tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    writeln!(tmp, "{secret}")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
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
        // Rows, journal entries and audit entries of a chunk commit together.
        let mut tx = store.begin_write().await?;
        tx.insert_devices(&rows).await?;
        for (d, _) in chunk {
            tx.append(d.enrolled_ms, &serde_json::to_string(&api::device_entry(d)).expect("entry serialises")).await?;
            tx.audit(&updraft_proto::AuditEntry {
                id: 0,
                at_ms: d.enrolled_ms,
                actor: "system".into(),
                action: "device.import".into(),
                subject: d.id.clone(),
                detail: format!("{}/{}", d.family, d.hardware),
                remote: "0.0.0.0".into(),
            })
            .await?;
        }
        tx.commit().await?;
    }
    Ok(devices.len())
}

/// Starts serving on `config.listen` (port 0 picks a free port) and runs
/// the controller's periodic work. Returns once the socket is bound.
pub async fn start(config: Config) -> Result<Started, Box<dyn std::error::Error + Send + Sync>> {
    let tls = config.tls.as_ref().map(tls_config).transpose()?;
    let (app, first_admin_token) = App::open(&config).await?;
    let listener = serve::listen(config.listen)?;
    let addr = listener.local_addr()?;
    let router = api::router(app.clone());
    let ticker = app.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if ticker.try_lead().await {
                core::tick(&ticker).await;
            } else if let Err(e) = core::catch_up(&ticker).await {
                tracing::error!(message = %e.message, "catching up with the journal failed");
            }
        }
    });
    let flusher = app.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(devices::FLUSH_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = devices::flush(&flusher).await {
                tracing::error!(message = %e.message, "writing device reports failed; kept for the next try");
            }
            flusher.limiter.prune(std::time::Instant::now(), Duration::from_secs(3600));
        }
    });
    let last_flush = app.clone();
    let on_signals = config.stop_on_signals;
    let stop = move || async move {
        if on_signals {
            shutdown_signal().await
        } else {
            std::future::pending::<()>().await
        }
    };
    let max_connections = serve::connection_cap(config.max_connections);
    let handle = tokio::spawn(async move {
        serve::serve(listener, router, tls, max_connections, stop()).await;
        // What devices reported last, before the process ends.
        if let Err(e) = devices::flush(&last_flush).await {
            tracing::error!(message = %e.message, "writing device reports at shutdown failed");
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
