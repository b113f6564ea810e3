//! Rollouts: creation, waves, operator commands, advancing and halting.

use super::*;

impl Controller {
    pub(super) fn create_rollout(&mut self, id: RolloutId, release: ReleaseId, plan: Plan) {
        if self.rollout_index.contains_key(&id) {
            return self.reject(format!("rollout {id} already exists"));
        }
        let Some(&rel) = self.release_index.get(&release) else {
            return self.reject(format!("rollout {id}: unknown release {release}"));
        };
        if plan.selector.family != self.releases[rel as usize].info.family {
            return self.reject(format!(
                "rollout {id}: the plan selects family {:?} but {release} is for {:?}",
                plan.selector.family, self.releases[rel as usize].info.family
            ));
        }
        let r = self.rollouts.len();
        self.rollouts.push(Rollout {
            id: id.clone(),
            release: rel,
            plan,
            state: RolloutState::Created,
            wave: 0,
            wave_started: self.now,
            members: Vec::new(),
            selected: 0,
            strata: Vec::new(),
            stratum_of: FxMap::default(),
            in_flight: 0,
            tokens: 0.0,
            tokens_at: self.now,
            dirty: false,
            next_eval: self.now,
            verdicts: Vec::new(),
            latched: Vec::new(),
            last_reports: Vec::new(),
            ramp_groups: Vec::new(),
            held_back: Default::default(),
            follow_up: Default::default(),
        });
        self.rollout_index.insert(id.clone(), r);
        // Bulk selection: sort each stratum once.
        let mut selected: Vec<u32> = Vec::new();
        for idx in 0..self.devices.len() as u32 {
            if self.matches(&self.rollouts[r], &self.devices[idx as usize]) {
                selected.push(idx);
            }
        }
        let salt = fnv1a(id.as_str());
        for idx in selected {
            let hash = cohort_hash_of(salt, self.devices[idx as usize].id_hash);
            let s = self.cell_of(r, idx);
            let rollout = &mut self.rollouts[r];
            rollout.strata[s as usize].hashes.push(hash);
            rollout.insert_member(idx, Member::selected(hash, s));
        }
        for s in &mut self.rollouts[r].strata {
            s.hashes.sort_unstable();
        }
        self.set_thresholds(r);
        self.outputs.push_back(Output::StateChanged { rollout: id, state: RolloutState::Created });
    }

    pub(super) fn set_state(&mut self, r: usize, state: RolloutState) {
        if self.rollouts[r].state == state {
            return;
        }
        self.rollouts[r].state = state.clone();
        self.outputs.push_back(Output::StateChanged { rollout: self.rollouts[r].id.clone(), state });
    }

    /// Starts wave `wave` (from 0) for every cell but those in `keep`,
    /// which stay at their wave until their strata decide.
    pub(super) fn start_wave(&mut self, r: usize, wave: usize, keep: &[u16]) {
        let rollout = &mut self.rollouts[r];
        for (c, cell) in rollout.strata.iter_mut().enumerate() {
            if !keep.contains(&(c as u16)) {
                cell.wave = wave;
            }
        }
        rollout.wave = wave;
        rollout.wave_started = self.now;
        rollout.verdicts.clear();
        rollout.latched.clear();
        rollout.dirty = true;
        self.set_thresholds(r);
        let rollout = &self.rollouts[r];
        let total: u64 = rollout.strata.iter().map(|s| s.hashes.len() as u64).sum();
        let w = &rollout.plan.waves[wave];
        self.outputs.push_back(Output::WaveStarted {
            rollout: rollout.id.clone(),
            wave: wave + 1,
            target_devices: wave_target(w.size, w.min_devices, total),
        });
    }

