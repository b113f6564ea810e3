//! The hawkBit Direct Device Integration (DDI) API v1, for devices that run
//! SWUpdate's suricatta or rauc-hawkbit-updater: they take part in the same
//! rollouts as the Updraft agent, unchanged.
//!
//! A root poll is a check-in: the controller decides as for any device, and
//! the decision becomes a DDI action (`ddi_actions`, an id of 32 bits) that
//! the root offers as `deploymentBase`, or, once an abort or a rollback
//! overtakes it before its download began, as `cancelAction`. A device held
//! back (not in its wave yet, paused, outside its window) gets no link at
//! all: SWUpdate closes an action it is told to `skip` as a success.
//! Feedback becomes install events. The paths are hawkBit's exactly,
//! because the clients build them rather than follow links.
//! docs/hawkbit-ddi.md is the user's side of this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use updraft_proto::CheckInRequest;
use updraft_rollout::{Decision, Output, RolloutState};
use updraft_store::{DdiAction, DdiActions, DdiState, DeviceRow, DeviceStatus, PROTOCOL_DDI};
use updraft_types::{DeviceId, InstallEvent, ReleaseId, RolloutId, Sha256Digest};

use crate::api::{apply, device_entry, record_event};
use crate::error::{ApiError, ApiResult};
use crate::journal::Entry;
use crate::{now_ms, App};

/// How the DDI API is offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdiConfig {
    /// The tenant segment of the paths, compared without case (`DEFAULT`).
    pub tenant: String,
    /// `Authorization: GatewayToken <key>`: any device of the tenant may
    /// poll with it (off when `None`).
    pub gateway_token: Option<String>,
    /// Register a device unknown to the server when it polls with the
    /// gateway token, in this family (off when `None`).
    pub auto_register_family: Option<String>,
}

impl Default for DdiConfig {
    fn default() -> Self {
        DdiConfig { tenant: "DEFAULT".into(), gateway_token: None, auto_register_family: None }
    }
}

/// The names of bundle images a DDI client installs, with the file
/// extension it needs: SWUpdate installs `.swu`, RAUC `.raucb`.
pub const DDI_IMAGES: [(&str, &str); 2] = [("swu", "swu"), ("raucb", "raucb")];

/// The release metadata kind that holds a release's DDI artifact.
pub const ARTIFACT_META: &str = "ddi";

/// A release's artifact for DDI clients: one of its images, kept as a blob
/// of its own, with the hashes DDI clients check (computed at publish).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DdiArtifact {
    /// The bundle image it is (`swu` or `raucb`).
    pub image: String,
    /// The file name clients see (`sensor-fw-2.3.1.swu`).
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub sha1: String,
    pub md5: String,
}

/// What this process keeps of DDI devices and releases.
#[derive(Default)]
pub struct Cache {
    /// Device id → its actions and whether the server wants its attributes.
    devices: std::sync::Mutex<HashMap<String, Known>>,
    /// Release id → its DDI artifact (or none).
    artifacts: std::sync::RwLock<HashMap<String, Option<Arc<DdiArtifact>>>>,
}

#[derive(Clone, Debug, Default)]
struct Known {
    actions: DdiActions,
    /// Whether the root offers `configData` (no attributes yet).
    wants_config: bool,
    /// Whether the row says `ddi` already.
    marked: bool,
}

pub fn router() -> Router<Arc<App>> {
    const BASE: &str = "/{tenant}/controller/v1/{controller}";
    let p = |rest: &str| format!("{BASE}{rest}");
    Router::new()
        .route(BASE, get(root))
        .route(&p("/deploymentBase/{action}"), get(deployment_base))
        .route(&p("/deploymentBase/{action}/feedback"), post(deployment_feedback))
        .route(&p("/cancelAction/{action}"), get(cancel_action))
        .route(&p("/cancelAction/{action}/feedback"), post(cancel_feedback))
        .route(&p("/installedBase/{action}"), get(installed_base))
        .route(&p("/configData"), put(config_data))
        .route(&p("/softwaremodules/{module}/artifacts"), get(artifacts))
        .route(&p("/softwaremodules/{module}/artifacts/{file}"), get(artifact))
}

// ------------------------------------------------------------------ auth

