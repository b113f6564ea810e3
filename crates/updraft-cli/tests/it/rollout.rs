use crate::updraft;

#[test]
fn rollout_check_explains_a_plan_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/plan-standard.toml");
    std::fs::copy(&example, dir.path().join("plan.toml")).unwrap();
    let run = updraft(dir.path(), &["rollout", "check", "plan.toml"]).ok();
    expect_test::expect_file!["snapshots/rollout-check.txt"].assert_eq(&run.stdout);
    let run = updraft(dir.path(), &["rollout", "check", "plan.toml", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["waves"].as_array().unwrap().len(), 4);
    assert_eq!(v["gates"][0]["kind"], "install");

    std::fs::write(
        dir.path().join("bad.toml"),
        "[selector]\nfamily = \"x\"\n[[waves]]\npercent = 50\n[[waves]]\npercent = 10\n",
    )
    .unwrap();
    let run = updraft(dir.path(), &["rollout", "check", "bad.toml"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout,
        "bad.toml: invalid rollout plan: wave 2: waves are cumulative; 10% is below the previous 50%\n"
    );
    let run = updraft(dir.path(), &["rollout", "check", "missing.toml"]);
    assert_eq!(run.code, 2);
}
