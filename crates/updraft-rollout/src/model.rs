//! What goes into the controller and what comes out of it.

use serde::Serialize;
use updraft_types::{DeviceId, ReleaseId, RolloutId};

use crate::plan::Plan;
use crate::stats::ProportionTest;

/// A device as the fleet registry knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    pub id: DeviceId,
    pub family: String,
    pub hardware: String,
    pub region: String,
    pub tags: Vec<String>,
    pub channel: Option<String>,
    /// The release it runs now.
    pub release: Option<ReleaseId>,
    /// The last release it committed (what a rollback gives it back).
    pub last_known_good: Option<ReleaseId>,
    /// Versions of other components (bootloader, modem firmware...).
    pub components: Vec<(String, semver::Version)>,
    /// Offset of the device's local time from UTC, for maintenance windows.
    pub utc_offset_min: i16,
}

/// A release the controller may assign.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseInfo {
    pub id: ReleaseId,
    pub family: String,
    pub hardware: Vec<String>,
    /// Requirements on other components (`bootloader >=1.4`).
    pub requires: Vec<(String, semver::VersionReq)>,
    /// Components this release installs, with their versions (a release
    /// that updates the bootloader to 1.4.0 provides `bootloader 1.4.0`).
    pub provides: Vec<(String, semver::Version)>,
}

/// An install event a device reports (the one enum of the workspace).
pub use updraft_types::InstallEvent;

/// Periodic health telemetry from a device.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSample {
    /// Seconds of running time this sample covers.
    pub period_s: u32,
    pub boots: u32,
    /// Crashes and watchdog resets in the period.
    pub crashes: u32,
    pub custom: Vec<(String, f64)>,
}

/// Operator commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Start,
    Pause,
    Resume,
    /// Move to the next wave now, whatever the gates say.
    AdvanceNow,
    /// Stop assigning; devices keep what they have.
    Abort,
    /// Stop assigning and give devices that took the release their last
    /// known good release.
    Rollback,
}

/// Everything the controller reacts to.
#[derive(Clone, Debug)]
pub enum Input {
    /// A device registers or changes (also how devices join the fleet).
    Device(DeviceInfo),
    Release(ReleaseInfo),
    CreateRollout {
        id: RolloutId,
        release: ReleaseId,
        plan: Plan,
    },
    Command {
        rollout: RolloutId,
        command: Command,
    },
    /// Lift a release's quarantine (an operator decision).
    LiftQuarantine {
        release: ReleaseId,
    },
    /// A device asks what to run; the answer is an [`Output::Decision`].
    CheckIn {
        device: DeviceId,
        release: Option<ReleaseId>,
    },
    Event {
        device: DeviceId,
        release: ReleaseId,
        event: InstallEvent,
    },
    Health {
        device: DeviceId,
        sample: HealthSample,
    },
    /// A device taken out of service (decommissioned).
    Retire {
        device: DeviceId,
    },
    /// Time passed (the shell calls this at `poll_timeout`).
    Tick,
}

/// Why a device installs something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", rename_all_fields = "camelCase", tag = "kind")]
pub enum InstallReason {
    Rollout,
    /// A release that meets a requirement of the rollout's release first.
    SteppingStone {
        toward: ReleaseId,
    },
    /// Back to the last known good release after a halt.
    Rollback {
        from: ReleaseId,
    },
}

/// Why a device gets nothing now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", rename_all_fields = "camelCase", tag = "kind")]
pub enum StayReason {
    /// No rollout applies to this device.
    NoRollout,
    UpToDate,
    /// Not in the current wave's cohort: the device's place in the cohort
    /// and the share the wave admits so far, in thousandths.
    NotInWave {
        wave: usize,
        cohort_permille: u16,
        admits_permille: u16,
    },
    /// A pacing limit (concurrent installs, installs per minute, or the
    /// round of a ramping stratum: `strata.ramp_start`).
    Paced,
    OutsideWindow {
        opens_in_min: u16,
    },
    RolloutNotRunning {
        state: String,
    },
    Quarantined,
    /// A requirement is unmet and no stepping-stone release meets it.
    HeldBack {
        requirement: String,
    },
    /// This device already failed this release; it is not offered again.
    FailedBefore,
    /// A rollback has no last known good release to give.
    NoLastKnownGood,
}

impl StayReason {
    /// The reason in words, for the device and the operator.
    pub fn describe(&self) -> String {
        match self {
            StayReason::NoRollout => "no rollout applies to this device".into(),
            StayReason::UpToDate => "up to date".into(),
            StayReason::NotInWave { wave, cohort_permille, admits_permille } => format!(
                "not in wave {wave} yet (cohort place {:.3}, the current wave admits < {:.3})",
                f64::from(*cohort_permille) / 1000.0,
                f64::from(*admits_permille) / 1000.0
            ),
            StayReason::Paced => "waiting for an install slot (the wave's pacing limit)".into(),
            StayReason::OutsideWindow { opens_in_min } => {
                format!("outside the maintenance window (opens in {opens_in_min} min, device local time)")
            }
            StayReason::RolloutNotRunning { state } => format!("the rollout is not running: {state}"),
            StayReason::Quarantined => "the release is quarantined (a health gate or an operator halted it)".into(),
            StayReason::HeldBack { requirement } => format!("held back: requires {requirement}"),
            StayReason::FailedBefore => "this device failed this release before; it is not offered again".into(),
            StayReason::NoLastKnownGood => "a rollback has no last known good release for this device".into(),
        }
    }
}

