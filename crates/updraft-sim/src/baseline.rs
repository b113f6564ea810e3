//! Baseline policies for `updraft simulate --compare`: the same plan's
//! waves and thresholds, applied the way hawkBit and AWS IoT Jobs apply
//! them, behind the controller's own inputs and outputs so the simulator
//! runs them unchanged.
//!
//! - **hawkBit** rollouts split the targets into groups (here: the plan's
//!   waves). A group starts when the previous one reached its success
//!   threshold (a share of its targets finished successfully); the error
//!   threshold is a share of the whole group's targets that finished with
//!   an error, and its action pauses the rollout. Devices keep what they
//!   installed: there is no automatic rollback and no quarantine.
//! - **AWS IoT Jobs** sends one job to every target, paced by
//!   `maximumPerMinute`; an abort configuration cancels the job when the
//!   failed share of executed things passes `thresholdPercentage` after
//!   `minNumberOfExecutedThings`. In-progress executions finish; nothing is
//!   rolled back.
//!
//! Neither sees crash rates or tests per hardware revision or region; both
//! are given every failed install and every revert as an error (as an agent
//! reporting to them would).

use std::collections::{HashMap, VecDeque};

use updraft_rollout::{
    cohort_hash, Decision, Input, InstallEvent, InstallReason, Output, Plan, RolloutState, StayReason, WaveSize,
};
use updraft_types::{ReleaseId, RolloutId, UnixMs};

/// Which baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hawkbit,
    AwsIotJobs,
}

/// hawkBit's success threshold: the share of a group that must finish
/// successfully before the next group starts (hawkBit's UI suggests 50-100%).
pub const HAWKBIT_SUCCESS: f64 = 0.8;
/// AWS IoT Jobs' default `maximumPerMinute`.
pub const AWS_PER_MINUTE: u32 = 1000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    None,
    Assigned,
    Done,
    Failed,
}

struct Dev {
    group: u8,
    st: St,
    on_target: bool,
}

/// A baseline policy with the controller's interface.
pub struct Baseline {
    kind: Kind,
    now: UnixMs,
    devices: Vec<Dev>,
    index: HashMap<String, u32>,
    rollout: Option<RolloutId>,
    release: Option<ReleaseId>,
    plan: Option<Plan>,
    state: RolloutState,
    /// hawkBit: the last group started.
    group: usize,
    /// Per group: targets, successes, errors.
    counts: Vec<(u64, u64, u64)>,
    /// The error threshold (the plan's smallest gate failure rate).
    threshold: f64,
    /// AWS: executions needed before the abort can trigger.
    min_executed: u64,
    /// AWS: executions started in the last minute.
    started: VecDeque<UnixMs>,
    outputs: VecDeque<Output>,
    abort_reason: Option<String>,
}

