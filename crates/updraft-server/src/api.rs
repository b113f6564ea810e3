//! Routes and handlers. Every route is listed once in [`ROUTES`] with the
//! access it needs; the router, the OpenAPI document and the role tests are
//! all built from that table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Extension;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use updraft_proto::*;
use updraft_rollout::{Decision, InstallReason, Output, Plan, StayReason};
use updraft_store::{hash_secret, DeviceRow, Inserted, ReleaseRow, RolloutRow};
use updraft_types::{DeviceId, ReleaseId, RolloutId, Sha256Digest};

use crate::core::Change;
pub(crate) use crate::core::{apply, catch_up};
use crate::error::{ApiError, ApiResult};
use crate::journal::{self, Entry};
use crate::metrics::{Kind, METRICS};
use crate::{fault, validate};
use crate::{now_ms, App};

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    /// A device token.
    Device,
    /// A device token or any API token.
    Any,
    /// An API token with this role (or admin).
    Role(Role),
}

/// One route of the API.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// What the request carries and what a success answers (the OpenAPI
    /// document's schemas come from the wire types through these).
    pub request: Payload,
    pub response: Payload,
    /// The handler, as a method router of one method; the router is folded
    /// from the table and [`enforce`] checks `access` before it runs.
    pub handler: fn() -> MethodRouter<Arc<App>>,
}

/// A request or response body, for the OpenAPI document.
#[derive(Clone, Copy, Debug)]
pub enum Payload {
    None,
    /// JSON of a wire type, its schema generated from the type.
    Json(fn(&mut schemars::SchemaGenerator) -> schemars::Schema),
    /// A JSON document whose shape is another format's (a trust root, a
    /// manifest, a pipeline report), or free-form.
    AnyJson,
    /// A JSON object whose shape is another tool's (the pipeline's flaky-test history).
    Object,
    /// Bytes (a bundle).
    Binary,
    /// Text (Prometheus metrics, the liveness answer).
    Text,
}

/// The schema of `T` (a reference into the document's components).
pub fn schema<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

macro_rules! routes {
    ($($method:literal $path:literal $access:expr, $summary:literal, $req:expr => $res:expr, $handler:expr;)*) => {
        /// Every route of the API.
        pub const ROUTES: &[RouteSpec] = &[$(RouteSpec {
            method: $method, path: $path, access: $access, summary: $summary, request: $req, response: $res,
            handler: {
                fn handler() -> MethodRouter<Arc<App>> {
                    $handler
                }
                handler
            },
        }),*];
    };
}

use Payload::{AnyJson, Binary, Json as J, Object, Text};

