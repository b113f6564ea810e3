//! Devices after enrollment: what they report at each check-in (inventory,
//! components, last seen), their history, and the operator's side (list
//! with filters and pages, show, accept, decommission, tags, attributes).
//!
//! Check-ins are the hottest path: the last-seen time lives in memory
//! ([`Tracker`]); a device's row is queued for writing only when what it
//! reports changes, or every [`PERSIST_EVERY_MS`] otherwise, and the queue
//! ([`Reports`]) is written in one transaction every [`FLUSH_EVERY`] (and
//! before any operator read). What a crash can lose is at most that long
//! of inventory and last-seen times, which the next check-ins report
//! again; failure logs are written before the device is answered.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use updraft_proto::{
    CheckInRequest, CreateDeviceRequest, CreatedDevice, Device, DeviceChange, DeviceHistoryEntry, DevicePage,
};
use updraft_store::{DeviceRow, DeviceStatus};
use updraft_types::{DeviceId, ReleaseId};

use crate::api::{check_id, device_entry, parse, Actor};
use crate::core::Change;
use crate::error::{ApiError, ApiResult};
use crate::{now_ms, App};
use axum::Extension;

/// How often queued device reports are written.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// A device's row is refreshed at least this often while it checks in.
pub const PERSIST_EVERY_MS: i64 = 5 * 60 * 1000;
/// After a first check-in that changed nothing, the next one this much
/// later writes the row's last-seen time.
pub const FIRST_WRITE_AFTER_MS: i64 = 60 * 1000;
/// History entries `GET /api/v1/devices/{id}` returns.
pub const HISTORY_SHOWN: i64 = 50;
/// Most devices on one page.
pub const MAX_PAGE: usize = 1000;
/// Inventory keys that change all the time (not a reason to write a row).
const VOLATILE: &[&str] = &["freeBytes"];
/// Most tags or attributes an operator sets on one device.
pub const MAX_LABELS: usize = 64;

/// What the server remembers of a device between check-ins.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub last_ms: i64,
    persisted_ms: i64,
    /// The last-seen time its row holds (written or queued), `None` if
    /// never seen: what a database search sees of this device.
    stored_ms: Option<i64>,
    /// Check-ins not yet counted in the row.
    unpersisted: i64,
    /// A digest of what it reported last (inventory, components, release).
    reported: u64,
    status: Option<DeviceStatus>,
    /// The release last assigned to it (to note changes in its history).
    assigned: Option<ReleaseId>,
    /// Its row as authentication read it, for the first check-in (taken then).
    row: Option<DeviceRow>,
}

/// Keeps the row authentication just read, so that the check-in that
/// follows needs no second read.
pub fn seed(app: &App, row: DeviceRow) {
    let id = row.id.clone();
    lock(app).entry(id).or_default().row = Some(row);
}

/// Device id → what was seen, in this process.
pub type Tracker = std::sync::Mutex<HashMap<String, Seen>>;

/// Device rows and history entries waiting to be written.
#[derive(Default)]
pub struct Pending {
    rows: HashMap<String, DeviceRow>,
    history: Vec<updraft_store::NewHistory>,
}

/// The queue of device reports.
pub type Reports = std::sync::Mutex<Pending>;

fn pending(app: &App) -> std::sync::MutexGuard<'_, Pending> {
    app.reports.lock().unwrap_or_else(|e| e.into_inner())
}

fn queue_history(app: &App, device: &str, at_ms: i64, kind: &str, release: Option<&str>, detail: &str) {
    pending(app).history.push(updraft_store::NewHistory {
        device: device.to_owned(),
        at_ms,
        kind: kind.to_owned(),
        release: release.map(str::to_owned),
        detail: detail.to_owned(),
    });
}

