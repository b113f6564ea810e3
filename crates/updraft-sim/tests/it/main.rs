//! Scenarios through the whole simulator: the real agent and rollout cores.

use updraft_rollout::Plan;
use updraft_sim::{run, Fleet, Release, Report};

const FLEET: &str = r#"
family = "sensor"
poll = "30m"
duration = "4d"

[[connectivity]]
name = "wifi"
kbps = 20000
loss = 0.02

[[connectivity]]
name = "lte-m"
kbps = 300
latency = "600ms"
loss = 0.05

[[groups]]
count = 1500
hardware = "rev-b"
region = "eu"
connectivity = "wifi"
offline = 0.02

[[groups]]
count = 1000
hardware = "rev-c"
region = "us"
connectivity = "lte-m"

[[outages]]
region = "us"
start = "2h"
duration = "1h"
"#;

const PLAN: &str = r#"
name = "test"
on_failure = "rollback"
silence_timeout = "6h"
[selector]
family = "sensor"
[[waves]]
percent = 5
min_devices = 100
soak = "2h"
[[waves]]
percent = 30
soak = "2h"
max_concurrent = 300
per_minute = 60
[[waves]]
percent = 100
[[gates]]
kind = "install"
max_failure_rate = 0.05
[[gates]]
kind = "boot"
max_failure_rate = 0.05
[[gates]]
kind = "health"
max_failure_rate = 0.05
[[gates]]
kind = "crash_rate"
max_ratio = 1.5
min_exposure_hours = 20
"#;

fn simulate(fleet: &str, release: &str, seed: u64) -> Report {
    let fleet: Fleet = toml::from_str(fleet).expect("fleet");
    let release: Release = toml::from_str(release).expect("release");
    let plan = Plan::from_toml(PLAN).expect("plan");
    let report = run(&fleet, &release, &plan, seed, &mut |_| {}).expect("runs");
    assert!(
        report.violations.is_empty(),
        "seed {seed}: invariants broken: {:#?}\nreplay: updraft simulate with --seed {seed}",
        report.violations
    );
    report
}

struct Case {
    name: &'static str,
    release: &'static str,
    /// Top-level fleet settings for this case.
    fleet_extra: &'static str,
    expect: fn(&Report),
}

const DEFAULTS: &str = "power_loss = 0.02\nbase_crash_rate = 0.002\n";

const GOOD: &str = "name = \"fw\"\nversion = \"2.0.0\"\nimage_mib = 8\n";

const CASES: &[Case] = &[
    Case {
        name: "a good release reaches every online device",
        release: GOOD,
        fleet_extra: DEFAULTS,
        expect: |r| {
            assert_eq!(r.final_state, "completed", "{:#?}", r.timeline);
            assert_eq!(r.on_release, r.online);
            assert!(r.time_to_full_s.is_some());
            assert_eq!(r.rollbacks, 0);
            assert!(r.power_cuts > 0, "power cuts were simulated");
            assert!(r.download_retries > 0, "lossy links were simulated");
        },
    },
    Case {
        name: "unhealthy on one revision: the health gate rolls back",
        release: "name = \"fw\"\nversion = \"2.0.0\"\nimage_mib = 8\n[[behaviour]]\nhardware = \"rev-c\"\nhealth_fail = 0.4\n",
        fleet_extra: DEFAULTS,
        expect: |r| {
            assert_eq!(r.final_state, "rolled_back", "{:#?}", r.timeline);
            assert!(r.halted_at_s.is_some());
            assert!(r.reverted_health > 0);
            assert!(r.exposed < r.online / 2, "halted early: {} of {} exposed", r.exposed, r.online);
            assert!(r.exposed_failed > 0 && r.exposed_failed < r.exposed);
            assert!(r.rollbacks > 0, "rev-b devices that committed went back");
            assert_eq!(r.on_release, 0, "every device is back on the base release");
        },
    },
    Case {
        name: "trial boots that hang: the bootloader reverts and the boot gate halts",
        release: "name = \"fw\"\nversion = \"2.0.0\"\nimage_mib = 8\n[[behaviour]]\nboot_fail = 0.2\n",
        fleet_extra: DEFAULTS,
        expect: |r| {
            assert_eq!(r.final_state, "rolled_back", "{:#?}", r.timeline);
            assert!(r.reverted_boot > 0);
            assert!(r.downtime.max_s > 0);
        },
    },
    Case {
        name: "crashes three times as often: the crash-rate gate halts",
        release: "name = \"fw\"\nversion = \"2.0.0\"\nimage_mib = 8\n[[behaviour]]\ncrash_factor = 3.0\n",
        fleet_extra: "power_loss = 0.02\nbase_crash_rate = 0.05\n",
        expect: |r| {
            assert_eq!(r.final_state, "rolled_back", "{:#?}", r.timeline);
            assert_eq!(r.reverted_health + r.reverted_boot, 0);
        },
    },
    Case {
        name: "power cuts in half of all installs break nothing",
        release: GOOD,
        fleet_extra: "power_loss = 0.5\nbase_crash_rate = 0.002\n",
        expect: |r| {
            assert!(r.power_cuts > 500, "{} cuts", r.power_cuts);
            assert_eq!(r.final_state, "completed", "{:#?}", r.timeline);
            assert_eq!(r.on_release, r.online);
        },
    },
];

