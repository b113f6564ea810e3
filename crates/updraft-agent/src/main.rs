//! `updraft-agent`: the device agent's command line. Exit codes: 0 done or
//! nothing to do, 1 refused (the reason on stderr), 2 error (unreachable,
//! unauthorised, misconfigured).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use updraft_agent::bootloader::FileModel;
use updraft_agent::config::{BootloaderConfig, Config};
use updraft_agent::enroll::{self, EnrollError};
use updraft_agent::log;
use updraft_agent::shell::{read_booted, read_journal, Outcome, Shell, Stop};

/// The Updraft device agent: A/B updates with a trial boot, health checks,
/// and commit or automatic revert.
#[derive(Parser)]
#[command(
    name = "updraft-agent",
    version,
    after_help = "Exit codes: 0 done or nothing to do, 1 refused (the reason on stderr), 2 error.\n\
Logs go to stderr; UPDRAFT_LOG=off|error|warn|info|debug filters them (default info).\n\n\
Examples:\n  updraft-agent enroll --server https://updates.example.com --token upe_...\n  \
updraft-agent check\n  updraft-agent run --config /etc/updraft/agent.toml"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// The agent's configuration (see examples/agent.toml and examples/agent-file.toml).
    #[arg(long, default_value = "/etc/updraft/agent.toml")]
    config: PathBuf,
}

#[derive(Args, Clone)]
struct OneShotArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the result as JSON (camelCase keys) on stdout.
    #[arg(long)]
    json: bool,
    /// Do not run the reboot command (tests).
    #[arg(long, hide = true)]
    simulate_reboot: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enroll this device with a server: trade an enrollment token for the
    /// device's own token (kept 0600) and write the server's URL into the
    /// configuration.
    #[command(
        after_help = "Examples:\n  updraft-agent enroll --server https://updates.example.com --token upe_3f9c...\n  \
updraft-agent enroll --server http://127.0.0.1:8080 --token \"$(cat enroll.token)\" --device-id meter-0042 --config ./agent.toml"
    )]
    Enroll {
        #[command(flatten)]
        config: ConfigArg,
        /// The server's base URL.
        #[arg(long)]
        server: String,
        /// The enrollment token (`upe_...`, from `updraft enroll-token create`).
        #[arg(long)]
        token: String,
        /// The device id (default: device.id in the configuration, else the
        /// first line of --device-id-file).
        #[arg(long)]
        device_id: Option<String>,
        /// Where to read the device id from [default: /etc/machine-id].
        #[arg(long)]
        device_id_file: Option<PathBuf>,
        /// Enroll again although this device has a token.
        #[arg(long)]
        force: bool,
        /// Print the result as JSON (camelCase keys) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show the boot record, the booted slot and the journal.
    #[command(after_help = "Examples:\n  updraft-agent status\n  updraft-agent status --json --config ./agent.toml")]
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the result as JSON (camelCase keys) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The daemon: check in, install, trial-boot, commit or revert, forever.
    /// Logs each decision at info on stderr.
    #[command(
        after_help = "Example (the shipped systemd unit runs this):\n  updraft-agent run --config /etc/updraft/agent.toml"
    )]
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Do not run the reboot command (tests).
        #[arg(long, hide = true)]
        simulate_reboot: bool,
    },
    /// One pass: resume what the journal says, check in once, act on the
    /// answer, and say what happened.
    #[command(after_help = "Examples:\n  updraft-agent check\n  updraft-agent check --json --config ./agent.toml")]
    Check(OneShotArgs),
    /// Install a local bundle (the same verification as a download), then
    /// reboot into it on trial.
    #[command(after_help = "Example:\n  updraft-agent install sensor-fw-1.2.0.bundle")]
    Install {
        /// The bundle file.
        file: PathBuf,
        #[command(flatten)]
        args: OneShotArgs,
    },
    /// During a trial boot: commit it by hand (skip the health checks).
    #[command(after_help = "Example:\n  updraft-agent commit")]
    Commit(OneShotArgs),
    /// During a trial boot: revert it by hand and reboot into the old slot.
    #[command(after_help = "Example:\n  updraft-agent revert")]
    Revert(OneShotArgs),
    /// The file bootloader's part of a reboot, for development machines:
    /// runs the boot contract on the record (counting a trial attempt or
    /// reverting) and records what booted. Use it as reboot_command.
    #[command(after_help = "Examples:\n  updraft-agent simulate-boot --config ./agent.toml\n  \
