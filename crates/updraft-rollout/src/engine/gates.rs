//! Gates: the tests over the whole rollout and each stratum, and what their verdicts do.

use super::*;

impl Controller {
    pub(super) fn evaluate_due(&mut self) {
        for r in 0..self.rollouts.len() {
            let rollout = &self.rollouts[r];
            if rollout.state != RolloutState::Running {
                continue;
            }
            let soak_end = rollout.soak_end();
            let due = (rollout.dirty && self.now >= rollout.next_eval) || self.now >= soak_end;
            if due {
                self.evaluate(r);
            }
        }
    }

    /// Evaluates a running rollout's gates and acts on the verdict.
    pub(super) fn evaluate(&mut self, r: usize) {
        let reports = self.gate_reports(r);
        let rollout = &mut self.rollouts[r];
        rollout.dirty = false;
        rollout.next_eval = self.now.plus(EVAL_INTERVAL);
        // Report verdict changes.
        let wave = rollout.wave + 1;
        let mut changed = Vec::new();
        for rep in &reports {
            let key = (rep.gate.clone(), rep.scope.clone());
            let prev = rollout.verdicts.iter_mut().find(|(g, s, _)| *g == key.0 && *s == key.1);
            match prev {
                Some(p) if p.2 == rep.test.verdict => {}
                Some(p) => {
                    p.2 = rep.test.verdict;
                    changed.push(rep.clone());
                }
                None if rep.test.verdict != Verdict::Undecided => {
                    rollout.verdicts.push((key.0, key.1, rep.test.verdict));
                    changed.push(rep.clone());
                }
                None => {}
            }
        }
        rollout.last_reports = reports.clone();
        let id = rollout.id.clone();
        for report in changed {
            self.outputs.push_back(Output::Gate { rollout: id.clone(), wave, report });
        }
        if let Some(fail) = reports.iter().find(|rep| rep.test.verdict == Verdict::Fail) {
            let t = &fail.test;
            let gate = self.rollouts[r].plan.gates.iter().find(|g| g.name() == fail.gate).expect("reported gate");
            let what = match &gate.kind {
                GateKind::CrashRate { max_ratio, .. } => format!(
                    "{} of {} crashes were on the new release ({:.1}%), above the {:.1}% share that {max_ratio}x the baseline rate allows",
                    t.failures,
                    t.trials,
                    100.0 * t.failures / t.trials,
                    100.0 * t.threshold
                ),
                _ => format!(
                    "{} of {} failed ({:.1}%), above the {}% threshold",
                    t.failures,
                    t.trials,
                    100.0 * t.failures / t.trials,
                    100.0 * t.threshold
                ),
            };
            let scope = fail.scope.describe();
            let reason = format!(
                "gate {} failed for {scope} in wave {wave}: {what}, at {}% confidence",
                fail.gate,
                100.0 * gate.confidence
            );
            let action = self.rollouts[r].plan.on_failure;
            self.halt(r, reason, action);
            return;
        }
        let rollout = &self.rollouts[r];
        let soak_end = rollout.soak_end();
        if self.now < soak_end {
            return;
        }
        let all_pass = rollout.plan.gates.iter().all(|g| {
            reports.iter().any(|rep| rep.gate == g.name() && rep.scope.is_all() && rep.test.verdict == Verdict::Pass)
        });
        if all_pass {
            self.advance(r);
            return;
        }
        if self.now >= soak_end.plus(rollout.plan.max_wait) {
            match rollout.plan.on_inconclusive {
                OnInconclusive::Advance => self.advance(r),
                OnInconclusive::Pause => {
                    let pending: Vec<String> = rollout
                        .plan
                        .gates
                        .iter()
                        .filter(|g| {
                            !reports.iter().any(|rep| {
                                rep.gate == g.name() && rep.scope.is_all() && rep.test.verdict == Verdict::Pass
                            })
                        })
                        .map(|g| {
                            let t = reports
                                .iter()
                                .find(|rep| rep.gate == g.name() && rep.scope.is_all())
                                .map(|rep| rep.test);
                            match t {
                                Some(t) => format!("{} ({} of {} failed)", g.name(), t.failures, t.trials),
                                None => g.name(),
                            }
                        })
                        .collect();
                    let reason = format!(
                        "wave {wave} inconclusive: too few reports to show {} healthy; advance by hand or add devices",
                        pending.join(", ")
                    );
                    self.set_state(r, RolloutState::Paused { reason });
                }
            }
        }
    }

