//! Rollout plans: the TOML a release manager writes (see docs/rollout-plans.md).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::RolloutError;

/// Waves a plan may have.
pub const MAX_WAVES: usize = 32;
/// Gates a plan may have.
pub const MAX_GATES: usize = 16;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    updraft_types::parse_duration(&s).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| updraft_types::parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
}

/// Which devices a rollout is for. Every field that is set must match;
/// devices that join later and match are included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub family: String,
    /// Hardware revisions; empty means all of the family.
    #[serde(default)]
    pub hardware: Vec<String>,
    /// Regions; empty means all.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Tags the device must all carry.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The device's channel (dev, beta, stable); unset means any.
    #[serde(default)]
    pub channel: Option<String>,
    /// Attributes the device must all have (`site = "berlin"`), as set by
    /// operators. A device's attributes reach the controller as `KEY=VALUE`
    /// labels beside its tags (a tag cannot contain `=`).
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// How large a wave is: a cumulative share of the selected fleet, or a
/// cumulative number of devices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WaveSize {
    Percent(f64),
    Count(u64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireWave {
    #[serde(default)]
    percent: Option<f64>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    min_devices: u64,
    #[serde(default = "zero", deserialize_with = "duration", serialize_with = "ser_duration")]
    soak: Duration,
    #[serde(default)]
    max_concurrent: Option<u64>,
    #[serde(default)]
    per_minute: Option<u32>,
}

fn zero() -> Duration {
    Duration::ZERO
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime_like(*d))
}

/// `90s`, `15m`, `4h`, `2d`: the shortest exact form.
pub fn humantime_like(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        "0s".into()
    } else if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3_600 == 0 {
        format!("{}h", s / 3_600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// One wave.
#[derive(Clone, Debug, PartialEq)]
pub struct Wave {
    pub size: WaveSize,
    /// The wave holds at least this many devices (when the fleet has them).
    pub min_devices: u64,
    /// Time the wave's devices must run the release before it may advance.
    pub soak: Duration,
    /// At most this many installs in progress at once.
    pub max_concurrent: Option<u64>,
    /// At most this many new installs per minute.
    pub per_minute: Option<u32>,
}

/// What a gate measures.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", rename_all_fields = "camelCase", tag = "kind")]
pub enum GateKind {
    /// Downloads and installs that fail (or go silent before installing).
    Install { max_failure_rate: f64 },
    /// Trial boots that do not reach a commit (boot-attempt limit reached).
    Boot { max_failure_rate: f64 },
    /// Health checks after the trial boot that fail.
    Health { max_failure_rate: f64 },
    /// Crashes and watchdog resets per device-hour, relative to the
    /// baseline (devices of the same selector still on the old release).
    CrashRate { max_ratio: f64, min_exposure_hours: f64 },
    /// Devices whose custom metric exceeds `max_value`.
    Metric { metric: String, max_value: f64, max_failure_rate: f64 },
}

/// A health gate: a statistical test on what the devices report.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    #[serde(flatten)]
    pub kind: GateKind,
    /// Outcomes needed before the gate can pass (never needed to fail).
    pub min_sample: u64,
    /// Confidence of each verdict: a good release is halted with
    /// probability at most 1 - confidence (see docs/rollout-statistics.md).
    pub confidence: f64,
}

/// A gate as written; checked and turned into a [`Gate`] by [`Plan::from_toml`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireGate {
    kind: String,
    #[serde(default)]
    max_failure_rate: Option<f64>,
    #[serde(default)]
    max_ratio: Option<f64>,
    #[serde(default)]
    min_exposure_hours: Option<f64>,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default)]
    max_value: Option<f64>,
    #[serde(default = "default_min_sample")]
    min_sample: u64,
    #[serde(default = "default_confidence")]
    confidence: f64,
}

impl WireGate {
    fn into_gate(self, n: usize) -> Result<Gate, String> {
        let need =
            |v: Option<f64>, field: &str| v.ok_or_else(|| format!("gate {n} ({}): {field} is required", self.kind));
        let kind = match self.kind.as_str() {
            "install" => GateKind::Install { max_failure_rate: need(self.max_failure_rate, "max_failure_rate")? },
            "boot" => GateKind::Boot { max_failure_rate: need(self.max_failure_rate, "max_failure_rate")? },
            "health" => GateKind::Health { max_failure_rate: need(self.max_failure_rate, "max_failure_rate")? },
            "crash_rate" => GateKind::CrashRate {
                max_ratio: need(self.max_ratio, "max_ratio")?,
                min_exposure_hours: self.min_exposure_hours.unwrap_or(0.0),
            },
            "metric" => GateKind::Metric {
                metric: self.metric.clone().ok_or_else(|| format!("gate {n} (metric): metric is required"))?,
                max_value: need(self.max_value, "max_value")?,
                max_failure_rate: need(self.max_failure_rate, "max_failure_rate")?,
            },
            other => {
                return Err(format!(
                    "gate {n}: unknown kind {other:?}; hint: install, boot, health, crash_rate or metric"
                ))
            }
        };
        Ok(Gate { kind, min_sample: self.min_sample, confidence: self.confidence })
    }
}