routes! {
    "GET" "/healthz" Access::Public, "Liveness: 200 when the server answers.", Payload::None => Text, get(healthz);
    "GET" "/metrics" Access::Public, "Prometheus metrics in the text format.", Payload::None => Text, get(metrics);
    "GET" "/api/openapi.json" Access::Public, "This API, as an OpenAPI 3.1 document.", Payload::None => AnyJson, get(openapi);
    "POST" "/api/v1/device/enroll" Access::Public, "Enroll a device with an enrollment token; returns its device token.",
        J(schema::<EnrollRequest>) => J(schema::<EnrollResponse>), post(enroll);
    "POST" "/api/v1/device/check-in" Access::Device, "Report state; get an assignment or the reason there is none.",
        J(schema::<CheckInRequest>) => J(schema::<CheckInResponse>), post(check_in);
    "POST" "/api/v1/device/events" Access::Device, "Report an install event.", J(schema::<EventRequest>) => Payload::None, post(events);
    "POST" "/api/v1/device/health" Access::Device, "Report health telemetry.", J(schema::<HealthRequest>) => Payload::None, post(health);
    "GET" "/api/v1/artifacts/{sha256}" Access::Any, "Download a blob (Range, ETag, resume).", Payload::None => Binary, get(download);
    "GET" "/api/v1/releases" Access::Role(Role::Viewer), "List releases.", Payload::None => J(schema::<Vec<Release>>), get(list_releases);
    "POST" "/api/v1/releases" Access::Role(Role::Releaser), "Publish a bundle (the request body, streamed); verified against the trust root.",
        Binary => J(schema::<Release>), post(publish).layer(DefaultBodyLimit::disable());
    "GET" "/api/v1/releases/{id}" Access::Role(Role::Viewer), "Show a release.", Payload::None => J(schema::<Release>), get(show_release);
    "GET" "/api/v1/releases/{id}/{file}" Access::Role(Role::Viewer), "A release's manifest, signatures, provenance or SBOM.", Payload::None => AnyJson, get(release_file);
    "GET" "/api/v1/channels/{channel}" Access::Role(Role::Viewer), "Releases in a channel.", Payload::None => J(schema::<Vec<ReleaseId>>), get(show_channel);
    "POST" "/api/v1/channels/{channel}/releases" Access::Role(Role::Releaser), "Promote a release into a channel.",
        J(schema::<PromoteRequest>) => Payload::None, post(promote);
    "GET" "/api/v1/rollouts" Access::Role(Role::Viewer), "List rollouts with their status.",
        Payload::None => J(schema::<Vec<updraft_rollout::RolloutStatus>>), get(list_rollouts);
    "POST" "/api/v1/rollouts" Access::Role(Role::Operator), "Create (and start) a rollout from a plan.",
        J(schema::<CreateRolloutRequest>) => J(schema::<updraft_rollout::RolloutStatus>), post(create_rollout);
    "GET" "/api/v1/rollouts/{id}" Access::Role(Role::Viewer), "A rollout's status: waves, strata, gates, held-back devices.",
        Payload::None => J(schema::<updraft_rollout::RolloutStatus>), get(show_rollout);
    "POST" "/api/v1/rollouts/{id}/{command}" Access::Role(Role::Operator), "start, pause, resume, advance, abort or rollback.",
        Payload::None => J(schema::<updraft_rollout::RolloutStatus>), post(rollout_command);
    "GET" "/api/v1/devices" Access::Role(Role::Viewer), "List devices: filter (KEY=VALUE,...), pages with a total and a next cursor.",
        Payload::None => J(schema::<DevicePage>), get(crate::devices::list);
    "GET" "/api/v1/devices/{id}" Access::Role(Role::Viewer), "Show a device: inventory, components, history with failure logs.",
        Payload::None => J(schema::<Device>), get(crate::devices::show);
    "PATCH" "/api/v1/devices/{id}" Access::Role(Role::Operator), "Add or remove a device's tags and attributes.",
        J(schema::<DeviceChange>) => J(schema::<Device>), patch(crate::devices::change);
    "POST" "/api/v1/devices/{id}/accept" Access::Role(Role::Operator), "Accept a device waiting as pending.", Payload::None => J(schema::<Device>), post(crate::devices::accept);
    "POST" "/api/v1/devices/{id}/decommission" Access::Role(Role::Operator), "Decommission a device: revoke its token, keep its history.",
        Payload::None => J(schema::<Device>), post(crate::devices::decommission);
    "GET" "/api/v1/audit" Access::Role(Role::Viewer), "The audit log.", Payload::None => J(schema::<Vec<AuditEntry>>), get(audit_log);
    "GET" "/api/v1/builds" Access::Role(Role::Viewer), "Pipeline runs (build health), newest first; ?project= filters.", Payload::None => AnyJson, get(list_builds);
    "POST" "/api/v1/builds" Access::Role(Role::Releaser), "Record a pipeline run's report (`updraft pipeline` posts it).",
        J(schema::<BuildRequest>) => J(schema::<BuildCreated>), post(add_build);
    "GET" "/api/v1/pipelines/{project}/flaky" Access::Role(Role::Releaser), "A project's flaky-test history.", Payload::None => AnyJson, get(get_flaky);
    "PUT" "/api/v1/pipelines/{project}/flaky" Access::Role(Role::Releaser), "Replace a project's flaky-test history.", Object => Payload::None, put(put_flaky);
    "GET" "/api/v1/tokens" Access::Role(Role::Admin), "List API tokens.", Payload::None => J(schema::<Vec<TokenInfo>>), get(list_tokens);
    "POST" "/api/v1/tokens" Access::Role(Role::Admin), "Create an API token (shown once).",
        J(schema::<CreateTokenRequest>) => J(schema::<CreatedToken>), post(create_token);
    "DELETE" "/api/v1/tokens/{id}" Access::Role(Role::Admin), "Revoke an API token.", Payload::None => Payload::None, delete(revoke_token);
    "POST" "/api/v1/enrollment-tokens" Access::Role(Role::Admin), "Create an enrollment token (shown once).",
        J(schema::<CreateEnrollmentTokenRequest>) => J(schema::<CreatedEnrollmentToken>), post(create_enrollment_token);
    "GET" "/api/v1/trust-root" Access::Any, "The newest trust root (the signed file).", Payload::None => AnyJson, get(show_trust_root);
    "POST" "/api/v1/trust-root" Access::Role(Role::Admin), "Adopt the next trust root version (signed by a threshold of the current one's keys and of its own).",
        AnyJson => AnyJson, post(rotate_trust_root);
}

/// JSON request bodies are small; bundles stream through their own route.
pub const MAX_JSON_BYTES: usize = 256 * 1024;

pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for r in ROUTES {
        let access = axum::middleware::from_fn_with_state((app.clone(), r.access), enforce);
        router = router.route(r.path, (r.handler)().route_layer(access));
    }
    router
        .fallback(|| async { ApiError::not_found("no such route; hint: see /api/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this route does not take that method; hint: see /api/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(axum::middleware::from_fn(bounded_body))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(observe))
        .with_state(app)
}

/// How long a client has to send a request body (uploads: between two chunks).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads every request body but an upload's whole, within [`MAX_JSON_BYTES`]
/// and [`BODY_READ_TIMEOUT`], so that a slow or endless body ties up nothing.
async fn bounded_body(req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::POST && req.uri().path() == "/api/v1/releases" {
        return next.run(req).await;
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("the request body is larger than {} KiB", MAX_JSON_BYTES / 1024),
        )
        .into_response()
    };
    let (parts, body) = req.into_parts();
    if declared.is_some_and(|n| n > MAX_JSON_BYTES as u64) {
        // Read (and drop) a little of what is on its way, so that a client
        // still sending gets the answer rather than a broken pipe.
        drain(body).await;
        return too_large();
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, MAX_JSON_BYTES)).await {
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            format!("the request body did not arrive within {} s", BODY_READ_TIMEOUT.as_secs()),
        )
        .into_response(),
        Ok(Err(_)) if declared.is_none() => too_large(),
        Ok(Err(e)) => ApiError::bad_request(format!("the request body was cut short: {e}")).into_response(),
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
    }
}

/// Bytes of a refused body read before answering (4 times the limit).
const MAX_DRAIN_BYTES: usize = 4 * MAX_JSON_BYTES;

async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut read = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > MAX_DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Every error answers with the JSON error body, the framework's own
/// rejections included (a query or path that does not parse, a body over
/// the limit, a method the route does not take).
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    let code = match status.as_u16() {
        400 => "bad-request",
        404 => "not-found",
        405 => "method-not-allowed",
        408 => "body-timeout",
        413 => "payload-too-large",
        415 => "unsupported-media-type",
        416 => "range-not-satisfiable",
        422 => "unprocessable",
        _ => "error",
    };
    let message = match text {
        Ok(t) if !t.is_empty() => t,
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}

