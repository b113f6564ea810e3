//! `updraft simulate`: rehearse a rollout plan on a simulated fleet.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use updraft_rollout::Plan;
use updraft_sim::{Fleet, Policy, Release, Report};

use updraft_bundle::fsutil::Overwrite;

use crate::client::ClientArgs;
use crate::output::{emit, progress_enabled};
use crate::Ctx;

#[derive(Args)]
pub struct SimulateArgs {
    /// The fleet model (TOML; see docs/simulation.md and examples/sim/fleet.toml).
    #[arg(long)]
    fleet: PathBuf,
    /// The rollout plan to rehearse (the same file `updraft rollout create` takes).
    #[arg(long, required_unless_present = "against")]
    plan: Option<PathBuf>,
    /// Drive a real server instead: the fleet's devices enroll there and check in
    /// as fast as it answers, following the rollouts it runs (needs an
    /// operator token: --token or UPDRAFT_TOKEN). Prints throughput and latency.
    #[arg(long, value_name = "URL")]
    against: Option<String>,
    /// With --against: how long to run the load.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// With --against: concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// The release model; default: a good release of 16 MiB.
    #[arg(long)]
    release: Option<PathBuf>,
    /// The seed: the same seed and files give the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write a self-contained HTML report (summary, timeline, a chart of the fleet over time).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Also run the same fleet, release and seed under the plan's waves and
    /// thresholds applied as hawkBit (group error and success thresholds)
    /// and AWS IoT Jobs (abort percentage after a minimum of executions)
    /// apply them, and print the three side by side.
    #[arg(long)]
    compare: bool,
    /// Calibrate: run the scenario once per seed of FIRST..LAST (both
    /// included, e.g. 1..200) on every core and report percentiles of the
    /// devices of each bad stratum given the release before the halt, their
    /// failures, the time to halt, the time to 100% and the share of runs
    /// halted (for a good release: false halts).
    #[arg(long, value_name = "FIRST..LAST", conflicts_with_all = ["compare", "report", "against"])]
    sweep: Option<String>,
    /// With --sweep: threads to use (default: every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print the result as JSON (camelCase keys).
    #[arg(long)]
    json: bool,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

pub fn run(a: SimulateArgs, client: &ClientArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let fleet: Fleet = updraft_sim::model::parse(&read(&a.fleet, "fleet model")?, "fleet model")
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.fleet.display()))?;
    let release: Release = match &a.release {
        Some(p) => updraft_sim::model::parse(&read(p, "release model")?, "release model")
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        None => updraft_sim::model::parse(
            &format!("name = \"{}-fw\"\nversion = \"1.1.0\"\nimage_mib = 16\n", fleet.family),
            "release model",
        )
        .map_err(anyhow::Error::msg)?,
    };
    if let Some(url) = &a.against {
        // (`updraft_sim::run` validates the model itself; the load generator does not.)
        fleet.validate().map_err(|e| anyhow::anyhow!("{}: invalid fleet model: {e}", a.fleet.display()))?;
        let given = a.release.as_ref().map(|_| &release);
        let r = crate::cmd_simulate_against::run(
            url,
            client.token.clone(),
            &fleet,
            given,
            a.seconds,
            a.clients.max(1),
            a.seed,
        )?;
        emit(a.json, &r, |out| {
            out.push_str(&format!(
                "load against {}: {} devices enrolled in {:.1} s; {} clients for {:.1} s\n  check-ins {:.0} /s  p50 {:.2} ms  p99 {:.2} ms  ({} in all, {} errors)\n  assignments {}: {} committed, {} reverted; {} events reported\n",
                r.url, r.devices, r.enroll_seconds, r.stats.clients, r.stats.seconds, r.stats.check_ins_per_s, r.stats.p50_ms, r.stats.p99_ms,
                r.stats.check_ins, r.stats.errors, r.stats.assignments, r.stats.committed, r.stats.reverted, r.stats.events
            ));
        })?;
        return Ok(if r.stats.errors == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) });
    }
    let plan_path = a.plan.as_ref().context("--plan is required")?;
    let plan = Plan::from_toml(&read(plan_path, "rollout plan")?).with_context(|| plan_path.display().to_string())?;
    if let Some(seeds) = &a.sweep {
        let (first, last) = updraft_sim::sweep::parse_seeds(seeds).map_err(anyhow::Error::msg)?;
        let bar = progress_enabled(ctx.quiet, a.json).then(|| {
            let b = ProgressBar::new(last - first + 1);
            b.set_style(
                ProgressStyle::with_template("sweeping [{bar:30}] {pos}/{len} runs, {elapsed} (eta {eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b
        });
        let tick = |done: u64, _total: u64| {
            if let Some(b) = &bar {
                b.set_position(done);
            }
        };
        let s = updraft_sim::sweep(Policy::Updraft, &fleet, &release, &plan, first, last, a.threads, &tick)?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        emit(a.json, &s, |out| sweep_human(&s, out))?;
        return Ok(if s.runs_with_violations == 0 { ExitCode::SUCCESS } else { ExitCode::from(3) });
    }
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
    if let Some(path) = &a.report {
        updraft_bundle::fsutil::write_atomic(path, html(&report).as_bytes(), 0o644, Overwrite::Replace)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    if a.compare {
        let mut runs = vec![report];
        for policy in [Policy::Hawkbit, Policy::AwsIotJobs] {
            runs.push(updraft_sim::run_with(policy, &fleet, &release, &plan, a.seed, &mut progress)?);
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        emit(a.json, &serde_json::json!({ "runs": runs }), |out| compare(&runs, out))?;
        let broken: usize = runs.iter().map(|r| r.violations.len()).sum();
        return Ok(if broken == 0 { ExitCode::SUCCESS } else { ExitCode::from(3) });
    }
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
        plan_path.display(),
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

fn sweep_human(s: &updraft_sim::SweepReport, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "sweep: {} over {} devices, seeds {}..{} ({} runs on {} threads)",
        s.release, s.devices, s.first_seed, s.last_seed, s.runs, s.threads
    );
    let _ = writeln!(out, "  halted in {} of {} runs ({:.1}%)", s.halted_runs, s.runs, 100.0 * s.halted_share);
    let row = |out: &mut String, label: &str, p: &updraft_sim::sweep::Percentiles, t: bool| {
        let f = |v: u64| if t { hms(v) } else { v.to_string() };
        let _ = writeln!(
            out,
            "  {label:<44}{:>10}{:>10}{:>10}{:>10}   ({} runs)",
            f(p.p50),
            f(p.p90),
            f(p.p99),
            f(p.max),
            p.runs
        );
    };
    let _ = writeln!(out, "  {:<44}{:>10}{:>10}{:>10}{:>10}", "", "p50", "p90", "p99", "max");
    for b in &s.bad_strata {
        let _ = writeln!(out, "  bad stratum {} (never halted in {} runs):", b.scope, b.never_halted);
        row(out, "  devices given the release before the halt", &b.given, false);
        row(out, "  of them failed", &b.failed, false);
        row(out, "  time to halt", &b.time_to_halt_s, true);
    }
    row(out, "devices given the release (all)", &s.exposed, false);
    if s.time_to_halt_s.runs > 0 {
        row(out, "time to the first halt", &s.time_to_halt_s, true);
    }
    if s.time_to_complete_s.runs > 0 {
        row(out, "time to the last wave (rollout completed)", &s.time_to_complete_s, true);
    }
    if s.time_to_full_s.runs > 0 {
        row(out, "time to 100% (runs that got there)", &s.time_to_full_s, true);
    }
    if !s.halted_seeds.is_empty() && s.bad_strata.is_empty() {
        let seeds: Vec<String> = s.halted_seeds.iter().take(10).map(u64::to_string).collect();
        let _ = writeln!(out, "  halted seeds (replay with --seed): {}", seeds.join(", "));
    }
    match &s.first_violation {
        None => {
            let _ = writeln!(out, "invariants: all held in every run");
        }
        Some(v) => {
            let _ = writeln!(out, "invariants BROKEN in {} runs; first: {v}", s.runs_with_violations);
        }
    }
}

fn compare(runs: &[Report], out: &mut String) {
    use std::fmt::Write as _;
    let r0 = &runs[0];
    let _ = writeln!(
        out,
        "rehearsal: {} over {} devices ({} online), from {}, seed {}; the same plan under three policies",
        r0.release, r0.devices, r0.online, r0.base, r0.seed
    );
    let opt = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), hms);
    let col = |f: &dyn Fn(&Report) -> String| runs.iter().map(f).collect::<Vec<_>>();
    let rows = [
        ("final state", col(&|r| r.final_state.clone())),
        ("halted at", col(&|r| opt(r.halted_at_s))),
        ("devices given the release", col(&|r| r.exposed.to_string())),
        ("  of which failed or reverted", col(&|r| r.exposed_failed.to_string())),
        ("on the release at the end", col(&|r| r.on_release.to_string())),
        ("rolled back to the old release", col(&|r| r.rollbacks.to_string())),
        ("every online device updated after", col(&|r| opt(r.time_to_full_s))),
        ("downtime p99 / max", col(&|r| format!("{}s / {}s", r.downtime.p99_s, r.downtime.max_s))),
        ("peak downloads", col(&|r| r.peak_downloads.to_string())),
    ];
    let _ = write!(out, "{:<34}", "");
    for r in runs {
        let _ = write!(out, "{:>22}", r.policy.label());
    }
    out.push('\n');
    for (label, cells) in &rows {
        let _ = write!(out, "{label:<34}");
        for c in cells {
            let _ = write!(out, "{c:>22}");
        }
        out.push('\n');
    }
    for r in runs {
        if let Some(reason) = &r.final_reason {
            let _ = writeln!(out, "{}: {reason}", r.policy.label());
        }
        if !r.violations.is_empty() {
            let _ = writeln!(out, "{}: invariants BROKEN: {:?}", r.policy.label(), r.violations);
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A self-contained page: no scripts, no external assets.
fn html(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut summary = String::new();
    human(r, &mut summary);
    let (w, h) = (900.0f64, 260.0f64);
    let t_max = r.series.last().map_or(1, |s| s.t_s.max(1)) as f64;
    let y_max = r.series.iter().map(|s| s.on_release.max(s.updating)).max().unwrap_or(1).max(1) as f64;
    let line = |f: &dyn Fn(&updraft_sim::Sample) -> u64| {
        r.series
            .iter()
            .map(|s| format!("{:.1},{:.1}", s.t_s as f64 / t_max * w, h - f(s) as f64 / y_max * h))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut marks = String::new();
    for e in r.timeline.iter().filter(|e| e.kind != "gate" || e.what.contains(": Fail")) {
        let x = e.t_s as f64 / t_max * w;
        let _ = write!(
            marks,
            "<line x1='{x:.1}' y1='0' x2='{x:.1}' y2='{h}' stroke='#bbb' stroke-dasharray='4 3'><title>{}</title></line>",
            esc(&e.what)
        );
    }
    let mut rows = String::new();
    for e in &r.timeline {
        let _ = write!(rows, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", hms(e.t_s), e.kind, esc(&e.what));
    }
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>Updraft rehearsal: {rel}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:960px}}pre{{background:#f6f6f6;padding:1em}}\
         td{{padding:2px 8px;border-bottom:1px solid #eee}}</style></head><body>\
         <h1>Rehearsal: {rel}</h1><pre>{summary}</pre>\
         <h2>The fleet over time</h2><svg width='{w}' height='{h2}' viewBox='0 0 {w} {h2}'>\
         <rect width='{w}' height='{h}' fill='#fafafa'/>{marks}\
         <polyline fill='none' stroke='#1f77b4' stroke-width='2' points='{on}'/>\
         <polyline fill='none' stroke='#ff7f0e' stroke-width='1.5' points='{up}'/>\
         <text x='4' y='{ty}' fill='#1f77b4'>devices on the release (max {ymax})</text>\
         <text x='300' y='{ty}' fill='#ff7f0e'>updates in progress</text>\
         <text x='{tx}' y='{ty}' text-anchor='end'>{tend}</text></svg>\
         <h2>Timeline</h2><table>{rows}</table></body></html>\n",
        rel = esc(&r.release),
        summary = esc(&summary),
        h2 = h + 24.0,
        on = line(&|s| s.on_release),
        up = line(&|s| s.updating),
        ty = h + 18.0,
        tx = w - 4.0,
        ymax = y_max,
        tend = hms(t_max as u64),
    )
}