/// Writes the queued reports in one transaction (a failed write is queued again).
pub async fn flush(app: &App) -> ApiResult<()> {
    let (rows, history) = {
        let mut p = pending(app);
        (std::mem::take(&mut p.rows), std::mem::take(&mut p.history))
    };
    if rows.is_empty() && history.is_empty() {
        return Ok(());
    }
    let list: Vec<DeviceRow> = rows.values().cloned().collect();
    if let Err(e) = app.store.record_reports(&list, &history).await {
        let mut p = pending(app);
        for (id, row) in rows {
            p.rows.entry(id).or_insert(row);
        }
        let newer = std::mem::replace(&mut p.history, history);
        p.history.extend(newer);
        return Err(e.into());
    }
    Ok(())
}

/// Writes what is queued if it includes this device's row (before a
/// decision that reads the row, such as an enrollment's retry).
pub async fn flush_device(app: &App, device: &str) -> ApiResult<()> {
    let queued = pending(app).rows.contains_key(device);
    if queued {
        flush(app).await?;
    }
    Ok(())
}

/// Records a history entry now (failure logs: written before the device is
/// answered), after what is queued, so that the history stays in order.
pub async fn history_now(app: &App, device: &str, kind: &str, release: Option<&str>, detail: &str) -> ApiResult<()> {
    queue_history(app, device, now_ms(), kind, release, detail);
    flush(app).await
}

/// A committed release becomes the device's release and last known good.
pub async fn committed(app: &App, device: &DeviceId, release: &ReleaseId) -> ApiResult<()> {
    let queued = pending(app).rows.get(device.as_str()).cloned();
    let mut row = match queued {
        Some(r) => r,
        None => match app.store.device(device.as_str()).await? {
            Some(r) => r,
            None => return Ok(()),
        },
    };
    row.release = Some(release.to_string());
    row.last_known_good = Some(release.to_string());
    let now = now_ms();
    row.last_seen_ms = Some(now);
    if let Some(s) = lock(app).get_mut(device.as_str()) {
        s.stored_ms = Some(now);
    }
    pending(app).rows.insert(row.id.clone(), row);
    Ok(())
}

/// Queues a history entry (written within [`FLUSH_EVERY`]).
pub fn history_soon(app: &App, device: &str, kind: &str, release: Option<&str>, detail: &str) {
    queue_history(app, device, now_ms(), kind, release, detail);
}

fn lock(app: &App) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
    app.seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// The inventory a check-in reports, as flat key/value pairs.
fn inventory_of(req: &CheckInRequest) -> ApiResult<BTreeMap<String, String>> {
    if req.attributes.len() > updraft_proto::MAX_INVENTORY_ATTRIBUTES {
        return Err(ApiError::bad_request(format!(
            "{} attributes; at most {} are kept",
            req.attributes.len(),
            updraft_proto::MAX_INVENTORY_ATTRIBUTES
        )));
    }
    let mut inv = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            inv.insert(k.to_owned(), v);
        }
    };
    put("agentVersion", req.agent_version.clone());
    put("slot", req.slot.clone());
    put("bootState", req.boot_state.map(|b| format!("{b:?}").to_lowercase()));
    put("securityVersion", req.security_version.map(|v| v.to_string()));
    put("freeBytes", req.free_bytes.map(|v| v.to_string()));
    for (k, v) in &req.attributes {
        check_id("attribute", k)?;
        crate::validate::attribute_value(k, v)?;
        inv.insert(format!("attr.{k}"), v.clone());
    }
    Ok(inv)
}

fn digest_of(parts: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(parts)
}

/// What changed between two inventories, in words.
fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    let before: BTreeMap<&str, &str> = before.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = Vec::new();
    for (k, v) in after {
        match before.get(k.as_str()) {
            Some(old) if old == v => {}
            Some(old) => out.push(format!("{k} {old} → {v}")),
            None => out.push(format!("{k} {v}")),
        }
    }
    for k in before.keys() {
        if !after.contains_key(*k) {
            out.push(format!("{k} gone"));
        }
    }
    out.join(", ")
}

/// What a check-in told the server about the device.
pub struct CheckedIn {
    pub status: DeviceStatus,
    /// The device's row when its components changed (the controller is told).
    pub components_changed: Option<DeviceRow>,
}

