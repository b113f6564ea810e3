//! `updraft simulate` on the shipped example models.

use std::path::Path;

use crate::updraft;

fn example(f: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sim").join(f).display().to_string()
}

#[test]
fn a_bad_release_is_rolled_back_and_the_run_replays_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, plan, bad) = (example("fleet.toml"), example("plan.toml"), example("release-bad.toml"));
    let args = ["simulate", "--fleet", &fleet, "--plan", &plan, "--release", &bad, "--seed", "2", "--json"];
    let a = updraft(dir.path(), &args);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let r: serde_json::Value = serde_json::from_str(&a.stdout).unwrap();
    assert_eq!(r["finalState"], "rolled_back");
    assert!(r["finalReason"].as_str().unwrap().contains("rev-c"), "{}", r["finalReason"]);
    assert_eq!(r["violations"].as_array().unwrap().len(), 0);
    assert!(r["exposed"].as_u64().unwrap() < 300, "halted within wave 1: {}", r["exposed"]);
    let b = updraft(dir.path(), &args);
    assert_eq!(a.stdout, b.stdout, "the same seed gives the same report");

    let human = updraft(dir.path(), &[&args[..args.len() - 1], &["--report", "r.html"]].concat());
    assert_eq!(human.code, 0);
    let page = std::fs::read_to_string(dir.path().join("r.html")).unwrap();
    assert!(page.starts_with("<!doctype html>") && page.contains("<polyline") && page.contains("rolled_back"));
    assert!(human.stdout.contains("outcome: rolled_back"), "{}", human.stdout);
    assert!(human.stdout.contains("invariants: all held"), "{}", human.stdout);
}

#[test]
fn bad_models_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let plan = example("plan.toml");
    std::fs::write(
        dir.path().join("fleet.toml"),
        "family = \"sensor\"\n[[groups]]\ncount = 0\nhardware = \"a\"\nregion = \"r\"\n",
    )
    .unwrap();
    let r = updraft(dir.path(), &["simulate", "--fleet", "fleet.toml", "--plan", &plan]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("groups[0].count is 0"), "{}", r.stderr);
    std::fs::write(dir.path().join("fleet.toml"), "family = \"sensor\"\nbogus = 1\n").unwrap();
    let r = updraft(dir.path(), &["simulate", "--fleet", "fleet.toml", "--plan", &plan]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("fleet.toml: invalid fleet model") && r.stderr.contains("bogus"), "{}", r.stderr);
    let r = updraft(dir.path(), &["simulate", "--fleet", "missing.toml", "--plan", &plan]);
    assert!(r.code != 0 && r.stderr.contains("cannot read the fleet model missing.toml"), "{}", r.stderr);
}

#[test]
fn compare_prints_the_three_policies_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, plan, bad) = (example("fleet.toml"), example("plan.toml"), example("release-bad.toml"));
    let args = ["simulate", "--fleet", &fleet, "--plan", &plan, "--release", &bad, "--seed", "2", "--compare"];
    let human = updraft(dir.path(), &args);
    assert_eq!(human.code, 0, "{}", human.stderr);
    let header = human.stdout.lines().nth(1).unwrap();
    for label in ["Updraft gates", "hawkBit groups", "AWS IoT Jobs abort"] {
        assert!(header.contains(label), "{header}");
    }
    let json = updraft(dir.path(), &[&args[..], &["--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let policies: Vec<&str> = v["runs"].as_array().unwrap().iter().map(|r| r["policy"].as_str().unwrap()).collect();
    assert_eq!(policies, ["updraft", "hawkbit", "aws_iot_jobs"]);
}
