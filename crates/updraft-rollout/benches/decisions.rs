//! Check-in decisions per second and controller memory per device, with a
//! fleet of 1,000,000 devices in one running rollout.
//!
//! `cargo bench -p updraft-rollout --bench decisions`. The reference in the
//! same run is the floor of any decision: looking the device up in a hash
//! map of the fleet.

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use updraft_rollout::*;
use updraft_types::{DeviceId, ReleaseId, RolloutId, UnixMs};

const PLAN: &str = r#"
[selector]
family = "sensor"

[[waves]]
percent = 1
soak = "1h"

[[waves]]
percent = 100

[[gates]]
kind = "boot"
max_failure_rate = 0.05
"#;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("UPDRAFT_BENCH_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let hardware = ["rev-a", "rev-b", "rev-c", "rev-d"];
    let regions = ["eu", "us", "ap", "sa", "af"];
    let ids: Vec<DeviceId> = (0..n).map(|i| DeviceId::new(format!("device-{i:08}"))).collect();

    let before = rss_kib();
    let mut c = Controller::new(UnixMs(0));
    let t = UnixMs(0);
    for id in ["fw@1.0.0", "fw@2.0.0"] {
        c.handle(
            t,
            Input::Release(ReleaseInfo {
                id: ReleaseId::new(id),
                family: "sensor".into(),
                hardware: hardware.iter().map(|h| h.to_string()).collect(),
                requires: vec![],
                provides: vec![],
            }),
        );
    }
    let start = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        c.handle(
            t,
            Input::Device(DeviceInfo {
                id: id.clone(),
                family: "sensor".into(),
                hardware: hardware[i % 4].into(),
                region: regions[i % 5].into(),
                tags: vec![],
                channel: Some("stable".into()),
                release: Some(ReleaseId::new("fw@1.0.0")),
                last_known_good: Some(ReleaseId::new("fw@1.0.0")),
                components: vec![],
                utc_offset_min: 0,
            }),
        );
    }
    let load = start.elapsed();
    let plan = Plan::from_toml(PLAN).unwrap();
    let rollout = RolloutId::new("r1");
    let start = Instant::now();
    c.handle(t, Input::CreateRollout { id: rollout.clone(), release: ReleaseId::new("fw@2.0.0"), plan });
    c.handle(t, Input::Command { rollout: rollout.clone(), command: Command::Start });
    let create = start.elapsed();
    while c.poll_output().is_some() {}
    let per_device = (rss_kib() - before) as f64 * 1024.0 / n as f64;

    // Reference: a bare hash-map lookup of each device id.
    let map: HashMap<&DeviceId, u32> = ids.iter().enumerate().map(|(i, id)| (id, i as u32)).collect();
    let rounds = 3;
    let start = Instant::now();
    for _ in 0..rounds {
        for id in &ids {
            black_box(map.get(black_box(id)));
        }
    }
    let reference = start.elapsed().as_secs_f64() / (rounds * n) as f64;

    // Check-ins: every device asks once per round; 1% get the release in round 1.
    let release = Some(ReleaseId::new("fw@1.0.0"));
    let mut installs = 0u64;
    let start = Instant::now();
    for round in 0..rounds {
        for id in &ids {
            c.handle(UnixMs(1000 + round as u64), Input::CheckIn { device: id.clone(), release: release.clone() });
            while let Some(out) = c.poll_output() {
                if let Output::Decision { decision: Decision::Install { .. }, .. } = out {
                    installs += 1;
                }
            }
        }
    }
    let decision = start.elapsed().as_secs_f64() / (rounds * n) as f64;

    println!("rollout decisions, {n} devices, 1 rollout, 4 hardware revisions x 5 regions");
    println!("  load fleet        {:>8.2} s", load.as_secs_f64());
    println!("  create rollout    {:>8.2} s (hash and stratify every device)", create.as_secs_f64());
    println!("  memory            {:>8.0} bytes per device (target < 256)", per_device);
    println!("  hash-map lookup   {:>8.0} ns  {:>10.0} /s  (reference)", reference * 1e9, 1.0 / reference);
    println!(
        "  check-in decision {:>8.0} ns  {:>10.0} /s  (target >= 1,000,000 /s; {:.1}x the lookup)",
        decision * 1e9,
        1.0 / decision,
        decision / reference
    );
    println!("  installs assigned {installs} (the 1% wave, idempotent on repeat)");
}