reboot_command = [\"updraft-agent\", \"simulate-boot\", \"--config\", \"/home/me/dev-board/agent.toml\"]")]
    SimulateBoot {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the result as JSON (camelCase keys) on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// A command's failure: refused (exit 1) or an error (exit 2).
enum Failure {
    Refused(String),
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Error(e)
    }
}

fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    print(&format!("{}\n", serde_json::to_string_pretty(value)?));
    Ok(())
}

fn load(config: &Path) -> anyhow::Result<Config> {
    Config::load(config)
}

fn one_shot(args: &OneShotArgs, prepare: impl FnOnce(&mut Shell) -> anyhow::Result<()>) -> Result<(), Failure> {
    let cfg = load(&args.config.config)?;
    let mut shell = Shell::start(cfg)?;
    shell.simulate_reboot = args.simulate_reboot;
    prepare(&mut shell)?;
    let stop = shell.run(true)?;
    let outcome = shell.outcome().clone();
    let j = shell.journal();
    let installed = j.installed.release.as_ref().map_or("unknown".to_owned(), |r| r.to_string());
    let text = match (&stop, &outcome) {
        (Stop::Reboot, _) => match j.update() {
            Some(u) if j.phase.name() == "armed" => {
                format!("rebooting into the trial of {} (slot {})\n", u.assignment.release, u.target.name())
            }
            _ => format!("rebooting; installed {installed} (slot {})\n", j.installed.slot.name()),
        },
        (Stop::Idle, Outcome { committed: Some(r), .. }) => {
            format!("committed {r} (slot {})\n", j.installed.slot.name())
        }
        (Stop::Idle, o) if o.refused.is_some() || o.error.is_some() => String::new(),
        (Stop::Idle, o) => {
            let why = o
                .skipped
                .clone()
                .or_else(|| o.server_reason.as_ref().map(|r| format!("server: {}", r.replace('_', " "))))
                .map(|w| format!(" ({w})"))
                .unwrap_or_default();
            format!("up to date: {installed} (slot {}){why}\n", j.installed.slot.name())
        }
    };
    if args.json {
        print_json(&serde_json::json!({
            "stop": if stop == Stop::Reboot { "reboot" } else { "idle" },
            "installed": j.installed,
            "phase": j.phase.name(),
            "update": j.update(),
            "unreported": j.unreported.len(),
            "refused": outcome.refused,
            "error": outcome.error,
            "serverReason": outcome.server_reason,
            "skipped": outcome.skipped,
            "committed": outcome.committed,
        }))?;
    } else {
        print(&text);
    }
    if let Some(reason) = outcome.refused {
        return Err(Failure::Refused(reason));
    }
    if let Some(e) = outcome.error {
        return Err(Failure::Error(anyhow::anyhow!(e)));
    }
    Ok(())
}

fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let record = config.bootloader().read()?;
    // What booted, if known (the file model records it at its first boot).
    let booted = match &config.bootloader {
        BootloaderConfig::File { path } => FileModel { path: path.clone() }.booted().ok().flatten(),
        _ => read_booted(config).ok(),
    };
    let journal = read_journal(config)?;
    if json {
        return print_json(&serde_json::json!({ "bootRecord": record, "booted": booted, "journal": journal }));
    }
    let mut s = String::new();
    match record {
        Some(r) => s.push_str(&format!(
            "boot record: primary {}, good A={} B={}, tries A={} B={}, trial {}, last revert {}\n",
            r.primary.name(),
            r.good[0],
            r.good[1],
            r.tries[0],
            r.tries[1],
            r.trial_armed,
            r.last_revert.map_or("none", |s| s.name())
        )),
        None => s.push_str("boot record: not written yet\n"),
    }
    if let Some(b) = booted {
        s.push_str(&format!("booted: slot {}{}\n", b.slot.name(), if b.trial { " (trial)" } else { "" }));
    }
    match &journal {
        Some(j) => {
            s.push_str(&format!(
                "installed: {} (security version {}, slot {}); phase {}; {} event(s) to report\n",
                j.installed.release.as_ref().map_or("unknown", |r| r.as_str()),
                j.installed.security_version,
                j.installed.slot.name(),
                j.phase.name(),
                j.unreported.len()
            ));
            for r in &j.refused {
                s.push_str(&format!("refused: {} (bundle {}): {}\n", r.release, r.bundle_sha256, r.reason));
            }
        }
        None => s.push_str("journal: none yet\n"),
    }
    print(&s);
    Ok(())
}

