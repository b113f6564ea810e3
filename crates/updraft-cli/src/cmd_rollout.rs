//! `updraft rollout`: rollout plans.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use updraft_rollout::plan::humantime_like;
use updraft_rollout::{GateKind, Plan, WaveSize};

use crate::output::emit;
use crate::{Ctx, REJECTED};

#[derive(Subcommand)]
pub enum RolloutCmd {
    /// Check a rollout plan (TOML) and show what it will do (exit 1 if invalid).
    Check {
        plan: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WaveView {
    size: String,
    min_devices: u64,
    soak: String,
    max_concurrent: Option<u64>,
    per_minute: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanView<'a> {
    valid: bool,
    name: &'a str,
    selector: &'a updraft_rollout::Selector,
    waves: Vec<WaveView>,
    gates: &'a [updraft_rollout::Gate],
    on_failure: updraft_rollout::OnFailure,
    on_inconclusive: updraft_rollout::OnInconclusive,
    silence_timeout: String,
    max_wait: String,
    window: Option<String>,
}

pub fn run(cmd: RolloutCmd, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match cmd {
        RolloutCmd::Check { plan, json } => {
            let text = std::fs::read_to_string(&plan).with_context(|| format!("cannot read {}", plan.display()))?;
            let p = match Plan::from_toml(&text) {
                Ok(p) => p,
                Err(e) => {
                    #[derive(Serialize)]
                    struct Invalid {
                        valid: bool,
                        message: String,
                    }
                    let out = Invalid { valid: false, message: e.to_string() };
                    emit(json, &out, |s| s.push_str(&format!("{}: {}\n", plan.display(), out.message)))?;
                    return Ok(ExitCode::from(REJECTED));
                }
            };
            let waves = p
                .waves
                .iter()
                .map(|w| WaveView {
                    size: match w.size {
                        WaveSize::Percent(x) => format!("{x}%"),
                        WaveSize::Count(c) => format!("{c} devices"),
                    },
                    min_devices: w.min_devices,
                    soak: humantime_like(w.soak),
                    max_concurrent: w.max_concurrent,
                    per_minute: w.per_minute,
                })
                .collect();
            let window = p.window.map(|w| {
                format!("{:02}:{:02}-{:02}:{:02}", w.start_min / 60, w.start_min % 60, w.end_min / 60, w.end_min % 60)
            });
            let view = PlanView {
                valid: true,
                name: &p.name,
                selector: &p.selector,
                waves,
                gates: &p.gates,
                on_failure: p.on_failure,
                on_inconclusive: p.on_inconclusive,
                silence_timeout: humantime_like(p.silence_timeout),
                max_wait: humantime_like(p.max_wait),
                window,
            };
            emit(json, &view, |s| {
                s.push_str(&format!(
                    "valid: {}{}\n",
                    plan.display(),
                    if p.name.is_empty() { String::new() } else { format!(" ({})", p.name) }
                ));
                s.push_str(&format!("selector: family {}", p.selector.family));
                for (what, list) in
                    [("hardware", &p.selector.hardware), ("regions", &p.selector.regions), ("tags", &p.selector.tags)]
                {
                    if !list.is_empty() {
                        s.push_str(&format!(", {what} {}", list.join("/")));
                    }
                }
                if let Some(c) = &p.selector.channel {
                    s.push_str(&format!(", channel {c}"));
                }
                s.push('\n');
                for (i, w) in view.waves.iter().enumerate() {
                    s.push_str(&format!("wave {}: {}", i + 1, w.size));
                    if w.min_devices > 0 {
                        s.push_str(&format!(" (at least {})", w.min_devices));
                    }
                    s.push_str(&format!(", soak {}", w.soak));
                    if let Some(m) = w.max_concurrent {
                        s.push_str(&format!(", at most {m} at once"));
                    }
                    if let Some(m) = w.per_minute {
                        s.push_str(&format!(", at most {m} per minute"));
                    }
                    s.push('\n');
                }
                for g in &p.gates {
                    let what = match &g.kind {
                        GateKind::Install { max_failure_rate } => {
                            format!("install failures below {}%", max_failure_rate * 100.0)
                        }
                        GateKind::Boot { max_failure_rate } => {
                            format!("failed trial boots below {}%", max_failure_rate * 100.0)
                        }
                        GateKind::Health { max_failure_rate } => {
                            format!("failed health checks below {}%", max_failure_rate * 100.0)
                        }
                        GateKind::CrashRate { max_ratio, min_exposure_hours } => format!(
                            "crash rate at most {max_ratio}x the baseline's (after {min_exposure_hours} device-hours)"
                        ),
                        GateKind::Metric { metric, max_value, max_failure_rate } => {
                            format!("devices with {metric} above {max_value} below {}%", max_failure_rate * 100.0)
                        }
                    };
                    s.push_str(&format!(
                        "gate {}: {what}, {}% confidence, at least {} outcomes to pass\n",
                        g.name(),
                        g.confidence * 100.0,
                        g.min_sample
                    ));
                }
                s.push_str(
                    &format!(
                        "on failure: {:?}; inconclusive after {} past the soak: {:?}; silent devices fail after {}\n",
                        p.on_failure, view.max_wait, p.on_inconclusive, view.silence_timeout
                    )
                    .to_lowercase(),
                );
                if let Some(w) = &view.window {
                    s.push_str(&format!("maintenance window: {w} device-local time\n"));
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
