//! Routes, their access and the HTTP layer around the handlers. Every
//! route is listed once in [`ROUTES`] with the access it needs; the router,
//! the OpenAPI document and the role tests are all built from that table.
//! The handlers live by area: `device` (the device API and downloads),
//! `releases`, `rollouts`, `pipelines`, `admin` (audit, tokens, trust
//! root); device inventory is `crate::devices`.

mod admin;
mod device;
mod pipelines;
mod releases;
mod rollouts;

use admin::*;
pub(crate) use admin::{run_create_enrollment_token, run_create_token, run_revoke_token};
use device::*;
pub(crate) use device::{blob_response, device_entry, record_event};
use pipelines::*;
use releases::*;
pub(crate) use releases::{release_entry, release_view, run_promote};
pub(crate) use rollouts::run_rollout_command;
use rollouts::*;

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
    /// A dashboard page: a browser session of a token with this role (or
    /// admin); POSTs carry the session's CSRF secret (`crate::dashboard`).
    Page(Role),
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
    /// A dashboard page (not in the OpenAPI document).
    Html,
    /// A dashboard form (`application/x-www-form-urlencoded`).
    Form,
}

impl RouteSpec {
    /// Whether the route is part of the dashboard rather than the API.
    pub fn is_page(&self) -> bool {
        matches!(self.access, Access::Page(_))
            || matches!(self.response, Payload::Html)
            || self.path.starts_with("/assets/")
    }
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

use Payload::{AnyJson, Binary, Form, Html, Json as J, Object, Text};

routes! {
    "GET" "/" Access::Page(Role::Viewer), "Dashboard: the fleet overview.", Payload::None => Html, get(crate::dashboard::overview);
    "GET" "/sign-in" Access::Public, "Dashboard: the sign-in form.", Payload::None => Html, get(crate::dashboard::sign_in_form);
    "POST" "/sign-in" Access::Public, "Dashboard: sign in with an API token (form); sets the session cookie.", Form => Html, post(crate::dashboard::sign_in);
    "GET" "/sign-in/link/{link}" Access::Public, "Dashboard: sign in with a one-time link (`updraft dashboard`).", Payload::None => Html, get(crate::dashboard::sign_in_link);
    "POST" "/sign-out" Access::Page(Role::Viewer), "Dashboard: end the session.", Form => Html, post(crate::dashboard::sign_out);
    "GET" "/assets/{file}" Access::Public, "Dashboard: the stylesheet and the script.", Payload::None => Text, get(crate::dashboard::asset);
    "GET" "/rollouts" Access::Page(Role::Viewer), "Dashboard: rollouts.", Payload::None => Html, get(crate::dashboard::rollouts_page);
    "GET" "/rollouts/{id}" Access::Page(Role::Viewer), "Dashboard: a rollout, updated live.", Payload::None => Html, get(crate::dashboard::rollout_page);
    "GET" "/rollouts/{id}/live" Access::Page(Role::Viewer), "Dashboard: a rollout page's live part, as server-sent events.", Payload::None => Text, get(crate::dashboard::rollout_stream);
    "POST" "/rollouts/{id}/{command}" Access::Page(Role::Operator), "Dashboard: pause, resume, advance, abort or roll back (form).", Form => Html, post(crate::dashboard::rollout_action);
    "GET" "/releases" Access::Page(Role::Viewer), "Dashboard: releases with their channels.", Payload::None => Html, get(crate::dashboard::releases_page);
    "GET" "/releases/{id}" Access::Page(Role::Viewer), "Dashboard: a release: manifest, signatures, provenance, SBOM.", Payload::None => Html, get(crate::dashboard::release_page);
    "POST" "/releases/{id}/promote" Access::Page(Role::Releaser), "Dashboard: promote a release into a channel (form).", Form => Html, post(crate::dashboard::promote_action);
    "GET" "/devices" Access::Page(Role::Viewer), "Dashboard: devices, filtered, a page at a time.", Payload::None => Html, get(crate::dashboard::devices_page);
    "GET" "/devices/{id}" Access::Page(Role::Viewer), "Dashboard: a device: inventory, history, failures.", Payload::None => Html, get(crate::dashboard::device_page);
    "GET" "/builds" Access::Page(Role::Viewer), "Dashboard: pipeline runs per project, coverage trend, quarantined tests.", Payload::None => Html, get(crate::dashboard::builds_page);
    "GET" "/tokens" Access::Page(Role::Admin), "Dashboard: API tokens and enrollment tokens.", Payload::None => Html, get(crate::dashboard::tokens_page);
    "POST" "/tokens" Access::Page(Role::Admin), "Dashboard: create an API token (form; shown once).", Form => Html, post(crate::dashboard::create_token_action);
    "POST" "/tokens/{id}/revoke" Access::Page(Role::Admin), "Dashboard: revoke an API token (form).", Form => Html, post(crate::dashboard::revoke_token_action);
    "POST" "/enrollment-tokens" Access::Page(Role::Admin), "Dashboard: create an enrollment token (form; shown once).", Form => Html, post(crate::dashboard::create_enrollment_action);
    "GET" "/audit" Access::Page(Role::Viewer), "Dashboard: the audit log, filtered.", Payload::None => Html, get(crate::dashboard::audit_page);
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
    "POST" "/api/v1/devices" Access::Role(Role::Operator), "Register a device by hand (a hawkBit DDI client: protocol ddi); returns its token (shown once).",
        J(schema::<CreateDeviceRequest>) => J(schema::<CreatedDevice>), post(crate::devices::create);
    "POST" "/api/v1/devices/{id}/request-config" Access::Role(Role::Operator), "Ask a DDI device for its attributes again (its next poll offers configData).",
        Payload::None => J(schema::<Device>), post(crate::devices::request_config);
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
    "POST" "/api/v1/sign-in-links" Access::Role(Role::Viewer), "A one-time dashboard sign-in link for the calling token (10 minutes).",
        Payload::None => J(schema::<SignInLink>), post(create_sign_in_link);
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
        .merge(crate::ddi::router())
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
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
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

/// The secret of `Authorization: Bearer …`, or of `TargetToken …` (a
/// hawkBit client's device token, so that it can post health samples too).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("TargetToken ")).map(str::trim)
}

async fn authenticate(app: &App, headers: &HeaderMap) -> ApiResult<Actor> {
    let secret = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    if secret.starts_with("upd_") {
        let id = device_for_token(app, secret).await?.ok_or_else(ApiError::unauthorized)?;
        return Ok(Actor::Device { id });
    }
    let token = app.store.find_api_token(secret).await?.ok_or_else(ApiError::unauthorized)?;
    Ok(Actor::Token { name: token.name, role: token.role })
}

/// The device whose token `secret` is (from the cache, else the database).
pub(crate) async fn device_for_token(app: &App, secret: &str) -> ApiResult<Option<DeviceId>> {
    let hash = hash_secret(secret);
    if let Some(id) = app.device_tokens.read().expect("token cache").get(&hash) {
        return Ok(Some(id.clone()));
    }
    let Some(device) = app.store.device_by_token(secret).await? else { return Ok(None) };
    let id = DeviceId::new(device.id.clone());
    crate::devices::seed(app, device);
    app.device_tokens.write().expect("token cache").insert(hash, id.clone());
    Ok(Some(id))
}

/// The one access check: every route passes through it with its table
/// entry's [`Access`] before its handler runs; the caller (an [`Actor`])
/// goes into the request's extensions for the handler. Rate limits per
/// token and per device are applied here too.
async fn enforce(State((app, access)): State<(Arc<App>, Access)>, mut req: Request, next: Next) -> Response {
    if access == Access::Public {
        return next.run(req).await;
    }
    if let Access::Page(needed) = access {
        return crate::dashboard::enforce_page(app, needed, req, next).await;
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
    note_actor(&actor);
    let label = actor.label();
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
        (Access::Page(_), _) => unreachable!("pages are checked by dashboard::enforce_page"),
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

/// Names the caller in the request log.
pub(crate) fn note_actor(actor: &Actor) {
    let _ = ACTOR.try_with(|a| *a.borrow_mut() = Some(actor.label()));
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

/// Entries a listing answers when the query names no `limit`.
fn default_limit() -> i64 {
    100
}
