//! The rare-stratum family: bad releases on one rare hardware revision
//! across fleet sizes, stratum shares, failure kinds and rates, and noisy
//! good releases, each swept over seeds under four engines in the same
//! run: today's rule (`strata.decide_each = false`, the reference: strata
//! can only halt), strata deciding (the default), strata deciding with
//! the ramp (`strata.ramp_start = 2`), and the ramp with the strata that
//! passed moving on while a rare one is still undecided
//! (`strata.others = "advance"`).
//!
//! `cargo bench -p updraft-sim --bench strata`. Narrow it with
//! `UPDRAFT_BENCH_SIZES=10000,100000`, `UPDRAFT_BENCH_SEEDS=20` (seeds
//! per scenario at 10,000 devices; fewer at larger sizes, see `seeds`)
//! `UPDRAFT_BENCH_PART=bad` or `good`, `UPDRAFT_BENCH_ENGINES=today,ramp+advance`
//! (engines by name) and `UPDRAFT_BENCH_ONLY="rev-x 10.0%, boot 10%"` (the
//! scenarios whose heading contains it).
//!
//! Each bad scenario prints, per engine, the rare stratum's devices given
//! the release before the halt (p50 / p99), their failed trial boots or
//! health checks (p50 / p99), the share of runs where it halted and the
//! median time to halt. Each good scenario prints the false-halt share and
//! the median time until every online device runs the release. The last
//! lines check the targets on the ramp engine.

#![allow(clippy::print_stdout)]

use std::time::Instant;

use updraft_rollout::Plan;
use updraft_sim::sweep::{sweep, SweepReport};
use updraft_sim::{Fleet, Policy, Release};

const KINDS: [&str; 3] = ["boot", "health", "crash"];
const RATES: [f64; 2] = [0.1, 0.5];
const SHARES: [f64; 3] = [0.005, 0.024, 0.1];

/// A meter fleet of `n` devices, the rare revision rev-x a `share` of it,
/// split over two regions; 15-minute polls, hourly health samples.
fn fleet(n: u64, share: f64) -> Fleet {
    let rare = (n as f64 * share).round() as u64;
    let common = n - rare;
    let mut s = String::from(
        "family = \"meter\"\npoll = \"15m\"\nhealth_every = \"1h\"\npower_loss = 0.002\nbase_crash_rate = 0.001\n\
         duration = \"3d\"\n[[connectivity]]\nname = \"plc\"\nkbps = 2000\nlatency = \"400ms\"\nloss = 0.01\n",
    );
    let a = common * 6 / 10;
    for (hw, region, count) in [
        ("rev-a", "north", a),
        ("rev-b", "south", common - a),
        ("rev-x", "north", rare / 2),
        ("rev-x", "south", rare - rare / 2),
    ] {
        s += &format!(
            "[[groups]]\ncount = {count}\nhardware = \"{hw}\"\nregion = \"{region}\"\nconnectivity = \"plc\"\noffline = 0.02\n"
        );
    }
    toml::from_str(&s).expect("fleet model")
}

/// A release bad on rev-x only: `kind` fails at `rate` (for crashes: `rate`
/// crashes per device-hour, against 0.001 on the base release).
fn bad_release(kind: &str, rate: f64) -> Release {
    let how = match kind {
        "boot" => format!("boot_fail = {rate}"),
        "health" => format!("health_fail = {rate}"),
        _ => format!("crash_factor = {}", rate / 0.001),
    };
    toml::from_str(&format!(
        "name = \"meter-fw\"\nversion = \"4.2.0\"\nbase = \"4.1.0\"\nimage_mib = 4\n[[behaviour]]\nhardware = \"rev-x\"\n{how}\n"
    ))
    .expect("release model")
}

/// A good release, noisy but under every threshold (2%): 0.5% of trial
/// boots and health checks fail everywhere, 0.8% on rev-x.
fn good_release() -> Release {
    toml::from_str(
        "name = \"meter-fw\"\nversion = \"4.2.0\"\nbase = \"4.1.0\"\nimage_mib = 4\n\
         [[behaviour]]\nboot_fail = 0.005\nhealth_fail = 0.005\n\
         [[behaviour]]\nhardware = \"rev-x\"\nboot_fail = 0.008\nhealth_fail = 0.008\n",
    )
    .expect("release model")
}

/// The meters plan (waves 1% of at least 1,000 devices, 5%, 25%, 100%; trial
/// boots and health checks may fail at 2%, installs at 5%) with a
/// crash-rate gate; `strata` is the engine's `[strata]` table.
fn plan(strata: &str) -> Plan {
    Plan::from_toml(&format!(
        "name = \"meters\"\non_failure = \"rollback\"\n[strata]\n{strata}\n[selector]\nfamily = \"meter\"\n\
         [[waves]]\npercent = 1\nmin_devices = 1000\nsoak = \"3h\"\n[[waves]]\npercent = 5\nsoak = \"3h\"\n\
         [[waves]]\npercent = 25\nsoak = \"6h\"\n[[waves]]\npercent = 100\n\
         [[gates]]\nkind = \"install\"\nmax_failure_rate = 0.05\n\
         [[gates]]\nkind = \"boot\"\nmax_failure_rate = 0.02\n\
         [[gates]]\nkind = \"health\"\nmax_failure_rate = 0.02\n\
         [[gates]]\nkind = \"crash_rate\"\nmax_ratio = 2.0\nmin_exposure_hours = 20\n"
    ))
    .expect("plan")
}

