//! Persistence for the Updraft server: SQLite (the embedded default) or
//! PostgreSQL, through one sqlx `Any` code path with migrations for both,
//! and a content-addressed, write-once blob store.
//!
//! SQL here is the subset both databases speak: `$N` parameters, BIGINT
//! milliseconds for times, TEXT (JSON where structured) for everything else.
//! Secrets (API, device and enrollment tokens) are stored as SHA-256 hashes
//! only: they are 256-bit random values, so a fast hash is enough.

mod blobs;
mod write;

use std::time::Duration;

use rand_core::RngCore;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use updraft_proto::{AuditEntry, Role, TokenInfo};

pub use blobs::{BlobStore, BlobWriter, ByteStream};
pub use write::{Enrolled, WriteTx, ENROLL_RETRY_WINDOW_MS};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("blob store: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unsupported database URL {0:?}; hint: use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    #[error("invalid blob store URL {0}")]
    BadBlobUrl(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

/// One pipeline run as `updraft pipeline` reports it (build health).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRecord {
    pub id: i64,
    pub project: String,
    pub commit: String,
    pub passed: bool,
    /// The pipeline's JSON report.
    #[serde(skip)]
    pub report: String,
    pub at_ms: i64,
    pub actor: String,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: include_str!("../migrations/0001_init.sqlite.sql"),
        postgres: include_str!("../migrations/0001_init.postgres.sql"),
    },
    Migration {
        version: 2,
        sqlite: include_str!("../migrations/0002_trust_roots.sqlite.sql"),
        postgres: include_str!("../migrations/0002_trust_roots.postgres.sql"),
    },
    Migration {
        version: 3,
        sqlite: include_str!("../migrations/0003_pipelines.sqlite.sql"),
        postgres: include_str!("../migrations/0003_pipelines.postgres.sql"),
    },
    Migration {
        version: 4,
        sqlite: include_str!("../migrations/0004_inventory.sqlite.sql"),
        postgres: include_str!("../migrations/0004_inventory.postgres.sql"),
    },
    Migration {
        version: 5,
        sqlite: include_str!("../migrations/0005_enrolled_with.sql"),
        postgres: include_str!("../migrations/0005_enrolled_with.sql"),
    },
    Migration {
        version: 6,
        sqlite: include_str!("../migrations/0006_sessions.sql"),
        postgres: include_str!("../migrations/0006_sessions.sql"),
    },
    Migration {
        version: 7,
        sqlite: include_str!("../migrations/0007_sign_in_links.sql"),
        postgres: include_str!("../migrations/0007_sign_in_links.sql"),
    },
    Migration {
        version: 8,
        sqlite: include_str!("../migrations/0008_device_indexes.sql"),
        postgres: include_str!("../migrations/0008_device_indexes.sql"),
    },
    Migration {
        version: 9,
        sqlite: include_str!("../migrations/0009_ddi.sqlite.sql"),
        postgres: include_str!("../migrations/0009_ddi.postgres.sql"),
    },
];

/// Device columns a search may match exactly (see [`Store::devices_where`]).
pub const DEVICE_SEARCH_COLUMNS: &[&str] =
    &["family", "hardware", "region", "release", "channel", "status", "protocol"];

/// A device search that the database answers: exact values of
/// [`DEVICE_SEARCH_COLUMNS`] and a bound on the last check-in.
#[derive(Clone, Debug, Default)]
pub struct DeviceQuery {
    /// (column, value) pairs, all of which must hold.
    pub equal: Vec<(&'static str, String)>,
    /// Last seen at or after this time (ms).
    pub seen_since: Option<i64>,
    /// Never seen, or last seen before this time (ms).
    pub unseen_since: Option<i64>,
}

impl DeviceQuery {
    /// The WHERE terms, their parameters numbered from `first`.
    fn sql(&self, first: usize) -> (String, Vec<SqlValue>) {
        let mut terms = Vec::new();
        let mut binds = Vec::new();
        for (col, v) in &self.equal {
            debug_assert!(DEVICE_SEARCH_COLUMNS.contains(col));
            terms.push(format!("{col} = ${}", first + binds.len()));
            binds.push(SqlValue::Text(v.clone()));
        }
        if let Some(t) = self.seen_since {
            terms.push(format!("last_seen_ms >= ${}", first + binds.len()));
            binds.push(SqlValue::Int(t));
        }
        if let Some(t) = self.unseen_since {
            terms.push(format!("(last_seen_ms IS NULL OR last_seen_ms < ${})", first + binds.len()));
            binds.push(SqlValue::Int(t));
        }
        (terms.iter().map(|t| format!(" AND {t}")).collect(), binds)
    }
}

enum SqlValue {
    Text(String),
    Int(i64),
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    values: Vec<SqlValue>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for v in values {
        q = match v {
            SqlValue::Text(t) => q.bind(t),
            SqlValue::Int(i) => q.bind(i),
        };
    }
    q
}

/// Devices by when they last checked in ([`Store::seen_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeenCounts {
    /// Devices in service (not decommissioned).
    pub total: i64,
    /// Of those, seen at or after the time asked.
    pub seen: i64,
    /// Of those, never seen.
    pub never: i64,
}

/// A session [`Store::create_session`] opened.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// The session secret (the cookie's value; only its hash is stored).
    pub secret: String,
    /// The secret every state-changing form carries.
    pub csrf: String,
    pub token: TokenInfo,
}

