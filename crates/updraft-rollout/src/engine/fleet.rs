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
            let Some(m) = rollout.members.get_mut(idx as usize).and_then(Option::as_mut) else { continue };
            // Outcomes stay as they are (they are the rollout's evidence).
            if !(m.status == MemberStatus::Selected || m.status.in_progress()) {
                continue;
            }
            m.set_status(MemberStatus::Retired, &mut rollout.in_flight);
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
        self.releases.push(Release { info, family, hardware, requires, provides, quarantined: false });
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
        let key = (d.hardware, d.region);
        let metric_gates = rollout.plan.gates.iter().filter(|g| matches!(g.kind, GateKind::Metric { .. })).count();
        let rollout = &mut self.rollouts[r];
        let s = match rollout.stratum_of.get(&key) {
            Some(&s) => s,
            None => {
                let s = rollout.strata.len() as u16;
                rollout.strata.push(Stratum {
                    hardware: key.0,
                    region: key.1,
                    hashes: Vec::new(),
                    threshold: None,
                    counts: Counts { metric: vec![Proportion::default(); metric_gates], ..Counts::default() },
                });
                rollout.stratum_of.insert(key, s);
                s
            }
        };
        let stratum = &mut rollout.strata[s as usize];
        let at = stratum.hashes.partition_point(|&h| h < hash);
        stratum.hashes.insert(at, hash);
        rollout.insert_member(idx, Member::selected(hash, s));
        self.set_thresholds(r);
    }

    /// Recomputes each stratum's admission threshold for the current wave:
    /// stratum quota = ceil(target × stratum size / selected), so every wave
    /// covers hardware revisions and regions in proportion.
    pub(super) fn set_thresholds(&mut self, r: usize) {
        let rollout = &mut self.rollouts[r];
        let total: u64 = rollout.strata.iter().map(|s| s.hashes.len() as u64).sum();
        if total == 0 {
            return;
        }
        let wave = &rollout.plan.waves[rollout.wave];
        let target = wave_target(wave.size, wave.min_devices, total);
        for s in &mut rollout.strata {
            let n = s.hashes.len() as u64;
            let quota = (target * n).div_ceil(total).min(n);
            s.threshold = if quota == 0 { None } else { Some(s.hashes[quota as usize - 1]) };
        }
    }
}
