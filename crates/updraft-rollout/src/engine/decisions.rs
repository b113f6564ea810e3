//! Check-ins: what a device is told to do, pacing, requirements and stepping stones.

use super::*;

impl Controller {
    pub(super) fn check_in(&mut self, id: &DeviceId, release: Option<ReleaseId>) {
        let Some(&idx) = self.device_index.get(id.as_str()) else {
            return self.reject(format!("check-in from unknown device {id}"));
        };
        let now_s = self.secs(self.now);
        let reported = release.as_ref().and_then(|r| self.release_index.get(r).copied());
        self.devices[idx as usize].release = reported;
        let decision = self.decide(idx, id, now_s);
        self.outputs.push_back(Output::Decision { device: id.clone(), decision });
    }

    pub(super) fn decide(&mut self, idx: u32, id: &DeviceId, now_s: u32) -> Decision {
        for r in 0..self.rollouts.len() {
            self.rollouts[r].touch(idx, now_s);
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
        // A ramping cell's round, then pacing.
        if !matches!(reason, InstallReason::Rollback { .. }) && self.ramp_full(r, idx) {
            return Decision::Stay { reason: StayReason::Paced };
        }
        if !self.take_pacing_slot(r) {
            return Decision::Stay { reason: StayReason::Paced };
        }
        let rollout = &mut self.rollouts[r];
        let rel = rollout.release;
        let to = if target == rel { MemberStatus::Assigned } else { MemberStatus::SteppingStone };
        rollout.set_status(idx, to);
        if to == MemberStatus::Assigned {
            rollout.follow_up.begin(idx, now_s);
        }
        let wave = rollout.wave as u8;
        rollout.touch(idx, now_s);
        if let Some(m) = rollout.member_mut(idx) {
            m.wave = wave;
        }
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
    pub(super) fn decide_readonly(&self, idx: u32, now: UnixMs) -> Step {
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
            let cell = rollout.member(idx).map(|m| &rollout.strata[m.stratum as usize]);
            let cell_rolled_back = cell.is_some_and(|c| c.halted == Some(OnFailure::Rollback));
            match rollout.state {
                // A stratum rolled back on its own: its devices go back too.
                RolloutState::Running | RolloutState::Paused { .. } | RolloutState::Completed
                    if cell_rolled_back && current == Some(rollout.release) =>
                {
                    return Step::Done(self.rollback(idx, r));
                }
                RolloutState::RolledBack { .. } => {
                    if current == Some(rollout.release) {
                        return Step::Done(self.rollback(idx, r));
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
        let release = &self.releases[rel as usize];
        let d = &self.devices[idx as usize];
        if release.quarantined || release.blocked.iter().any(|s| self.device_in_scope(d, s)) {
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
        if stratum.halted.is_some() {
            return Step::Done(Decision::Stay { reason: StayReason::Quarantined });
        }
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

    /// A device running rollout `r`'s halted release goes back to its last
    /// known good release (or the one before, if that is the halted one).
    fn rollback(&self, idx: u32, r: usize) -> Decision {
        let rollout = &self.rollouts[r];
        let d = &self.devices[idx as usize];
        let good = d.lkg.filter(|&l| l != rollout.release).or(d.previous_good.filter(|&l| l != rollout.release));
        match good {
            Some(lkg) => Decision::Install {
                release: self.releases[lkg as usize].info.id.clone(),
                rollout: rollout.id.clone(),
                reason: InstallReason::Rollback { from: self.releases[rollout.release as usize].info.id.clone() },
            },
            None => Decision::Stay { reason: StayReason::NoLastKnownGood },
        }
    }

    pub(super) fn install(&self, r: usize, release: Rel, reason: InstallReason) -> Decision {
        Decision::Install {
            release: self.releases[release as usize].info.id.clone(),
            rollout: self.rollouts[r].id.clone(),
            reason,
        }
    }

    /// Whether device `idx`'s cell is ramping and its round is full.
    fn ramp_full(&self, r: usize, idx: u32) -> bool {
        let rollout = &self.rollouts[r];
        let start = rollout.plan.strata.ramp_start;
        rollout
            .members
            .get(idx as usize)
            .and_then(Option::as_ref)
            .is_some_and(|m| rollout.ramp_full(m.stratum as usize, start))
    }

    pub(super) fn take_pacing_slot(&mut self, r: usize) -> bool {
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
    pub(super) fn unmet_requirement(&self, idx: u32, rel: Rel) -> Option<String> {
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
    pub(super) fn stepping_stone(&self, idx: u32, rel: Rel, depth: usize) -> Option<Rel> {
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
}
