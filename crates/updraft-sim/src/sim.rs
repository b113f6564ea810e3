//! The simulator: event queue, device shell, controller shell, checkers.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use updraft_agent_core::{
    boot, Agent, Assignment, BootRecord, Booted, Effect, Event, Facts, Header, Input as AInput, Installed, Journal,
    Phase, Slot,
};
use updraft_rollout::{
    Command, Controller, Decision, DeviceInfo, Input, InstallEvent, InstallReason, Output, Plan, ReleaseInfo,
    RolloutState,
};
use updraft_types::{DeviceId, ReleaseId, RolloutId, Sha256Digest, UnixMs};

use crate::baseline::{Baseline, Kind};
use crate::model::{Fleet, Release};

/// Simulated time starts at this instant (Monday 2027-01-04 00:00 UTC), so
/// maintenance windows line up with the simulated clock.
pub const EPOCH_MS: u64 = 1_799_020_800_000;
const BASE: u8 = 0;
const CAND: u8 = 1;
const NONE: u8 = u8::MAX;
const UP: u32 = u32::MAX;
/// How long the device's health checks take.
const HEALTH_CHECK: Duration = Duration::from_secs(30);
/// A device syncs the slot every this many bytes while writing it.
const SYNC_EVERY: u64 = 1 << 20;

const EXPOSED: u8 = 1;
const EXPOSED_FAILED: u8 = 2;

/// Errors that stop a simulation before it runs.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid fleet model: {0}")]
    Fleet(String),
    #[error("invalid release model: {0}")]
    Release(String),
    #[error("the rollout controller refused the setup: {0}")]
    Setup(String),
}

/// Where the run is, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub sim_s: u64,
    pub end_s: u64,
    pub events: u64,
}

/// Something the rollout did, at a simulated time.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineEntry {
    /// Seconds since the start.
    pub t_s: u64,
    /// `state`, `wave`, `gate` (a verdict changed), `quarantine`, `rejected`.
    pub kind: &'static str,
    pub what: String,
}

/// The fleet at one instant (every 10 simulated minutes).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub t_s: u64,
    /// Online devices running the release.
    pub on_release: u64,
    /// Devices with an update in progress.
    pub updating: u64,
    pub downloads: u64,
}

/// Downtime per online device: time not running healthy firmware (reboots,
/// failed trial boots, unhealthy trials).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Downtime {
    pub p50_s: u64,
    pub p99_s: u64,
    pub max_s: u64,
    pub total_device_hours: f64,
}

/// What happened in one stratum (a hardware revision or a region).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StratumOutcome {
    /// `hardware=rev-x`, `region=eu`.
    pub scope: String,
    /// Online devices of the release's family.
    pub devices: u64,
    /// Given the release before the halt that stopped them (the stratum's own or the rollout's).
    pub given: u64,
    /// Of those, installs that failed or reverted.
    pub failed: u64,
    /// When the stratum stopped: its own halt, or the rollout's.
    pub halted_at_s: Option<u64>,
    /// Whether the stratum halted on its own (`on_failure_scope = "stratum"`).
    pub own_halt: bool,
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub policy: Policy,
    pub seed: u64,
    pub release: String,
    pub base: String,
    pub devices: u64,
    pub online: u64,
    /// Online devices of the release's family.
    pub eligible: u64,
    pub final_state: String,
    pub final_reason: Option<String>,
    pub timeline: Vec<TimelineEntry>,
    /// When the rollout first halted (paused, rolled back or aborted).
    pub halted_at_s: Option<u64>,
    /// When the rollout completed (its last wave opened to every device).
    pub completed_at_s: Option<u64>,
    /// Devices that were given the release before the halt (or in all, without one).
    pub exposed: u64,
    /// Of those, devices whose install failed or reverted.
    pub exposed_failed: u64,
    /// When every online device ran the release.
    pub time_to_full_s: Option<u64>,
    pub on_release: u64,
    pub on_base: u64,
    pub committed: u64,
    pub reverted_boot: u64,
    pub reverted_health: u64,
    pub failed: u64,
    /// Devices given back their last known good release that committed it.
    pub rollbacks: u64,
    pub power_cuts: u64,
    pub download_retries: u64,
    pub peak_downloads: u64,
    pub peak_bandwidth_mbps: f64,
    pub downtime: Downtime,
    pub check_ins: u64,
    pub events: u64,
    pub sim_s: u64,
    /// Hash of every event processed, in order: the same seed gives the same hash.
    pub hash: String,
    /// Invariant violations found by the checkers (empty on a good run).
    pub violations: Vec<String>,
    /// Each hardware revision and region: its devices, how many were given
    /// the release before a halt stopped them, and when that was.
    pub strata: Vec<StratumOutcome>,
    /// The fleet every 10 simulated minutes.
    pub series: Vec<Sample>,
}

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    fn poisson(&mut self, lambda: f64) -> u32 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            // Normal approximation, plenty for crash counts.
            let (u1, u2) = (self.unit().max(1e-12), self.unit());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            return (lambda + z * lambda.sqrt()).round().max(0.0) as u32;
        }
        let l = (-lambda).exp();
        let (mut k, mut p) = (0u32, 1.0f64);
        loop {
            p *= self.unit();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct SlotImg {
    rel: u8,
    synced: u64,
}

/// An idle device: a few dozen bytes.
struct Dev {
    group: u16,
    online: bool,
    flags: u8,
    /// The release in the slot that runs.
    rel: u8,
    active: bool,
    gen: u32,
    record: BootRecord,
    slots: [SlotImg; 2],
    last_health_s: u32,
    downtime_s: u32,
    down_since_s: u32,
    /// Local clock offset from UTC, skew included (maintenance windows).
    utc_offset_min: i16,
}

/// A device that is updating: its agent, and its journal on "disk".
struct Active {
    agent: Option<Agent>,
    disk: Option<Box<Journal>>,
    /// Cut the power at this effect (0: not in this update).
    cut_at: u32,
    effects: u32,
    downloading: Option<u64>,
    tick_at: Option<u64>,
    /// Whether the trial boot of this update hangs, decided up front and
    /// compared with the release's `boot_fail` (uniform in [0, 1)).
    trial_roll: f64,
}

enum Ev {
    Poll,
    Tick,
    CheckIn,
    Deliver(Box<AInput>),
    StreamEnd { synced: u64, ok: bool },
    Report(Box<Event>),
    Boot,
    Audit,
    Sample,
}

struct Item {
    t: u64,
    seq: u64,
    dev: u32,
    gen: u32,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.t, o.seq).cmp(&(self.t, self.seq))
    }
}

