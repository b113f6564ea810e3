//! The agent.
//!
//! Each persisted [`Phase`] carries the data it needs (quinn-proto style):
//! an update in progress cannot lack its assignment, a staged image cannot
//! lack its verified header. What the agent waits for (not persisted) is
//! derived on start-up from the journal, the boot record and what booted;
//! every combination of the three leads to a defined recovery, never a panic.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use updraft_types::{InstallEvent, ReleaseId, Sha256Digest, UnixMs};

use crate::boot::{BootRecord, Booted, Slot};

/// Download attempts per update before it fails.
pub const MAX_DOWNLOAD_ATTEMPTS: u32 = 8;
/// Backoff after the first failure; doubled each time, with jitter.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest a server's `Retry-After` delays the next check-in (a day:
/// a wrong header must not silence a device for good).
pub const MAX_RETRY_AFTER_S: u32 = 86_400;
/// Longest backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// How long the health checks may take.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(300);
/// Bundles refused or reverted that are remembered (not retried automatically).
pub const MAX_REFUSED: usize = 16;
/// Reports kept while the server is unreachable.
pub const MAX_UNREPORTED: usize = 64;
/// Times the agent asks for the reboot into an armed trial and finds the
/// device still on the old slot before it disarms the trial: a reboot
/// command that does not reboot must not wedge the device.
pub const MAX_REBOOT_REQUESTS: u32 = 3;
/// Longest detail of an event (a failure reason, a health check's output).
pub const MAX_DETAIL_BYTES: usize = 64 * 1024;

/// What the device is and has, for the policy checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    pub family: String,
    pub hardware: String,
    /// Versions of other components (`bootloader` → 1.4.2).
    pub components: Vec<(String, semver::Version)>,
}

/// An assignment from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub release: ReleaseId,
    pub url: String,
    pub bundle_sha256: Sha256Digest,
    pub bundle_size: u64,
}

/// A bundle's header, after the shell verified its signatures against the
/// trust root (and walked any rotation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub release: ReleaseId,
    pub kind: InstallEvent,
    pub detail: String,
}

/// A bundle the agent will not install again on its own, keyed by the
/// bundle's digest: a tampered copy never poisons a good copy of the same
/// release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    pub bundle_sha256: Sha256Digest,
    pub release: ReleaseId,
    pub reason: String,
}

/// What was assigned and where it goes: fixed for the whole update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Update {
    pub assignment: Assignment,
    /// The inactive slot the image goes into.
    pub target: Slot,
    /// The slot that ran when the update started (and that a revert returns to).
    pub from: Slot,
}

/// Writing the image into the (invalidated) target slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Download {
    pub update: Update,
    /// The verified header, once the shell has read it.
    pub header: Option<Header>,
    /// Image bytes written and synced to the target slot.
    pub synced: u64,
    /// Failed attempts so far (downloads and read-backs).
    pub attempts: u32,
}

/// The image is in the slot, synced and read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub update: Update,
    pub header: Header,
}

/// The boot flags are flipped: the next boot is the trial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trial {
    pub update: Update,
    pub header: Header,
    /// Reboots asked for after which the device still ran the old slot.
    #[serde(default)]
    pub reboots: u32,
}

/// Where an update stands. Persisted before every effect that depends on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    Idle,
    /// Writing the image into the (invalidated) target slot.
    Downloading(Download),
    /// The image is in the slot, flushed and read back: waiting for the go.
    Staged(Verified),
    /// About to flip the boot flags.
    Arming(Verified),
    /// The flags are flipped: the next boot is the trial.
    Armed(Trial),
    /// Health checks failed: going back.
    Reverting(Verified),
}

impl Phase {
    /// The update in progress, if any.
    pub fn update(&self) -> Option<&Update> {
        match self {
            Phase::Idle => None,
            Phase::Downloading(d) => Some(&d.update),
            Phase::Staged(v) | Phase::Arming(v) | Phase::Reverting(v) => Some(&v.update),
            Phase::Armed(t) => Some(&t.update),
        }
    }

    /// Image bytes in the target slot (synced).
    pub fn synced(&self) -> u64 {
        match self {
            Phase::Idle => 0,
            Phase::Downloading(d) => d.synced,
            Phase::Staged(v) | Phase::Arming(v) | Phase::Reverting(v) => v.header.image_size,
            Phase::Armed(t) => t.header.image_size,
        }
    }