/// Checks the tenant and the caller, and returns the device. A
/// TargetToken must be the device's own; the gateway token may speak for
/// any device of the tenant (and register an unknown one, if allowed).
async fn authenticate(app: &App, headers: &HeaderMap, tenant: &str, controller: &str) -> ApiResult<DeviceId> {
    let cfg = &app.ddi;
    if !tenant.eq_ignore_ascii_case(&cfg.tenant) {
        return Err(ApiError::not_found(format!(
            "no tenant {tenant:?}; hint: this server's DDI tenant is {}",
            cfg.tenant
        )));
    }
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let device = if let Some(secret) = value.strip_prefix("TargetToken ") {
        let id = crate::api::device_for_token(app, secret.trim()).await?.ok_or_else(ApiError::unauthorized)?;
        if id.as_str() != controller {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this TargetToken belongs to another controller id",
            ));
        }
        id
    } else if let Some(key) = value.strip_prefix("GatewayToken ") {
        let Some(expected) = &cfg.gateway_token else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "gateway tokens are off on this server; hint: use the device's TargetToken",
            ));
        };
        if !constant_time_eq(key.trim().as_bytes(), expected.as_bytes()) {
            return Err(ApiError::unauthorized());
        }
        crate::api::check_id("controller id", controller)?;
        let id = DeviceId::new(controller);
        if !known(app, &id) {
            match app.store.device(controller).await? {
                Some(d) if d.status != DeviceStatus::Decommissioned => crate::devices::seed(app, d),
                Some(_) => return Err(ApiError::forbidden(format!("device {controller} is decommissioned"))),
                None => register(app, &id).await?,
            }
        }
        id
    } else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: TargetToken <device token> (or GatewayToken <key>)",
        ));
    };
    let r = app.rates;
    app.limit(
        &format!("device:{device}"),
        crate::ratelimit::Rate::per_second(r.device_per_s, r.device_burst),
        &format!("more than {} requests a second from this device", r.device_per_s),
    )?;
    crate::api::note_actor(&crate::api::Actor::Device { id: device.clone() });
    Ok(device)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn known(app: &App, id: &DeviceId) -> bool {
    app.ddi_cache.devices.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id.as_str())
}

