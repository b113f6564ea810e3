//! Gates: the tests over the whole rollout and each stratum, what their
//! verdicts do, and the over-sampling of strata too small to decide.
//!
//! Multiplicity (docs/rollout-statistics.md): a gate runs its halting test
//! over `m` scopes (all devices and every stratum) at α/m each, so a good
//! release is halted by that gate with probability at most α whatever the
//! number of strata (Bonferroni). Its passing tests run at α each: a wave
//! advances only if every stratum passes (an intersection–union test), so a
//! stratum that is bad passes with probability at most α, and no correction
//! is needed for the number of strata.

use super::*;

/// A scope the gates test: all devices, or one stratum (one value of one
/// dimension of `strata.by`), with the cells it covers and their counts.
pub(super) struct Tested {
    pub(super) scope: Scope,
    /// Index into `strata.by`; `None` for all devices.
    pub(super) dim: Option<usize>,
    pub(super) cells: Vec<u16>,
    counts: Counts,
    /// Halted on its own (`on_failure_scope = "stratum"`).
    pub(super) halted: bool,
}

/// Why a stratum no longer holds its wave (or that it does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Standing {
    Passed,
    /// Undecided, with the plan's `min_evidence` reached.
    Enough,
    /// Undecided, but every stratum it shares devices with has passed (`pool`).
    Pooled,
    Undecided,
    /// Undecided, but over-sampling reached `strata.oversample_max` and every
    /// admitted device has reported: this wave can learn nothing more of it.
    AtCap,
    /// None of its devices has taken the release (all held back by a
    /// requirement, offline or outside their window): nothing to wait for.
    NoDevices,
    Halted,
}

impl Standing {
    pub(super) fn name(self) -> &'static str {
        match self {
            Standing::Passed => "passed",
            Standing::Enough => "enough_evidence",
            Standing::Pooled => "pooled",
            Standing::Undecided => "undecided",
            Standing::NoDevices => "no_devices",
            Standing::AtCap => "at_cap",
            Standing::Halted => "halted",
        }
    }
}

impl Controller {
    pub(super) fn evaluate_due(&mut self) {
        let now_s = self.secs(self.now);
        for r in 0..self.rollouts.len() {
            if self.rollouts[r].state != RolloutState::Running {
                continue;
            }
            self.rollouts[r].count_due(now_s);
            let rollout = &self.rollouts[r];
            let soak_end = rollout.soak_end();
            let due = (rollout.dirty && self.now >= rollout.next_eval) || self.now >= soak_end;
            if due {
                self.evaluate(r);
            }
        }
    }

