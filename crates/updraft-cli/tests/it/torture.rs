//! The crash-torture test: a real `updraft serve` process under mixed load
//! (enrollments, check-ins, events, health, publishes, rollout commands,
//! token changes), killed with SIGKILL at seeded random moments and aborted
//! at injected points between the steps of multi-step operations (the
//! server's `fault-injection` feature, on in test builds). After each kill,
//! `updraft serve --check` must find the stores consistent (staged uploads
//! aside), and after each restart every acknowledged operation must be
//! there: devices with working tokens, releases that download with their
//! digest, rollouts, tokens live or revoked as acknowledged, failure logs,
//! an audit entry for every acknowledged change, no staged upload left. An
//! enrollment whose answer the kill swallowed is retried with the same
//! enrollment token and must succeed. SQLite always; PostgreSQL when
//! `UPDRAFT_TEST_DATABASE_URL` is set (always in CI).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use serde_json::{json, Value};
use sha2::Digest;

use crate::{create_args, key, strs, updraft, workspace};

/// Kills per database and run (half at random moments, half at fault points).
const KILLS: usize = 52;
/// Releases published over the run (bundles built up front).
const BUNDLES: usize = 6;
const SEED: u64 = 0x7075_6464_7261_6674;

/// SplitMix64: the harness's one random stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the server acknowledged, and what it was asked without answering.
#[derive(Default)]
struct Ledger {
    /// Device id → its token (the newest one acknowledged).
    devices: BTreeMap<String, String>,
    /// Enrollments sent whose answer never came: (device id, enrollment token, hardware).
    unanswered: Vec<(String, String, &'static str)>,
    /// Release id → sha256.
    releases: BTreeMap<String, String>,
    rollouts: BTreeSet<String>,
    /// Token name → (id, secret), live.
    tokens: BTreeMap<String, (i64, String)>,
    /// Secrets of tokens whose revocation was acknowledged.
    revoked: Vec<String>,
    /// (device, detail) of acknowledged failure reports.
    failures: Vec<(String, String)>,
    acked: u64,
    by_kind: BTreeMap<&'static str, u64>,
    /// Answers that are never acceptable (5xx), with what was asked.
    errors: Vec<String>,
}

struct Shared {
    ledger: Mutex<Ledger>,
    progress: Condvar,
}

impl Shared {
    fn ack(&self, kind: &'static str, f: impl FnOnce(&mut Ledger)) {
        let mut l = self.ledger.lock().unwrap();
        f(&mut l);
        l.acked += 1;
        *l.by_kind.entry(kind).or_default() += 1;
        self.progress.notify_all();
    }
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP call; `None` when the server is gone (refused, reset, cut short).
fn call(url: &str, method: &str, path: &str, token: Option<&str>, body: Option<Vec<u8>>) -> Option<Answer> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .new_agent();
    let mut req = ureq::http::Request::builder().method(method).uri(format!("{url}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(
            "Content-Type",
            if path == "/api/v1/releases" { "application/octet-stream" } else { "application/json" },
        );
    }
    let req = req.body(body.unwrap_or_default()).ok()?;
    let mut res = agent.run(req).ok()?;
    let status = res.status().as_u16();
    let body = res.body_mut().with_config().limit(1 << 30).read_to_vec().ok()?;
    Some(Answer { status, body })
}

fn post(url: &str, path: &str, token: Option<&str>, v: Value) -> Option<Answer> {
    call(url, "POST", path, token, Some(serde_json::to_vec(&v).unwrap()))
}

struct Db {
    name: &'static str,
    /// `--database-url`, or none for the data folder's SQLite file.
    url: Option<String>,
}

fn databases() -> Vec<Db> {
    let mut out = vec![Db { name: "sqlite", url: None }];
    match std::env::var("UPDRAFT_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => {
            let schema = format!("torture_{}", std::process::id());
            let run = Command::new("psql")
                .args([
                    u.as_str(),
                    "-q",
                    "-c",
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
                ])
                .output()
                .expect("psql (postgresql-client) runs");
            assert!(run.status.success(), "psql: {}", String::from_utf8_lossy(&run.stderr));
            let sep = if u.contains('?') { '&' } else { '?' };
            out.push(Db { name: "postgres", url: Some(format!("{u}{sep}options=-csearch_path%3D{schema}")) });
        }
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "UPDRAFT_TEST_DATABASE_URL must be set in CI");
            eprintln!("skipped PostgreSQL: UPDRAFT_TEST_DATABASE_URL is not set");
        }
    }
    out
}