/// The answer to a check-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", rename_all_fields = "camelCase", tag = "action")]
pub enum Decision {
    Install { release: ReleaseId, rollout: RolloutId, reason: InstallReason },
    Stay { reason: StayReason },
}

/// A rollout's state.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", rename_all_fields = "camelCase", tag = "state")]
pub enum RolloutState {
    Created,
    Running,
    Paused {
        reason: String,
    },
    /// The last wave passed; devices that join later still get the release.
    Completed,
    Aborted,
    RolledBack {
        reason: String,
    },
}

impl RolloutState {
    /// Every state's name, for one-hot gauges.
    pub const NAMES: [&'static str; 6] = ["created", "running", "paused", "completed", "aborted", "rolled_back"];

    pub fn name(&self) -> &'static str {
        match self {
            RolloutState::Created => "created",
            RolloutState::Running => "running",
            RolloutState::Paused { .. } => "paused",
            RolloutState::Completed => "completed",
            RolloutState::Aborted => "aborted",
            RolloutState::RolledBack { .. } => "rolled_back",
        }
    }
}

/// The devices a gate's test is over: all of the rollout's, or one
/// stratum (a hardware revision, a region, or a value of an attribute the
/// plan's `strata.by` names). On the wire and in the journal: `all`,
/// `hardware=rev-c`, `region=eu`, `site=berlin`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    All,
    Hardware(String),
    Region(String),
    Attribute { key: String, value: String },
}

impl Scope {
    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }

    /// In words, for reasons and the status: `all devices`, `hardware rev-c`, `region eu`.
    pub fn describe(&self) -> String {
        match self {
            Scope::All => "all devices".into(),
            Scope::Hardware(h) => format!("hardware {h}"),
            Scope::Region(r) => format!("region {r}"),
            Scope::Attribute { key, value } => format!("{key} {value}"),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("all"),
            Scope::Hardware(h) => write!(f, "hardware={h}"),
            Scope::Region(r) => write!(f, "region={r}"),
            Scope::Attribute { key, value } => write!(f, "{key}={value}"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "schemars")]
impl schemars::JsonSchema for Scope {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Scope".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(all|[^=]+=.*)$",
            "description": "The devices a gate's test is over: all, hardware=REV, region=REGION or ATTRIBUTE=VALUE.",
        })
    }
}

/// A gate evaluation with its numbers.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateReport {
    pub gate: String,
    /// `all`, `hardware=rev-c` or `region=eu`.
    pub scope: Scope,
    /// The gate's limit in words (`crash rate < 1.5x the baseline`).
    pub limit: String,
    pub test: ProportionTest,
    /// What a crash-rate gate observed: crashes and watched hours on the
    /// new release and on the baseline, and the ratio of their rates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposure: Option<CrashExposure>,
}

/// Crashes over watched device-hours, on the new release (canary) and on
/// the rollout's devices still on their old release (baseline).
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrashExposure {
    pub canary_crashes: u64,
    pub canary_hours: f64,
    pub baseline_crashes: u64,
    pub baseline_hours: f64,
    /// The canary's crash rate over the baseline's (none while either
    /// side has no exposure or the baseline no crash).
    pub ratio: Option<f64>,
}

impl CrashExposure {
    pub(crate) fn new(canary: (u64, u64), baseline: (u64, u64)) -> CrashExposure {
        let hours = |s: u64| s as f64 / 3600.0;
        let (ch, bh) = (hours(canary.1), hours(baseline.1));
        let ratio = (ch > 0.0 && bh > 0.0 && baseline.0 > 0).then(|| (canary.0 as f64 / ch) / (baseline.0 as f64 / bh));
        CrashExposure {
            canary_crashes: canary.0,
            canary_hours: ch,
            baseline_crashes: baseline.0,
            baseline_hours: bh,
            ratio,
        }
    }
}

/// What the controller wants done or known.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", rename_all_fields = "camelCase", tag = "output")]
pub enum Output {
    Decision {
        device: DeviceId,
        decision: Decision,
    },
    StateChanged {
        rollout: RolloutId,
        state: RolloutState,
    },
    WaveStarted {
        rollout: RolloutId,
        wave: usize,
        target_devices: u64,
    },
    /// A gate's verdict changed.
    Gate {
        rollout: RolloutId,
        wave: usize,
        report: GateReport,
    },
    Quarantined {
        release: ReleaseId,
        rollout: RolloutId,
    },
    /// One stratum failed a gate under `on_failure_scope = "stratum"`: it
    /// gets no more assignments (the release is quarantined for it), its
    /// devices are rolled back if the plan says so, the rest go on.
    StratumHalted {
        rollout: RolloutId,
        release: ReleaseId,
        scope: Scope,
        reason: String,
        rolled_back: bool,
    },
    /// An input that could not be applied, and why.
    Rejected {
        reason: String,
    },
}
