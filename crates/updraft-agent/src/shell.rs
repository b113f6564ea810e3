//! The shell around the core: performs the effects (files, bootloader,
//! HTTP, slots, health checks, reboot) and feeds the results back. Thin by
//! design: every decision is the core's. One driver loop ([`Shell::run`])
//! performs every effect, the same way the fleet simulator does: a stream
//! is opened on `Stream` (answering `Header`), written on `Accept` from the
//! core's `resume_from` (answering `Progress` at each sync, then
//! `StreamDone`), dropped on `Abort`.

use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::{Digest, Sha256};
use updraft_agent_core::{
    Agent, Assignment, BootRecord, Booted, Effect, Facts, Header, Input, InstallEvent, Installed, Journal, Notice, Slot,
};
use updraft_bundle::manifest::Image;
use updraft_bundle::{BundleStream, Policy, SignedRoot, Target, TrustedRoot};
use updraft_types::{ReleaseId, Sha256Digest, UnixMs};

use crate::bootloader::{booted_from_cmdline, read_cmdline, Bootloader, FileModel};
use crate::config::{BootloaderConfig, Config};
use crate::log;
use crate::slots::{read_back, SlotWriter, SYNC_EVERY};

/// The tail of a failed health check's output kept in its report.
pub const HEALTH_OUTPUT_BYTES: usize = 32 * 1024;

/// Why the shell stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Nothing left to do until the next check-in (one-shot commands).
    Idle,
    /// The core asked for a reboot (after running the reboot command, or in
    /// `simulate_reboot` mode without it).
    Reboot,
}

/// What a one-shot command saw: the exit code and the line it prints come
/// from here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The update ended refused, failed or reverted (exit 1): the reason.
    pub refused: Option<String>,
    /// The server could not be asked or told (exit 2): why.
    pub error: Option<String>,
    /// Why the server assigned nothing, in its words.
    pub server_reason: Option<String>,
    /// Why the agent did not take the assignment (e.g. refused before).
    pub skipped: Option<String>,
    /// A release committed in this run.
    pub committed: Option<ReleaseId>,
}

/// A bundle opened and verified, waiting for the core's verdict.
struct Open {
    stream: BundleStream<BufReader<std::fs::File>>,
    images: Vec<Image>,
    slot_image: String,
    slot: Slot,
    resume_from: u64,
}

pub struct Shell {
    cfg: Config,
    agent: Agent,
    boot: Box<dyn Bootloader>,
    booted: Booted,
    trust: TrustedRoot,
    /// The newest trust root version walked to (to verify the next one against).
    latest_root: SignedRoot,
    http: ureq::Agent,
    token: Option<String>,
    /// Health verdict to use instead of the checks (`commit` / `revert` by hand).
    forced_health: Option<bool>,
    /// A local bundle's assignment, answered to every check-in (`install FILE`).
    pending_local: Option<Assignment>,
    /// The bundle opened on `Stream`.
    open: Option<Open>,
    /// Inputs produced while performing an effect, fed before the next effect.
    inputs: VecDeque<Input>,
    /// Effects drained while streaming, performed before the core's next ones.
    deferred: VecDeque<Effect>,
    outcome: Outcome,
    /// The inventory scripts' last output, and when they ran.
    inventory: Option<(Instant, std::collections::BTreeMap<String, String>)>,
    /// Do not run the reboot command (tests and the simulator).
    pub simulate_reboot: bool,
}

fn now() -> UnixMs {
    UnixMs(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
    )
}

fn load_root(path: &Path) -> anyhow::Result<SignedRoot> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read trust root {}", path.display()))?;
    SignedRoot::parse(&bytes).map_err(|e| anyhow::anyhow!("trust root {}: {e}", path.display()))
}

/// Why talking to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the server {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the server refused the device token (401); hint: enroll again with `updraft-agent enroll`, or check server.token_file")]
    Unauthorized,
    #[error("the server answered {status}: {message}")]
    Refused { status: u16, message: String },
    /// 429 or 503 with `Retry-After`: ask again no sooner than that.
    #[error("the server is busy ({status}): {message}; asking again in {retry_after_s} s")]
    Throttled { status: u16, message: String, retry_after_s: u32 },
}