    /// Evaluates a running rollout's gates and acts on the verdicts:
    /// halts (the rollout, or one stratum), over-sampling, advancing.
    pub(super) fn evaluate(&mut self, r: usize) {
        let (tested, reports) = loop {
            let tested = self.tested(r);
            let reports = self.gate_reports(r, &tested);
            self.record_verdicts(r, &reports);
            let failed = |t: &Tested, rep: &GateReport| !t.halted && rep.test.verdict == Verdict::Fail;
            let per_scope = self.rollouts[r].plan.on_failure_scope == FailureScope::Stratum;
            // A stratum's own failure first: once halted, its devices leave
            // the other scopes' counts, which may then pass.
            let stratum_fail = per_scope
                .then(|| {
                    reports
                        .iter()
                        .find(|rep| tested.iter().any(|t| t.dim.is_some() && t.scope == rep.scope && failed(t, rep)))
                })
                .flatten();
            if let Some(rep) = stratum_fail {
                let t = tested.iter().find(|t| t.scope == rep.scope).expect("tested scope");
                let reason = self.failure_reason(r, rep);
                self.halt_stratum(r, rep.scope.clone(), &t.cells.clone(), reason);
                if self.rollouts[r].state != RolloutState::Running {
                    return;
                }
                continue;
            }
            // Under stratum-scoped halts, strata cover every device: a
            // release bad everywhere halts every stratum (and so the
            // rollout), and one bad stratum does not halt the rest through
            // the sum over all devices.
            let strata_tested = tested.len() > 1;
            let any_fail = reports.iter().find(|rep| {
                tested
                    .iter()
                    .any(|t| t.scope == rep.scope && failed(t, rep) && !(per_scope && strata_tested && t.dim.is_none()))
            });
            if let Some(rep) = any_fail {
                let reason = self.failure_reason(r, rep);
                let action = self.rollouts[r].plan.on_failure;
                self.halt(r, reason, action);
                return;
            }
            break (tested, reports);
        };
        let standing = self.standings(r, &tested, &reports);
        let holding: Vec<usize> = (0..tested.len()).filter(|&i| standing[i] == Standing::Undecided).collect();
        let mut held_cells: Vec<u16> = holding.iter().flat_map(|&i| tested[i].cells.iter().copied()).collect();
        held_cells.sort_unstable();
        held_cells.dedup();
        self.catch_up(r, &held_cells);
        self.ramp(r, &tested, &reports, &standing);
        self.oversample(r, &tested, &reports, &holding);
        let rollout = &self.rollouts[r];
        let soak_end = rollout.soak_end();
        if self.now < soak_end {
            return;
        }
        let all_pass = rollout
            .plan
            .gates
            .iter()
            .all(|g| reports.iter().any(|rep| rep.gate == g.name() && rep.scope.is_all() && rollout.passed(rep)));
        let last_wave = rollout.wave + 1 >= rollout.plan.waves.len();
        if all_pass && holding.is_empty() {
            self.advance(r, &[]);
            return;
        }
        if all_pass && rollout.plan.strata.others == Others::Advance && !last_wave {
            self.advance(r, &held_cells);
            return;
        }
        if self.now >= soak_end.plus(rollout.plan.max_wait) {
            match rollout.plan.on_inconclusive {
                OnInconclusive::Advance => self.advance(r, &[]),
                OnInconclusive::Pause => {
                    let reason = self.inconclusive_reason(r, &tested, &reports, &holding);
                    self.set_state(r, RolloutState::Paused { reason });
                }
            }
        }
    }

    /// Emits the verdicts that changed since the last evaluation.
    fn record_verdicts(&mut self, r: usize, reports: &[GateReport]) {
        let rollout = &mut self.rollouts[r];
        rollout.dirty = false;
        rollout.next_eval = self.now.plus(EVAL_INTERVAL);
        let wave = rollout.wave + 1;
        let mut changed = Vec::new();
        for rep in reports {
            let prev = rollout.verdicts.iter_mut().find(|(g, s, _)| *g == rep.gate && *s == rep.scope);
            match prev {
                Some(p) if p.2 == rep.test.verdict => {}
                Some(p) => {
                    p.2 = rep.test.verdict;
                    changed.push(rep.clone());
                }
                None if rep.test.verdict != Verdict::Undecided => {
                    rollout.verdicts.push((rep.gate.clone(), rep.scope.clone(), rep.test.verdict));
                    changed.push(rep.clone());
                }
                None => {}
            }
        }
        if rollout.plan.strata.decide_each {
            for rep in reports.iter().filter(|rep| rep.test.verdict == Verdict::Pass) {
                if !rollout.latched.iter().any(|(g, s)| *g == rep.gate && *s == rep.scope) {
                    rollout.latched.push((rep.gate.clone(), rep.scope.clone()));
                }
            }
        }
        rollout.last_reports = reports.to_vec();
        let id = rollout.id.clone();
        for report in changed {
            self.outputs.push_back(Output::Gate { rollout: id.clone(), wave, report });
        }
    }

