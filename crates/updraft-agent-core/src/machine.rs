//! The agent.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use updraft_types::{ReleaseId, Sha256Digest, UnixMs};

use crate::boot::{BootRecord, Booted, Slot};

/// Download attempts per update before it fails.
pub const MAX_DOWNLOAD_ATTEMPTS: u32 = 8;
/// Backoff after the first failure; doubled each time, with jitter.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// How long the health checks may take.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(300);
/// Releases refused or reverted that are remembered (not retried automatically).
pub const MAX_REFUSED: usize = 16;
/// Reports kept while the server is unreachable.
pub const MAX_UNREPORTED: usize = 64;

/// What the device is and has, for the policy checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub family: String,
    pub hardware: String,
    /// Versions of other components (`bootloader` → 1.4.2).
    pub components: Vec<(String, semver::Version)>,
}

/// An assignment from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub release: ReleaseId,
    pub url: String,
    pub bundle_sha256: Sha256Digest,
    pub bundle_size: u64,
}

/// A bundle's header, after the shell verified its signatures against the
/// trust root (and walked any rotation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub release: ReleaseId,
    pub family: String,
    pub hardware: Vec<String>,
    pub security_version: u64,
    pub requires: Vec<(String, String)>,
    /// The slot image.
    pub image_size: u64,
    pub image_sha256: Sha256Digest,
}

/// What the device reports to the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub release: ReleaseId,
    /// `downloaded`, `installed`, `trial_boot`, `committed`, `reverted_boot`,
    /// `reverted_health`, `failed`.
    pub kind: String,
    pub detail: String,
}

/// The update in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub assignment: Assignment,
    pub target: Slot,
    pub from: Slot,
    pub header: Option<Header>,
    /// Image bytes written and synced to the target slot.
    pub synced: u64,
    pub attempts: u32,
}

/// Where an update stands. Persisted before every effect that depends on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Idle,
    /// Writing the image into the (invalidated) target slot.
    Downloading,
    /// The image is in the slot, flushed and read back: waiting for the go.
    Staged,
    /// About to flip the boot flags.
    Arming,
    /// The flags are flipped: the next boot is the trial.
    Armed,
    /// Health checks failed: going back.
    Reverting,
}

/// The installed firmware.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub release: Option<ReleaseId>,
    pub security_version: u64,
    pub slot: Slot,
}

/// The journal: everything the agent must remember across a power loss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub seq: u64,
    pub installed: Installed,
    pub phase: Phase,
    pub update: Option<Update>,
    /// Events not yet acknowledged by the server, oldest first.
    pub unreported: Vec<Event>,
    /// Releases not to try again automatically (refused or reverted).
    pub refused: Vec<ReleaseId>,
}

/// Inputs from the shell.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Start-up: the journal as read (none on first start), the boot record,
    /// what booted, and the device facts.
    Started {
        journal: Option<Box<Journal>>,
        record: BootRecord,
        booted: Booted,
        facts: Facts,
        seed: u64,
    },
    /// Time passed (at `poll_timeout`).
    Tick,
    /// The server's answer to a check-in (`None`: nothing to install).
    CheckedIn(Option<Assignment>),
    CheckInFailed,
    /// The bundle's header, verified (after `Effect::Stream`).
    Header(Header),
    /// The shell synced this many image bytes to the slot.
    Progress {
        synced: u64,
    },
    /// The image is fully written and its digest matched.
    StreamDone,
    /// The download failed (network: retryable) or the bundle was refused
    /// (signature, digest, format: not retryable).
    StreamFailed {
        retryable: bool,
        reason: String,
    },
    /// The digest read back from the slot.
    ReadBack {
        sha256: Sha256Digest,
    },
    /// The boot record as read back after `SetBootRecord`.
    RecordWritten(BootRecord),
    /// The health checks' verdict.
    HealthDone {
        ok: bool,
        detail: String,
    },
    /// The server acknowledged the oldest unreported event.
    Reported,
    ReportFailed,
}

