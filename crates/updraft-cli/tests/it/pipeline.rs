//! `updraft pipeline` on the example firmware project (C, two families).

use std::path::Path;

use crate::{have, updraft_with};

fn copy_example(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/firmware");
    for f in ["updraft.toml", "Makefile", "src/main.c", "src/crc.c", "src/crc.h", "tests/run.sh", "tests/test_main.c"] {
        let dest = to.join(f);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from.join(f), dest).unwrap();
    }
}

fn pipeline(dir: &Path, args: &[&str]) -> crate::Run {
    updraft_with(dir, args, |c| {
        c.env("SOURCE_DATE_EPOCH", "1767225600");
    })
}

#[test]
fn plan_shows_the_stage_graph() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    let r = pipeline(dir.path(), &["pipeline", "plan", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let ids: Vec<&str> = v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "build:sensor",
            "reproduce:sensor",
            "test:sensor:host",
            "build:gateway",
            "reproduce:gateway",
            "test:gateway:host",
            "gates"
        ]
    );
    std::fs::write(dir.path().join("updraft.toml"), "[project]\nname = \"x\"\nfamilies = []\n").unwrap();
    let r = pipeline(dir.path(), &["pipeline", "plan"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("invalid pipeline spec"), "{}", r.stderr);
}

#[test]
fn the_example_builds_reproducibly_and_a_path_in_the_image_is_caught() {
    if !have("cc") || !have("make") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_example(d);
    let r = pipeline(d, &["pipeline", "run", "--stage", "build", "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["passed"], true);
    assert_eq!(v["builds"].as_array().unwrap().len(), 2);

    // Compile from an absolute path without the prefix map and print
    // __FILE__: the build folder ends up in the image.
    let mk = std::fs::read_to_string(d.join("Makefile")).unwrap();
    std::fs::write(
        d.join("Makefile"),
        mk.replace("-ffile-prefix-map=$(CURDIR)=. ", "")
            .replace("src/main.c src/crc.c\n", "$(CURDIR)/src/main.c src/crc.c\n"),
    )
    .unwrap();
    let main = std::fs::read_to_string(d.join("src/main.c")).unwrap();
    std::fs::write(d.join("src/main.c"), main.replace("return 0;", "puts(__FILE__);\n    return 0;")).unwrap();
    std::fs::remove_dir_all(d.join("out")).unwrap();
    let r = pipeline(d, &["pipeline", "run", "--stage", "build", "--family", "sensor"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("sensor: NOT reproducible: image rootfs differs"), "{}", r.stdout);
    assert!(r.stdout.contains("diffoscope"), "{}", r.stdout);
    assert!(r.stdout.contains("gate reproducible: FAIL"), "{}", r.stdout);
}

#[test]
fn a_flaky_test_is_quarantined_and_a_failing_one_blocks() {
    if !have("cc") || !have("make") {
        return;
    }
    if !have("git") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_example(d);
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
            .args(args)
            .current_dir(d)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    std::fs::write(d.join(".gitignore"), "out/\n.updraft/\n").unwrap();
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "firmware"]);
    // radio_link_retry fails on the first attempt and passes on the retry.
    let r = pipeline(d, &["pipeline", "run", "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let q = v["tests"]["newly_quarantined"].as_array().unwrap();
    assert_eq!(q.len(), 2, "{v:#}");
    assert!(q[0].as_str().unwrap().ends_with("radio_link_retry"));
    assert_eq!(v["gates"][1]["gate"], "tests");
    assert_eq!(v["gates"][1]["passed"], true);
    let summary = std::fs::read_to_string(d.join(".updraft/summary.md")).unwrap();
    assert!(summary.contains("| tests | pass |") && summary.contains("radio_link_retry"), "{summary}");
    let junit = std::fs::read_to_string(d.join(".updraft/junit-summary.xml")).unwrap();
    let gates = updraft_pipeline::junit::parse(&junit, "junit-summary.xml").unwrap();
    assert_eq!(gates.len(), 2);
    // The JUnit reports are kept for audit.
    let commit = v["commit"].as_str().unwrap();
    assert_eq!(commit.len(), 40, "{commit}");
    assert!(d.join(format!(".updraft/reports/{commit}/sensor-host-1.xml")).is_file());

    // Still quarantined on the next run: it fails, and does not block.
    let r = pipeline(d, &["pipeline", "run", "--stage", "test"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("2 quarantined"), "{}", r.stdout);

    // A real failure fails on the retry too, and blocks.
    let t = std::fs::read_to_string(d.join("tests/test_main.c")).unwrap();
    std::fs::write(d.join("tests/test_main.c"), t.replace("== 0x29B1", "== 0x29B2")).unwrap();
    let r = pipeline(d, &["pipeline", "run", "--stage", "test"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("gate tests: FAIL") && r.stdout.contains("crc_check_value"), "{}", r.stdout);
    assert!(r.stdout.contains("test sensor/host attempt 2"), "the failure was retried: {}", r.stdout);
}