    /// The sentence a halt gives: what failed, where, by how much.
    fn failure_reason(&self, r: usize, fail: &GateReport) -> String {
        let rollout = &self.rollouts[r];
        let t = &fail.test;
        let gate = rollout.plan.gates.iter().find(|g| g.name() == fail.gate).expect("reported gate");
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
        format!(
            "gate {} failed for {} in wave {}: {what}, at {}% confidence",
            fail.gate,
            fail.scope.describe(),
            rollout.wave + 1,
            100.0 * gate.confidence
        )
    }

    fn inconclusive_reason(&self, r: usize, tested: &[Tested], reports: &[GateReport], holding: &[usize]) -> String {
        let rollout = &self.rollouts[r];
        let pending: Vec<String> = rollout
            .plan
            .gates
            .iter()
            .filter_map(|g| {
                let rep = reports.iter().find(|rep| rep.gate == g.name() && rep.scope.is_all());
                match rep {
                    Some(rep) if rep.test.verdict == Verdict::Pass => None,
                    Some(rep) => Some(format!("{} ({} of {} failed)", g.name(), rep.test.failures, rep.test.trials)),
                    None => Some(g.name()),
                }
            })
            .collect();
        let strata: Vec<String> = holding.iter().map(|&i| tested[i].scope.to_string()).collect();
        let wave = rollout.wave + 1;
        match (pending.is_empty(), strata.is_empty()) {
            (false, true) => format!(
                "wave {wave} inconclusive: too few reports to show {} healthy; advance by hand or add devices",
                pending.join(", ")
            ),
            (true, false) => format!(
                "wave {wave} inconclusive: strata {} undecided (too few reports, over-sampling at its cap); \
                 advance by hand, raise strata.oversample_max or set strata.min_evidence",
                strata.join(", ")
            ),
            _ => format!(
                "wave {wave} inconclusive: too few reports to show {} healthy, and strata {} undecided; \
                 advance by hand or add devices",
                pending.join(", "),
                strata.join(", ")
            ),
        }
    }

    /// The scopes the gates test: all devices (of the cells not halted),
    /// then each value of each dimension of `strata.by` that has more
    /// than one value among the rollout's devices.
    pub(super) fn tested(&self, r: usize) -> Vec<Tested> {
        let rollout = &self.rollouts[r];
        let mut all =
            Tested { scope: Scope::All, dim: None, cells: Vec::new(), counts: Counts::default(), halted: false };
        for (c, cell) in rollout.strata.iter().enumerate() {
            if cell.halted.is_none() {
                all.cells.push(c as u16);
                all.counts.add(&cell.counts);
            }
        }
        let mut out = vec![all];
        let mut attr = 0;
        for (d, dim) in rollout.plan.strata.by.iter().enumerate() {
            let value = |cell: &Stratum| match dim {
                Dimension::Hardware => cell.hardware,
                Dimension::Region => cell.region,
                Dimension::Attribute(_) => cell.attrs[attr],
            };
            let mut values: Vec<(Sym, Vec<u16>)> = Vec::new();
            for (c, cell) in rollout.strata.iter().enumerate() {
                let v = value(cell);
                match values.iter_mut().find(|(x, _)| *x == v) {
                    Some((_, cells)) => cells.push(c as u16),
                    None => values.push((v, vec![c as u16])),
                }
            }
            if matches!(dim, Dimension::Attribute(_)) {
                attr += 1;
            }
            if values.len() < 2 {
                continue;
            }
            let mut group: Vec<Tested> = values
                .into_iter()
                .map(|(v, cells)| {
                    let name = self.syms.name(v);
                    let scope = match dim {
                        Dimension::Hardware => Scope::Hardware(name.to_owned()),
                        Dimension::Region => Scope::Region(name.to_owned()),
                        Dimension::Attribute(key) => Scope::Attribute {
                            key: key.clone(),
                            value: name
                                .strip_prefix(key.as_str())
                                .and_then(|s| s.strip_prefix('='))
                                .unwrap_or(name)
                                .to_owned(),
                        },
                    };
                    let halted = cells.iter().all(|&c| rollout.strata[c as usize].halted.is_some());
                    let mut counts = Counts::default();
                    for &c in &cells {
                        let cell = &rollout.strata[c as usize];
                        // A halted stratum keeps its own evidence; the
                        // others count only cells that still run.
                        if halted || cell.halted.is_none() {
                            counts.add(&cell.counts);
                        }
                    }
                    Tested { scope, dim: Some(d), cells, counts, halted }
                })
                .collect();
            group.sort_by(|a, b| a.scope.cmp(&b.scope));
            out.extend(group);
        }
        out
    }