/// Registers a device that polled with the gateway token (if allowed): it
/// joins the configured family with hardware `unknown` until its
/// `configData` names it.
async fn register(app: &App, id: &DeviceId) -> ApiResult<()> {
    let Some(family) = &app.ddi.auto_register_family else {
        return Err(ApiError::not_found(format!(
            "unknown controller {id}; hint: register it (`updraft devices create {id} --ddi ...`) or start the server with --ddi-auto-register FAMILY"
        )));
    };
    let row = DeviceRow {
        protocol: PROTOCOL_DDI.into(),
        enrolled_ms: now_ms(),
        ..DeviceRow::new(id.as_str(), family, "unknown")
    };
    // It has no token of its own: a value no token hashes to.
    let hash = format!("gateway:{id}");
    let mut change = crate::core::Change::begin(app).await?;
    change.tx().insert_devices(&[(row.clone(), hash)]).await?;
    change.apply(device_entry(&row)).await?;
    change.audit(
        "system",
        "device.ddi-register",
        id.as_str(),
        format!("{family}/unknown (gateway token)"),
        unspecified(),
    );
    change.commit().await?;
    crate::devices::seed(app, row);
    Ok(())
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

// ------------------------------------------------------------------ state

/// The device's actions, from this process's cache or the database (always
/// the database when several servers share it).
async fn state(app: &App, device: &DeviceId) -> ApiResult<Known> {
    if !app.replicated {
        if let Some(k) = app.ddi_cache.devices.lock().unwrap_or_else(|e| e.into_inner()).get(device.as_str()) {
            return Ok(k.clone());
        }
    }
    let actions = app.store.ddi_actions(device.as_str()).await?;
    let row = app.store.device(device.as_str()).await?.ok_or_else(ApiError::unauthorized)?;
    let k = Known { actions, wants_config: row.attributes.is_empty(), marked: row.protocol == PROTOCOL_DDI };
    remember(app, device, k.clone());
    Ok(k)
}

fn remember(app: &App, device: &DeviceId, k: Known) {
    app.ddi_cache.devices.lock().unwrap_or_else(|e| e.into_inner()).insert(device.to_string(), k);
}

/// Saves an action's new state (database first, then the cache).
async fn save(app: &App, device: &DeviceId, known: &mut Known, mut a: DdiAction) -> ApiResult<()> {
    a.updated_ms = now_ms();
    let mut tx = app.store.begin_write().await?;
    tx.set_ddi_action(&a).await?;
    tx.commit().await?;
    if a.state == DdiState::Closed {
        known.actions.installed = Some(a.clone());
    }
    known.actions.active = a.state.active().then_some(a);
    remember(app, device, known.clone());
    Ok(())
}

/// The DDI artifact of `release`, if it has one.
pub(crate) async fn artifact_of(app: &App, release: &str) -> ApiResult<Option<Arc<DdiArtifact>>> {
    if let Some(a) = app.ddi_cache.artifacts.read().unwrap_or_else(|e| e.into_inner()).get(release) {
        return Ok(a.clone());
    }
    let found = match app.store.release_meta(release, ARTIFACT_META).await? {
        Some(text) => Some(Arc::new(
            serde_json::from_str::<DdiArtifact>(&text)
                .map_err(|e| ApiError::internal(format!("release {release}: DDI artifact: {e}")))?,
        )),
        None => None,
    };
    app.ddi_cache.artifacts.write().unwrap_or_else(|e| e.into_inner()).insert(release.to_owned(), found.clone());
    Ok(found)
}

/// The action `id` of `device`, or 404 (also for another device's, as hawkBit).
async fn action_of(app: &App, device: &DeviceId, known: &Known, id: &str) -> ApiResult<DdiAction> {
    let not_found = || ApiError::not_found(format!("no action {id} for this controller"));
    let n: i64 = id.parse().map_err(|_| not_found())?;
    for a in [&known.actions.active, &known.actions.installed].into_iter().flatten() {
        if a.id == n {
            return Ok(a.clone());
        }
    }
    match app.store.ddi_action(n).await? {
        Some(a) if a.device == device.as_str() => Ok(a),
        _ => Err(not_found()),
    }
}

/// Refuses a rollout of `release` when DDI devices of its family would be
/// in it and the release has nothing a DDI client can install.
pub(crate) async fn check_servable(app: &App, release: &updraft_store::ReleaseRow) -> ApiResult<()> {
    if artifact_of(app, &release.id).await?.is_some() {
        return Ok(());
    }
    let q = updraft_store::DeviceQuery {
        equal: vec![("family", release.family.clone()), ("protocol", PROTOCOL_DDI.into()), ("status", "active".into())],
        ..Default::default()
    };
    let n = app.store.device_count_where(&q).await?;
    if n == 0 {
        return Ok(());
    }
    Err(ApiError::unprocessable(
        "release-not-ddi",
        format!(
            "release {} has no image a hawkBit DDI client installs, and {n} DDI device(s) of family {} would take part; \
             hint: build the bundle with --image swu=update.swu (SWUpdate) or --image raucb=update.raucb (RAUC)",
            release.id, release.family
        ),
    ))
}

// ------------------------------------------------------------------ root poll

#[derive(Debug, PartialEq, Eq)]
enum Link {
    None,
    Deployment(DdiAction),
    Cancel(DdiAction),
}

async fn root(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((tenant, controller)): Path<(String, String)>,
) -> ApiResult<Response> {
    let device = authenticate(&app, &headers, &tenant, &controller).await?;
    let (link, known) = poll(&app, &device).await?;
    let base = base_url(&app, &headers, &tenant, &controller);
    let mut links = serde_json::Map::new();
    match &link {
        Link::Deployment(a) => {
            let art = artifact_of(&app, &a.release).await?;
            let c = representation(a, art.as_deref());
            links.insert("deploymentBase".into(), json!({ "href": format!("{base}/deploymentBase/{}?c={c}", a.id) }));
        }
        Link::Cancel(a) => {
            links.insert("cancelAction".into(), json!({ "href": format!("{base}/cancelAction/{}", a.id) }));
        }
        Link::None => {}
    }
    if let Some(i) = &known.actions.installed {
        let active = known.actions.active.as_ref().map(|a| a.id);
        if active != Some(i.id) {
            links.insert("installedBase".into(), json!({ "href": format!("{base}/installedBase/{}", i.id) }));
        }
    }
    if known.wants_config {
        links.insert("configData".into(), json!({ "href": format!("{base}/configData") }));
    }
    let body = json!({
        "config": { "polling": { "sleep": sleep_text(app.poll_interval_s) } },
        "_links": links,
    });
    Ok(hal(&headers, &body))
}

/// The polling interval as hawkBit's clients parse it: `HH:MM:SS`, below 24 h.
pub fn sleep_text(seconds: u32) -> String {
    let s = seconds.clamp(1, 24 * 3600 - 1);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The `c` parameter: changes whenever the deployment served changes.
fn representation(a: &DdiAction, art: Option<&DdiArtifact>) -> i32 {
    let text = format!("{}|{}|{}", a.id, a.release, art.map_or("", |x| x.sha256.as_str()));
    (updraft_rollout::engine::fnv1a(&text) as u32 & 0x7fff_ffff) as i32
}

/// A check-in for the device, and what the root links to.
async fn poll(app: &App, device: &DeviceId) -> ApiResult<(Link, Known)> {
    let mut known = state(app, device).await?;
    if !known.marked {
        mark_ddi(app, device).await?;
        known.marked = true;
        remember(app, device, known.clone());
    }
    let release = app.lock_core().await.controller.device_release(device);
    let req = check_in_request(release.clone());
    let seen = crate::devices::check_in(app, device, &req).await?;
    if seen.status == DeviceStatus::Pending {
        return Ok((Link::None, known));
    }
    let outputs = apply(app, Entry::CheckIn { device: device.clone(), release: release.clone() }).await?;
    let decision = outputs.into_iter().find_map(|o| match o {
        Output::Decision { decision, .. } => Some(decision),
        _ => None,
    });
    let link = match (known.actions.active.clone(), decision) {
        (Some(a), _) if a.state == DdiState::Canceling => Link::Cancel(a),
        (Some(a), Some(Decision::Install { release: r, .. })) if r.as_str() == a.release => Link::Deployment(a),
        // Begun: it finishes (and reports) whatever else happened meanwhile.
        (Some(a), _) if a.downloaded => Link::Deployment(a),
        (Some(a), Some(Decision::Install { .. })) => cancel(app, device, &mut known, a).await?,
        (Some(a), _) => {
            let rollout = RolloutId::new(a.rollout.clone());
            let state = app.lock_core().await.controller.rollout_state(&rollout).cloned();
            match state {
                // Held back while paused; offered again on resume.
                Some(RolloutState::Paused { .. } | RolloutState::Created) => Link::None,
                _ if release.as_ref().is_some_and(|r| r.as_str() == a.release) => {
                    // It runs the release already (installed another way).
                    let mut done = a;
                    done.state = DdiState::Closed;
                    save(app, device, &mut known, done).await?;
                    Link::None
                }
                _ => cancel(app, device, &mut known, a).await?,
            }
        }
        (None, Some(Decision::Install { release: r, rollout, reason })) => {
            if artifact_of(app, r.as_str()).await?.is_none() {
                crate::devices::history_soon(
                    app,
                    device.as_str(),
                    "ddi",
                    Some(r.as_str()),
                    "assigned, but the release has no image a DDI client installs (swu or raucb); no deploymentBase offered",
                );
                Link::None
            } else {
                let a = open_action(app, device, &mut known, &r, &rollout).await?;
                let why = match reason {
                    updraft_rollout::InstallReason::Rollout => "rollout",
                    updraft_rollout::InstallReason::SteppingStone { .. } => "stepping_stone",
                    updraft_rollout::InstallReason::Rollback { .. } => "rollback",
                };
                crate::devices::assigned(app, device, &r, &format!("{why} (DDI action {})", a.id)).await?;
                Link::Deployment(a)
            }
        }
        (None, _) => Link::None,
    };
    Ok((link, known))
}

fn check_in_request(release: Option<ReleaseId>) -> CheckInRequest {
    CheckInRequest {
        release,
        slot: None,
        security_version: None,
        boot_state: None,
        components: Default::default(),
        utc_offset_min: None,
        agent_version: None,
        free_bytes: None,
        attributes: Default::default(),
    }
}

async fn mark_ddi(app: &App, device: &DeviceId) -> ApiResult<()> {
    let Some(mut row) = app.store.device(device.as_str()).await? else { return Err(ApiError::unauthorized()) };
    if row.protocol == PROTOCOL_DDI {
        return Ok(());
    }
    row.protocol = PROTOCOL_DDI.into();
    let mut tx = app.store.begin_write().await?;
    tx.set_device_profile(&row).await?;
    tx.commit().await?;
    Ok(())
}

async fn open_action(
    app: &App,
    device: &DeviceId,
    known: &mut Known,
    release: &ReleaseId,
    rollout: &RolloutId,
) -> ApiResult<DdiAction> {
    let mut tx = app.store.begin_write().await?;
    let a = tx.insert_ddi_action(device.as_str(), release.as_str(), rollout.as_str(), now_ms()).await?;
    tx.commit().await?;
    known.actions.active = Some(a.clone());
    remember(app, device, known.clone());
    Ok(a)
}

async fn cancel(app: &App, device: &DeviceId, known: &mut Known, mut a: DdiAction) -> ApiResult<Link> {
    a.state = DdiState::Canceling;
    save(app, device, known, a.clone()).await?;
    crate::devices::history_soon(
        app,
        device.as_str(),
        "ddi",
        Some(&a.release),
        &format!("action {} canceled before its download began (cancelAction offered)", a.id),
    );
    Ok(Link::Cancel(a))
}

// ------------------------------------------------------------------ deployments

#[derive(Deserialize)]
struct HistoryQuery {
    #[serde(rename = "actionHistory")]
    action_history: Option<i64>,
}

async fn deployment_base(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((tenant, controller, action)): Path<(String, String, String)>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Response> {
    let device = authenticate(&app, &headers, &tenant, &controller).await?;
    let known = state(&app, &device).await?;
    let a = action_of(&app, &device, &known, &action).await?;
    if a.state != DdiState::Open {
        return Err(ApiError::not_found(format!("action {action} is not open (it is {})", a.state.as_str())));
    }
    let body = deployment(&app, &headers, &tenant, &controller, &a, q.action_history).await?;
    Ok(hal(&headers, &body))
}

async fn installed_base(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((tenant, controller, action)): Path<(String, String, String)>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Response> {
    let device = authenticate(&app, &headers, &tenant, &controller).await?;
    let known = state(&app, &device).await?;
    let a = action_of(&app, &device, &known, &action).await?;
    if a.state != DdiState::Closed {
        return Err(ApiError::not_found(format!("action {action} did not finish with success")));
    }
    let body = deployment(&app, &headers, &tenant, &controller, &a, q.action_history).await?;
    Ok(hal(&headers, &body))
}

/// The deployment of action `a`: one chunk with one artifact (what
/// rauc-hawkbit-updater requires), `forced`, ids as digit strings.
async fn deployment(
    app: &App,
    headers: &HeaderMap,
    tenant: &str,
    controller: &str,
    a: &DdiAction,
    history: Option<i64>,
) -> ApiResult<Value> {
    let art = artifact_of(app, &a.release)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("release {} has no DDI artifact", a.release)))?;
    let release = app
        .store
        .release(&a.release)
        .await?
        .ok_or_else(|| ApiError::internal(format!("action {}: release {} is missing", a.id, a.release)))?;
    let base = base_url(app, headers, tenant, controller);
    let mut body = json!({
        "id": a.id.to_string(),
        "deployment": {
            "download": "forced",
            "update": "forced",
            "chunks": [{
                "part": "os",
                "version": release.version,
                "name": release.name,
                "artifacts": [artifact_json(&base, a.id, &art)],
            }],
        },
    });
    if let Some(n) = history.filter(|n| *n > 0) {
        let entries = app.store.history(controller, n.min(50)).await?;
        let messages: Vec<String> = entries
            .iter()
            .filter(|h| h.release.as_deref() == Some(a.release.as_str()))
            .map(|h| format!("{}: {}", h.kind, h.detail))
            .collect();
        if !messages.is_empty() {
            let status = match a.state {
                DdiState::Open | DdiState::Canceling => "RUNNING",
                DdiState::Canceled => "CANCELED",
                DdiState::Closed => "FINISHED",
                DdiState::Failed => "ERROR",
            };
            body["actionHistory"] = json!({ "status": status, "messages": messages });
        }
    }
    Ok(body)
}

fn artifact_json(base: &str, module: i64, art: &DdiArtifact) -> Value {
    let href = format!("{base}/softwaremodules/{module}/artifacts/{}", art.filename);
    let secure = href.starts_with("https://");
    let (dl, md) = if secure { ("download", "md5sum") } else { ("download-http", "md5sum-http") };
    json!({
        "filename": art.filename,
        "hashes": { "sha1": art.sha1, "md5": art.md5, "sha256": art.sha256 },
        "size": art.size,
        "_links": {
            dl: { "href": href },
            md: { "href": format!("{href}.MD5SUM") },
        },
    })
}

/// Feedback as the clients send it: hawkBit's fields, and legacy `id` and
/// `time` (ignored, as are any other fields).
#[derive(Debug, Deserialize)]
struct Feedback {
    status: FeedbackStatus,
}

#[derive(Debug, Deserialize)]
struct FeedbackStatus {
    execution: String,
    result: FeedbackResult,
    #[serde(default)]
    details: Vec<Value>,
    #[serde(default)]
    code: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct FeedbackResult {
    finished: String,
    #[serde(default)]
    progress: Option<Value>,
}

const EXECUTIONS: [&str; 8] =
    ["closed", "proceeding", "canceled", "scheduled", "rejected", "resumed", "downloaded", "download"];
const FINISHED: [&str; 3] = ["success", "failure", "none"];

fn parse_feedback(body: &[u8]) -> ApiResult<Feedback> {
    let f: Feedback = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid feedback: {e}; hint: {{\"status\": {{\"execution\": ..., \"result\": {{\"finished\": ...}}}}}}"
        ))
    })?;
    if !EXECUTIONS.contains(&f.status.execution.as_str()) {
        return Err(ApiError::bad_request(format!(
            "status.execution {:?} is not one of {}",
            f.status.execution,
            EXECUTIONS.join(", ")
        )));
    }
    if !FINISHED.contains(&f.status.result.finished.as_str()) {
        return Err(ApiError::bad_request(format!(
            "status.result.finished {:?} is not one of {}",
            f.status.result.finished,
            FINISHED.join(", ")
        )));
    }
    Ok(f)
}

/// The details as one text (the failure log kept with the device), cut
/// from the front to the event detail's limit.
fn details_text(f: &Feedback) -> String {
    let mut lines: Vec<String> = f
        .status
        .details
        .iter()
        .take(50)
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    if let Some(code) = f.status.code {
        lines.push(format!("Device reported status code: {code}"));
    }
    if let Some(p) = &f.status.result.progress {
        lines.push(format!("progress {}/{}", p["cnt"], p["of"]));
    }
    let text = lines.join("\n");
    let max = updraft_proto::limits::MAX_EVENT_DETAIL_BYTES;
    if text.len() <= max {
        return text;
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_owned()
}

fn gone(id: &str, state: DdiState) -> ApiError {
    ApiError::new(StatusCode::GONE, "gone", format!("action {id} is no longer active (it is {})", state.as_str()))
}

async fn deployment_feedback(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((tenant, controller, action)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let device = authenticate(&app, &headers, &tenant, &controller).await?;
    let f = parse_feedback(&body)?;
    let mut known = state(&app, &device).await?;
    let mut a = action_of(&app, &device, &known, &action).await?;
    if !a.state.active() {
        return Err(gone(&action, a.state));
    }
    let release = ReleaseId::new(a.release.clone());
    let detail = details_text(&f);
    let summary = format!("DDI feedback {}/{}", f.status.execution, f.status.result.finished);
    let (exec, finished) = (f.status.execution.as_str(), f.status.result.finished.as_str());
    match (exec, finished) {
        ("closed", "failure") => {
            a.state = DdiState::Failed;
            save(&app, &device, &mut known, a).await?;
            record_event(&app, &device, &release, InstallEvent::Failed, &with_summary(&summary, &detail)).await?;
        }
        ("closed", _) => {
            a.state = DdiState::Closed;
            save(&app, &device, &mut known, a).await?;
            record_event(&app, &device, &release, InstallEvent::Committed, &with_summary(&summary, &detail)).await?;
        }
        ("canceled", _) if a.state == DdiState::Canceling => {
            a.state = DdiState::Canceled;
            save(&app, &device, &mut known, a).await?;
            crate::devices::history_soon(
                &app,
                device.as_str(),
                "ddi",
                Some(release.as_str()),
                "cancellation confirmed",
            );
        }
        ("rejected" | "canceled", _) => {
            crate::devices::history_soon(
                &app,
                device.as_str(),
                "ddi",
                Some(release.as_str()),
                &with_summary(&summary, &detail),
            );
        }
        _ => {
            // Under way: its first report means the download began; an
            // installed-and-testing report is the trial boot's start.
            let first = !a.downloaded;
            if first {
                a.downloaded = true;
                save(&app, &device, &mut known, a).await?;
                record_event(&app, &device, &release, InstallEvent::Downloaded, &with_summary(&summary, &detail))
                    .await?;
            }
            if detail.to_ascii_lowercase().contains("installed") {
                record_event(&app, &device, &release, InstallEvent::Installed, &with_summary(&summary, &detail))
                    .await?;
            } else if !first {
                crate::devices::history_soon(
                    &app,
                    device.as_str(),
                    "ddi",
                    Some(release.as_str()),
                    &with_summary(&summary, &detail),
                );
            }
        }
    }
    Ok(StatusCode::OK)
}

fn with_summary(summary: &str, detail: &str) -> String {
    if detail.is_empty() {
        summary.to_owned()
    } else {
        format!("{summary}: {detail}")
    }
}

async fn cancel_action(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((tenant, controller, action)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let device = authenticate(&app, &headers, &tenant, &controller).await?;
    let known = state(&app, &device).await?;
    let a = action_of(&app, &device, &known, &action).await?;
    if !matches!(a.state, DdiState::Canceling | DdiState::Canceled) {
        return Err(ApiError::not_found(format!("action {action} is not being canceled")));
    }
    let id = a.id.to_string();
    Ok(hal(&headers, &json!({ "id": id, "cancelAction": { "stopId": id } })))
}

async fn cancel_feedback(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((tenant, controller, action)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let device = authenticate(&app, &headers, &tenant, &controller).await?;
    let f = parse_feedback(&body)?;
    let mut known = state(&app, &device).await?;
    let mut a = action_of(&app, &device, &known, &action).await?;
    if a.state == DdiState::Canceled {
        return Ok(StatusCode::OK);
    }
    if a.state != DdiState::Canceling {
        return Err(gone(&action, a.state));
    }
    let release = a.release.clone();
    let (note, next) = match (f.status.execution.as_str(), f.status.result.finished.as_str()) {
        ("closed", "failure") => ("the device could not cancel", DdiState::Canceling),
        ("closed", _) => ("cancellation confirmed", DdiState::Canceled),
        // It began installing: the action goes on and reports as usual.
        ("rejected", _) => ("cancellation rejected: the installation had begun", DdiState::Open),
        _ => ("cancel feedback noted", DdiState::Canceling),
    };
    if next != a.state {
        if next == DdiState::Open {
            a.downloaded = true;
        }
        a.state = next;
        save(&app, &device, &mut known, a).await?;
    }
    crate::devices::history_soon(&app, device.as_str(), "ddi", Some(&release), note);
    Ok(StatusCode::OK)
}

// ------------------------------------------------------------------ configData

#[derive(Deserialize)]
struct ConfigData {
    #[serde(default)]
    mode: Option<String>,
    data: serde_json::Map<String, Value>,
}

/// The attribute names that set the device's hardware and region (what
/// plans and strata use) rather than an attribute.
pub const HARDWARE_KEYS: [&str; 3] = ["hardware", "hwRevision", "hw_rev"];
pub const REGION_KEYS: [&str; 1] = ["region"];

/// An attribute name as Updraft keeps it: characters outside
/// `A-Za-z0-9._-@+:` become `_`, at most 128.
fn attribute_name(k: &str) -> String {
    let s: String = k
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+' | ':') { c } else { '_' })
        .take(128)
        .collect();
    s.replace("..", "__")
}

async fn config_data(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path((tenant, controller)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let device = authenticate(&app, &headers, &tenant, &controller).await?;
    let req: ConfigData = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("invalid configData: {e}; hint: {{\"data\": {{\"key\": \"value\"}}}}"))
    })?;
    if req.data.is_empty() {
        return Err(ApiError::bad_request("configData.data is empty; send at least one attribute"));
    }
    let max = updraft_proto::MAX_INVENTORY_ATTRIBUTES;
    if req.data.len() > max {
        return Err(ApiError::bad_request(format!("{} attributes; at most {max} are kept", req.data.len())));
    }
    let mode = req.mode.as_deref().unwrap_or("merge");
    let mut row = app.store.device(device.as_str()).await?.ok_or_else(ApiError::unauthorized)?;
    let before = (row.hardware.clone(), row.region.clone(), row.attributes.clone());
    let mut attrs: std::collections::BTreeMap<String, String> = match mode {
        "replace" => Default::default(),
        "merge" | "remove" => row.attributes.iter().cloned().collect(),
        other => {
            return Err(ApiError::bad_request(format!("configData.mode {other:?} is not merge, replace or remove")))
        }
    };
    for (k, v) in &req.data {
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let name = attribute_name(k);
        if name.is_empty() {
            continue;
        }
        if mode == "remove" {
            attrs.remove(&name);
            continue;
        }
        let value: String = value.chars().take(updraft_proto::MAX_INVENTORY_VALUE_LEN).collect();
        if HARDWARE_KEYS.contains(&k.as_str()) && crate::validate::name("hardware", &value).is_ok() {
            row.hardware = value.clone();
        }
        if REGION_KEYS.contains(&k.as_str()) && crate::validate::name("region", &value).is_ok() {
            row.region = value.clone();
        }
        if !value.is_empty() {
            attrs.insert(name, value);
        }
    }
    row.attributes = attrs.into_iter().collect();
    row.protocol = PROTOCOL_DDI.into();
    let changed = (row.hardware.clone(), row.region.clone(), row.attributes.clone()) != before;
    let mut change = crate::core::Change::begin(&app).await?;
    change.tx().set_device_profile(&row).await?;
    if changed && row.status == DeviceStatus::Active {
        change.apply(device_entry(&row)).await?;
    }
    let detail = row.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
    change.audit(&format!("device:{device}"), "device.ddi-config", device.as_str(), detail.clone(), remote);
    change.commit().await?;
    crate::devices::forget(&app, device.as_str());
    if changed {
        crate::devices::history_soon(&app, device.as_str(), "ddi", None, &format!("configData ({mode}): {detail}"));
    }
    let mut known = state(&app, &device).await?;
    known.wants_config = false;
    remember(&app, &device, known);
    Ok(StatusCode::OK)
}

/// Asks a DDI device for its attributes again (the root offers `configData`).
pub(crate) async fn request_config(app: &App, device: &DeviceId) -> ApiResult<()> {
    let mut known = state(app, device).await?;
    known.wants_config = true;
    remember(app, device, known);
    Ok(())
}

/// Forgets what this process cached of a device.
pub(crate) fn forget(app: &App, device: &str) {
    app.ddi_cache.devices.lock().unwrap_or_else(|e| e.into_inner()).remove(device);
}

// ------------------------------------------------------------------ artifacts

async fn module_artifact(app: &App, device: &DeviceId, module: &str) -> ApiResult<(DdiAction, Arc<DdiArtifact>)> {
    let known = state(app, device).await?;
    let a = action_of(app, device, &known, module)
        .await
        .map_err(|_| ApiError::not_found(format!("no software module {module} for this controller")))?;
    if matches!(a.state, DdiState::Canceled | DdiState::Failed) {
        return Err(ApiError::not_found(format!("software module {module} is not in an active or installed action")));
    }
    let art = artifact_of(app, &a.release)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("software module {module} has no artifacts")))?;
    Ok((a, art))
}

async fn artifacts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((tenant, controller, module)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let device = authenticate(&app, &headers, &tenant, &controller).await?;
    let (a, art) = module_artifact(&app, &device, &module).await?;
    let base = base_url(&app, &headers, &tenant, &controller);
    Ok(hal(&headers, &json!([artifact_json(&base, a.id, &art)])))
}

async fn artifact(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((tenant, controller, module, file)): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    let device = authenticate(&app, &headers, &tenant, &controller).await?;
    let (a, art) = module_artifact(&app, &device, &module).await?;
    if file == format!("{}.MD5SUM", art.filename) {
        let text = format!("{}  {}\n", art.md5, art.filename);
        let disposition = format!("attachment;filename={}.MD5SUM", art.filename);
        return Ok((
            [(header::CONTENT_TYPE, "text/plain".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
            text,
        )
            .into_response());
    }
    if file != art.filename {
        return Err(ApiError::not_found(format!("software module {module} has no artifact {file:?}")));
    }
    let etag = format!("\"{}\"", art.sha1);
    if let Some(m) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if m.trim() != "*" && !m.split(',').any(|t| t.trim().trim_start_matches("W/") == etag) {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "If-Match does not match the artifact's SHA-1",
            ));
        }
    }
    if a.state == DdiState::Open && !a.downloaded {
        // Too late to cancel it from here on; the download is noted.
        let mut known = state(&app, &device).await?;
        let mut begun = a.clone();
        begun.downloaded = true;
        save(&app, &device, &mut known, begun).await?;
        crate::devices::history_soon(
            &app,
            device.as_str(),
            "ddi",
            Some(&a.release),
            &format!("downloading {}", art.filename),
        );
    }
    let digest: Sha256Digest = art.sha256.parse().map_err(ApiError::internal)?;
    let disposition = format!("attachment;filename={}", art.filename);
    crate::api::blob_response(&app, &headers, &digest, art.size, etag, &[(header::CONTENT_DISPOSITION, disposition)])
        .await
}