/// Records a check-in: last seen in memory; the row (inventory,
/// components, release, last seen, count) when something changed or it is
/// due; a history entry when the inventory changed.
pub async fn check_in(app: &App, device: &DeviceId, req: &CheckInRequest) -> ApiResult<CheckedIn> {
    let inventory = inventory_of(req)?;
    let now = now_ms();
    // Free space moves with every download: stored when the row is written,
    // but not a change worth a write or a history entry of its own.
    let stable = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter().filter(|(k, _)| !VOLATILE.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let steady_entries = inventory.iter().filter(|(k, _)| !VOLATILE.contains(&k.as_str())).collect::<Vec<_>>();
    let reported = digest_of(&(&steady_entries, &req.components, &req.release));
    let (due, unpersisted, seeded) = {
        let mut seen = lock(app);
        if !seen.contains_key(device.as_str()) {
            seen.insert(device.to_string(), Seen::default());
        }
        let Some(s) = seen.get_mut(device.as_str()) else { return Err(ApiError::internal("device tracker")) };
        let seeded = s.row.take();
        s.last_ms = now;
        s.unpersisted += 1;
        let due = s.status.is_none() || s.reported != reported || now - s.persisted_ms >= PERSIST_EVERY_MS;
        if !due {
            if let Some(status) = s.status {
                return Ok(CheckedIn { status, components_changed: None });
            }
        }
        (due, s.unpersisted, seeded)
    };
    debug_assert!(due);
    // The newest row: one queued and not written yet, else the one
    // authentication read, else the stored one.
    let queued = pending(app).rows.remove(device.as_str());
    let was_queued = queued.is_some();
    let first_sight = queued.is_none() && seeded.is_some();
    let mut row = match queued.or(seeded) {
        Some(r) => r,
        None => app.store.device(device.as_str()).await?.ok_or_else(ApiError::unauthorized)?,
    };
    if row.status == DeviceStatus::Decommissioned {
        // Decommissioned on another replica: this one's caches learn it here.
        forget(app, device.as_str());
        return Err(ApiError::unauthorized());
    }
    // Both sorted by key: compare without copies, free space aside.
    let steady = |(k, _): &(&String, &String)| !VOLATILE.contains(&k.as_str());
    let inventory_changed =
        !row.inventory.iter().map(|(k, v)| (k, v)).filter(steady).eq(inventory.iter().filter(steady));
    // Older agents report no components: keep what enrollment said.
    let components_changed =
        !req.components.is_empty() && !req.components.iter().eq(row.components.iter().map(|(k, v)| (k, v)));
    let release_changed = req.release.as_ref().map(|r| r.as_str()) != row.release.as_deref();
    let recent = row.last_seen_ms.is_some_and(|t| now - t < PERSIST_EVERY_MS);
    // A device's very first check-in is written: it marks the device token
    // as used (an enrollment can no longer be retried for its id).
    let never_seen = row.last_seen_ms.is_none() && row.check_ins == 0;
    if !inventory_changed && !components_changed && !release_changed && (recent || first_sight) && !never_seen {
        // Nothing new since the row was written: its last-seen time and
        // count wait for a later write (views read them from memory
        // meanwhile). A device's first check-in after a server start writes
        // nothing unless something changed; its next one, from
        // FIRST_WRITE_AFTER_MS on, brings the row's last-seen time up to date.
        let status = row.status;
        {
            let mut seen = lock(app);
            if let Some(s) = seen.get_mut(device.as_str()) {
                s.persisted_ms = if recent { now } else { now - PERSIST_EVERY_MS + FIRST_WRITE_AFTER_MS };
                s.stored_ms = row.last_seen_ms;
                s.reported = reported;
                s.status = Some(status);
            }
        }
        if was_queued {
            // A row queued and not written yet (a commit just now) still goes to the database.
            pending(app).rows.insert(row.id.clone(), row);
        }
        return Ok(CheckedIn { status, components_changed: None });
    }
    // Validated when they are kept (not on every check-in that repeats them).
    for (c, v) in &req.components {
        check_id("component", c)?;
        semver::Version::parse(v).map_err(|e| ApiError::bad_request(format!("component {c} version {v:?}: {e}")))?;
    }
    let before: BTreeMap<String, String> = row.inventory.iter().cloned().collect();
    let components: Vec<(String, String)> = req.components.clone().into_iter().collect();
    // The first report is not a change; later ones are noted.
    if inventory_changed && row.check_ins + unpersisted > 1 {
        let detail = changes(&stable(&before), &stable(&inventory));
        queue_history(app, &row.id, now, "check_in", req.release.as_ref().map(|r| r.as_str()), &detail);
    }
    row.inventory = inventory.into_iter().collect();
    if components_changed {
        row.components = components;
    }
    if let Some(r) = &req.release {
        row.release = Some(r.to_string());
    }
    row.last_seen_ms = Some(now);
    row.check_ins += unpersisted;
    let status = row.status;
    if let Some(s) = lock(app).get_mut(device.as_str()) {
        s.persisted_ms = now;
        s.stored_ms = Some(now);
        s.unpersisted -= unpersisted;
        s.reported = reported;
        s.status = Some(status);
    }
    let changed = components_changed.then(|| row.clone());
    pending(app).rows.insert(row.id.clone(), row);
    Ok(CheckedIn { status, components_changed: changed })
}

/// Notes an assignment in the device's history when it changes.
pub async fn assigned(app: &App, device: &DeviceId, release: &ReleaseId, why: &str) -> ApiResult<()> {
    let new = {
        let mut seen = lock(app);
        match seen.get_mut(device.as_str()) {
            Some(s) if s.assigned.as_ref() == Some(release) => false,
            Some(s) => {
                s.assigned = Some(release.clone());
                true
            }
            None => {
                let s = Seen { assigned: Some(release.clone()), ..Seen::default() };
                seen.insert(device.to_string(), s);
                true
            }
        }
    };
    if new {
        queue_history(app, device.as_str(), now_ms(), "assigned", Some(release.as_str()), why);
    }
    Ok(())
}

/// Forgets what this process cached about a device (after an operator change).
pub fn forget(app: &App, device: &str) {
    // What was read goes; what was seen (when, how often) stays to be written.
    if let Some(s) = lock(app).get_mut(device) {
        s.status = None;
        s.row = None;
        s.reported = 0;
        s.assigned = None;
    }
    app.forget_device_tokens(device);
    crate::ddi::forget(app, device);
}

/// Devices seen since this instant are online: within two poll intervals.
fn online_since(app: &App, now: i64) -> i64 {
    now - 2 * 1000 * i64::from(app.poll_interval_s)
}

/// Devices by last check-in against the poll interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OnlineCounts {
    pub online: u64,
    pub offline: u64,
    pub never: u64,
}