/// A calendar queue: one bucket per simulated second over a ring of
/// `RING` seconds, a heap for later events. Pops in (time, seq) order,
/// like a binary heap, but touches memory in order (a heap of millions of
/// events spends its time in cache misses).
struct Queue {
    ring: Vec<Vec<Item>>,
    /// The second being drained, sorted latest first.
    current: Vec<Item>,
    cur_s: u64,
    far: BinaryHeap<Item>,
    len: usize,
}

const RING: u64 = 1 << 14;

impl Queue {
    fn new() -> Queue {
        Queue {
            ring: (0..RING).map(|_| Vec::new()).collect(),
            current: Vec::new(),
            cur_s: 0,
            far: BinaryHeap::new(),
            len: 0,
        }
    }

    fn push(&mut self, item: Item) {
        self.len += 1;
        let s = item.t / 1000;
        if s <= self.cur_s {
            // Keep `current` sorted latest first (`Item`'s order is reversed).
            let at = self.current.partition_point(|x| x < &item);
            self.current.insert(at, item);
        } else if s < self.cur_s + RING {
            self.ring[(s % RING) as usize].push(item);
        } else {
            self.far.push(item);
        }
    }

    /// Brings the next event to the end of `current`.
    fn fill(&mut self) -> bool {
        if self.len == 0 {
            return false;
        }
        while self.current.is_empty() {
            self.cur_s += 1;
            // Take the bucket (its capacity goes with it; the old empty
            // `current` is freed, so idle buckets hold no memory).
            self.current = std::mem::take(&mut self.ring[(self.cur_s % RING) as usize]);
            while self.far.peek().is_some_and(|i| i.t / 1000 == self.cur_s) {
                let i = self.far.pop().expect("an item");
                self.current.push(i);
            }
            self.current.sort_unstable();
        }
        true
    }

    fn peek_t(&mut self) -> Option<u64> {
        if self.fill() {
            self.current.last().map(|i| i.t)
        } else {
            None
        }
    }

    fn pop(&mut self) -> Option<Item> {
        self.fill();
        let i = self.current.pop()?;
        self.len -= 1;
        Some(i)
    }
}

struct GroupRt {
    hw: u16,
    region: u16,
    kbps: u64,
    latency_ms: u64,
    loss: f64,
}

/// What a run is given: the models, the releases and the derived settings.
struct Setup<'a> {
    policy: Policy,
    fleet: &'a Fleet,
    plan: &'a Plan,
    ids: [ReleaseId; 2],
    headers: [Header; 2],
    image: u64,
    hw_names: Vec<String>,
    /// Outage windows per region, in ms since the start.
    outages: Vec<Vec<(u64, u64)>>,
    region_names: Vec<String>,
    /// (boot_fail, health_fail, crash_factor) per release and group.
    beh: [Vec<(f64, f64, f64)>; 2],
    poll_ms: u64,
    health_s: u32,
    reboot_ms: u64,
}

/// What happened, counted: the report's figures.
#[derive(Default)]
struct Tally {
    events: u64,
    check_ins: u64,
    committed: u64,
    reverted_boot: u64,
    reverted_health: u64,
    failed: u64,
    rollbacks: u64,
    power_cuts: u64,
    retries: u64,
    downloads: u64,
    bandwidth: u64,
    peak_downloads: u64,
    peak_bandwidth: u64,
}

/// One run: its setup, the world's state (devices, the event queue, the
/// decider, the rollout as seen from outside) and the tally.
struct Sim<'a> {
    cfg: Setup<'a>,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: Queue,
    devs: Vec<Dev>,
    active: HashMap<u32, Active>,
    ctl: Decider,
    rollout: RolloutId,
    groups: Vec<GroupRt>,
    // What happened.
    hash: u64,
    tally: Tally,
    timeline: Vec<TimelineEntry>,
    state: RolloutState,
    halted_at: Option<u64>,
    completed_at: Option<u64>,
    /// When each hardware revision and region was halted on its own
    /// (`on_failure_scope = "stratum"`), by index.
    halted_hw: Vec<Option<u64>>,
    halted_region: Vec<Option<u64>>,
    stop_at: Option<u64>,
    /// When a device was last given an install.
    last_assign: u64,
    quarantined: bool,
    wave: usize,
    installs: VecDeque<u64>,
    online: u64,
    /// Online devices of the release's family.
    eligible: u64,
    on: [u64; 2],
    time_to_full: Option<u64>,
    violations: Vec<String>,
    series: Vec<Sample>,
    trace: Option<u32>,
    idbuf: DeviceId,
}

fn digest(rel: u8) -> Sha256Digest {
    Sha256Digest([rel.wrapping_add(0x5a); 32])
}

fn device_id(i: u32) -> DeviceId {
    DeviceId::new(format!("dev-{i:07}"))
}

fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x0100_0000_01b3).rotate_left(29)
}

/// Who decides: Updraft's controller, or a baseline policy for comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Updraft,
    Hawkbit,
    AwsIotJobs,
}

impl Policy {
    pub fn label(self) -> &'static str {
        match self {
            Policy::Updraft => "Updraft gates",
            Policy::Hawkbit => "hawkBit groups",
            Policy::AwsIotJobs => "AWS IoT Jobs abort",
        }
    }
}

enum Decider {
    Updraft(Box<Controller>),
    Baseline(Box<Baseline>),
}

impl Decider {
    fn handle(&mut self, now: UnixMs, input: Input) {
        match self {
            Decider::Updraft(c) => c.handle(now, input),
            Decider::Baseline(b) => b.handle(now, input),
        }
    }

    fn poll_output(&mut self) -> Option<Output> {
        match self {
            Decider::Updraft(c) => c.poll_output(),
            Decider::Baseline(b) => b.poll_output(),
        }
    }

    fn poll_timeout(&self) -> Option<UnixMs> {
        match self {
            Decider::Updraft(c) => c.poll_timeout(),
            Decider::Baseline(_) => None,
        }
    }

    fn peek_check_in(&self, now: UnixMs, device: &DeviceId, release: Option<&ReleaseId>) -> Option<Decision> {
        match self {
            Decider::Updraft(c) => c.peek_check_in(now, device, release),
            Decider::Baseline(_) => None,
        }
    }