fn simulate_boot(config: &Config, json: bool) -> Result<(), Failure> {
    let BootloaderConfig::File { path } = &config.bootloader else {
        return Err(Failure::Refused(
            "simulate-boot works with the file bootloader only (bootloader.kind = \"file\"); a real device reboots"
                .into(),
        ));
    };
    let booted = FileModel { path: path.clone() }.boot().map_err(anyhow::Error::from)?;
    if json {
        print_json(&serde_json::json!({ "booted": booted }))?;
    } else {
        let how = match (booted.trial, booted.reverted_from) {
            (true, _) => " on trial".to_owned(),
            (false, Some(from)) => format!(" (the trial of slot {} ran out of attempts)", from.name()),
            _ => String::new(),
        };
        print(&format!("booted slot {}{how}\n", booted.slot.name()));
    }
    Ok(())
}

fn daemon(config: &Path, simulate_reboot: bool) -> Result<(), Failure> {
    loop {
        let cfg = load(config)?;
        let file_model = matches!(cfg.bootloader, BootloaderConfig::File { .. });
        let mut shell = Shell::start(cfg)?;
        shell.simulate_reboot = simulate_reboot;
        log::info("running");
        shell.run(false)?;
        // A real reboot ends this process. With the file bootloader the
        // reboot command (simulate-boot) has booted the model: carry on
        // as the freshly booted system would.
        if !file_model {
            return Ok(());
        }
        log::info("booted again (file bootloader)");
    }
}

fn main() -> ExitCode {
    log::init_from_env();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Enroll { config, server, token, device_id, device_id_file, force, json } => {
            let req = enroll::Request { server, enrollment_token: token, device_id, device_id_file, force };
            match enroll::enroll(&config.config, &req) {
                Ok(id) => {
                    if json {
                        print_json(&serde_json::json!({ "deviceId": id, "server": req.server })).map_err(Failure::Error)
                    } else {
                        print(&format!("enrolled as {id} at {}\n", req.server));
                        Ok(())
                    }
                }
                Err(EnrollError::Refused(r)) => Err(Failure::Refused(r)),
                Err(EnrollError::Failed(e)) => Err(Failure::Error(e)),
            }
        }
        Cmd::Status { config, json } => load(&config.config).and_then(|c| status(&c, json)).map_err(Failure::Error),
        Cmd::Run { config, simulate_reboot } => daemon(&config.config, simulate_reboot),
        Cmd::Check(args) => one_shot(&args, |_| Ok(())),
        Cmd::Install { file, args } => one_shot(&args, |s| s.install_local(&file)),
        Cmd::Commit(args) => one_shot(&args, |s| {
            s.force_health(true);
            Ok(())
        }),
        Cmd::Revert(args) => one_shot(&args, |s| {
            s.force_health(false);
            Ok(())
        }),
        Cmd::SimulateBoot { config, json } => {
            load(&config.config).map_err(Failure::Error).and_then(|c| simulate_boot(&c, json))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(reason)) => {
            let _ = writeln!(std::io::stderr(), "refused: {reason}");
            ExitCode::from(1)
        }
        Err(Failure::Error(e)) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every command says what it does and shows an example; every flag
    /// and argument says what it is.
    #[test]
    fn every_command_explains_itself() {
        let cli = <super::Cli as clap::CommandFactory>::command();
        cli.clone().debug_assert();
        let mut problems = Vec::new();
        for cmd in cli.get_subcommands() {
            let name = cmd.get_name();
            if cmd.get_about().is_none() {
                problems.push(format!("{name}: no description"));
            }
            if !cmd.get_after_help().is_some_and(|h| h.to_string().contains("updraft-agent")) {
                problems.push(format!("{name}: no example"));
            }
            for a in cmd.get_arguments() {
                if !matches!(a.get_id().as_str(), "help" | "version") && !a.is_hide_set() && a.get_help().is_none() {
                    problems.push(format!("{name}: {} has no description", a.get_id()));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