/// `updraft serve` with the data folder `data` under `dir`.
fn serve_args(db: &Db) -> Vec<String> {
    let mut args: Vec<String> = ["--trust", "root.json", "--data-dir", "data"].iter().map(|s| s.to_string()).collect();
    if let Some(u) = &db.url {
        args.extend(["--database-url".into(), u.clone()]);
    }
    args
}

struct Server {
    child: Child,
    url: String,
}

/// Starts the server (with a fault point armed, if any) and waits until it
/// listens; `None` if it died first (a fault point reached at start-up).
fn start(dir: &Path, db: &Db, fault: Option<(&str, u64)>) -> Option<Server> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_updraft"));
    cmd.arg("serve").args(["--listen", "127.0.0.1:0"]).args(serve_args(db)).current_dir(dir);
    cmd.env("UPDRAFT_LOG", "warn").env("UPDRAFT_POLL_INTERVAL_S", "30");
    if let Some((point, after)) = fault {
        cmd.env("UPDRAFT_FAULT_POINT", point).env("UPDRAFT_FAULT_AFTER", after.to_string());
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("updraft serving on ") {
            url = Some(rest.split_whitespace().next().unwrap().to_owned());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    match url {
        Some(url) => Some(Server { child, url }),
        None => {
            let _ = child.wait();
            None
        }
    }
}

fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/admin-token")).unwrap().trim().to_owned()
}