    /// Every gate's test over every tested scope. Halting tests at α/m
    /// (m scopes); passing tests at α, over all devices and, when each
    /// stratum must decide, over each stratum.
    pub(super) fn gate_reports(&self, r: usize, tested: &[Tested]) -> Vec<GateReport> {
        let rollout = &self.rollouts[r];
        let each = rollout.plan.strata.decide_each;
        let m = tested.len() as f64;
        let mut out = Vec::new();
        let mut metric_bit = 0;
        for g in &rollout.plan.gates {
            let alpha = 1.0 - g.confidence;
            for (i, t) in tested.iter().enumerate() {
                let c = &t.counts;
                let passes = i == 0 || each;
                let test = |p: Proportion, theta: f64| -> ProportionTest {
                    let (failures, trials) = (p.failures as f64, p.trials as f64);
                    let halt = stats::test_proportion(failures, trials, theta, alpha / m, g.min_sample as f64);
                    if halt.verdict == Verdict::Fail || !passes {
                        let mut t = halt;
                        if t.verdict == Verdict::Pass {
                            t.verdict = Verdict::Undecided;
                        }
                        return t;
                    }
                    stats::test_proportion(failures, trials, theta, alpha, g.min_sample as f64)
                };
                let t = match &g.kind {
                    GateKind::Install { max_failure_rate } => test(c.install, *max_failure_rate),
                    GateKind::Boot { max_failure_rate } => test(c.boot, *max_failure_rate),
                    GateKind::Health { max_failure_rate } => test(c.health, *max_failure_rate),
                    GateKind::Metric { max_failure_rate, .. } => {
                        test(c.metric.get(metric_bit).copied().unwrap_or_default(), *max_failure_rate)
                    }
                    GateKind::CrashRate { max_ratio, min_exposure_hours } => {
                        crash_test(c, *max_ratio, *min_exposure_hours, alpha, m, passes)
                    }
                };
                let exposure = matches!(g.kind, GateKind::CrashRate { .. }).then(|| {
                    let (x, b) = (c.crash_canary, c.crash_baseline);
                    CrashExposure::new((x.crashes, x.seconds), (b.crashes, b.seconds))
                });
                out.push(GateReport {
                    gate: g.name(),
                    scope: tested[i].scope.clone(),
                    limit: g.limit(),
                    test: t,
                    exposure,
                });
            }
            if matches!(g.kind, GateKind::Metric { .. }) {
                metric_bit += 1;
            }
        }
        out
    }

