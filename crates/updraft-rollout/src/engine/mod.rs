//! The controller: the state machine that turns plans, fleet changes,
//! device reports, operator commands and the time into decisions.
//!
//! Shape (CONTRIBUTING.md): `handle(now, input)`, `poll_output()`,
//! `poll_timeout()`. No clock, no randomness, no IO: the same inputs give
//! the same outputs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use serde::Serialize;
use updraft_types::{DeviceId, ReleaseId, RolloutId, UnixMs};

mod decisions;
mod fleet;
mod followup;
mod gates;
mod reports;
mod rollouts;
mod status;

pub use status::{
    FleetCounts, FollowUpStatus, HeldBackDevice, RolloutStatus, StatusCounts, StratumStatus, MAX_HELD_BACK_LISTED,
};

use crate::model::*;
use crate::plan::{Dimension, FailureScope, GateKind, OnFailure, OnInconclusive, Others, Plan, WaveSize};
use crate::stats::{self, ProportionTest, Verdict};

/// How often (at most) a rollout's gates are evaluated while reports arrive.
pub const EVAL_INTERVAL: Duration = Duration::from_secs(10);
/// Depth of a stepping-stone chain (release A needs B needs C...).
pub const MAX_STEPPING_STONES: usize = 4;

/// A deterministic, fast hasher (FxHash) for in-memory maps: the same
/// insertions always give the same iteration order.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        // Multiplication only carries upwards, so without a finaliser keys
        // that differ in their last bytes would share their low bits, which
        // pick the bucket. SplitMix64's finaliser mixes every bit.
        mix(self.0)
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// FNV-1a, 64 bits: a fixed, documented hash of a name.
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A device's place in a rollout's cohort order: a stable hash of the
/// rollout id (the salt) and the device id,
/// `splitmix64(fnv1a(salt) * 0x9e3779b97f4a7c15 ^ fnv1a(device))`.
/// Lower goes first; the same device keeps its place for the whole rollout.
pub fn cohort_hash(salt: &str, device: &str) -> u64 {
    cohort_hash_of(fnv1a(salt), fnv1a(device))
}

fn cohort_hash_of(salt: u64, device: u64) -> u64 {
    mix(salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ device)
}

type Sym = u32;

#[derive(Default)]
struct Symbols {
    map: FxMap<String, Sym>,
    names: Vec<String>,
}

impl Symbols {
    fn intern(&mut self, s: &str) -> Sym {
        if let Some(&x) = self.map.get(s) {
            return x;
        }
        let x = self.names.len() as Sym;
        self.names.push(s.to_owned());
        self.map.insert(s.to_owned(), x);
        x
    }
    fn get(&self, s: &str) -> Option<Sym> {
        self.map.get(s).copied()
    }
    fn name(&self, x: Sym) -> &str {
        if x == UNSET {
            return UNSET_NAME;
        }
        &self.names[x as usize]
    }
}

type Rel = u32;

/// What a read-only decision found: the answer, or that an assignment is due.
enum Step {
    Done(Decision),
    Assign {
        r: usize,
        target: Rel,
        reason: InstallReason,
    },
    /// In the wave's cohort, but a requirement is unmet (and no stepping stone meets it).
    HeldBack {
        r: usize,
        requirement: String,
    },
}

/// A device: about 90 bytes, plus its id once in the index.
struct Device {
    /// `fnv1a` of the id (the id itself lives only in the index).
    id_hash: u64,
    family: Sym,
    hardware: Sym,
    region: Sym,
    channel: Option<Sym>,
    tags: Box<[Sym]>,
    release: Option<Rel>,
    lkg: Option<Rel>,
    /// The last known good release before `lkg` (a rollback of `lkg` goes here).
    previous_good: Option<Rel>,
    /// Taken out of service: no rollout selects it.
    retired: bool,
    components: Box<[(Sym, semver::Version)]>,
    utc_offset_min: i16,
}

struct Release {
    info: ReleaseInfo,
    family: Sym,
    hardware: Vec<Sym>,
    requires: Vec<(Sym, semver::VersionReq)>,
    provides: Vec<(Sym, semver::Version)>,
    quarantined: bool,
    /// Strata the release is quarantined for (a stratum-scoped halt).
    blocked: Vec<Scope>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Selected, nothing assigned yet.
    Selected,
    /// Assigned a stepping-stone release first.
    SteppingStone,
    Assigned,
    Downloaded,
    Installed,
    TrialBoot,
    Committed,
    Reverted,
    Failed,
    Silent,
    /// Taken out of service (decommissioned): counted nowhere, never silent.
    Retired,
}

