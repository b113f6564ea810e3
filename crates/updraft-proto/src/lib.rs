//! Wire types of Updraft's HTTP APIs: what devices (the agent) and operators
//! (the CLI, CI, dashboards) send and receive. Only serde lives here; the
//! server converts these to the cores' types and back.
//!
//! JSON field names are camelCase. Every request type rejects unknown
//! fields, so a typo is a 400, not a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use updraft_types::{DeviceId, ReleaseId, RolloutId, Sha256Digest};

/// Paths of the device API.
pub mod paths {
    pub const ENROLL: &str = "/api/v1/device/enroll";
    pub const CHECK_IN: &str = "/api/v1/device/check-in";
    pub const EVENTS: &str = "/api/v1/device/events";
    pub const HEALTH: &str = "/api/v1/device/health";
    /// `GET /api/v1/artifacts/{sha256}`: a blob, with Range and ETag.
    pub const ARTIFACTS: &str = "/api/v1/artifacts";
}

/// Limits on what a device may send, enforced by the server (422
/// `too-large` for a count or a length, 422 `invalid-field` for a value,
/// 429 for a rate; 413 only for a whole body over the limit) and listed in docs/api.md.
pub mod limits {
    /// Ids and names (device, family, hardware, region, tag, channel,
    /// component, attribute key): enough for any naming scheme, small enough to index.
    pub const MAX_ID_BYTES: usize = 128;
    /// Tags a device declares at enrollment (as many as an operator may set).
    pub const MAX_TAGS: usize = 64;
    /// Components (bootloader, modem...) a device reports.
    pub const MAX_COMPONENTS: usize = 64;
    /// Time zones span UTC-12:00 to UTC+14:00.
    pub const MIN_UTC_OFFSET_MIN: i16 = -720;
    pub const MAX_UTC_OFFSET_MIN: i16 = 840;
    /// Custom metrics in one health report.
    pub const MAX_METRICS: usize = 64;
    /// A metric's name (`tempC`, `modem.rssi`).
    pub const MAX_METRIC_NAME_BYTES: usize = 64;
    /// Boots or crashes one health report may claim (per period).
    pub const MAX_HEALTH_COUNT: u32 = 100_000;
    /// A health report's period: up to a week.
    pub const MAX_HEALTH_PERIOD_S: u32 = 7 * 86_400;
    /// An install event's detail (a failure's reason and log tail), as the
    /// device history keeps it.
    pub const MAX_EVENT_DETAIL_BYTES: usize = 64 * 1024;
    /// Health reports one device may add per hour (each one is journaled).
    pub const MAX_HEALTH_REPORTS_PER_HOUR: u32 = 60;
    /// Install events one device may add per hour (an update sends about six).
    pub const MAX_EVENTS_PER_HOUR: u32 = 120;
    /// Requests per second one device may make, sustained, and in a burst.
    pub const DEVICE_REQUESTS_PER_S: u32 = 2;
    pub const DEVICE_REQUEST_BURST: u32 = 60;
    /// Requests per second one API token may make, sustained, and in a burst.
    pub const TOKEN_REQUESTS_PER_S: u32 = 100;
    pub const TOKEN_REQUEST_BURST: u32 = 1000;
}

/// The rules of `limits` as JSON Schema, for the OpenAPI document.
#[cfg(feature = "schemars")]
pub mod schema {
    use super::limits::*;

    /// An id, or nothing (a region may be empty).
    pub const OPTIONAL_ID_PATTERN: &str = r"^$|^(?!.*\.\.)[A-Za-z0-9._@+:-]{1,128}$";
    /// A metric's name: the id characters, at most 64.
    pub const METRIC_NAME_PATTERN: &str = r"^(?!.*\.\.)[A-Za-z0-9._@+:-]{1,64}$";

