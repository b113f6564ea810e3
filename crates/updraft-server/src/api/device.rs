//! The device API: enrollment, check-ins, install events, health telemetry, artifact downloads.

use super::*;

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

pub(super) async fn enroll(
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

pub(super) async fn check_in(
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

pub(super) async fn events(
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
    record_event(&app, &device, &req.release, req.event, req.detail.as_deref().unwrap_or_default()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn health(
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

/// Applies an install event (from the agent or a DDI client's feedback)
/// and keeps it in the device's history; a failure's detail is written
/// before the device is answered (it forgets what it sent).
pub(crate) async fn record_event(
    app: &App,
    device: &DeviceId,
    release: &ReleaseId,
    event: InstallEvent,
    detail: &str,
) -> ApiResult<()> {
    let name = event.as_str();
    if app.store.release(release.as_str()).await?.is_none() {
        return Err(ApiError::unprocessable("unknown-release", format!("no release {release}")));
    }
    METRICS.events.get_or_create(&Kind { kind: name.into() }).inc();
    apply(app, Entry::Event { device: device.clone(), release: release.clone(), event }).await?;
    if matches!(event, InstallEvent::Failed | InstallEvent::RevertedBoot | InstallEvent::RevertedHealth) {
        crate::devices::history_now(app, device.as_str(), name, Some(release.as_str()), detail).await?;
    } else {
        crate::devices::history_soon(app, device.as_str(), name, Some(release.as_str()), detail);
    }
    if event == InstallEvent::Committed {
        crate::devices::committed(app, device, release).await?;
    }
    Ok(())
}

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

pub(super) async fn download(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(sha256): Path<String>,
) -> ApiResult<Response> {
    let digest: Sha256Digest = sha256
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{e}; hint: artifacts are addressed by their sha256")))?;
    let Some(size) = app.blobs.size(&digest).await? else {
        return Err(ApiError::not_found(format!("no artifact {digest}")));
    };
    blob_response(&app, &headers, &digest, size, format!("\"{digest}\""), &[]).await
}

/// Answers a download of blob `digest` (`size` bytes): `If-None-Match`,
/// `Range` with `If-Range`, the `ETag` given, and any `extra` headers.
pub(crate) async fn blob_response(
    app: &App,
    headers: &HeaderMap,
    digest: &Sha256Digest,
    size: u64,
    etag: String,
    extra: &[(header::HeaderName, String)],
) -> ApiResult<Response> {
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
    let stream = app.blobs.read_range(digest, start, len).await?.inspect(|chunk| {
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
    for (name, value) in extra {
        h.insert(name.clone(), HeaderValue::from_str(value).map_err(ApiError::internal)?);
    }
    Ok(response)
}