impl ServerError {
    /// How long the server asked the device to wait, if it did.
    pub fn retry_after_s(&self) -> Option<u32> {
        match self {
            ServerError::Throttled { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }
}

fn server_error(url: &str, e: ureq::Error) -> ServerError {
    ServerError::Unreachable { url: url.to_owned(), reason: e.to_string() }
}

fn refused(status: u16, res: &mut ureq::http::Response<ureq::Body>) -> ServerError {
    if status == 401 {
        return ServerError::Unauthorized;
    }
    // Retry-After in seconds (RFC 9110 §10.2.3; an HTTP date counts as a minute).
    let retry_after_s =
        res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(|v| v.trim().parse::<u32>().unwrap_or(60));
    let body = res.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
    let message = serde_json::from_str::<updraft_proto::ErrorBody>(&body).map(|e| e.message).unwrap_or(body);
    match retry_after_s {
        Some(retry_after_s) if status == 429 || status == 503 => {
            ServerError::Throttled { status, message, retry_after_s }
        }
        _ => ServerError::Refused { status, message },
    }
}

/// Reads what booted: the kernel command line, or the file model's last boot.
pub fn read_booted(cfg: &Config) -> anyhow::Result<Booted> {
    Ok(match &cfg.bootloader {
        BootloaderConfig::Uboot { cmdline, .. } | BootloaderConfig::Grub { cmdline, .. } => {
            booted_from_cmdline(&read_cmdline(cmdline)?).context(
                "the kernel command line has no updraft.slot=; hint: install the boot script from docs/agent-bootloaders.md",
            )?
        }
        BootloaderConfig::File { path } => FileModel { path: path.clone() }
            .booted()?
            .unwrap_or(Booted { slot: Slot::A, trial: false, reverted_from: None }),
    })
}

/// Reads the journal; `None` on a first start.
pub fn read_journal(cfg: &Config) -> anyhow::Result<Option<Journal>> {
    match std::fs::read(cfg.journal_path()) {
        Ok(b) => Ok(Some(crate::parse::journal(&b).with_context(|| {
            format!(
                "unreadable journal {}; hint: move it aside to start over from what runs",
                cfg.journal_path().display()
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", cfg.journal_path().display()))),
    }
}

impl Shell {
    /// Reads the journal and the boot record, finds out what booted, and starts the core.
    pub fn start(cfg: Config) -> anyhow::Result<Shell> {
        std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("cannot create {}", cfg.data_dir.display()))?;
        let boot = cfg.bootloader();
        let booted = read_booted(&cfg)?;
        let record = match boot.read()? {
            Some(r) => r,
            None => boot.write(&BootRecord::fresh(booted.slot))?,
        };
        let pinned = load_root(&cfg.trust_root)?;
        let mut updates = cfg.trust_updates.iter().map(|p| load_root(p)).collect::<anyhow::Result<Vec<_>>>()?;
        // Versions adopted from the server earlier, in order.
        let mut adopted: Vec<(u64, PathBuf)> = std::fs::read_dir(&cfg.data_dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let v = name.strip_prefix("trust-root.")?.strip_suffix(".json")?.parse().ok()?;
                Some((v, e.path()))
            })
            .collect();
        adopted.sort();
        let last = updates.last().unwrap_or(&pinned).root.version;
        for (v, p) in adopted {
            if v > updates.last().map_or(last, |r| r.root.version) {
                updates.push(load_root(&p)?);
            }
        }
        let trust = updraft_bundle::trust::verify_chain(&pinned, &updates, updraft_types::Timestamp::now())
            .map_err(|e| anyhow::anyhow!("trust root: {e}"))?;
        let latest_root = updates.last().cloned().unwrap_or(pinned);
        let journal = match read_journal(&cfg)? {
            Some(j) => j,
            // First start: what the factory image is, from the configuration.
            None => Journal::new(Installed {
                release: cfg.device.release.as_deref().map(ReleaseId::new),
                security_version: cfg.device.security_version,
                slot: booted.slot,
            }),
        };
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .new_agent();
        let token = match &cfg.server {
            Some(s) => Some(crate::enroll::device_token(&cfg, s, &http)?),
            None => None,
        };
        let facts = Facts {
            family: cfg.device.family.clone(),
            hardware: cfg.device.hardware.clone(),
            components: cfg
                .device
                .components
                .iter()
                .map(|(k, v)| semver::Version::parse(v).map(|v| (k.clone(), v)))
                .collect::<Result<_, _>>()
                .context("device.components must be semver versions")?,
        };
        let mut agent = Agent::new(Duration::from_secs(cfg.poll_interval_s));
        let seed = Sha256::digest(format!("{:?}{}", cfg.data_dir, now().0).as_bytes());
        let seed = u64::from_le_bytes(seed[..8].try_into().unwrap_or([7; 8]));
        log::debug(&format!(
            "started: booted slot {}{}, record {record:?}, phase {}",
            booted.slot.name(),
            if booted.trial { " on trial" } else { "" },
            journal.phase.name()
        ));
        agent.handle(now(), Input::Started { journal: Some(Box::new(journal)), record, booted, facts, seed });
        let mut shell = Shell {
            cfg,
            agent,
            boot,
            booted,
            trust,
            latest_root,
            http,
            token,
            forced_health: None,
            pending_local: None,
            open: None,
            inputs: VecDeque::new(),
            deferred: VecDeque::new(),
            outcome: Outcome::default(),
            inventory: None,
            simulate_reboot: false,
        };
        shell.drain_notices();
        Ok(shell)
    }

    pub fn journal(&self) -> &Journal {
        self.agent.journal()
    }

    /// What this run saw (for the one-shot commands' exit code).
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Installs a local bundle through the same path as a server assignment.
    pub fn install_local(&mut self, file: &Path) -> anyhow::Result<()> {
        let bytes_sha = {
            let mut f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
            let mut sha = Sha256::new();
            std::io::copy(&mut f, &mut HashWriter(&mut sha))
                .with_context(|| format!("cannot read {}", file.display()))?;
            Sha256Digest(sha.finalize().into())
        };
        let info = updraft_bundle::inspect_file(file).with_context(|| format!("{} is not a bundle", file.display()))?;
        let release = ReleaseId::new(format!("{}@{}", info.manifest.name, info.manifest.version));
        let path = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        self.pending_local = Some(Assignment {
            release,
            url: format!("file://{}", path.display()),
            bundle_sha256: bytes_sha,
            bundle_size: std::fs::metadata(file)?.len(),
        });
        self.agent.handle(now(), Input::Tick);
        Ok(())
    }

    /// `commit` or `revert` by hand during a trial.
    pub fn force_health(&mut self, ok: bool) {
        self.forced_health = Some(ok);
    }

    fn slot_path(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.cfg.slots.a,
            Slot::B => &self.cfg.slots.b,
        }
    }

    fn token(&self) -> anyhow::Result<String> {
        Ok(format!("Bearer {}", self.token.as_deref().context("no server configured")?))
    }

    fn server(&self) -> anyhow::Result<&str> {
        self.cfg.server.as_ref().map(|s| s.url.trim_end_matches('/')).context("no server configured")
    }

    /// The inventory scripts' attributes, run again when they are due.
    fn attributes(&mut self) -> std::collections::BTreeMap<String, String> {
        let Some(dir) = self.cfg.inventory_dir.clone() else { return Default::default() };
        let due = self
            .inventory
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(self.cfg.inventory_interval_s));
        if due {
            let attrs = crate::inventory::run_scripts(&dir);
            log::debug(&format!("inventory: {} attribute(s) from {}", attrs.len(), dir.display()));
            self.inventory = Some((Instant::now(), attrs));
        }
        self.inventory.as_ref().map(|(_, a)| a.clone()).unwrap_or_default()
    }

    fn check_in(&mut self, release: Option<ReleaseId>) -> Result<Option<Assignment>, ServerError> {
        let server = self.server().map_err(|e| ServerError::Refused { status: 0, message: e.to_string() })?.to_owned();
        let url = format!("{server}{}", updraft_proto::paths::CHECK_IN);
        let body = updraft_proto::CheckInRequest {
            release,
            slot: Some(self.booted.slot.name().to_owned()),
            security_version: Some(self.journal().installed.security_version),
            boot_state: Some(if self.booted.trial {
                updraft_proto::BootState::Trial
            } else if self.booted.reverted_from.is_some() {
                updraft_proto::BootState::Reverted
            } else {
                updraft_proto::BootState::Good
            }),
            components: self.cfg.device.components.clone(),
            utc_offset_min: None,
            agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            free_bytes: crate::inventory::free_bytes(&self.cfg.data_dir),
            attributes: self.attributes(),
        };
        let token = self.token().unwrap_or_default();
        let mut res =
            self.http.post(&url).header("Authorization", &token).send_json(&body).map_err(|e| server_error(&url, e))?;
        let status = res.status().as_u16();
        if status != 200 {
            return Err(refused(status, &mut res));
        }
        let r: updraft_proto::CheckInResponse =
            res.body_mut().with_config().limit(1 << 20).read_to_vec().map_err(|e| server_error(&url, e)).and_then(
                |b| {
                    crate::parse::check_in_answer(&b)
                        .map_err(|e| ServerError::Refused { status, message: e.to_string() })
                },
            )?;
        self.outcome.server_reason = r.detail.clone().or(r.reason.clone());
        Ok(r.assignment.map(|a| {
            let url = if a.bundle_url.starts_with('/') { format!("{server}{}", a.bundle_url) } else { a.bundle_url };
            Assignment { release: a.release, url, bundle_sha256: a.sha256, bundle_size: a.size }
        }))
    }

    fn report(&self, e: &updraft_agent_core::Event) -> Result<(), ServerError> {
        if self.cfg.server.is_none() {
            return Ok(()); // local installs have nobody to tell
        }
        let server = self.server().map_err(|e| ServerError::Refused { status: 0, message: e.to_string() })?;
        let url = format!("{server}{}", updraft_proto::paths::EVENTS);
        // A failure goes with the tail of the agent's log (bounded; the
        // server keeps it in the device's history).
        let detail = match e.kind {
            InstallEvent::Failed | InstallEvent::RevertedBoot | InstallEvent::RevertedHealth => {
                format!("{}\n-- the agent's log, newest last --\n{}", e.detail, log::recent())
            }
            _ => e.detail.clone(),
        };
        let body = updraft_proto::EventRequest { release: e.release.clone(), event: e.kind, detail: Some(detail) };
        let token = self.token().unwrap_or_default();
        let mut res =
            self.http.post(&url).header("Authorization", &token).send_json(&body).map_err(|e| server_error(&url, e))?;
        match res.status().as_u16() {
            200..=299 => Ok(()),
            401 => Err(ServerError::Unauthorized),
            // The server will never accept it (e.g. an unknown release): drop it.
            s @ 400..=499 => {
                let why = refused(s, &mut res);
                log::warn(&format!("the server will not take the {} event of {}: {why}; dropped", e.kind, e.release));
                Ok(())
            }
            s => Err(refused(s, &mut res)),
        }
    }

    /// Follows a trust root rotation announced by the server: adopts the
    /// server's newest root if it is the next version after ours (signed by
    /// a threshold of our keys and of its own), and keeps it in `data_dir`.
    fn follow_trust_rotation(&mut self) {
        let Ok(server) = self.server() else { return };
        let Ok(token) = self.token() else { return };
        let url = format!("{server}/api/v1/trust-root");
        let Ok(mut res) = self.http.get(&url).header("Authorization", &token).call() else { return };
        if res.status() != 200 {
            return;
        }
        let Ok(body) = res.body_mut().read_to_vec() else { return };
        let Ok(next) = SignedRoot::parse(&body) else { return };
        if next.root.version <= self.latest_root.root.version {
            return;
        }
        match updraft_bundle::trust::verify_chain(
            &self.latest_root,
            std::slice::from_ref(&next),
            updraft_types::Timestamp::now(),
        ) {
            Ok(trusted) => {
                let path = self.cfg.data_dir.join(format!("trust-root.{}.json", next.root.version));
                if crate::fsutil::write_atomic(&path, &next.to_json()).is_ok() {
                    log::info(&format!("adopted trust root version {}", next.root.version));
                    self.trust = trusted;
                    self.latest_root = next;
                }
            }
            Err(e) => {
                log::warn(&format!("the server's trust root version {} does not follow ours: {e}", next.root.version))
            }
        }
    }

    /// Downloads the bundle into the staging file, resuming from its size.
    fn download(&self, a: &Assignment) -> anyhow::Result<PathBuf> {
        if let Some(path) = a.url.strip_prefix("file://") {
            return Ok(PathBuf::from(path));
        }
        let staged = self.cfg.data_dir.join(format!("{}.bundle", a.bundle_sha256));
        let have = std::fs::metadata(&staged).map(|m| m.len()).unwrap_or(0);
        if have < a.bundle_size {
            log::info(&format!("downloading {} ({} bytes, from byte {have})", a.release, a.bundle_size));
            let mut req = self.http.get(&a.url).header("Authorization", &self.token()?);
            if have > 0 {
                req = req.header("Range", &format!("bytes={have}-"));
            }
            let mut res = req.call().map_err(|e| server_error(&a.url, e))?;
            let status = res.status().as_u16();
            let append = status == 206;
            if !(status == 200 || append) {
                return Err(refused(status, &mut res).into());
            }
            let mut file =
                std::fs::OpenOptions::new().create(true).append(append).write(true).truncate(!append).open(&staged)?;
            // Never more than the assigned size.
            let mut reader = res
                .body_mut()
                .with_config()
                .limit(a.bundle_size.saturating_sub(if append { have } else { 0 }))
                .reader();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n])?;
            }
            file.sync_all()?;
        }
        // The whole file must be what the server assigned.
        let mut f = std::fs::File::open(&staged)?;
        let mut sha = Sha256::new();
        std::io::copy(&mut f, &mut HashWriter(&mut sha))?;
        if Sha256Digest(sha.finalize().into()) != a.bundle_sha256 {
            let _ = std::fs::remove_file(&staged);
            anyhow::bail!("the downloaded bundle does not match its digest; it will be downloaded again");
        }
        Ok(staged)
    }

