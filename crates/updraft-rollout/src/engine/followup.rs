//! Outcomes counted at a common point: the follow-up of each stage.
//!
//! A stage's failure often takes longer to report than its success: a trial
//! boot that hangs is reverted by the bootloader after its attempts (minutes),
//! one that runs reports at once. Counted as they arrive, the successes of the
//! devices that started a stage recently are in the tests while the failures
//! of the same devices are not yet; the observed failure rate is then biased
//! low, and a bad release needs more devices to halt. So an outcome counts
//! only once the stage it ends began at least the stage's follow-up ago: the
//! median latency of the stage's failures reported so far in the rollout
//! (none yet: no wait). Failures wait too, or the bias would turn the other
//! way. Silence counts at once (its latency is the plan's timeout).

use super::*;

/// A stage whose outcomes a proportion gate counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    Install = 0,
    Boot = 1,
    Health = 2,
}

/// The follow-up state of one rollout.
#[derive(Default)]
pub(super) struct FollowUp {
    /// Device index → when the stage it is in began (assignment, install
    /// report, trial-boot report), seconds since the epoch. Updates in
    /// progress only.
    started: FxMap<u32, u32>,
    /// Per stage: latencies of its reported failures, sorted.
    latencies: [Vec<u32>; 3],
    /// Per stage: outcomes waiting for the follow-up, (stage began, cell, failed).
    held: [BinaryHeap<Reverse<(u32, u16, bool)>>; 3],
}

impl FollowUp {
    /// Device `idx` begins a stage at `now_s`.
    pub(super) fn begin(&mut self, idx: u32, now_s: u32) {
        self.started.insert(idx, now_s);
    }

    /// Device `idx`'s update is over.
    pub(super) fn end(&mut self, idx: u32) {
        self.started.remove(&idx);
    }

    /// How long after a stage began its outcome counts (seconds): the upper
    /// median of its failures' latencies, 0 before any.
    pub(super) fn wait(&self, stage: Stage) -> u32 {
        let l = &self.latencies[stage as usize];
        l.get(l.len() / 2).copied().unwrap_or(0)
    }

    /// An outcome of `stage` on device `idx` of `cell` at `now_s`: whether
    /// it counts now (else it is held).
    pub(super) fn outcome(&mut self, idx: u32, cell: u16, stage: Stage, failed: bool, now_s: u32) -> bool {
        let began = self.started.get(&idx).copied().unwrap_or(now_s).min(now_s);
        if failed {
            let l = &mut self.latencies[stage as usize];
            let latency = now_s - began;
            let at = l.partition_point(|&x| x <= latency);
            l.insert(at, latency);
        }
        if began.saturating_add(self.wait(stage)) <= now_s {
            return true;
        }
        self.held[stage as usize].push(Reverse((began, cell, failed)));
        false
    }

    /// Takes the held outcomes whose follow-up is over at `now_s`.
    pub(super) fn due(&mut self, now_s: u32, out: &mut Vec<(u16, Stage, bool)>) {
        for stage in [Stage::Install, Stage::Boot, Stage::Health] {
            let wait = self.wait(stage);
            let held = &mut self.held[stage as usize];
            while let Some(&Reverse((began, cell, failed))) = held.peek() {
                if began.saturating_add(wait) > now_s {
                    break;
                }
                held.pop();
                out.push((cell, stage, failed));
            }
        }
    }

    /// What the rollout's status shows.
    pub(super) fn status(&self) -> super::status::FollowUpStatus {
        super::status::FollowUpStatus {
            install_s: self.wait(Stage::Install),
            boot_s: self.wait(Stage::Boot),
            health_s: self.wait(Stage::Health),
            waiting: self.held.iter().map(|h| h.len() as u64).sum(),
        }
    }

    /// When the next held outcome counts (seconds since the epoch).
    pub(super) fn next_due(&self) -> Option<u32> {
        [Stage::Install, Stage::Boot, Stage::Health]
            .into_iter()
            .filter_map(|s| {
                self.held[s as usize].peek().map(|Reverse((began, _, _))| began.saturating_add(self.wait(s)))
            })
            .min()
    }
}

impl Counts {
    /// Counts one outcome of `stage`.
    pub(super) fn record(&mut self, stage: Stage, failed: bool) {
        let p = match stage {
            Stage::Install => &mut self.install,
            Stage::Boot => &mut self.boot,
            Stage::Health => &mut self.health,
        };
        if failed {
            p.fail();
        } else {
            p.pass();
        }
    }
}

impl Rollout {
    /// An outcome of `stage` on member `idx`: counted now or when its
    /// follow-up is over.
    pub(super) fn outcome(&mut self, idx: u32, stage: Stage, failed: bool, now_s: u32) {
        let Some(cell) = self.member(idx).map(|m| m.stratum) else { return };
        if self.follow_up.outcome(idx, cell, stage, failed, now_s) {
            self.strata[cell as usize].counts.record(stage, failed);
        }
    }

    /// Counts the held outcomes whose follow-up is over; marks the rollout
    /// for evaluation if any.
    pub(super) fn count_due(&mut self, now_s: u32) {
        let mut due = Vec::new();
        self.follow_up.due(now_s, &mut due);
        for &(cell, stage, failed) in &due {
            self.strata[cell as usize].counts.record(stage, failed);
        }
        if !due.is_empty() {
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_wait_for_the_median_failure_latency() {
        let mut f = FollowUp::default();
        // No failure yet: a success counts at once.
        f.begin(1, 100);
        assert!(f.outcome(1, 0, Stage::Boot, false, 130));
        // The first failure sets the wait to its own latency: it counts at once.
        f.begin(2, 100);
        assert!(f.outcome(2, 0, Stage::Boot, true, 340));
        assert_eq!(f.wait(Stage::Boot), 240);
        // A success 30 s into its stage waits until 240 s after it began.
        f.begin(3, 400);
        assert!(!f.outcome(3, 0, Stage::Boot, false, 430));
        assert_eq!(f.next_due(), Some(640));
        let mut out = Vec::new();
        f.due(639, &mut out);
        assert!(out.is_empty());
        f.due(640, &mut out);
        assert_eq!(out, vec![(0, Stage::Boot, false)]);
        // Other stages keep their own wait.
        assert_eq!(f.wait(Stage::Health), 0);
    }
}
