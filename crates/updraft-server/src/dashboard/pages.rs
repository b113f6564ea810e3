//! The pages: fleet overview, rollouts, a rollout (live), the audit log.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::Path;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream};
use maud::{html, Markup};
use updraft_rollout::{GateReport, RolloutState, RolloutStatus, Verdict};
use updraft_types::RolloutId;

use super::charts;
use super::*;
use crate::api::{catch_up, check_id};

/// Failed devices a rollout page lists.
const FAILED_LISTED: usize = 50;
/// Failures the overview lists.
const FAILURES_LISTED: i64 = 10;
/// History kinds that are failures (install events the agent reports).
const FAILURE_KINDS: &[&str] = &["failed", "reverted_boot", "reverted_health"];
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Audit entries per page.
const AUDIT_PAGE: i64 = 100;
/// How often an open rollout page's stream looks for a change.
const LIVE_EVERY: Duration = Duration::from_secs(1);

fn when(ms: i64) -> String {
    updraft_types::Timestamp((ms.max(0) / 1000) as u64).to_string()
}

fn state_badge(state: &RolloutState) -> Markup {
    let name = state.name();
    html! { span class={"state state-" (name)} { (name.replace('_', " ")) } }
}

fn state_reason(state: &RolloutState) -> Option<&str> {
    match state {
        RolloutState::Paused { reason } | RolloutState::RolledBack { reason } => Some(reason),
        _ => None,
    }
}

/// A gate's verdict in plain words, as the demo prints it.
pub fn gate_sentence(g: &GateReport) -> String {
    let t = &g.test;
    let rate = if t.trials > 0.0 { format!(" ({:.1}%)", 100.0 * t.failures / t.trials) } else { String::new() };
    let what = if let Some(x) = &g.exposure {
        let ratio = x.ratio.map_or_else(String::new, |r| format!(", {r:.2}x the baseline's rate"));
        format!(
            "{} of {} crashes were on the new release{rate} over {:.0} device-hours on it and {:.0} on the baseline{ratio}",
            t.failures, t.trials, x.canary_hours, x.baseline_hours
        )
    } else {
        format!("{} of {} failed{rate}", t.failures, t.trials)
    };
    let scope = g.scope.describe();
    match t.verdict {
        Verdict::Pass => format!("{} passed for {scope}: {what}, within the limit ({})", g.gate, g.limit),
        Verdict::Fail => format!("{} failed for {scope}: {what}, over the limit ({})", g.gate, g.limit),
        Verdict::Undecided => format!("{} is undecided for {scope}: {what} so far; it needs more outcomes", g.gate),
    }
}