    /// `Stream`: download and verify the whole bundle, open it, and answer
    /// its header. Nothing is written to a slot yet.
    fn open_stream(&mut self, slot: Slot, resume_from: u64) -> Input {
        self.open = None;
        let Some(a) = self.agent.journal().update().map(|u| u.assignment.clone()) else {
            return Input::StreamFailed { retryable: false, reason: "no update in progress".into() };
        };
        let staged = match self.download(&a) {
            Ok(p) => p,
            Err(e) => return Input::StreamFailed { retryable: true, reason: format!("{e:#}") },
        };
        // Verify everything (signatures, every digest) before a byte goes to
        // a slot; then stream the verified file into the slot.
        if let Err(e) =
            updraft_bundle::verify_file(&staged, &self.trust, &Policy::default(), &updraft_bundle::NoProgress)
        {
            if a.url.starts_with("file://") || e.rejection().is_none() {
                return Input::StreamFailed { retryable: e.rejection().is_none(), reason: e.to_string() };
            }
            // A downloaded bundle that fails: drop it, so that a retry downloads it again.
            let _ = std::fs::remove_file(&staged);
            return Input::StreamFailed { retryable: false, reason: e.to_string() };
        }
        let file = match std::fs::File::open(&staged) {
            Ok(f) => f,
            Err(e) => return Input::StreamFailed { retryable: true, reason: e.to_string() },
        };
        let stream =
            match updraft_bundle::open(BufReader::with_capacity(1 << 20, file), &self.trust, &Policy::default()) {
                Ok(s) => s,
                Err(e) => return Input::StreamFailed { retryable: e.rejection().is_none(), reason: e.to_string() },
            };
        let m = stream.header().manifest.clone();
        let Some(image) = m.images.iter().find(|i| i.target == Target::Slot).cloned() else {
            return Input::StreamFailed { retryable: false, reason: "the bundle has no image for the A/B slot".into() };
        };
        let header = Header {
            release: ReleaseId::new(format!("{}@{}", m.name, m.version)),
            family: m.family.clone(),
            hardware: m.hardware.clone(),
            security_version: m.security_version.0,
            requires: m.requires.iter().map(|r| (r.component.clone(), r.version.to_string())).collect(),
            image_size: image.size,
            image_sha256: image.digests.sha256,
        };
        self.open = Some(Open { stream, images: m.images.clone(), slot_image: image.name, slot, resume_from });
        Input::Header(header)
    }