    /// Component name → semantic version.
    pub fn components(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "maxProperties": MAX_COMPONENTS,
            "propertyNames": { "pattern": updraft_types::ID_PATTERN },
            "additionalProperties": { "type": "string", "pattern": updraft_types::VERSION_PATTERN },
        })
    }

    /// Attribute name → value (inventory scripts, operator attributes).
    pub fn inventory(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "maxProperties": super::MAX_INVENTORY_ATTRIBUTES,
            "propertyNames": { "pattern": updraft_types::ID_PATTERN },
            "additionalProperties": { "type": "string", "minLength": 1, "maxLength": super::MAX_INVENTORY_VALUE_LEN },
        })
    }

    /// Any JSON object.
    pub fn object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "object" })
    }

    /// Metric name → value.
    pub fn metrics(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "maxProperties": MAX_METRICS,
            "propertyNames": { "pattern": METRIC_NAME_PATTERN },
            "additionalProperties": { "type": "number" },
        })
    }
}

/// The body of every 4xx and 5xx response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// A stable, kebab-case code (`unauthorized`, `forbidden`, `conflict`...).
    pub error: String,
    /// What was wrong, and what to do where that is known.
    pub message: String,
}

// ------------------------------------------------------------------ devices

/// `POST /api/v1/device/enroll`: a device registers with an enrollment token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollRequest {
    pub enrollment_token: String,
    pub device_id: DeviceId,
    #[cfg_attr(feature = "schemars", schemars(pattern(updraft_types::ID_PATTERN)))]
    pub family: String,
    #[cfg_attr(feature = "schemars", schemars(pattern(updraft_types::ID_PATTERN)))]
    pub hardware: String,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(pattern(schema::OPTIONAL_ID_PATTERN)))]
    pub region: String,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(length(max = 64), inner(pattern(updraft_types::ID_PATTERN))))]
    pub tags: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(pattern(updraft_types::ID_PATTERN)))]
    pub channel: Option<String>,
    /// The release it runs, if known.
    #[serde(default)]
    pub release: Option<ReleaseId>,
    /// Versions of other components (`bootloader` → `1.4.2`).
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(schema_with = "schema::components"))]
    pub components: BTreeMap<String, String>,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(range(min = -720, max = 840)))]
    pub utc_offset_min: i16,
}

/// The answer to an enrollment: the device's own token, shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct EnrollResponse {
    pub device_id: DeviceId,
    pub device_token: String,
    /// `active`, or `pending` until an operator accepts the device.
    #[serde(default = "active")]
    pub status: String,
}

fn active() -> String {
    "active".into()
}

/// Which slot booted and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum BootState {
    /// Running a committed slot.
    Good,
    /// Running a slot on trial, not yet committed.
    Trial,
    /// Back on the old slot after a failed trial.
    Reverted,
}

/// `POST /api/v1/device/check-in`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckInRequest {
    pub release: Option<ReleaseId>,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(pattern(updraft_types::ID_PATTERN)))]
    pub slot: Option<String>,
    #[serde(default)]
    pub security_version: Option<u64>,
    #[serde(default)]
    pub boot_state: Option<BootState>,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(schema_with = "schema::components"))]
    pub components: BTreeMap<String, String>,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(range(min = -720, max = 840)))]
    pub utc_offset_min: Option<i16>,
    /// The agent's version.
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(pattern(updraft_types::ID_PATTERN)))]
    pub agent_version: Option<String>,
    /// Free bytes where the agent stages downloads.
    #[serde(default)]
    pub free_bytes: Option<u64>,
    /// The device's own attributes, from its inventory scripts
    /// (at most [`MAX_INVENTORY_ATTRIBUTES`]).
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(schema_with = "schema::inventory"))]
    pub attributes: BTreeMap<String, String>,
}

/// Most attributes a device reports at a check-in.
pub const MAX_INVENTORY_ATTRIBUTES: usize = 64;
/// Longest attribute value (a device's or an operator's), in characters as
/// JSON Schema's `maxLength` counts them; the agent cuts a value to this
/// many bytes, which is never more characters. Values are never empty.
pub const MAX_INVENTORY_VALUE_LEN: usize = 1024;

