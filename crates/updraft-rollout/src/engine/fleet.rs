//! Devices and releases: enrollment, retirement, which rollouts select a device.

use super::*;

impl Controller {
    pub(super) fn upsert_device(&mut self, info: DeviceInfo) {
        let family = self.syms.intern(&info.family);
        let hardware = self.syms.intern(&info.hardware);
        let region = self.syms.intern(&info.region);
        let channel = info.channel.as_deref().map(|c| self.syms.intern(c));
        let mut tags: Vec<Sym> = info.tags.iter().map(|t| self.syms.intern(t)).collect();
        tags.sort_unstable();
        let components: Box<[(Sym, semver::Version)]> =
            info.components.iter().map(|(c, v)| (self.syms.intern(c), v.clone())).collect();
        let release = info.release.as_ref().and_then(|r| self.release_index.get(r).copied());
        let lkg = info.last_known_good.as_ref().and_then(|r| self.release_index.get(r).copied());
        let device = Device {
            id_hash: fnv1a(info.id.as_str()),
            family,
            hardware,
            region,
            channel,
            tags: tags.into(),
            release,
            lkg,
            previous_good: None,
            components,
            utc_offset_min: info.utc_offset_min,
            retired: false,
        };
        let idx = match self.device_index.get(info.id.as_str()) {
            Some(&i) => {
                if self.devices[i as usize].retired {
                    // Back in service (enrolled again): its places in rollouts return.
                    for rollout in &mut self.rollouts {
                        if let Some(m) = rollout.member_mut(i).filter(|m| m.status == MemberStatus::Retired) {
                            m.status = MemberStatus::Selected;
                            rollout.selected += 1;
                        }
                    }
                }
                self.devices[i as usize] = device;
                i
            }
            None => {
                let i = self.devices.len() as u32;
                self.devices.push(device);
                self.device_index.insert(info.id.0.into_boxed_str(), i);
                i
            }
        };
        for r in 0..self.rollouts.len() {
            self.select(r, idx);
        }
    }

    /// Takes a device out of service: its places in rollouts stop counting
    /// (an update in progress no longer holds a pacing slot or goes
    /// silent), and no new rollout selects it.
    pub(super) fn retire(&mut self, id: &DeviceId) {
        let Some(&idx) = self.device_index.get(id.as_str()) else {
            return self.reject(format!("unknown device {id}"));
        };
        self.devices[idx as usize].retired = true;
        for rollout in &mut self.rollouts {
            let Some(m) = rollout.member(idx) else { continue };
            // Outcomes stay as they are (they are the rollout's evidence).
            if !(m.status == MemberStatus::Selected || m.status.in_progress()) {
                continue;
            }
            rollout.set_status(idx, MemberStatus::Retired);
            rollout.selected = rollout.selected.saturating_sub(1);
            rollout.held_back.remove(&idx);
            rollout.dirty = true;
        }
    }

    pub(super) fn add_release(&mut self, info: ReleaseInfo) {
        if self.release_index.contains_key(&info.id) {
            self.reject(format!("release {} is already known; releases never change", info.id));
            return;
        }
        let family = self.syms.intern(&info.family);
        let hardware = info.hardware.iter().map(|h| self.syms.intern(h)).collect();
        let requires = info.requires.iter().map(|(c, r)| (self.syms.intern(c), r.clone())).collect();
        let provides = info.provides.iter().map(|(c, v)| (self.syms.intern(c), v.clone())).collect();
        let r = self.releases.len() as Rel;
        self.release_index.insert(info.id.clone(), r);
        self.releases.push(Release {
            info,
            family,
            hardware,
            requires,
            provides,
            quarantined: false,
            blocked: Vec::new(),
        });
    }

    pub(super) fn matches(&self, r: &Rollout, d: &Device) -> bool {
        let rel = &self.releases[r.release as usize];
        let sel = &r.plan.selector;
        let is = |s: &str, x: Sym| self.syms.get(s) == Some(x);
        !d.retired
            && d.family == rel.family
            && rel.hardware.contains(&d.hardware)
            && is(&sel.family, d.family)
            && (sel.hardware.is_empty() || sel.hardware.iter().any(|h| is(h, d.hardware)))
            && (sel.regions.is_empty() || sel.regions.iter().any(|g| is(g, d.region)))
            && sel.tags.iter().all(|t| self.syms.get(t).is_some_and(|t| d.tags.binary_search(&t).is_ok()))
            && sel
                .attributes
                .iter()
                .all(|(k, v)| self.syms.get(&format!("{k}={v}")).is_some_and(|t| d.tags.binary_search(&t).is_ok()))
            && sel.channel.as_ref().is_none_or(|c| d.channel.is_some_and(|dc| is(c, dc)))
    }