    /// Where each tested scope stands (index as `tested`; all devices are
    /// never a stratum, so they stand `Passed` here: their verdict decides
    /// on its own).
    pub(super) fn standings(&self, r: usize, tested: &[Tested], reports: &[GateReport]) -> Vec<Standing> {
        let rollout = &self.rollouts[r];
        let strata = &rollout.plan.strata;
        // reports are gate-major: gate g, scope i at g * len + i.
        let rep = |g: usize, i: usize| &reports[g * tested.len() + i];
        let mut out = vec![Standing::Passed; tested.len()];
        if !strata.decide_each {
            for (i, t) in tested.iter().enumerate() {
                if t.halted {
                    out[i] = Standing::Halted;
                }
            }
            return out;
        }
        for (i, t) in tested.iter().enumerate().skip(1) {
            if t.halted {
                out[i] = Standing::Halted;
                continue;
            }
            if t.cells.iter().all(|&c| rollout.strata[c as usize].given == 0) {
                out[i] = Standing::NoDevices;
                continue;
            }
            let mut standing = Standing::Passed;
            for (g, gate) in rollout.plan.gates.iter().enumerate() {
                let test = &rep(g, i).test;
                if rollout.passed(rep(g, i)) {
                    continue;
                }
                let evidence = match gate.kind {
                    GateKind::CrashRate { .. } => (t.counts.crash_canary.seconds / 3600) as f64,
                    _ => test.trials,
                };
                if strata.min_evidence > 0 && evidence >= strata.min_evidence as f64 {
                    standing = standing.max_hold(Standing::Enough);
                    continue;
                }
                if strata.pool && test.trials >= gate.min_sample as f64 && crossing_passed(rollout, tested, i, g, &rep)
                {
                    standing = standing.max_hold(Standing::Pooled);
                    continue;
                }
                standing = Standing::Undecided;
            }
            if standing == Standing::Undecided {
                let cells = t.cells.iter().map(|&c| &rollout.strata[c as usize]);
                let n: u64 = cells.clone().map(|c| c.hashes.len() as u64).sum();
                let admitted: u64 = cells.clone().map(Stratum::admitted).sum();
                let in_flight: u64 = cells.map(|c| c.in_flight).sum();
                let cap = ((strata.oversample_max * n as f64).ceil() as u64).min(n);
                if strata.oversample_step > 0 && admitted >= cap && in_flight == 0 {
                    standing = Standing::AtCap;
                }
            }
            out[i] = standing;
        }
        out
    }

    /// Cells behind the rollout's wave whose strata have all decided take
    /// the rollout's wave again.
    fn catch_up(&mut self, r: usize, held_cells: &[u16]) {
        let rollout = &mut self.rollouts[r];
        let wave = rollout.wave;
        let mut moved = false;
        for (c, cell) in rollout.strata.iter_mut().enumerate() {
            if cell.wave < wave && !held_cells.contains(&(c as u16)) {
                cell.wave = wave;
                moved = true;
            }
        }
        if moved {
            self.set_thresholds(r);
        }
    }

    /// Ends the ramp of each cell whose every scope has passed (all
    /// devices: every gate; a stratum: passed, enough evidence or pooled),
    /// or that has as many outcomes as a clean pass of the strictest gate
    /// needs (by then its halting tests have seen what a round could
    /// show), for the rest of the rollout. While a cell ramps, check-ins
    /// hold its updates in progress to a round ([`Stratum::ramp_full`]).
    fn ramp(&mut self, r: usize, tested: &[Tested], reports: &[GateReport], standing: &[Standing]) {
        let rollout = &mut self.rollouts[r];
        if !rollout.strata.iter().any(|c| c.ramping) {
            return;
        }
        let n_tested = tested.len();
        let enough = rollout
            .plan
            .gates
            .iter()
            .filter_map(|gate| match gate.kind {
                GateKind::Install { max_failure_rate }
                | GateKind::Boot { max_failure_rate }
                | GateKind::Health { max_failure_rate }
                | GateKind::Metric { max_failure_rate, .. } => Some((gate, max_failure_rate)),
                GateKind::CrashRate { .. } => None,
            })
            .map(|(gate, threshold)| stats::trials_to_pass(0, threshold, 1.0 - gate.confidence, gate.min_sample))
            .max()
            .unwrap_or(0);
        let all_passed = (0..rollout.plan.gates.len()).all(|g| rollout.passed(&reports[g * n_tested]));
        let decided = |i: usize| {
            if tested[i].dim.is_none() {
                all_passed
            } else {
                matches!(standing[i], Standing::Passed | Standing::Enough | Standing::Pooled)
            }
        };
        for c in 0..rollout.strata.len() {
            let cell = &rollout.strata[c];
            if cell.ramping
                && (cell.settled() >= enough
                    || tested.iter().enumerate().all(|(i, t)| !t.cells.contains(&(c as u16)) || decided(i)))
            {
                rollout.strata[c].ramping = false;
            }
        }
        // The ramping cells of each undecided stratum share a round (a
        // stratum with one ramping cell adds nothing to the cell's own).
        rollout.ramp_groups.clear();
        for cell in &mut rollout.strata {
            cell.ramp_in.clear();
        }
        for (i, t) in tested.iter().enumerate() {
            if t.dim.is_none() || t.halted || decided(i) {
                continue;
            }
            let group: Box<[u16]> = t.cells.iter().copied().filter(|&c| rollout.strata[c as usize].ramping).collect();
            if group.len() < 2 {
                continue;
            }
            let g = rollout.ramp_groups.len() as u16;
            for &c in &group {
                rollout.strata[c as usize].ramp_in.push(g);
            }
            rollout.ramp_groups.push(group);
        }
    }

