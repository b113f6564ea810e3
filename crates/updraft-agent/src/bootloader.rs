//! Bootloader backends behind one trait. Each keeps the boot-selection
//! record (`updraft_agent_core::BootRecord`) in the bootloader's own
//! storage and writes it in one atomic step:
//!
//! - [`UBoot`]: U-Boot's environment through libubootenv's `fw_printenv`
//!   and `fw_setenv -s` (one script, one write);
//! - [`Grub`]: GRUB's environment block through `grub-editenv`;
//! - [`FileModel`]: a JSON file with the same boot-attempt semantics, for
//!   tests and the simulator.
//!
//! The variables (documented in docs/agent-bootloaders.md, with the U-Boot
//! boot script and the grub.cfg snippet that implement the contract):
//! `UPDRAFT_PRIMARY` (A or B), `UPDRAFT_A_TRIES`, `UPDRAFT_B_TRIES` (attempts
//! left), `UPDRAFT_A_GOOD`, `UPDRAFT_B_GOOD` (0 or 1), `UPDRAFT_TRIAL`
//! (0 or 1), `UPDRAFT_REVERTED` (empty, A or B).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use updraft_agent_core::{BootRecord, Booted, Slot};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{tool}: {message}")]
    Tool { tool: String, message: String },
    #[error("boot variable {name}={value:?} is not valid; hint: {hint}")]
    BadVariable { name: String, value: String, hint: String },
    #[error("the boot record read back differs from the one written: wrote {wrote:?}, read {read:?}")]
    ReadBack { wrote: BootRecord, read: BootRecord },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A bootloader's view of the boot-selection record.
pub trait Bootloader {
    /// Reads the record; `None` if it was never written (a fresh device).
    fn read(&self) -> Result<Option<BootRecord>, BootError>;
    /// Writes the record in one atomic step.
    fn write_raw(&self, record: &BootRecord) -> Result<(), BootError>;
    /// Writes, then reads back and compares.
    fn write(&self, record: &BootRecord) -> Result<BootRecord, BootError> {
        self.write_raw(record)?;
        match self.read()? {
            Some(read) if read == *record => Ok(read),
            Some(read) => Err(BootError::ReadBack { wrote: *record, read }),
            None => Err(BootError::Tool { tool: "read back".into(), message: "the record vanished".into() }),
        }
    }
}

/// The record as bootloader variables.
pub fn to_vars(r: &BootRecord) -> Vec<(&'static str, String)> {
    let b = |x: bool| if x { "1".to_owned() } else { "0".to_owned() };
    vec![
        ("UPDRAFT_PRIMARY", r.primary.name().to_owned()),
        ("UPDRAFT_A_TRIES", r.tries[0].to_string()),
        ("UPDRAFT_B_TRIES", r.tries[1].to_string()),
        ("UPDRAFT_A_GOOD", b(r.good[0])),
        ("UPDRAFT_B_GOOD", b(r.good[1])),
        ("UPDRAFT_TRIAL", b(r.trial_armed)),
        ("UPDRAFT_REVERTED", r.last_revert.map(|s| s.name().to_owned()).unwrap_or_default()),
    ]
}

fn slot(name: &str, value: &str) -> Result<Slot, BootError> {
    match value {
        "A" => Ok(Slot::A),
        "B" => Ok(Slot::B),
        _ => Err(BootError::BadVariable { name: name.into(), value: value.into(), hint: "A or B".into() }),
    }
}

/// The record from bootloader variables; `None` if none of ours is set.
pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Option<BootRecord>, BootError> {
    if !vars.contains_key("UPDRAFT_PRIMARY") {
        return Ok(None);
    }
    let get = |k: &str| vars.get(k).map(String::as_str).unwrap_or("");
    let num = |k: &str| -> Result<u8, BootError> {
        get(k).parse::<u8>().ok().filter(|n| *n <= 15).ok_or_else(|| BootError::BadVariable {
            name: k.into(),
            value: get(k).into(),
            hint: "a number from 0 to 15".into(),
        })
    };
    let flag = |k: &str| -> Result<bool, BootError> {
        match get(k) {
            "1" => Ok(true),
            "0" | "" => Ok(false),
            v => Err(BootError::BadVariable { name: k.into(), value: v.into(), hint: "0 or 1".into() }),
        }
    };
    Ok(Some(BootRecord {
        primary: slot("UPDRAFT_PRIMARY", get("UPDRAFT_PRIMARY"))?,
        tries: [num("UPDRAFT_A_TRIES")?, num("UPDRAFT_B_TRIES")?],
        good: [flag("UPDRAFT_A_GOOD")?, flag("UPDRAFT_B_GOOD")?],
        trial_armed: flag("UPDRAFT_TRIAL")?,
        last_revert: match get("UPDRAFT_REVERTED") {
            "" => None,
            v => Some(slot("UPDRAFT_REVERTED", v)?),
        },
    }))
}