/// A new random secret with a prefix naming its kind (`upa_` API token,
/// `upd_` device token, `upe_` enrollment token, `ses_` dashboard session).
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The database.
#[derive(Clone)]
pub struct Store {
    /// Writes. SQLite: one connection, so that Updraft's writers queue here
    /// instead of failing with "database is locked".
    pool: AnyPool,
    /// Reads (WAL readers never wait for the writer). The same pool as
    /// `pool` on PostgreSQL and for in-memory SQLite.
    reads: AnyPool,
    kind: DbKind,
    /// Mixed into the advisory lock keys (PostgreSQL): one per schema.
    lock_salt: i64,
}

/// A device row.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRow {
    pub id: String,
    pub family: String,
    pub hardware: String,
    pub region: String,
    pub tags: Vec<String>,
    pub channel: Option<String>,
    pub release: Option<String>,
    pub last_known_good: Option<String>,
    /// component → version.
    pub components: Vec<(String, String)>,
    pub utc_offset_min: i16,
    pub enrolled_ms: i64,
    pub last_seen_ms: Option<i64>,
    pub status: DeviceStatus,
    /// Operator-set attributes (`site` → `berlin`).
    pub attributes: Vec<(String, String)>,
    /// The latest inventory the device reported (agent version, slot, boot
    /// state, free space, its own attributes...).
    pub inventory: Vec<(String, String)>,
    /// Check-ins recorded (counted when the row is refreshed).
    pub check_ins: i64,
    /// The protocol it speaks: `updraft` (the agent) or `ddi` (a hawkBit client).
    pub protocol: String,
}

impl DeviceRow {
    /// A new, active device with nothing reported yet.
    pub fn new(id: &str, family: &str, hardware: &str) -> DeviceRow {
        DeviceRow {
            id: id.to_owned(),
            family: family.to_owned(),
            hardware: hardware.to_owned(),
            region: String::new(),
            tags: Vec::new(),
            channel: None,
            release: None,
            last_known_good: None,
            components: Vec::new(),
            utc_offset_min: 0,
            enrolled_ms: 0,
            last_seen_ms: None,
            status: DeviceStatus::Active,
            attributes: Vec::new(),
            inventory: Vec::new(),
            check_ins: 0,
            protocol: PROTOCOL_UPDRAFT.to_owned(),
        }
    }
}

/// The protocol of a device running the Updraft agent.
pub const PROTOCOL_UPDRAFT: &str = "updraft";
/// The protocol of a hawkBit DDI client (SWUpdate's suricatta, rauc-hawkbit-updater).
pub const PROTOCOL_DDI: &str = "ddi";

/// Where a device stands with the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Enrolled and accepted: it takes part in rollouts.
    Active,
    /// Enrolled with a token that requires acceptance: waits for an operator.
    Pending,
    /// Taken out of service: its token is revoked, its history kept; it may enroll again.
    Decommissioned,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Pending => "pending",
            DeviceStatus::Decommissioned => "decommissioned",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceStatus> {
        [DeviceStatus::Active, DeviceStatus::Pending, DeviceStatus::Decommissioned]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// One entry of a device's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    pub id: i64,
    pub at_ms: i64,
    /// `enrolled`, `check_in` (what it reported changed), `assigned`,
    /// an install event (`committed`, `failed`...), `accepted`,
    /// `decommissioned`, `tagged`.
    pub kind: String,
    pub release: Option<String>,
    /// The event's detail (a failure's reason and log tail), or what changed.
    pub detail: String,
}

/// A history entry to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewHistory {
    pub device: String,
    pub at_ms: i64,
    pub kind: String,
    pub release: Option<String>,
    pub detail: String,
}

/// The end of `detail`, at most [`MAX_HISTORY_DETAIL_BYTES`] (the tail of a log says most).
fn bounded_detail(detail: &str) -> String {
    let mut detail = detail.to_owned();
    if detail.len() > MAX_HISTORY_DETAIL_BYTES {
        let mut cut = detail.len() - MAX_HISTORY_DETAIL_BYTES;
        while !detail.is_char_boundary(cut) {
            cut += 1;
        }
        detail.drain(..cut);
    }
    detail
}

/// Device rows written by one statement (8 parameters each; well under
/// SQLite's and PostgreSQL's limits on parameters).
pub const REPORT_ROWS_PER_STATEMENT: usize = 400;

/// History entries kept per device (the oldest go first).
pub const MAX_HISTORY_PER_DEVICE: i64 = 500;
/// Largest detail kept for one history entry (a failure log's tail).
pub const MAX_HISTORY_DETAIL_BYTES: usize = 64 * 1024;

/// A release row.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseRow {
    pub id: String,
    pub name: String,
    pub version: String,
    pub family: String,
    pub hardware: Vec<String>,
    pub security_version: i64,
    pub sha256: String,
    pub size: i64,
    pub manifest_sha256: String,
    pub signers: Vec<String>,
    pub builder_id: String,
    /// component → semver requirement.
    pub requires: Vec<(String, String)>,
    pub published_ms: i64,
    pub published_by: String,
}

/// A rollout row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutRow {
    pub id: String,
    pub release: String,
    pub plan: String,
    pub created_ms: i64,
    pub created_by: String,
}

/// What inserting a release did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    Created,
    /// The same name and version with the same bytes: nothing changed.
    Identical,
    /// The same name and version with other bytes: refused.
    Conflict,
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialisable")
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn pairs(v: &[(String, String)]) -> String {
    json(&v.iter().cloned().collect::<std::collections::BTreeMap<String, String>>())
}

fn from_pairs(s: &str, what: &str) -> Result<Vec<(String, String)>> {
    let m: std::collections::BTreeMap<String, String> = from_json(s, what)?;
    Ok(m.into_iter().collect())
}

/// How long a request waits for a database connection before it fails.
const DB_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Reader connections of an SQLite store (the writer is one more).
const SQLITE_READERS: u32 = 4;
/// Connections to PostgreSQL per server process.
const POSTGRES_CONNECTIONS: u32 = 16;

