//! The fleet model as a load generator against a real Updraft server over
//! HTTP (`updraft simulate --against`, and the server's benchmark).
//! Devices check in from client threads as fast as the server answers; a
//! device given an assignment reports the install events the release model
//! implies (committing, or reverting where its revision's `health_fail` is
//! 0.5 or more) and runs the release from then on. This module does IO; the
//! simulator proper does not.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::{Fleet, Release};

/// A device the load generator checks in.
pub struct LoadDevice {
    /// `Bearer upd_...`.
    pub auth: String,
    pub hardware: String,
    pub region: String,
    /// The release it runs.
    pub release: Mutex<String>,
}

/// What a load run measured.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadStats {
    pub clients: usize,
    pub seconds: f64,
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

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().new_agent()
}

/// Enrolls the fleet model's devices with one enrollment token; each runs `base_release`.
pub fn enroll(
    url: &str,
    enrollment_token: &str,
    fleet: &Fleet,
    base_release: &str,
    id_prefix: &str,
) -> Result<Vec<LoadDevice>, String> {
    let a = agent();
    let mut devices = Vec::with_capacity(fleet.device_count() as usize);
    for g in &fleet.groups {
        for _ in 0..g.count {
            let id = format!("{id_prefix}{:07}", devices.len());
            let mut res = a
                .post(&format!("{url}/api/v1/device/enroll"))
                .send_json(serde_json::json!({
                    "enrollmentToken": enrollment_token, "deviceId": id, "family": g.family(fleet),
                    "hardware": g.hardware, "region": g.region, "release": base_release,
                    "components": g.components,
                }))
                .map_err(|e| format!("cannot reach {url}: {e}"))?;
            let status = res.status().as_u16();
            let text = res.body_mut().read_to_string().unwrap_or_default();
            if status >= 300 {
                return Err(format!("enrolling {id}: HTTP {status}: {text}"));
            }
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let token = v["deviceToken"].as_str().ok_or("the enrollment answer has no device token")?;
            devices.push(LoadDevice {
                auth: format!("Bearer {token}"),
                hardware: g.hardware.clone(),
                region: g.region.clone(),
                release: Mutex::new(base_release.to_owned()),
            });
        }
    }
    Ok(devices)
}

/// Checks `devices` in from `clients` threads for `seconds`.
pub fn check_ins(
    url: &str,
    devices: &[LoadDevice],
    release: Option<&Release>,
    seconds: u64,
    clients: usize,
) -> LoadStats {
    let clients = clients.max(1);
    let next = AtomicUsize::new(0);
    // check-ins, events, assignments, committed, reverted, errors
    let counters: [AtomicU64; 6] = Default::default();
    let count = |i: usize| counters[i].fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let check_in_url = format!("{url}/api/v1/device/check-in");
    let events_url = format!("{url}/api/v1/device/events");
    let t0 = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let a = agent();
                    let mut lat = Vec::new();
                    while Instant::now() < deadline && !devices.is_empty() {
                        let d = &devices[next.fetch_add(1, Ordering::Relaxed) % devices.len()];
                        let current = d.release.lock().map(|r| r.clone()).unwrap_or_default();
                        let body = format!("{{\"release\":{}}}", serde_json::Value::from(current));
                        let t = Instant::now();
                        let res = a
                            .post(&check_in_url)
                            .header("Authorization", &d.auth)
                            .header("Content-Type", "application/json")
                            .send(body.as_bytes());
                        let answer = match res {
                            Ok(mut r) if r.status().as_u16() < 300 => {
                                r.body_mut().read_json::<serde_json::Value>().unwrap_or_default()
                            }
                            _ => {
                                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                                count(0);
                                count(5);
                                continue;
                            }
                        };
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        count(0);
                        let Some(target) = answer["assignment"]["release"].as_str().map(str::to_owned) else {
                            continue;
                        };
                        count(2);
                        let healthy =
                            release.is_none_or(|r| r.id() != target || r.on(&d.hardware, &d.region).health_fail < 0.5);
                        let last = if healthy { "committed" } else { "reverted_health" };
                        for kind in ["downloaded", "installed", "trial_boot", last] {
                            let ok = a
                                .post(&events_url)
                                .header("Authorization", &d.auth)
                                .send_json(serde_json::json!({ "release": target, "event": kind }))
                                .is_ok_and(|mut r| r.status().as_u16() < 300 && r.body_mut().read_to_vec().is_ok());
                            count(if ok { 1 } else { 5 });
                        }
                        if healthy {
                            count(3);
                            if let Ok(mut r) = d.release.lock() {
                                *r = target;
                            }
                        } else {
                            count(4);
                        }
                    }
                    lat
                })
            })
            .collect();
        jobs.into_iter().flat_map(|j| j.join().unwrap_or_default()).collect()
    });
    let elapsed = t0.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0.0);
    let get = |i: usize| counters[i].load(Ordering::Relaxed);
    LoadStats {
        clients,
        seconds: elapsed,
        check_ins: get(0),
        check_ins_per_s: get(0) as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        events: get(1),
        assignments: get(2),
        committed: get(3),
        reverted: get(4),
        errors: get(5),
    }
}