// ------------------------------------------------------------------ HTTP

/// The absolute base of a controller's paths: `--public-url`, else the
/// request's `Host`.
fn base_url(app: &App, headers: &HeaderMap, tenant: &str, controller: &str) -> String {
    let root = match &app.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
            format!("http://{host}")
        }
    };
    format!("{root}/{tenant}/controller/v1/{controller}")
}

/// A `application/hal+json` answer with an ETag of its body; 304 when the
/// client's `If-None-Match` has it.
fn hal(headers: &HeaderMap, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let etag = {
        use sha2::Digest;
        format!("\"{}\"", &hex::encode(sha2::Sha256::digest(&bytes))[..32])
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag));
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/hal+json")),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        bytes,
    )
        .into_response()
}

// ------------------------------------------------------------------ publish

/// Hashes what it writes, for a DDI artifact staged while a bundle verifies.
pub(crate) struct Staging {
    file: std::io::BufWriter<std::fs::File>,
    path: tempfile::TempPath,
    sha256: sha2::Sha256,
    sha1: sha1::Sha1,
    md5: md5::Md5,
    size: u64,
}

impl Staging {
    pub(crate) fn new(dir: &std::path::Path) -> std::io::Result<Staging> {
        use sha2::Digest;
        let (file, path) = tempfile::Builder::new().prefix("ddi-").tempfile_in(dir)?.into_parts();
        Ok(Staging {
            file: std::io::BufWriter::new(file),
            path,
            sha256: sha2::Sha256::new(),
            sha1: sha1::Sha1::new(),
            md5: md5::Md5::new(),
            size: 0,
        })
    }