    pub(super) fn command(&mut self, id: &RolloutId, command: Command) {
        let Some(&r) = self.rollout_index.get(id) else {
            return self.reject(format!("unknown rollout {id}"));
        };
        let state = self.rollouts[r].state.clone();
        let quarantined = self.releases[self.rollouts[r].release as usize].quarantined;
        let refuse = |this: &mut Self, why: &str| {
            this.reject(format!("rollout {id}: cannot {command:?} while {}: {why}", state.name()))
        };
        match command {
            Command::Start => match state {
                RolloutState::Created if quarantined => refuse(self, "the release is quarantined"),
                RolloutState::Created => {
                    self.set_state(r, RolloutState::Running);
                    self.start_wave(r, 0, &[]);
                }
                _ => refuse(self, "it has already started"),
            },
            Command::Pause => match state {
                RolloutState::Running | RolloutState::Completed => {
                    self.set_state(r, RolloutState::Paused { reason: "paused by an operator".into() })
                }
                _ => refuse(self, "only a running rollout can be paused"),
            },
            Command::Resume => match state {
                RolloutState::Paused { .. } if quarantined => {
                    refuse(self, "the release is quarantined; lift the quarantine first")
                }
                RolloutState::Paused { .. } => {
                    self.set_state(r, RolloutState::Running);
                    // The wait for a verdict starts again.
                    self.rollouts[r].wave_started = self.now;
                    self.rollouts[r].dirty = true;
                }
                _ => refuse(self, "only a paused rollout can be resumed"),
            },
            Command::AdvanceNow => match state {
                RolloutState::Running | RolloutState::Paused { .. } if !quarantined => {
                    self.set_state(r, RolloutState::Running);
                    self.advance(r, &[]);
                }
                _ => refuse(self, "only a running or paused rollout of a release that is not quarantined can advance"),
            },
            Command::Abort => match state {
                RolloutState::Aborted | RolloutState::RolledBack { .. } => refuse(self, "it has already ended"),
                _ => self.set_state(r, RolloutState::Aborted),
            },
            Command::Rollback => match state {
                RolloutState::RolledBack { .. } => refuse(self, "it is already rolled back"),
                _ => self.halt(r, "rolled back by an operator".into(), OnFailure::Rollback),
            },
        }
    }

    /// Moves to the next wave (or completes), leaving the cells in `keep` where they are.
    pub(super) fn advance(&mut self, r: usize, keep: &[u16]) {
        let next = self.rollouts[r].wave + 1;
        if next < self.rollouts[r].plan.waves.len() {
            self.start_wave(r, next, keep);
        } else {
            // An operator's advance at the last wave: lagging cells catch up.
            let last = self.rollouts[r].wave;
            // Completed rollouts are no longer evaluated: ramps end here.
            for cell in &mut self.rollouts[r].strata {
                cell.wave = last;
                cell.ramping = false;
            }
            self.set_thresholds(r);
            self.set_state(r, RolloutState::Completed);
        }
    }

    /// Halts one stratum (`on_failure_scope = "stratum"`): its cells admit
    /// no one new, the release is quarantined for it, its devices go back
    /// to their last known good release if the plan rolls back. When no
    /// cell is left running, the whole rollout halts.
    pub(super) fn halt_stratum(&mut self, r: usize, scope: Scope, cells: &[u16], reason: String) {
        let action = self.rollouts[r].plan.on_failure;
        let rollout = &mut self.rollouts[r];
        for &c in cells {
            rollout.strata[c as usize].halted.get_or_insert(action);
        }
        rollout.dirty = true;
        let left = rollout.strata.iter().any(|c| c.halted.is_none());
        let rel = rollout.release;
        let id = rollout.id.clone();
        let blocked = &mut self.releases[rel as usize].blocked;
        if !blocked.contains(&scope) {
            blocked.push(scope.clone());
        }
        self.outputs.push_back(Output::StratumHalted {
            rollout: id,
            release: self.releases[rel as usize].info.id.clone(),
            scope,
            reason: reason.clone(),
            rolled_back: action == OnFailure::Rollback,
        });
        if !left {
            self.halt(r, format!("every stratum halted; the last: {reason}"), action);
        }
    }

    /// Stops a rollout for `reason`, quarantines its release, and pauses
    /// every other rollout of that release.
    pub(super) fn halt(&mut self, r: usize, reason: String, action: OnFailure) {
        let state = match action {
            OnFailure::Pause => RolloutState::Paused { reason: reason.clone() },
            OnFailure::Rollback => RolloutState::RolledBack { reason: reason.clone() },
        };
        self.set_state(r, state);
        let rel = self.rollouts[r].release;
        if !self.releases[rel as usize].quarantined {
            self.releases[rel as usize].quarantined = true;
            self.outputs.push_back(Output::Quarantined {
                release: self.releases[rel as usize].info.id.clone(),
                rollout: self.rollouts[r].id.clone(),
            });
        }
        for o in 0..self.rollouts.len() {
            if o != r
                && self.rollouts[o].release == rel
                && matches!(
                    self.rollouts[o].state,
                    RolloutState::Running | RolloutState::Completed | RolloutState::Created
                )
            {
                let why = format!("release quarantined by rollout {}: {reason}", self.rollouts[r].id);
                self.set_state(o, RolloutState::Paused { reason: why });
            }
        }
    }
}