    /// `Accept`: streams the verified slot image into the slot from
    /// `resume_from` on (the bytes before it are in the slot and synced;
    /// the read-back checks the whole image), answering `Progress` at each
    /// sync.
    fn write_stream(&mut self) -> Input {
        let Some(open) = self.open.take() else {
            return Input::StreamFailed { retryable: true, reason: "no bundle open".into() };
        };
        let Open { mut stream, images, slot_image, slot, resume_from } = open;
        let path = self.slot_path(slot).to_path_buf();
        let mut writer = match SlotWriter::open(&path, slot == self.booted.slot, resume_from) {
            Ok(w) => w,
            Err(e) => return Input::StreamFailed { retryable: false, reason: e.to_string() },
        };
        let journal_path = self.cfg.journal_path();
        // Images come in manifest order: the slot image goes into the slot,
        // the others are checked and skipped.
        for img in &images {
            let result = if img.name == slot_image {
                let mut sink = Syncing {
                    writer: &mut writer,
                    skip: resume_from,
                    since_sync: 0,
                    agent: &mut self.agent,
                    journal_path: &journal_path,
                    deferred: &mut self.deferred,
                };
                stream.next_image(&mut sink, &updraft_bundle::NoProgress)
            } else {
                stream.next_image(&mut std::io::sink(), &updraft_bundle::NoProgress)
            };
            if let Err(e) = result {
                return Input::StreamFailed { retryable: e.rejection().is_none(), reason: e.to_string() };
            }
        }
        if let Err(e) = stream.finish() {
            return Input::StreamFailed { retryable: e.rejection().is_none(), reason: e.to_string() };
        }
        if let Err(e) = writer.finish() {
            return Input::StreamFailed { retryable: true, reason: e.to_string() };
        }
        Input::StreamDone
    }