#[test]
fn scenarios() {
    for case in CASES {
        eprintln!("{}", case.name);
        let fleet = format!("{}{FLEET}", case.fleet_extra);
        let r = simulate(&fleet, case.release, 7);
        eprintln!(
            "  {} after {}s, {} exposed, {} failed; reverted {}+{}, failed {}; {:?}",
            r.final_state,
            r.sim_s,
            r.exposed,
            r.exposed_failed,
            r.reverted_boot,
            r.reverted_health,
            r.failed,
            r.downtime
        );
        (case.expect)(&r);
    }
}

#[test]
fn maintenance_windows_hold_in_each_device_s_skewed_local_time() {
    let fleet =
        fleet_default().replace("[[groups]]\ncount = 1000\n", "[[groups]]\ncount = 1000\nclock_skew = \"90m\"\n");
    assert!(fleet.contains("clock_skew"));
    let fleet: Fleet = toml::from_str(&fleet).unwrap();
    let release: Release = toml::from_str(GOOD).unwrap();
    let plan = Plan::from_toml(&format!("{PLAN}\n[window]\nstart = \"01:00\"\nend = \"05:00\"\n")).unwrap();
    let r = run(&fleet, &release, &plan, 5, &mut |_| {}).unwrap();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.final_state, "completed", "{:#?}", r.timeline);
    // Nothing starts before 01:00 local time; the run starts at 00:00 UTC.
    assert!(r.time_to_full_s.unwrap() > 3600);
}

#[test]
fn devices_of_another_family_are_left_alone() {
    let fleet = format!(
        "{}[[groups]]\ncount = 300\nfamily = \"gateway\"\nhardware = \"gw-1\"\nregion = \"eu\"\n",
        fleet_default()
    );
    let fleet: Fleet = toml::from_str(&fleet).unwrap();
    // What this checks is the family boundary, not the gates: a wave whose
    // crash-rate gate stays undecided moves on after max_wait. (With seed 9
    // the devices on the release happen to crash 1.4x as often as the rest:
    // 59 crashes in 19,889 device-hours where the model's 0.002 per hour
    // gives 40, against 127 in 60,367 on the old release; seeds 10 to 13
    // show no such excess. The gate, whose tolerance is 1.5x, rightly does
    // not pass it.)
    let plan = Plan::from_toml(
        &PLAN.replace("on_failure = \"rollback\"", "on_failure = \"rollback\"\non_inconclusive = \"advance\""),
    )
    .unwrap();
    let r = run(&fleet, &toml::from_str(GOOD).unwrap(), &plan, 9, &mut |_| {}).unwrap();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.final_state, "completed", "{:?}", r.final_reason);
    assert_eq!(r.online, r.eligible + 300);
    assert_eq!(r.on_release, r.eligible, "every sensor, no gateway");
    assert!(r.time_to_full_s.is_some());
}

