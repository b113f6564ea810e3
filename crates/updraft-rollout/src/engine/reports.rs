//! What devices report: install events, health samples, silence.

use super::followup::Stage;
use super::*;

impl Controller {
    pub(super) fn event(&mut self, id: &DeviceId, release: &ReleaseId, event: InstallEvent) {
        let Some(&idx) = self.device_index.get(id.as_str()) else {
            return self.reject(format!("event from unknown device {id}"));
        };
        let Some(&rel) = self.release_index.get(release) else {
            return self.reject(format!("event from {id} about unknown release {release}"));
        };
        let now_s = self.secs(self.now);
        if event == InstallEvent::Committed {
            let d = &mut self.devices[idx as usize];
            d.release = Some(rel);
            if d.lkg != Some(rel) {
                d.previous_good = d.lkg;
                d.lkg = Some(rel);
            }
            // The device now has the components the release provides.
            let provided: Vec<(Sym, semver::Version)> = self.releases[rel as usize].provides.clone();
            let mut comps: Vec<(Sym, semver::Version)> = d.components.to_vec();
            for (c, v) in provided {
                match comps.iter_mut().find(|(dc, _)| *dc == c) {
                    Some(slot) => slot.1 = v,
                    None => comps.push((c, v)),
                }
            }
            d.components = comps.into();
        }
        if matches!(event, InstallEvent::RevertedBoot | InstallEvent::RevertedHealth) {
            let d = &mut self.devices[idx as usize];
            if d.release == Some(rel) {
                d.release = d.lkg;
            }
        }
        for r in 0..self.rollouts.len() {
            let rollout = &mut self.rollouts[r];
            rollout.touch(idx, now_s);
            let Some(m) = rollout.members.get_mut(idx as usize).and_then(Option::as_mut) else { continue };
            if m.status == MemberStatus::SteppingStone {
                if rel != rollout.release && event == InstallEvent::Committed {
                    rollout.set_status(idx, MemberStatus::Selected);
                } else if matches!(
                    event,
                    InstallEvent::Failed | InstallEvent::RevertedBoot | InstallEvent::RevertedHealth
                ) && rel != rollout.release
                {
                    rollout.set_status(idx, MemberStatus::Failed);
                }
                continue;
            }
            if rollout.release != rel || !m.status.in_progress() {
                continue;
            }
            let before = m.status;
            let installed = before >= MemberStatus::Installed;
            // A trial boot passes when the device runs the new slot (not
            // when it commits, ten minutes of health checks later): a
            // failure and a success of the same stage must be counted at the
            // same point, or early in a wave the failures, which come
            // first, would outweigh successes not yet reported. Where
            // failures come later than successes, the follow-up evens it
            // out (see `followup`).
            let booted = before >= MemberStatus::TrialBoot;
            // Outcomes in stage order. Install and trial boot are timed from
            // the assignment (agents report the install when they are back
            // from the reboot that tries it); health from the trial boot.
            let mut outcomes: [Option<(Stage, bool)>; 3] = [None; 3];
            let mut next_stage = false;
            let after = match event {
                InstallEvent::Downloaded => MemberStatus::Downloaded.max(before),
                InstallEvent::Installed | InstallEvent::TrialBoot => {
                    if !installed {
                        outcomes[0] = Some((Stage::Install, false));
                    }
                    if event == InstallEvent::TrialBoot {
                        if !booted {
                            outcomes[1] = Some((Stage::Boot, false));
                            next_stage = true;
                        }
                        MemberStatus::TrialBoot
                    } else {
                        MemberStatus::Installed.max(before)
                    }
                }
                InstallEvent::Committed => {
                    if !installed {
                        outcomes[0] = Some((Stage::Install, false));
                    }
                    if !booted {
                        outcomes[1] = Some((Stage::Boot, false));
                    }
                    outcomes[2] = Some((Stage::Health, false));
                    MemberStatus::Committed
                }
                InstallEvent::RevertedBoot | InstallEvent::RevertedHealth => {
                    if !installed {
                        outcomes[0] = Some((Stage::Install, false));
                    }
                    if event == InstallEvent::RevertedHealth {
                        if !booted {
                            outcomes[1] = Some((Stage::Boot, false));
                        }
                        outcomes[2] = Some((Stage::Health, true));
                    } else if booted {
                        // Reverted by the bootloader after a trial boot that
                        // ran: the health of the new slot failed.
                        outcomes[2] = Some((Stage::Health, true));
                    } else {
                        outcomes[1] = Some((Stage::Boot, true));
                    }
                    MemberStatus::Reverted
                }
                InstallEvent::Failed => {
                    let stage = if booted {
                        Stage::Health
                    } else if installed {
                        Stage::Boot
                    } else {
                        Stage::Install
                    };
                    outcomes[stage as usize] = Some((stage, true));
                    MemberStatus::Failed
                }
            };
            for (stage, failed) in outcomes.into_iter().flatten() {
                rollout.outcome(idx, stage, failed, now_s);
            }
            if !after.in_progress() {
                rollout.follow_up.end(idx);
            } else if next_stage {
                rollout.follow_up.begin(idx, now_s);
            }
            rollout.set_status(idx, after);
            rollout.dirty = true;
        }
    }