    /// Feeds an input now (its effects run in the driver loop, in order).
    fn feed(&mut self, input: Input) {
        self.agent.handle(now(), input);
        self.drain_notices();
    }

    fn drain_notices(&mut self) {
        while let Some(n) = self.agent.poll_notice() {
            match n {
                Notice::Info(m) => log::info(&m),
                Notice::Skipped(m) => {
                    log::info(&m);
                    self.outcome.skipped = Some(m);
                }
                Notice::Warn(m) => log::warn(&m),
                Notice::Event(e) => {
                    let detail = if e.detail.is_empty() { String::new() } else { format!(": {}", e.detail) };
                    match e.kind {
                        InstallEvent::Failed | InstallEvent::RevertedBoot | InstallEvent::RevertedHealth => {
                            log::warn(&format!("{} {}{detail}", e.release, e.kind));
                            self.outcome.refused = Some(format!("{} {}{detail}", e.release, e.kind));
                        }
                        InstallEvent::Committed => {
                            log::info(&format!("{} committed", e.release));
                            self.outcome.committed = Some(e.release.clone());
                        }
                        _ => log::info(&format!("{} {}{detail}", e.release, e.kind)),
                    }
                }
            }
        }
    }

    fn persist(&self, j: &Journal) -> anyhow::Result<()> {
        let body = serde_json::to_vec_pretty(j).context("cannot encode the journal")?;
        crate::fsutil::write_atomic(&self.cfg.journal_path(), &body)
            .with_context(|| format!("cannot write the journal {}", self.cfg.journal_path().display()))
    }