/// Effects for the shell, performed in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Write the journal atomically (temp file, fsync, rename, fsync folder).
    Persist(Box<Journal>),
    /// Write the boot record in one atomic step, read it back, answer `RecordWritten`.
    SetBootRecord(BootRecord),
    /// Ask the server what to run.
    CheckIn {
        release: Option<ReleaseId>,
    },
    /// Download the bundle from `resume_from` image bytes on, verify it, and
    /// stream the slot image into `slot`, syncing as it goes (`Progress`).
    /// The shell answers `Header` first and waits for `Accept` or `Abort`.
    Stream {
        url: String,
        slot: Slot,
        resume_from: u64,
    },
    Accept,
    Abort,
    /// Read `len` bytes of `slot` back from the device and hash them.
    ReadBack {
        slot: Slot,
        len: u64,
    },
    Reboot,
    RunHealthChecks {
        timeout: Duration,
    },
    /// Send the oldest unreported event.
    Report(Event),
}

/// What the agent is waiting for (not persisted: derived on start-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Nothing,
    CheckIn,
    Header,
    Stream,
    ReadBack,
    Record,
    Health,
    Reboot,
    Backoff,
    /// Staged: a check-in confirms the assignment before arming.
    Confirm,
}

/// The agent.
pub struct Agent {
    journal: Journal,
    record: BootRecord,
    facts: Facts,
    wait: Wait,
    now: UnixMs,
    next_check_in: UnixMs,
    poll_interval: Duration,
    rng: u64,
    reporting: bool,
    effects: VecDeque<Effect>,
    started: bool,
}

/// Why a header is not acceptable, or `None`.
fn refuse(h: &Header, a: &Assignment, facts: &Facts, installed: &Installed) -> Option<String> {
    if h.release != a.release {
        return Some(format!("the bundle is {} but {} was assigned", h.release, a.release));
    }
    if h.family != facts.family {
        return Some(format!("the bundle is for family {}, this device is {}", h.family, facts.family));
    }
    if !h.hardware.contains(&facts.hardware) {
        return Some(format!("the bundle does not support hardware revision {}", facts.hardware));
    }
    if h.security_version < installed.security_version {
        return Some(format!(
            "security version {} is below the installed {}; refusing a downgrade",
            h.security_version, installed.security_version
        ));
    }
    for (component, req) in &h.requires {
        let Ok(req) = semver::VersionReq::parse(req) else {
            return Some(format!("unreadable requirement {component} {req}"));
        };
        match facts.components.iter().find(|(c, _)| c == component) {
            Some((_, v)) if req.matches(v) => {}
            Some((_, v)) => return Some(format!("requires {component} {req}, this device has {v}")),
            None => return Some(format!("requires {component} {req}, this device reports none")),
        }
    }
    None
}

