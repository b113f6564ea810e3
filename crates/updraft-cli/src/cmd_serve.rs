//! `updraft serve`: the delivery server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use updraft_types::Timestamp;

use crate::cmd_trust::{load_root, load_trusted};

/// Writes a line to stderr, ignoring failures: a server must not die
/// because whoever started it closed its stderr.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
use crate::Ctx;

#[derive(Args, Default)]
#[command(args_conflicts_with_subcommands = false)]
pub struct ServeArgs {
    #[command(subcommand)]
    action: Option<ServeAction>,
    /// Compare the database, the rollout journal, the blob store and the
    /// audit log, report what a crash or an older version left (what
    /// `updraft serve` repairs at start-up), and exit: 0 consistent, 1 not.
    #[arg(long)]
    check: bool,
    /// With --check: the report as JSON.
    #[arg(long, requires = "check")]
    json: bool,
    /// A TOML file with any of the settings below (flags and environment win).
    #[arg(long, env = "UPDRAFT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data folder: the SQLite database, the blob store and the first
    /// admin token (`admin-token`, mode 0600) live here by default.
    #[arg(long, env = "UPDRAFT_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "UPDRAFT_LISTEN")]
    listen: Option<SocketAddr>,
    /// sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, env = "UPDRAFT_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Folder of the content-addressed blob store (and of uploads being verified).
    #[arg(long, env = "UPDRAFT_BLOB_DIR")]
    blob_dir: Option<PathBuf>,
    /// Keep blobs in an object store instead: s3://BUCKET/PREFIX (credentials,
    /// region and endpoint from AWS_* variables) or file:///PATH.
    #[arg(long, env = "UPDRAFT_BLOB_STORE")]
    blob_store: Option<String>,
    /// The trust root that uploaded bundles must verify against.
    #[arg(long, env = "UPDRAFT_TRUST")]
    trust: Option<PathBuf>,
    /// Newer trust root versions to walk to, in order.
    #[arg(long = "trust-update")]
    trust_updates: Vec<PathBuf>,
    /// The URL devices reach this server at (for download links).
    #[arg(long, env = "UPDRAFT_PUBLIC_URL")]
    public_url: Option<String>,
    /// How often devices should check in, in seconds.
    #[arg(long, env = "UPDRAFT_POLL_INTERVAL_S")]
    poll_interval_s: Option<u32>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "UPDRAFT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "UPDRAFT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Most connections open at once (kept below the limit on open files).
    /// At the cap, a new connection replaces the oldest one that has not
    /// sent a request head yet; if none, it is answered 503.
    #[arg(long, env = "UPDRAFT_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Requests a second one device may make, sustained (a burst of 30
    /// seconds' worth is allowed; beyond it: 429 with Retry-After).
    #[arg(long, env = "UPDRAFT_DEVICE_REQUESTS_PER_S")]
    device_requests_per_s: Option<u32>,
    /// The tenant of the hawkBit DDI paths (/TENANT/controller/v1/ID),
    /// compared without case.
    #[arg(long, env = "UPDRAFT_DDI_TENANT")]
    ddi_tenant: Option<String>,
    /// A file holding the DDI gateway token: a client sending
    /// `Authorization: GatewayToken <key>` may poll as any device (off by default).
    #[arg(long, env = "UPDRAFT_DDI_GATEWAY_TOKEN_FILE")]
    ddi_gateway_token_file: Option<PathBuf>,
    /// Register unknown devices that poll with the gateway token, in this
    /// family (their hardware comes from configData `hardware`).
    #[arg(long, env = "UPDRAFT_DDI_AUTO_REGISTER", requires = "ddi_gateway_token_file")]
    ddi_auto_register: Option<String>,
    /// Log lines as text (colours only on a terminal) or as JSON objects.
    #[arg(long, env = "UPDRAFT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// What else `updraft serve` can do.
#[derive(clap::Subcommand)]
pub enum ServeAction {
    /// Create a new admin API token and write it to the data folder's
    /// `admin-token` file (mode 0600); earlier tokens named `admin` are
    /// revoked. The way back in when the admin token is lost.
    #[command(after_help = "Examples:\n  updraft serve admin-token --reset --data-dir data\n  \
updraft serve admin-token --reset --database-url postgres://updraft@db/updraft")]
    AdminToken {
        /// Required: revoke the tokens named `admin` and create a new one.
        #[arg(long)]
        reset: bool,
    },
}

/// How the server writes its log.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event; ANSI colours only when stderr is a terminal and NO_COLOR is unset.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    database_url: Option<String>,
    blob_dir: Option<PathBuf>,
    blob_store: Option<String>,
    trust: Option<PathBuf>,
    #[serde(default)]
    trust_updates: Vec<PathBuf>,
    public_url: Option<String>,
    poll_interval_s: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_connections: Option<usize>,
    device_requests_per_s: Option<u32>,
    ddi_tenant: Option<String>,
    ddi_gateway_token_file: Option<PathBuf>,
    ddi_auto_register: Option<String>,
}