    /// Every gate's test over the whole rollout and per hardware revision
    /// and region (halting tests share α by Bonferroni).
    pub(super) fn gate_reports(&self, r: usize) -> Vec<GateReport> {
        let rollout = &self.rollouts[r];
        let mut scopes: Vec<(Scope, Counts)> = Vec::new();
        let mut all = Counts::default();
        let mut by_hw: Vec<(Sym, Counts)> = Vec::new();
        let mut by_region: Vec<(Sym, Counts)> = Vec::new();
        for s in &rollout.strata {
            all.add(&s.counts);
            for (list, key) in [(&mut by_hw, s.hardware), (&mut by_region, s.region)] {
                match list.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, c)) => c.add(&s.counts),
                    None => {
                        let mut c = Counts::default();
                        c.add(&s.counts);
                        list.push((key, c));
                    }
                }
            }
        }
        by_hw.sort_by(|a, b| self.syms.name(a.0).cmp(self.syms.name(b.0)));
        by_region.sort_by(|a, b| self.syms.name(a.0).cmp(self.syms.name(b.0)));
        scopes.push((Scope::All, all));
        if by_hw.len() > 1 {
            scopes.extend(by_hw.into_iter().map(|(k, c)| (Scope::Hardware(self.syms.name(k).to_owned()), c)));
        }
        if by_region.len() > 1 {
            scopes.extend(by_region.into_iter().map(|(k, c)| (Scope::Region(self.syms.name(k).to_owned()), c)));
        }
        let m = scopes.len() as f64;
        let mut out = Vec::new();
        let mut metric_bit = 0;
        for g in &rollout.plan.gates {
            let alpha = 1.0 - g.confidence;
            for (i, (scope, c)) in scopes.iter().enumerate() {
                let overall = i == 0;
                // Halting tests at α/m; the pass test (overall only) at α.
                let test = |p: Proportion, theta: f64| -> ProportionTest {
                    let (failures, trials) = (p.failures, p.trials);
                    let halt =
                        stats::test_proportion(failures as f64, trials as f64, theta, alpha / m, g.min_sample as f64);
                    if halt.verdict == Verdict::Fail || !overall {
                        let mut t = halt;
                        if t.verdict == Verdict::Pass {
                            t.verdict = Verdict::Undecided;
                        }
                        return t;
                    }
                    stats::test_proportion(failures as f64, trials as f64, theta, alpha, g.min_sample as f64)
                };
                let t = match &g.kind {
                    GateKind::Install { max_failure_rate } => test(c.install, *max_failure_rate),
                    GateKind::Boot { max_failure_rate } => test(c.boot, *max_failure_rate),
                    GateKind::Health { max_failure_rate } => test(c.health, *max_failure_rate),
                    GateKind::Metric { max_failure_rate, .. } => {
                        test(c.metric.get(metric_bit).copied().unwrap_or_default(), *max_failure_rate)
                    }
                    GateKind::CrashRate { max_ratio, min_exposure_hours } => {
                        let Exposure { crashes: xc, seconds: ec } = c.crash_canary;
                        let Exposure { crashes: xb, seconds: eb } = c.crash_baseline;
                        let hours = ec as f64 / 3600.0;
                        if eb == 0 || ec == 0 {
                            ProportionTest {
                                trials: 0.0,
                                failures: 0.0,
                                threshold: 0.0,
                                evidence_fail: 0.0,
                                evidence_pass: 0.0,
                                bound: (m / alpha).ln(),
                                verdict: Verdict::Undecided,
                            }
                        } else {
                            let q0 = stats::share_for_ratio(*max_ratio, ec as f64, eb as f64);
                            let mut t = stats::test_proportion(xc as f64, (xc + xb) as f64, q0, alpha / m, 0.0);
                            // Crashes are rare, so proving a rate *below* the
                            // tolerance takes very long: enough exposure, no
                            // evidence of harm and an observed ratio within the
                            // tolerance pass.
                            let within = (xc as f64) <= q0 * (xc + xb) as f64;
                            t.verdict = match t.verdict {
                                Verdict::Fail => Verdict::Fail,
                                _ if overall && hours >= *min_exposure_hours && within => Verdict::Pass,
                                _ => Verdict::Undecided,
                            };
                            t
                        }
                    }
                };
                out.push(GateReport { gate: g.name(), scope: scope.clone(), limit: g.limit(), test: t });
            }
            if matches!(g.kind, GateKind::Metric { .. }) {
                metric_bit += 1;
            }
        }
        out
    }
}