/// The load: four clients until the server goes away.
fn load(url: &str, admin: &str, shared: &Arc<Shared>, round: usize, bundles: &[(PathBuf, String)]) {
    let enroll_token =
        post(url, "/api/v1/enrollment-tokens", Some(admin), json!({ "uses": 100000, "expiresInS": 86400 }))
            .filter(|a| a.status == 201)
            .map(|a| a.json()["token"].as_str().unwrap_or_default().to_owned());
    let Some(enroll_token) = enroll_token else { return };
    let mut clients = Vec::new();
    // Enrollments, each followed by the device's first check-in and a health report.
    {
        let (url, shared, enroll_token) = (url.to_owned(), shared.clone(), enroll_token.clone());
        clients.push(std::thread::spawn(move || {
            for n in 0.. {
                let id = format!("dev-{round:03}-{n:04}");
                let hardware = if n % 7 == 0 { "rev-d" } else { "rev-c" };
                let body = json!({ "enrollmentToken": enroll_token, "deviceId": id, "family": "nrf52",
                    "hardware": hardware, "region": "eu", "components": { "bootloader": "1.4.2" } });
                let Some(a) = post(&url, "/api/v1/device/enroll", None, body) else {
                    shared.ledger.lock().unwrap().unanswered.push((id, enroll_token.clone(), hardware));
                    return;
                };
                if a.status != 201 {
                    shared.ledger.lock().unwrap().errors.push(format!(
                        "enroll {id}: {} {}",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    ));
                    return;
                }
                let token = a.json()["deviceToken"].as_str().unwrap().to_owned();
                shared.ack("enroll", |l| {
                    l.devices.insert(id.clone(), token.clone());
                });
                let Some(a) = post(
                    &url,
                    "/api/v1/device/check-in",
                    Some(&token),
                    json!({ "components": { "bootloader": "1.4.2" } }),
                ) else {
                    return;
                };
                if a.status != 200 {
                    shared.ledger.lock().unwrap().errors.push(format!("check-in {id}: {}", a.status));
                }
                let health = json!({ "periodS": 3600, "boots": 1, "crashes": n % 3, "metrics": { "tempC": 40.5 } });
                let Some(a) = post(&url, "/api/v1/device/health", Some(&token), health) else { return };
                if a.status == 204 {
                    shared.ack("health", |_| {});
                } else {
                    shared.ledger.lock().unwrap().errors.push(format!("health {id}: {}", a.status));
                }
            }
        }));
    }
    // Devices that enrolled earlier: check-ins and failure reports.
    {
        let (url, shared) = (url.to_owned(), shared.clone());
        clients.push(std::thread::spawn(move || {
            for n in 0u64.. {
                let (device, release) = {
                    let l = shared.ledger.lock().unwrap();
                    if l.devices.is_empty() {
                        (None, None)
                    } else {
                        let i = (n as usize * 7919) % l.devices.len();
                        (
                            l.devices.iter().nth(i).map(|(d, t)| (d.clone(), t.clone())),
                            l.releases.keys().next().cloned(),
                        )
                    }
                };
                let Some((id, token)) = device else {
                    // Nobody to speak for yet: a health probe keeps the loop honest.
                    if call(&url, "GET", "/healthz", None, None).is_none() {
                        return;
                    }
                    continue;
                };
                let Some(a) = post(&url, "/api/v1/device/check-in", Some(&token), json!({})) else { return };
                if a.status == 200 {
                    shared.ack("check-in", |_| {});
                } else if a.status != 429 {
                    shared.ledger.lock().unwrap().errors.push(format!("check-in {id}: {}", a.status));
                }
                if let (Some(release), true) = (release, n % 4 == 0) {
                    let detail = format!("round {round} report {n}: flash write failed");
                    let body = json!({ "release": release, "event": "failed", "detail": detail });
                    let Some(a) = post(&url, "/api/v1/device/events", Some(&token), body) else { return };
                    if a.status == 204 {
                        shared.ack("event", |l| l.failures.push((id.clone(), detail.clone())));
                    } else if a.status != 429 {
                        shared.ledger.lock().unwrap().errors.push(format!("event {id}: {}", a.status));
                    }
                }
            }
        }));
    }
    // The operator: publishes, rollouts, pauses and resumes, promotions.
    {
        let (url, shared, admin, bundles) = (url.to_owned(), shared.clone(), admin.to_owned(), bundles.to_vec());
        clients.push(std::thread::spawn(move || {
            for n in 0usize.. {
                let (bundle, id) = &bundles[(round + n) % bundles.len()];
                let Some(a) = call(&url, "POST", "/api/v1/releases", Some(&admin), Some(std::fs::read(bundle).unwrap())) else { return };
                if a.status == 201 || a.status == 200 {
                    let sha = a.json()["sha256"].as_str().unwrap_or_default().to_owned();
                    shared.ack("publish", |l| {
                        l.releases.insert(id.clone(), sha);
                    });
                } else {
                    shared.ledger.lock().unwrap().errors.push(format!("publish {id}: {} {}", a.status, String::from_utf8_lossy(&a.body)));
                    return;
                }
                let rollout = format!("r-{round:03}-{n:03}");
                let plan = "[selector]\nfamily = \"nrf52\"\n[[waves]]\npercent = 10\nsoak = \"1d\"\n[[waves]]\npercent = 100\n";
                let Some(a) = post(&url, "/api/v1/rollouts", Some(&admin), json!({ "id": rollout, "release": id, "plan": plan })) else { return };
                match a.status {
                    201 => shared.ack("rollout", |l| {
                        l.rollouts.insert(rollout.clone());
                    }),
                    // Another rollout of this release runs: refused, nothing changed.
                    409 | 422 => {}
                    s => shared.ledger.lock().unwrap().errors.push(format!("rollout {rollout}: {s} {}", String::from_utf8_lossy(&a.body))),
                }
                for command in ["pause", "resume"] {
                    let Some(a) = call(&url, "POST", &format!("/api/v1/rollouts/{rollout}/{command}"), Some(&admin), None) else { return };
                    if a.status == 200 {
                        shared.ack("command", |_| {});
                    } else if a.status >= 500 {
                        shared.ledger.lock().unwrap().errors.push(format!("{command} {rollout}: {}", a.status));
                    }
                }
                let Some(a) = post(&url, "/api/v1/channels/beta/releases", Some(&admin), json!({ "release": id })) else { return };
                if a.status >= 500 {
                    shared.ledger.lock().unwrap().errors.push(format!("promote {id}: {}", a.status));
                }
            }
        }));
    }
    // Tokens: created, some revoked.
    {
        let (url, shared, admin) = (url.to_owned(), shared.clone(), admin.to_owned());
        clients.push(std::thread::spawn(move || {
            for n in 0usize.. {
                let name = format!("t-{round:03}-{n:04}");
                let Some(a) = post(&url, "/api/v1/tokens", Some(&admin), json!({ "name": name, "role": "viewer" }))
                else {
                    return;
                };
                if a.status != 201 {
                    shared.ledger.lock().unwrap().errors.push(format!("token {name}: {}", a.status));
                    return;
                }
                let v = a.json();
                let (id, secret) = (v["id"].as_i64().unwrap(), v["token"].as_str().unwrap().to_owned());
                shared.ack("token", |l| {
                    l.tokens.insert(name.clone(), (id, secret.clone()));
                });
                if n % 3 == 0 {
                    // Asked to revoke, the token is neither live nor revoked
                    // for the checks until the answer comes.
                    shared.ledger.lock().unwrap().tokens.remove(&name);
                    let Some(a) = call(&url, "DELETE", &format!("/api/v1/tokens/{id}"), Some(&admin), None) else {
                        return;
                    };
                    if a.status == 204 {
                        shared.ack("revoke", |l| l.revoked.push(secret.clone()));
                    } else {
                        shared.ledger.lock().unwrap().errors.push(format!("revoke {name}: {}", a.status));
                    }
                }
            }
        }));
    }
    for c in clients {
        c.join().unwrap();
    }
}