const ENGINES: [(&str, &str); 4] = [
    ("today", "decide_each = false"),
    ("strata", ""),
    ("strata+ramp", "ramp_start = 2"),
    ("ramp+advance", "ramp_start = 2\nothers = \"advance\""),
];

/// Seeds per scenario: `base` at 10,000 devices, fewer for larger fleets.
fn seeds(base: u64, n: u64) -> u64 {
    match n {
        0..=20_000 => base,
        20_001..=200_000 => (base / 2).max(3),
        _ => (base / 5).max(3),
    }
}

fn run(fleet: &Fleet, release: &Release, plan: &Plan, seeds: u64) -> SweepReport {
    let r = sweep(Policy::Updraft, fleet, release, plan, 1, seeds, 0, &|_, _| {}).expect("sweep runs");
    assert_eq!(r.runs_with_violations, 0, "invariant broken: {:?}", r.first_violation);
    r
}

fn minutes(s: u64) -> String {
    format!("{}h{:02}m", s / 3600, s % 3600 / 60)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<u64> = std::env::var("UPDRAFT_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("UPDRAFT_BENCH_SIZES: sizes separated by commas"))
        .collect();
    let base: u64 = std::env::var("UPDRAFT_BENCH_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let engines = std::env::var("UPDRAFT_BENCH_ENGINES").unwrap_or_default();
    let plans: Vec<(&str, Plan)> = ENGINES
        .iter()
        .filter(|(name, _)| engines.is_empty() || engines.split(',').any(|e| e.trim() == *name))
        .map(|(name, strata)| (*name, plan(strata)))
        .collect();
    let only = std::env::var("UPDRAFT_BENCH_ONLY").unwrap_or_default();
    // `bad`, `good` or both.
    let part = std::env::var("UPDRAFT_BENCH_PART").unwrap_or_default();
    let bad_part = part.is_empty() || part == "bad";
    let good_part = part.is_empty() || part == "good";
    let t0 = Instant::now();
    // (median failed, p99 failed, median given), the worst of the ramp engines over the bad scenarios.
    let mut worst = (0u64, 0u64, 0u64);
    let mut worst_false_halts = 0.0f64;
    let mut worst_slowdown = 0.0f64;
    println!("bad release on rev-x: devices of rev-x given (p50/p99), failed (p50/p99), runs stopped (halted or paused), time to stop p50");
    for &n in sizes.iter().filter(|_| bad_part) {
        let k = seeds(base, n);
        for &share in &SHARES {
            let fleet = fleet(n, share);
            for kind in KINDS {
                for rate in RATES {
                    let release = bad_release(kind, rate);
                    let heading =
                        format!("{n} devices, rev-x {:.1}%, {kind} {:.0}%, {k} seeds", share * 100.0, rate * 100.0);
                    if !heading.contains(&only) {
                        continue;
                    }
                    println!("{heading}");
                    for (name, plan) in &plans {
                        let r = run(&fleet, &release, plan, k);
                        let Some(b) = r.bad_strata.first() else { continue };
                        println!(
                            "  {name:12} given {:5} / {:5}   failed {:4} / {:4}   stopped {:3}/{}   at {}",
                            b.given.p50,
                            b.given.p99,
                            b.failed.p50,
                            b.failed.p99,
                            r.runs - b.never_halted,
                            r.runs,
                            minutes(b.time_to_halt_s.p50)
                        );
                        if name.contains("ramp") && kind != "crash" {
                            worst = (worst.0.max(b.failed.p50), worst.1.max(b.failed.p99), worst.2.max(b.given.p50));
                        }
                    }
                }
            }
        }
    }
    println!("good release (noisy, under threshold): false halts (halts and inconclusive pauses), time until the rollout completed p50 and p90");
    for &n in sizes.iter().filter(|&&n| n <= 200_000 && good_part) {
        let k = seeds(base, n);
        for &share in &SHARES {
            let fleet = fleet(n, share);
            let release = good_release();
            let heading = format!("{n} devices, rev-x {:.1}%, {k} seeds", share * 100.0);
            if !heading.contains(&only) {
                continue;
            }
            println!("{heading}");
            let mut reference = 0u64;
            for (name, plan) in &plans {
                let r = run(&fleet, &release, plan, k);
                println!(
                    "  {name:12} false halts {:3}/{}   completed after {} / {}",
                    r.halted_runs,
                    r.runs,
                    minutes(r.time_to_complete_s.p50),
                    minutes(r.time_to_complete_s.p90)
                );
                if *name == "today" {
                    reference = r.time_to_complete_s.p50;
                } else {
                    worst_false_halts = worst_false_halts.max(r.halted_share);
                    // Only where today's engine completes at all.
                    if reference > 0 {
                        worst_slowdown = worst_slowdown.max(r.time_to_complete_s.p50 as f64 / reference as f64 - 1.0);
                    }
                }
            }
        }
    }
    println!(
        "targets (ramp engines, trial boot and health): median failed {} (<= 10), p99 failed {} (<= 30), median given {} (<= 50)",
        worst.0, worst.1, worst.2
    );
    println!(
        "targets (strata engines, good releases): false halts {:.1}% of runs (<= 1%), time to complete {:+.1}% against today's engine where it completes (<= +20%)",
        worst_false_halts * 100.0,
        worst_slowdown * 100.0
    );
    println!("wall {:.0} s", t0.elapsed().as_secs_f64());
}