impl MemberStatus {
    fn in_progress(self) -> bool {
        matches!(
            self,
            MemberStatus::SteppingStone
                | MemberStatus::Assigned
                | MemberStatus::Downloaded
                | MemberStatus::Installed
                | MemberStatus::TrialBoot
        )
    }
}

/// A device's place in one rollout: 24 bytes.
#[derive(Clone, Copy)]
struct Member {
    hash: u64,
    last_seen_s: u32,
    stratum: u16,
    wave: u8,
    status: MemberStatus,
    /// One bit per metric gate: this device exceeded it.
    metric_bad: u16,
    metric_seen: u16,
}

impl Member {
    /// A device just selected by a rollout, in stratum `stratum`.
    fn selected(hash: u64, stratum: u16) -> Member {
        Member { hash, last_seen_s: 0, stratum, wave: 0, status: MemberStatus::Selected, metric_bad: 0, metric_seen: 0 }
    }

    /// Moves to `to`; `in_flight` (the rollout's updates in progress, what
    /// pacing counts) changes here and nowhere else.
    fn set_status(&mut self, to: MemberStatus, in_flight: &mut u64) {
        match (self.status.in_progress(), to.in_progress()) {
            (false, true) => *in_flight += 1,
            (true, false) => *in_flight = in_flight.saturating_sub(1),
            _ => {}
        }
        self.status = to;
    }
}

/// Outcomes of one kind (installs, trial boots, health checks, a metric):
/// how many devices reported one, and how many of those failed.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Proportion {
    trials: u64,
    failures: u64,
}

impl Proportion {
    fn pass(&mut self) {
        self.trials += 1;
    }
    fn fail(&mut self) {
        self.trials += 1;
        self.failures += 1;
    }
    fn add(&mut self, o: &Proportion) {
        self.trials += o.trials;
        self.failures += o.failures;
    }
}

/// Crashes over the time devices were watched (device-seconds).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Exposure {
    crashes: u64,
    seconds: u64,
}

impl Exposure {
    fn add(&mut self, o: &Exposure) {
        self.crashes += o.crashes;
        self.seconds += o.seconds;
    }
}

/// Outcome counters of one cell. Integers only, so that sums do not
/// depend on the order of addition.
#[derive(Clone, Default, Debug)]
struct Counts {
    install: Proportion,
    boot: Proportion,
    health: Proportion,
    metric: Vec<Proportion>,
    /// Devices on the new release.
    crash_canary: Exposure,
    /// Devices of the rollout still on their old release.
    crash_baseline: Exposure,
}

impl Counts {
    /// Counter `k`: install, trial boot, health, then each metric gate's.
    fn counter(&self, k: usize) -> Proportion {
        match k {
            0 => self.install,
            1 => self.boot,
            2 => self.health,
            _ => self.metric.get(k - 3).copied().unwrap_or_default(),
        }
    }

    fn add(&mut self, o: &Counts) {
        self.install.add(&o.install);
        self.boot.add(&o.boot);
        self.health.add(&o.health);
        self.crash_canary.add(&o.crash_canary);
        self.crash_baseline.add(&o.crash_baseline);
        if self.metric.len() < o.metric.len() {
            self.metric.resize(o.metric.len(), Proportion::default());
        }
        for (a, b) in self.metric.iter_mut().zip(&o.metric) {
            a.add(b);
        }
    }
}

/// The value of an attribute dimension on a device without that attribute.
const UNSET: Sym = Sym::MAX;
/// How [`UNSET`] is written in a scope (`site=(unset)`).
pub const UNSET_NAME: &str = "(unset)";

