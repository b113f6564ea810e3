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
    #[command(after_help = "Example:\n  updraft rollout check plan.toml")]
    Check {
        /// The rollout plan (TOML, see docs/rollout-plans.md).
        plan: PathBuf,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Create a rollout on the server from a plan, and start it.
    #[command(after_help = "Example:\n  updraft rollout create plan.toml --release sensor-fw@2.3.1 --id stable-2.3.1")]
    Create {
        /// The rollout plan (TOML, see docs/rollout-plans.md).
        plan: PathBuf,
        /// The release to roll out (NAME@VERSION).
        #[arg(long)]
        release: String,
        /// The rollout's id (default: derived from the release).
        #[arg(long)]
        id: Option<String>,
        /// Create it without starting it.
        #[arg(long)]
        no_start: bool,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// List rollouts.
    #[command(after_help = "Example:\n  updraft rollout list")]
    List {
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Show a rollout's status: waves, strata, gates.
    #[command(
        after_help = "Examples:\n  updraft rollout status stable-2.3.1\n  updraft rollout status stable-2.3.1 --watch"
    )]
    Status {
        /// The rollout id.
        id: String,
        /// Keep watching, with live progress bars, until it ends.
        #[arg(long)]
        watch: bool,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Pause a rollout.
    #[command(after_help = "Example:\n  updraft rollout pause stable-2.3.1")]
    Pause {
        /// The rollout id.
        id: String,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused rollout.
    #[command(after_help = "Example:\n  updraft rollout resume stable-2.3.1")]
    Resume {
        /// The rollout id.
        id: String,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Move to the next wave now, whatever the gates say.
    #[command(after_help = "Example:\n  updraft rollout advance stable-2.3.1")]
    Advance {
        /// The rollout id.
        id: String,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Stop assigning; devices keep what they have.
    #[command(after_help = "Example:\n  updraft rollout abort stable-2.3.1")]
    Abort {
        /// The rollout id.
        id: String,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Stop and give devices that took the release their last known good release.
    #[command(after_help = "Example:\n  updraft rollout rollback stable-2.3.1")]
    Rollback {
        /// The rollout id.
        id: String,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
}

fn status_text(v: &serde_json::Value, s: &mut String) {
    let state = &v["state"];
    s.push_str(&format!(
        "rollout {} of {}: {} in wave {}/{}, {} devices selected, {} installing\n",
        v["rollout"].as_str().unwrap_or("?"),
        v["release"].as_str().unwrap_or("?"),
        state["state"].as_str().unwrap_or("?"),
        v["wave"],
        v["waves"],
        v["selected"],
        v["inFlight"]
    ));
    if let Some(reason) = state["reason"].as_str() {
        s.push_str(&format!("  reason: {reason}\n"));
    }
    for (i, w) in v["perWave"].as_array().into_iter().flatten().enumerate() {
        if w["assigned"].as_u64().unwrap_or(0) == 0 && w["heldBack"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        s.push_str(&format!(
            "  wave {}: assigned {}, in progress {}, committed {}, reverted {}, failed {}, silent {}, held back {}\n",
            i + 1,
            w["assigned"],
            w["inProgress"],
            w["committed"],
            w["reverted"],
            w["failed"],
            w["silent"],
            w["heldBack"]
        ));
    }
    let held = v["heldBack"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !held.is_empty() {
        s.push_str("  held back:\n");
        for h in held {
            s.push_str(&format!(
                "    {} (wave {}): {}\n",
                h["device"].as_str().unwrap_or("?"),
                h["wave"],
                h["reason"].as_str().unwrap_or("?")
            ));
        }
    }
    for st in v["strata"].as_array().into_iter().flatten() {
        let halted = st["halted"].as_str().map(|h| format!(", halted ({h})")).unwrap_or_default();
        s.push_str(&format!(
            "  stratum {:<24} {:<16} wave {}: {} devices, {} admitted ({} over-sampled), {} given{halted}\n",
            st["scope"].as_str().unwrap_or("?"),
            st["standing"].as_str().unwrap_or("?"),
            st["wave"],
            st["devices"],
            st["admitted"],
            st["oversampled"],
            st["given"]
        ));
    }
    for g in v["gates"].as_array().into_iter().flatten() {
        let t = &g["test"];
        s.push_str(&format!(
            "  gate {:<20} {:<22} {:<9} {} of {} failed ({})\n",
            g["gate"].as_str().unwrap_or("?"),
            g["scope"].as_str().unwrap_or("?"),
            t["verdict"].as_str().unwrap_or("?"),
            t["failures"],
            t["trials"],
            g["limit"].as_str().unwrap_or("?")
        ));
    }
    let f = &v["followUp"];
    if f["waiting"].as_u64().unwrap_or(0) > 0 {
        s.push_str(&format!(
            "  {} outcomes wait for their follow-up (install {} s, trial boot {} s, health {} s after the stage began)\n",
            f["waiting"], f["installS"], f["bootS"], f["healthS"]
        ));
    }
}

/// A one-line summary of a rollout's progress (what `--watch` prints per
/// change when it does not draw bars).
fn summary_line(id: &str, v: &serde_json::Value) -> String {
    let mut line = format!("{id}: {} wave {}/{}", v["state"]["state"].as_str().unwrap_or("?"), v["wave"], v["waves"]);
    if let Some(reason) = v["state"]["reason"].as_str() {
        line.push_str(&format!(" ({reason})"));
    }
    for (i, w) in v["perWave"].as_array().into_iter().flatten().enumerate() {
        if w["assigned"].as_u64().unwrap_or(0) > 0 {
            line.push_str(&format!(
                "; wave {}: {} assigned, {} committed, {} reverted, {} failed, {} silent",
                i + 1,
                w["assigned"],
                w["committed"],
                w["reverted"],
                w["failed"],
                w["silent"]
            ));
        }
    }
    line
}

/// Follows a rollout until it ends: bars per wave on a terminal; else a
/// line on stdout whenever something changes.
fn watch(c: &crate::client::Client, id: &str, bars_on: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let multi = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template("{prefix:>8} [{bar:30}] {msg}").expect("template");
    let header = multi.add(indicatif::ProgressBar::new_spinner());
    let mut bars: Vec<indicatif::ProgressBar> = Vec::new();
    let mut last = String::new();
    loop {
        let v = c.get(&format!("/api/v1/rollouts/{id}"))?;
        let state = v["state"]["state"].as_str().unwrap_or("?").to_owned();
        let ended = matches!(state.as_str(), "completed" | "aborted" | "rolled_back");
        if !bars_on {
            let line = summary_line(id, &v);
            if line != last {
                let mut out = std::io::stdout().lock();
                if writeln!(out, "{} {line}", updraft_types::Timestamp::now()).and_then(|()| out.flush()).is_err() {
                    return Ok(()); // the reader went away
                }
                last = line;
            }
            if ended {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_secs(2));
            continue;
        }
        header.set_message(format!(
            "{} of {}: {state}, wave {}/{}",
            id,
            v["release"].as_str().unwrap_or("?"),
            v["wave"],
            v["waves"]
        ));
        for (i, w) in v["perWave"].as_array().into_iter().flatten().enumerate() {
            if bars.len() <= i {
                let b = multi.add(indicatif::ProgressBar::new(1));
                b.set_style(style.clone());
                b.set_prefix(format!("wave {}", i + 1));
                bars.push(b);
            }
            let assigned = w["assigned"].as_u64().unwrap_or(0);
            let done =
                ["committed", "reverted", "failed", "silent"].iter().map(|k| w[*k].as_u64().unwrap_or(0)).sum::<u64>();
            // An empty wave is an empty bar, not a full one.
            bars[i].set_length(assigned.max(1));
            bars[i].set_position(done);
            bars[i].set_message(if assigned == 0 {
                "not started".to_owned()
            } else {
                format!(
                    "{done}/{assigned} done: {} committed, {} reverted, {} failed, {} silent",
                    w["committed"], w["reverted"], w["failed"], w["silent"]
                )
            });
        }
        if ended {
            header.finish();
            for b in &bars {
                b.finish();
            }
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
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

pub fn run(cmd: RolloutCmd, client: &crate::client::ClientArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let command = |id: &str, what: &str, json: bool| -> anyhow::Result<ExitCode> {
        let c = crate::client::Client::new(client)?;
        let v = c.post_empty(&format!("/api/v1/rollouts/{id}/{what}"))?;
        emit(json, &v, |s| status_text(&v, s))?;
        Ok(ExitCode::SUCCESS)
    };
    match cmd {
        RolloutCmd::Create { plan, release, id, no_start, json } => {
            let text = std::fs::read_to_string(&plan).with_context(|| format!("cannot read {}", plan.display()))?;
            Plan::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", plan.display()))?;
            let id = id.unwrap_or_else(|| release.replace('@', "-"));
            let c = crate::client::Client::new(client)?;
            let v = c.post(
                "/api/v1/rollouts",
                &serde_json::json!({ "id": id, "release": release, "plan": text, "start": !no_start }),
            )?;
            emit(json, &v, |s| status_text(&v, s))?;
            Ok(ExitCode::SUCCESS)
        }
        RolloutCmd::List { json } => {
            let c = crate::client::Client::new(client)?;
            let v = c.get("/api/v1/rollouts")?;
            emit(json, &v, |s| {
                for r in v.as_array().into_iter().flatten() {
                    s.push_str(&format!(
                        "{:<24} {:<24} {:<12} wave {}/{}\n",
                        r["rollout"].as_str().unwrap_or("?"),
                        r["release"].as_str().unwrap_or("?"),
                        r["state"]["state"].as_str().unwrap_or("?"),
                        r["wave"],
                        r["waves"]
                    ));
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        RolloutCmd::Status { id, watch: live, json } => {
            let c = crate::client::Client::new(client)?;
            if live {
                // Bars on a terminal; a line per change otherwise (logs, pipes).
                watch(&c, &id, crate::output::progress_enabled(ctx.quiet, json))?;
            }
            let v = c.get(&format!("/api/v1/rollouts/{id}"))?;
            emit(json, &v, |s| status_text(&v, s))?;
            Ok(ExitCode::SUCCESS)
        }
        RolloutCmd::Pause { id, json } => command(&id, "pause", json),
        RolloutCmd::Resume { id, json } => command(&id, "resume", json),
        RolloutCmd::Advance { id, json } => command(&id, "advance", json),
        RolloutCmd::Abort { id, json } => command(&id, "abort", json),
        RolloutCmd::Rollback { id, json } => command(&id, "rollback", json),
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