    /// Adds device `idx` to rollout `r` if it matches and is not a member.
    pub(super) fn select(&mut self, r: usize, idx: u32) {
        let rollout = &self.rollouts[r];
        if matches!(rollout.state, RolloutState::Aborted) || rollout.member(idx).is_some() {
            return;
        }
        let d = &self.devices[idx as usize];
        if !self.matches(rollout, d) {
            return;
        }
        let hash = cohort_hash_of(fnv1a(rollout.id.as_str()), d.id_hash);
        let s = self.cell_of(r, idx);
        let stratum = &mut self.rollouts[r].strata[s as usize];
        let at = stratum.hashes.partition_point(|&h| h < hash);
        stratum.hashes.insert(at, hash);
        self.rollouts[r].insert_member(idx, Member::selected(hash, s));
        self.set_thresholds(r);
    }

    /// The cell of rollout `r` that device `idx` belongs in, created if new.
    pub(super) fn cell_of(&mut self, r: usize, idx: u32) -> u16 {
        let d = &self.devices[idx as usize];
        let rollout = &self.rollouts[r];
        let attrs: Box<[Sym]> = rollout
            .plan
            .strata
            .by
            .iter()
            .filter_map(|dim| match dim {
                Dimension::Attribute(key) => Some(
                    d.tags
                        .iter()
                        .copied()
                        .find(|&t| self.syms.name(t).strip_prefix(key.as_str()).is_some_and(|v| v.starts_with('=')))
                        .unwrap_or(UNSET),
                ),
                _ => None,
            })
            .collect();
        let key: CellKey = (d.hardware, d.region, attrs);
        if let Some(&s) = rollout.stratum_of.get(&key) {
            return s;
        }
        let metric_gates = rollout.plan.gates.iter().filter(|g| matches!(g.kind, GateKind::Metric { .. })).count();
        let rollout = &mut self.rollouts[r];
        let s = rollout.strata.len() as u16;
        let strata = &rollout.plan.strata;
        // Without gates nothing would ever prove a cell: no ramp.
        let gated = !rollout.plan.gates.is_empty();
        let ramping = gated && strata.decide_each && strata.ramp_start > 0;
        rollout.strata.push(Stratum::new(&key, metric_gates, rollout.wave, ramping));
        rollout.stratum_of.insert(key, s);
        s
    }

    /// Recomputes each cell's admission threshold for its wave: cell quota
    /// = ceil(target × cell size / selected), so every wave covers hardware
    /// revisions and regions in proportion; at least the cell's floor (what
    /// over-sampling admitted). A halted cell admits no one new.
    pub(super) fn set_thresholds(&mut self, r: usize) {
        let rollout = &mut self.rollouts[r];
        let total: u64 = rollout.strata.iter().map(|s| s.hashes.len() as u64).sum();
        if total == 0 {
            return;
        }
        let plan = &rollout.plan;
        let wave = rollout.wave;
        for s in &mut rollout.strata {
            if s.halted.is_some() {
                continue;
            }
            let quota = share(plan, wave, s, total).max(s.floor).min(s.hashes.len() as u64);
            s.threshold = if quota == 0 { None } else { Some(s.hashes[quota as usize - 1]) };
        }
    }

    /// Whether device `d` belongs to `scope` (for a stratum's quarantine).
    pub(super) fn device_in_scope(&self, d: &Device, scope: &Scope) -> bool {
        let is = |name: &str, x: Sym| self.syms.get(name) == Some(x);
        match scope {
            Scope::All => true,
            Scope::Hardware(h) => is(h, d.hardware),
            Scope::Region(g) => is(g, d.region),
            Scope::Attribute { key, value } => {
                let has = |t: &Sym| self.syms.name(*t).strip_prefix(key.as_str()).and_then(|v| v.strip_prefix('='));
                match d.tags.iter().find_map(has) {
                    Some(v) => v == value,
                    None => value == UNSET_NAME,
                }
            }
        }
    }
}

/// A cell's share of its wave: ceil(wave target × cell size / selected).
pub(super) fn share(plan: &Plan, rollout_wave: usize, cell: &Stratum, total: u64) -> u64 {
    let wave = &plan.waves[cell.wave.min(rollout_wave)];
    let target = wave_target(wave.size, wave.min_devices, total);
    let n = cell.hashes.len() as u64;
    (target * n).div_ceil(total.max(1)).min(n)
}