/// Online, offline and never-seen devices in service: the database's
/// counts, corrected by the check-ins this process has not written yet.
pub async fn online_counts(app: &App) -> ApiResult<OnlineCounts> {
    flush(app).await?;
    let since = online_since(app, now_ms());
    let db = app.store.seen_counts(since).await?;
    let (mut online, mut never) = (db.seen, db.never);
    for s in lock(app).values() {
        if s.last_ms >= since && s.stored_ms.is_none_or(|t| t < since) {
            online += 1;
            if s.stored_ms.is_none() {
                never -= 1;
            }
        }
    }
    let online = online.clamp(0, db.total) as u64;
    let never = never.clamp(0, db.total) as u64;
    Ok(OnlineCounts { online, never, offline: (db.total as u64).saturating_sub(online + never) })
}

fn view(app: &App, d: DeviceRow, seen: Option<&Seen>) -> Device {
    let last_seen_ms = match (d.last_seen_ms, seen.map(|s| s.last_ms)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let online = last_seen_ms.is_some_and(|t| t >= online_since(app, now_ms()));
    let check_ins = d.check_ins + seen.map_or(0, |s| s.unpersisted);
    Device {
        id: DeviceId::new(d.id),
        family: d.family,
        hardware: d.hardware,
        region: d.region,
        tags: d.tags,
        channel: d.channel,
        release: d.release.map(ReleaseId::new),
        last_known_good: d.last_known_good.map(ReleaseId::new),
        enrolled_ms: d.enrolled_ms,
        last_seen_ms,
        status: d.status.as_str().to_owned(),
        online,
        check_ins,
        components: d.components.into_iter().collect(),
        attributes: d.attributes.into_iter().collect(),
        inventory: d.inventory.into_iter().collect(),
        protocol: d.protocol,
        history: Vec::new(),
    }
}

/// One filter term: `KEY=VALUE`.
#[derive(Clone, Debug)]
enum Filter {
    Field(&'static str, String),
    Tag(String),
    Online(bool),
    Attribute(String, String),
    Inventory(String, String),
    Component(String, String),
}

const FILTER_KEYS: &str =
    "family, hardware, region, release, channel, status, protocol, tag, online, attr.NAME, inv.NAME, component.NAME";

fn parse_filters(text: &str) -> ApiResult<Vec<Filter>> {
    let mut out = Vec::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let Some((k, v)) = term.split_once('=') else {
            return Err(ApiError::bad_request(format!("filter {term:?} is not KEY=VALUE; keys: {FILTER_KEYS}")));
        };
        let v = v.to_owned();
        out.push(match k {
            "family" => Filter::Field("family", v),
            "hardware" => Filter::Field("hardware", v),
            "region" => Filter::Field("region", v),
            "release" => Filter::Field("release", v),
            "channel" => Filter::Field("channel", v),
            "status" => Filter::Field("status", v),
            "protocol" => Filter::Field("protocol", v),
            "tag" => Filter::Tag(v),
            "online" => Filter::Online(match v.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(ApiError::bad_request(format!("online={v}: true or false"))),
            }),
            _ => {
                if let Some(name) = k.strip_prefix("attr.") {
                    Filter::Attribute(name.to_owned(), v)
                } else if let Some(name) = k.strip_prefix("inv.") {
                    Filter::Inventory(name.to_owned(), v)
                } else if let Some(name) = k.strip_prefix("component.") {
                    Filter::Component(name.to_owned(), v)
                } else {
                    return Err(ApiError::bad_request(format!("unknown filter key {k:?}; keys: {FILTER_KEYS}")));
                }
            }
        });
    }
    Ok(out)
}

