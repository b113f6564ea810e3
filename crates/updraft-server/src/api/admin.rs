//! The audit log, API and enrollment tokens, the trust root.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    action: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

pub(super) async fn audit_log(
    State(app): State<Arc<App>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    Ok(Json(app.store.audit_log(q.after, q.action.as_deref(), q.limit.clamp(1, 1000)).await?))
}

pub(super) async fn list_tokens(State(app): State<Arc<App>>) -> ApiResult<Json<Vec<TokenInfo>>> {
    Ok(Json(app.store.list_api_tokens().await?))
}

pub(super) async fn create_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: CreateTokenRequest = parse(&body)?;
    let created = run_create_token(&app, &actor, remote, &req.name, req.role).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Creates an API token and audits it (the API and the dashboard both come here).
pub(crate) async fn run_create_token(
    app: &Arc<App>,
    actor: &Actor,
    remote: SocketAddr,
    name: &str,
    role: Role,
) -> ApiResult<CreatedToken> {
    check_id("token name", name)?;
    let mut change = Change::begin(app).await?;
    let (id, token) = change.tx().create_api_token(name, role, now_ms()).await?;
    change.audit(&actor.label(), "token.create", name, role.as_str().into(), remote);
    change.commit().await?;
    Ok(CreatedToken { id, name: name.to_owned(), role, token })
}

pub(super) async fn revoke_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    run_revoke_token(&app, &actor, remote, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes an API token (never the last admin token) and audits it.
pub(crate) async fn run_revoke_token(app: &Arc<App>, actor: &Actor, remote: SocketAddr, id: &str) -> ApiResult<()> {
    let id: i64 = id.parse().map_err(|_| ApiError::bad_request(format!("token id {id:?} is not a number")))?;
    let mut change = Change::begin(app).await?;
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
    Ok(())
}

pub(super) async fn create_enrollment_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: CreateEnrollmentTokenRequest = parse(&body)?;
    let created = run_create_enrollment_token(&app, &actor, remote, &req).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Creates an enrollment token and audits it.
pub(crate) async fn run_create_enrollment_token(
    app: &Arc<App>,
    actor: &Actor,
    remote: SocketAddr,
    req: &CreateEnrollmentTokenRequest,
) -> ApiResult<CreatedEnrollmentToken> {
    if req.uses == 0 || req.uses > 1_000_000 || req.expires_in_s == 0 || req.expires_in_s > 366 * 86400 {
        return Err(ApiError::bad_request("uses must be 1 to 1000000 and expiresInS 1 to 31622400"));
    }
    let expires_ms = now_ms() + (req.expires_in_s as i64) * 1000;
    let mut change = Change::begin(app).await?;
    let token =
        change.tx().create_enrollment_token(req.uses, expires_ms, req.require_accept, &actor.label(), now_ms()).await?;
    let detail = format!("{} uses{}", req.uses, if req.require_accept { ", acceptance required" } else { "" });
    change.audit(&actor.label(), "enrollment-token.create", "-", detail, remote);
    change.commit().await?;
    Ok(CreatedEnrollmentToken { token, uses: req.uses, expires_ms, require_accept: req.require_accept })
}

pub(super) async fn show_trust_root(State(app): State<Arc<App>>) -> ApiResult<Response> {
    let Some(trust) = app.trust().await? else {
        return Err(ApiError::not_found("the server has no trust root"));
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], trust.latest.to_json()).into_response())
}

pub(super) async fn rotate_trust_root(
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

/// How long a one-time sign-in link works.
pub const SIGN_IN_LINK_TTL_MS: i64 = 10 * 60 * 1000;

pub(super) async fn create_sign_in_link(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Response> {
    let secret = bearer(&headers).ok_or_else(ApiError::unauthorized)?;
    let token = app.store.find_api_token(secret).await?.ok_or_else(ApiError::unauthorized)?;
    let now = now_ms();
    let expires_ms = now + SIGN_IN_LINK_TTL_MS;
    let link = app.store.create_sign_in_link(token.id, now, expires_ms).await?;
    let body = SignInLink { path: format!("/sign-in/link/{link}"), expires_ms };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