impl Store {
    /// Connects and migrates. `url` is `sqlite://PATH` (created if missing)
    /// or `postgres://...`.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            DbKind::Postgres
        } else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        let url = match kind {
            DbKind::Sqlite => {
                let sep = if url.contains('?') { '&' } else { '?' };
                if url.contains("mode=") {
                    url.to_owned()
                } else {
                    format!("{url}{sep}mode=rwc")
                }
            }
            DbKind::Postgres => url.to_owned(),
        };
        let pool_with = |max: u32| {
            AnyPoolOptions::new().max_connections(max).acquire_timeout(DB_ACQUIRE_TIMEOUT).after_connect(
                move |conn, _| {
                    Box::pin(async move {
                        if kind == DbKind::Sqlite {
                            // WAL for concurrent readers; FULL sync so that an
                            // acknowledged write survives a power cut; the busy
                            // timeout covers other processes (an admin's sqlite3).
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA synchronous = FULL",
                                "PRAGMA busy_timeout = 10000",
                            ] {
                                sqlx::Executor::execute(&mut *conn, pragma).await?;
                            }
                        }
                        Ok(())
                    })
                },
            )
        };
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let (pool, reads) = match kind {
            DbKind::Sqlite if !in_memory => {
                let pool = pool_with(1).connect(&url).await?;
                let reads = pool_with(SQLITE_READERS).connect(&url).await?;
                (pool, reads)
            }
            DbKind::Sqlite => {
                let pool = pool_with(1).connect(&url).await?;
                (pool.clone(), pool)
            }
            DbKind::Postgres => {
                let pool = pool_with(POSTGRES_CONNECTIONS).connect(&url).await?;
                (pool.clone(), pool)
            }
        };
        // Advisory locks are per database; several Updraft instances may
        // live in schemas of one database: the keys depend on the schema.
        let lock_salt = match kind {
            DbKind::Postgres => {
                let row = sqlx::query("SELECT CAST(current_schema() AS TEXT) AS s").fetch_one(&pool).await?;
                let schema: Option<String> = row.try_get("s")?;
                let digest = Sha256::digest(schema.unwrap_or_default().as_bytes());
                i64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) & 0x0000_ffff_ffff_ffff
            }
            DbKind::Sqlite => 0,
        };
        let store = Store { pool, reads, kind, lock_salt };
        store.migrate().await?;
        Ok(store)
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs SQL without parameters (administration and tests).
    pub async fn execute_raw(&self, sql: &str) -> Result<()> {
        sqlx::raw_sql(sql).execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS updraft_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for m in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            let done: Option<AnyRow> = sqlx::query("SELECT version FROM updraft_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_some() {
                continue;
            }
            let sql = match self.kind {
                DbKind::Sqlite => m.sqlite,
                DbKind::Postgres => m.postgres,
            };
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO updraft_migrations (version, applied_ms) VALUES ($1, $2)")
                .bind(m.version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    // ---------------------------------------------------------- API tokens

    pub async fn count_api_tokens(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens").fetch_one(&self.reads).await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Creates a token; returns its id and the secret (shown once).
    pub async fn create_api_token(&self, name: &str, role: Role, now_ms: i64) -> Result<(i64, String)> {
        let mut tx = self.begin_write().await?;
        let out = tx.create_api_token(name, role, now_ms).await?;
        tx.commit().await?;
        Ok(out)
    }

    fn token_info(row: &AnyRow) -> Result<TokenInfo> {
        let role: String = row.try_get("role")?;
        Ok(TokenInfo {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
            created_ms: row.try_get("created_ms")?,
            revoked: row.try_get::<i64, _>("revoked")? != 0,
        })
    }

    /// The live token with this secret.
    pub async fn find_api_token(&self, secret: &str) -> Result<Option<TokenInfo>> {
        let row =
            sqlx::query("SELECT id, name, role, created_ms, revoked FROM api_tokens WHERE hash = $1 AND revoked = 0")
                .bind(hash_secret(secret))
                .fetch_optional(&self.reads)
                .await?;
        row.as_ref().map(Self::token_info).transpose()
    }

    pub async fn list_api_tokens(&self) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query("SELECT id, name, role, created_ms, revoked FROM api_tokens ORDER BY id")
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(Self::token_info).collect()
    }

    /// Revokes a token; false if there is none with that id.
    pub async fn revoke_api_token(&self, id: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let out = tx.revoke_api_token(id).await?;
        tx.commit().await?;
        Ok(out)
    }

    // ------------------------------------------------------------ sessions

    /// Opens a dashboard session for the live token with secret `token`,
    /// valid until `expires_ms`; returns the session secret (the cookie) and
    /// its CSRF secret, or None if the token is unknown or revoked.
    pub async fn create_session(&self, token: &str, now_ms: i64, expires_ms: i64) -> Result<Option<NewSession>> {
        let Some(info) = self.find_api_token(token).await? else { return Ok(None) };
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_ms <= $1").bind(now_ms).execute(&mut *tx.tx).await?;
        let s = Self::insert_session(&mut tx, info, now_ms, expires_ms).await?;
        tx.commit().await?;
        Ok(Some(s))
    }

    /// Opens a session for `token` in `tx`: new secrets, only the session
    /// secret's hash stored.
    async fn insert_session(tx: &mut WriteTx, token: TokenInfo, now_ms: i64, expires_ms: i64) -> Result<NewSession> {
        let secret = new_secret("ses_");
        let csrf = new_secret("csrf_");
        sqlx::query("INSERT INTO sessions (hash, token_id, csrf, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(hash_secret(&secret))
            .bind(token.id)
            .bind(&csrf)
            .bind(now_ms)
            .bind(expires_ms)
            .execute(&mut *tx.tx)
            .await?;
        Ok(NewSession { secret, csrf, token })
    }

    /// The live session with this secret: its token (not revoked) and CSRF secret.
    pub async fn session(&self, secret: &str, now_ms: i64) -> Result<Option<(TokenInfo, String)>> {
        let row = sqlx::query(
            "SELECT t.id, t.name, t.role, t.created_ms, t.revoked, s.csrf FROM sessions s \
             JOIN api_tokens t ON t.id = s.token_id WHERE s.hash = $1 AND s.expires_ms > $2 AND t.revoked = 0",
        )
        .bind(hash_secret(secret))
        .bind(now_ms)
        .fetch_optional(&self.reads)
        .await?;
        match row {
            Some(row) => Ok(Some((Self::token_info(&row)?, row.try_get("csrf")?))),
            None => Ok(None),
        }
    }

    /// A one-time sign-in link's secret for the live token `token_id`, valid
    /// until `expires_ms`.
    pub async fn create_sign_in_link(&self, token_id: i64, now_ms: i64, expires_ms: i64) -> Result<String> {
        let secret = new_secret("upl_");
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sign_in_links WHERE expires_ms <= $1").bind(now_ms).execute(&mut *tx.tx).await?;
        sqlx::query("INSERT INTO sign_in_links (hash, token_id, expires_ms) VALUES ($1, $2, $3)")
            .bind(hash_secret(&secret))
            .bind(token_id)
            .bind(expires_ms)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(secret)
    }

    /// Uses a one-time sign-in link: deletes it and opens a session for its
    /// token (if the link is live and the token not revoked).
    pub async fn use_sign_in_link(
        &self,
        link: &str,
        now_ms: i64,
        session_expires_ms: i64,
    ) -> Result<Option<NewSession>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("DELETE FROM sign_in_links WHERE hash = $1 AND expires_ms > $2 RETURNING token_id")
            .bind(hash_secret(link))
            .bind(now_ms)
            .fetch_optional(&mut *tx.tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let token_id: i64 = row.try_get("token_id")?;
        let token =
            sqlx::query("SELECT id, name, role, created_ms, revoked FROM api_tokens WHERE id = $1 AND revoked = 0")
                .bind(token_id)
                .fetch_optional(&mut *tx.tx)
                .await?;
        let Some(token) = token.as_ref().map(Self::token_info).transpose()? else {
            tx.commit().await?;
            return Ok(None);
        };
        let s = Self::insert_session(&mut tx, token, now_ms, session_expires_ms).await?;
        tx.commit().await?;
        Ok(Some(s))
    }

    /// Ends a session (signing out); false if there was none.
    pub async fn end_session(&self, secret: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM sessions WHERE hash = $1")
            .bind(hash_secret(secret))
            .execute(&mut *tx.tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    // ---------------------------------------------------------- enrollment

    /// Creates an enrollment token; returns the secret.
    pub async fn create_enrollment_token(
        &self,
        uses: u32,
        expires_ms: i64,
        require_accept: bool,
        by: &str,
        now_ms: i64,
    ) -> Result<String> {
        let mut tx = self.begin_write().await?;
        let out = tx.create_enrollment_token(uses, expires_ms, require_accept, by, now_ms).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Enrolls a device: takes one use of the enrollment token and inserts
    /// the device (pending if the token requires acceptance), atomically.
    /// A decommissioned id enrolls again (its history is kept). Returns the
    /// device token and the device's status, or why not.
    pub async fn enroll(
        &self,
        enrollment_secret: &str,
        device: &DeviceRow,
        now_ms: i64,
    ) -> Result<Result<Enrolled, EnrollRefusal>> {
        let mut tx = self.begin_write().await?;
        let out = tx.enroll(enrollment_secret, device, now_ms).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Inserts devices with their token hashes in one transaction (bulk
    /// import; enrollment is the normal way in). Existing ids are refused.
    pub async fn insert_devices(&self, devices: &[(DeviceRow, String)]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        tx.insert_devices(devices).await?;
        tx.commit().await
    }

    pub(crate) fn device_row(row: &AnyRow) -> Result<DeviceRow> {
        let status: String = row.try_get("status")?;
        Ok(DeviceRow {
            id: row.try_get("id")?,
            family: row.try_get("family")?,
            hardware: row.try_get("hardware")?,
            region: row.try_get("region")?,
            tags: from_json(&row.try_get::<String, _>("tags")?, "tags")?,
            channel: row.try_get("channel")?,
            release: row.try_get("release")?,
            last_known_good: row.try_get("last_known_good")?,
            components: from_pairs(&row.try_get::<String, _>("components")?, "components")?,
            utc_offset_min: row.try_get::<i64, _>("utc_offset_min")? as i16,
            enrolled_ms: row.try_get("enrolled_ms")?,
            last_seen_ms: row.try_get("last_seen_ms")?,
            status: DeviceStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("device status {status:?}")))?,
            attributes: from_pairs(&row.try_get::<String, _>("attributes")?, "attributes")?,
            inventory: from_pairs(&row.try_get::<String, _>("inventory")?, "inventory")?,
            check_ins: row.try_get("check_ins")?,
            protocol: row.try_get("protocol")?,
        })
    }

    pub(crate) const DEVICE_COLUMNS: &'static str = "id, family, hardware, region, tags, channel, release, last_known_good, components, utc_offset_min, enrolled_ms, last_seen_ms, status, attributes, inventory, check_ins, protocol";

    /// The device whose token this is (decommissioned devices have none).
    pub async fn device_by_token(&self, secret: &str) -> Result<Option<DeviceRow>> {
        let row = sqlx::query(&format!("SELECT {} FROM devices WHERE token_hash = $1", Self::DEVICE_COLUMNS))
            .bind(hash_secret(secret))
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(Self::device_row).transpose()
    }

    pub async fn device(&self, id: &str) -> Result<Option<DeviceRow>> {
        let row = sqlx::query(&format!("SELECT {} FROM devices WHERE id = $1", Self::DEVICE_COLUMNS))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(Self::device_row).transpose()
    }

    /// Devices matching `q` in id order after `after` (a keyset page).
    pub async fn devices_where(&self, q: &DeviceQuery, after: &str, limit: i64) -> Result<Vec<DeviceRow>> {
        let (terms, binds) = q.sql(2);
        let sql = format!(
            "SELECT {} FROM devices WHERE id > $1{terms} ORDER BY id LIMIT ${}",
            Self::DEVICE_COLUMNS,
            binds.len() + 2
        );
        let rows = bind_all(sqlx::query(&sql).bind(after), binds).bind(limit).fetch_all(&self.reads).await?;
        rows.iter().map(Self::device_row).collect()
    }

    /// How many devices match `q`.
    pub async fn device_count_where(&self, q: &DeviceQuery) -> Result<i64> {
        let (terms, binds) = q.sql(1);
        let sql = format!("SELECT COUNT(*) AS n FROM devices WHERE 1 = 1{terms}");
        let row = bind_all(sqlx::query(&sql), binds).fetch_one(&self.reads).await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Devices in service, those seen since `since_ms`, those never seen
    /// (each count read from an index: `devices_last_seen` covers both
    /// columns it needs).
    pub async fn seen_counts(&self, since_ms: i64) -> Result<SeenCounts> {
        let count = |sql: &'static str, bind: Option<i64>| async move {
            let mut q = sqlx::query(sql);
            if let Some(t) = bind {
                q = q.bind(t);
            }
            Ok::<i64, StoreError>(q.fetch_one(&self.reads).await?.try_get("n")?)
        };
        let all = count("SELECT COUNT(*) AS n FROM devices", None).await?;
        let retired = count("SELECT COUNT(*) AS n FROM devices WHERE status = 'decommissioned'", None).await?;
        let seen = count(
            "SELECT COUNT(*) AS n FROM devices WHERE last_seen_ms >= $1 AND status <> 'decommissioned'",
            Some(since_ms),
        )
        .await?;
        let never =
            count("SELECT COUNT(*) AS n FROM devices WHERE last_seen_ms IS NULL AND status <> 'decommissioned'", None)
                .await?;
        Ok(SeenCounts { total: all - retired, seen, never })
    }

    /// History entries of the given kinds since `since_ms` across the
    /// fleet: how many, and the newest `limit` with their devices.
    pub async fn recent_history(
        &self,
        kinds: &[&str],
        since_ms: i64,
        limit: i64,
    ) -> Result<(i64, Vec<(String, HistoryRow)>)> {
        let marks: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 2)).collect();
        let cond = format!("at_ms >= $1 AND kind IN ({})", marks.join(", "));
        let count = format!("SELECT COUNT(*) AS n FROM device_history WHERE {cond}");
        let mut q = sqlx::query(&count).bind(since_ms);
        for k in kinds {
            q = q.bind(*k);
        }
        let n: i64 = q.fetch_one(&self.reads).await?.try_get("n")?;
        let sql = format!(
            "SELECT id, device, at_ms, kind, release, detail FROM device_history WHERE {cond} \
             ORDER BY at_ms DESC, id DESC LIMIT ${}",
            kinds.len() + 2
        );
        let mut q = sqlx::query(&sql).bind(since_ms);
        for k in kinds {
            q = q.bind(*k);
        }
        let rows = q.bind(limit).fetch_all(&self.reads).await?;
        let list =
            rows.iter().map(|r| Ok((r.try_get("device")?, Self::history_row(r)?))).collect::<Result<Vec<_>>>()?;
        Ok((n, list))
    }

    /// Records what a device reported: its release, components, inventory,
    /// when it was last seen and how many check-ins it made.
    pub async fn update_device(&self, d: &DeviceRow) -> Result<()> {
        self.record_reports(std::slice::from_ref(d), &[]).await
    }

    /// Writes what devices reported, in one transaction: their rows
    /// (release, components, inventory, last seen, check-ins) and history
    /// entries (trimmed to [`MAX_HISTORY_PER_DEVICE`] once per device).
    pub async fn record_reports(&self, rows: &[DeviceRow], history: &[NewHistory]) -> Result<()> {
        if rows.is_empty() && history.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        // SQLite (in process): one short prepared statement per row (sqlx
        // resolves every `$N` of a statement by name, which a statement with
        // thousands of them pays quadratically). PostgreSQL: one statement per
        // chunk of rows (a round trip each), a VALUES list joined by id.
        let chunk_rows = match self.kind {
            DbKind::Sqlite => 1,
            DbKind::Postgres => REPORT_ROWS_PER_STATEMENT,
        };
        for chunk in rows.chunks(chunk_rows) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = i * 8;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5,
                        p + 6,
                        p + 7,
                        p + 8
                    )
                })
                .collect();
            let sql = format!(
                "WITH v(id, release, lkg, components, utc, seen, inventory, check_ins) AS (VALUES {}) \
                 UPDATE devices SET release = v.release, last_known_good = v.lkg, components = v.components, \
                 utc_offset_min = v.utc, last_seen_ms = v.seen, inventory = v.inventory, check_ins = v.check_ins \
                 FROM v WHERE devices.id = v.id",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for d in chunk {
                q = q
                    .bind(&d.id)
                    .bind(d.release.clone())
                    .bind(d.last_known_good.clone())
                    .bind(pairs(&d.components))
                    .bind(i64::from(d.utc_offset_min))
                    .bind(d.last_seen_ms)
                    .bind(pairs(&d.inventory))
                    .bind(d.check_ins);
            }
            q.execute(&mut *tx).await?;
        }
        let mut devices: Vec<&str> = Vec::new();
        for h in history {
            sqlx::query(
                "INSERT INTO device_history (device, at_ms, kind, release, detail) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&h.device)
            .bind(h.at_ms)
            .bind(&h.kind)
            .bind(h.release.clone())
            .bind(bounded_detail(&h.detail))
            .execute(&mut *tx)
            .await?;
            if !devices.contains(&h.device.as_str()) {
                devices.push(&h.device);
            }
        }
        for device in devices {
            Self::trim_history(&mut tx, device).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn trim_history(tx: &mut sqlx::Transaction<'_, sqlx::Any>, device: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM device_history WHERE device = $1 AND id <= \
             (SELECT id FROM device_history WHERE device = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        )
        .bind(device)
        .bind(MAX_HISTORY_PER_DEVICE)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Sets what operators manage: status, tags and attributes. Taking a
    /// device out of service revokes its token.
    pub async fn set_device_admin(&self, d: &DeviceRow, now_ms: i64, history: (&str, &str)) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let out = tx.set_device_admin(d, now_ms, history).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn history_in(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        device: &str,
        at_ms: i64,
        kind: &str,
        release: Option<&str>,
        detail: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO device_history (device, at_ms, kind, release, detail) VALUES ($1, $2, $3, $4, $5)")
            .bind(device)
            .bind(at_ms)
            .bind(kind)
            .bind(release.map(str::to_owned))
            .bind(bounded_detail(detail))
            .execute(&mut **tx)
            .await?;
        Self::trim_history(tx, device).await
    }

    /// Appends to a device's history (bounded to [`MAX_HISTORY_PER_DEVICE`]).
    pub async fn add_history(
        &self,
        device: &str,
        at_ms: i64,
        kind: &str,
        release: Option<&str>,
        detail: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::history_in(&mut tx, device, at_ms, kind, release, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    fn history_row(r: &AnyRow) -> Result<HistoryRow> {
        Ok(HistoryRow {
            id: r.try_get("id")?,
            at_ms: r.try_get("at_ms")?,
            kind: r.try_get("kind")?,
            release: r.try_get("release")?,
            detail: r.try_get("detail")?,
        })
    }

    /// A device's history, newest first.
    pub async fn history(&self, device: &str, limit: i64) -> Result<Vec<HistoryRow>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, kind, release, detail FROM device_history WHERE device = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(device)
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(Self::history_row).collect()
    }

    // ---------------------------------------------------------- releases

    pub(crate) fn release_row(row: &AnyRow) -> Result<ReleaseRow> {
        Ok(ReleaseRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            version: row.try_get("version")?,
            family: row.try_get("family")?,
            hardware: from_json(&row.try_get::<String, _>("hardware")?, "hardware")?,
            security_version: row.try_get("security_version")?,
            sha256: row.try_get("sha256")?,
            size: row.try_get("size")?,
            manifest_sha256: row.try_get("manifest_sha256")?,
            signers: from_json(&row.try_get::<String, _>("signers")?, "signers")?,
            builder_id: row.try_get("builder_id")?,
            requires: from_pairs(&row.try_get::<String, _>("requires")?, "requires")?,
            published_ms: row.try_get("published_ms")?,
            published_by: row.try_get("published_by")?,
        })
    }

    pub(crate) const RELEASE_COLUMNS: &'static str = "id, name, version, family, hardware, security_version, sha256, size, manifest_sha256, signers, builder_id, requires, published_ms, published_by";

    /// Inserts a release and its metadata, unless one with this id exists.
    /// Releases never change: identical bytes are a no-op, other bytes a conflict.
    pub async fn insert_release(&self, r: &ReleaseRow, meta: &[(&str, String)]) -> Result<Inserted> {
        let mut tx = self.begin_write().await?;
        let out = tx.insert_release(r, meta).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn release(&self, id: &str) -> Result<Option<ReleaseRow>> {
        let row = sqlx::query(&format!("SELECT {} FROM releases WHERE id = $1", Self::RELEASE_COLUMNS))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(Self::release_row).transpose()
    }

    pub async fn releases(&self) -> Result<Vec<ReleaseRow>> {
        let rows = sqlx::query(&format!("SELECT {} FROM releases ORDER BY published_ms, id", Self::RELEASE_COLUMNS))
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(Self::release_row).collect()
    }

    /// A release's stored metadata (`manifest`, `manifest.dsse`, `provenance`, `sbom`).
    pub async fn release_meta(&self, id: &str, kind: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT body FROM release_meta WHERE release = $1 AND kind = $2")
            .bind(id)
            .bind(kind)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.map(|r| r.try_get("body")).transpose()?)
    }

    /// Puts a release into a channel; false if it was already there.
    pub async fn promote(&self, channel: &str, release: &str, by: &str, now_ms: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let out = tx.promote(channel, release, by, now_ms).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Channels a release is in.
    pub async fn channels_of(&self, release: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT channel FROM channels WHERE release = $1 ORDER BY channel")
            .bind(release)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("channel")?)).collect()
    }

    /// Releases in a channel, oldest promotion first.
    pub async fn channel(&self, channel: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT release FROM channels WHERE channel = $1 ORDER BY promoted_ms, release")
            .bind(channel)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("release")?)).collect()
    }

    // ---------------------------------------------------------- rollouts and journal

    /// Inserts a rollout; false if the id is taken.
    pub async fn insert_rollout(&self, r: &RolloutRow) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let out = tx.insert_rollout(r).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn rollouts(&self) -> Result<Vec<RolloutRow>> {
        let rows =
            sqlx::query("SELECT id, release, plan, created_ms, created_by FROM rollouts ORDER BY created_ms, id")
                .fetch_all(&self.reads)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(RolloutRow {
                    id: r.try_get("id")?,
                    release: r.try_get("release")?,
                    plan: r.try_get("plan")?,
                    created_ms: r.try_get("created_ms")?,
                    created_by: r.try_get("created_by")?,
                })
            })
            .collect()
    }

    /// Appends entries to the controller journal in one transaction.
    pub async fn append_journal(&self, entries: &[(i64, String)]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        tx.append_journal(entries).await?;
        tx.commit().await
    }

    /// Journal entries after `seq`, in order.
    pub async fn journal_since(&self, seq: i64) -> Result<Vec<(i64, i64, String)>> {
        let rows = sqlx::query("SELECT seq, at_ms, entry FROM journal WHERE seq > $1 ORDER BY seq")
            .bind(seq)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("seq")?, r.try_get("at_ms")?, r.try_get("entry")?))).collect()
    }

    /// Starts a write transaction (see [`WriteTx`]). PostgreSQL: it takes
    /// the journal's transaction-scoped advisory lock, so that replicas
    /// append to the journal one at a time and each applies every entry in
    /// journal order. SQLite: it holds the one writer connection.
    pub async fn begin_write(&self) -> Result<WriteTx> {
        let mut tx = self.pool.begin().await?;
        if self.kind == DbKind::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(JOURNAL_LOCK_KEY ^ self.lock_salt)
                .execute(&mut *tx)
                .await?;
        }
        Ok(WriteTx { tx })
    }

    /// Tries to become the leader (the one replica that runs periodic
    /// controller work). PostgreSQL: a session advisory lock held on a
    /// dedicated connection for as long as the returned guard lives, and
    /// released by the database if this process dies. SQLite has one process:
    /// it always leads.
    pub async fn try_lead(&self) -> Result<Option<Leadership>> {
        if self.kind == DbKind::Sqlite {
            return Ok(Some(Leadership { conn: None }));
        }
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS ok")
            .bind(LEADER_LOCK_KEY ^ self.lock_salt)
            .fetch_one(&mut *conn)
            .await?;
        if row.try_get::<bool, _>("ok")? {
            Ok(Some(Leadership { conn: Some(conn.detach()) }))
        } else {
            Ok(None)
        }
    }

    // ---------------------------------------------------------- trust roots

    /// Stores a new trust root version; false if that version is stored.
    pub async fn add_trust_root(&self, version: i64, body: &str, by: &str, now_ms: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let out = tx.add_trust_root(version, body, by, now_ms).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Stored trust root versions after `version`, in order.
    pub async fn trust_roots_after(&self, version: i64) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT version, body FROM trust_roots WHERE version > $1 ORDER BY version")
            .bind(version)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("version")?, r.try_get("body")?))).collect()
    }

    // ------------------------------------------------------- pipelines

    /// Records a pipeline run's report (build health); returns its id.
    pub async fn add_build(&self, b: &BuildRecord) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let out = tx.add_build(b).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The newest pipeline runs of a project (all projects: `None`), newest first.
    pub async fn builds(&self, project: Option<&str>, limit: i64) -> Result<Vec<BuildRecord>> {
        let rows = sqlx::query(
            "SELECT id, project, git_commit, passed, report, at_ms, actor FROM pipeline_builds \
             WHERE ($1 = '' OR project = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(project.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BuildRecord {
                    id: r.try_get("id")?,
                    project: r.try_get("project")?,
                    commit: r.try_get("git_commit")?,
                    passed: r.try_get::<i64, _>("passed")? != 0,
                    report: r.try_get("report")?,
                    at_ms: r.try_get("at_ms")?,
                    actor: r.try_get("actor")?,
                })
            })
            .collect()
    }

    /// A project's flaky-test history (JSON), if any.
    pub async fn flaky_state(&self, project: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT state FROM pipeline_flaky WHERE project = $1")
            .bind(project)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.map(|r| r.try_get("state")).transpose()?)
    }

    /// Replaces a project's flaky-test history.
    pub async fn set_flaky_state(&self, project: &str, state: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO pipeline_flaky (project, state, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (project) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
        )
        .bind(project)
        .bind(state)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---------------------------------------------------------- audit

    /// Appends to the audit log (append-only: nothing updates or deletes it).
    pub async fn audit(&self, e: &AuditEntry) -> Result<()> {
        let mut tx = self.begin_write().await?;
        tx.audit(e).await?;
        tx.commit().await
    }

    /// The subjects of every audit entry with one of these actions (for
    /// the start-up reconciliation).
    pub async fn audited_subjects(&self, actions: &[&str]) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for action in actions {
            let rows =
                sqlx::query("SELECT subject FROM audit WHERE action = $1").bind(*action).fetch_all(&self.reads).await?;
            for r in rows {
                out.insert(r.try_get("subject")?);
            }
        }
        Ok(out)
    }

    /// Every device's id and status, in id order.
    pub async fn device_statuses(&self) -> Result<Vec<(String, DeviceStatus)>> {
        let rows = sqlx::query("SELECT id, status FROM devices ORDER BY id").fetch_all(&self.reads).await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                let status = DeviceStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("device status {status:?}")))?;
                Ok((r.try_get("id")?, status))
            })
            .collect()
    }

    /// Audit entries after `after_id`, optionally one action, oldest first.
    pub async fn audit_log(&self, after_id: i64, action: Option<&str>, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, subject, detail, remote FROM audit \
             WHERE id > $1 AND ($2 = '' OR action = $2) ORDER BY id LIMIT $3",
        )
        .bind(after_id)
        .bind(action.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(audit_entry).collect()
    }

    /// Audit entries newest first, filtered (every field exact; absent: any),
    /// older than `before_id` if given.
    pub async fn audit_newest(&self, f: &AuditFilter, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, subject, detail, remote FROM audit \
             WHERE id < $1 AND ($2 = '' OR actor = $2) AND ($3 = '' OR action = $3) AND ($4 = '' OR subject = $4) \
             ORDER BY id DESC LIMIT $5",
        )
        .bind(f.before_id.unwrap_or(i64::MAX))
        .bind(f.actor.as_deref().unwrap_or(""))
        .bind(f.action.as_deref().unwrap_or(""))
        .bind(f.subject.as_deref().unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(audit_entry).collect()
    }
}