/// What a device should install.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub release: ReleaseId,
    pub rollout: RolloutId,
    /// `rollout`, `stepping_stone` or `rollback`.
    pub reason: String,
    /// Where to download the bundle (absolute, or relative to the server).
    pub bundle_url: String,
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// The answer to a check-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CheckInResponse {
    pub assignment: Option<Assignment>,
    /// Why there is no assignment (`up_to_date`, `not_in_wave`, `paced`,
    /// `held_back`, `pending_acceptance`...).
    pub reason: Option<String>,
    /// The same in words (`held back: requires bootloader >=1.4 (device has 1.2.0)`).
    #[serde(default)]
    pub detail: Option<String>,
    /// When to check in again.
    pub next_check_in_s: u32,
}

pub use updraft_types::InstallEvent;

/// `POST /api/v1/device/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventRequest {
    pub release: ReleaseId,
    pub event: InstallEvent,
    /// A failure's reason and the tail of its log (at most 64 KiB; the
    /// schema counts characters, a quarter of that).
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(length(max = 16384)))]
    pub detail: Option<String>,
}

/// `POST /api/v1/device/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthRequest {
    #[cfg_attr(feature = "schemars", schemars(range(min = 1, max = 604800)))]
    pub period_s: u32,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(range(max = 100000)))]
    pub boots: u32,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(range(max = 100000)))]
    pub crashes: u32,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(schema_with = "schema::metrics"))]
    pub metrics: BTreeMap<String, f64>,
}

// ------------------------------------------------------------------ operators

/// A role an API token carries. Each includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    /// Publish and promote releases.
    Releaser,
    /// Run rollouts.
    Operator,
    /// Tokens, enrollment, trust.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Releaser => "releaser",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "releaser" => Some(Role::Releaser),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether a token with this role may do what `needed` allows.
    /// Releaser and operator are separate duties; admin may do everything.
    pub fn allows(self, needed: Role) -> bool {
        self == needed || self == Role::Admin || needed == Role::Viewer
    }
}

/// `POST /api/v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    #[cfg_attr(feature = "schemars", schemars(pattern(updraft_types::ID_PATTERN)))]
    pub name: String,
    pub role: Role,
}

/// A created API token; the secret is shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub token: String,
}

/// An API token as listed (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
    pub revoked: bool,
}

/// `POST /api/v1/builds`: a pipeline run's outcome (`updraft pipeline` posts it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildRequest {
    /// The project's name (`[project] name` of updraft.toml).
    #[cfg_attr(feature = "schemars", schemars(pattern(updraft_types::ID_PATTERN)))]
    pub project: String,
    /// The commit the run built.
    #[cfg_attr(feature = "schemars", schemars(length(min = 1, max = 128)))]
    pub commit: String,
    /// Whether every gate passed.
    pub passed: bool,
    /// The run's report, stored as sent (stages, gates, tests, builds, bundles).
    #[cfg_attr(feature = "schemars", schemars(schema_with = "schema::object"))]
    pub report: serde_json::Value,
}

/// The answer to `POST /api/v1/builds`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct BuildCreated {
    /// The run's id in the build history.
    pub id: i64,
}

/// `POST /api/v1/enrollment-tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEnrollmentTokenRequest {
    /// How many devices may enroll with it.
    #[cfg_attr(feature = "schemars", schemars(range(min = 1, max = 1000000)))]
    pub uses: u32,
    /// Seconds until it expires.
    #[cfg_attr(feature = "schemars", schemars(range(min = 1, max = 31622400)))]
    pub expires_in_s: u64,
    /// Devices enrolled with it wait as `pending` until an operator accepts them.
    #[serde(default)]
    pub require_accept: bool,
}

/// `POST /api/v1/sign-in-links`: a one-time dashboard sign-in link for
/// the calling token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SignInLink {
    /// The link's path on the server (`/sign-in/link/upl_...`); it works once.
    pub path: String,
    pub expires_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreatedEnrollmentToken {
    pub token: String,
    pub uses: u32,
    pub expires_ms: i64,
    pub require_accept: bool,
}

