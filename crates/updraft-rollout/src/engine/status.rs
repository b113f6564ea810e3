//! What a rollout looks like from outside: its status and the device counts behind it.

use std::collections::BTreeMap;

use super::*;

impl Controller {
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
        let mut cells = vec![vec![StatusCounts::default(); strata.len()]; waves.len()];
        for m in rollout.members.iter().flatten() {
            if m.status == MemberStatus::Retired {
                continue;
            }
            if m.status == MemberStatus::Selected {
                strata[m.stratum as usize].1.selected += 1;
                continue;
            }
            for c in [
                &mut waves[m.wave as usize],
                &mut strata[m.stratum as usize].1,
                &mut cells[m.wave as usize][m.stratum as usize],
            ] {
                c.selected += 1;
                c.add(m.status);
            }
        }
        for (&idx, (wave, _, _)) in &rollout.held_back {
            let Some(m) = rollout.member(idx) else { continue };
            if m.status == MemberStatus::Selected {
                let w = usize::from(*wave).min(waves.len().saturating_sub(1));
                waves[w].held_back += 1;
                strata[m.stratum as usize].1.held_back += 1;
                cells[w][m.stratum as usize].held_back += 1;
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
        let per_wave_stratum = cells
            .into_iter()
            .map(|wave| {
                let mut v: Vec<(String, StatusCounts)> = wave
                    .into_iter()
                    .enumerate()
                    .filter(|(_, c)| c.selected > 0 || c.held_back > 0)
                    .map(|(i, c)| (strata[i].0.clone(), c))
                    .collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            })
            .collect();
        strata.sort_by(|a, b| a.0.cmp(&b.0));
        let tested = self.tested(r);
        let reports = self.gate_reports(r, &tested);
        let standings = self.standings(r, &tested, &reports);
        let total: u64 = rollout.strata.iter().map(|s| s.hashes.len() as u64).sum();
        let stratum_status = tested
            .iter()
            .zip(&standings)
            .skip(1)
            .map(|(t, standing)| {
                let cells = t.cells.iter().map(|&c| &rollout.strata[c as usize]);
                let mut s = StratumStatus {
                    scope: t.scope.clone(),
                    standing: standing.name().to_owned(),
                    wave: cells.clone().map(|c| c.wave.min(rollout.wave)).min().unwrap_or(rollout.wave) + 1,
                    devices: 0,
                    admitted: 0,
                    oversampled: 0,
                    given: 0,
                    halted: None,
                };
                for c in cells {
                    let admitted = c.admitted();
                    s.devices += c.hashes.len() as u64;
                    s.admitted += admitted;
                    s.oversampled += admitted.saturating_sub(fleet::share(&rollout.plan, rollout.wave, c, total));
                    s.given += c.given;
                    if let Some(h) = c.halted {
                        s.halted = Some(h);
                    }
                }
                if !t.halted {
                    s.halted = None;
                }
                s
            })
            .collect();
        Some(RolloutStatus {
            strata: stratum_status,
            held_back,
            rollout: rollout.id.clone(),
            release: self.releases[rollout.release as usize].info.id.clone(),
            state: rollout.state.clone(),
            wave: rollout.wave + 1,
            waves: rollout.plan.waves.len(),
            selected: rollout.selected,
            in_flight: rollout.in_flight,
            per_wave: waves,
            per_wave_stratum,
            per_stratum: strata,
            gates: rollout.last_reports.clone(),
            follow_up: rollout.follow_up.status(),
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

    /// Devices by release, hardware revision and region (retired devices
    /// left out), each sorted by name.
    pub fn fleet_counts(&self) -> FleetCounts {
        let mut release: BTreeMap<String, u64> = BTreeMap::new();
        let mut hardware: FxMap<Sym, u64> = FxMap::default();
        let mut region: FxMap<Sym, u64> = FxMap::default();
        let mut by_rel: Vec<u64> = vec![0; self.releases.len() + 1];
        for d in self.devices.iter().filter(|d| !d.retired) {
            *hardware.entry(d.hardware).or_default() += 1;
            *region.entry(d.region).or_default() += 1;
            by_rel[d.release.map_or(self.releases.len(), |r| r as usize)] += 1;
        }
        for (i, n) in by_rel.into_iter().enumerate().filter(|(_, n)| *n > 0) {
            let name = self.releases.get(i).map_or_else(|| "(none)".to_owned(), |r| r.info.id.to_string());
            release.insert(name, n);
        }
        let named = |m: FxMap<Sym, u64>| -> Vec<(String, u64)> {
            let mut v: Vec<(String, u64)> = m.into_iter().map(|(s, n)| (self.syms.name(s).to_owned(), n)).collect();
            v.sort();
            v
        };
        FleetCounts { release: release.into_iter().collect(), hardware: named(hardware), region: named(region) }
    }

    /// Up to `limit` devices of a rollout whose update ended badly
    /// (reverted, failed, silent), with how, sorted by id.
    pub fn failed_devices(&self, id: &RolloutId, limit: usize) -> Vec<(DeviceId, MemberStatus)> {
        let Some(&r) = self.rollout_index.get(id) else { return Vec::new() };
        let rollout = &self.rollouts[r];
        let bad = |s: MemberStatus| matches!(s, MemberStatus::Reverted | MemberStatus::Failed | MemberStatus::Silent);
        if !rollout.members.iter().flatten().any(|m| bad(m.status)) {
            return Vec::new();
        }
        let mut out: Vec<(DeviceId, MemberStatus)> = self
            .device_index
            .iter()
            .filter_map(|(id, &idx)| {
                rollout.member(idx).filter(|m| bad(m.status)).map(|m| (DeviceId::new(&**id), m.status))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.truncate(limit);
        out
    }
}

/// What [`Controller::fleet_counts`] returns: (name, devices) pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetCounts {
    pub release: Vec<(String, u64)>,
    pub hardware: Vec<(String, u64)>,
    pub region: Vec<(String, u64)>,
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
    /// Each wave's devices by `hardware/region` (cells with devices only).
    pub per_wave_stratum: Vec<Vec<(String, StatusCounts)>>,
    /// Keyed `hardware/region`.
    pub per_stratum: Vec<(String, StatusCounts)>,
    pub gates: Vec<GateReport>,
    /// Devices held back by a requirement (at most [`MAX_HELD_BACK_LISTED`]), with why.
    pub held_back: Vec<HeldBackDevice>,
    /// Each stratum the gates test: where it stands, its wave, its devices.
    pub strata: Vec<StratumStatus>,
    /// How long after a stage began its outcomes count, and how many wait.
    pub follow_up: FollowUpStatus,
}

/// Each stage's follow-up (the median latency of its failures so far;
/// outcomes count once their stage began this long ago) and the outcomes
/// reported but not yet counted.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowUpStatus {
    pub install_s: u32,
    pub boot_s: u32,
    pub health_s: u32,
    pub waiting: u64,
}

/// A stratum (one hardware revision, region or attribute value) of a rollout.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StratumStatus {
    pub scope: Scope,
    /// `passed`, `enough_evidence` (the plan's `strata.min_evidence`),
    /// `pooled`, `at_cap` (over-sampled to `strata.oversample_max`, all
    /// reported), `no_devices` (none took the release), `undecided` (it
    /// holds the wave) or `halted`.
    pub standing: String,
    /// The wave whose share it gets, from 1 (behind the rollout's while undecided).
    pub wave: usize,
    pub devices: u64,
    pub admitted: u64,
    /// Admitted beyond its wave's share (over-sampling).
    pub oversampled: u64,
    /// Given the release (or a stepping stone) so far.
    pub given: u64,
    /// Halted on its own (`on_failure_scope = "stratum"`): `pause` or `rollback`.
    pub halted: Option<OnFailure>,
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