tokio::task_local! {
    /// Who made the request being served (set by `enforce`), for the request log.
    static ACTOR: std::cell::RefCell<Option<String>>;
}

/// Request latency by route, and one log line per request: method, route,
/// status, latency and the caller's name (never a token). Operator API
/// calls log at info; the device API (check-ins, events, downloads: the
/// bulk of the traffic) at debug.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], METRICS.encode()).into_response()
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = Instant::now();
    let (res, actor) = ACTOR
        .scope(std::cell::RefCell::new(None), async move {
            let res = next.run(req).await;
            (res, ACTOR.with(|a| a.borrow().clone()))
        })
        .await;
    let elapsed = started.elapsed();
    let status = res.status().as_u16();
    let actor = actor.as_deref().unwrap_or("-");
    let latency_ms = format!("{:.3}", elapsed.as_secs_f64() * 1000.0);
    if route.starts_with("/api/v1/device/") || route.starts_with("/api/v1/artifacts/") || route == "/metrics" {
        tracing::debug!(%method, %route, status, %latency_ms, %actor, "request");
    } else {
        tracing::info!(%method, %route, status, %latency_ms, %actor, "request");
    }
    METRICS.latency.get_or_create(&crate::metrics::Route { route }).observe(elapsed.as_secs_f64());
    res
}

// ------------------------------------------------------------------ auth

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Actor {
    Token { name: String, role: Role },
    Device { id: DeviceId },
}

impl Actor {
    pub(crate) fn label(&self) -> String {
        match self {
            Actor::Token { name, .. } => format!("token:{name}"),
            Actor::Device { id } => format!("device:{id}"),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

async fn authenticate(app: &App, headers: &HeaderMap) -> ApiResult<Actor> {
    let secret = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    if secret.starts_with("upd_") {
        let hash = hash_secret(secret);
        if let Some(id) = app.device_tokens.read().expect("token cache").get(&hash) {
            return Ok(Actor::Device { id: id.clone() });
        }
        let device = app.store.device_by_token(secret).await?.ok_or_else(ApiError::unauthorized)?;
        let id = DeviceId::new(device.id.clone());
        crate::devices::seed(app, device);
        app.device_tokens.write().expect("token cache").insert(hash, id.clone());
        return Ok(Actor::Device { id });
    }
    let token = app.store.find_api_token(secret).await?.ok_or_else(ApiError::unauthorized)?;
    Ok(Actor::Token { name: token.name, role: token.role })
}

/// The one access check: every route passes through it with its table
/// entry's [`Access`] before its handler runs; the caller (an [`Actor`])
/// goes into the request's extensions for the handler. Rate limits per
/// token and per device are applied here too.
async fn enforce(State((app, access)): State<(Arc<App>, Access)>, mut req: Request, next: Next) -> Response {
    if access == Access::Public {
        return next.run(req).await;
    }
    match caller(&app, req.headers(), access).await {
        Ok(actor) => {
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn caller(app: &App, headers: &HeaderMap, access: Access) -> ApiResult<Actor> {
    let actor = authenticate(app, headers).await?;
    let label = actor.label();
    let _ = ACTOR.try_with(|a| *a.borrow_mut() = Some(label.clone()));
    let r = app.rates;
    match &actor {
        Actor::Device { .. } => app.limit(
            &label,
            crate::ratelimit::Rate::per_second(r.device_per_s, r.device_burst),
            &format!("more than {} requests a second from this device", r.device_per_s),
        )?,
        Actor::Token { .. } => app.limit(
            &label,
            crate::ratelimit::Rate::per_second(r.token_per_s, r.token_burst),
            &format!("more than {} requests a second with this token", r.token_per_s),
        )?,
    }
    match (access, &actor) {
        (Access::Public | Access::Any, _) => Ok(actor),
        (Access::Device, Actor::Device { .. }) => Ok(actor),
        (Access::Device, Actor::Token { .. }) => {
            Err(ApiError::forbidden("this route is for devices; use a device token"))
        }
        (Access::Role(_), Actor::Device { .. }) => Err(ApiError::forbidden("devices may not use the operator API")),
        (Access::Role(needed), Actor::Token { role, .. }) => {
            if role.allows(needed) {
                Ok(actor)
            } else {
                Err(ApiError::forbidden(format!(
                    "this needs the {} role; the token has {}",
                    needed.as_str(),
                    role.as_str()
                )))
            }
        }
    }
}

fn device_of(actor: &Actor) -> &DeviceId {
    match actor {
        Actor::Device { id } => id,
        Actor::Token { .. } => unreachable!("checked by enforce: the route is Access::Device"),
    }
}

/// Parses a JSON body with a 400 that names the problem.
///
/// JSON has one number type: `6340.0` is the integer 6340 (JSON Schema
/// agrees), so a number without a fraction is taken where an integer is due.
///
/// Every request body is a JSON object (serde would also take an array for
/// a struct, its fields by position).
pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("the request body must be a JSON object; see /api/openapi.json"));
    }
    let bad = |e: serde_json::Error| ApiError::bad_request(format!("invalid JSON body: {e}"));
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(first) => {
            let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else { return Err(bad(first)) };
            if !integral_floats(&mut value) {
                return Err(bad(first));
            }
            serde_json::from_value(value).map_err(bad)
        }
    }
}

/// Rewrites every number with a zero fraction (`-491.0`) as an integer;
/// whether it changed anything.
fn integral_floats(v: &mut serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                *v = serde_json::Value::from(f as i64);
                true
            }
            _ => false,
        },
        serde_json::Value::Array(items) => items.iter_mut().fold(false, |c, i| integral_floats(i) | c),
        serde_json::Value::Object(map) => map.values_mut().fold(false, |c, i| integral_floats(i) | c),
        _ => false,
    }
}

