//! Rollouts: creation from a plan, status, operator commands.

use super::*;

pub(super) async fn create_rollout(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: CreateRolloutRequest = parse(&body)?;
    check_id("rollout id", req.id.as_str())?;
    Plan::from_toml(&req.plan).map_err(|e| ApiError::unprocessable("invalid-plan", e.to_string()))?;
    let Some(release) = app.store.release(req.release.as_str()).await? else {
        return Err(ApiError::not_found(format!("no release {}", req.release)));
    };
    crate::ddi::check_servable(&app, &release).await?;
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

pub(super) async fn list_rollouts(State(app): State<Arc<App>>) -> ApiResult<Response> {
    catch_up(&app).await?;
    let rows = app.store.rollouts().await?;
    let core = app.lock_core().await;
    let out: Vec<_> = rows.iter().filter_map(|r| core.controller.status(&RolloutId::new(&r.id))).collect();
    Ok(Json(out).into_response())
}

pub(super) async fn show_rollout(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Response> {
    catch_up(&app).await?;
    check_id("rollout id", &id)?;
    let status = app.lock_core().await.controller.status(&RolloutId::new(&id));
    match status {
        Some(s) => Ok(Json(s).into_response()),
        None => Err(ApiError::not_found(format!("no rollout {id}"))),
    }
}

pub(super) async fn rollout_command(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path((id, command)): Path<(String, String)>,
) -> ApiResult<Response> {
    let status = run_rollout_command(&app, &actor, remote, &id, &command).await?;
    Ok(Json(status).into_response())
}

/// Runs an operator command on a rollout and audits it (the API and the
/// dashboard both come here).
pub(crate) async fn run_rollout_command(
    app: &Arc<App>,
    actor: &Actor,
    remote: SocketAddr,
    id: &str,
    command: &str,
) -> ApiResult<Option<updraft_rollout::RolloutStatus>> {
    check_id("rollout id", id)?;
    let Some(parsed) = journal::parse_command(command) else {
        return Err(ApiError::not_found(format!(
            "no command {command:?}; hint: start, pause, resume, advance, abort or rollback"
        )));
    };
    let rollout = RolloutId::new(id);
    let mut change = Change::begin(app).await?;
    if change.controller().status(&rollout).is_none() {
        return Err(ApiError::not_found(format!("no rollout {id}")));
    }
    let outputs = change.apply(Entry::Command { rollout: rollout.clone(), command: parsed }).await?;
    if let Some(reason) = rejection(&outputs) {
        return Err(ApiError::conflict(reason));
    }
    change.audit(&actor.label(), &format!("rollout.{command}"), id, String::new(), remote);
    let status = change.controller().status(&rollout);
    change.commit().await?;
    Ok(status)
}