/// A cell: the rollout's devices of one hardware revision, region and
/// value of each attribute the plan's `strata.by` names. Admission and
/// counting happen per cell; a stratum (what a gate tests) is a union of cells.
struct Stratum {
    hardware: Sym,
    region: Sym,
    /// One value per attribute dimension of `strata.by`, in its order.
    attrs: Box<[Sym]>,
    /// Cohort hashes of the selected devices, sorted.
    hashes: Vec<u64>,
    /// Devices with a hash at most this are admitted.
    threshold: Option<u64>,
    /// The wave whose share applies: the rollout's, or an earlier one while
    /// a stratum of this cell is undecided (`others = "advance"`).
    wave: usize,
    /// Devices admitted at the least (raised by over-sampling).
    floor: u64,
    /// The cell ramps up: until every scope it belongs to has passed, its
    /// updates in progress are at most `max(strata.ramp_start, settled /
    /// (1 + failures))` (see [`Stratum::ramp_full`]). Cleared for good
    /// once proven; never set if the plan does not ramp.
    ramping: bool,
    /// Devices given the release (or a stepping stone) by this rollout.
    given: u64,
    /// Of those, updates in progress.
    in_flight: u64,
    /// When over-sampling last raised `floor`.
    raised_at: UnixMs,
    /// A stratum-scoped halt: no more assignments here, and a rollback of
    /// the cell's devices if the plan says so.
    halted: Option<OnFailure>,
    /// The ramp groups (`Rollout::ramp_groups`) this cell belongs to: an
    /// index kept beside the groups so that a check-in finds its cell's
    /// groups without scanning them.
    ramp_in: Vec<u16>,
    counts: Counts,
}

impl Stratum {
    fn new(key: &CellKey, metric_gates: usize, wave: usize, ramping: bool) -> Stratum {
        Stratum {
            hardware: key.0,
            region: key.1,
            attrs: key.2.clone(),
            hashes: Vec::new(),
            threshold: None,
            wave,
            floor: 0,
            ramping,
            given: 0,
            in_flight: 0,
            raised_at: UnixMs(0),
            halted: None,
            ramp_in: Vec::new(),
            counts: Counts { metric: vec![Proportion::default(); metric_gates], ..Counts::default() },
        }
    }

    /// Devices admitted now.
    fn admitted(&self) -> u64 {
        self.threshold.map_or(0, |t| self.hashes.partition_point(|&h| h <= t) as u64)
    }

    /// Devices given the release whose update is over (committed, reverted, failed, silent).
    fn settled(&self) -> u64 {
        self.given.saturating_sub(self.in_flight)
    }

    /// Whether a ramping cell has as many updates in progress as its round
    /// allows: `max(start, n / (1 + k))` for the counter (install, trial
    /// boot, health, metric) where that is least, with n its counted
    /// outcomes and k its failures; a counter without failures allows the
    /// cell's settled updates. With no failures the cell doubles per round;
    /// with failures each round adds about one expected failure at the
    /// observed rate. Counted outcomes, not settled updates, once failures
    /// show: outcomes wait for the follow-up (see `followup`), and a round
    /// must not grow on successes whose siblings' failures are still due.
    /// Devices that never check in take no place (the limit counts
    /// updates, not admissions).
    fn ramp_full(&self, start: u64) -> bool {
        self.ramping && self.in_flight >= start.max(round(std::iter::once(self)))
    }
}

/// The ramp's round before `ramp_start` for `cells` together (see
/// [`Stratum::ramp_full`]): their counters summed.
fn round<'a>(cells: impl Iterator<Item = &'a Stratum> + Clone) -> u64 {
    let settled: u64 = cells.clone().map(Stratum::settled).sum();
    let counters = cells.clone().next().map_or(0, |c| 3 + c.counts.metric.len());
    (0..counters)
        .map(|k| {
            let (trials, failures) = cells.clone().fold((0, 0), |(t, f), c| {
                let p = c.counts.counter(k);
                (t + p.trials, f + p.failures)
            });
            if failures == 0 {
                settled
            } else {
                trials / (1 + failures)
            }
        })
        .min()
        .unwrap_or(settled)
}

/// A cell's key: hardware, region, attribute values.
type CellKey = (Sym, Sym, Box<[Sym]>);