/// `POST /api/v1/devices`: register a device by hand (a hawkBit DDI client,
/// or an Updraft agent given its token out of band).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDeviceRequest {
    pub device_id: DeviceId,
    #[cfg_attr(feature = "schemars", schemars(pattern(updraft_types::ID_PATTERN)))]
    pub family: String,
    #[cfg_attr(feature = "schemars", schemars(pattern(updraft_types::ID_PATTERN)))]
    pub hardware: String,
    #[serde(default)]
    pub region: String,
    /// `updraft` (default) or `ddi`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// The release it runs now (its last known good, if the server has it).
    #[serde(default)]
    pub release: Option<ReleaseId>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The device registered and its token (shown once): a DDI client sends it
/// as `Authorization: TargetToken <token>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreatedDevice {
    pub device_id: DeviceId,
    pub device_token: String,
    pub protocol: String,
}

/// A published release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Release {
    pub id: ReleaseId,
    pub name: String,
    pub version: String,
    pub family: String,
    pub hardware: Vec<String>,
    pub security_version: u64,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub manifest_sha256: Sha256Digest,
    pub signers: Vec<String>,
    pub builder_id: String,
    pub channels: Vec<String>,
    pub published_ms: i64,
    pub published_by: String,
}

/// `POST /api/v1/channels/{channel}/releases`: promote a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromoteRequest {
    pub release: ReleaseId,
}

/// `POST /api/v1/rollouts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRolloutRequest {
    pub id: RolloutId,
    pub release: ReleaseId,
    /// The plan, in the rollout engine's TOML.
    pub plan: String,
    /// Start at once (default true).
    #[serde(default = "yes")]
    pub start: bool,
}

fn yes() -> bool {
    true
}

/// A device as operators see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: DeviceId,
    pub family: String,
    pub hardware: String,
    pub region: String,
    pub tags: Vec<String>,
    pub channel: Option<String>,
    pub release: Option<ReleaseId>,
    pub last_known_good: Option<ReleaseId>,
    pub enrolled_ms: i64,
    pub last_seen_ms: Option<i64>,
    /// `active`, `pending` or `decommissioned`.
    pub status: String,
    /// Checked in within two poll intervals.
    pub online: bool,
    pub check_ins: i64,
    /// Versions of other components, as last reported.
    pub components: BTreeMap<String, String>,
    /// Attributes set by operators.
    pub attributes: BTreeMap<String, String>,
    /// What the device last reported about itself (agent version, slot,
    /// boot state, security version, free space, its own attributes).
    pub inventory: BTreeMap<String, String>,
    /// How it talks to the server: `updraft` (the Updraft agent) or `ddi`
    /// (a hawkBit DDI client: SWUpdate, RAUC).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Newest first (`GET /api/v1/devices/{id}` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<DeviceHistoryEntry>,
}

fn default_protocol() -> String {
    "updraft".into()
}

/// One entry of a device's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceHistoryEntry {
    pub at_ms: i64,
    /// `enrolled`, `check_in`, `assigned`, an install event, `accepted`, `decommissioned`, `changed`.
    pub kind: String,
    pub release: Option<ReleaseId>,
    /// A failure's reason and log tail, or what changed.
    pub detail: String,
}

/// `GET /api/v1/devices`: one page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DevicePage {
    pub devices: Vec<Device>,
    /// Devices matching the filter, on every page (a lower bound when
    /// `totalIsLowerBound`).
    pub total: u64,
    /// The filter needed more rows read than one request reads to count
    /// them all (terms on tags, attributes, inventory or components with
    /// many candidates): `total` counts the matches seen so far.
    #[serde(default)]
    pub total_is_lower_bound: bool,
    /// The `after` cursor of the next page; none on the last. A page that
    /// ran out of its read budget may hold fewer devices than asked and
    /// still have a next one.
    pub next: Option<String>,
}

/// `PATCH /api/v1/devices/{id}`: tags and attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceChange {
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(length(max = 64), inner(pattern(updraft_types::ID_PATTERN))))]
    pub add_tags: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(inner(pattern(updraft_types::ID_PATTERN))))]
    pub remove_tags: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(schema_with = "schema::inventory"))]
    pub set_attributes: BTreeMap<String, String>,
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(inner(pattern(updraft_types::ID_PATTERN))))]
    pub remove_attributes: Vec<String>,
}

/// One audit log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    /// `token:NAME`, `device:ID` or `system`.
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    pub remote: String,
}
