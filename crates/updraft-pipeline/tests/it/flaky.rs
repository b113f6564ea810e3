//! Quarantine: in on a mixed result for one commit, out after N passes in a row.

use updraft_pipeline::flaky::FlakyState;

#[test]
fn quarantine_in_and_out() {
    let mut s = FlakyState::default();
    let k = "sensor/host/t";
    // (commit, passed, runner's own flaky retry, expected change, quarantined after)
    let steps: &[(&str, bool, bool, Option<bool>, bool)] = &[
        ("c1", true, false, None, false),
        ("c2", false, false, None, false),
        ("c2", true, false, Some(true), true), // failed and passed on c2
        ("c3", true, false, None, true),
        ("c4", false, false, None, true), // a failure resets the count
        ("c5", true, false, None, true),
        ("c6", true, false, Some(false), false), // two passes in a row (release_after = 2)
        ("c7", false, false, None, false),       // a plain failure: not flaky
        ("c8", true, true, Some(true), true),    // nextest retried it: flaky
    ];
    for (i, (commit, passed, retried, change, quarantined)) in steps.iter().enumerate() {
        assert_eq!(s.record(commit, k, *passed, *retried, 2), *change, "step {i}");
        assert_eq!(s.is_quarantined(k), *quarantined, "step {i}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/flaky.json");
    s.save(&path).unwrap();
    assert!(FlakyState::load(&path).unwrap().is_quarantined(k));
    assert!(!FlakyState::load(&dir.path().join("none.json")).unwrap().is_quarantined(k));
    std::fs::write(&path, "{").unwrap();
    let e = FlakyState::load(&path).unwrap_err().to_string();
    assert!(e.contains("not valid") && e.contains("delete it"), "{e}");
}
