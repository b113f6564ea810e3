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

use crate::model::*;
use crate::plan::{GateKind, OnFailure, OnInconclusive, Plan, WaveSize};
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

/// Outcome counters of one stratum. Integers only, so that sums do not
/// depend on the order of addition.
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

struct Stratum {
    hardware: Sym,
    region: Sym,
    /// Cohort hashes of the selected devices, sorted.
    hashes: Vec<u64>,
    /// Devices with a hash at most this are in the current wave.
    threshold: Option<u64>,
    counts: Counts,
}

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
    strata: Vec<Stratum>,
    stratum_of: FxMap<(Sym, Sym), u16>,
    in_flight: u64,
    tokens: f64,
    tokens_at: UnixMs,
    dirty: bool,
    next_eval: UnixMs,
    verdicts: Vec<(String, Scope, Verdict)>,
    last_reports: Vec<GateReport>,
    /// Devices of an admitted cohort held back by a requirement: device
    /// index → (wave, id, requirement). Few, so a side map (members stay 24 bytes).
    held_back: std::collections::BTreeMap<u32, (u8, DeviceId, String)>,
}

impl Rollout {
    fn member(&self, idx: u32) -> Option<&Member> {
        self.members.get(idx as usize).and_then(Option::as_ref)
    }

    /// When the current wave's soak ends (its gates can pass from then on).
    fn soak_end(&self) -> UnixMs {
        self.wave_started.plus(self.plan.waves[self.wave].soak)
    }

