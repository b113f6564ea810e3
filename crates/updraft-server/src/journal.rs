//! The controller journal: every input that changed the rollout
//! controller, persisted before the change is acknowledged, and replayed in
//! order at start-up. The rollout core is deterministic, so replaying its
//! inputs rebuilds its state exactly.

use serde::{Deserialize, Serialize};
use updraft_rollout as rollout;
use updraft_types::{DeviceId, ReleaseId, RolloutId};

/// One journal entry (stored as JSON; the format is versioned by its tags).
/// Entries are typed: a command or an event that does not parse is refused
/// before it is journaled, never stored as a string that replay would drop.
/// A rollout's plan is kept as the TOML the operator sent (the document of
/// record; it parsed when the rollout was created).
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
        #[serde(with = "command_name")]
        command: rollout::Command,
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
        event: rollout::InstallEvent,
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

/// The operator's commands, as the API's path and the journal name them.
pub const COMMANDS: [(&str, rollout::Command); 6] = [
    ("start", rollout::Command::Start),
    ("pause", rollout::Command::Pause),
    ("resume", rollout::Command::Resume),
    ("advance", rollout::Command::AdvanceNow),
    ("abort", rollout::Command::Abort),
    ("rollback", rollout::Command::Rollback),
];

pub fn parse_command(s: &str) -> Option<rollout::Command> {
    COMMANDS.iter().find(|(name, _)| *name == s).map(|(_, c)| *c)
}

pub fn command_str(c: rollout::Command) -> &'static str {
    COMMANDS.iter().find(|(_, k)| *k == c).map(|(name, _)| *name).unwrap_or("unknown")
}

/// A command in the journal by its API name (`advance`, not `advance_now`).
mod command_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use updraft_rollout::Command;

    pub fn serialize<S: Serializer>(c: &Command, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::command_str(*c))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Command, D::Error> {
        let name = String::deserialize(d)?;
        super::parse_command(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown command {name:?}")))
    }
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
            Entry::Command { rollout, command } => rollout::Input::Command { rollout, command },
            Entry::LiftQuarantine { release } => rollout::Input::LiftQuarantine { release },
            Entry::CheckIn { device, release } => rollout::Input::CheckIn { device, release },
            Entry::Event { device, release, event } => rollout::Input::Event { device, release, event },
            Entry::Health { device, period_s, boots, crashes, metrics } => rollout::Input::Health {
                device,
                sample: rollout::HealthSample { period_s, boots, crashes, custom: metrics },
            },
            Entry::Retire { device } => rollout::Input::Retire { device },
            Entry::Tick => rollout::Input::Tick,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Journals written before entries were typed still replay: the JSON is
    /// the same.
    #[test]
    fn typed_entries_keep_the_journal_format() {
        let cases = [
            (r#"{"kind":"command","rollout":"r1","command":"advance"}"#, "advance"),
            (r#"{"kind":"command","rollout":"r1","command":"rollback"}"#, "rollback"),
            (r#"{"kind":"event","device":"d1","release":"fw@1.0.0","event":"trial_boot"}"#, "trial_boot"),
        ];
        for (json, _) in cases {
            let entry: Entry = serde_json::from_str(json).expect(json);
            assert_eq!(serde_json::to_string(&entry).unwrap(), json);
            assert!(entry.to_input().is_some(), "{json}");
        }
        let bad = r#"{"kind":"command","rollout":"r1","command":"explode"}"#;
        assert!(serde_json::from_str::<Entry>(bad).is_err());
    }
}