pub(crate) fn check_id(kind: &str, s: &str) -> ApiResult<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+' | b':'))
        && !s.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("invalid {kind} {s:?}: 1 to 128 characters of A-Z a-z 0-9 . _ - @ + :")))
    }
}

fn rejection(outputs: &[Output]) -> Option<String> {
    outputs.iter().find_map(|o| match o {
        Output::Rejected { reason } => Some(reason.clone()),
        _ => None,
    })
}

// ------------------------------------------------------------------ devices

pub(crate) fn device_entry(d: &DeviceRow) -> Entry {
    Entry::Device {
        id: DeviceId::new(&d.id),
        family: d.family.clone(),
        hardware: d.hardware.clone(),
        region: d.region.clone(),
        // Attributes reach the controller as KEY=VALUE labels (plans select on them).
        tags: d.tags.iter().cloned().chain(d.attributes.iter().map(|(k, v)| format!("{k}={v}"))).collect(),
        channel: d.channel.clone(),
        release: d.release.as_deref().map(ReleaseId::new),
        last_known_good: d.last_known_good.as_deref().map(ReleaseId::new),
        components: d.components.clone(),
        utc_offset_min: d.utc_offset_min,
    }
}

async fn enroll(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: EnrollRequest = parse(&body)?;
    validate::name("deviceId", req.device_id.as_str())?;
    validate::name("family", &req.family)?;
    validate::name("hardware", &req.hardware)?;
    if !req.region.is_empty() {
        validate::name("region", &req.region)?;
    }
    if let Some(c) = &req.channel {
        validate::name("channel", c)?;
    }
    if let Some(r) = &req.release {
        validate::release("release", r)?;
    }
    validate::components("components", req.components.iter())?;
    validate::tags(&req.tags)?;
    validate::utc_offset(req.utc_offset_min)?;
    // The release it runs becomes its last known good (what a rollback
    // assigns) only if the server has it.
    let last_known_good = match &req.release {
        Some(r) if app.store.release(r.as_str()).await?.is_some() => Some(r.to_string()),
        _ => None,
    };
    let device = DeviceRow {
        region: req.region,
        tags: req.tags,
        channel: req.channel,
        release: req.release.as_ref().map(|r| r.to_string()),
        last_known_good,
        components: req.components.into_iter().collect(),
        utc_offset_min: req.utc_offset_min,
        enrolled_ms: now_ms(),
        ..DeviceRow::new(req.device_id.as_str(), &req.family, &req.hardware)
    };
    // A retry is decided on the stored row: its first check-in, if queued, goes first.
    crate::devices::flush_device(&app, &device.id).await?;
    // The device row, its token, its controller entry and the audit entry
    // commit together: a crash leaves all of them or none.
    let mut change = Change::begin(&app).await?;
    let enrolled = match change.tx().enroll(&req.enrollment_token, &device, now_ms()).await? {
        Ok(e) => e,
        Err(updraft_store::EnrollRefusal::BadToken) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad-enrollment-token",
                "the enrollment token is unknown, used up or expired; hint: ask an admin for a new one",
            ))
        }
        Err(updraft_store::EnrollRefusal::AlreadyEnrolled) => {
            return Err(ApiError::conflict(format!(
                "device {} is already enrolled; hint: an operator decommissions it (`updraft devices decommission {}`) before it enrolls again",
                device.id, device.id
            )))
        }
    };
    let status = enrolled.status;
    // A pending device takes part in rollouts once an operator accepts it.
    if status == updraft_store::DeviceStatus::Active && !enrolled.retried {
        change.apply(device_entry(&device)).await?;
    }
    let action = if enrolled.retried { "device.enroll-retry" } else { "device.enroll" };
    change.audit(
        &format!("device:{}", device.id),
        action,
        &device.id,
        format!("{}/{} ({})", device.family, device.hardware, status.as_str()),
        remote,
    );
    change.commit().await?;
    crate::devices::forget(&app, &device.id);
    fault::point("enroll.before-answer");
    let token = enrolled.token;
    let response = EnrollResponse { device_id: req.device_id, device_token: token, status: status.as_str().into() };
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

fn reason_name(r: &StayReason) -> String {
    serde_json::to_value(r).ok().and_then(|v| v["kind"].as_str().map(str::to_owned)).unwrap_or_else(|| "unknown".into())
}