/// `updraft serve --check --json` on the stopped server's data: the findings' codes.
fn check(dir: &Path, db: &Db) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_updraft"))
        .arg("serve")
        .args(serve_args(db))
        .args(["--check", "--json"])
        .env("UPDRAFT_LOG", "error")
        .current_dir(dir)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("serve --check: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {}: {}", f["code"].as_str().unwrap(), f["subject"], f["detail"]))
        .collect()
}

/// Every acknowledged operation is there, and the invariants hold.
fn verify(dir: &Path, url: &str, admin: &str, shared: &Shared) -> Vec<String> {
    let mut problems = Vec::new();
    // Enrollments the kill left unanswered: a retry with the same enrollment token succeeds.
    let unanswered = std::mem::take(&mut shared.ledger.lock().unwrap().unanswered);
    for (id, enrollment_token, hardware) in unanswered {
        let body = json!({ "enrollmentToken": enrollment_token, "deviceId": id, "family": "nrf52",
            "hardware": hardware, "region": "eu", "components": { "bootloader": "1.4.2" } });
        match post(url, "/api/v1/device/enroll", None, body) {
            Some(a) if a.status == 201 => {
                let token = a.json()["deviceToken"].as_str().unwrap().to_owned();
                shared.ack("enroll-retry", |l| {
                    l.devices.insert(id.clone(), token);
                });
            }
            Some(a) => {
                problems.push(format!("retried enrollment of {id}: {} {}", a.status, String::from_utf8_lossy(&a.body)))
            }
            None => problems.push(format!("retried enrollment of {id}: no answer")),
        }
    }
    let l = shared.ledger.lock().unwrap();
    // Devices: listed, their tokens work.
    let mut listed = BTreeSet::new();
    let mut after = String::new();
    loop {
        let a = call(url, "GET", &format!("/api/v1/devices?limit=1000&after={after}"), Some(admin), None).unwrap();
        let page = a.json();
        for d in page["devices"].as_array().unwrap() {
            listed.insert(d["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
    }
    for (id, token) in &l.devices {
        if !listed.contains(id) {
            problems.push(format!("acknowledged device {id} is not listed"));
        }
        if id.ends_with('0') {
            let a = post(url, "/api/v1/device/check-in", Some(token), json!({})).unwrap();
            if a.status != 200 {
                problems.push(format!("device {id}'s token: check-in {}", a.status));
            }
        }
    }
    // Releases: listed, and each listed one downloads with its digest.
    let releases = call(url, "GET", "/api/v1/releases", Some(admin), None).unwrap().json();
    let listed: BTreeMap<String, String> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r["sha256"].as_str().unwrap().to_owned()))
        .collect();
    for (id, sha) in &l.releases {
        if listed.get(id) != Some(sha) {
            problems.push(format!("acknowledged release {id} ({sha}) is not listed as such"));
        }
    }
    for (id, sha) in &listed {
        let a = call(url, "GET", &format!("/api/v1/artifacts/{sha}"), Some(admin), None).unwrap();
        let got = hex::encode(sha2::Sha256::digest(&a.body));
        if a.status != 200 || &got != sha {
            problems.push(format!("listed release {id}: download {} with sha256 {got}", a.status));
        }
    }
    // Rollouts.
    let rollouts = call(url, "GET", "/api/v1/rollouts", Some(admin), None).unwrap().json();
    let listed: BTreeSet<String> =
        rollouts.as_array().unwrap().iter().map(|r| r["rollout"].as_str().unwrap().to_owned()).collect();
    for r in l.rollouts.difference(&listed) {
        problems.push(format!("acknowledged rollout {r} is not listed"));
    }
    // Tokens: live ones work, revoked ones do not.
    for (name, (_, secret)) in l.tokens.iter().rev().take(20) {
        let a = call(url, "GET", "/api/v1/channels/beta", Some(secret), None).unwrap();
        if a.status != 200 {
            problems.push(format!("token {name}: {}", a.status));
        }
    }
    for secret in l.revoked.iter().rev().take(20) {
        let a = call(url, "GET", "/api/v1/channels/beta", Some(secret), None).unwrap();
        if a.status != 401 {
            problems.push(format!("a revoked token answers {}", a.status));
        }
    }
    // Failure logs are kept with the device.
    for (device, detail) in l.failures.iter().rev().take(5) {
        let d = call(url, "GET", &format!("/api/v1/devices/{device}"), Some(admin), None).unwrap().json();
        let found = d["history"].as_array().is_some_and(|h| h.iter().any(|e| e["detail"] == detail.as_str()));
        // The history shows the newest entries only; an older report may have scrolled out.
        let shown = d["history"].as_array().map_or(0, |h| h.len());
        if !found && shown < 50 {
            problems.push(format!("device {device}'s failure report {detail:?} is not in its history"));
        }
    }
    // An audit entry for every acknowledged change.
    let audited = |action: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut after = 0;
        loop {
            let a =
                call(url, "GET", &format!("/api/v1/audit?action={action}&after={after}&limit=1000"), Some(admin), None)
                    .unwrap()
                    .json();
            let entries = a.as_array().unwrap();
            if entries.is_empty() {
                return out;
            }
            for e in entries {
                out.insert(e["subject"].as_str().unwrap().to_owned());
                after = e["id"].as_i64().unwrap();
            }
        }
    };
    let enrolled = audited("device.enroll");
    for id in l.devices.keys().filter(|id| !enrolled.contains(*id)) {
        problems.push(format!("no audit entry for the enrollment of {id}"));
    }
    let published = audited("release.publish");
    for id in l.releases.keys().filter(|id| !published.contains(*id)) {
        problems.push(format!("no audit entry for the publication of {id}"));
    }
    let created = audited("rollout.create");
    for id in l.rollouts.iter().filter(|id| !created.contains(*id)) {
        problems.push(format!("no audit entry for rollout {id}"));
    }
    let tokens = audited("token.create");
    for name in l.tokens.keys().filter(|n| !tokens.contains(*n)) {
        problems.push(format!("no audit entry for token {name}"));
    }
    // No staged upload survives a start.
    let staged: Vec<_> =
        std::fs::read_dir(dir.join("data/blobs/tmp")).map(|d| d.flatten().collect()).unwrap_or_default();
    if !staged.is_empty() {
        problems.push(format!("{} staged uploads left after the start", staged.len()));
    }
    problems
}