impl Agent {
    /// A new agent; nothing happens until `Input::Started`.
    pub fn new(poll_interval: Duration) -> Agent {
        Agent {
            journal: Journal {
                seq: 0,
                installed: Installed { release: None, security_version: 0, slot: Slot::A },
                phase: Phase::Idle,
                update: None,
                unreported: Vec::new(),
                refused: Vec::new(),
            },
            record: BootRecord::fresh(Slot::A),
            facts: Facts { family: String::new(), hardware: String::new(), components: Vec::new() },
            wait: Wait::Nothing,
            now: UnixMs(0),
            next_check_in: UnixMs(0),
            poll_interval,
            rng: 1,
            reporting: false,
            effects: VecDeque::new(),
            started: false,
        }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When to send `Tick` next.
    pub fn poll_timeout(&self) -> Option<UnixMs> {
        match self.wait {
            Wait::Nothing | Wait::Backoff => Some(self.next_check_in),
            _ => None,
        }
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        // SplitMix64 from the injected seed: up to +25%.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        d + d.mul_f64((z >> 11) as f64 / (1u64 << 53) as f64 * 0.25)
    }

    fn persist(&mut self) {
        self.journal.seq += 1;
        self.effects.push_back(Effect::Persist(Box::new(self.journal.clone())));
    }

    fn set_record(&mut self, r: BootRecord) {
        debug_assert!(r.bootable(), "a boot record must always select a bootable slot: {r:?}");
        self.wait = Wait::Record;
        self.effects.push_back(Effect::SetBootRecord(r));
    }

    fn report(&mut self, kind: &str, detail: String) {
        let release = self
            .journal
            .update
            .as_ref()
            .map(|u| u.assignment.release.clone())
            .or_else(|| self.journal.installed.release.clone())
            .unwrap_or_else(|| ReleaseId::new("unknown"));
        if self.journal.unreported.len() >= MAX_UNREPORTED {
            self.journal.unreported.remove(0);
        }
        self.journal.unreported.push(Event { release, kind: kind.to_owned(), detail });
    }

    fn flush_reports(&mut self) {
        // Not while the shell streams an image: it waits for Accept or Abort.
        if !self.reporting && !matches!(self.wait, Wait::Header | Wait::Stream) {
            if let Some(e) = self.journal.unreported.first().cloned() {
                self.reporting = true;
                self.effects.push_back(Effect::Report(e));
            }
        }
    }

    fn remember_refused(&mut self, r: ReleaseId) {
        if !self.journal.refused.contains(&r) {
            if self.journal.refused.len() >= MAX_REFUSED {
                self.journal.refused.remove(0);
            }
            self.journal.refused.push(r);
        }
    }

    fn idle(&mut self) {
        self.journal.phase = Phase::Idle;
        self.journal.update = None;
        self.wait = Wait::Nothing;
        self.next_check_in = self.now.plus(self.jitter(self.poll_interval));
    }

    fn fail(&mut self, reason: String, refuse_release: bool) {
        if let Some(u) = &self.journal.update {
            let r = u.assignment.release.clone();
            if refuse_release {
                self.remember_refused(r);
            }
        }
        self.report("failed", reason);
        self.idle();
        self.persist();
        self.flush_reports();
    }

    fn stream(&mut self) {
        let u = self.journal.update.as_ref().expect("an update");
        self.wait = Wait::Header;
        self.effects.push_back(Effect::Stream { url: u.assignment.url.clone(), slot: u.target, resume_from: u.synced });
    }

    fn arm(&mut self) {
        self.journal.phase = Phase::Arming;
        self.persist();
        let target = self.journal.update.as_ref().expect("an update").target;
        let r = self.record.armed(target);
        self.set_record(r);
    }

    /// Feeds one input at `now`.
    pub fn handle(&mut self, now: UnixMs, input: Input) {
        self.now = self.now.max(now);
        match input {
            Input::Started { journal, record, booted, facts, seed } => self.start(journal, record, booted, facts, seed),
            _ if !self.started => {}
            Input::Tick => {
                if matches!(self.wait, Wait::Nothing | Wait::Backoff) && self.now >= self.next_check_in {
                    if self.wait == Wait::Backoff {
                        self.stream();
                    } else {
                        self.wait = Wait::CheckIn;
                        self.effects.push_back(Effect::CheckIn { release: self.journal.installed.release.clone() });
                    }
                }
                self.flush_reports();
            }
            Input::CheckedIn(a) => self.checked_in(a),
            Input::CheckInFailed => {
                if self.wait == Wait::Confirm {
                    // Staged: keep the image, ask again later.
                    self.wait = Wait::Nothing;
                    self.next_check_in = self.now.plus(self.jitter(self.poll_interval));
                } else if self.wait == Wait::CheckIn {
                    self.idle();
                }
            }
            Input::Header(h) => {
                if self.wait != Wait::Header {
                    return;
                }
                let u = self.journal.update.as_ref().expect("an update");
                if let Some(reason) = refuse(&h, &u.assignment, &self.facts, &self.journal.installed) {
                    self.effects.push_back(Effect::Abort);
                    self.fail(reason, true);
                    return;
                }
                let u = self.journal.update.as_mut().expect("an update");
                if u.header.as_ref().is_some_and(|old| old != &h) {
                    // Resuming a different bundle than what is in the slot: start over.
                    u.synced = 0;
                }
                u.header = Some(h);
                self.persist();
                self.wait = Wait::Stream;
                self.effects.push_back(Effect::Accept);
            }
            Input::Progress { synced } => {
                if self.wait == Wait::Stream {
                    if let Some(u) = self.journal.update.as_mut() {
                        u.synced = synced;
                    }
                    self.persist();
                }
            }
            Input::StreamDone => {
                if self.wait != Wait::Stream {
                    return;
                }
                let u = self.journal.update.as_mut().expect("an update");
                let h = u.header.clone().expect("a header before the image");
                u.synced = h.image_size;
                let target = u.target;
                self.report("downloaded", String::new());
                self.persist();
                self.wait = Wait::ReadBack;
                self.effects.push_back(Effect::ReadBack { slot: target, len: h.image_size });
                self.flush_reports();
            }
            Input::StreamFailed { retryable, reason } => {
                if !matches!(self.wait, Wait::Header | Wait::Stream) {
                    return;
                }
                let u = self.journal.update.as_mut().expect("an update");
                u.attempts += 1;
                if retryable && u.attempts < MAX_DOWNLOAD_ATTEMPTS {
                    let backoff = (BACKOFF_BASE * 2u32.saturating_pow(u.attempts - 1)).min(BACKOFF_MAX);
                    self.persist();
                    self.wait = Wait::Backoff;
                    self.next_check_in = self.now.plus(self.jitter(backoff));
                } else {
                    self.fail(reason, !retryable);
                }
            }
            Input::ReadBack { sha256 } => {
                if self.wait != Wait::ReadBack {
                    return;
                }
                let u = self.journal.update.as_ref().expect("an update");
                let expected = u.header.as_ref().expect("a header").image_sha256;
                if sha256 != expected {
                    // The slot does not hold what was written: write it again.
                    self.journal.update.as_mut().expect("an update").synced = 0;
                    self.journal.phase = Phase::Downloading;
                    self.persist();
                    self.stream();
                    return;
                }
                self.journal.phase = Phase::Staged;
                self.report("installed", String::new());
                self.persist();
                self.flush_reports();
                // Confirm the assignment still stands before flipping the flags.
                self.wait = Wait::Confirm;
                self.effects.push_back(Effect::CheckIn { release: self.journal.installed.release.clone() });
            }
            Input::RecordWritten(r) => self.record_written(r),
            Input::HealthDone { ok, detail } => {
                if self.wait != Wait::Health {
                    return;
                }
                let target = self.journal.update.as_ref().expect("an update").target;
                if ok {
                    // Commit: the record first, then the journal (recovery
                    // reads a committed record as the commit).
                    self.set_record(self.record.committed(target));
                } else {
                    self.journal.phase = Phase::Reverting;
                    self.report("reverted_health", detail);
                    self.persist();
                    self.set_record(self.record.reverted(target));
                }
            }
            Input::Reported => {
                self.reporting = false;
                if !self.journal.unreported.is_empty() {
                    self.journal.unreported.remove(0);
                    self.persist();
                }
                self.flush_reports();
            }
            Input::ReportFailed => {
                self.reporting = false;
            }
        }
    }

    fn checked_in(&mut self, a: Option<Assignment>) {
        match self.wait {
            Wait::CheckIn => {
                self.wait = Wait::Nothing;
                let Some(a) = a else {
                    self.idle();
                    return;
                };
                if Some(&a.release) == self.journal.installed.release.as_ref()
                    || self.journal.refused.contains(&a.release)
                {
                    self.idle();
                    return;
                }
                let from = self.journal.installed.slot;
                let target = from.other();
                self.journal.update =
                    Some(Update { assignment: a, target, from, header: None, synced: 0, attempts: 0 });
                self.journal.phase = Phase::Downloading;
                self.persist();
                // The target must be unbootable before a byte is written to it.
                let r = self.record.invalidated(target);
                self.set_record(r);
            }
            Wait::Confirm => {
                let u = self.journal.update.as_ref().expect("an update");
                if a.as_ref().map(|a| &a.release) == Some(&u.assignment.release) {
                    self.arm();
                } else {
                    // Cancelled before the flags were flipped: honoured.
                    self.report("failed", "cancelled by the server before the trial boot".into());
                    self.idle();
                    self.persist();
                    self.flush_reports();
                }
            }
            _ => {}
        }
    }

    fn record_written(&mut self, r: BootRecord) {
        if self.wait != Wait::Record {
            return;
        }
        self.record = r;
        match self.journal.phase {
            Phase::Downloading => self.stream(),
            Phase::Arming => {
                self.journal.phase = Phase::Armed;
                self.persist();
                self.wait = Wait::Reboot;
                self.effects.push_back(Effect::Reboot);
            }
            Phase::Armed => {
                // The commit record is written: the update is done.
                self.commit_done();
            }
            Phase::Reverting => {
                self.wait = Wait::Reboot;
                self.effects.push_back(Effect::Reboot);
            }
            Phase::Idle | Phase::Staged => self.wait = Wait::Nothing,
        }
    }

    fn commit_done(&mut self) {
        let u = self.journal.update.clone().expect("an update");
        let h = u.header.expect("a header");
        self.journal.installed = Installed {
            release: Some(u.assignment.release.clone()),
            security_version: h.security_version,
            slot: u.target,
        };
        self.report("committed", String::new());
        self.idle();
        self.persist();
        self.flush_reports();
    }

    /// Start-up: resume from the journal and what the bootloader says.
    fn start(&mut self, journal: Option<Box<Journal>>, record: BootRecord, booted: Booted, facts: Facts, seed: u64) {
        self.started = true;
        self.facts = facts;
        self.record = record;
        self.rng = seed | 1;
        self.effects.clear();
        self.reporting = false;
        self.wait = Wait::Nothing;
        self.next_check_in = self.now;
        let Some(j) = journal else {
            // First start: the booted slot is what is installed.
            self.journal.installed.slot = booted.slot;
            self.persist();
            return;
        };
        self.journal = *j;
        let phase = self.journal.phase.clone();
        let update = self.journal.update.clone();
        match (phase, update) {
            (Phase::Idle, _) | (_, None) => {
                self.journal.phase = Phase::Idle;
                self.journal.update = None;
                if booted.slot != self.journal.installed.slot && record.good[booted.slot.index()] {
                    // The bootloader fell back to the other good slot.
                    self.journal.installed.slot = booted.slot;
                }
            }
            (Phase::Downloading, Some(u)) => {
                // The old slot runs; the target is invalid: resume the download.
                if booted.slot == u.from && !record.good[u.target.index()] && !record.trial_armed {
                    self.persist();
                    self.stream();
                    return;
                }
                self.idle();
            }
            (Phase::Staged, Some(_)) => {
                // Verified in the slot: confirm and arm.
                self.wait = Wait::Confirm;
                self.effects.push_back(Effect::CheckIn { release: self.journal.installed.release.clone() });
            }
            (Phase::Arming | Phase::Armed, Some(u)) => {
                if booted.slot == u.target && booted.trial {
                    // The trial boot: check health.
                    self.journal.phase = Phase::Armed;
                    self.report("trial_boot", String::new());
                    self.persist();
                    self.wait = Wait::Health;
                    self.effects.push_back(Effect::RunHealthChecks { timeout: HEALTH_TIMEOUT });
                } else if booted.slot == u.target && record.good[u.target.index()] && !record.trial_armed {
                    // Power was lost after the commit record, before the journal.
                    self.record = record;
                    self.commit_done();
                    return;
                } else if booted.reverted_from == Some(u.target) || record.last_revert == Some(u.target) {
                    // The trial never came up healthy: the bootloader reverted.
                    self.remember_refused(u.assignment.release.clone());
                    self.report("reverted_boot", format!("no healthy boot in {} attempts", crate::TRIAL_ATTEMPTS));
                    self.idle();
                } else if booted.slot == u.from && !record.trial_armed && !record.good[u.target.index()] {
                    if self.journal.phase == Phase::Arming {
                        // The flags were never flipped: arm again.
                        self.arm();
                        return;
                    }
                    // Reverted on purpose (record written, journal not).
                    self.remember_refused(u.assignment.release.clone());
                    self.report("reverted_health", "health checks failed".into());
                    self.idle();
                } else {
                    self.idle();
                }
            }
            (Phase::Reverting, Some(u)) => {
                if booted.slot == u.target && booted.trial {
                    // Power lost before the revert record: write it again.
                    self.persist();
                    self.set_record(record.reverted(u.target));
                    return;
                }
                self.remember_refused(u.assignment.release.clone());
                self.idle();
            }
        }
        self.persist();
        self.flush_reports();
    }
}