    fn health(&self, timeout: Duration) -> (bool, String) {
        if let Some(ok) = self.forced_health {
            return (ok, if ok { "committed by hand".into() } else { "reverted by hand".into() });
        }
        let deadline = Instant::now() + timeout;
        for check in &self.cfg.health_checks {
            let Some((program, args)) = check.command.split_first() else { continue };
            let limit = Duration::from_secs(check.timeout_s).min(deadline.saturating_duration_since(Instant::now()));
            log::info(&format!("health check {}: {}", check.name, check.command.join(" ")));
            // The check's output goes to a file, whose tail is reported on failure.
            let out = match tempfile::tempfile_in(&self.cfg.data_dir) {
                Ok(f) => f,
                Err(e) => return (false, format!("health check {}: cannot capture its output: {e}", check.name)),
            };
            let (stdout, stderr) = match (out.try_clone(), out.try_clone()) {
                (Ok(a), Ok(b)) => (a, b),
                _ => return (false, format!("health check {}: cannot capture its output", check.name)),
            };
            let mut child = match std::process::Command::new(program).args(args).stdout(stdout).stderr(stderr).spawn() {
                Ok(c) => c,
                Err(e) => return (false, format!("health check {}: cannot run {program}: {e}", check.name)),
            };
            let (tx, rx) = std::sync::mpsc::channel();
            let id = child.id();
            std::thread::spawn(move || {
                let _ = tx.send(child.wait());
            });
            let verdict = match rx.recv_timeout(limit) {
                Ok(Ok(status)) if status.success() => None,
                Ok(Ok(status)) => Some(format!("health check {} failed: {status}", check.name)),
                Ok(Err(e)) => Some(format!("health check {}: {e}", check.name)),
                Err(_) => {
                    let _ = std::process::Command::new("kill").arg("-9").arg(id.to_string()).status();
                    Some(format!("health check {} timed out after {} s", check.name, limit.as_secs()))
                }
            };
            if let Some(reason) = verdict {
                let tail = tail_of(out, HEALTH_OUTPUT_BYTES);
                let detail = if tail.trim().is_empty() { reason } else { format!("{reason}; output:\n{tail}") };
                return (false, detail);
            }
        }
        (true, String::new())
    }