/// Builds `BUNDLES` releases of the sample firmware (signed 2 of 3).
fn bundles(dir: &Path) -> Vec<(PathBuf, String)> {
    (1..=BUNDLES)
        .map(|i| {
            let version = format!("2.4.{i}");
            let out = format!("fw-{version}.bundle");
            let mut args = create_args("fw", &out, &[key("release-a.key"), key("release-c.key")]);
            let v = args.iter().position(|a| a == "--version").unwrap();
            args[v + 1] = version.clone();
            updraft(dir, &strs(&args)).ok();
            (dir.join(out), format!("sensor-fw@{version}"))
        })
        .collect()
}

fn torture(db: &Db) {
    let dir = workspace();
    let d = dir.path();
    let bundles = bundles(d);
    let shared = Arc::new(Shared { ledger: Mutex::new(Ledger::default()), progress: Condvar::new() });
    let mut rng = Rng(SEED ^ db.name.len() as u64);
    let (mut random_kills, mut point_kills, mut startup_kills) = (0, 0, 0);
    let mut problems: Vec<String> = Vec::new();
    let mut round = 0;
    while random_kills + point_kills < KILLS {
        round += 1;
        // Every other round arms a fault point, chosen and counted by the seed.
        let fault = (round % 2 == 0).then(|| {
            let points = updraft_server::FAULT_POINTS;
            (points[rng.below(points.len() as u64) as usize], 1 + rng.below(3))
        });
        let Some(mut server) = start(d, db, fault) else {
            startup_kills += 1;
            assert!(startup_kills < 10, "the server keeps dying at start-up");
            continue;
        };
        let admin = admin_token(d);
        let url = server.url.clone();
        let target = shared.ledger.lock().unwrap().acked + 5 + rng.below(60);
        let loader = {
            let (url, admin, shared, bundles) = (url.clone(), admin.clone(), shared.clone(), bundles.clone());
            std::thread::spawn(move || load(&url, &admin, &shared, round, &bundles))
        };
        if fault.is_some() {
            // The server aborts at its fault point; if the load never gets
            // there, a kill after plenty of work ends the round instead.
            let limit = shared.ledger.lock().unwrap().acked + 400;
            let mut l = shared.ledger.lock().unwrap();
            while l.acked < limit && server.child.try_wait().unwrap().is_none() {
                l = shared.progress.wait_timeout(l, std::time::Duration::from_millis(100)).unwrap().0;
            }
            drop(l);
            if server.child.try_wait().unwrap().is_some() {
                point_kills += 1;
            } else {
                server.child.kill().unwrap();
                random_kills += 1;
            }
        } else {
            let mut l = shared.ledger.lock().unwrap();
            while l.acked < target && server.child.try_wait().unwrap().is_none() {
                l = shared.progress.wait_timeout(l, std::time::Duration::from_millis(100)).unwrap().0;
            }
            drop(l);
            server.child.kill().unwrap();
            random_kills += 1;
        }
        server.child.wait().unwrap();
        loader.join().unwrap();
        // Stopped: the stores agree (an upload cut short may be staged).
        for f in check(d, db) {
            if !f.starts_with("staged-upload") {
                problems.push(format!("round {round} ({fault:?}): serve --check: {f}"));
            }
        }
        // Restarted: everything acknowledged is there.
        let server = start(d, db, None).expect("the server starts after a kill");
        for p in verify(d, &server.url, &admin, &shared) {
            problems.push(format!("round {round} ({fault:?}): {p}"));
        }
        let mut s = server;
        s.child.kill().unwrap();
        s.child.wait().unwrap();
    }
    let l = shared.ledger.lock().unwrap();
    let lost = problems.len();
    eprintln!(
        "crash torture on {}: {} kills ({random_kills} at random moments, {point_kills} at fault points, \
         {startup_kills} more at start-up), {} operations acknowledged {:?}, {} devices, {} releases, \
         {} rollouts; lost or inconsistent: {lost}; 5xx answers: {}",
        db.name,
        random_kills + point_kills,
        l.acked,
        l.by_kind,
        l.devices.len(),
        l.releases.len(),
        l.rollouts.len(),
        l.errors.len(),
    );
    assert!(problems.is_empty(), "{}:\n{}", db.name, problems.join("\n"));
    assert!(l.errors.is_empty(), "{}: answers that are never acceptable:\n{}", db.name, l.errors.join("\n"));
    assert!(l.by_kind.get("enroll").copied().unwrap_or(0) > 50 && l.by_kind.get("publish").copied().unwrap_or(0) > 10);
}

#[test]
fn nothing_acknowledged_is_lost_across_kills() {
    std::thread::scope(|s| {
        for db in databases() {
            s.spawn(move || torture(&db));
        }
    });
}
