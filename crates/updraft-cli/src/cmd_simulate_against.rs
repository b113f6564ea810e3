//! `updraft simulate --against URL`: the fleet model as a load generator
//! against a real server. Devices of the model's groups enroll (one
//! enrollment token), then client threads check them in as fast as the
//! server answers; a device given an assignment reports the install events
//! of the release model (committing, or reverting on the revisions where the
//! model says the health check fails) and runs the release from then on.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use updraft_sim::{Fleet, Release};

use crate::client::{Client, ClientArgs};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    pub url: String,
    pub devices: usize,
    pub clients: usize,
    pub seconds: f64,
    pub enroll_seconds: f64,
    pub check_ins: u64,
    pub check_ins_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub events: u64,
    pub assignments: u64,
    pub committed: u64,
    pub reverted: u64,
    pub errors: u64,
}

struct Dev {
    token: String,
    hardware: String,
    release: Mutex<String>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().new_agent()
}

pub fn run(
    url: &str,
    token: Option<String>,
    fleet: &Fleet,
    release: Option<&Release>,
    seconds: u64,
    clients: usize,
    seed: u64,
) -> anyhow::Result<LoadReport> {
    let admin = Client::new(&ClientArgs { server: Some(url.to_owned()), token })?;
    let n = fleet.device_count() as usize;
    let base_release = release.map_or_else(|| format!("{}-fw@1.0.0", fleet.family), Release::base_id);
    let t0 = Instant::now();
    let e = admin
        .post("/api/v1/enrollment-tokens", &serde_json::json!({"uses": n, "expiresInS": 3600}))
        .context("cannot create an enrollment token (an operator or admin token is needed)")?;
    let enroll_token = e["token"].as_str().context("no enrollment token in the answer")?.to_owned();
    let a = agent();
    let mut devices = Vec::with_capacity(n);
    for g in &fleet.groups {
        for _ in 0..g.count {
            let id = format!("sim-{seed}-{:07}", devices.len());
            let mut res = a
                .post(&format!("{url}/api/v1/device/enroll"))
                .send_json(serde_json::json!({
                    "enrollmentToken": enroll_token, "deviceId": id, "family": fleet.family,
                    "hardware": g.hardware, "region": g.region, "release": base_release,
                    "components": g.components,
                }))
                .with_context(|| format!("cannot reach {url}"))?;
            let text = res.body_mut().read_to_string().unwrap_or_default();
            anyhow::ensure!(res.status().as_u16() < 300, "enrolling {id}: HTTP {}: {text}", res.status().as_u16());
            let v: serde_json::Value = serde_json::from_str(&text)?;
            devices.push(Dev {
                token: format!("Bearer {}", v["deviceToken"].as_str().context("no device token")?),
                hardware: g.hardware.clone(),
                release: Mutex::new(base_release.clone()),
            });
        }
    }
    let enroll_seconds = t0.elapsed().as_secs_f64();

    let next = AtomicUsize::new(0);
    let counters: [AtomicU64; 6] = Default::default(); // check-ins, events, assignments, committed, reverted, errors
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let t1 = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let a = agent();
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let d = &devices[next.fetch_add(1, Ordering::Relaxed) % devices.len()];
                        let current = d.release.lock().expect("not poisoned").clone();
                        let t = Instant::now();
                        let res = a
                            .post(&format!("{url}/api/v1/device/check-in"))
                            .header("Authorization", &d.token)
                            .send_json(serde_json::json!({ "release": current }));
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        counters[0].fetch_add(1, Ordering::Relaxed);
                        let Ok(mut res) = res else {
                            counters[5].fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        if res.status().as_u16() >= 300 {
                            counters[5].fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let v: serde_json::Value = res.body_mut().read_json().unwrap_or_default();
                        let Some(target) = v["assignment"]["release"].as_str().map(str::to_owned) else { continue };
                        counters[2].fetch_add(1, Ordering::Relaxed);
                        let healthy = release.is_none_or(|r| r.id() != target || r.on(&d.hardware).health_fail < 0.5);
                        let kinds: &[&str] = if healthy {
                            &["downloaded", "installed", "trial_boot", "committed"]
                        } else {
                            &["downloaded", "installed", "trial_boot", "reverted_health"]
                        };
                        for kind in kinds {
                            let mut body = serde_json::json!({ "release": target, "event": kind });
                            if *kind == "reverted_health" {
                                body["detail"] = "health check failed (simulated)".into();
                            }
                            let ok = a
                                .post(&format!("{url}/api/v1/device/events"))
                                .header("Authorization", &d.token)
                                .send_json(body)
                                .is_ok_and(|r| r.status().as_u16() < 300);
                            counters[if ok { 1 } else { 5 }].fetch_add(1, Ordering::Relaxed);
                        }
                        if healthy {
                            counters[3].fetch_add(1, Ordering::Relaxed);
                            *d.release.lock().expect("not poisoned") = target;
                        } else {
                            counters[4].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    lat
                })
            })
            .collect();
        jobs.into_iter().flat_map(|j| j.join().unwrap_or_default()).collect()
    });
    let elapsed = t1.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0.0);
    let get = |i: usize| counters[i].load(Ordering::Relaxed);
    Ok(LoadReport {
        url: url.to_owned(),
        devices: devices.len(),
        clients,
        seconds: elapsed,
        enroll_seconds,
        check_ins: get(0),
        check_ins_per_s: get(0) as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        events: get(1),
        assignments: get(2),
        committed: get(3),
        reverted: get(4),
        errors: get(5),
    })
}
