//! The dashboard: HTML pages served by the same process at `/`, listed in
//! the one route table (`crate::api::ROUTES`) with `Access::Page(role)`.
//!
//! A browser signs in by pasting an API token once; the server opens a
//! session (`sessions` table: only hashes kept, dead when its token is
//! revoked or it expires) and sets an HttpOnly, SameSite=Strict cookie
//! (Secure under HTTPS). [`enforce_page`] is the pages' access check, as
//! `enforce` is the API's: no session redirects to sign-in, a role short
//! of the route's is a 403, and every POST must carry the session's CSRF
//! secret in its `csrf` field. The caller reaches handlers as the same
//! [`Actor`] as on the API, so actions are audited under the token's name.
//!
//! Templates are maud (compiled in, every interpolation escaped); charts are
//! SVG drawn here; the one script (`assets/app.js`) only enhances (live
//! updates, confirmations): every page reads with JavaScript off. Every
//! page carries a strict Content-Security-Policy with no inline script.

mod charts;
mod pages;

pub(crate) use pages::*;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use updraft_proto::Role;

use crate::api::Actor;
use crate::error::ApiError;
use crate::{now_ms, App};

/// The session cookie's name.
pub const COOKIE: &str = "updraft_session";
/// How long a session lives after sign-in.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// The signed-in browser: what pages need to render forms and the header.
#[derive(Clone, Debug)]
pub struct Session {
    pub name: String,
    pub role: Role,
    /// The secret every state-changing form carries.
    pub csrf: String,
}

impl Session {
    /// Whether the session's role may do what `needed` may.
    pub fn may(&self, needed: Role) -> bool {
        self.role.allows(needed)
    }
}

/// Whether the request came over TLS (set per connection by `serve`).
#[derive(Clone, Copy, Debug)]
pub struct Secure(pub bool);

/// The security headers every page carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An HTML response with the dashboard's headers.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut res = (status, markup.into_string()).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    security_headers(h);
    res
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A page's outcome: the page, or an error page.
pub type PageResult = Result<Response, PageError>;

/// An error shown as a page (the API's errors are JSON).
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl From<updraft_store::StoreError> for PageError {
    fn from(e: updraft_store::StoreError) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        if e.status.is_server_error() {
            tracing::error!(message = %e.message, "page failed");
        }
        let title = e.status.canonical_reason().unwrap_or("Error");
        html_response(
            e.status,
            layout(
                title,
                None,
                html! {
                    h1 { (title) }
                    p role="alert" { (e.message) }
                    p { a href="/" { "Back to the overview" } }
                },
            ),
        )
    }
}

/// A form body (`application/x-www-form-urlencoded`) whose rejection is an
/// error page, not the API's JSON.
pub struct PageForm<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for PageForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(PageForm(v)),
            Err(e) => Err(PageError(ApiError::bad_request(format!(
                "the form is incomplete or malformed ({}); go back and fill in every field",
                e.body_text()
            )))),
        }
    }
}

/// The page frame: head, navigation (when signed in), main.
pub fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Updraft" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                @if let Some(s) = session {
                    header {
                        nav aria-label="Main" {
                            a.brand href="/" { "Updraft" }
                            a href="/rollouts" { "Rollouts" }
                            a href="/releases" { "Releases" }
                            a href="/devices" { "Devices" }
                            a href="/builds" { "Builds" }
                            a href="/audit" { "Audit log" }
                            @if s.may(Role::Admin) { a href="/tokens" { "Tokens" } }
                        }
                        form.signout method="post" action="/sign-out" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span { (s.name) " (" (s.role.as_str()) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Equal secrets, compared in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A `303 See Other` to a path of this server (after a form, or to sign in),
/// with the dashboard's security headers.
pub fn redirect(location: &str) -> Result<Response, PageError> {
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_str(location).map_err(ApiError::internal)?);
    security_headers(h);
    Ok(res)
}

/// Where a signed-out request goes: sign-in, then back to `path`.
fn to_sign_in(path_and_query: &str) -> Response {
    let next: String = form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
    redirect(&format!("/sign-in?next={next}")).unwrap_or_else(IntoResponse::into_response)
}

/// A local path to go back to after sign-in (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

/// The pages' access check (see the module documentation).
pub async fn enforce_page(app: Arc<App>, needed: Role, mut req: Request, next: Next) -> Response {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let Some(secret) = cookie(req.headers(), COOKIE).map(str::to_owned) else { return to_sign_in(&path) };
    let (token, csrf) = match app.store.session(&secret, now_ms()).await {
        Ok(Some(s)) => s,
        Ok(None) => return to_sign_in(&path),
        Err(e) => return PageError(e.into()).into_response(),
    };
    let session = Session { name: token.name.clone(), role: token.role, csrf };
    let actor = Actor::Token { name: token.name, role: token.role };
    crate::api::note_actor(&actor);
    if !session.may(needed) {
        return PageError(ApiError::forbidden(format!(
            "this needs the {} role; you are signed in with {}",
            needed.as_str(),
            session.role.as_str()
        )))
        .into_response();
    }
    if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, crate::api::MAX_JSON_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return PageError(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "form too large"))
                    .into_response()
            }
        };
        let sent = form_urlencoded::parse(&bytes).find(|(k, _)| k == "csrf").map(|(_, v)| v.into_owned());
        if !sent.as_deref().is_some_and(|s| same_secret(s, &session.csrf)) {
            return PageError(ApiError::forbidden(
                "this form is missing its CSRF token or it is stale; reload the page and try again",
            ))
            .into_response();
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(actor);
    req.extensions_mut().insert(session);
    next.run(req).await
}