    /// Admits more devices of each undecided stratum that its share of the
    /// wave cannot decide, within its own population: up to
    /// `settled + min(missing, max(step, settled / (1 + k)))` devices, where
    /// `missing` is the outcomes its undecided gates still need to pass if
    /// every further one succeeds (up to `min_evidence`) and k is the most
    /// failures any gate saw in it. With no failures the stratum doubles per
    /// round; with failures each round adds about one expected failure at
    /// the observed rate. At most `oversample_max` of the stratum.
    fn oversample(&mut self, r: usize, tested: &[Tested], reports: &[GateReport], holding: &[usize]) {
        let rollout = &self.rollouts[r];
        let step = rollout.plan.strata.oversample_step;
        if step == 0 || holding.is_empty() {
            return;
        }
        let max_share = rollout.plan.strata.oversample_max;
        let n_tested = tested.len();
        let proportion_gates: Vec<usize> = (0..rollout.plan.gates.len())
            .filter(|&g| !matches!(rollout.plan.gates[g].kind, GateKind::CrashRate { .. }))
            .collect();
        let mut raised = false;
        let min_evidence = rollout.plan.strata.min_evidence;
        for &i in holding {
            let t = &tested[i];
            let rollout = &self.rollouts[r];
            // The outcomes the stratum needs to pass every gate that more
            // devices can decide (not exposure time): if all went well.
            // (`needed`: outcomes still missing for that.)
            let mut needed = 0u64;
            let mut k = 0u64;
            for &g in &proportion_gates {
                let rep = &reports[g * n_tested + i];
                k = k.max(rep.test.failures as u64);
                if rollout.passed(rep) {
                    continue;
                }
                let gate = &rollout.plan.gates[g];
                let mut n = stats::trials_to_pass(
                    rep.test.failures as u64,
                    rep.test.threshold,
                    1.0 - gate.confidence,
                    gate.min_sample,
                );
                if min_evidence > 0 {
                    n = n.min(min_evidence);
                }
                needed = needed.max(n.saturating_sub(rep.test.trials as u64));
            }
            let cells: Vec<u16> =
                t.cells.iter().copied().filter(|&c| rollout.strata[c as usize].halted.is_none()).collect();
            let n: u64 = cells.iter().map(|&c| rollout.strata[c as usize].hashes.len() as u64).sum();
            let admitted: u64 = cells.iter().map(|&c| rollout.strata[c as usize].admitted()).sum();
            let settled: u64 = cells.iter().map(|&c| rollout.strata[c as usize].settled()).sum();
            let cap = ((max_share * n as f64).ceil() as u64).min(n);
            let want = settled + step.max(settled / (1 + k)).min(needed);
            // Devices admitted but not given the release count as coming
            // until a quarter of the silence timeout after their admission;
            // then they are taken to be offline and others admitted instead.
            let patience = rollout.plan.silence_timeout / 4;
            let expected: u64 = cells
                .iter()
                .map(|&c| {
                    let cell = &rollout.strata[c as usize];
                    let pending = cell.admitted().saturating_sub(cell.given);
                    cell.given + if self.now < cell.raised_at.plus(patience) { pending } else { 0 }
                })
                .sum();
            if want <= expected || admitted >= cap {
                continue;
            }
            // Spread the new devices over the cells by the room each has left.
            let delta = (want - expected).min(cap - admitted);
            let room: Vec<u64> = cells
                .iter()
                .map(|&c| {
                    let cell = &rollout.strata[c as usize];
                    cell.hashes.len() as u64 - cell.admitted()
                })
                .collect();
            let total_room: u64 = room.iter().sum();
            if total_room == 0 {
                continue;
            }
            let rollout = &mut self.rollouts[r];
            for (&c, &room) in cells.iter().zip(&room) {
                let add = (delta * room).div_ceil(total_room).min(room);
                let cell = &mut rollout.strata[c as usize];
                let floor = cell.admitted() + add;
                if floor > cell.floor {
                    cell.floor = floor;
                    cell.raised_at = self.now;
                    raised = true;
                }
            }
        }
        if raised {
            self.set_thresholds(r);
        }
    }
}