async fn check_in(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> ApiResult<Json<CheckInResponse>> {
    let device = device_of(&actor).clone();
    let req: CheckInRequest = parse(&body)?;
    if let Some(r) = &req.release {
        validate::release("release", r)?;
    }
    if let Some(m) = req.utc_offset_min {
        validate::utc_offset(m)?;
    }
    for (field, v) in [("slot", &req.slot), ("agentVersion", &req.agent_version)] {
        if let Some(v) = v {
            validate::name(field, v)?;
        }
    }
    validate::components("components", req.components.iter())?;
    METRICS.check_ins.inc();
    let seen = crate::devices::check_in(&app, &device, &req).await?;
    if seen.status == updraft_store::DeviceStatus::Pending {
        return Ok(Json(CheckInResponse {
            assignment: None,
            reason: Some("pending_acceptance".into()),
            detail: Some(format!("waiting for an operator to accept this device (`updraft devices accept {device}`)")),
            next_check_in_s: app.poll_interval_s,
        }));
    }
    if let Some(row) = &seen.components_changed {
        // New component versions: requirements are judged on them.
        apply(&app, device_entry(row)).await?;
    }
    let outputs = apply(&app, Entry::CheckIn { device: device.clone(), release: req.release.clone() }).await?;
    let decision = outputs.into_iter().find_map(|o| match o {
        Output::Decision { decision, .. } => Some(decision),
        _ => None,
    });
    let response = match decision {
        Some(Decision::Install { release, rollout, reason }) => {
            let row = app
                .store
                .release(release.as_str())
                .await?
                .ok_or_else(|| ApiError::internal("assigned release is missing"))?;
            let reason = match reason {
                InstallReason::Rollout => "rollout",
                InstallReason::SteppingStone { .. } => "stepping_stone",
                InstallReason::Rollback { .. } => "rollback",
            };
            METRICS.assignments.get_or_create(&Kind { kind: reason.into() }).inc();
            crate::devices::assigned(&app, &device, &release, reason).await?;
            let path = format!("/api/v1/artifacts/{}", row.sha256);
            let bundle_url = match &app.public_url {
                Some(base) => format!("{}{path}", base.trim_end_matches('/')),
                None => path,
            };
            CheckInResponse {
                assignment: Some(Assignment {
                    release,
                    rollout,
                    reason: reason.into(),
                    bundle_url,
                    sha256: row.sha256.parse().map_err(ApiError::internal)?,
                    size: row.size as u64,
                }),
                reason: None,
                detail: None,
                next_check_in_s: app.poll_interval_s,
            }
        }
        Some(Decision::Stay { reason }) => CheckInResponse {
            assignment: None,
            reason: Some(reason_name(&reason)),
            detail: Some(reason.describe()),
            next_check_in_s: app.poll_interval_s,
        },
        None => CheckInResponse {
            assignment: None,
            reason: Some("unknown_device".into()),
            detail: Some("the rollout controller does not know this device".into()),
            next_check_in_s: app.poll_interval_s,
        },
    };
    Ok(Json(response))
}

async fn events(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let device = device_of(&actor).clone();
    let req: EventRequest = parse(&body)?;
    validate::release("release", &req.release)?;
    validate::event_detail(req.detail.as_deref())?;
    let per_hour = app.rates.events_per_hour;
    app.limit(
        &format!("events:{device}"),
        crate::ratelimit::Rate::per_hour(per_hour),
        &format!("more than {per_hour} install events an hour from this device"),
    )?;
    let event = req.event.as_str();
    if app.store.release(req.release.as_str()).await?.is_none() {
        return Err(ApiError::unprocessable("unknown-release", format!("no release {}", req.release)));
    }
    METRICS.events.get_or_create(&Kind { kind: event.into() }).inc();
    apply(&app, Entry::Event { device: device.clone(), release: req.release.clone(), event: req.event }).await?;
    // Kept with the device: a failure's reason and the tail of its log,
    // written before the device is answered (it forgets what it sent).
    let detail = req.detail.clone().unwrap_or_default();
    if matches!(req.event, InstallEvent::Failed | InstallEvent::RevertedBoot | InstallEvent::RevertedHealth) {
        crate::devices::history_now(&app, device.as_str(), event, Some(req.release.as_str()), &detail).await?;
    } else {
        crate::devices::history_soon(&app, device.as_str(), event, Some(req.release.as_str()), &detail);
    }
    if req.event == InstallEvent::Committed {
        crate::devices::committed(&app, &device, &req.release).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn health(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let device = device_of(&actor).clone();
    let req: HealthRequest = parse(&body)?;
    validate::health(&req)?;
    // Each report is journaled: what one device adds per hour is bounded.
    let per_hour = app.rates.health_per_hour;
    app.limit(
        &format!("health:{device}"),
        crate::ratelimit::Rate::per_hour(per_hour),
        &format!("more than {per_hour} health reports an hour from this device"),
    )?;
    apply(
        &app,
        Entry::Health {
            device,
            period_s: req.period_s,
            boots: req.boots,
            crashes: req.crashes,
            metrics: req.metrics.into_iter().collect(),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ artifacts

/// What a `Range` header asks for (RFC 9110 §14).
#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    /// No range, or one the server ignores and answers in full: another
    /// unit, a malformed set, several ranges (allowed by §14.2).
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// A single valid range that starts past the end: 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n`.
fn parse_range(value: &str, size: u64) -> RangeAsk {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeAsk::Whole };
    let spec = spec.trim();
    if spec.is_empty() || spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else { return RangeAsk::Whole };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            None => RangeAsk::Whole,
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if size == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(size.saturating_sub(n), size - 1),
        },
        (a, "") => match num(a) {
            None => RangeAsk::Whole,
            Some(start) if start >= size => RangeAsk::Unsatisfiable,
            Some(start) => RangeAsk::Part(start, size - 1),
        },
        (a, b) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    RangeAsk::Unsatisfiable
                } else {
                    RangeAsk::Part(start, end.min(size - 1))
                }
            }
            // last < first: invalid, ignored (§14.1.1).
            _ => RangeAsk::Whole,
        },
    }
}

/// Whether `If-None-Match` matches `etag` (weak comparison, `*`, lists; RFC 9110 §13.1.2).
fn none_match(header: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    header.split(',').any(|t| t.trim() == "*" || strip(t) == strip(etag))
}

async fn download(State(app): State<Arc<App>>, headers: HeaderMap, Path(sha256): Path<String>) -> ApiResult<Response> {
    let digest: Sha256Digest = sha256
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{e}; hint: artifacts are addressed by their sha256")))?;
    let Some(size) = app.blobs.size(&digest).await? else {
        return Err(ApiError::not_found(format!("no artifact {digest}")));
    };
    let etag = format!("\"{digest}\"");
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| none_match(v, &etag)) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    // A Range applies only if the If-Range validator (when given) still matches.
    let if_range_ok = headers.get(header::IF_RANGE).is_none_or(|v| v.to_str().ok() == Some(etag.as_str()));
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).filter(|_| if_range_ok);
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(r) => match parse_range(r, size) {
            RangeAsk::Whole => (StatusCode::OK, 0, size),
            RangeAsk::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
            RangeAsk::Unsatisfiable => {
                let mut res = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range-not-satisfiable",
                    format!("the range starts past the end of the {size}-byte artifact"),
                )
                .into_response();
                let value = HeaderValue::from_str(&format!("bytes */{size}")).map_err(ApiError::internal)?;
                res.headers_mut().insert(header::CONTENT_RANGE, value);
                return Ok(res);
            }
        },
    };
    if start == 0 {
        METRICS.downloads.inc();
    }
    let stream = app.blobs.read_range(&digest, start, len).await?.inspect(|chunk| {
        if let Ok(c) = chunk {
            METRICS.download_bytes.inc_by(c.len() as u64);
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).map_err(ApiError::internal)?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = format!("bytes {start}-{}/{size}", start + len - 1);
        h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).map_err(ApiError::internal)?);
    }
    Ok(response)
}

