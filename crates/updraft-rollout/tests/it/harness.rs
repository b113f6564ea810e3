//! A deterministic scenario runner: a small device model (check-ins,
//! install steps, outcomes drawn from a seeded generator, hourly health
//! samples) drives the real controller; the log is what gets snapshotted.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::Write;
use std::time::Duration;

use serde::Deserialize;
use updraft_rollout::*;
use updraft_types::{DeviceId, ReleaseId, RolloutId, UnixMs};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub seed: u64,
    /// Simulated time to run, e.g. "5d".
    pub duration: String,
    /// Check-in interval of every device.
    #[serde(default = "default_poll")]
    pub poll: String,
    pub groups: Vec<Group>,
    pub releases: Vec<ReleaseDef>,
    pub rollouts: Vec<RolloutDef>,
    #[serde(default)]
    pub behaviour: Vec<Behaviour>,
    #[serde(default)]
    pub script: Vec<Step>,
}

fn default_poll() -> String {
    "30m".into()
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub count: usize,
    pub prefix: String,
    pub family: String,
    pub hardware: String,
    pub region: String,
    pub release: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    #[serde(default)]
    pub utc_offset_min: i16,
    /// Share of the group that never checks in.
    #[serde(default)]
    pub offline: f64,
    /// Joins at this time instead of at the start.
    #[serde(default)]
    pub joins_at: Option<String>,
    /// Crashes per device-hour on the release they start with.
    #[serde(default)]
    pub crash_rate: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseDef {
    pub id: String,
    pub family: String,
    pub hardware: Vec<String>,
    #[serde(default)]
    pub requires: BTreeMap<String, String>,
    #[serde(default)]
    pub provides: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutDef {
    pub id: String,
    pub release: String,
    /// Name of a plan in plans.rs.
    pub plan: String,
    #[serde(default)]
    pub start_at: Option<String>,
}

/// How devices of a hardware revision (or a region, or both) fare with a release.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    pub release: String,
    #[serde(default)]
    pub hardware: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub install_fail: f64,
    #[serde(default)]
    pub boot_fail: f64,
    #[serde(default)]
    pub health_fail: f64,
    /// A failed trial boot's revert is reported this many seconds after
    /// the trial boot would have (the bootloader's attempts); 0: at once.
    #[serde(default)]
    pub revert_after_s: u64,
    /// Goes silent for good after being assigned.
    #[serde(default)]
    pub silent: f64,
    #[serde(default)]
    pub crash_rate: Option<f64>,
    #[serde(default)]
    pub metric: Option<(String, f64)>,
}

impl Behaviour {
    fn fits(&self, d: &DeviceInfo) -> bool {
        self.hardware.as_ref().is_none_or(|h| *h == d.hardware) && self.region.as_ref().is_none_or(|g| *g == d.region)
    }
}

fn in_scope(scope: &Scope, d: &DeviceInfo) -> bool {
    match scope {
        Scope::All => true,
        Scope::Hardware(h) => *h == d.hardware,
        Scope::Region(g) => *g == d.region,
        Scope::Attribute { key, value } => d.tags.iter().any(|t| *t == format!("{key}={value}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub at: String,
    pub rollout: String,
    pub command: String,
}

/// SplitMix64.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

fn dur(s: &str) -> Duration {
    updraft_types::parse_duration(s).unwrap()
}

fn version(s: &str) -> semver::Version {
    semver::Version::parse(s).unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Step2 {
    CheckIn,
    Downloaded,
    Installed,
    Booted,
    /// The bootloader gave up on a trial boot that hung.
    Reverted,
    Checked,
    Health,
}

struct Dev {
    info: DeviceInfo,
    online: bool,
    silent: bool,
    installing: Option<ReleaseId>,
    crash_rate: f64,
    metric: Option<(String, f64)>,
}

pub const T0: u64 = 1_767_225_600_000;

fn fmt_t(ms: u64) -> String {
    let m = (ms - T0) / 60_000;
    format!("{}d{:02}h{:02}m", m / 1440, (m / 60) % 24, m % 60)
}

/// Runs a scenario and returns its log.
pub fn run(fixture: &Fixture) -> String {
    let mut rng = Rng(fixture.seed);
    let mut c = Controller::new(UnixMs(T0));
    let mut log = String::new();
    let end = T0 + dur(&fixture.duration).as_millis() as u64;
    let poll_ms = dur(&fixture.poll).as_millis() as u64;
    for r in &fixture.releases {
        c.handle(
            UnixMs(T0),
            Input::Release(ReleaseInfo {
                id: ReleaseId::new(&r.id),
                family: r.family.clone(),
                hardware: r.hardware.clone(),
                requires: r.requires.iter().map(|(k, v)| (k.clone(), semver::VersionReq::parse(v).unwrap())).collect(),
                provides: r.provides.iter().map(|(k, v)| (k.clone(), version(v))).collect(),
            }),
        );
    }
    let mut devs: Vec<Dev> = Vec::new();
    let mut queue: BinaryHeap<Reverse<(u64, usize, Step2)>> = BinaryHeap::new();
    let mut joins: Vec<(u64, usize)> = Vec::new();
    for g in &fixture.groups {
        let at = g.joins_at.as_deref().map_or(T0, |j| T0 + dur(j).as_millis() as u64);
        for i in 0..g.count {
            let id = format!("{}{i:04}", g.prefix);
            let release = ReleaseId::new(&g.release);
            let info = DeviceInfo {
                id: DeviceId::new(&id),
                family: g.family.clone(),
                hardware: g.hardware.clone(),
                region: g.region.clone(),
                tags: g.tags.clone(),
                channel: g.channel.clone(),
                release: Some(release.clone()),
                last_known_good: Some(release),
                components: g.components.iter().map(|(k, v)| (k.clone(), version(v))).collect(),
                utc_offset_min: g.utc_offset_min,
            };
            let online = !rng.chance(g.offline);
            devs.push(Dev { info, online, silent: false, installing: None, crash_rate: g.crash_rate, metric: None });
            joins.push((at, devs.len() - 1));
        }
    }
    joins.sort();
    let mut next_join = 0;
    let mut rollouts_started: Vec<(u64, &RolloutDef)> = fixture
        .rollouts
        .iter()
        .map(|r| (r.start_at.as_deref().map_or(T0, |s| T0 + dur(s).as_millis() as u64), r))
        .collect();
    rollouts_started.sort_by_key(|(t, _)| *t);
    let mut script: Vec<(u64, &Step)> =
        fixture.script.iter().map(|s| (T0 + dur(&s.at).as_millis() as u64, s)).collect();
    script.sort_by_key(|(t, _)| *t);
    let mut next_rollout = 0;
    let mut next_script = 0;
    let mut quarantined_at: HashMap<String, u64> = HashMap::new();
    let mut halted_strata: Vec<(ReleaseId, Scope, u64)> = Vec::new();
    // Decisions summarised per 6-hour window.
    let window_ms = 6 * 3600 * 1000;
    let mut window_start = T0;
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    let mut violations = Vec::new();

    let mut now = T0;
    loop {
        // The next thing to happen: a device step, a join, a rollout, a script step, or the controller's timeout.
        let mut t = end;
        if let Some(Reverse((dt, _, _))) = queue.peek() {
            t = t.min(*dt);
        }
        if next_join < joins.len() {
            t = t.min(joins[next_join].0);
        }
        if next_rollout < rollouts_started.len() {
            t = t.min(rollouts_started[next_rollout].0);
        }
        if next_script < script.len() {
            t = t.min(script[next_script].0);
        }
        if let Some(pt) = c.poll_timeout() {
            t = t.min(pt.0.max(now));
        }
        if t >= end {
            break;
        }
        now = t;
        while now >= window_start + window_ms {
            flush(&mut log, window_start, &mut tally);
            window_start += window_ms;
        }
        let mut inputs: Vec<Input> = Vec::new();
        let mut device_of_input: Vec<Option<usize>> = Vec::new();
        while next_join < joins.len() && joins[next_join].0 <= now {
            let d = joins[next_join].1;
            inputs.push(Input::Device(devs[d].info.clone()));
            device_of_input.push(None);
            if devs[d].online {
                let phase = rng.next() % poll_ms;
                queue.push(Reverse((now + phase, d, Step2::CheckIn)));
                queue.push(Reverse((now + phase + 3_600_000, d, Step2::Health)));
            }
            next_join += 1;
        }
        while next_rollout < rollouts_started.len() && rollouts_started[next_rollout].0 <= now {
            let def = rollouts_started[next_rollout].1;
            inputs.push(Input::CreateRollout {
                id: RolloutId::new(&def.id),
                release: ReleaseId::new(&def.release),
                plan: crate::plans::plan(&def.plan),
            });
            inputs.push(Input::Command { rollout: RolloutId::new(&def.id), command: Command::Start });
            device_of_input.push(None);
            device_of_input.push(None);
            next_rollout += 1;
        }
        while next_script < script.len() && script[next_script].0 <= now {
            let s = script[next_script].1;
            let command = match s.command.as_str() {
                "pause" => Command::Pause,
                "resume" => Command::Resume,
                "advance" => Command::AdvanceNow,
                "abort" => Command::Abort,
                "rollback" => Command::Rollback,
                "start" => Command::Start,
                other => panic!("unknown command {other}"),
            };
            writeln!(log, "{} operator: {} {}", fmt_t(now), s.command, s.rollout).unwrap();
            inputs.push(Input::Command { rollout: RolloutId::new(&s.rollout), command });
            device_of_input.push(None);
            next_script += 1;
        }
        while let Some(&Reverse((dt, d, step))) = queue.peek() {
            if dt > now {
                break;
            }
            queue.pop();
            let dev = &mut devs[d];
            if dev.silent {
                continue;
            }
            let beh = |dev: &Dev, rel: &ReleaseId| -> Behaviour {
                fixture.behaviour.iter().find(|b| b.release == rel.as_str() && b.fits(&dev.info)).cloned().unwrap_or(
                    Behaviour {
                        release: rel.to_string(),
                        hardware: None,
                        region: None,
                        install_fail: 0.0,
                        boot_fail: 0.0,
                        health_fail: 0.0,
                        revert_after_s: 0,
                        silent: 0.0,
                        crash_rate: None,
                        metric: None,
                    },
                )
            };
            match step {
                Step2::CheckIn => {
                    if dev.installing.is_none() {
                        inputs.push(Input::CheckIn { device: dev.info.id.clone(), release: dev.info.release.clone() });
                        device_of_input.push(Some(d));
                    }
                    queue.push(Reverse((now + poll_ms, d, Step2::CheckIn)));
                }
                Step2::Health => {
                    let crashes = u32::from(rng.chance(dev.crash_rate));
                    let custom = dev.metric.clone().into_iter().collect();
                    inputs.push(Input::Health {
                        device: dev.info.id.clone(),
                        sample: HealthSample { period_s: 3600, boots: 0, crashes, custom },
                    });
                    device_of_input.push(None);
                    queue.push(Reverse((now + 3_600_000, d, Step2::Health)));
                }
                Step2::Downloaded | Step2::Installed | Step2::Booted | Step2::Reverted | Step2::Checked => {
                    let rel = dev.installing.clone().expect("installing");
                    let b = beh(dev, &rel);
                    let (event, next) = match step {
                        Step2::Downloaded => (InstallEvent::Downloaded, Some((Step2::Installed, 300_000))),
                        Step2::Installed if rng.chance(b.install_fail) => (InstallEvent::Failed, None),
                        Step2::Installed => (InstallEvent::Installed, Some((Step2::Booted, 60_000))),
                        Step2::Booted if rng.chance(b.boot_fail) => {
                            if b.revert_after_s > 0 {
                                queue.push(Reverse((now + b.revert_after_s * 1000, d, Step2::Reverted)));
                                continue;
                            }
                            (InstallEvent::RevertedBoot, None)
                        }
                        Step2::Reverted => (InstallEvent::RevertedBoot, None),
                        Step2::Booted => (InstallEvent::TrialBoot, Some((Step2::Checked, 600_000))),
                        Step2::Checked if rng.chance(b.health_fail) => (InstallEvent::RevertedHealth, None),
                        _ => (InstallEvent::Committed, None),
                    };
                    inputs.push(Input::Event { device: dev.info.id.clone(), release: rel.clone(), event });
                    device_of_input.push(None);
                    match next {
                        Some((s, after)) => queue.push(Reverse((now + after, d, s))),
                        None => {
                            dev.installing = None;
                            if event == InstallEvent::Committed {
                                dev.info.last_known_good = Some(rel.clone());
                                dev.info.release = Some(rel.clone());
                                dev.crash_rate = b.crash_rate.unwrap_or(dev.crash_rate);
                                dev.metric = b.metric.clone();
                            }
                        }
                    }
                }
            }
        }
        inputs.push(Input::Tick);
        device_of_input.push(None);
        for (input, dev) in inputs.into_iter().zip(device_of_input) {
            c.handle(UnixMs(now), input);
            while let Some(out) = c.poll_output() {
                match out {
                    Output::Decision { decision, .. } => {
                        let key = match &decision {
                            Decision::Install { release, reason, .. } => {
                                if let Some(&q) = quarantined_at.get(release.as_str()) {
                                    if !matches!(reason, InstallReason::Rollback { .. }) {
                                        violations.push(format!(
                                            "{} assigned quarantined {release} (quarantined at {})",
                                            fmt_t(now),
                                            fmt_t(q)
                                        ));
                                    }
                                }
                                let d = dev.expect("decision for a check-in");
                                if matches!(reason, InstallReason::Rollout) {
                                    for (rel, scope, t) in &halted_strata {
                                        if rel == release && in_scope(scope, &devs[d].info) {
                                            violations.push(format!(
                                                "{} assigned {release} to {} in {scope}, halted at {}",
                                                fmt_t(now),
                                                devs[d].info.id,
                                                fmt_t(*t)
                                            ));
                                        }
                                    }
                                }
                                let devm = &mut devs[d];
                                let b = fixture
                                    .behaviour
                                    .iter()
                                    .find(|b| b.release == release.as_str() && b.fits(&devm.info))
                                    .map(|b| b.silent)
                                    .unwrap_or(0.0);
                                devm.installing = Some(release.clone());
                                if rng.chance(b) {
                                    devm.silent = true;
                                } else {
                                    queue.push(Reverse((now + 300_000, d, Step2::Downloaded)));
                                }
                                match reason {
                                    InstallReason::Rollout => format!("install {release}"),
                                    InstallReason::SteppingStone { toward } => {
                                        format!("install {release} (stepping stone to {toward})")
                                    }
                                    InstallReason::Rollback { from } => {
                                        format!("install {release} (rollback from {from})")
                                    }
                                }
                            }
                            Decision::Stay { reason } => match reason {
                                StayReason::HeldBack { requirement } => format!("stay: held back, {requirement}"),
                                StayReason::RolloutNotRunning { .. } => "stay: rollout not running".into(),
                                StayReason::OutsideWindow { .. } => "stay: outside window".into(),
                                StayReason::NotInWave { .. } => "stay: not in wave".into(),
                                other => {
                                    format!("stay: {}", serde_json::to_value(other).unwrap()["kind"].as_str().unwrap())
                                }
                            },
                        };
                        *tally.entry(key).or_default() += 1;
                    }
                    Output::StratumHalted { rollout, release, scope, reason, rolled_back } => {
                        let what = if rolled_back { "rolled back" } else { "paused" };
                        writeln!(log, "{} {rollout}: stratum {scope} {what} ({reason})", fmt_t(now)).unwrap();
                        halted_strata.push((release, scope, now));
                    }
                    Output::Quarantined { release, rollout } => {
                        quarantined_at.entry(release.to_string()).or_insert(now);
                        writeln!(log, "{} {rollout}: quarantined {release}", fmt_t(now)).unwrap();
                    }
                    Output::StateChanged { rollout, state } => {
                        let detail = match &state {
                            RolloutState::Paused { reason } | RolloutState::RolledBack { reason } => {
                                format!(" ({reason})")
                            }
                            _ => String::new(),
                        };
                        writeln!(log, "{} {rollout}: {}{detail}", fmt_t(now), state.name()).unwrap();
                    }
                    Output::WaveStarted { rollout, wave, target_devices } => {
                        writeln!(log, "{} {rollout}: wave {wave} started, {target_devices} devices", fmt_t(now))
                            .unwrap();
                    }
                    Output::Gate { rollout, wave, report } => {
                        let t = &report.test;
                        writeln!(
                            log,
                            "{} {rollout}: wave {wave} gate {} [{}] {:?}: {}/{} failed",
                            fmt_t(now),
                            report.gate,
                            report.scope,
                            t.verdict,
                            t.failures,
                            t.trials
                        )
                        .unwrap();
                    }
                    Output::Rejected { reason } => writeln!(log, "{} rejected: {reason}", fmt_t(now)).unwrap(),
                }
            }
        }
    }
    flush(&mut log, window_start, &mut tally);
    writeln!(log, "--- at the end").unwrap();
    for r in &fixture.rollouts {
        let s = c.status(&RolloutId::new(&r.id)).unwrap();
        writeln!(log, "{}: {} in wave {}/{}, {} selected", r.id, s.state.name(), s.wave, s.waves, s.selected).unwrap();
        for st in &s.strata {
            writeln!(
                log,
                "  stratum {}: {}, wave {}, {} devices, {} admitted ({} over-sampled), {} given",
                st.scope, st.standing, st.wave, st.devices, st.admitted, st.oversampled, st.given
            )
            .unwrap();
        }
        for (i, w) in s.per_wave.iter().enumerate() {
            if w.assigned > 0 {
                writeln!(
                    log,
                    "  wave {}: assigned {}, committed {}, reverted {}, failed {}, silent {}, in progress {}",
                    i + 1,
                    w.assigned,
                    w.committed,
                    w.reverted,
                    w.failed,
                    w.silent,
                    w.in_progress
                )
                .unwrap();
            }
        }
    }
    let mut on: BTreeMap<String, u64> = BTreeMap::new();
    for d in &devs {
        *on.entry(d.info.release.as_ref().map_or("none".into(), |r| r.to_string())).or_default() += 1;
    }
    writeln!(log, "devices by release: {on:?}").unwrap();
    for v in &violations {
        writeln!(log, "VIOLATION: {v}").unwrap();
    }
    log
}

fn flush(log: &mut String, start: u64, tally: &mut BTreeMap<String, u64>) {
    if tally.is_empty() {
        return;
    }
    let parts: Vec<String> = tally.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    writeln!(log, "{}..{} decisions: {}", fmt_t(start), fmt_t(start + 6 * 3600 * 1000), parts.join("; ")).unwrap();
    tally.clear();
}