    /// The phase's name, as in the journal.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Downloading(_) => "downloading",
            Phase::Staged(_) => "staged",
            Phase::Arming(_) => "arming",
            Phase::Armed(_) => "armed",
            Phase::Reverting(_) => "reverting",
        }
    }
}

/// The installed firmware.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Installed {
    pub release: Option<ReleaseId>,
    pub security_version: u64,
    pub slot: Slot,
}

/// The journal: everything the agent must remember across a power loss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    pub seq: u64,
    pub installed: Installed,
    pub phase: Phase,
    /// Events not yet acknowledged by the server, oldest first.
    pub unreported: Vec<Event>,
    /// Bundles not to try again automatically (refused or reverted).
    pub refused: Vec<Refusal>,
}

impl Journal {
    /// The journal of a device that runs `installed` and has done nothing yet.
    pub fn new(installed: Installed) -> Journal {
        Journal { seq: 0, installed, phase: Phase::Idle, unreported: Vec::new(), refused: Vec::new() }
    }

    /// The update in progress, if any.
    pub fn update(&self) -> Option<&Update> {
        self.phase.update()
    }
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
    /// The check-in failed; the server may have said when to ask again
    /// (429 or 503 with `Retry-After`, bounded by [`MAX_RETRY_AFTER_S`]).
    CheckInFailed {
        retry_after_s: Option<u32>,
    },
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
    /// Writing the boot record failed (the tool failed, or the read-back differed).
    RecordFailed {
        reason: String,
    },
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
    /// Write the boot record in one atomic step, read it back, answer
    /// `RecordWritten` (or `RecordFailed`).
    SetBootRecord(BootRecord),
    /// Ask the server what to run.
    CheckIn {
        release: Option<ReleaseId>,
    },
    /// Download the bundle, verify it, and answer `Header`; then wait for
    /// `Accept` (stream the slot image into `slot` from image byte
    /// `resume_from` on, syncing as it goes and answering `Progress`, then
    /// `StreamDone` or `StreamFailed`) or `Abort`.
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

/// What the shell should tell the people watching (logs, the one-shot
/// commands' output). The core does not log; it says what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// An event of the update (also queued for the server).
    Event(Event),
    /// A step of the update, or why an assignment is not taken.
    Info(String),
    /// A recovery from an unexpected state.
    Warn(String),
    /// An assignment not taken (the bundle was refused before), and why.
    Skipped(String),
}

/// What to do once the boot record is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// Start (or resume) streaming into the invalidated target.
    Stream,
    /// The trial is armed: persist `Armed` and reboot.
    Reboot,
    /// The commit record is written: finish the commit.
    Commit,
    /// A revert record is written: reboot into the old slot.
    RebootBack,
    /// Nothing more: wait for the next check-in.
    Rest,
    /// Read the staged image back (after a restart).
    ReadBack { slot: Slot, len: u64 },
}

/// What the agent is waiting for (not persisted: derived on start-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Nothing,
    CheckIn,
    Header,
    Stream,
    ReadBack,
    Record(Then),
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
    booted: Booted,
    facts: Facts,
    wait: Wait,
    now: UnixMs,
    next_check_in: UnixMs,
    poll_interval: Duration,
    rng: u64,
    reporting: bool,
    effects: VecDeque<Effect>,
    notices: VecDeque<Notice>,
    started: bool,
    /// The record asked for last, and a write to retry at the next tick.
    requested: Option<(BootRecord, Then)>,
    retry: Option<(BootRecord, Then)>,
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

/// Cuts `detail` to [`MAX_DETAIL_BYTES`], keeping the end (the tail of a log
/// says most).
fn bounded(mut detail: String) -> String {
    if detail.len() > MAX_DETAIL_BYTES {
        let mut cut = detail.len() - MAX_DETAIL_BYTES;
        while !detail.is_char_boundary(cut) {
            cut += 1;
        }
        detail.drain(..cut);
    }
    detail
}