/// `GET /`: the fleet at a glance.
pub(crate) async fn overview(State(app): State<Arc<App>>, Extension(session): Extension<Session>) -> PageResult {
    catch_up(&app).await?;
    let rows = app.store.rollouts().await?;
    let (counts, statuses) = {
        let core = app.lock_core().await;
        let c = &core.controller;
        let statuses: Vec<RolloutStatus> = rows.iter().filter_map(|r| c.status(&RolloutId::new(&r.id))).collect();
        (c.fleet_counts(), statuses)
    };
    let builds = app.store.builds(None, 10).await?;
    let online = crate::devices::online_counts(&app).await?;
    let day_ago = updraft_store::now_ms() - DAY_MS;
    let (failures, recent) = app.store.recent_history(FAILURE_KINDS, day_ago, FAILURES_LISTED).await?;
    let active: Vec<&RolloutStatus> =
        statuses.iter().filter(|s| matches!(s.state, RolloutState::Running | RolloutState::Paused { .. })).collect();
    let body = html! {
        h1 { "Fleet overview" }
        section aria-labelledby="active" {
            h2 id="active" { "Active rollouts" }
            @if active.is_empty() {
                p.empty { "No rollout is running or paused. " a href="/rollouts" { "All rollouts" } }
            } @else {
                (rollout_table(&active))
            }
        }
        section aria-labelledby="online" {
            h2 id="online" { "Check-ins" }
            p { "Online means a check-in within two poll intervals (" (2 * app.poll_interval_s) " s)." }
            (charts::bars("Devices by last check-in", &[
                ("online".to_owned(), online.online),
                ("offline".to_owned(), online.offline),
                ("never checked in".to_owned(), online.never),
            ]))
            p { a href="/devices?online=false" { "Offline devices" } }
        }
        section aria-labelledby="failures" {
            h2 id="failures" { "Failures in the last 24 hours" }
            @if failures == 0 { p.empty { "No device reported a failed install or a revert in the last 24 hours." } }
            @else {
                p { (failures) " failed installs and reverts; the newest:" }
                table {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Device" } th scope="col" { "What" }
                        th scope="col" { "Release" } th scope="col" { "Reason" } } }
                    tbody {
                        @for (device, h) in &recent {
                            tr {
                                td { (when(h.at_ms)) }
                                td { a href={"/devices/" (device)} { (device) } }
                                td { (h.kind.replace('_', " ")) }
                                td { (h.release.as_deref().unwrap_or("")) }
                                td { (h.detail.lines().next().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        section.charts aria-labelledby="devices" {
            h2 id="devices" { "Devices" }
            (charts::bars("Devices by release", &counts.release))
            (charts::bars("Devices by hardware revision", &counts.hardware))
            (charts::bars("Devices by region", &counts.region))
        }
        section aria-labelledby="builds" {
            h2 id="builds" { "Build health" }
            @if builds.is_empty() {
                p.empty { "No pipeline run recorded yet (" code { "updraft pipeline run --server URL" } " records one)." }
            } @else {
                table {
                    caption { "The latest pipeline runs" }
                    thead { tr { th scope="col" { "Project" } th scope="col" { "Commit" } th scope="col" { "Result" } th scope="col" { "When" } th scope="col" { "By" } } }
                    tbody {
                        @for b in &builds {
                            tr {
                                td { (b.project) }
                                td { code { (b.commit.chars().take(12).collect::<String>()) } }
                                td { @if b.passed { span.ok { "passed" } } @else { span.bad { "failed" } } }
                                td { (when(b.at_ms)) }
                                td { (b.actor) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(html_response(StatusCode::OK, layout("Overview", Some(&session), body)))
}

fn rollout_table(rows: &[&RolloutStatus]) -> Markup {
    html! {
        table {
            thead { tr { th scope="col" { "Rollout" } th scope="col" { "Release" } th scope="col" { "State" } th scope="col" { "Wave" } th scope="col" { "Committed" } } }
            tbody {
                @for s in rows {
                    @let committed: u64 = s.per_wave.iter().map(|w| w.committed).sum();
                    tr {
                        td { a href={"/rollouts/" (s.rollout)} { (s.rollout) } }
                        td { (s.release) }
                        td { (state_badge(&s.state)) }
                        td { (s.wave) " of " (s.waves) }
                        td { (charts::progress(&format!("{} committed", s.rollout), committed, s.selected)) }
                    }
                }
            }
        }
    }
}

/// `GET /rollouts`.
pub(crate) async fn rollouts_page(State(app): State<Arc<App>>, Extension(session): Extension<Session>) -> PageResult {
    catch_up(&app).await?;
    let rows = app.store.rollouts().await?;
    let statuses: Vec<RolloutStatus> = {
        let core = app.lock_core().await;
        rows.iter().rev().filter_map(|r| core.controller.status(&RolloutId::new(&r.id))).collect()
    };
    let refs: Vec<&RolloutStatus> = statuses.iter().collect();
    let body = html! {
        h1 { "Rollouts" }
        @if refs.is_empty() {
            p.empty { "No rollout yet: " code { "updraft rollout create" } " starts one." }
        } @else {
            (rollout_table(&refs))
        }
    };
    Ok(html_response(StatusCode::OK, layout("Rollouts", Some(&session), body)))
}

/// What each operator command does, for its button and confirmation.
const COMMANDS: &[(&str, &str, &str)] = &[
    ("pause", "Pause", "Pause: no device is given the release until the rollout is resumed; updates in progress finish."),
    ("resume", "Resume", "Resume: the rollout goes on from its current wave."),
    ("advance", "Advance", "Advance: open the next wave now, without waiting for the soak or the gates."),
    ("abort", "Abort", "Abort: stop the rollout for good; devices keep what they run."),
    (
        "rollback",
        "Roll back",
        "Roll back: stop the rollout, quarantine the release and give every device that took it its last known good release.",
    ),
];

/// Which commands the state allows.
fn allowed(state: &RolloutState, command: &str) -> bool {
    match state {
        RolloutState::Created => matches!(command, "abort"),
        RolloutState::Running => matches!(command, "pause" | "advance" | "abort" | "rollback"),
        RolloutState::Paused { .. } => matches!(command, "resume" | "abort" | "rollback"),
        RolloutState::Completed => matches!(command, "rollback"),
        RolloutState::Aborted | RolloutState::RolledBack { .. } => false,
    }
}

/// The part of a rollout page that live updates replace.
fn rollout_live(s: &RolloutStatus, failed: &[(updraft_types::DeviceId, updraft_rollout::MemberStatus)]) -> Markup {
    html! {
        p.state-line { "State: " (state_badge(&s.state)) " in wave " (s.wave) " of " (s.waves) ", "
            (s.selected) " devices selected, " (s.in_flight) " updates in progress." }
        @if let Some(reason) = state_reason(&s.state) { p.reason role="status" { (reason) } }
        section aria-labelledby="waves" {
            h2 id="waves" { "Waves" }
            table {
                thead { tr { th scope="col" { "Wave" } th scope="col" { "Stage" } th scope="col" { "Committed" }
                    th scope="col" { "In progress" } th scope="col" { "Reverted" } th scope="col" { "Failed" }
                    th scope="col" { "Silent" } th scope="col" { "Held back" } } }
                tbody {
                    @for (i, w) in s.per_wave.iter().enumerate() {
                        @let n = i + 1;
                        @let stage = if n < s.wave { "passed" } else if n > s.wave { "waiting" } else {
                            match s.state {
                                RolloutState::Running => "soaking",
                                RolloutState::Paused { .. } => "paused",
                                RolloutState::Completed => "passed",
                                RolloutState::RolledBack { .. } => "halted",
                                RolloutState::Aborted => "aborted",
                                RolloutState::Created => "waiting",
                            }
                        };
                        tr {
                            th scope="row" { (n) }
                            td { span class={"stage stage-" (stage)} { (stage) } }
                            td { (charts::progress(&format!("wave {n} committed"), w.committed, w.assigned)) }
                            td.num { (w.in_progress) } td.num { (w.reverted) } td.num { (w.failed) }
                            td.num { (w.silent) } td.num { (w.held_back) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="gates" {
            h2 id="gates" { "Gates" }
            @if s.gates.is_empty() { p.empty { "No gate has been evaluated yet." } }
            @else {
                table {
                    thead { tr { th scope="col" { "Gate" } th scope="col" { "Devices" } th scope="col" { "Verdict" }
                        th scope="col" { "Successes" } th scope="col" { "Failures" } th scope="col" { "Exposure (hours)" }
                        th scope="col" { "Ratio to baseline" } th scope="col" { "In words" } } }
                    tbody {
                        @for g in &s.gates {
                            @let v = match g.test.verdict { Verdict::Pass => "pass", Verdict::Fail => "fail", Verdict::Undecided => "undecided" };
                            tr {
                                td { (g.gate) }
                                td { (g.scope.describe()) }
                                td { span class={"verdict verdict-" (v)} { (v) } }
                                @if let Some(x) = &g.exposure {
                                    td.num { "—" }
                                    td.num { (x.canary_crashes) " crashes" }
                                    td.num { (format!("{:.0}", x.canary_hours)) " new, " (format!("{:.0}", x.baseline_hours)) " baseline" }
                                    td.num { @if let Some(r) = x.ratio { (format!("{r:.2}x")) } @else { "—" } }
                                } @else {
                                    td.num { (g.test.trials - g.test.failures) }
                                    td.num { (g.test.failures) }
                                    td.num { "—" }
                                    td.num { "—" }
                                }
                                td { (gate_sentence(g)) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="strata" {
            h2 id="strata" { "Waves by hardware revision and region" }
            table {
                thead { tr { th scope="col" { "Wave" } th scope="col" { "Hardware" } th scope="col" { "Region" }
                    th scope="col" { "Committed" } th scope="col" { "In progress" } th scope="col" { "Reverted" }
                    th scope="col" { "Failed" } th scope="col" { "Silent" } th scope="col" { "Held back" } } }
                tbody {
                    @for (i, wave) in s.per_wave_stratum.iter().enumerate() {
                        @for (key, c) in wave {
                            @let (hw, region) = key.split_once('/').unwrap_or((key.as_str(), ""));
                            tr {
                                th scope="row" { (i + 1) }
                                td { (hw) } td { (region) }
                                td { (charts::progress(&format!("wave {} {key} committed", i + 1), c.committed, c.assigned)) }
                                td.num { (c.in_progress) } td.num { (c.reverted) } td.num { (c.failed) }
                                td.num { (c.silent) } td.num { (c.held_back) }
                            }
                        }
                    }
                    @for (key, c) in &s.per_stratum {
                        @let (hw, region) = key.split_once('/').unwrap_or((key.as_str(), ""));
                        tr.total {
                            th scope="row" { "all" }
                            td { (hw) } td { (region) }
                            td { (charts::progress(&format!("{key} committed of {} selected", c.selected), c.committed, c.selected)) }
                            td.num { (c.in_progress) } td.num { (c.reverted) } td.num { (c.failed) }
                            td.num { (c.silent) } td.num { (c.held_back) }
                        }
                    }
                }
            }
        }
        @if !s.held_back.is_empty() {
            section aria-labelledby="held" {
                h2 id="held" { "Held back" }
                ul { @for h in &s.held_back { li { (h.device) " (wave " (h.wave) "): " (h.reason) } } }
            }
        }
        section aria-labelledby="failed" {
            h2 id="failed" { "Failed devices" }
            @if failed.is_empty() { p.empty { "None." } }
            @else {
                ul.failed {
                    @for (d, how) in failed {
                        li { a href={"/devices/" (d)} { (d) } " " (format!("{how:?}").to_lowercase()) }
                    }
                }
            }
        }
    }
}

async fn load_rollout(
    app: &App,
    id: &str,
) -> Result<(RolloutStatus, Vec<(updraft_types::DeviceId, updraft_rollout::MemberStatus)>), PageError> {
    check_id("rollout id", id)?;
    let rid = RolloutId::new(id);
    let core = app.lock_core().await;
    let s = core.controller.status(&rid).ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))?;
    Ok((s, core.controller.failed_devices(&rid, FAILED_LISTED)))
}

/// `GET /rollouts/{id}`.
pub(crate) async fn rollout_page(
    State(app): State<Arc<App>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> PageResult {
    catch_up(&app).await?;
    let (s, failed) = load_rollout(&app, &id).await?;
    let live = rollout_live(&s, &failed);
    let version = version_of(&live.0);
    let body = html! {
        h1 { "Rollout " (s.rollout) }
        p { "Release " strong { (s.release) } "." }
        div id="live" data-live={"/rollouts/" (s.rollout) "/live?v=" (version)} aria-live="polite" { (live) }
        @if session.may(Role::Operator) {
            section aria-labelledby="actions" {
                h2 id="actions" { "Actions" }
                div.actions {
                    @for (command, label, what) in COMMANDS {
                        @if allowed(&s.state, command) {
                            form method="post" action={"/rollouts/" (s.rollout) "/" (command)} data-confirm=(what) {
                                input type="hidden" name="csrf" value=(session.csrf);
                                button type="submit" class={"cmd cmd-" (command)} title=(what) { (label) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(html_response(StatusCode::OK, layout(&format!("Rollout {}", s.rollout), Some(&session), body)))
}

/// `POST /rollouts/{id}/{command}`: runs the command, back to the page.
pub(crate) async fn rollout_action(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path((id, command)): Path<(String, String)>,
) -> PageResult {
    crate::api::run_rollout_command(&app, &actor, remote, &id, &command).await?;
    redirect(&format!("/rollouts/{}", form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()))
}

/// A version of a page part: what the page had, for the stream to send
/// only changes (FNV-1a of the HTML, hex).
fn version_of(html: &str) -> String {
    let h = html.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

#[derive(Deserialize)]
pub(crate) struct LiveQuery {
    /// The version of the live part the page shows.
    v: Option<String>,
}

/// `GET /rollouts/{id}/live?v=VERSION`: server-sent events, each the new
/// HTML of the page's live part when it differs from what the page shows
/// (the script swaps it in).
pub(crate) async fn rollout_stream(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    load_rollout(&app, &id).await?;
    let shown = q.v.unwrap_or_default();
    let stream = stream::unfold((app, id, shown), |(app, id, shown)| async move {
        loop {
            let _ = catch_up(&app).await;
            let html = match load_rollout(&app, &id).await {
                Ok((s, failed)) => rollout_live(&s, &failed).into_string(),
                Err(_) => return None,
            };
            let version = version_of(&html);
            if version != shown {
                let event = Event::default().event("status").data(html);
                return Some((Ok(event), (app, id, version)));
            }
            tokio::time::sleep(LIVE_EVERY).await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    subject: Option<String>,
    /// Entries older than this id (the next page).
    before: Option<i64>,
}

/// `GET /audit`: newest first, filtered.
pub(crate) async fn audit_page(
    State(app): State<Arc<App>>,
    Extension(session): Extension<Session>,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    let f = updraft_store::AuditFilter {
        actor: q.actor.clone().filter(|s| !s.is_empty()),
        action: q.action.clone().filter(|s| !s.is_empty()),
        subject: q.subject.clone().filter(|s| !s.is_empty()),
        before_id: q.before,
    };
    let rows = app.store.audit_newest(&f, AUDIT_PAGE).await?;
    let next = (rows.len() as i64 == AUDIT_PAGE).then(|| rows.last().map(|e| e.id)).flatten();
    let older = next.map(|before| {
        let mut link = format!("/audit?before={before}");
        for (k, v) in [("actor", &f.actor), ("action", &f.action), ("subject", &f.subject)] {
            if let Some(v) = v {
                link.push_str(&format!("&{k}={}", form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()));
            }
        }
        link
    });
    let body = html! {
        h1 { "Audit log" }
        form.filters method="get" action="/audit" {
            label { "Actor " input name="actor" value=(q.actor.as_deref().unwrap_or("")) placeholder="token:alice"; }
            label { "Action " input name="action" value=(q.action.as_deref().unwrap_or("")) placeholder="rollout.rollback"; }
            label { "Subject " input name="subject" value=(q.subject.as_deref().unwrap_or("")); }
            button type="submit" { "Filter" }
        }
        @if rows.is_empty() { p.empty { "No entry matches." } }
        @else {
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Action" }
                    th scope="col" { "Subject" } th scope="col" { "Detail" } th scope="col" { "From" } } }
                tbody {
                    @for e in &rows {
                        tr { td { (when(e.at_ms)) } td { (e.actor) } td { code { (e.action) } } td { (e.subject) }
                            td { (e.detail) } td { (e.remote) } }
                    }
                }
            }
            @if let Some(link) = &older { p { a href=(link) { "Older entries" } } }
        }
    };
    Ok(html_response(StatusCode::OK, layout("Audit log", Some(&session), body)))
}

// ---------------------------------------------------------------- releases

/// `GET /releases`: every release, newest first, with its channels.
pub(crate) async fn releases_page(State(app): State<Arc<App>>, Extension(session): Extension<Session>) -> PageResult {
    let mut rows = Vec::new();
    for r in app.store.releases().await?.into_iter().rev() {
        rows.push(crate::api::release_view(&app, r).await?);
    }
    let body = html! {
        h1 { "Releases" }
        @if rows.is_empty() { p.empty { "No release yet: " code { "updraft release publish BUNDLE" } " publishes one." } }
        @else {
            table {
                thead { tr { th scope="col" { "Release" } th scope="col" { "Family" } th scope="col" { "Hardware" }
                    th scope="col" { "Security version" } th scope="col" { "Channels" } th scope="col" { "Published" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { a href={"/releases/" (r.id)} { (r.id) } }
                            td { (r.family) } td { (r.hardware.join(", ")) } td.num { (r.security_version) }
                            td { (r.channels.join(", ")) }
                            td { (when(r.published_ms)) " by " (r.published_by) }
                        }
                    }
                }
            }
        }
    };
    Ok(html_response(StatusCode::OK, layout("Releases", Some(&session), body)))
}

#[derive(Deserialize)]
pub(crate) struct SbomQuery {
    /// Components whose name, version or purl contains this.
    q: Option<String>,
}

fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// `GET /releases/{id}`: manifest, signatures, provenance, SBOM; promotion for releasers.
pub(crate) async fn release_page(
    State(app): State<Arc<App>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(q): Query<SbomQuery>,
) -> PageResult {
    check_id("release", &id)?;
    let row = app.store.release(&id).await?.ok_or_else(|| ApiError::not_found(format!("no release {id}")))?;
    let r = crate::api::release_view(&app, row).await?;
    let meta = |kind: &'static str| {
        let app = app.clone();
        let id = id.clone();
        async move {
            let text = app.store.release_meta(&id, kind).await?;
            Ok::<serde_json::Value, PageError>(text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default())
        }
    };
    let manifest = meta("manifest").await?;
    let sbom = meta("sbom").await?;
    let provenance = meta("provenance").await?;
    let needle = q.q.clone().unwrap_or_default().to_lowercase();
    let components: Vec<&serde_json::Value> = sbom["components"]
        .as_array()
        .map(|a| a.iter().filter(|c| needle.is_empty() || c.to_string().to_lowercase().contains(&needle)).collect())
        .unwrap_or_default();
    let statement = provenance_statement(&provenance);
    // Every version from the pinned root to the current one, oldest first.
    let roots = app.trust().await?.map(|t| t.versions).unwrap_or_default();
    let current = roots.last().map(|r| r.version);
    let accepted_by = |key: &str| -> Vec<u64> {
        roots.iter().filter(|r| r.release_keys.iter().any(|k| k.id().to_hex() == key)).map(|r| r.version).collect()
    };
    let body = html! {
        h1 { "Release " (r.id) }
        section aria-labelledby="manifest" {
            h2 id="manifest" { "Manifest" }
            dl {
                dt { "Family" } dd { (r.family) }
                dt { "Hardware" } dd { (r.hardware.join(", ")) }
                dt { "Security version" } dd { (r.security_version) }
                dt { "Bundle" } dd { (r.size) " bytes, sha256 " code { (r.sha256) } }
                dt { "Requires" } dd {
                    @let reqs = manifest["requires"].as_array().cloned().unwrap_or_default();
                    @if reqs.is_empty() { "nothing" }
                    @for (i, q) in reqs.iter().enumerate() {
                        @if i > 0 { ", " }
                        (str_of(q, "component")) " " (str_of(q, "version"))
                    }
                }
            }
            table {
                caption { "Images" }
                thead { tr { th scope="col" { "Image" } th scope="col" { "Target" } th scope="col" { "Size" } th scope="col" { "sha256" } } }
                tbody {
                    @for img in manifest["images"].as_array().into_iter().flatten() {
                        tr {
                            td { (str_of(img, "name")) }
                            td { code { (img["target"].as_str().map_or_else(|| img["target"].to_string(), str::to_owned)) } }
                            td.num { (img["size"].as_u64().unwrap_or(0)) }
                            td { code { (str_of(&img["digests"], "sha256")) } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="signatures" {
            h2 id="signatures" { "Signatures" }
            p { (r.signers.len()) " release signatures, checked against the server's trust root when the bundle was published." }
            @if let Some(v) = current {
                table {
                    thead { tr { th scope="col" { "Key id" } th scope="col" { "Trust-root versions that list it" } th scope="col" { "Current (v" (v) ")" } } }
                    tbody {
                        @for k in &r.signers {
                            @let versions = accepted_by(k);
                            tr {
                                td { code { (k) } }
                                td { @if versions.is_empty() { "none" } @else {
                                    (versions.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", ")) } }
                                td { @if versions.contains(&v) { span.ok { "accepted" } } @else { span.bad { "no longer listed" } } }
                            }
                        }
                    }
                }
            } @else {
                p.empty { "The server has no trust root (started without --trust)." }
                ul { @for k in &r.signers { li { code { (k) } } } }
            }
        }
        section aria-labelledby="provenance" {
            h2 id="provenance" { "Provenance" }
            dl {
                dt { "Builder" } dd { (r.builder_id) }
                dt { "Source" } dd { (str_of(&manifest["source"], "uri")) " at " code { (str_of(&manifest["source"], "commit")) } }
                @if let Some(s) = &statement {
                    dt { "Build type" } dd { (str_of(&s["predicate"]["buildDefinition"], "buildType")) }
                    dt { "Run" } dd {
                        @let run = str_of(&s["predicate"]["runDetails"]["metadata"], "invocationId");
                        @if run.starts_with("https://") { a href=(run) rel="noreferrer" { (run) } } @else { (run) }
                    }
                }
            }
        }
        section aria-labelledby="sbom" {
            h2 id="sbom" { "Software bill of materials" }
            form.filters method="get" action={"/releases/" (r.id)} {
                label { "Component " input type="search" name="q" value=(q.q.as_deref().unwrap_or("")); }
                button type="submit" { "Search" }
            }
            @if sbom.is_null() { p.empty { "The bundle carries no SBOM." } }
            @else if components.is_empty() { p.empty { "No component matches." } }
            @else {
                table.sbom {
                    thead { tr { th scope="col" { "Component" } th scope="col" { "Version" } th scope="col" { "Type" } th scope="col" { "Package URL" } } }
                    tbody {
                        @for c in &components {
                            tr { td { (str_of(c, "name")) } td { (str_of(c, "version")) } td { (str_of(c, "type")) } td { code { (str_of(c, "purl")) } } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="channels" {
            h2 id="channels" { "Channels" }
            p { @if r.channels.is_empty() { "In no channel." } @else { "In " (r.channels.join(", ")) "." } }
            @if session.may(Role::Releaser) {
                form.filters method="post" action={"/releases/" (r.id) "/promote"}
                    data-confirm={"Promote " (r.id) " into this channel: devices following it are offered this release."} {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label { "Channel " input name="channel" required pattern="[A-Za-z0-9][A-Za-z0-9._-]*"; }
                    button type="submit" { "Promote" }
                }
            }
        }
    };
    Ok(html_response(StatusCode::OK, layout(&format!("Release {}", r.id), Some(&session), body)))
}

/// The in-toto statement inside a provenance DSSE envelope, if it decodes.
fn provenance_statement(envelope: &serde_json::Value) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = envelope["payload"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[derive(Deserialize)]
pub(crate) struct PromoteForm {
    channel: String,
}

/// `POST /releases/{id}/promote`.
pub(crate) async fn promote_action(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    PageForm(form): PageForm<PromoteForm>,
) -> PageResult {
    crate::api::run_promote(&app, &actor, remote, &form.channel, &id).await?;
    redirect(&format!("/releases/{id}"))
}

// ----------------------------------------------------------------- devices

/// Devices a page lists.
const DEVICES_PAGE: usize = 100;

#[derive(Deserialize)]
pub(crate) struct DevicesQuery {
    family: Option<String>,
    hardware: Option<String>,
    region: Option<String>,
    release: Option<String>,
    tag: Option<String>,
    /// `NAME=VALUE` of an operator-set attribute.
    attr: Option<String>,
    /// `true` or `false`.
    online: Option<String>,
    after: Option<String>,
}

impl DevicesQuery {
    /// The API's filter (`KEY=VALUE,...`) for what the form asks.
    fn filter(&self) -> Result<String, PageError> {
        let mut terms = Vec::new();
        for (key, v) in [
            ("family", &self.family),
            ("hardware", &self.hardware),
            ("region", &self.region),
            ("release", &self.release),
            ("tag", &self.tag),
            ("online", &self.online),
        ] {
            if let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                if v.contains(',') {
                    return Err(ApiError::bad_request(format!("{key}: one value, without commas")).into());
                }
                terms.push(format!("{key}={v}"));
            }
        }
        if let Some(a) = self.attr.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| ApiError::bad_request(format!("attribute {a:?}: NAME=VALUE, e.g. site=berlin")))?;
            terms.push(format!("attr.{k}={v}"));
        }
        Ok(terms.join(","))
    }

    /// This query's link with another `after`.
    fn link(&self, after: &str) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("family", &self.family),
            ("hardware", &self.hardware),
            ("region", &self.region),
            ("release", &self.release),
            ("tag", &self.tag),
            ("attr", &self.attr),
            ("online", &self.online),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.append_pair(k, v);
            }
        }
        q.append_pair("after", after);
        format!("/devices?{}", q.finish())
    }
}

/// `GET /devices`: search and filter, a keyset page at a time.
pub(crate) async fn devices_page(
    State(app): State<Arc<App>>,
    Extension(session): Extension<Session>,
    Query(q): Query<DevicesQuery>,
) -> PageResult {
    let filter = q.filter()?;
    let page = crate::devices::page(&app, &filter, q.after.as_deref().unwrap_or(""), DEVICES_PAGE).await?;
    let field = |name: &'static str, label: &'static str, value: &Option<String>, hint: &'static str| {
        html! { label { (label) " " input name=(name) value=(value.as_deref().unwrap_or("")) placeholder=(hint); } }
    };
    let body = html! {
        h1 { "Devices" }
        form.filters method="get" action="/devices" {
            (field("family", "Family", &q.family, "sensor"))
            (field("hardware", "Hardware", &q.hardware, "rev-c"))
            (field("region", "Region", &q.region, "eu"))
            (field("release", "Release", &q.release, "fw@1.2.0"))
            (field("tag", "Tag", &q.tag, "canary"))
            (field("attr", "Attribute", &q.attr, "site=berlin"))
            label { "Online "
                select name="online" {
                    option value="" selected[q.online.as_deref().unwrap_or("").is_empty()] { "any" }
                    option value="true" selected[q.online.as_deref() == Some("true")] { "online" }
                    option value="false" selected[q.online.as_deref() == Some("false")] { "offline" }
                }
            }
            button type="submit" { "Filter" }
        }
        p { @if page.total_is_lower_bound { "At least " } (page.total) " devices match"
            @if page.total_is_lower_bound { " (counting stopped after " (crate::devices::SCAN_ROWS) " devices read; narrow the search by family, hardware, region or release to count them all)" }
            "." }
        @if !page.devices.is_empty() {
            table {
                thead { tr { th scope="col" { "Device" } th scope="col" { "Family" } th scope="col" { "Hardware" }
                    th scope="col" { "Region" } th scope="col" { "Release" } th scope="col" { "Online" }
                    th scope="col" { "Last check-in" } th scope="col" { "Tags" } } }
                tbody {
                    @for d in &page.devices {
                        tr {
                            td { a href={"/devices/" (d.id)} { (d.id) } @if d.protocol == "ddi" { " " span.hint { "DDI" } } }
                            td { (d.family) } td { (d.hardware) } td { (d.region) }
                            td { (d.release.as_ref().map(|r| r.to_string()).unwrap_or_default()) }
                            td { @if d.online { span.ok { "online" } } @else { span.bad { "offline" } } }
                            td { (d.last_seen_ms.map(when).unwrap_or_else(|| "never".into())) }
                            td { (d.tags.join(", ")) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = &page.next { p { a href=(q.link(next)) rel="next" { "Next " (DEVICES_PAGE) } } }
    };
    Ok(html_response(StatusCode::OK, layout("Devices", Some(&session), body)))
}

/// `GET /devices/{id}`: inventory, check-in and assignment history,
/// install outcomes with their failure logs.
pub(crate) async fn device_page(
    State(app): State<Arc<App>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> PageResult {
    let axum::Json(d) = crate::devices::show(State(app), Path(id)).await?;
    let map = |m: &std::collections::BTreeMap<String, String>| {
        html! {
            @if m.is_empty() { p.empty { "None." } }
            @else { table { tbody { @for (k, v) in m { tr { th scope="row" { (k) } td { (v) } } } } } }
        }
    };
    let body = html! {
        h1 { "Device " (d.id) }
        dl {
            dt { "Status" } dd { (d.status) ", " @if d.online { span.ok { "online" } } @else { span.bad { "offline" } } }
            dt { "Family / hardware / region" } dd { (d.family) " / " (d.hardware) " / " (d.region) }
            dt { "Protocol" } dd { @if d.protocol == "ddi" { "hawkBit DDI (SWUpdate, RAUC)" } @else { "Updraft agent" } }
            dt { "Release" } dd { (d.release.as_ref().map(|r| r.to_string()).unwrap_or_else(|| "none".into()))
                " (last known good: " (d.last_known_good.as_ref().map(|r| r.to_string()).unwrap_or_else(|| "none".into())) ")" }
            dt { "Channel" } dd { (d.channel.as_deref().unwrap_or("none")) }
            dt { "Tags" } dd { (d.tags.join(", ")) }
            dt { "Enrolled" } dd { (when(d.enrolled_ms)) }
            dt { "Last check-in" } dd { (d.last_seen_ms.map(when).unwrap_or_else(|| "never".into())) ", " (d.check_ins) " check-ins" }
        }
        h2 { "Inventory (reported by the device)" } (map(&d.inventory))
        h2 { "Components" } (map(&d.components))
        h2 { "Attributes (set by operators)" } (map(&d.attributes))
        h2 { "History" }
        @if d.history.is_empty() { p.empty { "Nothing yet." } }
        @else {
            table.history {
                thead { tr { th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "Release" } th scope="col" { "Detail" } } }
                tbody {
                    @for h in &d.history {
                        tr {
                            td { (when(h.at_ms)) } td { (h.kind) }
                            td { (h.release.as_ref().map(|r| r.to_string()).unwrap_or_default()) }
                            td { @if h.detail.contains('\n') { pre { (h.detail) } } @else { (h.detail) } }
                        }
                    }
                }
            }
        }
    };
    Ok(html_response(StatusCode::OK, layout(&format!("Device {}", d.id), Some(&session), body)))
}

// ------------------------------------------------------------------ builds

/// Pipeline runs a builds page reads.
const BUILDS_READ: i64 = 200;

#[derive(Deserialize)]
pub(crate) struct BuildsQuery {
    project: Option<String>,
}

/// `GET /builds`: per project, the runs by commit with each gate's
/// evidence, the coverage trend, the quarantined flaky tests.
pub(crate) async fn builds_page(
    State(app): State<Arc<App>>,
    Extension(session): Extension<Session>,
    Query(q): Query<BuildsQuery>,
) -> PageResult {
    let all = app.store.builds(None, BUILDS_READ).await?;
    let mut projects: Vec<String> = all.iter().map(|b| b.project.clone()).collect();
    projects.sort();
    projects.dedup();
    let project = q.project.clone().filter(|p| projects.contains(p)).or_else(|| projects.first().cloned());
    let runs: Vec<&updraft_store::BuildRecord> = all.iter().filter(|b| Some(&b.project) == project.as_ref()).collect();
    let reports: Vec<serde_json::Value> =
        runs.iter().map(|b| serde_json::from_str(&b.report).unwrap_or_default()).collect();
    // Coverage per run, oldest first: the mean over families.
    let coverage: Vec<(String, u64)> = runs
        .iter()
        .zip(&reports)
        .rev()
        .filter_map(|(b, r)| {
            let v: Vec<f64> = r["coverage"].as_array()?.iter().filter_map(|c| c["percent"].as_f64()).collect();
            (!v.is_empty()).then(|| {
                let commit: String = b.commit.chars().take(10).collect();
                (commit, (v.iter().sum::<f64>() / v.len() as f64).round() as u64)
            })
        })
        .collect();
    let flaky: serde_json::Value = match &project {
        Some(p) => app.store.flaky_state(p).await?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default(),
        None => serde_json::Value::Null,
    };
    let quarantined: Vec<(&String, &serde_json::Value)> = flaky["tests"]
        .as_object()
        .map(|m| m.iter().filter(|(_, t)| t["quarantined"].as_bool() == Some(true)).collect())
        .unwrap_or_default();
    let body = html! {
        h1 { "Builds" }
        @if projects.is_empty() {
            p.empty { "No pipeline run recorded yet: " code { "updraft pipeline run" } " with " code { "[server]" }
                " in updraft.toml posts each run's verdicts here." }
        } @else {
            nav.projects aria-label="Projects" {
                @for p in &projects {
                    @if Some(p) == project.as_ref() { strong aria-current="page" { (p) } }
                    @else { a href={"/builds?project=" (form_urlencoded::byte_serialize(p.as_bytes()).collect::<String>())} { (p) } }
                    " "
                }
            }
            (charts::bars("Line coverage by run, oldest first (%)", &coverage))
            h2 { "Runs" }
            table.builds {
                thead { tr { th scope="col" { "When" } th scope="col" { "Commit" } th scope="col" { "Result" }
                    th scope="col" { "Gates and their evidence" } th scope="col" { "Tests" } } }
                tbody {
                    @for (b, r) in runs.iter().zip(&reports) {
                        tr {
                            td { (when(b.at_ms)) }
                            td { code { (b.commit.chars().take(12).collect::<String>()) } }
                            td { @if b.passed { span.ok { "passed" } } @else { span.bad { "failed" } } }
                            td {
                                ul.gates {
                                    @for g in r["gates"].as_array().into_iter().flatten() {
                                        li {
                                            @if g["passed"].as_bool() == Some(true) { span.ok { "✓ " } } @else { span.bad { "✗ " } }
                                            strong { (str_of(g, "gate")) } ": " (str_of(g, "evidence"))
                                        }
                                    }
                                }
                            }
                            td {
                                @let t = &r["tests"];
                                @if t.is_object() {
                                    (t["cases"].as_u64().unwrap_or(0)) " cases, " (t["failed"].as_u64().unwrap_or(0)) " failed, "
                                    (t["quarantined"].as_array().map_or(0, |a| a.len())) " quarantined"
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Quarantined flaky tests" }
            @if quarantined.is_empty() { p.empty { "None." } }
            @else {
                table {
                    thead { tr { th scope="col" { "Test" } th scope="col" { "Passes in a row" } th scope="col" { "Recent runs (oldest first)" } } }
                    tbody {
                        @for (name, t) in &quarantined {
                            tr {
                                td { code { (name) } }
                                td.num { (t["passesInRow"].as_u64().or(t["passes_in_row"].as_u64()).unwrap_or(0)) }
                                td {
                                    @for run in t["runs"].as_array().into_iter().flatten().rev().take(20).collect::<Vec<_>>().into_iter().rev() {
                                        @if run[1].as_bool() == Some(true) { span.ok title=(run[0].as_str().unwrap_or("")) { "✓" } }
                                        @else { span.bad title=(run[0].as_str().unwrap_or("")) { "✗" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(html_response(StatusCode::OK, layout("Builds", Some(&session), body)))
}

// ------------------------------------------------------------------ tokens

/// What a tokens page shows once, right after a creation.
enum Created {
    None,
    Api(updraft_proto::CreatedToken),
    Enrollment(updraft_proto::CreatedEnrollmentToken),
}

async fn tokens_view(app: &App, session: &Session, created: Created) -> PageResult {
    let tokens = app.store.list_api_tokens().await?;
    let body = html! {
        h1 { "Tokens" }
        @match &created {
            Created::Api(t) => {
                div.created role="status" {
                    p { "Token " strong { (t.name) } " (" (t.role.as_str()) ") created. Copy it now: it is not shown again." }
                    p { code.secret { (t.token) } }
                }
            }
            Created::Enrollment(t) => {
                div.created role="status" {
                    p { "Enrollment token for " (t.uses) " devices, until " (when(t.expires_ms))
                        @if t.require_accept { ", each waiting for acceptance" } ". Copy it now: it is not shown again." }
                    p { code.secret { (t.token) } }
                }
            }
            Created::None => {}
        }
        h2 { "API tokens" }
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Created" } th scope="col" { "State" } th scope="col" { "Action" } } }
            tbody {
                @for t in &tokens {
                    tr {
                        td { (t.name) } td { (t.role.as_str()) } td { (when(t.created_ms)) }
                        td { @if t.revoked { span.bad { "revoked" } } @else { span.ok { "live" } } }
                        td {
                            @if !t.revoked {
                                form method="post" action={"/tokens/" (t.id) "/revoke"}
                                    data-confirm={"Revoke " (t.name) ": every call and browser session with it stops working at once."} {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button type="submit" class="cmd-abort" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Create an API token" }
        form.filters method="post" action="/tokens" {
            input type="hidden" name="csrf" value=(session.csrf);
            label { "Name " input name="name" required pattern="[A-Za-z0-9][A-Za-z0-9._-]*" placeholder="ci-release"; }
            label { "Role "
                select name="role" {
                    option value="viewer" { "viewer: reads everything" }
                    option value="releaser" { "releaser: publishes and promotes" }
                    option value="operator" selected { "operator: runs rollouts, manages devices" }
                    option value="admin" { "admin: tokens and the trust root" }
                }
            }
            button type="submit" { "Create" }
        }
        h2 { "Create an enrollment token" }
        form.filters method="post" action="/enrollment-tokens" {
            input type="hidden" name="csrf" value=(session.csrf);
            label { "Devices " input name="uses" type="number" min="1" max="1000000" value="100" required; }
            label { "Valid for (hours) " input name="hours" type="number" min="1" max="8784" value="24" required; }
            label { input name="require_accept" type="checkbox" value="true"; " each device waits for acceptance" }
            button type="submit" { "Create" }
        }
    };
    Ok(html_response(StatusCode::OK, layout("Tokens", Some(session), body)))
}

/// `GET /tokens` (admins).
pub(crate) async fn tokens_page(State(app): State<Arc<App>>, Extension(session): Extension<Session>) -> PageResult {
    tokens_view(&app, &session, Created::None).await
}

#[derive(Deserialize)]
pub(crate) struct TokenForm {
    name: String,
    role: String,
}

/// `POST /tokens`: creates the token and shows it once.
pub(crate) async fn create_token_action(
    State(app): State<Arc<App>>,
    Extension(session): Extension<Session>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    PageForm(form): PageForm<TokenForm>,
) -> PageResult {
    let role = Role::parse(&form.role)
        .ok_or_else(|| ApiError::bad_request(format!("role {:?}: viewer, releaser, operator or admin", form.role)))?;
    let created = crate::api::run_create_token(&app, &actor, remote, form.name.trim(), role).await?;
    tokens_view(&app, &session, Created::Api(created)).await
}

/// `POST /tokens/{id}/revoke`.
pub(crate) async fn revoke_token_action(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> PageResult {
    crate::api::run_revoke_token(&app, &actor, remote, &id).await?;
    redirect("/tokens")
}

#[derive(Deserialize)]
pub(crate) struct EnrollmentForm {
    uses: u32,
    hours: u64,
    #[serde(default)]
    require_accept: Option<String>,
}

/// `POST /enrollment-tokens`: creates the token and shows it once.
pub(crate) async fn create_enrollment_action(
    State(app): State<Arc<App>>,
    Extension(session): Extension<Session>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    PageForm(form): PageForm<EnrollmentForm>,
) -> PageResult {
    let req = updraft_proto::CreateEnrollmentTokenRequest {
        uses: form.uses,
        expires_in_s: form.hours.saturating_mul(3600),
        require_accept: form.require_accept.is_some(),
    };
    let created = crate::api::run_create_enrollment_token(&app, &actor, remote, &req).await?;
    tokens_view(&app, &session, Created::Enrollment(created)).await
}