fn run(cmd: &mut Command, tool: &str) -> Result<String, BootError> {
    let out = cmd.output().map_err(|e| BootError::Tool {
        tool: tool.into(),
        message: format!("cannot run it: {e}; hint: install it (Debian: libubootenv-tool or grub-common)"),
    })?;
    if !out.status.success() {
        return Err(BootError::Tool {
            tool: tool.into(),
            message: format!("exit {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn parse_lines(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// U-Boot's environment through libubootenv.
#[derive(Clone, Debug)]
pub struct UBoot {
    /// `fw_env.config` (default: /etc/fw_env.config).
    pub config: Option<PathBuf>,
    /// A default environment for a blank environment storage (`-f`).
    pub default_env: Option<PathBuf>,
}

impl UBoot {
    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        if let Some(cfg) = &self.config {
            c.arg("-c").arg(cfg);
        }
        if let Some(d) = &self.default_env {
            c.arg("-f").arg(d);
        }
        c
    }
}

impl Bootloader for UBoot {
    fn read(&self) -> Result<Option<BootRecord>, BootError> {
        let text = run(&mut self.command("fw_printenv"), "fw_printenv")?;
        from_vars(&parse_lines(&text))
    }

    fn write_raw(&self, record: &BootRecord) -> Result<(), BootError> {
        // One script: libubootenv writes all variables in one environment write.
        let mut script =
            tempfile::NamedTempFile::new().map_err(|e| BootError::Io { context: "script".into(), source: e })?;
        let body: String = to_vars(record).into_iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::io::Write::write_all(&mut script, body.as_bytes())
            .map_err(|e| BootError::Io { context: "script".into(), source: e })?;
        let mut cmd = self.command("fw_setenv");
        cmd.arg("-s").arg(script.path());
        run(&mut cmd, "fw_setenv").map(drop)
    }
}

/// GRUB's environment block through `grub-editenv`.
#[derive(Clone, Debug)]
pub struct Grub {
    /// The environment block file (e.g. /boot/grub/grubenv).
    pub env_file: PathBuf,
}

impl Bootloader for Grub {
    fn read(&self) -> Result<Option<BootRecord>, BootError> {
        if !self.env_file.exists() {
            return Ok(None);
        }
        let text = run(Command::new("grub-editenv").arg(&self.env_file).arg("list"), "grub-editenv")?;
        from_vars(&parse_lines(&text))
    }

    fn write_raw(&self, record: &BootRecord) -> Result<(), BootError> {
        if !self.env_file.exists() {
            run(Command::new("grub-editenv").arg(&self.env_file).arg("create"), "grub-editenv")?;
        }
        // One `set` with every variable: grub-editenv rewrites the 1 KiB
        // block in one write.
        let mut cmd = Command::new("grub-editenv");
        cmd.arg(&self.env_file).arg("set");
        for (k, v) in to_vars(record) {
            cmd.arg(format!("{k}={v}"));
        }
        run(&mut cmd, "grub-editenv").map(drop)
    }
}

/// A file-backed model of a bootloader with the same semantics.
#[derive(Clone, Debug)]
pub struct FileModel {
    pub path: PathBuf,
}

impl FileModel {
    /// Simulates a boot: runs the bootloader contract on the stored record
    /// and returns what booted.
    pub fn boot(&self) -> Result<Booted, BootError> {
        let record = self.read()?.unwrap_or_else(|| BootRecord::fresh(Slot::A));
        let (next, booted) = updraft_agent_core::boot(record);
        if let Some(r) = next {
            self.write_raw(&r)?;
        }
        let body = serde_json::to_vec(&booted)
            .map_err(|e| BootError::Io { context: "cannot encode what booted".into(), source: e.into() })?;
        crate::fsutil::write_atomic(&self.booted_path(), &body)
            .map_err(|e| BootError::Io { context: "cannot record what booted".into(), source: e })?;
        Ok(booted)
    }

    fn booted_path(&self) -> PathBuf {
        self.path.with_extension("booted.json")
    }

    /// What the last simulated boot booted.
    pub fn booted(&self) -> Result<Option<Booted>, BootError> {
        match std::fs::read(self.booted_path()) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BootError::Io { context: "cannot read what booted".into(), source: e }),
        }
    }
}

impl Bootloader for FileModel {
    fn read(&self) -> Result<Option<BootRecord>, BootError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let vars: BTreeMap<String, String> =
                    serde_json::from_slice(&bytes).map_err(|e| BootError::BadVariable {
                        name: self.path.display().to_string(),
                        value: String::new(),
                        hint: format!("a JSON object of boot variables ({e})"),
                    })?;
                from_vars(&vars)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BootError::Io { context: format!("cannot read {}", self.path.display()), source: e }),
        }
    }

    fn write_raw(&self, record: &BootRecord) -> Result<(), BootError> {
        let vars: BTreeMap<&str, String> = to_vars(record).into_iter().collect();
        let body = serde_json::to_vec_pretty(&vars)
            .map_err(|e| BootError::Io { context: "cannot encode the boot variables".into(), source: e.into() })?;
        crate::fsutil::write_atomic(&self.path, &body)
            .map_err(|e| BootError::Io { context: format!("cannot write {}", self.path.display()), source: e })
    }
}

/// What booted, from the kernel command line the boot script set:
/// `updraft.slot=A|B`, `updraft.trial=1`, `updraft.reverted_from=A|B`.
pub fn booted_from_cmdline(cmdline: &str) -> Option<Booted> {
    let mut slot_arg = None;
    let mut trial = false;
    let mut reverted_from = None;
    for word in cmdline.split_whitespace() {
        match word.split_once('=') {
            Some(("updraft.slot", v)) => slot_arg = slot("updraft.slot", v).ok(),
            Some(("updraft.trial", v)) => trial = v == "1",
            Some(("updraft.reverted_from", v)) => reverted_from = slot("updraft.reverted_from", v).ok(),
            _ => {}
        }
    }
    slot_arg.map(|s| Booted { slot: s, trial, reverted_from })
}

/// Reads the kernel command line (default /proc/cmdline).
pub fn read_cmdline(path: &Path) -> Result<String, BootError> {
    std::fs::read_to_string(path)
        .map_err(|e| BootError::Io { context: format!("cannot read {}", path.display()), source: e })
}