fn matches(d: &Device, filters: &[Filter]) -> bool {
    let get = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned();
    filters.iter().all(|f| match f {
        Filter::Field(k, v) => {
            let have = match *k {
                "family" => Some(d.family.clone()),
                "hardware" => Some(d.hardware.clone()),
                "region" => Some(d.region.clone()),
                "release" => d.release.as_ref().map(|r| r.to_string()),
                "channel" => d.channel.clone(),
                "protocol" => Some(d.protocol.clone()),
                _ => Some(d.status.clone()),
            };
            have.as_deref() == Some(v.as_str())
        }
        Filter::Tag(t) => d.tags.contains(t),
        Filter::Online(o) => d.online == *o,
        Filter::Attribute(k, v) => get(&d.attributes, k).as_deref() == Some(v.as_str()),
        Filter::Inventory(k, v) => get(&d.inventory, k).as_deref() == Some(v.as_str()),
        Filter::Component(k, v) => get(&d.components, k).as_deref() == Some(v.as_str()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    after: String,
    #[serde(default = "default_limit")]
    limit: usize,
    /// `KEY=VALUE` terms separated by commas; all must hold.
    #[serde(default)]
    filter: String,
}

fn default_limit() -> usize {
    100
}

/// `GET /api/v1/devices?filter=hardware=rev-c,online=false&after=ID&limit=N`.
pub async fn list(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> ApiResult<Json<DevicePage>> {
    Ok(Json(page(&app, &q.filter, &q.after, q.limit).await?))
}

/// The part of a search the database answers, and the terms left for
/// [`matches`]. Column terms are exact in SQL. An online term narrows the
/// rows by the stored last-seen times (which lag this process's check-ins
/// by at most [`PERSIST_EVERY_MS`] and a poll, except right after a
/// restart) and is checked again on the rows read.
fn pushdown(app: &App, filters: &[Filter]) -> (updraft_store::DeviceQuery, Vec<Filter>) {
    let mut q = updraft_store::DeviceQuery::default();
    let mut rest = Vec::new();
    let now = now_ms();
    let since = online_since(app, now);
    for f in filters {
        match f {
            Filter::Field(col, v) => q.equal.push((col, v.clone())),
            Filter::Online(false) => {
                // A stored time is never newer than the device's last check-in.
                q.unseen_since = Some(since);
                rest.push(f.clone());
            }
            Filter::Online(true) => {
                let lag = PERSIST_EVERY_MS + 1000 * i64::from(app.poll_interval_s);
                let floor = since - lag;
                let stale = lock(app).values().any(|s| s.last_ms >= since && s.stored_ms.is_none_or(|t| t < floor));
                if !stale {
                    q.seen_since = Some(floor);
                }
                rest.push(f.clone());
            }
            _ => rest.push(f.clone()),
        }
    }
    (q, rest)
}

/// Rows a filtered search reads for one request at most, beyond those
/// of its page (then it answers with a lower bound and a cursor).
pub const SCAN_ROWS: usize = 5_000;

/// One page of devices after `after` (keyset: ids in order), those matching
/// every term of `filter`. Column terms (family, hardware, region, release,
/// channel, status) are answered by the database through its indexes, and
/// so is the total; an online term alone is counted as the overview counts
/// it. Other terms (tags, attributes, inventory, components, online with
/// column terms) are checked on the rows the column terms select, in id
/// order, reading at most [`SCAN_ROWS`] rows for the total.
pub(crate) async fn page(app: &App, filter: &str, after: &str, limit: usize) -> ApiResult<DevicePage> {
    let filters = parse_filters(filter)?;
    flush(app).await?;
    let limit = limit.clamp(1, MAX_PAGE);
    let (query, rest) = pushdown(app, &filters);
    if rest.is_empty() {
        let mut rows = app.store.devices_where(&query, after, limit as i64 + 1).await?;
        let total = app.store.device_count_where(&query).await? as u64;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let devices = views(app, rows);
        let next = if more { devices.last().map(|d| d.id.to_string()) } else { None };
        return Ok(DevicePage { devices, total, total_is_lower_bound: false, next });
    }
    // The page: from `after` until it is full or the budget is spent.
    let mut page = Vec::new();
    let mut next = None;
    let end = scan(app, &query, &rest, after, |d| {
        if page.len() == limit {
            next = page.last().map(|d: &Device| d.id.to_string());
            return false;
        }
        page.push(d);
        true
    })
    .await?;
    if let Scan::Budget(cursor) = end {
        // Sparse matches: the next page goes on where the reading stopped.
        next = Some(cursor);
    }
    // The total: an online term alone as the overview counts it, else the
    // matches within the budget.
    let (total, complete) = if let [Filter::Online(on)] = filters.as_slice() {
        let c = online_counts(app).await?;
        (if *on { c.online } else { c.offline + c.never }, true)
    } else {
        let mut n = 0u64;
        let end = scan(app, &query, &rest, "", |_| {
            n += 1;
            true
        })
        .await?;
        (n, end == Scan::End)
    };
    Ok(DevicePage { devices: page, total, total_is_lower_bound: !complete, next })
}

/// Rows as the API shows them, with what this process saw of each.
fn views(app: &App, rows: Vec<DeviceRow>) -> Vec<Device> {
    let seen = lock(app);
    rows.into_iter()
        .map(|row| {
            let s = seen.get(&row.id);
            view(app, row, s)
        })
        .collect()
}

/// Where a [`scan`] stopped.
#[derive(PartialEq)]
enum Scan {
    /// At the last row.
    End,
    /// The visitor asked to stop.
    Stopped,
    /// After [`SCAN_ROWS`] rows, at this id.
    Budget(String),
}

/// Visits the devices after `from` that match `query` and `rest`, in id
/// order, until `visit` returns false or [`SCAN_ROWS`] rows were read.
async fn scan(
    app: &App,
    query: &updraft_store::DeviceQuery,
    rest: &[Filter],
    from: &str,
    mut visit: impl FnMut(Device) -> bool,
) -> ApiResult<Scan> {
    let mut cursor = from.to_owned();
    let mut read = 0usize;
    loop {
        let rows = app.store.devices_where(query, &cursor, 1000).await?;
        if rows.is_empty() {
            return Ok(Scan::End);
        }
        for d in views(app, rows) {
            read += 1;
            cursor = d.id.to_string();
            if matches(&d, rest) && !visit(d) {
                return Ok(Scan::Stopped);
            }
            if read >= SCAN_ROWS {
                return Ok(Scan::Budget(cursor));
            }
        }
    }
}

/// `GET /api/v1/devices/{id}`: the device, its inventory and history.
pub async fn show(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Json<Device>> {
    check_id("device id", &id)?;
    flush(&app).await?;
    let row = app.store.device(&id).await?.ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    let seen = lock(&app).get(&id).cloned();
    let mut d = view(&app, row, seen.as_ref());
    d.history = app
        .store
        .history(&id, HISTORY_SHOWN)
        .await?
        .into_iter()
        .map(|h| DeviceHistoryEntry {
            at_ms: h.at_ms,
            kind: h.kind,
            release: h.release.map(ReleaseId::new),
            detail: h.detail,
        })
        .collect();
    Ok(Json(d))
}

async fn load(app: &App, id: &str) -> ApiResult<DeviceRow> {
    check_id("device id", id)?;
    flush(app).await?;
    app.store.device(id).await?.ok_or_else(|| ApiError::not_found(format!("no device {id}")))
}

/// `POST /api/v1/devices/{id}/accept`: a pending device takes part in rollouts.
pub async fn accept(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<Json<Device>> {
    let mut row = load(&app, &id).await?;
    if row.status != DeviceStatus::Pending {
        return Err(ApiError::conflict(format!("device {id} is {}, not pending", row.status.as_str())));
    }
    row.status = DeviceStatus::Active;
    let mut change = Change::begin(&app).await?;
    change.tx().set_device_admin(&row, now_ms(), ("accepted", &format!("by {}", actor.label()))).await?;
    change.apply(device_entry(&row)).await?;
    change.audit(&actor.label(), "device.accept", &id, String::new(), remote);
    change.commit().await?;
    forget(&app, &id);
    Ok(Json(view(&app, row, None)))
}

/// `POST /api/v1/devices/{id}/decommission`: revokes the device's token and
/// keeps its history; the id may enroll again.
pub async fn decommission(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<Json<Device>> {
    let mut row = load(&app, &id).await?;
    if row.status == DeviceStatus::Decommissioned {
        return Err(ApiError::conflict(format!("device {id} is decommissioned already")));
    }
    let was_active = row.status == DeviceStatus::Active;
    row.status = DeviceStatus::Decommissioned;
    let mut change = Change::begin(&app).await?;
    change.tx().set_device_admin(&row, now_ms(), ("decommissioned", &format!("by {}", actor.label()))).await?;
    if was_active {
        // Its places in rollouts stop counting (it would go silent otherwise).
        change.apply(crate::journal::Entry::Retire { device: DeviceId::new(&id) }).await?;
    }
    change.audit(&actor.label(), "device.decommission", &id, String::new(), remote);
    change.commit().await?;
    forget(&app, &id);
    Ok(Json(view(&app, row, None)))
}

/// `PATCH /api/v1/devices/{id}`: tags and attributes (plans select on both).
pub async fn change(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Device>> {
    let c: DeviceChange = parse(&body)?;
    let mut row = load(&app, &id).await?;
    if c.add_tags.len() > MAX_LABELS || c.set_attributes.len() > MAX_LABELS {
        return Err(ApiError::unprocessable(
            "too-large",
            format!("at most {MAX_LABELS} tags and {MAX_LABELS} attributes in one change"),
        ));
    }
    for t in c.add_tags.iter().chain(&c.remove_tags) {
        check_id("tag", t)?;
    }
    for k in c.set_attributes.keys().chain(&c.remove_attributes) {
        check_id("attribute", k)?;
    }
    for (k, v) in &c.set_attributes {
        crate::validate::attribute_value(k, v)?;
    }
    row.tags.retain(|t| !c.remove_tags.contains(t));
    for t in &c.add_tags {
        if !row.tags.contains(t) {
            row.tags.push(t.clone());
        }
    }
    let mut attrs: BTreeMap<String, String> = row.attributes.into_iter().collect();
    for k in &c.remove_attributes {
        attrs.remove(k);
    }
    attrs.extend(c.set_attributes.clone());
    row.attributes = attrs.into_iter().collect();
    if row.tags.len() > MAX_LABELS || row.attributes.len() > MAX_LABELS {
        return Err(ApiError::bad_request(format!("at most {MAX_LABELS} tags and {MAX_LABELS} attributes per device")));
    }
    let detail = serde_json::to_string(&c).unwrap_or_default();
    let mut change = Change::begin(&app).await?;
    change.tx().set_device_admin(&row, now_ms(), ("changed", &detail)).await?;
    if row.status == DeviceStatus::Active {
        change.apply(device_entry(&row)).await?;
    }
    change.audit(&actor.label(), "device.change", &id, detail.clone(), remote);
    change.commit().await?;
    forget(&app, &id);
    Ok(Json(view(&app, row, None)))
}

/// `POST /api/v1/devices`: registers a device with a new token (a hawkBit
/// DDI client sends it as its TargetToken).
pub async fn create(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<CreatedDevice>)> {
    let req: CreateDeviceRequest = parse(&body)?;
    crate::validate::name("deviceId", req.device_id.as_str())?;
    crate::validate::name("family", &req.family)?;
    crate::validate::name("hardware", &req.hardware)?;
    if !req.region.is_empty() {
        crate::validate::name("region", &req.region)?;
    }
    crate::validate::tags(&req.tags)?;
    if let Some(r) = &req.release {
        crate::validate::release("release", r)?;
    }
    if ![updraft_store::PROTOCOL_UPDRAFT, updraft_store::PROTOCOL_DDI].contains(&req.protocol.as_str()) {
        return Err(ApiError::bad_request(format!("protocol {:?}: updraft or ddi", req.protocol)));
    }
    if app.store.device(req.device_id.as_str()).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "device {} exists; hint: decommission it first to register it again",
            req.device_id
        )));
    }
    let last_known_good = match &req.release {
        Some(r) if app.store.release(r.as_str()).await?.is_some() => Some(r.to_string()),
        _ => None,
    };
    let row = DeviceRow {
        region: req.region.clone(),
        tags: req.tags.clone(),
        release: req.release.as_ref().map(|r| r.to_string()),
        last_known_good,
        enrolled_ms: now_ms(),
        protocol: req.protocol.clone(),
        ..DeviceRow::new(req.device_id.as_str(), &req.family, &req.hardware)
    };
    let token = updraft_store::new_secret("upd_");
    let mut change = Change::begin(&app).await?;
    change.tx().insert_devices(&[(row.clone(), updraft_store::hash_secret(&token))]).await?;
    change.apply(device_entry(&row)).await?;
    change.audit(
        &actor.label(),
        "device.create",
        &row.id,
        format!("{}/{} ({})", row.family, row.hardware, row.protocol),
        remote,
    );
    change.commit().await?;
    forget(&app, &row.id);
    let out = CreatedDevice { device_id: req.device_id, device_token: token, protocol: req.protocol };
    Ok((StatusCode::CREATED, Json(out)))
}

/// `POST /api/v1/devices/{id}/request-config`: the device's next DDI poll
/// offers `configData`.
pub async fn request_config(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<Json<Device>> {
    let row = load(&app, &id).await?;
    if row.protocol != updraft_store::PROTOCOL_DDI {
        return Err(ApiError::conflict(format!("device {id} speaks {}, not DDI", row.protocol)));
    }
    crate::ddi::request_config(&app, &DeviceId::new(&id)).await?;
    let mut change = Change::begin(&app).await?;
    change.audit(&actor.label(), "device.request-config", &id, String::new(), remote);
    change.commit().await?;
    Ok(Json(view(&app, row, None)))
}
