//! The property the whole format rests on: no change to a valid bundle is
//! accepted. Random byte flips, truncations and insertions anywhere, from a
//! fixed seed so that a failure is reproducible (the seed and the case are
//! printed).

use std::io::Cursor;

use updraft_bundle::bundle::Policy;
use updraft_bundle::NoProgress;

use crate::fixture::{build, keys, trusted};

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn no_changed_bundle_is_ever_accepted() {
    let k = keys();
    let good = std::fs::read(build(&k).path).unwrap();
    let trust = trusted(&k);
    // Most of a bundle is image bytes; aim half of the changes at the
    // metadata and headers (the first blocks) where parsing happens.
    let metadata_end = 16 * 1024;
    const SEED: u64 = 0x00c0_ffee;
    const CASES: usize = 3000;
    let mut rng = SplitMix(SEED);
    for case in 0..CASES {
        let mut bytes = good.clone();
        let region = if rng.below(2) == 0 { metadata_end } else { bytes.len() };
        let kind = rng.below(4);
        let what = match kind {
            0 => {
                let at = rng.below(region);
                let bit = 1u8 << rng.below(8);
                bytes[at] ^= bit;
                format!("flip bit {bit:#x} at {at}")
            }
            1 => {
                let at = rng.below(bytes.len());
                bytes.truncate(at);
                format!("truncate to {at}")
            }
            2 => {
                let at = rng.below(region + 1);
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, ins);
                format!("insert {n} bytes at {at}")
            }
            _ => {
                let at = rng.below(region);
                let n = (1 + rng.below(8)).min(bytes.len() - at);
                let new = rng.next() as u8;
                let before = bytes[at..at + n].to_vec();
                bytes[at..at + n].fill(new);
                if before.iter().all(|&b| b == new) {
                    continue;
                }
                format!("overwrite {n} bytes at {at} with {new:#x}")
            }
        };
        let verdict = updraft_bundle::verify(Cursor::new(&bytes), &trust, &Policy::default(), &NoProgress);
        assert!(verdict.is_err(), "case {case} ({what}) was accepted; replay with SEED={SEED:#x}, case {case}");
        let e = verdict.unwrap_err();
        assert!(e.rejection().is_some(), "case {case} ({what}): an error instead of a rejection: {e}");
    }
}