// ------------------------------------------------------------------ releases

fn conflicting_release(id: &str) -> ApiError {
    ApiError::conflict(format!(
        "release {id} already exists with other bytes; releases never change; hint: publish a new version"
    ))
}

/// The controller entry of a release: its row and the manifest it was
/// published with (component images provide their component at the
/// release's version).
pub(crate) fn release_entry(row: &ReleaseRow, manifest: &[u8]) -> Entry {
    let provides = updraft_bundle::Manifest::from_json(manifest)
        .map(|m| {
            m.images
                .iter()
                .filter_map(|i| match &i.target {
                    updraft_bundle::Target::Component(c) => Some((c.clone(), m.version.to_string())),
                    updraft_bundle::Target::Slot => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Entry::Release {
        id: ReleaseId::new(&row.id),
        family: row.family.clone(),
        hardware: row.hardware.clone(),
        requires: row.requires.clone(),
        provides,
    }
}

async fn release_view(app: &App, r: ReleaseRow) -> ApiResult<Release> {
    let channels = app.store.channels_of(&r.id).await?;
    Ok(Release {
        id: ReleaseId::new(&r.id),
        name: r.name,
        version: r.version,
        family: r.family,
        hardware: r.hardware,
        security_version: r.security_version as u64,
        sha256: r.sha256.parse().map_err(ApiError::internal)?,
        size: r.size as u64,
        manifest_sha256: r.manifest_sha256.parse().map_err(ApiError::internal)?,
        signers: r.signers,
        builder_id: r.builder_id,
        channels,
        published_ms: r.published_ms,
        published_by: r.published_by,
    })
}

async fn publish(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: Body,
) -> ApiResult<Response> {
    let Some(trust) = app.trust().await?.map(|t| t.trusted) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-trust-root",
            "the server has no trust root, so it cannot verify bundles; hint: start it with --trust root.json",
        ));
    };
    // Stream the body to a temporary blob; nothing is kept unless it verifies.
    let mut writer = app.blobs.writer().await?;
    let mut stream = body.into_data_stream();
    loop {
        let next = tokio::time::timeout(BODY_READ_TIMEOUT, stream.next()).await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                format!("the upload stalled: nothing arrived for {} s", BODY_READ_TIMEOUT.as_secs()),
            )
        })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        writer.write(&chunk).await?;
    }
    let digest = writer.finish().await?;
    let size = writer.size();
    let temp = writer.temp_path().to_path_buf();
    let verified = tokio::task::spawn_blocking(move || {
        let v = updraft_bundle::verify_file(
            &temp,
            &trust,
            &updraft_bundle::Policy::default(),
            &updraft_bundle::NoProgress,
        )?;
        let files = updraft_bundle::metadata_files(&temp)?;
        Ok::<_, updraft_bundle::Error>((v, files))
    })
    .await
    .map_err(ApiError::internal)?;
    let (v, files) = match verified {
        Ok(x) => x,
        Err(updraft_bundle::Error::Rejected(r)) => {
            return Err(ApiError::unprocessable("bundle-rejected", format!("the bundle was refused: {r}")))
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let m = &v.header.manifest;
    let id = format!("{}@{}", m.name, m.version);
    let row = ReleaseRow {
        id: id.clone(),
        name: m.name.clone(),
        version: m.version.to_string(),
        family: m.family.clone(),
        hardware: m.hardware.clone(),
        security_version: m.security_version.0 as i64,
        sha256: digest.to_hex(),
        size: size as i64,
        manifest_sha256: v.header.manifest_sha256.to_hex(),
        signers: v.header.signers.iter().map(|k| k.to_hex()).collect(),
        builder_id: v.header.provenance.builder_id.clone(),
        requires: m.requires.iter().map(|r| (r.component.clone(), r.version.to_string())).collect(),
        published_ms: now_ms(),
        published_by: actor.label(),
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut meta = vec![
        ("manifest", text(&files.manifest)),
        ("signatures", text(&files.manifest_dsse)),
        ("provenance", text(&files.provenance_dsse)),
    ];
    if let Some(s) = &files.sbom {
        meta.push(("sbom", text(s)));
    }
    // Another release under this name and version: refused before its bytes are kept.
    if let Some(existing) = app.store.release(&id).await? {
        if existing.sha256 != row.sha256 {
            return Err(conflicting_release(&id));
        }
    }
    fault::point("publish.after-upload");
    // The blob is durable before the release row can be seen: a crash in
    // between leaves a blob that nothing lists, never a release without
    // its file. Publishing the same bytes again restores a missing blob.
    app.blobs.commit(writer, &digest).await?;
    fault::point("publish.after-blob");
    let mut change = Change::begin(&app).await?;
    match change.tx().insert_release(&row, &meta).await? {
        Inserted::Conflict => return Err(conflicting_release(&id)),
        Inserted::Identical => {
            drop(change);
            let existing = app.store.release(&id).await?.ok_or_else(|| ApiError::internal("release vanished"))?;
            return Ok((StatusCode::OK, Json(release_view(&app, existing).await?)).into_response());
        }
        Inserted::Created => {}
    }
    change.apply(release_entry(&row, &files.manifest)).await?;
    change.audit(&actor.label(), "release.publish", &id, format!("sha256 {digest}, {size} bytes"), remote);
    change.commit().await?;
    Ok((StatusCode::CREATED, Json(release_view(&app, row).await?)).into_response())
}

async fn list_releases(State(app): State<Arc<App>>) -> ApiResult<Json<Vec<Release>>> {
    let mut out = Vec::new();
    for r in app.store.releases().await? {
        out.push(release_view(&app, r).await?);
    }
    Ok(Json(out))
}

async fn show_release(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Json<Release>> {
    check_id("release", &id)?;
    let r = app.store.release(&id).await?.ok_or_else(|| ApiError::not_found(format!("no release {id}")))?;
    Ok(Json(release_view(&app, r).await?))
}

async fn release_file(State(app): State<Arc<App>>, Path((id, file)): Path<(String, String)>) -> ApiResult<Response> {
    check_id("release", &id)?;
    if !matches!(file.as_str(), "manifest" | "signatures" | "provenance" | "sbom") {
        return Err(ApiError::not_found(format!("no file {file:?}; hint: manifest, signatures, provenance or sbom")));
    }
    let body = app
        .store
        .release_meta(&id, &file)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("release {id} has no {file}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn show_channel(State(app): State<Arc<App>>, Path(channel): Path<String>) -> ApiResult<Json<Vec<String>>> {
    check_id("channel", &channel)?;
    Ok(Json(app.store.channel(&channel).await?))
}

async fn promote(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(channel): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    check_id("channel", &channel)?;
    let req: PromoteRequest = parse(&body)?;
    if app.store.release(req.release.as_str()).await?.is_none() {
        return Err(ApiError::not_found(format!("no release {}", req.release)));
    }
    let mut change = Change::begin(&app).await?;
    let added = change.tx().promote(&channel, req.release.as_str(), &actor.label(), now_ms()).await?;
    if added {
        change.audit(&actor.label(), "channel.promote", &channel, req.release.to_string(), remote);
        change.commit().await?;
        Ok(StatusCode::CREATED)
    } else {
        Ok(StatusCode::OK)
    }
}

// ------------------------------------------------------------------ rollouts

async fn create_rollout(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: CreateRolloutRequest = parse(&body)?;
    check_id("rollout id", req.id.as_str())?;
    Plan::from_toml(&req.plan).map_err(|e| ApiError::unprocessable("invalid-plan", e.to_string()))?;
    if app.store.release(req.release.as_str()).await?.is_none() {
        return Err(ApiError::not_found(format!("no release {}", req.release)));
    }
    // The controller entries, the row and the audit entries commit together.
    let mut change = Change::begin(&app).await?;
    if change.controller().status(&req.id).is_some() {
        return Err(ApiError::conflict(format!("rollout {} already exists", req.id)));
    }
    let outputs = change
        .apply(Entry::CreateRollout { id: req.id.clone(), release: req.release.clone(), plan: req.plan.clone() })
        .await?;
    if let Some(reason) = rejection(&outputs) {
        return Err(ApiError::unprocessable("rollout-rejected", reason));
    }
    change
        .tx()
        .insert_rollout(&RolloutRow {
            id: req.id.to_string(),
            release: req.release.to_string(),
            plan: req.plan.clone(),
            created_ms: now_ms(),
            created_by: actor.label(),
        })
        .await?;
    change.audit(&actor.label(), "rollout.create", req.id.as_str(), req.release.to_string(), remote);
    let mut refused_start = None;
    if req.start {
        let outputs =
            change.apply(Entry::Command { rollout: req.id.clone(), command: updraft_rollout::Command::Start }).await?;
        match rejection(&outputs) {
            Some(reason) => refused_start = Some(reason),
            None => change.audit(&actor.label(), "rollout.start", req.id.as_str(), String::new(), remote),
        }
    }
    let status = change.controller().status(&req.id);
    change.commit().await?;
    if let Some(reason) = refused_start {
        return Err(ApiError::conflict(format!("rollout {} was created but not started: {reason}", req.id)));
    }
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

async fn list_rollouts(State(app): State<Arc<App>>) -> ApiResult<Response> {
    catch_up(&app).await?;
    let rows = app.store.rollouts().await?;
    let core = app.lock_core().await;
    let out: Vec<_> = rows.iter().filter_map(|r| core.controller.status(&RolloutId::new(&r.id))).collect();
    Ok(Json(out).into_response())
}

async fn show_rollout(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Response> {
    catch_up(&app).await?;
    check_id("rollout id", &id)?;
    let status = app.lock_core().await.controller.status(&RolloutId::new(&id));
    match status {
        Some(s) => Ok(Json(s).into_response()),
        None => Err(ApiError::not_found(format!("no rollout {id}"))),
    }
}

async fn rollout_command(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path((id, command)): Path<(String, String)>,
) -> ApiResult<Response> {
    check_id("rollout id", &id)?;
    let Some(parsed) = journal::parse_command(&command) else {
        return Err(ApiError::not_found(format!(
            "no command {command:?}; hint: start, pause, resume, advance, abort or rollback"
        )));
    };
    let rollout = RolloutId::new(&id);
    let mut change = Change::begin(&app).await?;
    if change.controller().status(&rollout).is_none() {
        return Err(ApiError::not_found(format!("no rollout {id}")));
    }
    let outputs = change.apply(Entry::Command { rollout: rollout.clone(), command: parsed }).await?;
    if let Some(reason) = rejection(&outputs) {
        return Err(ApiError::conflict(reason));
    }
    change.audit(&actor.label(), &format!("rollout.{command}"), &id, String::new(), remote);
    let status = change.controller().status(&rollout);
    change.commit().await?;
    Ok(Json(status).into_response())
}

// ------------------------------------------------------------------ devices, audit, tokens

fn default_limit() -> i64 {
    100
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    action: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

async fn audit_log(State(app): State<Arc<App>>, Query(q): Query<AuditQuery>) -> ApiResult<Json<Vec<AuditEntry>>> {
    Ok(Json(app.store.audit_log(q.after, q.action.as_deref(), q.limit.clamp(1, 1000)).await?))
}

async fn add_build(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: BuildRequest = parse(&body)?;
    check_id("project", &req.project)?;
    if !req.report.is_object() {
        return Err(ApiError::unprocessable("invalid-field", "report must be a JSON object (the pipeline's report)"));
    }
    if req.commit.is_empty() || req.commit.len() > 128 {
        return Err(ApiError::bad_request("commit must be 1 to 128 characters"));
    }
    let record = updraft_store::BuildRecord {
        id: 0,
        project: req.project.clone(),
        commit: req.commit.clone(),
        passed: req.passed,
        report: req.report.to_string(),
        at_ms: now_ms(),
        actor: actor.label(),
    };
    let mut change = Change::begin(&app).await?;
    let id = change.tx().add_build(&record).await?;
    let verdict = if req.passed { "passed" } else { "failed" };
    change.audit(&actor.label(), "build.record", &req.project, format!("{} {verdict}", req.commit), remote);
    change.commit().await?;
    Ok((StatusCode::CREATED, Json(BuildCreated { id })).into_response())
}

#[derive(serde::Deserialize)]
struct BuildsQuery {
    #[serde(default)]
    project: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

async fn list_builds(
    State(app): State<Arc<App>>,
    Query(q): Query<BuildsQuery>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let rows = app.store.builds(q.project.as_deref(), q.limit.clamp(1, 1000)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|b| {
                let report: serde_json::Value = serde_json::from_str(&b.report).unwrap_or(serde_json::Value::Null);
                let mut v = serde_json::to_value(&b).unwrap_or_default();
                v["report"] = report;
                v
            })
            .collect(),
    ))
}

async fn get_flaky(State(app): State<Arc<App>>, Path(project): Path<String>) -> ApiResult<Response> {
    check_id("project", &project)?;
    let state = app.store.flaky_state(&project).await?.unwrap_or_else(|| "{}".into());
    Ok(([(header::CONTENT_TYPE, "application/json")], state).into_response())
}

async fn put_flaky(
    State(app): State<Arc<App>>,
    Path(project): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    check_id("project", &project)?;
    let v: serde_json::Value = parse(&body)?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the flaky-test history is a JSON object"));
    }
    app.store.set_flaky_state(&project, &v.to_string(), now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tokens(State(app): State<Arc<App>>) -> ApiResult<Json<Vec<TokenInfo>>> {
    Ok(Json(app.store.list_api_tokens().await?))
}

async fn create_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: CreateTokenRequest = parse(&body)?;
    check_id("token name", &req.name)?;
    let mut change = Change::begin(&app).await?;
    let (id, token) = change.tx().create_api_token(&req.name, req.role, now_ms()).await?;
    change.audit(&actor.label(), "token.create", &req.name, req.role.as_str().into(), remote);
    change.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { id, name: req.name, role: req.role, token })).into_response())
}

async fn revoke_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: i64 = id.parse().map_err(|_| ApiError::bad_request(format!("token id {id:?} is not a number")))?;
    let mut change = Change::begin(&app).await?;
    if change.tx().is_last_admin_token(id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "last-admin-token",
            "this is the last admin token; create another admin token first \
             (a lost admin token is replaced with `updraft serve admin-token --reset`)",
        ));
    }
    if !change.tx().revoke_api_token(id).await? {
        return Err(ApiError::not_found(format!("no token {id}")));
    }
    change.audit(&actor.label(), "token.revoke", &id.to_string(), String::new(), remote);
    change.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_enrollment_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: CreateEnrollmentTokenRequest = parse(&body)?;
    if req.uses == 0 || req.uses > 1_000_000 || req.expires_in_s == 0 || req.expires_in_s > 366 * 86400 {
        return Err(ApiError::bad_request("uses must be 1 to 1000000 and expiresInS 1 to 31622400"));
    }
    let expires_ms = now_ms() + (req.expires_in_s as i64) * 1000;
    let mut change = Change::begin(&app).await?;
    let token =
        change.tx().create_enrollment_token(req.uses, expires_ms, req.require_accept, &actor.label(), now_ms()).await?;
    let detail = format!("{} uses{}", req.uses, if req.require_accept { ", acceptance required" } else { "" });
    change.audit(&actor.label(), "enrollment-token.create", "-", detail, remote);
    change.commit().await?;
    let created = CreatedEnrollmentToken { token, uses: req.uses, expires_ms, require_accept: req.require_accept };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn show_trust_root(State(app): State<Arc<App>>) -> ApiResult<Response> {
    let Some(trust) = app.trust().await? else {
        return Err(ApiError::not_found("the server has no trust root"));
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], trust.latest.to_json()).into_response())
}

async fn rotate_trust_root(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let next = updraft_bundle::SignedRoot::parse(&body)
        .map_err(|e| ApiError::unprocessable("invalid-trust-root", format!("not a trust root: {e}")))?;
    match app.rotate_trust(next, &actor.label(), remote).await? {
        Ok(t) => {
            let v = t.latest.root.version;
            Ok((StatusCode::CREATED, Json(serde_json::json!({ "version": v }))).into_response())
        }
        Err(reason) => Err(ApiError::unprocessable("trust-root-rejected", reason)),
    }
}
