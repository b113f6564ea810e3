//! The shell around the core: performs the effects (files, bootloader,
//! HTTP, slots, health checks, reboot) and feeds the results back. Thin by
//! design: every decision is the core's.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::{Digest, Sha256};
use updraft_agent_core::{
    Agent, Assignment, BootRecord, Booted, Effect, Facts, Header, Input, Installed, Journal, Phase, Slot,
};
use updraft_bundle::{Policy, SignedRoot, Target, TrustedRoot};
use updraft_types::{ReleaseId, Sha256Digest, UnixMs};

use crate::bootloader::{booted_from_cmdline, read_cmdline, Bootloader, FileModel};
use crate::config::{BootloaderConfig, Config};
use crate::slots::{read_back, SlotWriter, SYNC_EVERY};

/// Why the shell stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Nothing left to do until the next check-in (one-shot commands).
    Idle,
    /// The core asked for a reboot (after running the reboot command, or in
    /// `simulate_reboot` mode without it).
    Reboot,
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
    /// A local bundle to install (`install FILE`).
    local: Option<PathBuf>,
    /// Its assignment, answered to the next check-in.
    pending_local: Option<Assignment>,
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

impl Shell {
    /// Reads the journal and the boot record, finds out what booted, and starts the core.
    pub fn start(cfg: Config) -> anyhow::Result<Shell> {
        std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("cannot create {}", cfg.data_dir.display()))?;
        let boot = cfg.bootloader();
        let booted = match &cfg.bootloader {
            BootloaderConfig::Uboot { cmdline, .. } | BootloaderConfig::Grub { cmdline, .. } => {
                booted_from_cmdline(&read_cmdline(cmdline)?).context("the kernel command line has no updraft.slot=; hint: install the boot script from docs/agent-bootloaders.md")?
            }
            BootloaderConfig::File { path } => FileModel { path: path.clone() }
                .booted()?
                .unwrap_or(Booted { slot: Slot::A, trial: false, reverted_from: None }),
        };
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
        let journal: Journal = match std::fs::read(cfg.journal_path()) {
            Ok(b) => serde_json::from_slice(&b).context("unreadable journal")?,
            // First start: what the factory image is, from the configuration.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Journal {
                seq: 0,
                installed: Installed {
                    release: cfg.device.release.as_deref().map(ReleaseId::new),
                    security_version: cfg.device.security_version,
                    slot: booted.slot,
                },
                phase: Phase::Idle,
                update: None,
                unreported: vec![],
                refused: vec![],
            },
            Err(e) => return Err(e.into()),
        };
        let token = match &cfg.server {
            Some(s) => Some(
                std::fs::read_to_string(&s.token_file)
                    .with_context(|| format!("cannot read the device token {}", s.token_file.display()))?
                    .trim()
                    .to_owned(),
            ),
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
        let seed = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
        agent.handle(now(), Input::Started { journal: Some(Box::new(journal)), record, booted, facts, seed });
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .new_agent();
        Ok(Shell {
            cfg,
            agent,
            boot,
            booted,
            trust,
            latest_root,
            http,
            token,
            forced_health: None,
            local: None,
            pending_local: None,
            simulate_reboot: false,
        })
    }

    pub fn journal(&self) -> &Journal {
        self.agent.journal()
    }

    /// Installs a local bundle through the same path as a server assignment.
    pub fn install_local(&mut self, file: &Path) -> anyhow::Result<()> {
        let bytes_sha = {
            let mut f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
            let mut sha = Sha256::new();
            std::io::copy(&mut f, &mut HashWriter(&mut sha))?;
            Sha256Digest(sha.finalize().into())
        };
        let info = updraft_bundle::inspect_file(file)?;
        self.local = Some(file.to_path_buf());
        let release = ReleaseId::new(format!("{}@{}", info.manifest.name, info.manifest.version));
        self.agent.handle(now(), Input::Tick);
        // The core asks to check in; answer with the local bundle.
        self.pending_local = Some(Assignment {
            release,
            url: format!("file://{}", file.display()),
            bundle_sha256: bytes_sha,
            bundle_size: std::fs::metadata(file)?.len(),
        });
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

    fn check_in(&self, release: Option<ReleaseId>) -> anyhow::Result<Option<Assignment>> {
        let url = format!("{}{}", self.server()?, updraft_proto::paths::CHECK_IN);
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
        };
        let mut res = self.http.post(&url).header("Authorization", &self.token()?).send_json(&body)?;
        if res.status() != 200 {
            anyhow::bail!("check-in refused: {} {}", res.status(), res.body_mut().read_to_string().unwrap_or_default());
        }
        let r: updraft_proto::CheckInResponse = res.body_mut().read_json()?;
        Ok(r.assignment.map(|a| {
            let url = if a.bundle_url.starts_with('/') {
                format!("{}{}", self.server().unwrap_or_default(), a.bundle_url)
            } else {
                a.bundle_url
            };
            Assignment { release: a.release, url, bundle_sha256: a.sha256, bundle_size: a.size }
        }))
    }

    fn report(&self, e: &updraft_agent_core::Event) -> anyhow::Result<()> {
        if self.cfg.server.is_none() {
            return Ok(()); // local installs have nobody to tell
        }
        let event = match e.kind.as_str() {
            "downloaded" => updraft_proto::EventKind::Downloaded,
            "installed" => updraft_proto::EventKind::Installed,
            "trial_boot" => updraft_proto::EventKind::TrialBoot,
            "committed" => updraft_proto::EventKind::Committed,
            "reverted_boot" => updraft_proto::EventKind::RevertedBoot,
            "reverted_health" => updraft_proto::EventKind::RevertedHealth,
            _ => updraft_proto::EventKind::Failed,
        };
        let url = format!("{}{}", self.server()?, updraft_proto::paths::EVENTS);
        let body = updraft_proto::EventRequest { release: e.release.clone(), event, detail: Some(e.detail.clone()) };
        let res = self.http.post(&url).header("Authorization", &self.token()?).send_json(&body)?;
        match res.status().as_u16() {
            200..=299 => Ok(()),
            // The server will never accept it (e.g. an unknown release): drop it.
            400..=499 => Ok(()),
            s => anyhow::bail!("event refused: {s}"),
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
                    self.trust = trusted;
                    self.latest_root = next;
                }
            }
            Err(e) => {
                eprintln!("warning: the server's trust root version {} does not follow ours: {e}", next.root.version)
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
            let mut req = self.http.get(&a.url).header("Authorization", &self.token()?);
            if have > 0 {
                req = req.header("Range", &format!("bytes={have}-"));
            }
            let mut res = req.call()?;
            let status = res.status().as_u16();
            let append = status == 206;
            if !(status == 200 || append) {
                anyhow::bail!("download refused: {status}");
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

    /// Streams the verified slot image of the staged bundle into `slot`.
    fn stream(&mut self, a: &Assignment, slot: Slot) -> Input {
        let staged = match self.download(a) {
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
        let mut stream = match updraft_bundle::open(
            std::io::BufReader::with_capacity(1 << 20, file),
            &self.trust,
            &Policy::default(),
        ) {
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
        self.agent.handle(now(), Input::Header(header));
        // The verdict comes after the journal records the header.
        loop {
            match self.agent.poll_effect() {
                Some(Effect::Persist(j)) => {
                    if let Err(e) = self.persist(&j) {
                        return Input::StreamFailed { retryable: true, reason: e.to_string() };
                    }
                }
                Some(Effect::Accept) => break,
                Some(Effect::Abort) => return Input::Tick,
                Some(other) => unreachable!("the core answers a header with Accept or Abort, not {other:?}"),
                None => unreachable!("the core answers a header"),
            }
        }
        let path = self.slot_path(slot).to_path_buf();
        let mut writer = match SlotWriter::open(&path, slot == self.booted.slot, 0) {
            Ok(w) => w,
            Err(e) => return Input::StreamFailed { retryable: false, reason: e.to_string() },
        };
        // Images come in manifest order: the slot image goes into the slot,
        // the others are checked and skipped.
        for img in &m.images {
            let result = if img.name == image.name {
                let mut sink = Syncing { writer: &mut writer, since_sync: 0 };
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

    fn persist(&self, j: &Journal) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(j).expect("serialises");
        crate::fsutil::write_atomic(&self.cfg.journal_path(), &body)
    }

    fn health(&self, timeout: Duration) -> (bool, String) {
        if let Some(ok) = self.forced_health {
            return (ok, if ok { "committed by hand".into() } else { "reverted by hand".into() });
        }
        let deadline = Instant::now() + timeout;
        for check in &self.cfg.health_checks {
            let Some((program, args)) = check.command.split_first() else { continue };
            let limit = Duration::from_secs(check.timeout_s).min(deadline.saturating_duration_since(Instant::now()));
            let mut child = match std::process::Command::new(program).args(args).spawn() {
                Ok(c) => c,
                Err(e) => return (false, format!("health check {}: cannot run: {e}", check.name)),
            };
            let (tx, rx) = std::sync::mpsc::channel();
            let id = child.id();
            std::thread::spawn(move || {
                let _ = tx.send(child.wait());
            });
            match rx.recv_timeout(limit) {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => return (false, format!("health check {} failed: {status}", check.name)),
                Ok(Err(e)) => return (false, format!("health check {}: {e}", check.name)),
                Err(_) => {
                    let _ = std::process::Command::new("kill").arg("-9").arg(id.to_string()).status();
                    return (false, format!("health check {} timed out after {} s", check.name, limit.as_secs()));
                }
            }
        }
        (true, String::new())
    }

    /// Performs effects until the core is idle, a reboot is due, or (daemon)
    /// forever. `once`: stop when the core waits for the next check-in.
    pub fn run(&mut self, once: bool) -> anyhow::Result<Stop> {
        loop {
            let Some(effect) = self.agent.poll_effect() else {
                let Some(t) = self.agent.poll_timeout() else {
                    anyhow::bail!("the agent waits for nothing; this is a bug");
                };
                let n = now();
                if t > n {
                    if once {
                        return Ok(Stop::Idle);
                    }
                    std::thread::sleep(Duration::from_millis((t.0 - n.0).min(60_000)));
                }
                self.agent.handle(now(), Input::Tick);
                continue;
            };
            let input = match effect {
                Effect::Persist(j) => {
                    self.persist(&j).context("cannot write the journal")?;
                    continue;
                }
                Effect::SetBootRecord(r) => Input::RecordWritten(self.boot.write(&r)?),
                // A local install answers every check-in (including the
                // confirmation before arming) with the local bundle.
                Effect::CheckIn { release } => match self.pending_local.clone() {
                    Some(a) => Input::CheckedIn(Some(a)),
                    None => match self.check_in(release) {
                        Ok(a) => {
                            if a.is_some() {
                                self.follow_trust_rotation();
                            }
                            Input::CheckedIn(a)
                        }
                        Err(_) => Input::CheckInFailed,
                    },
                },
                Effect::Stream { url, slot, .. } => {
                    let a = self.agent.journal().update.as_ref().map(|u| u.assignment.clone()).unwrap_or(Assignment {
                        release: ReleaseId::new("?"),
                        url,
                        bundle_sha256: Sha256Digest([0; 32]),
                        bundle_size: 0,
                    });
                    self.stream(&a, slot)
                }
                Effect::Accept | Effect::Abort => continue,
                Effect::ReadBack { slot, len } => match read_back(self.slot_path(slot), len) {
                    Ok(sha256) => Input::ReadBack { sha256 },
                    Err(_) => Input::ReadBack { sha256: Sha256Digest([0; 32]) },
                },
                Effect::Reboot => {
                    if !self.simulate_reboot {
                        if let Some((p, args)) = self.cfg.reboot_command.split_first() {
                            std::process::Command::new(p)
                                .args(args)
                                .status()
                                .context("cannot run the reboot command")?;
                        }
                    }
                    return Ok(Stop::Reboot);
                }
                Effect::RunHealthChecks { timeout } => {
                    let (ok, detail) = self.health(timeout);
                    Input::HealthDone { ok, detail }
                }
                Effect::Report(e) => match self.report(&e) {
                    Ok(()) => Input::Reported,
                    Err(_) => Input::ReportFailed,
                },
            };
            self.agent.handle(now(), input);
        }
    }
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

/// Syncs the slot every `SYNC_EVERY` bytes.
struct Syncing<'a> {
    writer: &'a mut SlotWriter,
    since_sync: u64,
}

impl Write for Syncing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.writer.write(buf)?;
        self.since_sync += n as u64;
        if self.since_sync >= SYNC_EVERY {
            self.writer.sync().map_err(std::io::Error::other)?;
            self.since_sync = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.sync().map(drop).map_err(std::io::Error::other)
    }
}
