//! Calibration over many runs: the same scenario across a range of seeds,
//! on every core, summarised as percentiles (`updraft simulate --sweep`).
//!
//! Each run is deterministic on its own; runs are handed to threads in
//! seed order and their results put back in seed order, so the summary
//! does not depend on the number of threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use updraft_rollout::Plan;

use crate::model::{Fleet, Release};
use crate::sim::{run_with, Policy, Report, SimError};

/// p50, p90, p99 and the extremes of one figure over the runs it applies to.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    /// Runs the figure applies to (a time to halt needs a halt).
    pub runs: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub min: u64,
    pub max: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values`.
    pub fn of(mut values: Vec<u64>) -> Percentiles {
        values.sort_unstable();
        let n = values.len();
        if n == 0 {
            return Percentiles::default();
        }
        let rank = |p: f64| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Percentiles {
            runs: n as u64,
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            min: values[0],
            max: values[n - 1],
        }
    }
}

/// The strata where the release model behaves worse than the base.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BadStratum {
    /// `hardware=rev-x`, `region=eu`.
    pub scope: String,
    /// Devices of the stratum given the release before the halt that stopped it.
    pub given: Percentiles,
    /// Of those, failed trial boots, health checks and installs.
    pub failed: Percentiles,
    /// Seconds until the stratum stopped (runs where it did).
    pub time_to_halt_s: Percentiles,
    /// Runs in which the stratum was never stopped.
    pub never_halted: u64,
}

/// What a sweep found.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub policy: Policy,
    pub release: String,
    pub devices: u64,
    pub first_seed: u64,
    pub last_seed: u64,
    pub runs: u64,
    pub threads: usize,
    /// Runs in which the rollout or any stratum halted.
    pub halted_runs: u64,
    /// `halted_runs / runs`: for a good release, the false-halt rate.
    pub halted_share: f64,
    /// Seconds to the first halt (runs that halted).
    pub time_to_halt_s: Percentiles,
    /// Seconds until every online device ran the release (runs that got
    /// there: with any failure rate some devices never do).
    pub time_to_full_s: Percentiles,
    /// Seconds until the rollout completed (its last wave opened to every
    /// device), runs that got there: the figure to compare engines by.
    pub time_to_complete_s: Percentiles,
    /// Devices given the release in all (before a halt, where one came).
    pub exposed: Percentiles,
    pub bad_strata: Vec<BadStratum>,
    /// Runs that broke an invariant, and the first violation seen.
    pub runs_with_violations: u64,
    pub first_violation: Option<String>,
    /// Seeds of the runs that halted (for a good release: the false halts to replay).
    pub halted_seeds: Vec<u64>,
}

/// Runs seeds `first..=last` of one scenario on `threads` threads (0: all
/// cores), calling `progress(done, total)` as runs finish.
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    policy: Policy,
    fleet: &Fleet,
    release: &Release,
    plan: &Plan,
    first: u64,
    last: u64,
    threads: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<SweepReport, SimError> {
    if last < first {
        return Err(SimError::Setup(format!("the seed range {first}..{last} is empty")));
    }
    let total = last - first + 1;
    let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
    let threads = threads.min(total as usize).max(1);
    let next = AtomicU64::new(first);
    let done = AtomicU64::new(0);
    let results: Mutex<Vec<(u64, Result<Report, SimError>)>> = Mutex::new(Vec::with_capacity(total as usize));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed > last {
                    break;
                }
                let r = run_with(policy, fleet, release, plan, seed, &mut |_| {});
                results.lock().unwrap_or_else(|e| e.into_inner()).push((seed, r));
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(seed, _)| *seed);
    let mut reports = Vec::with_capacity(results.len());
    for (_, r) in results {
        reports.push(r?);
    }
    Ok(summarise(policy, release, first, last, threads, &reports))
}

/// The first time anything halted in a run: the rollout, or a stratum on its own.
fn first_halt(r: &Report) -> Option<u64> {
    let own = r.strata.iter().filter(|s| s.own_halt).filter_map(|s| s.halted_at_s);
    r.halted_at_s.into_iter().chain(own).min()
}

/// The summary of finished runs (in seed order).
pub fn summarise(
    policy: Policy,
    release: &Release,
    first: u64,
    last: u64,
    threads: usize,
    reports: &[Report],
) -> SweepReport {
    let halted: Vec<&Report> = reports.iter().filter(|r| first_halt(r).is_some()).collect();
    let mut bad_strata = Vec::new();
    if let Some(r0) = reports.first() {
        for (i, s) in r0.strata.iter().enumerate() {
            let (dim, value) = s.scope.split_once('=').unwrap_or((&s.scope, ""));
            if !release.bad_in(dim, value) {
                continue;
            }
            let of = |f: &dyn Fn(&crate::sim::StratumOutcome) -> Option<u64>| {
                Percentiles::of(reports.iter().filter_map(|r| r.strata.get(i).and_then(f)).collect())
            };
            bad_strata.push(BadStratum {
                scope: s.scope.clone(),
                given: of(&|s| Some(s.given)),
                failed: of(&|s| Some(s.failed)),
                time_to_halt_s: of(&|s| s.halted_at_s),
                never_halted: reports.iter().filter(|r| r.strata.get(i).is_none_or(|s| s.halted_at_s.is_none())).count()
                    as u64,
            });
        }
    }
    let violating: Vec<&Report> = reports.iter().filter(|r| !r.violations.is_empty()).collect();
    SweepReport {
        policy,
        release: release.id(),
        devices: reports.first().map_or(0, |r| r.devices),
        first_seed: first,
        last_seed: last,
        runs: reports.len() as u64,
        threads,
        halted_runs: halted.len() as u64,
        halted_share: halted.len() as f64 / reports.len().max(1) as f64,
        time_to_halt_s: Percentiles::of(reports.iter().filter_map(first_halt).collect()),
        time_to_full_s: Percentiles::of(reports.iter().filter_map(|r| r.time_to_full_s).collect()),
        time_to_complete_s: Percentiles::of(reports.iter().filter_map(|r| r.completed_at_s).collect()),
        exposed: Percentiles::of(reports.iter().map(|r| r.exposed).collect()),
        bad_strata,
        runs_with_violations: violating.len() as u64,
        first_violation: violating.first().map(|r| format!("seed {}: {}", r.seed, r.violations[0])),
        halted_seeds: halted.iter().map(|r| r.seed).collect(),
    }
}

/// `1..200` (both ends included) or a single seed.
pub fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("--sweep {s:?}: give a seed range as FIRST..LAST, e.g. 1..200 (both included)");
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (a, b.strip_prefix('=').unwrap_or(b)),
        None => (s, s),
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if b < a {
        return Err(bad());
    }
    if b - a >= 1_000_000 {
        return Err(format!("--sweep {s:?}: at most 1,000,000 runs"));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.min, p.max, p.runs), (50, 90, 99, 1, 100, 100));
        assert_eq!(Percentiles::of(vec![7]).p99, 7);
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    }

    #[test]
    fn seed_ranges() {
        assert_eq!(parse_seeds("1..200"), Ok((1, 200)));
        assert_eq!(parse_seeds("3..=4"), Ok((3, 4)));
        assert_eq!(parse_seeds("9"), Ok((9, 9)));
        assert!(parse_seeds("5..1").is_err());
        assert!(parse_seeds("a..b").unwrap_err().contains("FIRST..LAST"));
    }
}