impl Standing {
    /// The weaker of two reasons a stratum no longer holds its wave.
    fn max_hold(self, other: Standing) -> Standing {
        match (self, other) {
            (Standing::Undecided, _) | (_, Standing::Undecided) => Standing::Undecided,
            (Standing::Pooled, _) | (_, Standing::Pooled) => Standing::Pooled,
            (Standing::Enough, _) | (_, Standing::Enough) => Standing::Enough,
            _ => Standing::Passed,
        }
    }
}

/// The crash-rate gate on one scope: the canary's share of crashes against
/// the share the tolerated ratio allows. Crashes are rare, so proving a rate
/// *below* the tolerance takes very long: enough exposure, no evidence of
/// harm and an observed ratio within the tolerance pass.
fn crash_test(c: &Counts, max_ratio: f64, min_exposure_hours: f64, alpha: f64, m: f64, passes: bool) -> ProportionTest {
    let Exposure { crashes: xc, seconds: ec } = c.crash_canary;
    let Exposure { crashes: xb, seconds: eb } = c.crash_baseline;
    let hours = ec as f64 / 3600.0;
    if eb == 0 || ec == 0 {
        return ProportionTest {
            trials: 0.0,
            failures: 0.0,
            threshold: 0.0,
            evidence_fail: 0.0,
            evidence_pass: 0.0,
            bound: (m / alpha).ln(),
            verdict: Verdict::Undecided,
        };
    }
    let q0 = stats::share_for_ratio(max_ratio, ec as f64, eb as f64);
    let mut t = stats::test_proportion(xc as f64, (xc + xb) as f64, q0, alpha / m, 0.0);
    let within = (xc as f64) <= q0 * (xc + xb) as f64;
    t.verdict = match t.verdict {
        Verdict::Fail => Verdict::Fail,
        _ if passes && hours >= min_exposure_hours && within => Verdict::Pass,
        _ => Verdict::Undecided,
    };
    t
}

/// Whether every stratum of the other dimensions that shares cells with
/// `tested[i]` has passed gate `g` (all devices standing in when no other
/// dimension is tested).
fn crossing_passed<'a>(
    rollout: &Rollout,
    tested: &[Tested],
    i: usize,
    g: usize,
    rep: &dyn Fn(usize, usize) -> &'a GateReport,
) -> bool {
    let t = &tested[i];
    let mut any = false;
    for (j, other) in tested.iter().enumerate() {
        if j == i || other.dim.is_none() || other.dim == t.dim || other.halted {
            continue;
        }
        if !other.cells.iter().any(|c| t.cells.contains(c)) {
            continue;
        }
        any = true;
        if !rollout.passed(rep(g, j)) {
            return false;
        }
    }
    any || rollout.passed(rep(g, 0))
}