/// What [`Store::audit_newest`] keeps.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub subject: Option<String>,
    pub before_id: Option<i64>,
}

fn audit_entry(r: &AnyRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.try_get("id")?,
        at_ms: r.try_get("at_ms")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        subject: r.try_get("subject")?,
        detail: r.try_get("detail")?,
        remote: r.try_get("remote")?,
    })
}

/// Advisory lock key of the journal (PostgreSQL).
const JOURNAL_LOCK_KEY: i64 = 0x7570_6472_6674_6a6c;
/// Advisory lock key of the leader (PostgreSQL).
const LEADER_LOCK_KEY: i64 = 0x7570_6472_6674_6c64;

/// Held by the leader replica; dropping it gives up leadership.
pub struct Leadership {
    conn: Option<sqlx::AnyConnection>,
}

impl Leadership {
    /// Whether the leadership still holds (its connection is alive).
    pub async fn alive(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(c) => sqlx::Connection::ping(c).await.is_ok(),
        }
    }
}

/// Why an enrollment was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrollRefusal {
    /// Unknown, used up or expired.
    BadToken,
    AlreadyEnrolled,
}

/// The wall clock in milliseconds (the store's own bookkeeping only).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

// ------------------------------------------------------------------ DDI actions

/// Where a DDI action stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DdiState {
    /// Offered as `deploymentBase`.
    Open,
    /// Offered as `cancelAction` until the device confirms.
    Canceling,
    /// The device confirmed the cancellation.
    Canceled,
    /// Closed with success: the release is installed (`installedBase`).
    Closed,
    /// Closed with failure.
    Failed,
}

