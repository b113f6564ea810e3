//! The controller journal: every input that changed the rollout
//! controller, persisted before the change is acknowledged, and replayed in
//! order at start-up. The rollout core is deterministic, so replaying its
//! inputs rebuilds its state exactly.

use serde::{Deserialize, Serialize};
use updraft_rollout as rollout;
use updraft_types::{DeviceId, ReleaseId, RolloutId};

/// One journal entry (stored as JSON; the format is versioned by its tags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Release {
        id: ReleaseId,
        family: String,
        hardware: Vec<String>,
        requires: Vec<(String, String)>,
        provides: Vec<(String, String)>,
    },
    Device {
        id: DeviceId,
        family: String,
        hardware: String,
        region: String,
        tags: Vec<String>,
        channel: Option<String>,
        release: Option<ReleaseId>,
        last_known_good: Option<ReleaseId>,
        components: Vec<(String, String)>,
        utc_offset_min: i16,
    },
    CreateRollout {
        id: RolloutId,
        release: ReleaseId,
        plan: String,
    },
    Command {
        rollout: RolloutId,
        command: String,
    },
    LiftQuarantine {
        release: ReleaseId,
    },
    CheckIn {
        device: DeviceId,
        release: Option<ReleaseId>,
    },
    Event {
        device: DeviceId,
        release: ReleaseId,
        event: String,
    },
    Retire {
        device: DeviceId,
    },
    Health {
        device: DeviceId,
        period_s: u32,
        boots: u32,
        crashes: u32,
        metrics: Vec<(String, f64)>,
    },
    Tick,
}

pub fn parse_command(s: &str) -> Option<rollout::Command> {
    Some(match s {
        "start" => rollout::Command::Start,
        "pause" => rollout::Command::Pause,
        "resume" => rollout::Command::Resume,
        "advance" => rollout::Command::AdvanceNow,
        "abort" => rollout::Command::Abort,
        "rollback" => rollout::Command::Rollback,
        _ => return None,
    })
}

pub fn parse_event(s: &str) -> Option<rollout::InstallEvent> {
    rollout::InstallEvent::parse(s)
}

fn versions(v: &[(String, String)]) -> Vec<(String, semver::Version)> {
    v.iter().filter_map(|(c, s)| semver::Version::parse(s).ok().map(|v| (c.clone(), v))).collect()
}

impl Entry {
    /// The controller input this entry stands for (`None` if it no longer
    /// parses, which a journal written by this server never does).
    pub fn to_input(&self) -> Option<rollout::Input> {
        Some(match self.clone() {
            Entry::Release { id, family, hardware, requires, provides } => {
                rollout::Input::Release(rollout::ReleaseInfo {
                    id,
                    family,
                    hardware,
                    requires: requires
                        .iter()
                        .filter_map(|(c, r)| semver::VersionReq::parse(r).ok().map(|r| (c.clone(), r)))
                        .collect(),
                    provides: versions(&provides),
                })
            }
            Entry::Device {
                id,
                family,
                hardware,
                region,
                tags,
                channel,
                release,
                last_known_good,
                components,
                utc_offset_min,
            } => rollout::Input::Device(rollout::DeviceInfo {
                id,
                family,
                hardware,
                region,
                tags,
                channel,
                release,
                last_known_good,
                components: versions(&components),
                utc_offset_min,
            }),
            Entry::CreateRollout { id, release, plan } => {
                rollout::Input::CreateRollout { id, release, plan: rollout::Plan::from_toml(&plan).ok()? }
            }
            Entry::Command { rollout, command } => {
                rollout::Input::Command { rollout, command: parse_command(&command)? }
            }
            Entry::LiftQuarantine { release } => rollout::Input::LiftQuarantine { release },
            Entry::CheckIn { device, release } => rollout::Input::CheckIn { device, release },
            Entry::Event { device, release, event } => {
                rollout::Input::Event { device, release, event: parse_event(&event)? }
            }
            Entry::Health { device, period_s, boots, crashes, metrics } => rollout::Input::Health {
                device,
                sample: rollout::HealthSample { period_s, boots, crashes, custom: metrics },
            },
            Entry::Retire { device } => rollout::Input::Retire { device },
            Entry::Tick => rollout::Input::Tick,
        })
    }
}
