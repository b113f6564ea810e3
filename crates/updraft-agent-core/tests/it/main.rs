//! The agent core against a simulated device: slots whose unsynced writes
//! are lost at a power cut, an atomic boot record run through the
//! bootloader contract, an atomic journal, and a server. The power is cut
//! at every effect of an update in turn (and in random sequences), and
//! after each the device must boot a verified slot and the update must end
//! committed or cleanly reverted, with the server hearing the truth.

mod property;
mod regressions;
mod sim;

use sim::{Fate, Scenario};

#[test]
fn an_update_without_faults_commits() {
    let s = Scenario::new(Fate::Good);
    let (world, effects) = s.run(&[]);
    assert_eq!(world.installed(), Some("fw@2.0.0".into()));
    assert_eq!(world.server_heard(), ["downloaded", "installed", "trial_boot", "committed"]);
    assert!(effects > 15, "{effects}");
}

#[test]
fn a_failed_health_check_and_a_boot_loop_both_revert_alone() {
    let (world, _) = Scenario::new(Fate::Unhealthy).run(&[]);
    assert_eq!(world.installed(), Some("fw@1.0.0".into()));
    assert_eq!(world.server_heard(), ["downloaded", "installed", "trial_boot", "reverted_health"]);
    let (world, _) = Scenario::new(Fate::NeverBoots).run(&[]);
    assert_eq!(world.installed(), Some("fw@1.0.0".into()));
    assert_eq!(world.server_heard(), ["downloaded", "installed", "reverted_boot"]);
    assert_eq!(world.boots, 1 + 3 + 1, "one boot, three failed trials, the fallback");
}

#[test]
fn refused_bundles_write_nothing_to_a_slot() {
    for fate in [Fate::WrongFamily, Fate::Downgrade, Fate::BadSignature] {
        let (world, _) = Scenario::new(fate).run(&[]);
        assert_eq!(world.installed(), Some("fw@1.0.0".into()), "{fate:?}");
        assert_eq!(world.bytes_written_to_slots, 0, "{fate:?}");
        assert_eq!(world.server_heard(), ["failed"], "{fate:?}");
    }
}

#[test]
fn a_cancelled_assignment_is_honoured_before_the_flags_flip() {
    let (world, _) = Scenario::new(Fate::CancelledAfterDownload).run(&[]);
    assert_eq!(world.installed(), Some("fw@1.0.0".into()));
    assert_eq!(world.server_heard(), ["downloaded", "installed", "failed"]);
}

#[test]
fn power_cut_at_every_effect() {
    for fate in [Fate::Good, Fate::Unhealthy, Fate::NeverBoots, Fate::CancelledAfterDownload] {
        let s = Scenario::new(fate);
        let (clean, total) = s.run(&[]);
        let expected = clean.installed();
        for cut in 1..=total {
            let (world, _) = s.run(&[cut]);
            assert_eq!(world.installed(), expected, "{fate:?}, power cut at effect {cut}");
            let heard = world.server_heard();
            assert_eq!(heard.last(), clean.server_heard().last(), "{fate:?}, cut at {cut}: {heard:?}");
        }
    }
}

#[test]
fn random_sequences_of_faults() {
    // Replay a failure with the seed printed in its message.
    for seed in 0..300u64 {
        let fate = [Fate::Good, Fate::Unhealthy, Fate::NeverBoots][(seed % 3) as usize];
        let s = Scenario::new(fate).with_network_faults(seed);
        let (_, total) = s.run(&[]);
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut cuts = Vec::new();
        let mut at = 0;
        for _ in 0..(1 + seed % 4) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            at += 1 + x % (total / 2).max(1);
            cuts.push(at);
        }
        let (world, _) = s.run(&cuts);
        // With the network failing now and then, the update may also give
        // up; either way the device and the server agree.
        let heard = world.server_heard();
        let expected = match heard.last().map(String::as_str) {
            Some("committed") => "fw@2.0.0",
            Some("failed" | "reverted_health" | "reverted_boot") => "fw@1.0.0",
            other => panic!("seed {seed} ({fate:?}), cuts {cuts:?}: the server heard {other:?} last: {heard:?}"),
        };
        assert_eq!(world.installed().as_deref(), Some(expected), "seed {seed} ({fate:?}), cuts {cuts:?}: {heard:?}");
        assert!(world.nothing_unreported(), "seed {seed}: events left unreported");
    }
}

#[test]
fn the_bootloader_contract() {
    use updraft_agent_core::{boot, BootRecord, Slot, TRIAL_ATTEMPTS};
    // Normal boots write nothing (no environment wear).
    let r = BootRecord::fresh(Slot::A);
    assert_eq!(boot(r).0, None);
    // A trial gets TRIAL_ATTEMPTS boots, then the bootloader goes back and says so.
    let mut r = BootRecord::fresh(Slot::A).invalidated(Slot::B).armed(Slot::B);
    for attempt in 0..TRIAL_ATTEMPTS {
        let (next, booted) = boot(r);
        assert_eq!((booted.slot, booted.trial), (Slot::B, true), "attempt {attempt}");
        r = next.unwrap();
    }
    let (next, booted) = boot(r);
    assert_eq!((booted.slot, booted.trial, booted.reverted_from), (Slot::A, false, Some(Slot::B)));
    let r = next.unwrap();
    assert_eq!(r.last_revert, Some(Slot::B));
    assert!(!r.good[Slot::B.index()] && r.bootable());
    // Never brick: a primary that is not good falls back to the good one.
    let mut broken = BootRecord::fresh(Slot::A);
    broken.primary = Slot::B;
    assert_eq!(boot(broken).1.slot, Slot::A);
}

/// The core stays sans-IO: no clock, no randomness, no IO.
#[test]
fn the_core_reads_no_clock_draws_no_randomness_and_does_no_io() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for word in [
            "SystemTime",
            "Instant::now",
            "rand::",
            "OsRng",
            "std::fs",
            "std::net",
            "std::process",
            "std::thread",
            "println!",
        ] {
            assert!(!text.contains(word), "{} uses {word}", path.display());
        }
    }
}