    fn member_mut(&mut self, idx: u32) -> Option<&mut Member> {
        self.members.get_mut(idx as usize).and_then(Option::as_mut)
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
                Some(&r) => self.releases[r as usize].quarantined = false,
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

    // ---------------------------------------------------------------- fleet

    fn upsert_device(&mut self, info: DeviceInfo) {
        let family = self.syms.intern(&info.family);
        let hardware = self.syms.intern(&info.hardware);
        let region = self.syms.intern(&info.region);
        let channel = info.channel.as_deref().map(|c| self.syms.intern(c));
        let mut tags: Vec<Sym> = info.tags.iter().map(|t| self.syms.intern(t)).collect();
        tags.sort_unstable();
        let components: Box<[(Sym, semver::Version)]> =
            info.components.iter().map(|(c, v)| (self.syms.intern(c), v.clone())).collect();
        let release = info.release.as_ref().and_then(|r| self.release_index.get(r).copied());
        let lkg = info.last_known_good.as_ref().and_then(|r| self.release_index.get(r).copied());
        let device = Device {
            id_hash: fnv1a(info.id.as_str()),
            family,
            hardware,
            region,
            channel,
            tags: tags.into(),
            release,
            lkg,
            previous_good: None,
            components,
            utc_offset_min: info.utc_offset_min,
            retired: false,
        };
        let idx = match self.device_index.get(info.id.as_str()) {
            Some(&i) => {
                if self.devices[i as usize].retired {
                    // Back in service (enrolled again): its places in rollouts return.
                    for rollout in &mut self.rollouts {
                        if let Some(m) = rollout.member_mut(i).filter(|m| m.status == MemberStatus::Retired) {
                            m.status = MemberStatus::Selected;
                            rollout.selected += 1;
                        }
                    }
                }
                self.devices[i as usize] = device;
                i
            }
            None => {
                let i = self.devices.len() as u32;
                self.devices.push(device);
                self.device_index.insert(info.id.0.into_boxed_str(), i);
                i
            }
        };
        for r in 0..self.rollouts.len() {
            self.select(r, idx);
        }
    }

    /// Takes a device out of service: its places in rollouts stop counting
    /// (an update in progress no longer holds a pacing slot or goes
    /// silent), and no new rollout selects it.
    fn retire(&mut self, id: &DeviceId) {
        let Some(&idx) = self.device_index.get(id.as_str()) else {
            return self.reject(format!("unknown device {id}"));
        };
        self.devices[idx as usize].retired = true;
        for rollout in &mut self.rollouts {
            let Some(m) = rollout.members.get_mut(idx as usize).and_then(Option::as_mut) else { continue };
            // Outcomes stay as they are (they are the rollout's evidence).
            if !(m.status == MemberStatus::Selected || m.status.in_progress()) {
                continue;
            }
            m.set_status(MemberStatus::Retired, &mut rollout.in_flight);
            rollout.selected = rollout.selected.saturating_sub(1);
            rollout.held_back.remove(&idx);
            rollout.dirty = true;
        }
    }

    fn add_release(&mut self, info: ReleaseInfo) {
        if self.release_index.contains_key(&info.id) {
            self.reject(format!("release {} is already known; releases never change", info.id));
            return;
        }
        let family = self.syms.intern(&info.family);
        let hardware = info.hardware.iter().map(|h| self.syms.intern(h)).collect();
        let requires = info.requires.iter().map(|(c, r)| (self.syms.intern(c), r.clone())).collect();
        let provides = info.provides.iter().map(|(c, v)| (self.syms.intern(c), v.clone())).collect();
        let r = self.releases.len() as Rel;
        self.release_index.insert(info.id.clone(), r);
        self.releases.push(Release { info, family, hardware, requires, provides, quarantined: false });
    }

    fn matches(&self, r: &Rollout, d: &Device) -> bool {
        let rel = &self.releases[r.release as usize];
        let sel = &r.plan.selector;
        let is = |s: &str, x: Sym| self.syms.get(s) == Some(x);
        !d.retired
            && d.family == rel.family
            && rel.hardware.contains(&d.hardware)
            && is(&sel.family, d.family)
            && (sel.hardware.is_empty() || sel.hardware.iter().any(|h| is(h, d.hardware)))
            && (sel.regions.is_empty() || sel.regions.iter().any(|g| is(g, d.region)))
            && sel.tags.iter().all(|t| self.syms.get(t).is_some_and(|t| d.tags.binary_search(&t).is_ok()))
            && sel
                .attributes
                .iter()
                .all(|(k, v)| self.syms.get(&format!("{k}={v}")).is_some_and(|t| d.tags.binary_search(&t).is_ok()))
            && sel.channel.as_ref().is_none_or(|c| d.channel.is_some_and(|dc| is(c, dc)))
    }

    /// Adds device `idx` to rollout `r` if it matches and is not a member.
    fn select(&mut self, r: usize, idx: u32) {
        let rollout = &self.rollouts[r];
        if matches!(rollout.state, RolloutState::Aborted) || rollout.member(idx).is_some() {
            return;
        }
        let d = &self.devices[idx as usize];
        if !self.matches(rollout, d) {
            return;
        }
        let hash = cohort_hash_of(fnv1a(rollout.id.as_str()), d.id_hash);
        let key = (d.hardware, d.region);
        let metric_gates = rollout.plan.gates.iter().filter(|g| matches!(g.kind, GateKind::Metric { .. })).count();
        let rollout = &mut self.rollouts[r];
        let s = match rollout.stratum_of.get(&key) {
            Some(&s) => s,
            None => {
                let s = rollout.strata.len() as u16;
                rollout.strata.push(Stratum {
                    hardware: key.0,
                    region: key.1,
                    hashes: Vec::new(),
                    threshold: None,
                    counts: Counts { metric: vec![Proportion::default(); metric_gates], ..Counts::default() },
                });
                rollout.stratum_of.insert(key, s);
                s
            }
        };
        let stratum = &mut rollout.strata[s as usize];
        let at = stratum.hashes.partition_point(|&h| h < hash);
        stratum.hashes.insert(at, hash);
        rollout.insert_member(
            idx,
            Member {
                hash,
                last_seen_s: 0,
                stratum: s,
                wave: 0,
                status: MemberStatus::Selected,
                metric_bad: 0,
                metric_seen: 0,
            },
        );
        self.set_thresholds(r);
    }

    /// Recomputes each stratum's admission threshold for the current wave:
    /// stratum quota = ceil(target × stratum size / selected), so every wave
    /// covers hardware revisions and regions in proportion.
    fn set_thresholds(&mut self, r: usize) {
        let rollout = &mut self.rollouts[r];
        let total: u64 = rollout.strata.iter().map(|s| s.hashes.len() as u64).sum();
        if total == 0 {
            return;
        }
        let wave = &rollout.plan.waves[rollout.wave];
        let target = wave_target(wave.size, wave.min_devices, total);
        for s in &mut rollout.strata {
            let n = s.hashes.len() as u64;
            let quota = (target * n).div_ceil(total).min(n);
            s.threshold = if quota == 0 { None } else { Some(s.hashes[quota as usize - 1]) };
        }
    }

    // ---------------------------------------------------------------- rollouts

    fn create_rollout(&mut self, id: RolloutId, release: ReleaseId, plan: Plan) {
        if self.rollout_index.contains_key(&id) {
            return self.reject(format!("rollout {id} already exists"));
        }
        let Some(&rel) = self.release_index.get(&release) else {
            return self.reject(format!("rollout {id}: unknown release {release}"));
        };
        if plan.selector.family != self.releases[rel as usize].info.family {
            return self.reject(format!(
                "rollout {id}: the plan selects family {:?} but {release} is for {:?}",
                plan.selector.family, self.releases[rel as usize].info.family
            ));
        }
        let r = self.rollouts.len();
        self.rollouts.push(Rollout {
            id: id.clone(),
            release: rel,
            plan,
            state: RolloutState::Created,
            wave: 0,
            wave_started: self.now,
            members: Vec::new(),
            selected: 0,
            strata: Vec::new(),
            stratum_of: FxMap::default(),
            in_flight: 0,
            tokens: 0.0,
            tokens_at: self.now,
            dirty: false,
            next_eval: self.now,
            verdicts: Vec::new(),
            last_reports: Vec::new(),
            held_back: Default::default(),
        });
        self.rollout_index.insert(id.clone(), r);
        // Bulk selection: sort each stratum once.
        let mut selected: Vec<u32> = Vec::new();
        for idx in 0..self.devices.len() as u32 {
            if self.matches(&self.rollouts[r], &self.devices[idx as usize]) {
                selected.push(idx);
            }
        }
        let metric_gates =
            self.rollouts[r].plan.gates.iter().filter(|g| matches!(g.kind, GateKind::Metric { .. })).count();
        let salt = fnv1a(id.as_str());
        for idx in selected {
            let d = &self.devices[idx as usize];
            let hash = cohort_hash_of(salt, d.id_hash);
            let key = (d.hardware, d.region);
            let rollout = &mut self.rollouts[r];
            let s = *rollout.stratum_of.entry(key).or_insert_with(|| {
                rollout.strata.push(Stratum {
                    hardware: key.0,
                    region: key.1,
                    hashes: Vec::new(),
                    threshold: None,
                    counts: Counts { metric: vec![Proportion::default(); metric_gates], ..Counts::default() },
                });
                (rollout.strata.len() - 1) as u16
            });
            rollout.strata[s as usize].hashes.push(hash);
            rollout.insert_member(
                idx,
                Member {
                    hash,
                    last_seen_s: 0,
                    stratum: s,
                    wave: 0,
                    status: MemberStatus::Selected,
                    metric_bad: 0,
                    metric_seen: 0,
                },
            );
        }
        for s in &mut self.rollouts[r].strata {
            s.hashes.sort_unstable();
        }
        self.set_thresholds(r);
        self.outputs.push_back(Output::StateChanged { rollout: id, state: RolloutState::Created });
    }

    fn set_state(&mut self, r: usize, state: RolloutState) {
        if self.rollouts[r].state == state {
            return;
        }
        self.rollouts[r].state = state.clone();
        self.outputs.push_back(Output::StateChanged { rollout: self.rollouts[r].id.clone(), state });
    }

    fn start_wave(&mut self, r: usize, wave: usize) {
        let rollout = &mut self.rollouts[r];
        rollout.wave = wave;
        rollout.wave_started = self.now;
        rollout.verdicts.clear();
        rollout.dirty = true;
        self.set_thresholds(r);
        let rollout = &self.rollouts[r];
        let total: u64 = rollout.strata.iter().map(|s| s.hashes.len() as u64).sum();
        let w = &rollout.plan.waves[wave];
        self.outputs.push_back(Output::WaveStarted {
            rollout: rollout.id.clone(),
            wave: wave + 1,
            target_devices: wave_target(w.size, w.min_devices, total),
        });
    }

    fn command(&mut self, id: &RolloutId, command: Command) {
        let Some(&r) = self.rollout_index.get(id) else {
            return self.reject(format!("unknown rollout {id}"));
        };
        let state = self.rollouts[r].state.clone();
        let quarantined = self.releases[self.rollouts[r].release as usize].quarantined;
        let refuse = |this: &mut Self, why: &str| {
            this.reject(format!("rollout {id}: cannot {command:?} while {}: {why}", state.name()))
        };
        match command {
            Command::Start => match state {
                RolloutState::Created if quarantined => refuse(self, "the release is quarantined"),
                RolloutState::Created => {
                    self.set_state(r, RolloutState::Running);
                    self.start_wave(r, 0);
                }
                _ => refuse(self, "it has already started"),
            },
            Command::Pause => match state {
                RolloutState::Running | RolloutState::Completed => {
                    self.set_state(r, RolloutState::Paused { reason: "paused by an operator".into() })
                }
                _ => refuse(self, "only a running rollout can be paused"),
            },
            Command::Resume => match state {
                RolloutState::Paused { .. } if quarantined => {
                    refuse(self, "the release is quarantined; lift the quarantine first")
                }
                RolloutState::Paused { .. } => {
                    self.set_state(r, RolloutState::Running);
                    // The wait for a verdict starts again.
                    self.rollouts[r].wave_started = self.now;
                    self.rollouts[r].dirty = true;
                }
                _ => refuse(self, "only a paused rollout can be resumed"),
            },
            Command::AdvanceNow => match state {
                RolloutState::Running | RolloutState::Paused { .. } if !quarantined => {
                    self.set_state(r, RolloutState::Running);
                    self.advance(r);
                }
                _ => refuse(self, "only a running or paused rollout of a release that is not quarantined can advance"),
            },
            Command::Abort => match state {
                RolloutState::Aborted | RolloutState::RolledBack { .. } => refuse(self, "it has already ended"),
                _ => self.set_state(r, RolloutState::Aborted),
            },
            Command::Rollback => match state {
                RolloutState::RolledBack { .. } => refuse(self, "it is already rolled back"),
                _ => self.halt(r, "rolled back by an operator".into(), OnFailure::Rollback),
            },
        }
    }

    fn advance(&mut self, r: usize) {
        let next = self.rollouts[r].wave + 1;
        if next < self.rollouts[r].plan.waves.len() {
            self.start_wave(r, next);
        } else {
            self.set_state(r, RolloutState::Completed);
        }
    }

    /// Stops a rollout for `reason`, quarantines its release, and pauses
    /// every other rollout of that release.
    fn halt(&mut self, r: usize, reason: String, action: OnFailure) {
        let state = match action {
            OnFailure::Pause => RolloutState::Paused { reason: reason.clone() },
            OnFailure::Rollback => RolloutState::RolledBack { reason: reason.clone() },
        };
        self.set_state(r, state);
        let rel = self.rollouts[r].release;
        if !self.releases[rel as usize].quarantined {
            self.releases[rel as usize].quarantined = true;
            self.outputs.push_back(Output::Quarantined {
                release: self.releases[rel as usize].info.id.clone(),
                rollout: self.rollouts[r].id.clone(),
            });
        }
        for o in 0..self.rollouts.len() {
            if o != r
                && self.rollouts[o].release == rel
                && matches!(
                    self.rollouts[o].state,
                    RolloutState::Running | RolloutState::Completed | RolloutState::Created
                )
            {
                let why = format!("release quarantined by rollout {}: {reason}", self.rollouts[r].id);
                self.set_state(o, RolloutState::Paused { reason: why });
            }
        }
    }

    // ---------------------------------------------------------------- decisions

    fn check_in(&mut self, id: &DeviceId, release: Option<ReleaseId>) {
        let Some(&idx) = self.device_index.get(id.as_str()) else {
            return self.reject(format!("check-in from unknown device {id}"));
        };
        let now_s = self.secs(self.now);
        let reported = release.as_ref().and_then(|r| self.release_index.get(r).copied());
        self.devices[idx as usize].release = reported;
        let decision = self.decide(idx, id, now_s);
        self.outputs.push_back(Output::Decision { device: id.clone(), decision });
    }

    fn decide(&mut self, idx: u32, id: &DeviceId, now_s: u32) -> Decision {
        for r in 0..self.rollouts.len() {
            if let Some(m) = self.rollouts[r].member_mut(idx) {
                m.last_seen_s = now_s;
            }
        }
        let (r, target, reason) = match self.decide_readonly(idx, self.now) {
            Step::Done(d) => return d,
            Step::HeldBack { r, requirement } => {
                let rollout = &mut self.rollouts[r];
                let wave = rollout.wave as u8;
                rollout.held_back.insert(idx, (wave, id.clone(), requirement.clone()));
                return Decision::Stay { reason: StayReason::HeldBack { requirement } };
            }
            Step::Assign { r, target, reason } => (r, target, reason),
        };
        self.rollouts[r].held_back.remove(&idx);
        // Pacing.
        if !self.take_pacing_slot(r) {
            return Decision::Stay { reason: StayReason::Paced };
        }
        let rollout = &mut self.rollouts[r];
        let rel = rollout.release;
        let m = rollout.members.get_mut(idx as usize).and_then(Option::as_mut).expect("member");
        let to = if target == rel { MemberStatus::Assigned } else { MemberStatus::SteppingStone };
        m.set_status(to, &mut rollout.in_flight);
        m.wave = rollout.wave as u8;
        m.last_seen_s = now_s;
        let deadline = self.now.plus(rollout.plan.silence_timeout).0;
        self.deadlines.push(Reverse((deadline, r as u32, idx)));
        self.install(r, target, reason)
    }

    /// The decision for a check-in from `device` reporting `release` at
    /// `now`, if answering it changes nothing: the reported release is the
    /// one recorded and no new assignment (with its pacing) is due. `None`
    /// means the check-in must go through `handle`. Replicas answer such
    /// check-ins from their own state without coordinating.
    pub fn peek_check_in(&self, now: UnixMs, device: &DeviceId, release: Option<&ReleaseId>) -> Option<Decision> {
        let &idx = self.device_index.get(device.as_str())?;
        // As `check_in` records it: a release the controller does not know is none.
        let reported = release.and_then(|r| self.release_index.get(r).copied());
        if reported != self.devices[idx as usize].release {
            return None;
        }
        match self.decide_readonly(idx, now) {
            Step::Done(d) => Some(d),
            Step::Assign { .. } => None,
            // Read-only only once recorded as held back for this reason.
            Step::HeldBack { r, requirement } => {
                let known = self.rollouts[r].held_back.get(&idx).is_some_and(|(_, _, q)| *q == requirement);
                known.then_some(Decision::Stay { reason: StayReason::HeldBack { requirement } })
            }
        }
    }

    /// Everything a decision needs to know, without changing anything.
    fn decide_readonly(&self, idx: u32, now: UnixMs) -> Step {
        let current = self.devices[idx as usize].release;
        // Rollbacks first: a device running a halted release goes back.
        // Otherwise the newest rollout that has not ended applies, else the
        // newest that has (to say why nothing happens).
        let mut live: Option<usize> = None;
        let mut ended: Option<usize> = None;
        for r in (0..self.rollouts.len()).rev() {
            if self.rollouts[r].member(idx).is_none() {
                continue;
            }
            let rollout = &self.rollouts[r];
            match rollout.state {
                RolloutState::RolledBack { .. } => {
                    if current == Some(rollout.release) {
                        let d = &self.devices[idx as usize];
                        let good = d
                            .lkg
                            .filter(|&l| l != rollout.release)
                            .or(d.previous_good.filter(|&l| l != rollout.release));
                        return Step::Done(match good {
                            Some(lkg) => Decision::Install {
                                release: self.releases[lkg as usize].info.id.clone(),
                                rollout: rollout.id.clone(),
                                reason: InstallReason::Rollback {
                                    from: self.releases[rollout.release as usize].info.id.clone(),
                                },
                            },
                            None => Decision::Stay { reason: StayReason::NoLastKnownGood },
                        });
                    }
                    ended.get_or_insert(r);
                }
                RolloutState::Aborted => {
                    ended.get_or_insert(r);
                }
                _ => {
                    live.get_or_insert(r);
                }
            }
        }
        let Some(r) = live.or(ended) else {
            return Step::Done(Decision::Stay { reason: StayReason::NoRollout });
        };
        let rollout = &self.rollouts[r];
        let rel = rollout.release;
        if current == Some(rel) {
            return Step::Done(Decision::Stay { reason: StayReason::UpToDate });
        }
        let member = rollout.member(idx).expect("member");
        if self.releases[rel as usize].quarantined {
            return Step::Done(Decision::Stay { reason: StayReason::Quarantined });
        }
        match &rollout.state {
            RolloutState::Running | RolloutState::Completed => {}
            other => {
                return Step::Done(Decision::Stay {
                    reason: StayReason::RolloutNotRunning { state: state_reason(other) },
                })
            }
        }
        match member.status {
            MemberStatus::Failed | MemberStatus::Reverted | MemberStatus::Silent => {
                return Step::Done(Decision::Stay { reason: StayReason::FailedBefore });
            }
            MemberStatus::Assigned
            | MemberStatus::Downloaded
            | MemberStatus::Installed
            | MemberStatus::TrialBoot
            | MemberStatus::Committed => return Step::Done(self.install(r, rel, InstallReason::Rollout)),
            MemberStatus::Selected | MemberStatus::SteppingStone => {}
            MemberStatus::Retired => return Step::Done(Decision::Stay { reason: StayReason::NoRollout }),
        }
        // In the current wave's cohort?
        let stratum = &rollout.strata[member.stratum as usize];
        if stratum.threshold.is_none_or(|t| member.hash > t) {
            let next = (rollout.wave + 2).min(rollout.plan.waves.len());
            let permille = |h: u64| ((h as f64 / u64::MAX as f64) * 1000.0).round() as u16;
            return Step::Done(Decision::Stay {
                reason: StayReason::NotInWave {
                    wave: next,
                    cohort_permille: permille(member.hash),
                    admits_permille: stratum.threshold.map_or(0, permille),
                },
            });
        }
        // Maintenance window, in the device's local time.
        if let Some(w) = rollout.plan.window {
            let local_min = ((now.0 / 60_000) as i64 + i64::from(self.devices[idx as usize].utc_offset_min))
                .rem_euclid(1440) as u16;
            if !w.contains(local_min) {
                return Step::Done(Decision::Stay {
                    reason: StayReason::OutsideWindow { opens_in_min: w.minutes_until_open(local_min) },
                });
            }
        }
        // Requirements, met directly or through a stepping stone.
        let (target, reason) = match self.unmet_requirement(idx, rel) {
            None => (rel, InstallReason::Rollout),
            Some(req) => match self.stepping_stone(idx, rel, 0) {
                Some(s) => (s, InstallReason::SteppingStone { toward: self.releases[rel as usize].info.id.clone() }),
                None => return Step::HeldBack { r, requirement: req },
            },
        };
        if member.status == MemberStatus::SteppingStone && target != rel {
            // Already on its way to the stepping stone.
            return Step::Done(self.install(r, target, reason));
        }
        Step::Assign { r, target, reason }
    }

    fn install(&self, r: usize, release: Rel, reason: InstallReason) -> Decision {
        Decision::Install {
            release: self.releases[release as usize].info.id.clone(),
            rollout: self.rollouts[r].id.clone(),
            reason,
        }
    }

    fn take_pacing_slot(&mut self, r: usize) -> bool {
        let now = self.now;
        let rollout = &mut self.rollouts[r];
        let wave = &rollout.plan.waves[rollout.wave];
        if wave.max_concurrent.is_some_and(|max| rollout.in_flight >= max) {
            return false;
        }
        if let Some(per_minute) = wave.per_minute {
            let rate = f64::from(per_minute) / 60_000.0;
            let burst = f64::from(per_minute);
            rollout.tokens = (rollout.tokens + now.since(rollout.tokens_at).as_millis() as f64 * rate).min(burst);
            rollout.tokens_at = now;
            if rollout.tokens < 1.0 {
                return false;
            }
            rollout.tokens -= 1.0;
        }
        true
    }

    /// The first requirement of `rel` the device does not meet, written out.
    fn unmet_requirement(&self, idx: u32, rel: Rel) -> Option<String> {
        let d = &self.devices[idx as usize];
        let release = &self.releases[rel as usize];
        release.requires.iter().find_map(|(c, req)| {
            let have = d.components.iter().find(|(dc, _)| dc == c).map(|(_, v)| v);
            match have {
                Some(v) if req.matches(v) => None,
                Some(v) => Some(format!("{} {req} (device has {v})", self.syms.name(*c))),
                None => Some(format!("{} {req} (device reports none)", self.syms.name(*c))),
            }
        })
    }

    /// A release (not quarantined, compatible with the device) that provides
    /// what `rel` requires and whose own requirements the device meets, or
    /// that can itself be reached through a stepping stone.
    fn stepping_stone(&self, idx: u32, rel: Rel, depth: usize) -> Option<Rel> {
        if depth >= MAX_STEPPING_STONES {
            return None;
        }
        let d = &self.devices[idx as usize];
        let release = &self.releases[rel as usize];
        let unmet: Vec<&(Sym, semver::VersionReq)> = release
            .requires
            .iter()
            .filter(|(c, req)| !d.components.iter().any(|(dc, v)| dc == c && req.matches(v)))
            .collect();
        // Candidates in registration order: deterministic.
        for (s, cand) in self.releases.iter().enumerate() {
            let s = s as Rel;
            if s == rel || cand.quarantined || cand.family != d.family || !cand.hardware.contains(&d.hardware) {
                continue;
            }
            if d.release == Some(s) {
                continue;
            }
            let provides_all =
                unmet.iter().all(|(c, req)| cand.provides.iter().any(|(pc, pv)| pc == c && req.matches(pv)));
            if !provides_all {
                continue;
            }
            if self.unmet_requirement(idx, s).is_none() {
                return Some(s);
            }
            if let Some(deeper) = self.stepping_stone(idx, s, depth + 1) {
                return Some(deeper);
            }
        }
        None
    }

    // ---------------------------------------------------------------- reports

    fn event(&mut self, id: &DeviceId, release: &ReleaseId, event: InstallEvent) {
        let Some(&idx) = self.device_index.get(id.as_str()) else {
            return self.reject(format!("event from unknown device {id}"));
        };
        let Some(&rel) = self.release_index.get(release) else {
            return self.reject(format!("event from {id} about unknown release {release}"));
        };
        let now_s = self.secs(self.now);
        if event == InstallEvent::Committed {
            let d = &mut self.devices[idx as usize];
            d.release = Some(rel);
            if d.lkg != Some(rel) {
                d.previous_good = d.lkg;
                d.lkg = Some(rel);
            }
            // The device now has the components the release provides.
            let provided: Vec<(Sym, semver::Version)> = self.releases[rel as usize].provides.clone();
            let mut comps: Vec<(Sym, semver::Version)> = d.components.to_vec();
            for (c, v) in provided {
                match comps.iter_mut().find(|(dc, _)| *dc == c) {
                    Some(slot) => slot.1 = v,
                    None => comps.push((c, v)),
                }
            }
            d.components = comps.into();
        }
        if matches!(event, InstallEvent::RevertedBoot | InstallEvent::RevertedHealth) {
            let d = &mut self.devices[idx as usize];
            if d.release == Some(rel) {
                d.release = d.lkg;
            }
        }
        for r in 0..self.rollouts.len() {
            let rollout = &mut self.rollouts[r];
            let Some(m) = rollout.members.get_mut(idx as usize).and_then(Option::as_mut) else { continue };
            m.last_seen_s = now_s;
            if m.status == MemberStatus::SteppingStone {
                if rel != rollout.release && event == InstallEvent::Committed {
                    m.set_status(MemberStatus::Selected, &mut rollout.in_flight);
                } else if matches!(
                    event,
                    InstallEvent::Failed | InstallEvent::RevertedBoot | InstallEvent::RevertedHealth
                ) && rel != rollout.release
                {
                    m.set_status(MemberStatus::Failed, &mut rollout.in_flight);
                }
                continue;
            }
            if rollout.release != rel || !m.status.in_progress() {
                continue;
            }
            let before = m.status;
            let c = &mut rollout.strata[m.stratum as usize].counts;
            let installed = before >= MemberStatus::Installed;
            let after = match event {
                InstallEvent::Downloaded => MemberStatus::Downloaded.max(before),
                InstallEvent::Installed | InstallEvent::TrialBoot => {
                    if !installed {
                        c.install.pass();
                    }
                    if event == InstallEvent::TrialBoot {
                        MemberStatus::TrialBoot
                    } else {
                        MemberStatus::Installed.max(before)
                    }
                }
                InstallEvent::Committed => {
                    if !installed {
                        c.install.pass();
                    }
                    c.boot.pass();
                    c.health.pass();
                    MemberStatus::Committed
                }
                InstallEvent::RevertedBoot | InstallEvent::RevertedHealth => {
                    if !installed {
                        c.install.pass();
                    }
                    if event == InstallEvent::RevertedHealth {
                        c.boot.pass();
                        c.health.fail();
                    } else {
                        c.boot.fail();
                    }
                    MemberStatus::Reverted
                }
                InstallEvent::Failed => {
                    if installed {
                        c.boot.fail();
                    } else {
                        c.install.fail();
                    }
                    MemberStatus::Failed
                }
            };
            m.set_status(after, &mut rollout.in_flight);
            rollout.dirty = true;
        }
    }

    fn health(&mut self, id: &DeviceId, sample: &HealthSample) {
        let Some(&idx) = self.device_index.get(id.as_str()) else {
            return self.reject(format!("health report from unknown device {id}"));
        };
        let now_s = self.secs(self.now);
        let current = self.devices[idx as usize].release;
        for r in 0..self.rollouts.len() {
            let rollout = &mut self.rollouts[r];
            if !matches!(rollout.state, RolloutState::Running | RolloutState::Completed | RolloutState::Paused { .. }) {
                continue;
            }
            let Some(m) = rollout.members.get_mut(idx as usize).and_then(Option::as_mut) else { continue };
            m.last_seen_s = now_s;
            let c = &mut rollout.strata[m.stratum as usize].counts;
            if current == Some(rollout.release) && m.status == MemberStatus::Committed {
                c.crash_canary
                    .add(&Exposure { crashes: u64::from(sample.crashes), seconds: u64::from(sample.period_s) });
                let mut bit = 0;
                for g in &rollout.plan.gates {
                    if let GateKind::Metric { metric, max_value, .. } = &g.kind {
                        if let Some((_, v)) = sample.custom.iter().find(|(n, _)| n == metric) {
                            let mask = 1u16 << bit;
                            if m.metric_seen & mask == 0 {
                                m.metric_seen |= mask;
                                c.metric[bit].trials += 1;
                            }
                            if *v > *max_value && m.metric_bad & mask == 0 {
                                m.metric_bad |= mask;
                                c.metric[bit].failures += 1;
                            }
                        }
                        bit += 1;
                    }
                }
                rollout.dirty = true;
            } else if m.status == MemberStatus::Selected && current != Some(rollout.release) {
                c.crash_baseline
                    .add(&Exposure { crashes: u64::from(sample.crashes), seconds: u64::from(sample.period_s) });
                rollout.dirty = true;
            }
        }
    }

    /// Devices silent past the timeout after their assignment count as failed.
    fn expire_silent(&mut self) {
        let now = self.now.0;
        while let Some(&Reverse((deadline, r, idx))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let epoch = self.epoch.0;
            let rollout = &mut self.rollouts[r as usize];
            let timeout_ms = rollout.plan.silence_timeout.as_millis() as u64;
            let Some(m) = rollout.members.get_mut(idx as usize).and_then(Option::as_mut) else { continue };
            if !m.status.in_progress() {
                continue;
            }
            let seen = epoch + u64::from(m.last_seen_s) * 1000;
            if seen + timeout_ms > now {
                self.deadlines.push(Reverse((seen + timeout_ms, r, idx)));
                continue;
            }
            let c = &mut rollout.strata[m.stratum as usize].counts;
            if m.status >= MemberStatus::Installed {
                c.boot.fail();
            } else if m.status != MemberStatus::SteppingStone {
                c.install.fail();
            }
            m.set_status(MemberStatus::Silent, &mut rollout.in_flight);
            rollout.dirty = true;
        }
    }

    // ---------------------------------------------------------------- gates

    fn evaluate_due(&mut self) {
        for r in 0..self.rollouts.len() {
            let rollout = &self.rollouts[r];
            if rollout.state != RolloutState::Running {
                continue;
            }
            let soak_end = rollout.soak_end();
            let due = (rollout.dirty && self.now >= rollout.next_eval) || self.now >= soak_end;
            if due {
                self.evaluate(r);
            }
        }
    }

    /// Evaluates a running rollout's gates and acts on the verdict.
    fn evaluate(&mut self, r: usize) {
        let reports = self.gate_reports(r);
        let rollout = &mut self.rollouts[r];
        rollout.dirty = false;
        rollout.next_eval = self.now.plus(EVAL_INTERVAL);
        // Report verdict changes.
        let wave = rollout.wave + 1;
        let mut changed = Vec::new();
        for rep in &reports {
            let key = (rep.gate.clone(), rep.scope.clone());
            let prev = rollout.verdicts.iter_mut().find(|(g, s, _)| *g == key.0 && *s == key.1);
            match prev {
                Some(p) if p.2 == rep.test.verdict => {}
                Some(p) => {
                    p.2 = rep.test.verdict;
                    changed.push(rep.clone());
                }
                None if rep.test.verdict != Verdict::Undecided => {
                    rollout.verdicts.push((key.0, key.1, rep.test.verdict));
                    changed.push(rep.clone());
                }
                None => {}
            }
        }
        rollout.last_reports = reports.clone();
        let id = rollout.id.clone();
        for report in changed {
            self.outputs.push_back(Output::Gate { rollout: id.clone(), wave, report });
        }
        if let Some(fail) = reports.iter().find(|rep| rep.test.verdict == Verdict::Fail) {
            let t = &fail.test;
            let gate = self.rollouts[r].plan.gates.iter().find(|g| g.name() == fail.gate).expect("reported gate");
            let what = match &gate.kind {
                GateKind::CrashRate { max_ratio, .. } => format!(
                    "{} of {} crashes were on the new release ({:.1}%), above the {:.1}% share that {max_ratio}x the baseline rate allows",
                    t.failures,
                    t.trials,
                    100.0 * t.failures / t.trials,
                    100.0 * t.threshold
                ),
                _ => format!(
                    "{} of {} failed ({:.1}%), above the {}% threshold",
                    t.failures,
                    t.trials,
                    100.0 * t.failures / t.trials,
                    100.0 * t.threshold
                ),
            };
            let scope = fail.scope.describe();
            let reason = format!(
                "gate {} failed for {scope} in wave {wave}: {what}, at {}% confidence",
                fail.gate,
                100.0 * gate.confidence
            );
            let action = self.rollouts[r].plan.on_failure;
            self.halt(r, reason, action);
            return;
        }
        let rollout = &self.rollouts[r];
        let soak_end = rollout.soak_end();
        if self.now < soak_end {
            return;
        }
        let all_pass = rollout.plan.gates.iter().all(|g| {
            reports.iter().any(|rep| rep.gate == g.name() && rep.scope.is_all() && rep.test.verdict == Verdict::Pass)
        });
        if all_pass {
            self.advance(r);
            return;
        }
        if self.now >= soak_end.plus(rollout.plan.max_wait) {
            match rollout.plan.on_inconclusive {
                OnInconclusive::Advance => self.advance(r),
                OnInconclusive::Pause => {
                    let pending: Vec<String> = rollout
                        .plan
                        .gates
                        .iter()
                        .filter(|g| {
                            !reports.iter().any(|rep| {
                                rep.gate == g.name() && rep.scope.is_all() && rep.test.verdict == Verdict::Pass
                            })
                        })
                        .map(|g| {
                            let t = reports
                                .iter()
                                .find(|rep| rep.gate == g.name() && rep.scope.is_all())
                                .map(|rep| rep.test);
                            match t {
                                Some(t) => format!("{} ({} of {} failed)", g.name(), t.failures, t.trials),
                                None => g.name(),
                            }
                        })
                        .collect();
                    let reason = format!(
                        "wave {wave} inconclusive: too few reports to show {} healthy; advance by hand or add devices",
                        pending.join(", ")
                    );
                    self.set_state(r, RolloutState::Paused { reason });
                }
            }
        }
    }

    /// Every gate's test over the whole rollout and per hardware revision
    /// and region (halting tests share α by Bonferroni).
    fn gate_reports(&self, r: usize) -> Vec<GateReport> {
        let rollout = &self.rollouts[r];
        let mut scopes: Vec<(Scope, Counts)> = Vec::new();
        let mut all = Counts::default();
        let mut by_hw: Vec<(Sym, Counts)> = Vec::new();
        let mut by_region: Vec<(Sym, Counts)> = Vec::new();
        for s in &rollout.strata {
            all.add(&s.counts);
            for (list, key) in [(&mut by_hw, s.hardware), (&mut by_region, s.region)] {
                match list.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, c)) => c.add(&s.counts),
                    None => {
                        let mut c = Counts::default();
                        c.add(&s.counts);
                        list.push((key, c));
                    }
                }
            }
        }
        by_hw.sort_by(|a, b| self.syms.name(a.0).cmp(self.syms.name(b.0)));
        by_region.sort_by(|a, b| self.syms.name(a.0).cmp(self.syms.name(b.0)));
        scopes.push((Scope::All, all));
        if by_hw.len() > 1 {
            scopes.extend(by_hw.into_iter().map(|(k, c)| (Scope::Hardware(self.syms.name(k).to_owned()), c)));
        }
        if by_region.len() > 1 {
            scopes.extend(by_region.into_iter().map(|(k, c)| (Scope::Region(self.syms.name(k).to_owned()), c)));
        }
        let m = scopes.len() as f64;
        let mut out = Vec::new();
        let mut metric_bit = 0;
        for g in &rollout.plan.gates {
            let alpha = 1.0 - g.confidence;
            for (i, (scope, c)) in scopes.iter().enumerate() {
                let overall = i == 0;
                // Halting tests at α/m; the pass test (overall only) at α.
                let test = |p: Proportion, theta: f64| -> ProportionTest {
                    let (failures, trials) = (p.failures, p.trials);
                    let halt =
                        stats::test_proportion(failures as f64, trials as f64, theta, alpha / m, g.min_sample as f64);
                    if halt.verdict == Verdict::Fail || !overall {
                        let mut t = halt;
                        if t.verdict == Verdict::Pass {
                            t.verdict = Verdict::Undecided;
                        }
                        return t;
                    }
                    stats::test_proportion(failures as f64, trials as f64, theta, alpha, g.min_sample as f64)
                };
                let t = match &g.kind {
                    GateKind::Install { max_failure_rate } => test(c.install, *max_failure_rate),
                    GateKind::Boot { max_failure_rate } => test(c.boot, *max_failure_rate),
                    GateKind::Health { max_failure_rate } => test(c.health, *max_failure_rate),
                    GateKind::Metric { max_failure_rate, .. } => {
                        test(c.metric.get(metric_bit).copied().unwrap_or_default(), *max_failure_rate)
                    }
                    GateKind::CrashRate { max_ratio, min_exposure_hours } => {
                        let Exposure { crashes: xc, seconds: ec } = c.crash_canary;
                        let Exposure { crashes: xb, seconds: eb } = c.crash_baseline;
                        let hours = ec as f64 / 3600.0;
                        if eb == 0 || ec == 0 {
                            ProportionTest {
                                trials: 0.0,
                                failures: 0.0,
                                threshold: 0.0,
                                evidence_fail: 0.0,
                                evidence_pass: 0.0,
                                bound: (m / alpha).ln(),
                                verdict: Verdict::Undecided,
                            }
                        } else {
                            let q0 = stats::share_for_ratio(*max_ratio, ec as f64, eb as f64);
                            let mut t = stats::test_proportion(xc as f64, (xc + xb) as f64, q0, alpha / m, 0.0);
                            // Crashes are rare, so proving a rate *below* the
                            // tolerance takes very long: enough exposure, no
                            // evidence of harm and an observed ratio within the
                            // tolerance pass.
                            let within = (xc as f64) <= q0 * (xc + xb) as f64;
                            t.verdict = match t.verdict {
                                Verdict::Fail => Verdict::Fail,
                                _ if overall && hours >= *min_exposure_hours && within => Verdict::Pass,
                                _ => Verdict::Undecided,
                            };
                            t
                        }
                    }
                };
                out.push(GateReport { gate: g.name(), scope: scope.clone(), limit: g.limit(), test: t });
            }
            if matches!(g.kind, GateKind::Metric { .. }) {
                metric_bit += 1;
            }
        }
        out
    }

    // ---------------------------------------------------------------- status

    /// A rollout's status: state, wave, per-wave and per-stratum counts, and
    /// the last gate evaluation.
    pub fn status(&self, id: &RolloutId) -> Option<RolloutStatus> {
        let &r = self.rollout_index.get(id)?;
        let rollout = &self.rollouts[r];
        let mut waves = vec![StatusCounts::default(); rollout.plan.waves.len()];
        let mut strata: Vec<(String, StatusCounts)> = rollout
            .strata
            .iter()
            .map(|s| (format!("{}/{}", self.syms.name(s.hardware), self.syms.name(s.region)), StatusCounts::default()))
            .collect();
        for m in rollout.members.iter().flatten() {
            if m.status == MemberStatus::Retired {
                continue;
            }
            if m.status == MemberStatus::Selected {
                strata[m.stratum as usize].1.selected += 1;
                continue;
            }
            for c in [&mut waves[m.wave as usize], &mut strata[m.stratum as usize].1] {
                c.selected += 1;
                c.add(m.status);
            }
        }
        for (&idx, (wave, _, _)) in &rollout.held_back {
            let Some(m) = rollout.member(idx) else { continue };
            if m.status == MemberStatus::Selected {
                let last = waves.len().saturating_sub(1);
                waves[usize::from(*wave).min(last)].held_back += 1;
                strata[m.stratum as usize].1.held_back += 1;
            }
        }
        let held_back = rollout
            .held_back
            .iter()
            .filter(|(&idx, _)| rollout.member(idx).is_some_and(|m| m.status == MemberStatus::Selected))
            .take(MAX_HELD_BACK_LISTED)
            .map(|(_, (wave, id, requirement))| HeldBackDevice {
                device: id.clone(),
                wave: usize::from(*wave) + 1,
                reason: StayReason::HeldBack { requirement: requirement.clone() }.describe(),
            })
            .collect();
        strata.sort_by(|a, b| a.0.cmp(&b.0));
        Some(RolloutStatus {
            held_back,
            rollout: rollout.id.clone(),
            release: self.releases[rollout.release as usize].info.id.clone(),
            state: rollout.state.clone(),
            wave: rollout.wave + 1,
            waves: rollout.plan.waves.len(),
            selected: rollout.selected,
            in_flight: rollout.in_flight,
            per_wave: waves,
            per_stratum: strata,
            gates: rollout.last_reports.clone(),
        })
    }

    /// Whether a release is quarantined.
    pub fn is_quarantined(&self, release: &ReleaseId) -> bool {
        self.release_index.get(release).is_some_and(|&r| self.releases[r as usize].quarantined)
    }

    /// Number of devices known.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }
}