#[derive(Deserialize)]
pub(crate) struct SignInQuery {
    next: Option<String>,
}

fn sign_in_page(next: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in to Updraft" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.signin method="post" action="/sign-in" {
                input type="hidden" name="next" value=(next);
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="off" required;
                p.hint { "Paste a token once (" code { "updraft token create" } " or your admin gives you one); "
                    "the browser keeps a session cookie, never the token." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub(crate) async fn sign_in_form(Query(q): Query<SignInQuery>) -> Response {
    html_response(StatusCode::OK, sign_in_page(&safe_next(q.next.as_deref()), None))
}

#[derive(Deserialize)]
pub(crate) struct SignInForm {
    token: String,
    next: Option<String>,
}

pub(crate) async fn sign_in(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    secure: Option<axum::Extension<Secure>>,
    PageForm(form): PageForm<SignInForm>,
) -> PageResult {
    let next = safe_next(form.next.as_deref());
    let now = now_ms();
    let Some(s) = app.store.create_session(form.token.trim(), now, now + SESSION_TTL_MS).await? else {
        return Ok(html_response(
            StatusCode::UNAUTHORIZED,
            sign_in_page(&next, Some("That token is unknown or revoked. Check it, or ask an admin for a new one.")),
        ));
    };
    signed_in(&app, &s, remote, secure, &next, "").await
}

/// Audits a new session and answers with its cookie, on to `next`.
async fn signed_in(
    app: &App,
    s: &updraft_store::NewSession,
    remote: SocketAddr,
    secure: Option<axum::Extension<Secure>>,
    next: &str,
    how: &str,
) -> PageResult {
    app.store
        .audit(&updraft_proto::AuditEntry {
            id: 0,
            at_ms: now_ms(),
            actor: format!("token:{}", s.token.name),
            action: "session.sign-in".into(),
            subject: s.token.name.clone(),
            detail: how.to_owned(),
            remote: remote.ip().to_string(),
        })
        .await?;
    let https = secure.is_some_and(|s| s.0 .0) || app.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        s.secret,
        SESSION_TTL_MS / 1000,
        if https { "; Secure" } else { "" }
    );
    let mut res = redirect(next)?;
    res.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?);
    Ok(res)
}

/// `GET /sign-in/link/{link}`: a one-time link (`updraft dashboard`); used
/// once, then gone.
pub(crate) async fn sign_in_link(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    secure: Option<axum::Extension<Secure>>,
    axum::extract::Path(link): axum::extract::Path<String>,
) -> PageResult {
    let now = now_ms();
    match app.store.use_sign_in_link(&link, now, now + SESSION_TTL_MS).await? {
        Some(s) => signed_in(&app, &s, remote, secure, "/", "one-time link").await,
        // Gone, not unauthorized: the link existed or never will again.
        None => Ok(html_response(
            StatusCode::GONE,
            sign_in_page(
                "/",
                Some("That sign-in link was used already, has expired or its token was revoked. Run `updraft dashboard` for a new one, or paste a token."),
            ),
        )),
    }
}

pub(crate) async fn sign_out(
    State(app): State<Arc<App>>,
    axum::Extension(actor): axum::Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> PageResult {
    if let Some(secret) = cookie(&headers, COOKIE) {
        app.store.end_session(secret).await?;
    }
    app.store
        .audit(&updraft_proto::AuditEntry {
            id: 0,
            at_ms: now_ms(),
            actor: actor.label(),
            action: "session.sign-out".into(),
            subject: String::new(),
            detail: String::new(),
            remote: remote.ip().to_string(),
        })
        .await?;
    let mut res = redirect("/sign-in")?;
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"))
            .map_err(ApiError::internal)?,
    );
    Ok(res)
}

/// The dashboard's stylesheet and script, compiled in.
pub(crate) async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.css" => (include_str!("../../assets/app.css"), "text/css; charset=utf-8"),
        "app.js" => (include_str!("../../assets/app.js"), "text/javascript; charset=utf-8"),
        _ => return PageError(ApiError::not_found(format!("no asset {file}"))).into_response(),
    };
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/rollouts/r1")), "/rollouts/r1");
        for bad in ["//evil.example", "https://evil.example", "/\\evil", "rollouts"] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; updraft_session=ses_x; b=2"));
        assert_eq!(cookie(&h, COOKIE), Some("ses_x"));
        assert_eq!(cookie(&h, "c"), None);
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
    }
}