fn fleet_default() -> String {
    format!("{DEFAULTS}{FLEET}")
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let bad =
        "name = \"fw\"\nversion = \"2.0.0\"\nimage_mib = 8\n[[behaviour]]\nhardware = \"rev-c\"\nhealth_fail = 0.4\n";
    for seed in [1, 2, 3] {
        let fleet = format!("{DEFAULTS}{FLEET}");
        let a = simulate(&fleet, bad, seed);
        let b = simulate(&fleet, bad, seed);
        assert_eq!(a.hash, b.hash, "seed {seed} is not deterministic");
        assert_eq!(a.events, b.events);
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    }
    assert_ne!(simulate(&fleet_default(), GOOD, 1).hash, simulate(&fleet_default(), GOOD, 2).hash);
}

#[test]
fn bad_models_are_refused_with_the_reason() {
    let plan = Plan::from_toml(PLAN).unwrap();
    let release: Release = toml::from_str(GOOD).unwrap();
    for (fleet, needle) in [
        ("family = \"sensor\"\ngroups = []\n", "no [[groups]]"),
        ("family = \"sensor\"\n[[groups]]\ncount = 0\nhardware = \"a\"\nregion = \"r\"\n", "count is 0"),
        ("family = \"sensor\"\n[[groups]]\ncount = 5\nhardware = \"a\"\nregion = \"r\"\nconnectivity = \"5g\"\n", "5g"),
        (
            "family = \"sensor\"\npower_loss = 2.0\n[[groups]]\ncount = 5\nhardware = \"a\"\nregion = \"r\"\n",
            "power_loss",
        ),
        ("family = \"other\"\n[[groups]]\ncount = 5\nhardware = \"a\"\nregion = \"r\"\n", "refused"),
    ] {
        let fleet: Fleet = toml::from_str(fleet).unwrap();
        let err = run(&fleet, &release, &plan, 1, &mut |_| {}).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }
    let same: Release = toml::from_str("name = \"fw\"\nversion = \"1.0.0\"\n").unwrap();
    let fleet: Fleet = toml::from_str(&fleet_default()).unwrap();
    let err = run(&fleet, &same, &plan, 1, &mut |_| {}).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("base version"), "{err}");
}

#[test]
fn the_shipped_examples_parse() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sim/");
    let read = |f: &str| std::fs::read_to_string(format!("{root}{f}")).unwrap();
    let fleet: Fleet = toml::from_str(&read("fleet.toml")).unwrap();
    fleet.validate().unwrap();
    for r in ["release-good.toml", "release-bad.toml"] {
        let r: Release = toml::from_str(&read(r)).unwrap();
        r.validate().unwrap();
    }
    Plan::from_toml(&read("plan.toml")).unwrap();
}

#[test]
fn baselines_let_a_bad_release_reach_more_devices_and_leave_it_there() {
    use updraft_sim::{run_with, Policy};
    let bad =
        "name = \"fw\"\nversion = \"2.0.0\"\nimage_mib = 8\n[[behaviour]]\nhardware = \"rev-c\"\nhealth_fail = 0.4\n";
    let fleet: Fleet = toml::from_str(&fleet_default()).unwrap();
    let release: Release = toml::from_str(bad).unwrap();
    let plan = Plan::from_toml(PLAN).unwrap();
    let go = |p| run_with(p, &fleet, &release, &plan, 3, &mut |_| {}).unwrap();
    let (updraft, hawkbit, aws) = (go(Policy::Updraft), go(Policy::Hawkbit), go(Policy::AwsIotJobs));
    for r in [&updraft, &hawkbit, &aws] {
        assert!(r.violations.is_empty(), "{:?}: {:?}", r.policy, r.violations);
    }
    assert_eq!(updraft.final_state, "rolled_back");
    assert_eq!(updraft.on_release, 0, "Updraft gives every device its old release back");
    assert_eq!(hawkbit.final_state, "paused");
    assert!(hawkbit.on_release > 0 && hawkbit.rollbacks == 0, "hawkBit pauses and leaves devices as they are");
    assert_eq!(aws.final_state, "aborted");
    assert!(aws.exposed > 5 * updraft.exposed, "AWS {} vs Updraft {}", aws.exposed, updraft.exposed);
    assert!(aws.final_reason.as_deref().unwrap().contains("executions failed"), "{:?}", aws.final_reason);
}
