//! Pipeline runs (build health) and flaky-test histories.

use super::*;

pub(super) async fn add_build(
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
pub(super) struct BuildsQuery {
    #[serde(default)]
    project: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

pub(super) async fn list_builds(
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

pub(super) async fn get_flaky(State(app): State<Arc<App>>, Path(project): Path<String>) -> ApiResult<Response> {
    check_id("project", &project)?;
    let state = app.store.flaky_state(&project).await?.unwrap_or_else(|| "{}".into());
    Ok(([(header::CONTENT_TYPE, "application/json")], state).into_response())
}

pub(super) async fn put_flaky(
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
