//! `updraft simulate`: rehearse a rollout plan on a simulated fleet.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use updraft_rollout::Plan;
use updraft_sim::{Fleet, Release, Report};

use crate::output::{emit, progress_enabled};
use crate::Ctx;

#[derive(Args)]
pub struct SimulateArgs {
    /// The fleet model (TOML; see docs/simulation.md and examples/sim/fleet.toml).
    #[arg(long)]
    fleet: PathBuf,
    /// The rollout plan to rehearse (the same file `updraft rollout create` takes).
    #[arg(long)]
    plan: PathBuf,
    /// The release model; default: a good release of 16 MiB.
    #[arg(long)]
    release: Option<PathBuf>,
    /// The seed: the same seed and files give the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

pub fn run(a: SimulateArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let fleet: Fleet = updraft_sim::model::parse(&read(&a.fleet, "fleet model")?, "fleet model")
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.fleet.display()))?;
    let plan = Plan::from_toml(&read(&a.plan, "rollout plan")?).with_context(|| a.plan.display().to_string())?;
    let release: Release = match &a.release {
        Some(p) => updraft_sim::model::parse(&read(p, "release model")?, "release model")
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        None => updraft_sim::model::parse(
            &format!("name = \"{}-fw\"\nversion = \"1.1.0\"\nimage_mib = 16\n", fleet.family),
            "release model",
        )
        .map_err(anyhow::Error::msg)?,
    };
    let bar = progress_enabled(ctx.quiet, a.json).then(|| {
        let b = ProgressBar::new(fleet.duration.as_secs());
        b.set_style(
            ProgressStyle::with_template("simulating [{bar:30}] {msg}").expect("valid template").progress_chars("=> "),
        );
        b
    });
    let mut progress = |p: updraft_sim::Progress| {
        if let Some(b) = &bar {
            b.set_length(p.end_s);
            b.set_position(p.sim_s);
            b.set_message(format!("{} simulated, {} events", hms(p.sim_s), p.events));
        }
    };
    let report = updraft_sim::run(&fleet, &release, &plan, a.seed, &mut progress)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    emit(a.json, &report, |out| human(&report, out))?;
    if report.violations.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("error: the simulation broke {} invariant(s); replay it with:", report.violations.len());
    let release = a.release.map(|r| format!(" --release {}", r.display())).unwrap_or_default();
    eprintln!(
        "  UPDRAFT_SIM_TRACE=<device> updraft simulate --fleet {} --plan {}{release} --seed {}",
        a.fleet.display(),
        a.plan.display(),
        a.seed
    );
    Ok(ExitCode::from(3))
}

fn hms(s: u64) -> String {
    if s >= 86_400 {
        format!("{}d{:02}h{:02}m", s / 86_400, s % 86_400 / 3600, s % 3600 / 60)
    } else {
        format!("{:02}h{:02}m{:02}s", s / 3600, s % 3600 / 60, s % 60)
    }
}

fn human(r: &Report, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "rehearsal: {} over {} devices ({} online), from {}, seed {}",
        r.release, r.devices, r.online, r.base, r.seed
    );
    // Gate verdicts flip between pass and undecided as reports come in;
    // the human view keeps the failures (`--json` has them all).
    let quiet_gates = r.timeline.iter().filter(|e| e.kind == "gate" && !e.what.contains(": Fail")).count();
    for e in r.timeline.iter().filter(|e| e.kind != "gate" || e.what.contains(": Fail")) {
        let _ = writeln!(out, "  {}  {}", hms(e.t_s), e.what);
    }
    if quiet_gates > 0 {
        let _ = writeln!(out, "  ({quiet_gates} gate verdict changes to pass or undecided not shown; see --json)");
    }
    let _ = writeln!(out, "outcome: {} after {}", r.final_state, hms(r.sim_s));
    if let Some(reason) = &r.final_reason {
        let _ = writeln!(out, "  reason: {reason}");
    }
    match r.halted_at_s {
        Some(t) => {
            let _ = writeln!(
                out,
                "  halted at {}: {} devices had been given the release, {} of them failed or reverted",
                hms(t),
                r.exposed,
                r.exposed_failed
            );
        }
        None => {
            let _ = writeln!(out, "  no halt: {} devices were given the release", r.exposed);
        }
    }
    match r.time_to_full_s {
        Some(t) => {
            let _ = writeln!(out, "  every online device ran the release after {}", hms(t));
        }
        None => {
            let _ = writeln!(out, "  on the release at the end: {} of {} online devices", r.on_release, r.online);
        }
    }
    let _ = writeln!(
        out,
        "  installs: {} committed, {} reverted by the bootloader, {} reverted on health, {} failed; {} rolled back",
        r.committed, r.reverted_boot, r.reverted_health, r.failed, r.rollbacks
    );
    let _ = writeln!(
        out,
        "  downtime per device: p50 {}s, p99 {}s, max {}s ({:.1} device-hours in all)",
        r.downtime.p50_s, r.downtime.p99_s, r.downtime.max_s, r.downtime.total_device_hours
    );
    let _ = writeln!(
        out,
        "  peak: {} concurrent downloads, {:.1} Mbit/s; {} power cuts, {} download retries",
        r.peak_downloads, r.peak_bandwidth_mbps, r.power_cuts, r.download_retries
    );
    let _ = writeln!(out, "  {} events, {} check-ins, hash {}", r.events, r.check_ins, r.hash);
    if r.violations.is_empty() {
        let _ = writeln!(out, "invariants: all held");
    } else {
        let _ = writeln!(out, "invariants BROKEN:");
        for v in &r.violations {
            let _ = writeln!(out, "  {v}");
        }
    }
}
