//! Calibration of the health gates by simulation: how often a good release
//! is halted, how often a bad one passes, and how many outcomes each
//! verdict takes. The numbers in docs/rollout-statistics.md come from here:
//! `cargo bench -p updraft-rollout --bench calibration`.
//!
//! The gate is evaluated after every single outcome, the most a controller
//! can look, so the error rates shown hold however often it evaluates.

#![allow(clippy::print_stdout)]

use updraft_rollout::stats::{share_for_ratio, test_proportion};
use updraft_rollout::Verdict;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn poisson(&mut self, mean: f64) -> u64 {
        // Knuth: fine for the small means used here.
        let l = (-mean).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= self.uniform();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

fn percentile(v: &mut [u64], q: f64) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q) as usize].to_string()
}

/// Multiples of the threshold the true rate takes.
const MULTIPLES: [f64; 7] = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0];

fn proportions(theta: f64, confidence: f64, scopes: f64, reps: usize, max_n: u64, multiples: &[f64], rng: &mut Rng) {
    let alpha = 1.0 - confidence;
    println!(
        "\nproportion gate: threshold {:.0}%, confidence {:.0}%, {} scope(s) (halting at alpha/{}), min_sample 20, up to {max_n} outcomes",
        theta * 100.0,
        confidence * 100.0,
        scopes,
        scopes
    );
    println!("  true rate   halted   passed   undecided   outcomes to halt (p50/p90)   outcomes to pass (p50/p90)");
    for &mult in multiples {
        let p = theta * mult;
        let (mut halted, mut passed) = (0, 0);
        let (mut to_halt, mut to_pass) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let mut k = 0u64;
            for n in 1..=max_n {
                if rng.uniform() < p {
                    k += 1;
                }
                // The controller's pair of tests: halting at alpha/scopes, passing at alpha.
                let halt = test_proportion(k as f64, n as f64, theta, alpha / scopes, 20.0);
                if halt.verdict == Verdict::Fail {
                    halted += 1;
                    to_halt.push(n);
                    break;
                }
                if test_proportion(k as f64, n as f64, theta, alpha, 20.0).verdict == Verdict::Pass {
                    passed += 1;
                    to_pass.push(n);
                    break;
                }
            }
        }
        let pct = |x: usize| 100.0 * x as f64 / reps as f64;
        println!(
            "  {:>7.2}%   {:>5.1}%   {:>5.1}%   {:>8.1}%   {:>12} / {:<12}   {:>12} / {}",
            p * 100.0,
            pct(halted),
            pct(passed),
            pct(reps - halted - passed),
            percentile(&mut to_halt.clone(), 0.5),
            percentile(&mut to_halt, 0.9),
            percentile(&mut to_pass.clone(), 0.5),
            percentile(&mut to_pass, 0.9),
        );
    }
}

fn crash_rates(reps: usize, rng: &mut Rng) {
    let (canary, baseline, base_rate, hours) = (100.0, 900.0, 0.01, 72);
    let (max_ratio, alpha) = (1.5, 0.05);
    println!(
        "\ncrash-rate gate: {canary} canary and {baseline} baseline devices, {base_rate} crashes per device-hour on the old release,"
    );
    println!("  tolerated ratio {max_ratio}x, confidence 95%, evaluated every hour for {hours} h");
    println!("  true ratio   halted   median hours to halt");
    for ratio in [1.0, 1.5, 2.0, 3.0, 5.0] {
        let mut halted = 0;
        let mut when = Vec::new();
        for _ in 0..reps {
            let (mut xc, mut xb) = (0u64, 0u64);
            for h in 1..=hours {
                xc += rng.poisson(canary * base_rate * ratio);
                xb += rng.poisson(baseline * base_rate);
                let ec = canary * h as f64;
                let eb = baseline * h as f64;
                let q0 = share_for_ratio(max_ratio, ec, eb);
                if xc + xb > 0 && test_proportion(xc as f64, (xc + xb) as f64, q0, alpha, 0.0).verdict == Verdict::Fail
                {
                    halted += 1;
                    when.push(h);
                    break;
                }
            }
        }
        println!("  {:>9.1}x   {:>5.1}%   {}", ratio, 100.0 * halted as f64 / reps as f64, percentile(&mut when, 0.5));
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut rng = Rng(2026);
    proportions(0.05, 0.95, 1.0, 2000, 3000, &MULTIPLES, &mut rng);
    proportions(0.05, 0.95, 5.0, 2000, 3000, &MULTIPLES, &mut rng);
    proportions(0.02, 0.95, 1.0, 1000, 5000, &MULTIPLES, &mut rng);
    crash_rates(2000, &mut rng);
    // The rare-stratum family's plan: 2% gates over six scopes, a stratum
    // failing 10% or 50% (what "What no test can do" cites).
    proportions(0.02, 0.95, 6.0, 1000, 5000, &[5.0, 25.0], &mut rng);
}
