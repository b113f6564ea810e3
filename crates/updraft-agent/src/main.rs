//! `updraft-agent`: the device agent's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use updraft_agent::bootloader::{booted_from_cmdline, read_cmdline};
use updraft_agent::config::{BootloaderConfig, Config};
use updraft_agent::shell::{Shell, Stop};

/// The Updraft device agent.
#[derive(Parser)]
#[command(name = "updraft-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the boot record, the booted slot and the journal.
    Status {
        #[arg(long, default_value = "/etc/updraft/agent.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The daemon: check in, install, trial-boot, commit or revert, forever.
    Run {
        #[arg(long, default_value = "/etc/updraft/agent.toml")]
        config: PathBuf,
        /// Do not run the reboot command (tests, simulation).
        #[arg(long, hide = true)]
        simulate_reboot: bool,
    },
    /// One pass: resume what the journal says, check in once, act on the answer.
    Check {
        #[arg(long, default_value = "/etc/updraft/agent.toml")]
        config: PathBuf,
        #[arg(long, hide = true)]
        simulate_reboot: bool,
        #[arg(long)]
        json: bool,
    },
    /// Install a local bundle (same verification as a download), then reboot into it on trial.
    Install {
        file: PathBuf,
        #[arg(long, default_value = "/etc/updraft/agent.toml")]
        config: PathBuf,
        #[arg(long, hide = true)]
        simulate_reboot: bool,
        #[arg(long)]
        json: bool,
    },
    /// During a trial boot: commit it by hand (skip the health checks).
    Commit {
        #[arg(long, default_value = "/etc/updraft/agent.toml")]
        config: PathBuf,
        #[arg(long, hide = true)]
        simulate_reboot: bool,
        #[arg(long)]
        json: bool,
    },
    /// During a trial boot: revert it by hand and reboot into the old slot.
    Revert {
        #[arg(long, default_value = "/etc/updraft/agent.toml")]
        config: PathBuf,
        #[arg(long, hide = true)]
        simulate_reboot: bool,
        #[arg(long)]
        json: bool,
    },
}

fn one_shot(
    config: &std::path::Path,
    simulate: bool,
    json: bool,
    prepare: impl FnOnce(&mut Shell) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let mut shell = Shell::start(cfg)?;
    shell.simulate_reboot = simulate;
    prepare(&mut shell)?;
    let stop = shell.run(true)?;
    let j = shell.journal();
    let value = serde_json::json!({
        "stop": if stop == Stop::Reboot { "reboot" } else { "idle" },
        "installed": j.installed,
        "phase": j.phase,
        "unreported": j.unreported,
    });
    let text = if json {
        format!("{}\n", serde_json::to_string_pretty(&value)?)
    } else {
        format!(
            "{}; installed {} (slot {}); phase {:?}\n",
            if stop == Stop::Reboot { "rebooting" } else { "idle" },
            j.installed.release.as_ref().map_or("unknown", |r| r.as_str()),
            j.installed.slot.name(),
            j.phase
        )
    };
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let record = config.bootloader().read()?;
    let booted = match &config.bootloader {
        BootloaderConfig::Uboot { cmdline, .. } | BootloaderConfig::Grub { cmdline, .. } => {
            booted_from_cmdline(&read_cmdline(cmdline)?)
        }
        BootloaderConfig::File { .. } => None,
    };
    let journal: Option<updraft_agent_core::Journal> = match std::fs::read(config.journal_path()) {
        Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| anyhow::anyhow!("unreadable journal: {e}"))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let value = serde_json::json!({ "bootRecord": record, "booted": booted, "journal": journal });
    let text = if json {
        serde_json::to_string_pretty(&value)?
    } else {
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
            Some(j) => s.push_str(&format!(
                "installed: {} (security version {}, slot {}); phase {:?}; {} event(s) to report\n",
                j.installed.release.as_ref().map_or("unknown", |r| r.as_str()),
                j.installed.security_version,
                j.installed.slot.name(),
                j.phase,
                j.unreported.len()
            )),
            None => s.push_str("journal: none yet\n"),
        }
        s
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.write_all(if json { b"\n" } else { b"" }));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Status { config, json } => Config::load(&config).and_then(|c| status(&c, json)),
        Cmd::Run { config, simulate_reboot } => Config::load(&config).and_then(|cfg| {
            let mut shell = Shell::start(cfg)?;
            shell.simulate_reboot = simulate_reboot;
            // Returns only when the core reboots the device.
            shell.run(false).map(drop)
        }),
        Cmd::Check { config, simulate_reboot, json } => one_shot(&config, simulate_reboot, json, |_| Ok(())),
        Cmd::Install { file, config, simulate_reboot, json } => {
            one_shot(&config, simulate_reboot, json, |s| s.install_local(&file))
        }
        Cmd::Commit { config, simulate_reboot, json } => one_shot(&config, simulate_reboot, json, |s| {
            s.force_health(true);
            Ok(())
        }),
        Cmd::Revert { config, simulate_reboot, json } => one_shot(&config, simulate_reboot, json, |s| {
            s.force_health(false);
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
