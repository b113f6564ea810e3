//! `updraft pipeline` on the example firmware project (C, two families).

use std::path::Path;

use crate::{have, updraft_with};

pub fn copy_example(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/firmware");
    for f in [
        "updraft.toml",
        "Makefile",
        "src/main.c",
        "src/crc.c",
        "src/crc.h",
        "tests/run.sh",
        "tests/test_main.c",
        "sbom.cdx.json",
        "osv/EXAMPLE-2025-0001.json",
        "osv/EXAMPLE-2025-0002.json",
    ] {
        let dest = to.join(f);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from.join(f), dest).unwrap();
    }
    for name in ["release", "build"] {
        let r = crate::updraft(to, &["keys", "generate", "--out-dir", "keys", "--name", name]);
        assert_eq!(r.code, 0, "{}", r.stderr);
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
            "gates",
            "bundle:sensor",
            "bundle:gateway"
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
    // Every build ran in its own copy of the sources: the project's tree is untouched.
    assert!(!d.join("out").exists(), "a build wrote into the project's tree");
    for family in ["sensor", "gateway"] {
        assert!(d.join(".updraft/build").join(family).join("out").join(family).join("firmware.bin").is_file());
    }

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
    let r = pipeline(d, &["pipeline", "run", "--stage", "build", "--family", "sensor"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("sensor: NOT reproducible: image rootfs differs"), "{}", r.stdout);
    // The pipeline names the cause, where it is and its fix, before diffoscope.
    assert!(r.stdout.contains("cause (build-path, in firmware.bin): the build folder is in the image"), "{}", r.stdout);
    assert!(r.stdout.contains("fix: compile with -ffile-prefix-map=$PWD=."), "{}", r.stdout);
    assert!(r.stdout.contains("first difference at byte"), "{}", r.stdout);
    assert!(r.stdout.contains("diffoscope"), "{}", r.stdout);
    assert!(
        r.stdout.contains("gate reproducible: FAIL (images differ: sensor/rootfs (build-path, elf-sections))"),
        "{}",
        r.stdout
    );
    // --explain runs the real diffoscope and keeps its report beside the build logs.
    if have("diffoscope") {
        let r = pipeline(d, &["pipeline", "run", "--stage", "build", "--family", "sensor", "--explain"]);
        assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("diffoscope's report: ./.updraft/logs/diffoscope-sensor-rootfs.txt"), "{}", r.stdout);
        let report = std::fs::read_to_string(d.join(".updraft/logs/diffoscope-sensor-rootfs.txt")).unwrap();
        assert!(report.contains("rebuild/sensor/src/main.c"), "{report}");
    } else {
        assert!(std::env::var("CI").is_err(), "CI installs diffoscope (diffoscope-minimal) for --explain");
        eprintln!("skipped --explain: diffoscope is not installed");
    }
    let r = pipeline(d, &["pipeline", "run", "--stage", "build", "--family", "sensor", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let findings = &v["builds"][0]["diagnoses"][0]["findings"];
    let causes: Vec<&str> = findings.as_array().unwrap().iter().map(|f| f["cause"].as_str().unwrap()).collect();
    assert!(causes.contains(&"build-path"), "{findings:#}");
    let path = findings.as_array().unwrap().iter().find(|f| f["cause"] == "build-path").unwrap();
    let detail = path["detail"].as_str().unwrap();
    assert!(detail.contains(".updraft/build/sensor") && detail.contains(".updraft/rebuild/sensor"), "{detail}");
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
    let q = v["tests"]["newlyQuarantined"].as_array().unwrap();
    assert_eq!(q.len(), 2, "{v:#}");
    assert!(q[0].as_str().unwrap().ends_with("radio_link_retry"));
    assert_eq!(v["gates"][1]["gate"], "tests");
    assert_eq!(v["gates"][1]["passed"], true);
    let summary = std::fs::read_to_string(d.join(".updraft/summary.md")).unwrap();
    assert!(summary.contains("| tests | pass |") && summary.contains("radio_link_retry"), "{summary}");
    let junit = std::fs::read_to_string(d.join(".updraft/junit-summary.xml")).unwrap();
    let gates = updraft_pipeline::junit::parse(&junit, "junit-summary.xml").unwrap();
    assert_eq!(gates.len(), 4, "reproducible, tests, vulnerabilities, secrets");
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

#[test]
fn the_coverage_gate_reads_lcov_and_blocks_below_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec = |min: u32| {
        format!(
            r#"[project]
name = "p"
[[families]]
name = "fw"
hardware = ["a"]
build = ["sh", "-c", "mkdir -p out && echo fw > out/fw.img"]
images = {{ rootfs = "out/fw.img" }}
[[targets]]
name = "unit"
kind = "emulator"
command = ["sh", "-c", "mkdir -p out && echo '<testsuites><testsuite name=\"s\"><testcase name=\"a\"/></testsuite></testsuites>' > out/j.xml && printf 'SF:a.c\nLF:10\nLH:7\nend_of_record\n' > out/{{family}}.info"]
junit = "out/j.xml"
[gates]
reproducible = false
coverage = {{ min_percent = {min}, report = "out/{{family}}.info" }}
"#
        )
    };
    std::fs::write(d.join("updraft.toml"), spec(80)).unwrap();
    let r = pipeline(d, &["pipeline", "run"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("gate coverage: FAIL") && r.stdout.contains("fw 70.0% (7/10 lines)"), "{}", r.stdout);
    std::fs::write(d.join("updraft.toml"), spec(60)).unwrap();
    let r = pipeline(d, &["pipeline", "run"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("gate coverage: pass"), "{}", r.stdout);
}

#[test]
fn a_planted_secret_blocks_until_it_is_allowed() {
    if !have("cc") || !have("make") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_example(d);
    let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let main = std::fs::read_to_string(d.join("src/main.c")).unwrap();
    std::fs::write(
        d.join("src/main.c"),
        main.replace("int main(void)", &format!("const char *cloud = \"{key}\";\nint main(void)")),
    )
    .unwrap();
    let r = pipeline(d, &["pipeline", "run", "--stage", "build", "--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let gate = v["gates"].as_array().unwrap().iter().find(|g| g["gate"] == "secrets").unwrap().clone();
    assert_eq!(gate["passed"], false);
    let evidence = gate["evidence"].as_str().unwrap();
    assert!(evidence.contains("src/main.c:") && evidence.contains("AWS access key id"), "{evidence}");
    // The compiler keeps the string: the image is caught too.
    assert!(evidence.contains("out/sensor/firmware.bin"), "{evidence}");
    let fp = evidence.split("fingerprint ").nth(1).unwrap()[..16].to_owned();
    std::fs::write(d.join(".updraft-secrets-allow"), format!("# the AWS documentation's example key\n{fp}\n")).unwrap();
    let r = pipeline(d, &["pipeline", "run", "--stage", "build"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("gate secrets: pass"), "{}", r.stdout);
}

#[test]
fn a_vulnerable_component_blocks() {
    if !have("cc") || !have("make") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_example(d);
    let r = pipeline(d, &["pipeline", "run", "--stage", "build"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("gate vulnerabilities: pass (2 components checked against osv; 0 known"), "{}", r.stdout);
    // An older lwIP, inside the HIGH record's range; Mbed TLS 3.6.1 is MODERATE: below the limit.
    let sbom = std::fs::read_to_string(d.join("sbom.cdx.json")).unwrap();
    std::fs::write(
        d.join("sbom.cdx.json"),
        sbom.replace("\"version\": \"2.2.0\"", "\"version\": \"2.1.2\"")
            .replace("\"version\": \"3.6.2\"", "\"version\": \"3.6.1\""),
    )
    .unwrap();
    let r = pipeline(d, &["pipeline", "run", "--stage", "build"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("gate vulnerabilities: FAIL (at or above high: EXAMPLE-2025-0001 lwip 2.1.2 (high)"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("EXAMPLE-2025-0002"), "a moderate finding does not block at high: {}", r.stdout);
}

#[test]
fn a_green_tagged_run_writes_one_signed_bundle_per_family() {
    if !have("cc") || !have("make") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_example(d);
    let r = pipeline(d, &["pipeline", "run", "--release-version", "1.4.0", "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let bundles = v["bundles"].as_array().unwrap();
    assert_eq!(bundles.len(), 2, "{v:#}");
    let path = bundles[0]["path"].as_str().unwrap();
    assert!(path.ends_with("acme-fw-sensor-1.4.0.bundle"), "{path}");
    let r = crate::updraft(d, &["bundle", "inspect", path, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(m["manifest"]["family"], "sensor", "{m:#}");
    assert_eq!(m["manifest"]["hardware"], serde_json::json!(["rev-b", "rev-c"]));
    // Without a tag or a version: gates only, and a note.
    let r = pipeline(d, &["pipeline", "run", "--stage", "all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("note: no bundles: untagged commit"), "{}", r.stdout);
}

/// A project whose Makefile does not track its flags (like most): `make`
/// in a tree another family built in finds the image up to date.
fn variant_project(dir: &Path, families: &[(&str, &str)], track_flags: bool) {
    std::fs::write(dir.join("fw.c"), "int variant = VARIANT;\n").unwrap();
    let flags = if track_flags { "$(CFLAGS)" } else { "-O2 -DVARIANT=1" };
    std::fs::write(
        dir.join("Makefile"),
        format!("out/fw.bin: fw.c\n\tmkdir -p out\n\t$(CC) {flags} -c fw.c -o out/fw.bin\n"),
    )
    .unwrap();
    let mut toml = String::from("[project]\nname = \"variants\"\n\n");
    for (name, cflags) in families {
        toml.push_str(&format!(
            "[[families]]\nname = \"{name}\"\nhardware = [\"{name}-board\"]\nbuild = [\"make\"]\nimages = {{ fw = \"out/fw.bin\" }}\nenv = {{ CFLAGS = \"{cflags}\" }}\n\n"
        ));
    }
    toml.push_str("[gates]\nreproducible = true\n");
    std::fs::write(dir.join("updraft.toml"), toml).unwrap();
}

fn digests(v: &serde_json::Value) -> Vec<(String, String)> {
    v["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["family"].as_str().unwrap().to_owned(), b["first"][0]["sha256"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn each_family_is_built_from_its_own_inputs_in_any_order() {
    if !have("cc") || !have("make") {
        return;
    }
    let one = ("one", "-O2 -DVARIANT=1");
    let two = ("two", "-O2 -DVARIANT=2");
    let run = |families: &[(&str, &str)], only: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        variant_project(dir.path(), families, true);
        let mut args = vec!["pipeline", "run", "--stage", "build", "--json"];
        if let Some(f) = only {
            args.extend(["--family", f]);
        }
        let r = pipeline(dir.path(), &args);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert!(v["builds"].as_array().unwrap().iter().all(|b| b["reproducible"] == true), "{v:#}");
        let mut d = digests(&v);
        d.sort();
        d
    };
    let both = run(&[one, two], None);
    assert_ne!(both[0].1, both[1].1, "family two shipped family one's image: {both:?}");
    // Each family's image is the one a build of that family alone gives,
    // and the order of the families changes nothing.
    let alone: Vec<(String, String)> = [run(&[one, two], Some("one")), run(&[one, two], Some("two"))].concat();
    assert_eq!(both, alone);
    assert_eq!(both, run(&[two, one], None));
}

#[test]
fn families_with_different_settings_and_the_same_image_are_named() {
    if !have("cc") || !have("make") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    variant_project(dir.path(), &[("one", "-O2 -DVARIANT=1"), ("two", "-O2 -DVARIANT=2")], false);
    let r = pipeline(dir.path(), &["pipeline", "run", "--stage", "build"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("warning: families one and two built byte-identical images (one/fw and two/fw"),
        "{}",
        r.stderr
    );
    let r = pipeline(dir.path(), &["pipeline", "run", "--stage", "build", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("byte-identical")), "{v:#}");
}

/// A shared lab, as scripts: `reserve.sh` takes the board (a lock folder)
/// and prints labgrid-style `export LG_TOKEN=...` and the place;
/// `release.sh` gives it back; `run.sh` checks it holds the board, fails
/// with the lab's exit code 3 on the tries listed in `$LAB/unreachable`,
/// else writes the board's serial log and a JUnit report.
fn hil_project(dir: &Path, lab: &Path, infra_retries: u32) {
    std::fs::create_dir_all(dir.join("lab")).unwrap();
    std::fs::write(
        dir.join("lab/reserve.sh"),
        "mkdir \"$LAB/lock\" || exit 1\necho reserved >&2\necho 'export LG_TOKEN=\"tok-1\"'\necho board-1\n",
    )
    .unwrap();
    std::fs::write(dir.join("lab/release.sh"), "rmdir \"$LAB/lock\" && echo \"$LG_TOKEN\" >> \"$LAB/released\"\n")
        .unwrap();
    std::fs::write(
        dir.join("lab/run.sh"),
        "[ -d \"$LAB/lock\" ] || { echo 'not reserved'; exit 9; }\n\
         [ \"$LG_TOKEN\" = tok-1 ] && [ \"$UPDRAFT_PLACE\" = \"$1\" ] || exit 8\n\
         echo x >> \"$LAB/tries\"\n\
         n=$(wc -l < \"$LAB/tries\")\n\
         grep -qx \"$n\" \"$LAB/unreachable\" && { echo 'board unreachable'; exit 3; }\n\
         printf 'U-Boot 2023.01\\nStarting kernel ...\\nfw: up\\n' > serial-$1.log\n\
         printf '<testsuite><testcase classname=\"board\" name=\"boots\"/></testsuite>' > junit.xml\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("updraft.toml"),
        format!(
            "[project]\nname = \"lab\"\n\n[[families]]\nname = \"board\"\nhardware = [\"rev-a\"]\n\
             build = [\"sh\", \"-c\", \"mkdir -p out && echo fw > out/fw.bin\"]\nimages = {{ rootfs = \"out/fw.bin\" }}\n\n\
             [[targets]]\nname = \"rack\"\nkind = \"hil\"\ncommand = [\"sh\", \"lab/run.sh\", \"{{place}}\"]\n\
             junit = \"junit.xml\"\nserial_log = \"serial-{{place}}.log\"\ninfra_retries = {infra_retries}\n\
             infra_exit_codes = [3]\nenv = {{ LAB = \"{}\" }}\n\
             lock = {{ acquire = [\"sh\", \"lab/reserve.sh\"], release = [\"sh\", \"lab/release.sh\"], timeout_s = 60 }}\n",
            lab.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_hil_target_reserves_its_board_retries_the_labs_failures_and_keeps_the_serial_log() {
    let dir = tempfile::tempdir().unwrap();
    let lab = tempfile::tempdir().unwrap();
    let (d, l) = (dir.path(), lab.path());
    // The first try finds the board unreachable: the lab's failure, run again.
    std::fs::write(l.join("unreachable"), "1\n").unwrap();
    hil_project(d, l, 2);
    let r = pipeline(d, &["pipeline", "run", "--stage", "all"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("test board/rack attempt 1: 1 tests, 0 failed\n  place: board-1\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains("  the lab failed on try 1 (exit 3, one of infra_exit_codes): run again\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("  serial log: ./.updraft/reports/local/board-rack-1.serial.log"), "{}", r.stdout);
    let serial = std::fs::read_to_string(d.join(".updraft/reports/local/board-rack-1.serial.log")).unwrap();
    assert!(serial.contains("Starting kernel"), "{serial}");
    // Every reservation was given back, the failed try's included.
    assert_eq!(std::fs::read_to_string(l.join("released")).unwrap(), "tok-1\ntok-1\n");
    assert!(!l.join("lock").exists());
    let log = std::fs::read_to_string(d.join(".updraft/reports/local/board-rack-1.log")).unwrap();
    assert!(log.contains("board unreachable") && log.contains("infrastructure retry 1 of 2"), "{log}");

    // A lab that keeps failing spends the budget and fails the tests gate,
    // naming the lab, not the firmware; flaky-test retries do not count it.
    std::fs::write(l.join("unreachable"), "1\n2\n3\n4\n5\n").unwrap();
    std::fs::remove_file(l.join("tries")).unwrap();
    hil_project(d, l, 1);
    let r = pipeline(d, &["pipeline", "run", "--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let runs = v["testRuns"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{v:#}");
    assert_eq!(runs[0]["infraFailures"].as_array().unwrap().len(), 2);
    assert!(runs[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("the lab failed (exit 3, one of infra_exit_codes), 1 retries spent"));
    assert_eq!(std::fs::read_to_string(l.join("tries")).unwrap().lines().count(), 2);
    let gate = v["gates"].as_array().unwrap().iter().find(|g| g["gate"] == "tests").unwrap();
    assert_eq!(gate["passed"], false);
    assert!(gate["evidence"].as_str().unwrap().contains("the lab failed"), "{gate:#}");
}