fn default_min_sample() -> u64 {
    20
}

fn default_confidence() -> f64 {
    0.95
}

impl Gate {
    pub fn name(&self) -> String {
        match &self.kind {
            GateKind::Install { .. } => "install".into(),
            GateKind::Boot { .. } => "boot".into(),
            GateKind::Health { .. } => "health".into(),
            GateKind::CrashRate { .. } => "crash_rate".into(),
            GateKind::Metric { metric, .. } => format!("metric:{metric}"),
        }
    }

    /// The gate's limit in words (`failure rate < 5%`, `crash rate < 1.5x the baseline`).
    pub fn limit(&self) -> String {
        match &self.kind {
            GateKind::Install { max_failure_rate }
            | GateKind::Boot { max_failure_rate }
            | GateKind::Health { max_failure_rate } => format!("failure rate < {}%", max_failure_rate * 100.0),
            GateKind::CrashRate { max_ratio, .. } => format!("crash rate < {max_ratio}x the baseline"),
            GateKind::Metric { max_value, max_failure_rate, .. } => {
                format!("share above {max_value} < {}%", max_failure_rate * 100.0)
            }
        }
    }
}

/// What happens when a gate fails.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop assigning and wait for an operator.
    Pause,
    /// Stop assigning and give every device that took the release its last
    /// known good release.
    #[default]
    Rollback,
}

/// What happens when a wave has waited `max_wait` past its soak without a
/// verdict (too few devices reported to show the release is healthy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInconclusive {
    #[default]
    Pause,
    Advance,
}

/// A daily maintenance window in the device's local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Minutes after local midnight.
    pub start_min: u16,
    pub end_min: u16,
}

impl Window {
    /// Whether `minute_of_day` (local) is inside; windows may wrap midnight.
    pub fn contains(&self, minute_of_day: u16) -> bool {
        if self.start_min <= self.end_min {
            (self.start_min..self.end_min).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start_min || minute_of_day < self.end_min
        }
    }