impl Baseline {
    pub fn new(kind: Kind, epoch: UnixMs) -> Baseline {
        Baseline {
            kind,
            now: epoch,
            devices: Vec::new(),
            index: HashMap::new(),
            rollout: None,
            release: None,
            plan: None,
            state: RolloutState::Created,
            group: 0,
            counts: Vec::new(),
            threshold: 0.05,
            min_executed: 1,
            started: VecDeque::new(),
            outputs: VecDeque::new(),
            abort_reason: None,
        }
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn set_state(&mut self, state: RolloutState) {
        self.state = state.clone();
        let rollout = self.rollout.clone().expect("a rollout");
        self.outputs.push_back(Output::StateChanged { rollout, state });
    }

    fn start_group(&mut self, g: usize) {
        self.group = g;
        let rollout = self.rollout.clone().expect("a rollout");
        let target_devices = self.counts[..=g].iter().map(|c| c.0).sum();
        self.outputs.push_back(Output::WaveStarted { rollout, wave: g + 1, target_devices });
    }

    pub fn handle(&mut self, now: UnixMs, input: Input) {
        self.now = self.now.max(now);
        match input {
            Input::Device(d) => {
                let i = self.devices.len() as u32;
                self.index.insert(d.id.as_str().to_owned(), i);
                self.devices.push(Dev { group: 0, st: St::None, on_target: false });
            }
            Input::CreateRollout { id, release, plan } => self.create(id, release, plan),
            Input::Command { .. } => {
                self.set_state(RolloutState::Running);
                self.start_group(if self.kind == Kind::Hawkbit { 0 } else { self.counts.len() - 1 });
            }
            Input::CheckIn { device, release } => {
                let Some(&i) = self.index.get(device.as_str()) else { return };
                let d = self.decide(i, release.as_ref());
                self.outputs.push_back(Output::Decision { device, decision: d });
            }
            Input::Event { device, release, event } => {
                let Some(&i) = self.index.get(device.as_str()) else { return };
                if Some(&release) == self.release.as_ref() {
                    self.event(i, event);
                }
            }
            Input::Release(_)
            | Input::Health { .. }
            | Input::LiftQuarantine { .. }
            | Input::Retire { .. }
            | Input::Tick => {}
        }
    }

    fn create(&mut self, id: RolloutId, release: ReleaseId, plan: Plan) {
        let total = self.devices.len() as u64;
        // Groups from the plan's cumulative waves, filled in cohort order.
        let mut bounds = Vec::new();
        for w in &plan.waves {
            let share = match w.size {
                WaveSize::Percent(p) => p / 100.0,
                WaveSize::Count(c) => c as f64 / total.max(1) as f64,
            };
            bounds.push(share.min(1.0));
        }
        if let Some(last) = bounds.last_mut() {
            *last = 1.0;
        }
        self.counts = vec![(0, 0, 0); bounds.len()];
        let ids: Vec<(String, u32)> = self.index.iter().map(|(k, &v)| (k.clone(), v)).collect();
        for (name, i) in ids {
            let u = cohort_hash(id.as_str(), &name) as f64 / u64::MAX as f64;
            let g = bounds.iter().position(|&b| u <= b).unwrap_or(bounds.len() - 1);
            self.devices[i as usize].group = g as u8;
            self.counts[g].0 += 1;
        }
        self.threshold = plan
            .gates
            .iter()
            .filter_map(|g| match &g.kind {
                updraft_rollout::GateKind::Install { max_failure_rate }
                | updraft_rollout::GateKind::Boot { max_failure_rate }
                | updraft_rollout::GateKind::Health { max_failure_rate } => Some(*max_failure_rate),
                _ => None,
            })
            .fold(1.0, f64::min);
        self.min_executed = self.counts.first().map_or(1, |c| c.0.max(1));
        self.rollout = Some(id);
        self.release = Some(release);
        self.plan = Some(plan);
    }

    fn decide(&mut self, i: u32, release: Option<&ReleaseId>) -> Decision {
        let target = self.release.clone().expect("a rollout");
        let rollout = self.rollout.clone().expect("a rollout");
        let d = &mut self.devices[i as usize];
        d.on_target = release == Some(&target);
        let install = Decision::Install { release: target, rollout, reason: InstallReason::Rollout };
        match d.st {
            // Executions in progress finish, whatever the rollout's state.
            St::Assigned => return if d.on_target { Decision::Stay { reason: StayReason::UpToDate } } else { install },
            St::Done => return Decision::Stay { reason: StayReason::UpToDate },
            St::Failed => return Decision::Stay { reason: StayReason::FailedBefore },
            St::None => {}
        }
        if d.on_target {
            return Decision::Stay { reason: StayReason::UpToDate };
        }
        let started = match self.kind {
            // A started group's actions are created: pausing the rollout
            // stops the next groups, not the running ones.
            Kind::Hawkbit => self.state != RolloutState::Created,
            // Cancelling a job cancels its queued executions.
            Kind::AwsIotJobs => self.state == RolloutState::Running,
        };
        if !started {
            return Decision::Stay { reason: StayReason::RolloutNotRunning { state: self.state.name().into() } };
        }
        if usize::from(d.group) > self.group {
            return Decision::Stay {
                reason: StayReason::NotInWave { wave: self.group + 1, cohort_permille: 0, admits_permille: 0 },
            };
        }
        if self.kind == Kind::AwsIotJobs {
            while self.started.front().is_some_and(|t| self.now.since(*t).as_secs() >= 60) {
                self.started.pop_front();
            }
            if self.started.len() as u32 >= AWS_PER_MINUTE {
                return Decision::Stay { reason: StayReason::Paced };
            }
            self.started.push_back(self.now);
        }
        self.devices[i as usize].st = St::Assigned;
        install
    }

    fn event(&mut self, i: u32, event: InstallEvent) {
        let d = &mut self.devices[i as usize];
        if d.st != St::Assigned {
            return;
        }
        let g = usize::from(d.group);
        match event {
            InstallEvent::Committed => {
                d.st = St::Done;
                self.counts[g].1 += 1;
            }
            InstallEvent::Failed | InstallEvent::RevertedBoot | InstallEvent::RevertedHealth => {
                d.st = St::Failed;
                self.counts[g].2 += 1;
            }
            _ => return,
        }
        if self.state != RolloutState::Running {
            return;
        }
        match self.kind {
            Kind::Hawkbit => {
                let (n, ok, err) = self.counts[g];
                if err as f64 > self.threshold * n as f64 {
                    let reason = format!(
                        "group {} error threshold: {err} of {n} targets failed (over {:.0}%)",
                        g + 1,
                        self.threshold * 100.0
                    );
                    self.set_state(RolloutState::Paused { reason });
                    return;
                }
                let (n, ok) =
                    if g == self.group { (n, ok) } else { (self.counts[self.group].0, self.counts[self.group].1) };
                if ok as f64 >= HAWKBIT_SUCCESS * n as f64 {
                    if self.group + 1 < self.counts.len() {
                        self.start_group(self.group + 1);
                    } else {
                        self.set_state(RolloutState::Completed);
                    }
                }
            }
            Kind::AwsIotJobs => {
                let (ok, err) = self.counts.iter().fold((0, 0), |a, c| (a.0 + c.1, a.1 + c.2));
                let executed = ok + err;
                if executed >= self.min_executed && err as f64 > self.threshold * executed as f64 {
                    let reason = format!(
                        "abort config: {err} of {executed} executions failed (over {:.0}% after {} executions)",
                        self.threshold * 100.0,
                        self.min_executed
                    );
                    self.abort_reason = Some(reason);
                    self.set_state(RolloutState::Aborted);
                } else if executed == self.counts.iter().map(|c| c.0).sum::<u64>() {
                    self.set_state(RolloutState::Completed);
                }
            }
        }
    }

    pub fn final_reason(&self) -> Option<String> {
        match &self.state {
            RolloutState::Paused { reason } | RolloutState::RolledBack { reason } => Some(reason.clone()),
            _ => self.abort_reason.clone(),
        }
    }
}
