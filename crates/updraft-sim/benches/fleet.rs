//! A full rollout over 1,000,000 simulated devices: wall time and memory
//! per device (target: under 60 s and under 1 KB per device).
//!
//! `cargo bench -p updraft-sim --bench fleet` (`UPDRAFT_BENCH_DEVICES=N`
//! for another size). The reference in the same run is the rollout
//! controller alone answering one check-in per device, the floor under
//! any simulated check-in.

#![allow(clippy::print_stdout)]

use std::time::Instant;

use updraft_rollout::{Controller, DeviceInfo, Input, Plan, ReleaseInfo};
use updraft_sim::{run, Fleet, Release};
use updraft_types::{DeviceId, ReleaseId, UnixMs};

const PLAN: &str = include_str!("../../../examples/sim/plan.toml");

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fleet(n: u64) -> String {
    let per = n / 4;
    let mut s = String::from(
        "family = \"sensor\"\npoll = \"30m\"\npower_loss = 0.01\nbase_crash_rate = 0.002\nduration = \"7d\"\n\
         [[connectivity]]\nname = \"wifi\"\nkbps = 20000\nloss = 0.01\n\
         [[connectivity]]\nname = \"lte-m\"\nkbps = 300\nlatency = \"600ms\"\nloss = 0.05\n",
    );
    for (i, (hw, region, class)) in
        [("rev-b", "eu", "wifi"), ("rev-c", "eu", "lte-m"), ("rev-b", "us", "wifi"), ("rev-c", "us", "lte-m")]
            .iter()
            .enumerate()
    {
        let count = if i == 3 { n - 3 * per } else { per };
        s += &format!(
            "[[groups]]\ncount = {count}\nhardware = \"{hw}\"\nregion = \"{region}\"\nconnectivity = \"{class}\"\noffline = 0.01\n"
        );
    }
    s
}

fn reference(n: u64) -> f64 {
    let t0 = Instant::now();
    let mut c = Controller::new(UnixMs(0));
    let now = UnixMs(0);
    c.handle(
        now,
        Input::Release(ReleaseInfo {
            id: ReleaseId::new("fw@1"),
            family: "sensor".into(),
            hardware: vec!["rev-b".into()],
            requires: Vec::new(),
            provides: Vec::new(),
        }),
    );
    for i in 0..n {
        c.handle(
            now,
            Input::Device(DeviceInfo {
                id: DeviceId::new(format!("dev-{i:07}")),
                family: "sensor".into(),
                hardware: "rev-b".into(),
                region: "eu".into(),
                tags: Vec::new(),
                channel: None,
                release: Some(ReleaseId::new("fw@1")),
                last_known_good: None,
                components: Vec::new(),
                utc_offset_min: 0,
            }),
        );
    }
    for i in 0..n {
        c.handle(
            now,
            Input::CheckIn { device: DeviceId::new(format!("dev-{i:07}")), release: Some(ReleaseId::new("fw@1")) },
        );
        while c.poll_output().is_some() {}
    }
    t0.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: u64 = std::env::var("UPDRAFT_BENCH_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let fleet: Fleet = toml::from_str(&fleet(n)).expect("fleet");
    let release: Release =
        toml::from_str("name = \"sensor-fw\"\nversion = \"1.1.0\"\nimage_mib = 16\n").expect("release");
    let plan = Plan::from_toml(PLAN).expect("plan");

    let before = status_kib("VmRSS:");
    let t0 = Instant::now();
    let r = run(&fleet, &release, &plan, 1, &mut |_| {}).expect("runs");
    let wall = t0.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    println!(
        "simulate {n} devices: rollout {} in {:.1} simulated hours; {} events, {} check-ins",
        r.final_state,
        r.sim_s as f64 / 3600.0,
        r.events,
        r.check_ins
    );
    println!(
        "  wall {wall:.1} s ({:.2} M events/s), peak memory {:.0} bytes/device",
        r.events as f64 / wall / 1e6,
        (peak.saturating_sub(before)) as f64 * 1024.0 / n as f64
    );
    let reference = reference(n);
    println!(
        "  reference: controller alone, {n} registrations + {n} check-ins: {reference:.1} s ({:.2} M check-ins/s)",
        n as f64 / reference / 1e6
    );
}