    /// Minutes from `minute_of_day` until the window opens (0 if open).
    pub fn minutes_until_open(&self, minute_of_day: u16) -> u16 {
        if self.contains(minute_of_day) {
            0
        } else {
            ((self.start_min + 1440 - minute_of_day) % 1440).max(1)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireWindow {
    start: String,
    end: String,
}

fn parse_hhmm(s: &str) -> Result<u16, String> {
    let (h, m) = s.split_once(':').ok_or_else(|| format!("time {s:?} must be HH:MM"))?;
    let h: u16 = h.parse().map_err(|_| format!("time {s:?} must be HH:MM"))?;
    let m: u16 = m.parse().map_err(|_| format!("time {s:?} must be HH:MM"))?;
    if h > 23 || m > 59 {
        return Err(format!("time {s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

/// A dimension the gates test each value of (a stratum is one value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dimension {
    Hardware,
    Region,
    /// An operator-set attribute (`site`): its value on each device.
    Attribute(String),
}

impl Dimension {
    fn parse(s: &str) -> Result<Dimension, String> {
        match s {
            "hardware" => Ok(Dimension::Hardware),
            "region" => Ok(Dimension::Region),
            "" | "all" => {
                Err(format!("strata.by: {s:?} is not a dimension; hint: hardware, region or an attribute name"))
            }
            a if a.contains(['=', ' ']) => Err(format!("strata.by: {a:?}: an attribute name has no '=' or spaces")),
            a => Ok(Dimension::Attribute(a.to_owned())),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Dimension::Hardware => "hardware",
            Dimension::Region => "region",
            Dimension::Attribute(a) => a,
        }
    }
}

/// Whether the strata that have decided move on while another one is
/// still undecided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Others {
    /// The whole rollout waits (the default).
    #[default]
    Wait,
    /// The rollout advances; the undecided stratum keeps its wave's share
    /// (and its over-sampling) until it decides, then catches up.
    Advance,
}

/// Where a failed gate acts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureScope {
    /// The whole rollout halts (pauses or rolls back), whichever stratum failed.
    #[default]
    Release,
    /// Only the failing stratum halts (rolls back or pauses) and the release
    /// is quarantined for it; the others go on. A failure over all devices
    /// together still halts the whole rollout.
    Stratum,
}

/// How the gates treat strata (see docs/rollout-plans.md, "Strata").
#[derive(Clone, Debug, PartialEq)]
pub struct Strata {
    /// The dimensions whose every value is tested (default hardware and region).
    pub by: Vec<Dimension>,
    /// A wave advances only when every stratum has decided (default). Off:
    /// the verdict over all devices decides and strata can only halt.
    pub decide_each: bool,
    /// Outcomes (of each gate) after which a stratum that has not passed no
    /// longer holds its wave; 0: it must pass.
    pub min_evidence: u64,
    /// Devices of an undecided stratum admitted ahead of its wave at a time,
    /// at the least (over-sampling; 0 turns it off).
    pub oversample_step: u64,
    /// Over-sampling admits at most this share of a stratum's devices.
    pub oversample_max: f64,
    /// Until a cell's strata have passed, at most this many of its updates
    /// are in progress at once, more as outcomes come back (the
    /// over-sampling rule); 0: the whole share of a wave at once.
    pub ramp_start: u64,
    pub others: Others,
    /// An undecided stratum counts as decided once every stratum of the other
    /// dimensions that shares its devices has passed and it has the gate's
    /// minimum sample without evidence of harm.
    pub pool: bool,
}

impl Default for Strata {
    fn default() -> Self {
        Strata {
            by: vec![Dimension::Hardware, Dimension::Region],
            decide_each: true,
            min_evidence: 0,
            oversample_step: 10,
            oversample_max: 0.5,
            ramp_start: 0,
            others: Others::Wait,
            pool: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireStrata {
    #[serde(default)]
    by: Option<Vec<String>>,
    #[serde(default)]
    decide_each: Option<bool>,
    #[serde(default)]
    min_evidence: Option<u64>,
    #[serde(default)]
    oversample_step: Option<u64>,
    #[serde(default)]
    oversample_max: Option<f64>,
    #[serde(default)]
    ramp_start: Option<u64>,
    #[serde(default)]
    others: Option<Others>,
    #[serde(default)]
    pool: Option<bool>,
}

impl WireStrata {
    fn into_strata(self) -> Result<Strata, String> {
        let d = Strata::default();
        let by = match self.by {
            None => d.by,
            Some(names) => {
                let mut by = Vec::new();
                for n in &names {
                    let dim = Dimension::parse(n)?;
                    if by.contains(&dim) {
                        return Err(format!("strata.by names {n:?} twice"));
                    }
                    by.push(dim);
                }
                if by.len() > MAX_DIMENSIONS {
                    return Err(format!("strata.by: at most {MAX_DIMENSIONS} dimensions"));
                }
                by
            }
        };
        let oversample_max = self.oversample_max.unwrap_or(d.oversample_max);
        if !(oversample_max > 0.0 && oversample_max <= 1.0) {
            return Err(format!(
                "strata.oversample_max {oversample_max} must be above 0 and at most 1 (a share of the stratum)"
            ));
        }
        Ok(Strata {
            by,
            decide_each: self.decide_each.unwrap_or(d.decide_each),
            min_evidence: self.min_evidence.unwrap_or(d.min_evidence),
            oversample_step: self.oversample_step.unwrap_or(d.oversample_step),
            oversample_max,
            ramp_start: self.ramp_start.unwrap_or(d.ramp_start),
            others: self.others.unwrap_or(d.others),
            pool: self.pool.unwrap_or(d.pool),
        })
    }
}

/// Dimensions `strata.by` may name.
pub const MAX_DIMENSIONS: usize = 4;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePlan {
    #[serde(default)]
    name: String,
    selector: Selector,
    waves: Vec<WireWave>,
    #[serde(default)]
    gates: Vec<WireGate>,
    #[serde(default)]
    on_failure: OnFailure,
    #[serde(default)]
    on_failure_scope: FailureScope,
    #[serde(default)]
    on_inconclusive: OnInconclusive,
    #[serde(default)]
    strata: Option<WireStrata>,
    #[serde(default = "default_silence", deserialize_with = "duration")]
    silence_timeout: Duration,
    #[serde(default, deserialize_with = "opt_duration")]
    max_wait: Option<Duration>,
    #[serde(default)]
    window: Option<WireWindow>,
}

fn default_silence() -> Duration {
    Duration::from_secs(6 * 3600)
}

/// A validated rollout plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub name: String,
    pub selector: Selector,
    pub waves: Vec<Wave>,
    pub gates: Vec<Gate>,
    pub on_failure: OnFailure,
    pub on_failure_scope: FailureScope,
    pub on_inconclusive: OnInconclusive,
    pub strata: Strata,
    /// A device assigned the release that reports nothing for this long
    /// counts as failed.
    pub silence_timeout: Duration,
    /// How long past its soak a wave waits for a verdict (default 24h).
    pub max_wait: Duration,
    pub window: Option<Window>,
}

impl Plan {
    /// Parses and validates a plan written in TOML.
    pub fn from_toml(text: &str) -> Result<Plan, RolloutError> {
        let bad = |m: String| RolloutError::InvalidPlan(m);
        let wire: WirePlan = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if wire.selector.family.is_empty() {
            return Err(bad("selector.family is required".into()));
        }
        if wire.waves.is_empty() || wire.waves.len() > MAX_WAVES {
            return Err(bad(format!("a plan has 1 to {MAX_WAVES} waves")));
        }
        if wire.gates.len() > MAX_GATES {
            return Err(bad(format!("a plan has at most {MAX_GATES} gates")));
        }
        let mut waves = Vec::new();
        let mut last_percent = 0.0f64;
        let mut last_count = 0u64;
        for (i, w) in wire.waves.iter().enumerate() {
            let n = i + 1;
            let size = match (w.percent, w.count) {
                (Some(p), None) => {
                    if !(p > 0.0 && p <= 100.0) {
                        return Err(bad(format!("wave {n}: percent {p} must be above 0 and at most 100")));
                    }
                    if p < last_percent {
                        return Err(bad(format!(
                            "wave {n}: waves are cumulative; {p}% is below the previous {last_percent}%"
                        )));
                    }
                    last_percent = p;
                    WaveSize::Percent(p)
                }
                (None, Some(c)) => {
                    if c == 0 || c < last_count {
                        return Err(bad(format!("wave {n}: count {c} must be positive and cumulative")));
                    }
                    last_count = c;
                    WaveSize::Count(c)
                }
                _ => return Err(bad(format!("wave {n}: give exactly one of percent or count"))),
            };
            if w.per_minute == Some(0) || w.max_concurrent == Some(0) {
                return Err(bad(format!("wave {n}: pacing limits must be positive")));
            }
            waves.push(Wave {
                size,
                min_devices: w.min_devices,
                soak: w.soak,
                max_concurrent: w.max_concurrent,
                per_minute: w.per_minute,
            });
        }
        if !matches!(waves.last().map(|w| w.size), Some(WaveSize::Percent(p)) if p == 100.0) {
            // A plan may stop short of the whole fleet on purpose (a canary plan).
        }
        let gates = wire
            .gates
            .into_iter()
            .enumerate()
            .map(|(i, g)| g.into_gate(i + 1))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        for g in &gates {
            if !(g.confidence > 0.5 && g.confidence < 1.0) {
                return Err(bad(format!("gate {}: confidence {} must be between 0.5 and 1", g.name(), g.confidence)));
            }
            let rate_ok = |r: f64| r > 0.0 && r < 1.0;
            match &g.kind {
                GateKind::Install { max_failure_rate }
                | GateKind::Boot { max_failure_rate }
                | GateKind::Health { max_failure_rate }
                | GateKind::Metric { max_failure_rate, .. } => {
                    if !rate_ok(*max_failure_rate) {
                        return Err(bad(format!(
                            "gate {}: max_failure_rate {max_failure_rate} must be between 0 and 1 (0.02 is 2%)",
                            g.name()
                        )));
                    }
                }
                GateKind::CrashRate { max_ratio, min_exposure_hours } => {
                    let ratio_ok = max_ratio.is_finite() && *max_ratio >= 1.0;
                    let hours_ok = min_exposure_hours.is_finite() && *min_exposure_hours >= 0.0;
                    if !ratio_ok || !hours_ok {
                        return Err(bad(
                            "gate crash_rate: max_ratio must be at least 1 and min_exposure_hours not negative"
                                .to_owned(),
                        ));
                    }
                }
            }
        }
        let window = match wire.window {
            Some(w) => {
                let start = parse_hhmm(&w.start).map_err(bad)?;
                let end = parse_hhmm(&w.end).map_err(bad)?;
                if start == end {
                    return Err(bad("window start and end must differ".into()));
                }
                Some(Window { start_min: start, end_min: end })
            }
            None => None,
        };
        let strata = wire.strata.map_or_else(|| Ok(Strata::default()), WireStrata::into_strata).map_err(bad)?;
        Ok(Plan {
            name: wire.name,
            selector: wire.selector,
            waves,
            gates,
            on_failure: wire.on_failure,
            on_failure_scope: wire.on_failure_scope,
            on_inconclusive: wire.on_inconclusive,
            strata,
            silence_timeout: wire.silence_timeout,
            max_wait: wire.max_wait.unwrap_or(Duration::from_secs(24 * 3600)),
            window,
        })
    }
}