struct Rollout {
    id: RolloutId,
    release: Rel,
    plan: Plan,
    state: RolloutState,
    wave: usize,
    wave_started: UnixMs,
    /// Indexed by device: 24 bytes per device of the fleet.
    members: Vec<Option<Member>>,
    selected: u64,
    /// The cells (see [`Stratum`]).
    strata: Vec<Stratum>,
    stratum_of: FxMap<CellKey, u16>,
    in_flight: u64,
    tokens: f64,
    tokens_at: UnixMs,
    dirty: bool,
    next_eval: UnixMs,
    verdicts: Vec<(String, Scope, Verdict)>,
    /// (gate, scope) that passed at some evaluation of the current wave
    /// (with `strata.decide_each`): an anytime-valid test may stop at its
    /// first crossing, so a pass holds for the wave unless the gate fails.
    latched: Vec<(String, Scope)>,
    last_reports: Vec<GateReport>,
    /// Devices of an admitted cohort held back by a requirement: device
    /// index → (wave, id, requirement). Few, so a side map (members stay 24 bytes).
    held_back: std::collections::BTreeMap<u32, (u8, DeviceId, String)>,
    /// Outcomes held until their stage's follow-up (see [`followup`]).
    follow_up: followup::FollowUp,
    /// The ramping cells of each undecided stratum with two or more of them,
    /// as of the last evaluation: they share one round (see [`Rollout::ramp_full`]).
    ramp_groups: Vec<Box<[u16]>>,
}

impl Rollout {
    fn member(&self, idx: u32) -> Option<&Member> {
        self.members.get(idx as usize).and_then(Option::as_ref)
    }

    /// Whether a gate report counts as passed: it passes now, or it passed
    /// earlier in the wave (see `latched`) and has not failed since.
    fn passed(&self, rep: &GateReport) -> bool {
        match rep.test.verdict {
            Verdict::Pass => true,
            Verdict::Fail => false,
            Verdict::Undecided => self.latched.iter().any(|(g, s)| *g == rep.gate && *s == rep.scope),
        }
    }

    /// Whether cell `c` ramps and its round is full: its own round, or the
    /// round its undecided strata's ramping cells share (their updates in
    /// progress against the round of their counters summed). The shared
    /// round makes a rare revision split over regions ramp once, not once
    /// per region (each cell on its own would have twice the updates in
    /// progress when the halt comes); the cell's own round keeps a
    /// healthy cell's successes from widening a failing cell's round.
    fn ramp_full(&self, c: usize, start: u64) -> bool {
        let cell = &self.strata[c];
        cell.ramp_full(start)
            || cell.ramping
                && cell.ramp_in.iter().any(|&g| {
                    let cells = self.ramp_groups[g as usize].iter().map(|&i| &self.strata[i as usize]);
                    let in_flight: u64 = cells.clone().map(|c| c.in_flight).sum();
                    in_flight >= start.max(round(cells))
                })
    }

    /// When the current wave's soak ends (its gates can pass from then on).
    fn soak_end(&self) -> UnixMs {
        self.wave_started.plus(self.plan.waves[self.wave].soak)
    }

    fn member_mut(&mut self, idx: u32) -> Option<&mut Member> {
        self.members.get_mut(idx as usize).and_then(Option::as_mut)
    }

    /// Moves member `idx` to `to`, keeping the rollout's and its cell's
    /// in-flight counts (what pacing and over-sampling count).
    fn set_status(&mut self, idx: u32, to: MemberStatus) {
        let Some(m) = self.members.get_mut(idx as usize).and_then(Option::as_mut) else { return };
        let cell = &mut self.strata[m.stratum as usize];
        if m.status == MemberStatus::Selected && to.in_progress() {
            cell.given += 1;
        }
        let mut in_flight = cell.in_flight;
        m.set_status(to, &mut in_flight);
        self.in_flight = (self.in_flight + in_flight).saturating_sub(cell.in_flight);
        cell.in_flight = in_flight;
    }

    /// Notes that member `idx` was heard from at `now_s`.
    fn touch(&mut self, idx: u32, now_s: u32) {
        if let Some(m) = self.members.get_mut(idx as usize).and_then(Option::as_mut) {
            m.last_seen_s = now_s;
        }
    }

    fn insert_member(&mut self, idx: u32, m: Member) {
        if self.members.len() <= idx as usize {
            self.members.resize(idx as usize + 1, None);
        }
        debug_assert!(self.members[idx as usize].is_none());
        self.members[idx as usize] = Some(m);
        self.selected += 1;
    }
}

/// The rollout controller.
pub struct Controller {
    now: UnixMs,
    /// Time origin for compact per-device timestamps (seconds since).
    epoch: UnixMs,
    syms: Symbols,
    devices: Vec<Device>,
    device_index: FxMap<Box<str>, u32>,
    releases: Vec<Release>,
    release_index: FxMap<ReleaseId, Rel>,
    rollouts: Vec<Rollout>,
    rollout_index: FxMap<RolloutId, usize>,
    /// Silence deadlines: (deadline, rollout, device); stale entries are skipped.
    deadlines: BinaryHeap<Reverse<(u64, u32, u32)>>,
    outputs: VecDeque<Output>,
}