    pub(super) fn health(&mut self, id: &DeviceId, sample: &HealthSample) {
        let Some(&idx) = self.device_index.get(id.as_str()) else {
            return self.reject(format!("health report from unknown device {id}"));
        };
        let now_s = self.secs(self.now);
        let current = self.devices[idx as usize].release;
        for r in 0..self.rollouts.len() {
            let rollout = &mut self.rollouts[r];
            if !matches!(rollout.state, RolloutState::Running | RolloutState::Completed | RolloutState::Paused { .. }) {
                continue;
            }
            rollout.touch(idx, now_s);
            let Some(m) = rollout.members.get_mut(idx as usize).and_then(Option::as_mut) else { continue };
            let c = &mut rollout.strata[m.stratum as usize].counts;
            if current == Some(rollout.release) && m.status == MemberStatus::Committed {
                c.crash_canary
                    .add(&Exposure { crashes: u64::from(sample.crashes), seconds: u64::from(sample.period_s) });
                let mut bit = 0;
                for g in &rollout.plan.gates {
                    if let GateKind::Metric { metric, max_value, .. } = &g.kind {
                        if let Some((_, v)) = sample.custom.iter().find(|(n, _)| n == metric) {
                            let mask = 1u16 << bit;
                            if m.metric_seen & mask == 0 {
                                m.metric_seen |= mask;
                                c.metric[bit].trials += 1;
                            }
                            if *v > *max_value && m.metric_bad & mask == 0 {
                                m.metric_bad |= mask;
                                c.metric[bit].failures += 1;
                            }
                        }
                        bit += 1;
                    }
                }
                rollout.dirty = true;
            } else if m.status == MemberStatus::Selected && current != Some(rollout.release) {
                c.crash_baseline
                    .add(&Exposure { crashes: u64::from(sample.crashes), seconds: u64::from(sample.period_s) });
                rollout.dirty = true;
            }
        }
    }

    /// Devices silent past the timeout after their assignment count as failed.
    pub(super) fn expire_silent(&mut self) {
        let now = self.now.0;
        while let Some(&Reverse((deadline, r, idx))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let epoch = self.epoch.0;
            let rollout = &mut self.rollouts[r as usize];
            let timeout_ms = rollout.plan.silence_timeout.as_millis() as u64;
            let Some(m) = rollout.members.get_mut(idx as usize).and_then(Option::as_mut) else { continue };
            if !m.status.in_progress() {
                continue;
            }
            let seen = epoch + u64::from(m.last_seen_s) * 1000;
            if seen + timeout_ms > now {
                self.deadlines.push(Reverse((seen + timeout_ms, r, idx)));
                continue;
            }
            let c = &mut rollout.strata[m.stratum as usize].counts;
            if m.status == MemberStatus::TrialBoot {
                // Its trial boot counted as passed: the silence is the health check's.
                c.health.fail();
            } else if m.status >= MemberStatus::Installed {
                c.boot.fail();
            } else if m.status != MemberStatus::SteppingStone {
                c.install.fail();
            }
            rollout.set_status(idx, MemberStatus::Silent);
            rollout.follow_up.end(idx);
            rollout.dirty = true;
        }
    }
}