    fn status(&self, id: &RolloutId) -> Option<updraft_rollout::RolloutStatus> {
        match self {
            Decider::Updraft(c) => c.status(id),
            Decider::Baseline(_) => None,
        }
    }

    fn device_count(&self) -> usize {
        match self {
            Decider::Updraft(c) => c.device_count(),
            Decider::Baseline(b) => b.device_count(),
        }
    }
}

/// Runs one simulation with Updraft's rollout controller.
pub fn run(
    fleet: &Fleet,
    release: &Release,
    plan: &Plan,
    seed: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, SimError> {
    run_with(Policy::Updraft, fleet, release, plan, seed, progress)
}

/// Runs one simulation with the given policy deciding.
pub fn run_with(
    policy: Policy,
    fleet: &Fleet,
    release: &Release,
    plan: &Plan,
    seed: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, SimError> {
    fleet.validate().map_err(SimError::Fleet)?;
    release.validate().map_err(SimError::Release)?;
    let mut sim = Sim::new(policy, fleet, release, plan, seed)?;
    sim.run(progress);
    Ok(sim.report(seed, release))
}

impl<'a> Sim<'a> {
    fn new(policy: Policy, fleet: &'a Fleet, release: &Release, plan: &'a Plan, seed: u64) -> Result<Self, SimError> {
        let mut hw_names: Vec<String> = Vec::new();
        let mut regions: Vec<String> = Vec::new();
        let mut groups = Vec::new();
        for g in &fleet.groups {
            let idx = |names: &mut Vec<String>, n: &str| match names.iter().position(|x| x == n) {
                Some(i) => i as u16,
                None => {
                    names.push(n.to_owned());
                    (names.len() - 1) as u16
                }
            };
            let hw = idx(&mut hw_names, &g.hardware);
            let region = idx(&mut regions, &g.region);
            let (kbps, latency_ms, loss) = match fleet.connectivity.iter().find(|c| c.name == g.connectivity) {
                Some(c) => (c.kbps, c.latency.as_millis() as u64, c.loss),
                None => (2_000, 200, 0.0),
            };
            groups.push(GroupRt { hw, region, kbps, latency_ms, loss });
        }
        let outages = regions
            .iter()
            .map(|r| {
                fleet
                    .outages
                    .iter()
                    .filter(|o| &o.region == r)
                    .map(|o| (o.start.as_millis() as u64, (o.start + o.duration).as_millis() as u64))
                    .collect()
            })
            .collect();
        let beh_of = |rel: Option<&Release>| {
            fleet
                .groups
                .iter()
                .map(|g| match rel {
                    Some(r) => {
                        let b = r.on(&g.hardware, &g.region);
                        (b.boot_fail, b.health_fail, b.crash_factor)
                    }
                    None => (0.0, 0.0, 1.0),
                })
                .collect::<Vec<_>>()
        };
        let beh = [beh_of(None), beh_of(Some(release))];
        let ids = [ReleaseId::new(release.base_id()), ReleaseId::new(release.id())];
        let image = release.image_mib << 20;
        let header = |rel: u8| Header {
            release: ids[rel as usize].clone(),
            family: fleet.family.clone(),
            hardware: hw_names.clone(),
            security_version: 1,
            requires: Vec::new(),
            image_size: image,
            image_sha256: digest(rel),
        };
        let headers = [header(BASE), header(CAND)];
        let mut sim = Sim {
            cfg: Setup {
                policy,
                fleet,
                plan,
                ids,
                headers,
                image,
                hw_names,
                region_names: regions,
                outages,
                beh,
                poll_ms: fleet.poll.as_millis() as u64,
                health_s: fleet.health_every.as_secs() as u32,
                reboot_ms: fleet.reboot.as_millis() as u64,
            },
            rng: Rng(seed),
            now: 0,
            seq: 0,
            queue: Queue::new(),
            devs: Vec::with_capacity(fleet.device_count() as usize),
            active: HashMap::new(),
            ctl: match policy {
                Policy::Updraft => Decider::Updraft(Box::new(Controller::new(UnixMs(EPOCH_MS)))),
                Policy::Hawkbit => Decider::Baseline(Box::new(Baseline::new(Kind::Hawkbit, UnixMs(EPOCH_MS)))),
                Policy::AwsIotJobs => Decider::Baseline(Box::new(Baseline::new(Kind::AwsIotJobs, UnixMs(EPOCH_MS)))),
            },
            rollout: RolloutId::new("rehearsal"),
            groups,
            hash: 0xcbf2_9ce4_8422_2325 ^ seed,
            tally: Tally::default(),
            timeline: Vec::new(),
            state: RolloutState::Created,
            halted_at: None,
            completed_at: None,
            halted_hw: Vec::new(),
            halted_region: Vec::new(),
            stop_at: None,
            last_assign: 0,
            quarantined: false,
            wave: 1,
            installs: VecDeque::new(),
            online: 0,
            eligible: 0,
            on: [0; 2],
            time_to_full: None,
            violations: Vec::new(),
            series: Vec::new(),
            idbuf: DeviceId::new(String::with_capacity(16)),
            trace: std::env::var("UPDRAFT_SIM_TRACE").ok().and_then(|v| v.parse().ok()),
        };
        sim.setup()?;
        sim.halted_hw = vec![None; sim.cfg.hw_names.len()];
        sim.halted_region = vec![None; sim.cfg.region_names.len()];
        Ok(sim)
    }

    fn at(&self) -> UnixMs {
        UnixMs(EPOCH_MS + self.now)
    }

    fn schedule(&mut self, t: u64, dev: u32, gen: u32, ev: Ev) {
        self.seq += 1;
        self.queue.push(Item { t, seq: self.seq, dev, gen, ev });
    }

    fn jitter(&mut self, d: u64) -> u64 {
        d + (d as f64 * 0.25 * self.rng.unit()) as u64
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 100 {
            self.violations.push(format!("t={}s: {what}", self.now / 1000));
        }
    }

    fn setup(&mut self) -> Result<(), SimError> {
        let hardware = self.cfg.hw_names.clone();
        for id in self.cfg.ids.clone() {
            self.ctl.handle(
                self.at(),
                Input::Release(ReleaseInfo {
                    id,
                    family: self.cfg.fleet.family.clone(),
                    hardware: hardware.clone(),
                    requires: Vec::new(),
                    provides: Vec::new(),
                }),
            );
        }
        let mut i = 0u32;
        let regions: Vec<&str> = self.cfg.fleet.groups.iter().map(|g| g.region.as_str()).collect();
        for (gi, g) in self.cfg.fleet.groups.iter().enumerate() {
            for _ in 0..g.count {
                let online = !self.rng.chance(g.offline);
                let skew_min = (g.clock_skew.as_secs() / 60) as f64;
                let skew = if skew_min > 0.0 { ((self.rng.unit() * 2.0 - 1.0) * skew_min).round() as i16 } else { 0 };
                self.ctl.handle(
                    self.at(),
                    Input::Device(DeviceInfo {
                        id: device_id(i),
                        family: g.family(self.cfg.fleet).to_owned(),
                        hardware: g.hardware.clone(),
                        region: regions[gi].to_owned(),
                        tags: Vec::new(),
                        channel: None,
                        release: Some(self.cfg.ids[0].clone()),
                        last_known_good: Some(self.cfg.ids[0].clone()),
                        components: g
                            .components
                            .iter()
                            .filter_map(|(c, v)| Some((c.clone(), semver::Version::parse(v).ok()?)))
                            .collect(),
                        utc_offset_min: g.utc_offset_min.saturating_add(skew),
                    }),
                );
                let empty = SlotImg { rel: NONE, synced: 0 };
                self.devs.push(Dev {
                    group: gi as u16,
                    online,
                    flags: 0,
                    rel: BASE,
                    active: false,
                    gen: 0,
                    record: BootRecord::fresh(Slot::A),
                    slots: [SlotImg { rel: BASE, synced: self.cfg.image }, empty],
                    last_health_s: 0,
                    downtime_s: 0,
                    down_since_s: UP,
                    utc_offset_min: g.utc_offset_min.saturating_add(skew),
                });
                if online && g.family(self.cfg.fleet) == self.cfg.fleet.family {
                    self.eligible += 1;
                }
                if online {
                    self.online += 1;
                    self.on[BASE as usize] += 1;
                    let t = (self.cfg.poll_ms as f64 * self.rng.unit()) as u64;
                    self.schedule(t, i, 0, Ev::Poll);
                }
                i += 1;
            }
        }
        let id = self.rollout.clone();
        let rel = self.cfg.ids[1].clone();
        self.ctl.handle(self.at(), Input::CreateRollout { id: id.clone(), release: rel, plan: self.cfg.plan.clone() });
        self.ctl.handle(self.at(), Input::Command { rollout: id, command: Command::Start });
        while let Some(o) = self.ctl.poll_output() {
            if let Output::Rejected { reason } = o {
                return Err(SimError::Setup(reason));
            }
            self.output(o);
        }
        self.schedule(3_600_000, u32::MAX, 0, Ev::Audit);
        self.schedule(0, u32::MAX, 0, Ev::Sample);
        Ok(())
    }

    fn output(&mut self, o: Output) -> Option<Decision> {
        let t_s = self.now / 1000;
        let mut kind = "state";
        let what = match o {
            Output::Decision { decision, .. } => return Some(decision),
            Output::StateChanged { state, .. } => {
                self.hash = mix(self.hash, 0x57a7e ^ self.now);
                let what = match &state {
                    RolloutState::Paused { reason } | RolloutState::RolledBack { reason } => {
                        format!("{}: {reason}", state.name())
                    }
                    other => other.name().to_owned(),
                };
                if matches!(
                    state,
                    RolloutState::Paused { .. } | RolloutState::RolledBack { .. } | RolloutState::Aborted
                ) {
                    self.halted_at.get_or_insert(self.now);
                }
                if state == RolloutState::Completed {
                    self.completed_at.get_or_insert(self.now);
                }
                self.stop_at = match state {
                    RolloutState::Running | RolloutState::Created => None,
                    _ => Some(self.now + 3 * self.cfg.poll_ms),
                };
                self.state = state;
                what
            }
            Output::WaveStarted { wave, target_devices, .. } => {
                kind = "wave";
                self.wave = wave;
                format!("wave {wave} started: {target_devices} devices")
            }
            Output::Gate { wave, report, .. } => {
                kind = "gate";
                let t = &report.test;
                format!(
                    "wave {wave} gate {} [{}]: {:?} ({} of {} failed, threshold {})",
                    report.gate, report.scope, t.verdict, t.failures, t.trials, t.threshold
                )
            }
            Output::StratumHalted { scope, reason, rolled_back, .. } => {
                kind = "stratum";
                match &scope {
                    updraft_rollout::Scope::Hardware(h) => {
                        if let Some(i) = self.cfg.hw_names.iter().position(|x| x == h) {
                            self.halted_hw[i].get_or_insert(self.now);
                        }
                    }
                    updraft_rollout::Scope::Region(g) => {
                        if let Some(i) = self.cfg.region_names.iter().position(|x| x == g) {
                            self.halted_region[i].get_or_insert(self.now);
                        }
                    }
                    _ => {}
                }
                format!("stratum {scope} {}: {reason}", if rolled_back { "rolled back" } else { "paused" })
            }
            Output::Quarantined { release, .. } => {
                kind = "quarantine";
                self.quarantined = true;
                format!("release {release} quarantined")
            }
            Output::Rejected { reason } => {
                kind = "rejected";
                format!("controller rejected an input: {reason}")
            }
        };
        self.timeline.push(TimelineEntry { t_s, kind, what });
        None
    }

    /// Feeds the controller and returns the decision, if one came out.
    fn control(&mut self, input: Input) -> Option<Decision> {
        self.ctl.handle(self.at(), input);
        let mut d = None;
        while let Some(o) = self.ctl.poll_output() {
            if let Some(x) = self.output(o) {
                d = Some(x);
            }
        }
        d
    }

    fn in_outage(&self, dev: u32) -> bool {
        let region = self.groups[self.devs[dev as usize].group as usize].region as usize;
        self.cfg.outages[region].iter().any(|&(a, b)| self.now >= a && self.now < b)
    }

    fn rel_index(&self, r: &ReleaseId) -> u8 {
        if r == &self.cfg.ids[1] {
            CAND
        } else {
            BASE
        }
    }

    fn run(&mut self, progress: &mut dyn FnMut(Progress)) {
        let end = self.cfg.fleet.duration.as_millis() as u64;
        let mut last_ctl = u64::MAX;
        loop {
            let next_ev = self.queue.peek_t();
            let next_ctl = self.ctl.poll_timeout().map(|t| t.0.saturating_sub(EPOCH_MS)).map(|t| {
                // Never tick twice at one instant.
                if last_ctl != u64::MAX && t <= last_ctl {
                    last_ctl + 1000
                } else {
                    t
                }
            });
            let ctl_first = match (next_ev, next_ctl) {
                (None, None) => break,
                (Some(e), Some(c)) => c <= e,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            let t = if ctl_first { next_ctl.expect("a time") } else { next_ev.expect("a time") };
            // A completed rollout still reaches devices that check in late
            // or wait for their window: run until every online device has
            // the release, or a day passes without a new install.
            let settled = match self.state {
                RolloutState::Completed => {
                    self.active.is_empty()
                        && (self.on[CAND as usize] == self.eligible || t > self.last_assign + 25 * 3_600_000)
                }
                _ => self.stop_at.is_some_and(|s| t > s && self.active.is_empty()),
            };
            if t > end || settled {
                break;
            }
            self.now = self.now.max(t);
            if ctl_first {
                last_ctl = t;
                self.control(Input::Tick);
                continue;
            }
            let item = self.queue.pop().expect("an event");
            if item.dev != u32::MAX && self.devs[item.dev as usize].gen != item.gen {
                continue;
            }
            self.tally.events += 1;
            self.hash = mix(self.hash, item.t ^ (u64::from(item.dev) << 40));
            if self.tally.events & 0xffff == 0 {
                progress(Progress { sim_s: self.now / 1000, end_s: end / 1000, events: self.tally.events });
            }
            let d = item.dev;
            if self.trace == Some(d) {
                self.trace_event(d, &item.ev);
            }
            match item.ev {
                Ev::Poll => self.poll(d),
                Ev::Tick => {
                    if let Some(a) = self.active.get_mut(&d) {
                        a.tick_at = None;
                    }
                    self.drive(d, AInput::Tick);
                }
                Ev::CheckIn => self.agent_check_in(d),
                Ev::Deliver(input) => self.drive(d, *input),
                Ev::StreamEnd { synced, ok } => self.stream_end(d, synced, ok),
                Ev::Report(e) => self.report_event(d, *e),
                Ev::Boot => self.boot(d),
                Ev::Audit => self.audit(),
                Ev::Sample => {
                    self.series.push(Sample {
                        t_s: self.now / 1000,
                        on_release: self.on[CAND as usize],
                        updating: self.active.len() as u64,
                        downloads: self.tally.downloads,
                    });
                    self.schedule(self.now + 600_000, u32::MAX, 0, Ev::Sample);
                }
            }
        }
        progress(Progress { sim_s: self.now / 1000, end_s: end / 1000, events: self.tally.events });
    }

    /// An idle device's check-in (with its health sample).
    fn poll(&mut self, d: u32) {
        let next = self.now + self.jitter(self.cfg.poll_ms);
        if self.in_outage(d) {
            let gen = self.devs[d as usize].gen;
            self.schedule(next, d, gen, Ev::Poll);
            return;
        }
        self.health(d);
        self.tally.check_ins += 1;
        let rel = self.devs[d as usize].rel;
        // The read-only fast path first, as the server's replicas answer.
        self.idbuf.0.clear();
        let _ = write!(self.idbuf.0, "dev-{d:07}");
        let decision = match self.ctl.peek_check_in(self.at(), &self.idbuf, Some(&self.cfg.ids[rel as usize])) {
            Some(decision) => Some(decision),
            None => {
                self.control(Input::CheckIn { device: device_id(d), release: Some(self.cfg.ids[rel as usize].clone()) })
            }
        };
        match decision {
            Some(Decision::Install { release, reason, .. }) => {
                self.check_install(d, &release, &reason);
                self.check_window(d, &reason);
                self.last_assign = self.now;
                if release == self.cfg.ids[1] && self.halted_at.is_none() && self.stratum_halted(d).is_none() {
                    self.devs[d as usize].flags |= EXPOSED;
                }
                self.activate(d);
            }
            _ => {
                let gen = self.devs[d as usize].gen;
                self.schedule(next, d, gen, Ev::Poll);
            }
        }
    }

    fn health(&mut self, d: u32) {
        let now_s = (self.now / 1000) as u32;
        let dev = &self.devs[d as usize];
        let period = now_s.saturating_sub(dev.last_health_s);
        if period < self.cfg.health_s {
            return;
        }
        let factor = self.cfg.beh[dev.rel as usize][dev.group as usize].2;
        let crashes = self.rng.poisson(self.cfg.fleet.base_crash_rate * factor * f64::from(period) / 3600.0);
        self.devs[d as usize].last_health_s = now_s;
        self.control(Input::Health {
            device: device_id(d),
            sample: updraft_rollout::HealthSample { period_s: period, boots: 0, crashes, custom: Vec::new() },
        });
    }

    /// When the device's hardware revision or region was halted on its own, if it was.
    fn stratum_halted(&self, d: u32) -> Option<u64> {
        let g = &self.groups[self.devs[d as usize].group as usize];
        let hw = self.halted_hw.get(g.hw as usize).copied().flatten();
        let region = self.halted_region.get(g.region as usize).copied().flatten();
        hw.into_iter().chain(region).min()
    }

    fn check_install(&mut self, d: u32, release: &ReleaseId, reason: &InstallReason) {
        if self.quarantined && release == &self.cfg.ids[1] {
            self.violation(format!("{release} was assigned after it was quarantined"));
        }
        if release == &self.cfg.ids[1] && self.stratum_halted(d).is_some() {
            self.violation(format!("device {d} was assigned {release} after its stratum was halted"));
        }
        if matches!(reason, InstallReason::Rollout) {
            let wave = self.wave.saturating_sub(1).min(self.cfg.plan.waves.len() - 1);
            if let Some(per_minute) = self.cfg.plan.waves[wave].per_minute {
                self.installs.push_back(self.now);
                while self.installs.front().is_some_and(|&t| t + 60_000 <= self.now) {
                    self.installs.pop_front();
                }
                // A token bucket allows a full burst plus the refill in any minute.
                if self.installs.len() as u64 > 2 * u64::from(per_minute) {
                    self.violation(format!(
                        "{} installs started within a minute; the wave allows {per_minute} per minute",
                        self.installs.len()
                    ));
                }
            }
        }
    }

    /// A new assignment falls inside the plan's window in the device's local time.
    fn check_window(&mut self, d: u32, reason: &InstallReason) {
        let (Some(w), InstallReason::Rollout) = (&self.cfg.plan.window, reason) else { return };
        let utc_min = ((EPOCH_MS + self.now) / 60_000) as i64;
        let local = (utc_min + i64::from(self.devs[d as usize].utc_offset_min)).rem_euclid(1440) as u16;
        if !w.contains(local) {
            self.violation(format!("device {d} was assigned the release at local minute {local}, outside the window"));
        }
    }

    /// `UPDRAFT_SIM_TRACE=<device index>`: every event of one device on stderr.
    fn trace_event(&self, d: u32, ev: &Ev) {
        let what = match ev {
            Ev::Poll => "check-in (idle)".to_owned(),
            Ev::Tick => "agent tick".into(),
            Ev::CheckIn => "agent check-in".into(),
            Ev::Deliver(i) => format!("{i:?}"),
            Ev::StreamEnd { synced, ok } => format!("download ends at {synced} bytes, ok: {ok}"),
            Ev::Report(e) => format!("report {e:?}"),
            Ev::Boot => format!("boot {:?}", self.devs[d as usize].record),
            Ev::Audit | Ev::Sample => String::new(),
        };
        eprintln!("t={}ms dev-{d:07} runs {}: {what}", self.now, self.devs[d as usize].rel);
    }

    fn facts(&self, d: u32) -> Facts {
        let hw = self.groups[self.devs[d as usize].group as usize].hw as usize;
        let group = &self.cfg.fleet.groups[self.devs[d as usize].group as usize];
        Facts {
            family: group.family(self.cfg.fleet).to_owned(),
            hardware: self.cfg.hw_names[hw].clone(),
            components: Vec::new(),
        }
    }

    /// Gives an idle device its agent, as it is on the device: resumed from
    /// a journal that says what is installed.
    fn activate(&mut self, d: u32) {
        let dev = &mut self.devs[d as usize];
        dev.active = true;
        dev.gen += 1;
        let (_, booted) = boot(dev.record);
        let journal = Journal::new(Installed {
            release: Some(self.cfg.ids[dev.rel as usize].clone()),
            security_version: 1,
            slot: booted.slot,
        });
        let record = dev.record;
        let cut_at = if self.rng.chance(self.cfg.fleet.power_loss) { 1 + (self.rng.next() % 24) as u32 } else { 0 };
        let mut agent = Agent::new(self.cfg.fleet.poll);
        let seed = self.rng.next();
        let trial_roll = self.rng.unit();
        // The journal on the device's disk says what is installed.
        let disk = Some(Box::new(journal));
        agent.handle(self.at(), AInput::Started { journal: disk.clone(), record, booted, facts: self.facts(d), seed });
        self.active.insert(
            d,
            Active { agent: Some(agent), disk, cut_at, effects: 0, downloading: None, tick_at: None, trial_roll },
        );
        self.drive(d, AInput::Tick);
    }

    /// Feeds the agent one input and performs its effects, until it waits.
    fn drive(&mut self, d: u32, input: AInput) {
        let Some(mut act) = self.active.remove(&d) else { return };
        if act.agent.is_none() {
            self.active.insert(d, act);
            return;
        }
        let gen = self.devs[d as usize].gen;
        let g = &self.groups[self.devs[d as usize].group as usize];
        let (latency, kbps, loss) = (g.latency_ms, g.kbps, g.loss);
        let mut inputs = vec![input];
        'outer: while let Some(input) = inputs.pop() {
            let agent = act.agent.as_mut().expect("a running agent");
            agent.handle(self.at(), input);
            while let Some(e) = act.agent.as_mut().expect("a running agent").poll_effect() {
                act.effects += 1;
                if act.cut_at == act.effects {
                    act.cut_at = 0;
                    self.tally.power_cuts += 1;
                    self.power_off(d, &mut act);
                    break 'outer;
                }
                match e {
                    Effect::Persist(j) => act.disk = Some(j),
                    Effect::SetBootRecord(r) => {
                        if !r.bootable() {
                            self.violation(format!("device {d} was given a boot record with no bootable slot: {r:?}"));
                        }
                        self.devs[d as usize].record = r;
                        inputs.push(AInput::RecordWritten(r));
                    }
                    Effect::CheckIn { .. } => self.schedule(self.now + latency, d, gen, Ev::CheckIn),
                    Effect::Stream { .. } => {
                        let rel = self.updating(&act);
                        let h = self.cfg.headers[rel as usize].clone();
                        self.schedule(self.now + latency, d, gen, Ev::Deliver(Box::new(AInput::Header(h))));
                    }
                    Effect::Accept => {
                        let rel = self.updating(&act);
                        let Some((target, synced)) = act
                            .agent
                            .as_ref()
                            .and_then(|a| a.journal().update().map(|u| (u.target, a.journal().phase.synced())))
                        else {
                            self.violation(format!("device {d}: Accept without an update in progress"));
                            continue;
                        };
                        let slot = &mut self.devs[d as usize].slots[target.index()];
                        let from = if slot.rel == rel { synced.min(slot.synced) } else { 0 };
                        *slot = SlotImg { rel, synced: from };
                        let rest = self.cfg.image - from;
                        let (ok, part) = if self.rng.chance(loss) { (false, self.rng.unit()) } else { (true, 1.0) };
                        let bytes = if ok { rest } else { ((rest as f64 * part) as u64) / SYNC_EVERY * SYNC_EVERY };
                        let ms = (bytes * 8 / kbps).max(1);
                        self.tally.downloads += 1;
                        self.tally.bandwidth += kbps;
                        self.tally.peak_downloads = self.tally.peak_downloads.max(self.tally.downloads);
                        self.tally.peak_bandwidth = self.tally.peak_bandwidth.max(self.tally.bandwidth);
                        act.downloading = Some(kbps);
                        self.schedule(self.now + latency + ms, d, gen, Ev::StreamEnd { synced: from + bytes, ok });
                    }
                    Effect::Abort => {}
                    Effect::ReadBack { slot, len } => {
                        let s = self.devs[d as usize].slots[slot.index()];
                        let sha = if s.rel != NONE && s.synced >= self.cfg.image && len == self.cfg.image {
                            digest(s.rel)
                        } else {
                            Sha256Digest([0; 32])
                        };
                        inputs.push(AInput::ReadBack { sha256: sha });
                    }
                    Effect::Reboot => {
                        self.power_off(d, &mut act);
                        break 'outer;
                    }
                    Effect::RunHealthChecks { .. } => {
                        let dev = &self.devs[d as usize];
                        let ok = !self.rng.chance(self.cfg.beh[dev.rel as usize][dev.group as usize].1);
                        if !ok {
                            self.devs[d as usize].downtime_s += HEALTH_CHECK.as_secs() as u32;
                        }
                        let detail = if ok { String::new() } else { "simulated health check failure".into() };
                        let t = self.now + HEALTH_CHECK.as_millis() as u64;
                        self.schedule(t, d, gen, Ev::Deliver(Box::new(AInput::HealthDone { ok, detail })));
                    }
                    Effect::Report(e) => self.schedule(self.now + latency, d, gen, Ev::Report(Box::new(e))),
                }
            }
        }
        self.settle(d, act);
    }

    /// The release the agent is installing.
    fn updating(&self, act: &Active) -> u8 {
        let u = act.agent.as_ref().and_then(|a| a.journal().update()).expect("an update in progress");
        self.rel_index(&u.assignment.release)
    }

    /// After the agent's effects: done (back to idle), or wait for its next tick.
    fn settle(&mut self, d: u32, mut act: Active) {
        let Some(agent) = act.agent.as_ref() else {
            self.active.insert(d, act);
            return;
        };
        let j = agent.journal();
        let idle = j.phase == Phase::Idle && j.unreported.is_empty();
        match agent.poll_timeout() {
            Some(t) if idle => {
                let rel = j.installed.release.as_ref().map_or(BASE, |r| self.rel_index(r));
                let dev = &mut self.devs[d as usize];
                dev.active = false;
                dev.gen += 1;
                let (gen, running) = (dev.gen, dev.rel);
                if running != rel {
                    self.violation(format!("device {d} runs release {running} but its agent says {rel}"));
                }
                self.schedule(t.0.saturating_sub(EPOCH_MS).max(self.now), d, gen, Ev::Poll);
            }
            Some(t) => {
                let t = t.0.saturating_sub(EPOCH_MS).max(self.now);
                if act.tick_at != Some(t) {
                    act.tick_at = Some(t);
                    let gen = self.devs[d as usize].gen;
                    self.schedule(t, d, gen, Ev::Tick);
                }
                self.active.insert(d, act);
            }
            None => {
                self.active.insert(d, act);
            }
        }
    }

    /// Power goes (a reboot or a cut): the agent stops, the disk stays.
    fn power_off(&mut self, d: u32, act: &mut Active) {
        if let Some(kbps) = act.downloading.take() {
            self.tally.downloads -= 1;
            self.tally.bandwidth -= kbps;
        }
        act.agent = None;
        act.tick_at = None;
        let dev = &mut self.devs[d as usize];
        dev.gen += 1;
        dev.down_since_s = (self.now / 1000) as u32;
        let gen = dev.gen;
        self.schedule(self.now + self.cfg.reboot_ms, d, gen, Ev::Boot);
    }

    /// The bootloader runs its contract, then the agent starts from its journal.
    fn boot(&mut self, d: u32) {
        self.devs[d as usize].down_since_s = self.devs[d as usize].down_since_s.min((self.now / 1000) as u32);
        let dev = &mut self.devs[d as usize];
        let (changed, booted) = boot(dev.record);
        if let Some(r) = changed {
            dev.record = r;
        }
        let record = dev.record;
        let s = dev.slots[booted.slot.index()];
        if s.rel == NONE || s.synced < self.cfg.image {
            self.violation(format!(
                "device {d} booted slot {} holding an incomplete or unverified image",
                booted.slot.name()
            ));
        }
        if !record.bootable() {
            self.violation(format!("device {d} has no bootable slot after a boot: {record:?}"));
        }
        let group = self.devs[d as usize].group as usize;
        let rel = if s.rel == NONE { BASE } else { s.rel };
        let roll = self.active.get(&d).map_or(1.0, |a| a.trial_roll);
        if booted.trial && roll < self.cfg.beh[rel as usize][group].0 {
            // The trial image hangs on this device: the watchdog resets it,
            // until the bootloader runs out of attempts and goes back.
            let gen = self.devs[d as usize].gen;
            self.schedule(self.now + self.cfg.reboot_ms, d, gen, Ev::Boot);
            return;
        }
        let dev = &mut self.devs[d as usize];
        let old = dev.rel;
        dev.rel = rel;
        dev.downtime_s += ((self.now / 1000) as u32).saturating_sub(dev.down_since_s);
        dev.down_since_s = UP;
        self.on[old as usize] -= 1;
        self.on[rel as usize] += 1;
        if self.time_to_full.is_none() && self.on[CAND as usize] == self.eligible {
            self.time_to_full = Some(self.now);
        }
        self.start_agent(d, record, booted);
    }

    fn start_agent(&mut self, d: u32, record: BootRecord, booted: Booted) {
        let Some(mut act) = self.active.remove(&d) else { return };
        let mut agent = Agent::new(self.cfg.fleet.poll);
        let seed = self.rng.next();
        let journal = act.disk.clone();
        agent.handle(self.at(), AInput::Started { journal, record, booted, facts: self.facts(d), seed });
        act.agent = Some(agent);
        self.active.insert(d, act);
        self.drive(d, AInput::Tick);
    }

    fn agent_check_in(&mut self, d: u32) {
        if self.in_outage(d) {
            self.drive(d, AInput::CheckInFailed { retry_after_s: None });
            return;
        }
        self.health(d);
        self.tally.check_ins += 1;
        let installed =
            self.active.get(&d).and_then(|a| a.agent.as_ref()).and_then(|a| a.journal().installed.release.clone());
        let decision = self.control(Input::CheckIn { device: device_id(d), release: installed });
        let assignment = match decision {
            Some(Decision::Install { release, reason, .. }) => {
                self.check_install(d, &release, &reason);
                let rel = self.rel_index(&release);
                Some(Assignment {
                    url: format!("sim://{release}"),
                    release,
                    bundle_sha256: digest(rel),
                    bundle_size: self.cfg.image + 4096,
                })
            }
            _ => None,
        };
        self.drive(d, AInput::CheckedIn(assignment));
    }

    fn stream_end(&mut self, d: u32, synced: u64, ok: bool) {
        if let Some(act) = self.active.get_mut(&d) {
            if let Some(kbps) = act.downloading.take() {
                self.tally.downloads -= 1;
                self.tally.bandwidth -= kbps;
            }
            let target = act.agent.as_ref().and_then(|a| a.journal().update()).map(|u| u.target);
            if let Some(t) = target {
                self.devs[d as usize].slots[t.index()].synced = synced;
            }
        }
        self.drive(d, AInput::Progress { synced });
        if ok {
            self.drive(d, AInput::StreamDone);
        } else {
            self.tally.retries += 1;
            self.drive(d, AInput::StreamFailed { retryable: true, reason: "connection reset (simulated loss)".into() });
        }
    }

    fn report_event(&mut self, d: u32, e: Event) {
        if self.in_outage(d) {
            self.drive(d, AInput::ReportFailed);
            return;
        }
        let event = e.kind;
        let cand = e.release == self.cfg.ids[1];
        match event {
            InstallEvent::Committed if cand => self.tally.committed += 1,
            InstallEvent::Committed => self.tally.rollbacks += 1,
            InstallEvent::RevertedBoot => self.tally.reverted_boot += 1,
            InstallEvent::RevertedHealth => self.tally.reverted_health += 1,
            InstallEvent::Failed => self.tally.failed += 1,
            _ => {}
        }
        if cand && matches!(event, InstallEvent::RevertedBoot | InstallEvent::RevertedHealth | InstallEvent::Failed) {
            let dev = &mut self.devs[d as usize];
            if dev.flags & EXPOSED != 0 {
                dev.flags |= EXPOSED_FAILED;
            }
        }
        self.hash = mix(self.hash, e.kind.as_str().len() as u64 ^ (u64::from(cand) << 8));
        self.control(Input::Event { device: device_id(d), release: e.release, event });
        self.drive(d, AInput::Reported);
    }

    /// Hourly: the controller's totals add up and its limits hold.
    fn audit(&mut self) {
        if let Some(st) = self.ctl.status(&self.rollout) {
            for (i, w) in st.per_wave.iter().enumerate() {
                let sum = w.in_progress + w.committed + w.reverted + w.failed + w.silent;
                if sum != w.assigned {
                    self.violation(format!("wave {} counts do not add up: {w:?}", i + 1));
                }
            }
            let wave = st.wave.saturating_sub(1).min(self.cfg.plan.waves.len() - 1);
            if let Some(max) = self.cfg.plan.waves[wave].max_concurrent {
                if st.in_flight > max {
                    self.violation(format!("{} installs in flight; wave {} allows {max}", st.in_flight, st.wave));
                }
            }
        }
        if self.on[0] + self.on[1] != self.online {
            self.violation(format!("{} + {} devices on a release, {} online", self.on[0], self.on[1], self.online));
        }
        if self.ctl.device_count() != self.devs.len() {
            self.violation("the controller lost track of devices".into());
        }
        self.schedule(self.now + 3_600_000, u32::MAX, 0, Ev::Audit);
    }

    fn report(mut self, seed: u64, release: &Release) -> Report {
        let mut down: Vec<u32> = self
            .devs
            .iter()
            .filter(|d| d.online)
            .map(|d| {
                let open =
                    if d.down_since_s == UP { 0 } else { ((self.now / 1000) as u32).saturating_sub(d.down_since_s) };
                d.downtime_s + open
            })
            .collect();
        down.sort_unstable();
        let pct = |p: f64| down.get(((down.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0) as u64;
        let downtime = Downtime {
            p50_s: pct(0.5),
            p99_s: pct(0.99),
            max_s: down.last().copied().unwrap_or(0) as u64,
            total_device_hours: down.iter().map(|&s| u64::from(s)).sum::<u64>() as f64 / 3600.0,
        };
        let exposed = self.devs.iter().filter(|d| d.flags & EXPOSED != 0).count() as u64;
        let mut strata = Vec::new();
        for (dim, names, halted) in
            [("hardware", &self.cfg.hw_names, &self.halted_hw), ("region", &self.cfg.region_names, &self.halted_region)]
        {
            for (i, name) in names.iter().enumerate() {
                let mut o = StratumOutcome {
                    scope: format!("{dim}={name}"),
                    devices: 0,
                    given: 0,
                    failed: 0,
                    halted_at_s: halted[i].or(self.halted_at).map(|t| t / 1000),
                    own_halt: halted[i].is_some_and(|t| self.halted_at.is_none_or(|h| t <= h)),
                };
                for d in self.devs.iter().filter(|d| d.online) {
                    let g = &self.groups[d.group as usize];
                    let at = if dim == "hardware" { g.hw } else { g.region };
                    if at as usize != i
                        || self.cfg.fleet.groups[d.group as usize].family(self.cfg.fleet) != self.cfg.fleet.family
                    {
                        continue;
                    }
                    o.devices += 1;
                    o.given += u64::from(d.flags & EXPOSED != 0);
                    o.failed += u64::from(d.flags & EXPOSED_FAILED != 0);
                }
                strata.push(o);
            }
        }
        let exposed_failed = self.devs.iter().filter(|d| d.flags & EXPOSED_FAILED != 0).count() as u64;
        for v in [self.tally.events, self.tally.check_ins, self.on[0], self.on[1], self.tally.committed] {
            self.hash = mix(self.hash, v);
        }
        let final_reason = match (&self.state, &self.ctl) {
            (RolloutState::Paused { reason } | RolloutState::RolledBack { reason }, _) => Some(reason.clone()),
            (_, Decider::Baseline(b)) => b.final_reason(),
            _ => None,
        };
        Report {
            policy: self.cfg.policy,
            seed,
            release: release.id(),
            base: release.base_id(),
            devices: self.devs.len() as u64,
            online: self.online,
            eligible: self.eligible,
            final_state: self.state.name().to_owned(),
            final_reason,
            timeline: self.timeline,
            halted_at_s: self.halted_at.map(|t| t / 1000),
            completed_at_s: self.completed_at.map(|t| t / 1000),
            exposed,
            exposed_failed,
            time_to_full_s: self.time_to_full.map(|t| t / 1000),
            on_release: self.on[1],
            on_base: self.on[0],
            committed: self.tally.committed,
            reverted_boot: self.tally.reverted_boot,
            reverted_health: self.tally.reverted_health,
            failed: self.tally.failed,
            rollbacks: self.tally.rollbacks,
            power_cuts: self.tally.power_cuts,
            download_retries: self.tally.retries,
            peak_downloads: self.tally.peak_downloads,
            peak_bandwidth_mbps: self.tally.peak_bandwidth as f64 / 1000.0,
            downtime,
            check_ins: self.tally.check_ins,
            events: self.tally.events,
            sim_s: self.now / 1000,
            hash: format!("{:016x}", self.hash),
            violations: self.violations,
            strata,
            series: self.series,
        }
    }
}