impl Agent {
    /// A new agent; nothing happens until `Input::Started`.
    pub fn new(poll_interval: Duration) -> Agent {
        Agent {
            journal: Journal::new(Installed { release: None, security_version: 0, slot: Slot::A }),
            record: BootRecord::fresh(Slot::A),
            booted: Booted { slot: Slot::A, trial: false, reverted_from: None },
            facts: Facts { family: String::new(), hardware: String::new(), components: Vec::new() },
            wait: Wait::Nothing,
            now: UnixMs(0),
            next_check_in: UnixMs(0),
            poll_interval,
            rng: 1,
            reporting: false,
            effects: VecDeque::new(),
            notices: VecDeque::new(),
            started: false,
            requested: None,
            retry: None,
        }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The boot record as the agent last wrote or read it.
    pub fn record(&self) -> BootRecord {
        self.record
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// What happened since the last call, for logs.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// When to send `Tick` next; `None` while an effect's answer is awaited.
    pub fn poll_timeout(&self) -> Option<UnixMs> {
        match self.wait {
            Wait::Nothing | Wait::Backoff => Some(self.next_check_in),
            _ => None,
        }
    }

    /// Whether the agent waits for the next check-in with nothing in progress.
    pub fn is_idle(&self) -> bool {
        self.wait == Wait::Nothing && self.journal.phase == Phase::Idle
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

    fn info(&mut self, message: String) {
        self.notices.push_back(Notice::Info(message));
    }

    fn warn(&mut self, message: String) {
        self.notices.push_back(Notice::Warn(message));
    }

    fn persist(&mut self) {
        self.journal.seq += 1;
        self.effects.push_back(Effect::Persist(Box::new(self.journal.clone())));
    }

    fn set_record(&mut self, r: BootRecord, then: Then) {
        debug_assert!(r.bootable(), "a boot record must always select a bootable slot: {r:?}");
        self.wait = Wait::Record(then);
        self.requested = Some((r, then));
        self.effects.push_back(Effect::SetBootRecord(r));
    }

    fn event(&mut self, release: ReleaseId, kind: InstallEvent, detail: String) {
        if self.journal.unreported.len() >= MAX_UNREPORTED {
            self.journal.unreported.remove(0);
        }
        let e = Event { release, kind, detail: bounded(detail) };
        self.notices.push_back(Notice::Event(e.clone()));
        self.journal.unreported.push(e);
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

    fn remember_refused(&mut self, a: &Assignment, reason: &str) {
        if self.journal.refused.iter().any(|r| r.bundle_sha256 == a.bundle_sha256) {
            return;
        }
        if self.journal.refused.len() >= MAX_REFUSED {
            self.journal.refused.remove(0);
        }
        self.journal.refused.push(Refusal {
            bundle_sha256: a.bundle_sha256,
            release: a.release.clone(),
            reason: bounded(reason.to_owned()),
        });
    }

    fn idle(&mut self) {
        self.journal.phase = Phase::Idle;
        self.wait = Wait::Nothing;
        self.next_check_in = self.now.plus(self.jitter(self.poll_interval));
    }

    /// The update ends before its trial: reported, remembered if `refuse`,
    /// back to idle. The target slot stays invalid.
    fn fail(&mut self, update: &Update, reason: String, refuse: bool) {
        if refuse {
            self.remember_refused(&update.assignment, &reason);
        }
        self.event(update.assignment.release.clone(), InstallEvent::Failed, reason);
        self.idle();
        self.persist();
        self.flush_reports();
    }

    fn stream(&mut self) {
        let Phase::Downloading(d) = &self.journal.phase else {
            return;
        };
        let effect =
            Effect::Stream { url: d.update.assignment.url.clone(), slot: d.update.target, resume_from: d.synced };
        self.wait = Wait::Header;
        self.effects.push_back(effect);
    }

    fn arm(&mut self, v: Verified) {
        let target = v.update.target;
        self.journal.phase = Phase::Arming(v);
        self.persist();
        self.set_record(self.record.armed(target), Then::Reboot);
    }

    /// Feeds one input at `now`.
    pub fn handle(&mut self, now: UnixMs, input: Input) {
        self.now = self.now.max(now);
        match input {
            Input::Started { journal, record, booted, facts, seed } => self.start(journal, record, booted, facts, seed),
            _ if !self.started => {}
            Input::Tick => {
                if matches!(self.wait, Wait::Nothing | Wait::Backoff) && self.now >= self.next_check_in {
                    if let Some((r, then)) = self.retry.take() {
                        self.set_record(r, then);
                    } else if self.wait == Wait::Backoff {
                        self.stream();
                    } else if let Phase::Staged(_) = self.journal.phase {
                        // Staged: the check-in confirms the assignment before arming.
                        self.wait = Wait::Confirm;
                        self.effects.push_back(Effect::CheckIn { release: self.journal.installed.release.clone() });
                    } else {
                        self.wait = Wait::CheckIn;
                        self.effects.push_back(Effect::CheckIn { release: self.journal.installed.release.clone() });
                    }
                }
                self.flush_reports();
            }
            Input::CheckedIn(a) => self.checked_in(a),
            Input::CheckInFailed { retry_after_s } => {
                // Not before the server asked, and not before the next poll.
                let asked = Duration::from_secs(u64::from(retry_after_s.unwrap_or(0).min(MAX_RETRY_AFTER_S)));
                let wait = self.jitter(self.poll_interval).max(asked);
                match self.wait {
                    Wait::Confirm => {
                        // Staged: keep the image, ask again later.
                        self.wait = Wait::Nothing;
                        self.next_check_in = self.now.plus(wait);
                    }
                    Wait::CheckIn => {
                        self.wait = Wait::Nothing;
                        self.next_check_in = self.now.plus(wait);
                    }
                    _ => {}
                }
            }
            Input::Header(h) => self.header(h),
            Input::Progress { synced } => {
                if self.wait == Wait::Stream {
                    if let Phase::Downloading(d) = &mut self.journal.phase {
                        d.synced = synced;
                        self.persist();
                    }
                }
            }
            Input::StreamDone => self.stream_done(),
            Input::StreamFailed { retryable, reason } => self.stream_failed(retryable, reason),
            Input::ReadBack { sha256 } => self.read_back(sha256),
            Input::RecordWritten(r) => self.record_written(r),
            Input::RecordFailed { reason } => self.record_failed(reason),
            Input::HealthDone { ok, detail } => self.health_done(ok, detail),
            Input::Reported => {
                if !self.reporting {
                    return;
                }
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

    fn header(&mut self, h: Header) {
        let Phase::Downloading(d) = &self.journal.phase else {
            // Not asked for: make sure the shell does not wait for a verdict.
            self.effects.push_back(Effect::Abort);
            return;
        };
        if self.wait != Wait::Header {
            self.effects.push_back(Effect::Abort);
            return;
        }
        if let Some(reason) = refuse(&h, &d.update.assignment, &self.facts, &self.journal.installed) {
            let update = d.update.clone();
            self.effects.push_back(Effect::Abort);
            self.fail(&update, reason, true);
            return;
        }
        let Phase::Downloading(d) = &mut self.journal.phase else { return };
        if d.header.as_ref().is_some_and(|old| old != &h) {
            // Resuming a different bundle than what is in the slot: start over.
            d.synced = 0;
        }
        d.header = Some(h);
        let message = format!(
            "writing {} into slot {} from byte {}",
            d.update.assignment.release,
            d.update.target.name(),
            d.synced
        );
        self.info(message);
        self.persist();
        self.wait = Wait::Stream;
        self.effects.push_back(Effect::Accept);
    }

    fn stream_done(&mut self) {
        if self.wait != Wait::Stream {
            return;
        }
        let Phase::Downloading(d) = &mut self.journal.phase else { return };
        let Some(h) = d.header.clone() else {
            // The shell streamed without a header: start over.
            d.synced = 0;
            self.warn("the image was written before its header was verified; writing it again".into());
            self.persist();
            self.stream();
            return;
        };
        d.synced = h.image_size;
        let (release, target) = (d.update.assignment.release.clone(), d.update.target);
        self.event(release, InstallEvent::Downloaded, String::new());
        self.persist();
        self.wait = Wait::ReadBack;
        self.effects.push_back(Effect::ReadBack { slot: target, len: h.image_size });
        self.flush_reports();
    }

    fn stream_failed(&mut self, retryable: bool, reason: String) {
        if !matches!(self.wait, Wait::Header | Wait::Stream) {
            return;
        }
        let Phase::Downloading(d) = &mut self.journal.phase else { return };
        d.attempts += 1;
        let attempts = d.attempts;
        if retryable && attempts < MAX_DOWNLOAD_ATTEMPTS {
            let backoff = (BACKOFF_BASE * 2u32.saturating_pow(attempts - 1)).min(BACKOFF_MAX);
            let backoff = self.jitter(backoff);
            self.warn(format!(
                "download attempt {attempts} of {MAX_DOWNLOAD_ATTEMPTS} failed: {reason}; retrying in {} s",
                backoff.as_secs()
            ));
            self.persist();
            self.wait = Wait::Backoff;
            self.next_check_in = self.now.plus(backoff);
        } else {
            let update = d.update.clone();
            let reason =
                if retryable { format!("{reason} (gave up after {MAX_DOWNLOAD_ATTEMPTS} attempts)") } else { reason };
            self.fail(&update, reason, !retryable);
        }
    }

    fn read_back(&mut self, sha256: Sha256Digest) {
        if self.wait != Wait::ReadBack {
            return;
        }
        if let Phase::Staged(v) | Phase::Arming(v) = &self.journal.phase {
            // Checked again after a restart, before the flags flip.
            let v = v.clone();
            let arming = matches!(self.journal.phase, Phase::Arming(_));
            if sha256 == v.header.image_sha256 {
                if arming {
                    self.arm(v);
                } else {
                    self.wait = Wait::Confirm;
                    self.effects.push_back(Effect::CheckIn { release: self.journal.installed.release.clone() });
                }
                return;
            }
            let target = v.update.target;
            self.warn(format!("slot {} no longer holds the verified image; writing it again", target.name()));
            self.journal.phase =
                Phase::Downloading(Download { update: v.update, header: Some(v.header), synced: 0, attempts: 1 });
            self.persist();
            self.set_record(self.record.invalidated(target), Then::Stream);
            return;
        }
        let Phase::Downloading(d) = &mut self.journal.phase else { return };
        let Some(header) = d.header.clone() else {
            d.synced = 0;
            self.persist();
            self.stream();
            return;
        };
        if sha256 != header.image_sha256 {
            // The slot does not hold what was written: write it again, a few times.
            d.attempts += 1;
            if d.attempts >= MAX_DOWNLOAD_ATTEMPTS {
                let update = d.update.clone();
                let reason = format!(
                    "slot {} does not read back what was written (digest {sha256}, expected {}); check the storage",
                    update.target.name(),
                    header.image_sha256
                );
                self.fail(&update, reason, false);
                return;
            }
            d.synced = 0;
            let message = format!("slot {} read back a different digest; writing it again", d.update.target.name());
            self.warn(message);
            self.persist();
            self.stream();
            return;
        }
        let v = Verified { update: d.update.clone(), header };
        let release = v.update.assignment.release.clone();
        self.journal.phase = Phase::Staged(v);
        self.event(release, InstallEvent::Installed, String::new());
        self.persist();
        self.flush_reports();
        // Confirm the assignment still stands before flipping the flags.
        self.wait = Wait::Confirm;
        self.effects.push_back(Effect::CheckIn { release: self.journal.installed.release.clone() });
    }

    fn health_done(&mut self, ok: bool, detail: String) {
        if self.wait != Wait::Health {
            return;
        }
        let Phase::Armed(t) = &self.journal.phase else { return };
        let target = t.update.target;
        if ok {
            self.info(format!("health checks passed on slot {}: committing", target.name()));
            // Commit: the record first, then the journal (recovery reads a
            // committed record as the commit).
            self.set_record(self.record.committed(target), Then::Commit);
        } else {
            let v = Verified { update: t.update.clone(), header: t.header.clone() };
            self.remember_refused(&v.update.assignment, &detail);
            self.event(v.update.assignment.release.clone(), InstallEvent::RevertedHealth, detail);
            self.journal.phase = Phase::Reverting(v);
            self.persist();
            self.revert_record(target);
        }
    }

    /// Writes the record that goes back from the trial of `target`: to the
    /// old slot when it is good, else (nothing else can boot) it stays.
    fn revert_record(&mut self, target: Slot) {
        if self.record.good[target.other().index()] {
            self.set_record(self.record.reverted(target), Then::RebootBack);
        } else {
            self.warn(format!("slot {} is not known good: staying on slot {}", target.other().name(), target.name()));
            self.set_record(self.record.committed(target), Then::Rest);
        }
    }

    fn checked_in(&mut self, a: Option<Assignment>) {
        match self.wait {
            Wait::CheckIn => {
                self.wait = Wait::Nothing;
                self.next_check_in = self.now.plus(self.jitter(self.poll_interval));
                if self.journal.phase != Phase::Idle {
                    return;
                }
                let Some(a) = a else {
                    self.idle();
                    return;
                };
                if Some(&a.release) == self.journal.installed.release.as_ref() {
                    self.idle();
                    return;
                }
                if let Some(r) = self.journal.refused.iter().find(|r| r.bundle_sha256 == a.bundle_sha256) {
                    let message =
                        format!("not installing {} again: this bundle was refused before ({})", a.release, r.reason);
                    self.notices.push_back(Notice::Skipped(message));
                    self.idle();
                    return;
                }
                if !self.record.is_settled_on(self.booted.slot) {
                    // Only from a committed slot at rest (settled at start-up;
                    // if that write failed, it is tried again first).
                    self.warn(format!(
                        "not starting {} yet: the boot record is not at rest on the running slot {}",
                        a.release,
                        self.booted.slot.name()
                    ));
                    if !self.booted.trial {
                        self.set_record(self.record.settled(self.booted.slot), Then::Rest);
                    }
                    return;
                }
                // The running slot is the source; the other one the target.
                let from = self.booted.slot;
                let target = from.other();
                self.info(format!("assigned {}: downloading into slot {}", a.release, target.name()));
                self.journal.phase = Phase::Downloading(Download {
                    update: Update { assignment: a, target, from },
                    header: None,
                    synced: 0,
                    attempts: 0,
                });
                self.persist();
                // The target must be unbootable before a byte is written to it.
                self.set_record(self.record.invalidated(target), Then::Stream);
            }
            Wait::Confirm => {
                let Phase::Staged(v) = &self.journal.phase else { return };
                let v = v.clone();
                if a.as_ref().map(|a| &a.release) == Some(&v.update.assignment.release) {
                    self.info(format!("arming the trial boot of slot {}", v.update.target.name()));
                    self.arm(v);
                } else {
                    // Cancelled before the flags were flipped: honoured.
                    self.event(
                        v.update.assignment.release.clone(),
                        InstallEvent::Failed,
                        "cancelled by the server before the trial boot".into(),
                    );
                    self.idle();
                    self.persist();
                    self.flush_reports();
                }
            }
            _ => {}
        }
    }

    fn record_written(&mut self, r: BootRecord) {
        let Wait::Record(then) = self.wait else { return };
        self.record = r;
        match then {
            Then::Stream => self.stream(),
            Then::Reboot => {
                let phase = std::mem::replace(&mut self.journal.phase, Phase::Idle);
                match phase {
                    Phase::Arming(v) => {
                        self.journal.phase = Phase::Armed(Trial { update: v.update, header: v.header, reboots: 0 });
                    }
                    other => self.journal.phase = other,
                }
                self.persist();
                self.info("rebooting into the trial".into());
                self.wait = Wait::Reboot;
                self.effects.push_back(Effect::Reboot);
            }
            Then::Commit => {
                let phase = std::mem::replace(&mut self.journal.phase, Phase::Idle);
                match phase {
                    Phase::Armed(t) => self.commit_done(t.update, t.header),
                    other => {
                        self.journal.phase = other;
                        self.wait = Wait::Nothing;
                    }
                }
            }
            Then::ReadBack { slot, len } => {
                self.wait = Wait::ReadBack;
                self.effects.push_back(Effect::ReadBack { slot, len });
            }
            Then::RebootBack => {
                self.info("rebooting into the old slot".into());
                self.wait = Wait::Reboot;
                self.effects.push_back(Effect::Reboot);
            }
            Then::Rest => {
                if self.journal.phase != Phase::Idle {
                    self.idle();
                    self.persist();
                }
                self.wait = Wait::Nothing;
                self.flush_reports();
            }
        }
    }

    /// The bootloader's record could not be written: nothing was armed (the
    /// write is atomic), so the update ends here and the device stays on
    /// what runs.
    fn record_failed(&mut self, reason: String) {
        let Wait::Record(then) = self.wait else { return };
        let reason = format!("cannot write the boot record: {reason}");
        match self.journal.phase.update().cloned() {
            Some(update) if matches!(then, Then::Stream | Then::Reboot | Then::ReadBack { .. }) => {
                self.fail(&update, reason, false)
            }
            _ => {
                // A commit, revert or recovery record: write it again at the next tick.
                self.warn(format!("{reason}; trying again later"));
                self.retry = self.requested.take();
                self.wait = Wait::Nothing;
                self.next_check_in = self.now.plus(self.jitter(BACKOFF_BASE));
            }
        }
    }

    fn commit_done(&mut self, update: Update, header: Header) {
        self.journal.installed = Installed {
            release: Some(update.assignment.release.clone()),
            security_version: header.security_version,
            slot: update.target,
        };
        self.event(update.assignment.release, InstallEvent::Committed, String::new());
        self.idle();
        self.persist();
        self.flush_reports();
    }

    /// Start-up: resume from the journal, the record and what booted. Every
    /// combination has a defined outcome; the odd ones are reported.
    fn start(&mut self, journal: Option<Box<Journal>>, record: BootRecord, booted: Booted, facts: Facts, seed: u64) {
        self.started = true;
        self.facts = facts;
        self.record = record;
        self.booted = booted;
        self.rng = seed | 1;
        self.effects.clear();
        self.reporting = false;
        self.requested = None;
        self.retry = None;
        self.wait = Wait::Nothing;
        self.next_check_in = self.now;
        self.journal = match journal {
            Some(j) => *j,
            // First start: the booted slot is what is installed.
            None => Journal::new(Installed { release: None, security_version: 0, slot: booted.slot }),
        };
        let phase = std::mem::replace(&mut self.journal.phase, Phase::Idle);
        match phase {
            Phase::Idle => {}
            Phase::Downloading(d) => {
                let u = &d.update;
                if booted.slot == u.from && !booted.trial && u.target == u.from.other() && record.good[u.from.index()] {
                    // The old slot runs: resume the download into the target,
                    // once the target is sure to be invalid.
                    let target = d.update.target;
                    self.journal.phase = Phase::Downloading(d);
                    self.persist();
                    let r = record.invalidated(target);
                    if r == record {
                        self.stream();
                    } else {
                        self.set_record(r, Then::Stream);
                    }
                    return;
                }
                let reason = format!(
                    "the device restarted from slot {} while writing slot {}; the update was abandoned",
                    booted.slot.name(),
                    d.update.target.name()
                );
                self.fail(&d.update, reason, false);
            }
            Phase::Staged(v) => {
                let u = &v.update;
                if booted.slot == u.from && !booted.trial && u.target == u.from.other() && record.good[u.from.index()] {
                    // Verified in the slot before the restart: read it back
                    // again, then confirm and arm.
                    let (slot, len) = (u.target, v.header.image_size);
                    self.journal.phase = Phase::Staged(v);
                    self.flush_reports();
                    let r = record.invalidated(slot);
                    if r == record {
                        self.wait = Wait::ReadBack;
                        self.effects.push_back(Effect::ReadBack { slot, len });
                    } else {
                        // A stale trial or good flag on the staged slot: clear it first.
                        self.set_record(r, Then::ReadBack { slot, len });
                    }
                    return;
                }
                let reason = format!(
                    "the device restarted from slot {} with the image staged in slot {}; the update was abandoned",
                    booted.slot.name(),
                    v.update.target.name()
                );
                self.fail(&v.update, reason, false);
            }
            Phase::Arming(v) => {
                if self.resume_trial(v.update, v.header, 0, false) {
                    return;
                }
            }
            Phase::Armed(t) => {
                if self.resume_trial(t.update, t.header, t.reboots, true) {
                    return;
                }
            }
            Phase::Reverting(v) => {
                let target = v.update.target;
                if booted.slot == target && v.update.from != target {
                    // Power lost before the revert record (or before the reboot): again.
                    self.journal.phase = Phase::Reverting(v);
                    self.persist();
                    self.flush_reports();
                    self.revert_record(target);
                    return;
                }
                // Back on the old slot: the revert is done (reported when the checks failed).
            }
        }
        self.settle_idle();
    }

    /// Resumes an armed (or arming) update after a boot. Returns whether it
    /// goes on (`false`: the update ended and the agent settles idle).
    fn resume_trial(&mut self, update: Update, header: Header, reboots: u32, flags_flipped: bool) -> bool {
        let (record, booted) = (self.record, self.booted);
        let (target, from) = (update.target, update.from);
        let release = update.assignment.release.clone();
        if target == from {
            let reason = format!("the journal's update writes slot {} over itself; abandoned", target.name());
            self.event(release, InstallEvent::Failed, reason);
            return false;
        }
        if booted.slot == target && record.good[target.index()] && !record.trial_armed {
            // Power was lost after the commit record, before the journal
            // (what booted may still say "trial": it is read at boot).
            self.commit_done(update, header);
            return true;
        }
        if booted.slot == target && booted.trial {
            // The trial boot: check health.
            self.journal.phase = Phase::Armed(Trial { update, header, reboots });
            self.event(release, InstallEvent::TrialBoot, String::new());
            self.persist();
            self.flush_reports();
            self.info(format!("trial boot of slot {}: running the health checks", target.name()));
            self.wait = Wait::Health;
            self.effects.push_back(Effect::RunHealthChecks { timeout: HEALTH_TIMEOUT });
            return true;
        }
        if booted.reverted_from == Some(target) || (booted.slot == from && record.last_revert == Some(target)) {
            // The trial never came up healthy: the bootloader reverted.
            let reason = format!("no healthy boot of slot {} in {} attempts", target.name(), crate::TRIAL_ATTEMPTS);
            self.remember_refused(&update.assignment, &reason);
            self.event(release, InstallEvent::RevertedBoot, reason);
            return false;
        }
        if booted.slot == from && !booted.trial {
            if record.trial_armed && record.primary == target {
                // Armed, but the device did not boot the trial: the reboot
                // did not happen (or did not go through the bootloader).
                if reboots + 1 >= MAX_REBOOT_REQUESTS {
                    let reason = format!(
                        "the device did not boot the trial of slot {} after {} reboot requests and still runs slot {}; \
                         hint: reboot_command must restart the device through the bootloader \
                         (with the file bootloader: `updraft-agent simulate-boot`)",
                        target.name(),
                        reboots + 1,
                        from.name()
                    );
                    self.remember_refused(&update.assignment, &reason);
                    self.event(release, InstallEvent::Failed, reason);
                    self.idle();
                    self.persist();
                    self.flush_reports();
                    // Disarm: the old slot stays the one to boot.
                    self.set_record(record.invalidated(target), Then::Rest);
                    return true;
                }
                self.warn(format!(
                    "still on slot {} although the trial of slot {} is armed: the reboot did not happen; asking again ({} of {})",
                    from.name(),
                    target.name(),
                    reboots + 2,
                    MAX_REBOOT_REQUESTS
                ));
                self.journal.phase = Phase::Armed(Trial { update, header, reboots: reboots + 1 });
                self.persist();
                self.flush_reports();
                self.wait = Wait::Reboot;
                self.effects.push_back(Effect::Reboot);
                return true;
            }
            if !flags_flipped && !record.trial_armed {
                // The flags were never flipped: read the image back, then arm again.
                let (slot, len) = (target, header.image_size);
                self.journal.phase = Phase::Arming(Verified { update, header });
                self.flush_reports();
                self.wait = Wait::ReadBack;
                self.effects.push_back(Effect::ReadBack { slot, len });
                return true;
            }
            let reason = format!("the trial of slot {} was disarmed outside the agent", target.name());
            self.remember_refused(&update.assignment, &reason);
            self.event(release, InstallEvent::Failed, reason);
            return false;
        }
        let reason = format!(
            "unexpected boot during the update: booted slot {}{}, the update goes from slot {} to slot {}; abandoned",
            booted.slot.name(),
            if booted.trial { " on trial" } else { "" },
            from.name(),
            target.name()
        );
        self.remember_refused(&update.assignment, &reason);
        self.event(release, InstallEvent::Failed, reason);
        false
    }

    /// Nothing in progress: make the journal and the record agree with what
    /// runs, with no write when they already do (no wear on normal boots).
    fn settle_idle(&mut self) {
        let (record, booted) = (self.record, self.booted);
        self.journal.phase = Phase::Idle;
        if booted.slot != self.journal.installed.slot && !booted.trial {
            self.warn(format!(
                "running slot {} while the journal says slot {}: the bootloader fell back",
                booted.slot.name(),
                self.journal.installed.slot.name()
            ));
            self.journal.installed.slot = booted.slot;
        }
        self.idle();
        self.next_check_in = self.now;
        self.persist();
        self.flush_reports();
        if booted.trial && record.is_settled_on(booted.slot) {
            // Committed since this boot (what booted is read at boot time).
        } else if booted.trial && !record.good[booted.slot.index()] {
            // A trial boot with no update in progress (a lost journal): go
            // back to the slot known good, if there is one.
            self.warn(format!("slot {} booted on trial with no update in progress: going back", booted.slot.name()));
            self.revert_record(booted.slot);
        } else if !record.is_settled_on(booted.slot) {
            self.warn(format!(
                "the boot record (primary {}, trial armed {}) does not match the running slot {}: settling it",
                record.primary.name(),
                record.trial_armed,
                booted.slot.name()
            ));
            self.set_record(record.settled(booted.slot), Then::Rest);
        }
    }
}