    /// Performs effects until the core is idle, a reboot is due, or (daemon)
    /// forever. `once`: stop when the core waits for the next check-in.
    pub fn run(&mut self, once: bool) -> anyhow::Result<Stop> {
        loop {
            if let Some(input) = self.inputs.pop_front() {
                self.feed(input);
                continue;
            }
            let Some(effect) = self.deferred.pop_front().or_else(|| self.agent.poll_effect()) else {
                let Some(t) = self.agent.poll_timeout() else {
                    anyhow::bail!(
                        "the agent waits for an answer that no effect will give; this is a bug, please report it"
                    );
                };
                let n = now();
                if t > n {
                    if once {
                        return Ok(Stop::Idle);
                    }
                    std::thread::sleep(Duration::from_millis((t.0 - n.0).min(60_000)));
                }
                self.feed(Input::Tick);
                continue;
            };
            let input = match effect {
                Effect::Persist(j) => {
                    self.persist(&j)?;
                    continue;
                }
                Effect::SetBootRecord(r) => match self.boot.write(&r) {
                    Ok(r) => Input::RecordWritten(r),
                    Err(e) => {
                        log::error(&format!("cannot write the boot record: {e}"));
                        Input::RecordFailed { reason: e.to_string() }
                    }
                },
                // A local install answers every check-in (including the
                // confirmation before arming) with the local bundle.
                Effect::CheckIn { release } => match self.pending_local.clone() {
                    Some(a) => Input::CheckedIn(Some(a)),
                    None => match self.check_in(release) {
                        Ok(a) => {
                            match &a {
                                Some(a) => {
                                    log::info(&format!("check-in: {} assigned", a.release));
                                    self.follow_trust_rotation();
                                }
                                None => log::info(&format!(
                                    "check-in: nothing to install{}",
                                    self.outcome
                                        .server_reason
                                        .as_deref()
                                        .map(|r| format!(" ({r})"))
                                        .unwrap_or_default()
                                )),
                            }
                            Input::CheckedIn(a)
                        }
                        Err(e) => {
                            log::error(&format!("check-in failed: {e}"));
                            self.outcome.error = Some(e.to_string());
                            Input::CheckInFailed { retry_after_s: e.retry_after_s() }
                        }
                    },
                },
                Effect::Stream { slot, resume_from, .. } => self.open_stream(slot, resume_from),
                Effect::Accept => self.write_stream(),
                Effect::Abort => {
                    self.open = None;
                    continue;
                }
                Effect::ReadBack { slot, len } => match read_back(self.slot_path(slot), len) {
                    Ok(sha256) => Input::ReadBack { sha256 },
                    Err(e) => {
                        log::warn(&format!("cannot read slot {} back: {e}", slot.name()));
                        Input::ReadBack { sha256: Sha256Digest([0; 32]) }
                    }
                },
                Effect::Reboot => {
                    if !self.simulate_reboot {
                        if let Some((p, args)) = self.cfg.reboot_command.split_first() {
                            log::info(&format!("reboot: {}", self.cfg.reboot_command.join(" ")));
                            let status = std::process::Command::new(p)
                                .args(args)
                                .status()
                                .with_context(|| format!("cannot run the reboot command {p}"))?;
                            if !status.success() {
                                log::error(&format!("the reboot command {p} failed: {status}"));
                            }
                        }
                    }
                    return Ok(Stop::Reboot);
                }
                Effect::RunHealthChecks { timeout } => {
                    let (ok, detail) = self.health(timeout);
                    Input::HealthDone { ok, detail }
                }
                Effect::Report(e) => match self.report(&e) {
                    Ok(()) => {
                        log::debug(&format!("reported {} {}", e.release, e.kind));
                        Input::Reported
                    }
                    Err(err) => {
                        log::warn(&format!("cannot report {} {} (kept for later): {err}", e.release, e.kind));
                        if self.outcome.error.is_none() {
                            self.outcome.error = Some(err.to_string());
                        }
                        Input::ReportFailed
                    }
                },
            };
            self.inputs.push_back(input);
        }
    }
}