fn state_reason(state: &RolloutState) -> String {
    match state {
        RolloutState::Paused { reason } | RolloutState::RolledBack { reason } => reason.clone(),
        other => other.name().to_owned(),
    }
}

impl Default for Controller {
    fn default() -> Self {
        Self::new(UnixMs(0))
    }
}

impl Controller {
    /// A controller whose clock starts at `epoch`.
    pub fn new(epoch: UnixMs) -> Self {
        Controller {
            now: epoch,
            epoch,
            syms: Symbols::default(),
            devices: Vec::new(),
            device_index: FxMap::default(),
            releases: Vec::new(),
            release_index: FxMap::default(),
            rollouts: Vec::new(),
            rollout_index: FxMap::default(),
            deadlines: BinaryHeap::new(),
            outputs: VecDeque::new(),
        }
    }

    fn secs(&self, t: UnixMs) -> u32 {
        (t.0.saturating_sub(self.epoch.0) / 1000).min(u64::from(u32::MAX)) as u32
    }

    /// Feeds one input at time `now` (which never goes backwards: an earlier
    /// time is taken as the latest one seen).
    pub fn handle(&mut self, now: UnixMs, input: Input) {
        self.now = self.now.max(now);
        self.expire_silent();
        match input {
            Input::Device(info) => self.upsert_device(info),
            Input::Release(info) => self.add_release(info),
            Input::CreateRollout { id, release, plan } => self.create_rollout(id, release, plan),
            Input::Command { rollout, command } => self.command(&rollout, command),
            Input::LiftQuarantine { release } => match self.release_index.get(&release) {
                Some(&r) => {
                    let release = &mut self.releases[r as usize];
                    release.quarantined = false;
                    release.blocked.clear();
                }
                None => self.reject(format!("unknown release {release}")),
            },
            Input::CheckIn { device, release } => self.check_in(&device, release),
            Input::Event { device, release, event } => self.event(&device, &release, event),
            Input::Health { device, sample } => self.health(&device, &sample),
            Input::Retire { device } => self.retire(&device),
            Input::Tick => {}
        }
        self.evaluate_due();
    }

    /// The release device `id` runs, as far as the controller knows
    /// (what it last reported, or committed since).
    pub fn device_release(&self, id: &DeviceId) -> Option<ReleaseId> {
        let &idx = self.device_index.get(id.as_str())?;
        let rel = self.devices[idx as usize].release?;
        Some(self.releases[rel as usize].info.id.clone())
    }

    /// The state of rollout `id` (cheaper than its whole `status`).
    pub fn rollout_state(&self, id: &RolloutId) -> Option<&RolloutState> {
        self.rollouts.iter().find(|r| &r.id == id).map(|r| &r.state)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the controller next wants a `Tick`: the earliest silence
    /// deadline, gate evaluation, end of a soak or of a wave's wait.
    pub fn poll_timeout(&self) -> Option<UnixMs> {
        let mut t: Option<UnixMs> = self.deadlines.peek().map(|Reverse((d, _, _))| UnixMs(*d));
        let mut min = |x: UnixMs| t = Some(t.map_or(x, |y| y.min(x)));
        for r in &self.rollouts {
            if r.state != RolloutState::Running {
                continue;
            }
            if r.dirty {
                min(r.next_eval.max(self.now));
            }
            if let Some(s) = r.follow_up.next_due() {
                min(self.epoch.plus(Duration::from_secs(u64::from(s))).max(self.now));
            }
            let soak_end = r.soak_end();
            if soak_end > self.now {
                min(soak_end);
            }
            let wait_end = soak_end.plus(r.plan.max_wait);
            if wait_end > self.now {
                min(wait_end);
            }
        }
        t
    }

    fn reject(&mut self, reason: String) {
        self.outputs.push_back(Output::Rejected { reason });
    }
}

/// Devices a wave holds: its share of the selected fleet, at least its
/// minimum, at most the fleet.
fn wave_target(size: WaveSize, min_devices: u64, total: u64) -> u64 {
    let t = match size {
        WaveSize::Percent(p) => ((p / 100.0) * total as f64).ceil() as u64,
        WaveSize::Count(c) => c,
    };
    t.max(min_devices).min(total)
}