impl DdiState {
    pub fn as_str(self) -> &'static str {
        match self {
            DdiState::Open => "open",
            DdiState::Canceling => "canceling",
            DdiState::Canceled => "canceled",
            DdiState::Closed => "closed",
            DdiState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DdiState> {
        [DdiState::Open, DdiState::Canceling, DdiState::Canceled, DdiState::Closed, DdiState::Failed]
            .into_iter()
            .find(|d| d.as_str() == s)
    }

    /// Whether the action is still active (open or being canceled).
    pub fn active(self) -> bool {
        matches!(self, DdiState::Open | DdiState::Canceling)
    }
}

/// A DDI action: one assignment of a release to a hawkBit client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdiAction {
    /// Within signed 32 bits (SWUpdate reads it with `%d`).
    pub id: i64,
    pub device: String,
    pub release: String,
    pub rollout: String,
    pub state: DdiState,
    /// Its artifact's download began (an abort then can no longer cancel it).
    pub downloaded: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A device's active DDI action and its last installed one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DdiActions {
    pub active: Option<DdiAction>,
    pub installed: Option<DdiAction>,
}

impl Store {
    pub(crate) const DDI_COLUMNS: &'static str =
        "id, device, release, rollout, state, downloaded, created_ms, updated_ms";

    pub(crate) fn ddi_row(row: &AnyRow) -> Result<DdiAction> {
        let state: String = row.try_get("state")?;
        Ok(DdiAction {
            id: row.try_get::<i64, _>("id").or_else(|_| row.try_get::<i32, _>("id").map(i64::from))?,
            device: row.try_get("device")?,
            release: row.try_get("release")?,
            rollout: row.try_get("rollout")?,
            state: DdiState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("DDI action state {state:?}")))?,
            downloaded: row.try_get::<i64, _>("downloaded")? != 0,
            created_ms: row.try_get("created_ms")?,
            updated_ms: row.try_get("updated_ms")?,
        })
    }

    /// A DDI action by id.
    pub async fn ddi_action(&self, id: i64) -> Result<Option<DdiAction>> {
        let row = sqlx::query(&format!("SELECT {} FROM ddi_actions WHERE id = $1", Self::DDI_COLUMNS))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(Self::ddi_row).transpose()
    }

    /// A device's newest active action and its newest installed one.
    pub async fn ddi_actions(&self, device: &str) -> Result<DdiActions> {
        let mut out = DdiActions::default();
        for (states, slot) in [("('open', 'canceling')", 0), ("('closed')", 1)] {
            let row = sqlx::query(&format!(
                "SELECT {} FROM ddi_actions WHERE device = $1 AND state IN {states} ORDER BY id DESC LIMIT 1",
                Self::DDI_COLUMNS
            ))
            .bind(device)
            .fetch_optional(&self.reads)
            .await?;
            let action = row.as_ref().map(Self::ddi_row).transpose()?;
            if slot == 0 {
                out.active = action;
            } else {
                out.installed = action;
            }
        }
        Ok(out)
    }
}