/// The last `max` bytes of a file, as text.
fn tail_of(mut f: std::fs::File, max: usize) -> String {
    use std::io::{Seek, SeekFrom};
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max as u64)));
    let mut buf = Vec::new();
    let _ = f.take(max as u64).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the slot image from byte `skip` on (the bytes before are in the
/// slot already) and syncs every `SYNC_EVERY` bytes, telling the core
/// (`Progress`) and persisting the journal it hands back, so that a power
/// cut resumes from the last sync.
struct Syncing<'a> {
    writer: &'a mut SlotWriter,
    skip: u64,
    since_sync: u64,
    agent: &'a mut Agent,
    journal_path: &'a Path,
    /// Effects other than `Persist` (none today), for the driver loop.
    deferred: &'a mut VecDeque<Effect>,
}

impl Write for Syncing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let skipped = (self.skip.min(buf.len() as u64)) as usize;
        self.skip -= skipped as u64;
        let rest = &buf[skipped..];
        if rest.is_empty() {
            return Ok(buf.len());
        }
        self.writer.write_all(rest)?;
        self.since_sync += rest.len() as u64;
        if self.since_sync >= SYNC_EVERY {
            let synced = self.writer.sync().map_err(std::io::Error::other)?;
            self.since_sync = 0;
            self.agent.handle(now(), Input::Progress { synced });
            while let Some(e) = self.agent.poll_effect() {
                match e {
                    Effect::Persist(j) => {
                        let body = serde_json::to_vec_pretty(&j).map_err(std::io::Error::other)?;
                        crate::fsutil::write_atomic(self.journal_path, &body)?;
                    }
                    other => self.deferred.push_back(other),
                }
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.sync().map(drop).map_err(std::io::Error::other)
    }
}
