//! Cohorts: nested waves, stratified in proportion, stable across retries
//! and across controllers, and the decisions' reasons.

use std::collections::{BTreeMap, BTreeSet};

use updraft_rollout::*;
use updraft_types::{DeviceId, ReleaseId, RolloutId, UnixMs};

const PLAN: &str = r#"
[selector]
family = "sensor"

[[waves]]
percent = 1
soak = "1d"

[[waves]]
percent = 10
soak = "1d"

[[waves]]
percent = 50
soak = "1d"

[[waves]]
percent = 100
"#;

fn controller(devices: &[(String, &str, &str)]) -> Controller {
    let mut c = Controller::new(UnixMs(0));
    for id in ["fw@1", "fw@2"] {
        c.handle(
            UnixMs(0),
            Input::Release(ReleaseInfo {
                id: ReleaseId::new(id),
                family: "sensor".into(),
                hardware: vec!["rev-a".into(), "rev-b".into(), "rev-c".into()],
                requires: vec![],
                provides: vec![],
            }),
        );
    }
    for (id, hw, region) in devices {
        c.handle(
            UnixMs(0),
            Input::Device(DeviceInfo {
                id: DeviceId::new(id),
                family: "sensor".into(),
                hardware: hw.to_string(),
                region: region.to_string(),
                tags: vec![],
                channel: None,
                release: Some(ReleaseId::new("fw@1")),
                last_known_good: Some(ReleaseId::new("fw@1")),
                components: vec![],
                utc_offset_min: 0,
            }),
        );
    }
    c.handle(
        UnixMs(0),
        Input::CreateRollout {
            id: RolloutId::new("r"),
            release: ReleaseId::new("fw@2"),
            plan: Plan::from_toml(PLAN).unwrap(),
        },
    );
    c.handle(UnixMs(0), Input::Command { rollout: RolloutId::new("r"), command: Command::Start });
    while c.poll_output().is_some() {}
    c
}

/// Devices assigned the release when every device checks in.
fn assigned(c: &mut Controller, devices: &[(String, &str, &str)], t: u64) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (id, _, _) in devices {
        c.handle(UnixMs(t), Input::CheckIn { device: DeviceId::new(id), release: Some(ReleaseId::new("fw@1")) });
        while let Some(o) = c.poll_output() {
            if let Output::Decision { device, decision: Decision::Install { .. } } = o {
                out.insert(device.to_string());
            }
        }
    }
    out
}

#[test]
fn waves_are_nested_stratified_and_stable() {
    // 3 hardware revisions x 2 regions, uneven: 1,000 + 500 + 200 + 100 + 50 + 7 devices.
    let sizes = [
        ("rev-a", "eu", 1000),
        ("rev-a", "us", 500),
        ("rev-b", "eu", 200),
        ("rev-b", "us", 100),
        ("rev-c", "eu", 50),
        ("rev-c", "us", 7),
    ];
    let devices: Vec<(String, &str, &str)> = sizes
        .iter()
        .flat_map(|&(hw, region, n)| (0..n).map(move |i| (format!("{hw}-{region}-{i}"), hw, region)))
        .collect();
    let mut c = controller(&devices);
    let mut previous = BTreeSet::new();
    let mut report = String::new();
    for wave in 0..4 {
        let first = assigned(&mut c, &devices, 1000 + wave * 10);
        // A retry gives the same answer.
        let again = assigned(&mut c, &devices, 1001 + wave * 10);
        assert!(first == again, "wave {wave} reshuffled on retry: {} then {} devices", first.len(), again.len());
        assert!(previous.is_subset(&first), "wave {} does not contain wave {wave}", wave + 1);
        let mut per: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (id, hw, region) in &devices {
            if first.contains(id) {
                *per.entry((hw, region)).or_default() += 1;
            }
        }
        report.push_str(&format!("wave {}: {} devices {:?}\n", wave + 1, first.len(), per));
        previous = first;
        c.handle(
            UnixMs(2000 + wave * 10),
            Input::Command { rollout: RolloutId::new("r"), command: Command::AdvanceNow },
        );
        while c.poll_output().is_some() {}
    }
    // Every stratum is in every wave, in proportion (rounded up).
    expect_test::expect![[r#"
        wave 1: 24 devices {("rev-a", "eu"): 11, ("rev-a", "us"): 6, ("rev-b", "eu"): 3, ("rev-b", "us"): 2, ("rev-c", "eu"): 1, ("rev-c", "us"): 1}
        wave 2: 191 devices {("rev-a", "eu"): 101, ("rev-a", "us"): 51, ("rev-b", "eu"): 21, ("rev-b", "us"): 11, ("rev-c", "eu"): 6, ("rev-c", "us"): 1}
        wave 3: 934 devices {("rev-a", "eu"): 501, ("rev-a", "us"): 251, ("rev-b", "eu"): 101, ("rev-b", "us"): 51, ("rev-c", "eu"): 26, ("rev-c", "us"): 4}
        wave 4: 1857 devices {("rev-a", "eu"): 1000, ("rev-a", "us"): 500, ("rev-b", "eu"): 200, ("rev-b", "us"): 100, ("rev-c", "eu"): 50, ("rev-c", "us"): 7}
    "#]]
    .assert_eq(&report);
    // A new controller, the devices registered in another order: the same first wave.
    let mut reversed = devices.clone();
    reversed.reverse();
    let mut c1 = controller(&devices);
    let mut c2 = controller(&reversed);
    assert!(assigned(&mut c1, &devices, 1000) == assigned(&mut c2, &devices, 1000), "first waves differ");
}

#[test]
fn the_cohort_hash_is_fixed() {
    // Changing it would reshuffle running rollouts after an upgrade.
    assert_eq!(cohort_hash("r1", "device-1"), cohort_hash("r1", "device-1"));
    assert_ne!(cohort_hash("r1", "device-1"), cohort_hash("r2", "device-1"));
    expect_test::expect!["14096285958150785196"].assert_eq(&cohort_hash("rollout-1", "device-00000001").to_string());
}

#[test]
fn unknown_inputs_are_rejected_with_the_reason() {
    let mut c = controller(&[("d1".into(), "rev-a", "eu")]);
    let mut log = String::new();
    for input in [
        Input::CheckIn { device: DeviceId::new("nobody"), release: None },
        Input::Command { rollout: RolloutId::new("nope"), command: Command::Pause },
        Input::Command { rollout: RolloutId::new("r"), command: Command::Start },
        Input::Command { rollout: RolloutId::new("r"), command: Command::Resume },
        Input::CreateRollout {
            id: RolloutId::new("r2"),
            release: ReleaseId::new("fw@9"),
            plan: Plan::from_toml(PLAN).unwrap(),
        },
        Input::LiftQuarantine { release: ReleaseId::new("fw@9") },
    ] {
        c.handle(UnixMs(5), input);
        while let Some(o) = c.poll_output() {
            if let Output::Rejected { reason } = o {
                log.push_str(&reason);
                log.push('\n');
            }
        }
    }
    expect_test::expect![[r#"
        check-in from unknown device nobody
        unknown rollout nope
        rollout r: cannot Start while running: it has already started
        rollout r: cannot Resume while running: only a paused rollout can be resumed
        rollout r2: unknown release fw@9
        unknown release fw@9
    "#]]
    .assert_eq(&log);
}
