//! The statistics behind the health gates (explained for release managers
//! in docs/rollout-statistics.md).
//!
//! Each gate is a pair of one-sided, *anytime-valid* sequential tests on a
//! failure proportion: Robbins' beta-binomial mixture likelihood ratio
//! against the threshold θ. By Ville's inequality the chance that the ratio
//! ever reaches 1/α when the true rate is on the other side of θ is at most
//! α, however often the gate is evaluated. So:
//!
//! - **fail** when the observed rate is above θ and the ratio reaches 1/α:
//!   a release whose true failure rate is at most θ is halted with
//!   probability at most α = 1 − confidence;
//! - **pass** when the observed rate is below θ, the ratio reaches 1/α and
//!   the minimum sample is met: a release whose true failure rate is at
//!   least θ passes with probability at most α.
//!
//! The halting test mixes over a uniform prior (fast on clearly bad
//! releases); the passing test over a Beta prior with mean θ (fast on
//! clearly good ones). Rates against a baseline are reduced to a proportion:
//! given N events in total, the canary's share is binomial with
//! q = r·Ec / (r·Ec + Eb) for exposures Ec, Eb and rate ratio r, and the
//! same tests run against q₀ for the tolerated ratio r₀.

use serde::Serialize;

/// Failures a halt needs at the least, whatever the statistics say: with a
/// low threshold, one early failure (a flaky network, a device unplugged)
/// would already be significant, and one device must never stop a release.
pub const MIN_FAILURES_TO_HALT: f64 = 3.0;

/// A gate's verdict.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Undecided,
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; relative error below 1e-13).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    assert!(x > 0.0, "ln_gamma needs a positive argument");
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// ln of the Beta(a, b) mixture likelihood ratio of `k` failures in `n`
/// trials against a failure rate of exactly `theta`.
pub fn ln_mixture_ratio(k: f64, n: f64, theta: f64, a: f64, b: f64) -> f64 {
    ln_beta(a + k, b + n - k) - ln_beta(a, b) - k * theta.ln() - (n - k) * (1.0 - theta).ln()
}

/// What a proportion test saw and decided, for status output.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProportionTest {
    pub trials: f64,
    pub failures: f64,
    pub threshold: f64,
    /// ln of the evidence against the threshold (fail side), and for it (pass side).
    pub evidence_fail: f64,
    pub evidence_pass: f64,
    /// ln(1/α): the evidence a verdict needs.
    pub bound: f64,
    pub verdict: Verdict,
}

/// Tests whether a failure proportion is below or above `theta` at level
/// `alpha` (see the module documentation). `min_sample` guards passing only.
pub fn test_proportion(failures: f64, trials: f64, theta: f64, alpha: f64, min_sample: f64) -> ProportionTest {
    debug_assert!(failures >= 0.0 && failures <= trials);
    debug_assert!(theta > 0.0 && theta < 1.0 && alpha > 0.0 && alpha < 1.0);
    let bound = (1.0 / alpha).ln();
    let mut out = ProportionTest {
        trials,
        failures,
        threshold: theta,
        evidence_fail: 0.0,
        evidence_pass: 0.0,
        bound,
        verdict: Verdict::Undecided,
    };
    if trials <= 0.0 {
        return out;
    }
    let rate = failures / trials;
    // Fail side: uniform prior.
    out.evidence_fail = if rate > theta { ln_mixture_ratio(failures, trials, theta, 1.0, 1.0) } else { 0.0 };
    // Pass side: a Beta prior with mean θ and weight 1/2 + (1/θ − 1)/2.
    let (a, b) = (0.5, 0.5 * (1.0 / theta - 1.0));
    out.evidence_pass = if rate < theta { ln_mixture_ratio(failures, trials, theta, a, b) } else { 0.0 };
    out.verdict = if out.evidence_fail >= bound && failures >= MIN_FAILURES_TO_HALT {
        Verdict::Fail
    } else if out.evidence_pass >= bound && trials >= min_sample {
        Verdict::Pass
    } else {
        Verdict::Undecided
    };
    out
}

/// The fewest trials with which `failures` failures pass the test at
/// `theta` and `alpha` (every further trial a success), at least
/// `min_sample`; `u64::MAX` if none up to ten million does.
pub fn trials_to_pass(failures: u64, theta: f64, alpha: f64, min_sample: u64) -> u64 {
    let passes =
        |n: u64| test_proportion(failures as f64, n as f64, theta, alpha, min_sample as f64).verdict == Verdict::Pass;
    let mut lo = failures.max(min_sample).max(1);
    if passes(lo) {
        return lo;
    }
    let mut hi = lo * 2;
    while !passes(hi) {
        if hi > 10_000_000 {
            return u64::MAX;
        }
        lo = hi;
        hi *= 2;
    }
    // passes(hi), not passes(lo): the first n between that passes.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if passes(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The proportion a rate ratio `ratio` implies for the canary's share of
/// events, given canary and baseline exposures.
pub fn share_for_ratio(ratio: f64, exposure_canary: f64, exposure_baseline: f64) -> f64 {
    let c = ratio * exposure_canary;
    c / (c + exposure_baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_known_values() {
        for (x, want) in [
            (1.0, 0.0),
            (2.0, 0.0),
            (5.0, 24f64.ln()),
            (0.5, std::f64::consts::PI.sqrt().ln()),
            (100.0, 359.134_205_369_575),
        ] {
            assert!((ln_gamma(x) - want).abs() < 1e-9, "{x}: {} vs {want}", ln_gamma(x));
        }
    }

    #[test]
    fn verdicts_on_clear_cases() {
        // 5 failures in 20 against 5% at 95%: halt.
        assert_eq!(test_proportion(5.0, 20.0, 0.05, 0.05, 20.0).verdict, Verdict::Fail);
        // 0 failures in 200: pass.
        assert_eq!(test_proportion(0.0, 200.0, 0.05, 0.05, 20.0).verdict, Verdict::Pass);
        // 1 failure in 10: undecided.
        assert_eq!(test_proportion(1.0, 10.0, 0.05, 0.05, 20.0).verdict, Verdict::Undecided);
        // 2 of 2 is significant at 5%, but a halt needs 3 failures.
        assert_eq!(test_proportion(2.0, 2.0, 0.05, 0.05, 20.0).verdict, Verdict::Undecided);
        assert_eq!(test_proportion(3.0, 3.0, 0.05, 0.05, 20.0).verdict, Verdict::Fail);
        // The trials a pass needs, as the search finds them.
        assert_eq!(trials_to_pass(0, 0.02, 0.05, 20), 204);
        assert_eq!(trials_to_pass(0, 0.05, 0.05, 200), 200);
        assert_eq!(test_proportion(0.0, 203.0, 0.02, 0.05, 20.0).verdict, Verdict::Undecided);
        // Not before the minimum sample.
        assert_eq!(test_proportion(0.0, 200.0, 0.05, 0.05, 500.0).verdict, Verdict::Undecided);
    }
}
