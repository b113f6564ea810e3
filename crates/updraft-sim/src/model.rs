//! The fleet and release models (TOML, documented in docs/simulation.md).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    updraft_types::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// A group of identical devices.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub count: u64,
    /// The group's product family (default: the fleet's). The release is
    /// for the fleet's family; devices of another family never take it.
    #[serde(default)]
    pub family: Option<String>,
    pub hardware: String,
    pub region: String,
    /// Connectivity class name.
    #[serde(default = "default_class")]
    pub connectivity: String,
    /// Share of the group that never comes online.
    #[serde(default)]
    pub offline: f64,
    /// Offset of the devices' local clocks from UTC (maintenance windows).
    #[serde(default)]
    pub utc_offset_min: i16,
    /// Clock skew: each device's clock is off by up to this much either way
    /// (what a device without a time source reports as its local time).
    #[serde(default = "zero", deserialize_with = "duration")]
    pub clock_skew: Duration,
    /// Versions of other components the devices report (`bootloader = "1.4.2"`).
    #[serde(default)]
    pub components: std::collections::BTreeMap<String, String>,
}

fn zero() -> Duration {
    Duration::ZERO
}

/// A regional network outage: check-ins and reports fail meanwhile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    pub region: String,
    /// Since the start of the simulation.
    #[serde(deserialize_with = "duration")]
    pub start: Duration,
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
}

fn default_class() -> String {
    "default".into()
}

/// How devices reach the server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connectivity {
    pub name: String,
    /// Download bandwidth in kilobits per second.
    pub kbps: u64,
    #[serde(default = "default_latency", deserialize_with = "duration")]
    pub latency: Duration,
    /// Share of downloads that fail (and are retried).
    #[serde(default)]
    pub loss: f64,
}

fn default_latency() -> Duration {
    Duration::from_millis(200)
}

/// The fleet.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    pub family: String,
    pub groups: Vec<Group>,
    #[serde(default)]
    pub connectivity: Vec<Connectivity>,
    #[serde(default)]
    pub outages: Vec<Outage>,
    /// Check-in interval (each device adds jitter up to 25%).
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll: Duration,
    /// Health telemetry interval.
    #[serde(default = "default_health", deserialize_with = "duration")]
    pub health_every: Duration,
    /// Chance that a device loses power during an install (once per update).
    #[serde(default)]
    pub power_loss: f64,
    /// Crashes per device-hour on the release the fleet runs.
    #[serde(default)]
    pub base_crash_rate: f64,
    /// How long a reboot takes.
    #[serde(default = "default_reboot", deserialize_with = "duration")]
    pub reboot: Duration,
    /// How long the simulation runs at most.
    #[serde(default = "default_duration", deserialize_with = "duration")]
    pub duration: Duration,
}

fn default_poll() -> Duration {
    Duration::from_secs(1800)
}
fn default_health() -> Duration {
    Duration::from_secs(3600)
}
fn default_reboot() -> Duration {
    Duration::from_secs(60)
}
fn default_duration() -> Duration {
    Duration::from_secs(7 * 86400)
}

/// How a release behaves on one hardware revision, one region, or both.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Hardware revision; none: all.
    #[serde(default)]
    pub hardware: Option<String>,
    /// Region; none: all.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub boot_fail: f64,
    #[serde(default)]
    pub health_fail: f64,
    /// Multiplies the crash rate.
    #[serde(default = "one")]
    pub crash_factor: f64,
}

fn one() -> f64 {
    1.0
}

/// The release being rolled out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub name: String,
    pub version: String,
    /// The version the fleet runs now (and rolls back to).
    #[serde(default = "default_base")]
    pub base: String,
    #[serde(default = "default_size")]
    pub image_mib: u64,
    #[serde(default)]
    pub behaviour: Vec<Behaviour>,
}

fn default_base() -> String {
    "1.0.0".into()
}

fn default_size() -> u64 {
    64
}

impl Release {
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    pub fn base_id(&self) -> String {
        format!("{}@{}", self.name, self.base)
    }