/// The devices of a wave or stratum, by where they are.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCounts {
    pub selected: u64,
    pub assigned: u64,
    /// In the wave's cohort but held back by an unmet requirement.
    pub held_back: u64,
    pub in_progress: u64,
    pub committed: u64,
    pub reverted: u64,
    pub failed: u64,
    pub silent: u64,
}

impl StatusCounts {
    fn add(&mut self, s: MemberStatus) {
        self.assigned += 1;
        match s {
            MemberStatus::Committed => self.committed += 1,
            MemberStatus::Reverted => self.reverted += 1,
            MemberStatus::Failed => self.failed += 1,
            MemberStatus::Silent => self.silent += 1,
            _ => self.in_progress += 1,
        }
    }
}

/// What `Controller::status` returns.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub rollout: RolloutId,
    pub release: ReleaseId,
    pub state: RolloutState,
    /// Current wave, from 1.
    pub wave: usize,
    pub waves: usize,
    pub selected: u64,
    pub in_flight: u64,
    pub per_wave: Vec<StatusCounts>,
    /// Keyed `hardware/region`.
    pub per_stratum: Vec<(String, StatusCounts)>,
    pub gates: Vec<GateReport>,
    /// Devices held back by a requirement (at most [`MAX_HELD_BACK_LISTED`]), with why.
    pub held_back: Vec<HeldBackDevice>,
}

/// Held-back devices a status lists.
pub const MAX_HELD_BACK_LISTED: usize = 100;

/// A device held back from a rollout, and why.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldBackDevice {
    pub device: DeviceId,
    /// The wave whose cohort admitted it, from 1.
    pub wave: usize,
    pub reason: String,
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