    /// Syncs the file; returns it with the artifact's hashes.
    pub(crate) fn finish(self, image: &str, filename: String) -> std::io::Result<(tempfile::TempPath, DdiArtifact)> {
        use sha2::Digest;
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let art = DdiArtifact {
            image: image.to_owned(),
            filename,
            size: self.size,
            sha256: hex::encode(self.sha256.finalize()),
            sha1: hex::encode(self.sha1.finalize()),
            md5: hex::encode(self.md5.finalize()),
        };
        Ok((self.path, art))
    }
}

impl std::io::Write for Staging {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.file.write(buf)?;
        self.sha256.update(&buf[..n]);
        self.sha1.update(&buf[..n]);
        self.md5.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The image of `manifest` a DDI client installs (the first `swu` or
/// `raucb`), with the file name clients see.
pub(crate) fn ddi_image(m: &updraft_bundle::manifest::Manifest) -> Option<(String, String)> {
    m.images.iter().find_map(|i| {
        DDI_IMAGES
            .iter()
            .find(|(name, _)| *name == i.name)
            .map(|(name, ext)| ((*name).to_owned(), format!("{}-{}.{ext}", m.name, m.version)))
    })
}

/// Verifies the bundle at `path` in one pass, copying its DDI image (if
/// any) into the staging folder with its hashes.
pub(crate) fn verify_and_stage(
    path: &std::path::Path,
    trust: &updraft_bundle::TrustedRoot,
    staging: &std::path::Path,
) -> Result<(updraft_bundle::VerifiedBundle, Option<(tempfile::TempPath, DdiArtifact)>), updraft_bundle::Error> {
    let io_err = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| updraft_bundle::Error::io(what, e)
    };
    let f = std::fs::File::open(path).map_err(io_err("cannot open the uploaded bundle"))?;
    let mut stream =
        updraft_bundle::open(std::io::BufReader::with_capacity(1 << 20, f), trust, &updraft_bundle::Policy::default())?;
    let chosen = ddi_image(&stream.header().manifest);
    let names: Vec<String> = stream.header().manifest.images.iter().map(|i| i.name.clone()).collect();
    let mut staged = None;
    for name in names {
        match &chosen {
            Some((image, filename)) if *image == name => {
                let mut s = Staging::new(staging).map_err(io_err("cannot stage the DDI artifact"))?;
                stream.next_image(&mut s, &updraft_bundle::NoProgress)?;
                staged = Some(s.finish(image, filename.clone()).map_err(io_err("cannot sync the DDI artifact"))?);
            }
            _ => {
                stream.next_image(&mut std::io::sink(), &updraft_bundle::NoProgress)?;
            }
        }
    }
    let verified = stream.finish()?;
    Ok((verified, staged))
}