    /// How the release behaves on devices of `hardware` in `region`: the
    /// most specific `[[behaviour]]` that matches (hardware and region, then
    /// either, then one that names neither; the first of equals).
    pub fn on(&self, hardware: &str, region: &str) -> Behaviour {
        let fits = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let mut best: Option<(usize, &Behaviour)> = None;
        for b in &self.behaviour {
            if !(fits(&b.hardware, hardware) && fits(&b.region, region)) {
                continue;
            }
            let score = usize::from(b.hardware.is_some()) + usize::from(b.region.is_some());
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, b));
            }
        }
        best.map(|(_, b)| b.clone()).unwrap_or(Behaviour { crash_factor: 1.0, ..Behaviour::default() })
    }

    /// Whether the release behaves worse than the base anywhere in this
    /// stratum (`hardware=rev-x`, `region=eu`): a "bad stratum" of a sweep.
    pub fn bad_in(&self, dimension: &str, value: &str) -> bool {
        self.behaviour.iter().any(|b| {
            let named = match dimension {
                "hardware" => b.hardware.as_deref() == Some(value),
                "region" => b.region.as_deref() == Some(value),
                _ => false,
            };
            named && (b.boot_fail > 0.0 || b.health_fail > 0.0 || b.crash_factor > 1.0)
        })
    }
}

pub fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| format!("invalid {what}: {e}"))
}

impl Group {
    pub fn family<'a>(&'a self, fleet: &'a Fleet) -> &'a str {
        self.family.as_deref().unwrap_or(&fleet.family)
    }
}

impl Fleet {
    /// Checks what serde cannot: counts, shares, references.
    pub fn validate(&self) -> Result<(), String> {
        if self.groups.is_empty() {
            return Err("the fleet has no [[groups]]".into());
        }
        let share = |v: f64, what: &str| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{what} is {v}; a share is between 0 and 1"))
            }
        };
        for (i, g) in self.groups.iter().enumerate() {
            if g.count == 0 {
                return Err(format!("groups[{i}].count is 0"));
            }
            share(g.offline, &format!("groups[{i}].offline"))?;
            for (c, v) in &g.components {
                semver::Version::parse(v)
                    .map_err(|e| format!("groups[{i}].components.{c} = {v:?} is not a version: {e}"))?;
            }
            if g.connectivity != "default" && !self.connectivity.iter().any(|c| c.name == g.connectivity) {
                return Err(format!(
                    "groups[{i}] uses connectivity class {:?}, which no [[connectivity]] defines",
                    g.connectivity
                ));
            }
        }
        for c in &self.connectivity {
            if c.kbps == 0 {
                return Err(format!("connectivity {:?} has kbps = 0", c.name));
            }
            share(c.loss, &format!("connectivity {:?} loss", c.name))?;
            if c.loss >= 1.0 {
                return Err(format!("connectivity {:?} loses every download (loss = 1)", c.name));
            }
        }
        share(self.power_loss, "power_loss")?;
        if self.base_crash_rate < 0.0 {
            return Err("base_crash_rate is negative".into());
        }
        if self.poll.is_zero() || self.health_every.is_zero() {
            return Err("poll and health_every must be longer than 0s".into());
        }
        if self.groups.iter().map(|g| g.count).sum::<u64>() > u64::from(u32::MAX) {
            return Err("at most 4 billion devices".into());
        }
        Ok(())
    }

    pub fn device_count(&self) -> u64 {
        self.groups.iter().map(|g| g.count).sum()
    }
}

impl Release {
    pub fn validate(&self) -> Result<(), String> {
        if self.version == self.base {
            return Err(format!("the release version {} is the base version the fleet runs", self.version));
        }
        if self.image_mib == 0 {
            return Err("image_mib is 0".into());
        }
        for b in &self.behaviour {
            for (v, what) in [(b.boot_fail, "boot_fail"), (b.health_fail, "health_fail")] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("behaviour {what} is {v}; a share is between 0 and 1"));
                }
            }
            if b.crash_factor < 0.0 {
                return Err("behaviour crash_factor is negative".into());
            }
        }
        Ok(())
    }
}