pub fn run(a: ServeArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let file: FileConfig = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("invalid config file {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let data_dir = a.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("updraft-data"));
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let database_url = a
        .database_url
        .or(file.database_url)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("updraft.sqlite").display()));
    let blob_dir = a.blob_dir.or(file.blob_dir).unwrap_or_else(|| data_dir.join("blobs"));
    let listen = a.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let trust_path = a.trust.or(file.trust);
    let updates = if a.trust_updates.is_empty() { file.trust_updates } else { a.trust_updates };
    let trust = match &trust_path {
        Some(p) => {
            // Checked here for a clear error; the server walks the chain again.
            load_trusted(p, &updates, Timestamp::now())?;
            Some(updraft_server::TrustConfig {
                pinned: load_root(p)?,
                updates: updates.iter().map(|u| load_root(u)).collect::<anyhow::Result<_>>()?,
            })
        }
        None => None,
    };
    let admin_token_file = data_dir.join("admin-token");
    let gateway_token = match a.ddi_gateway_token_file.or(file.ddi_gateway_token_file) {
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read the DDI gateway token {}", p.display()))?;
            let key = text.trim().to_owned();
            if key.len() < 16 {
                anyhow::bail!(
                    "the DDI gateway token in {} is shorter than 16 characters; hint: openssl rand -hex 32 > {}",
                    p.display(),
                    p.display()
                );
            }
            Some(key)
        }
        None => None,
    };
    let auto_register = a.ddi_auto_register.or(file.ddi_auto_register);
    if auto_register.is_some() && gateway_token.is_none() {
        anyhow::bail!("DDI auto-registration needs a gateway token; hint: --ddi-gateway-token-file");
    }
    let ddi = updraft_server::ddi::DdiConfig {
        tenant: a.ddi_tenant.or(file.ddi_tenant).unwrap_or_else(|| "DEFAULT".into()),
        gateway_token,
        auto_register_family: auto_register,
    };
    let config = updraft_server::Config {
        admin_token_file: Some(admin_token_file.clone()),
        rate_limits: match a.device_requests_per_s.or(file.device_requests_per_s) {
            Some(n) => updraft_server::RateLimits {
                device_per_s: n.max(1),
                device_burst: n.max(1).saturating_mul(30),
                ..Default::default()
            },
            None => updraft_server::RateLimits::default(),
        },
        max_connections: a.max_connections.or(file.max_connections).unwrap_or(updraft_server::DEFAULT_MAX_CONNECTIONS),
        listen,
        database_url: database_url.clone(),
        blob_dir,
        blob_url: a.blob_store.or(file.blob_store),
        trust,
        public_url: a.public_url.or(file.public_url),
        poll_interval_s: a.poll_interval_s.or(file.poll_interval_s).unwrap_or(60),
        stop_on_signals: true,
        ddi,
        tls: match (a.tls_cert.or(file.tls_cert), a.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(updraft_server::TlsFiles { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both a certificate and a key; hint: --tls-cert and --tls-key"),
        },
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("UPDRAFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match a.log_format {
        LogFormat::Text => {
            use std::io::IsTerminal;
            let colours = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colours).init();
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(ServeAction::AdminToken { reset }) = a.action {
        if !reset {
            say!("refused: `admin-token` needs --reset (it revokes the tokens named admin and creates a new one)");
            return Ok(ExitCode::from(1));
        }
        runtime
            .block_on(updraft_server::reset_admin_token(&config, &admin_token_file))
            .map_err(|e| anyhow::anyhow!("cannot reset the admin token: {e}"))?;
        say!(
            "a new admin token is in {} (mode 0600); earlier tokens named admin are revoked",
            admin_token_file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if a.check {
        let report = runtime
            .block_on(updraft_server::check(&config))
            .map_err(|e| anyhow::anyhow!("cannot check the server's data: {e}"))?;
        crate::output::emit(a.json, &report, |out| {
            use std::fmt::Write as _;
            let _ = writeln!(
                out,
                "{} devices, {} releases, {} rollouts: {}",
                report.devices,
                report.releases,
                report.rollouts,
                if report.findings.is_empty() {
                    "consistent".to_owned()
                } else {
                    format!("{} findings", report.findings.len())
                }
            );
            for f in &report.findings {
                let _ = writeln!(out, "  {} {}: {}", f.code, f.subject, f.detail);
            }
            if !report.findings.is_empty() {
                let _ = writeln!(
                    out,
                    "hint: `updraft serve` repairs these at start-up (a missing blob needs its bundle published again)"
                );
            }
        })?;
        return Ok(if report.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    let tls_on = config.tls.is_some();
    runtime.block_on(async move {
        let started =
            updraft_server::start(config).await.map_err(|e| anyhow::anyhow!("cannot start the server: {e}"))?;
        let scheme = if tls_on { "https" } else { "http" };
        say!("updraft serving on {scheme}://{} (database {})", started.addr, redact(&database_url));
        if trust_path.is_none() {
            say!("warning: no --trust root: bundle uploads will be refused until one is configured");
        }
        if let Some(token) = &started.first_admin_token {
            // The token goes to a file only its owner reads, never into a
            // log: stdout gets the token itself only on a terminal, and
            // otherwise the file's path (a script reads the token from it).
            use std::io::{IsTerminal, Write as _};
            let mut out = std::io::stdout().lock();
            if std::io::stdout().is_terminal() {
                say!("first start: created an admin API token (also in {}, mode 0600):", admin_token_file.display());
                let _ = writeln!(out, "{token}").and_then(|()| out.flush());
            } else {
                say!("first start: created an admin API token in {} (mode 0600)", admin_token_file.display());
                let _ = writeln!(out, "{}", admin_token_file.display()).and_then(|()| out.flush());
            }
        }
        started.handle.await.ok();
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Hides a password in a database URL.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let user_end = s + 3 + url[s + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}
