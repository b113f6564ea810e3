//! The README's "A device in five minutes" is examples/quickstart/quickstart.sh,
//! and this test runs it as written: a failing step fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The folder holding `updraft` and `updraft-agent` (built if missing: the
/// agent is another package's binary).
fn bin_dir() -> PathBuf {
    let updraft = PathBuf::from(env!("CARGO_BIN_EXE_updraft"));
    let dir = updraft.parent().unwrap().to_path_buf();
    if !dir.join("updraft-agent").exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "updraft-agent", "--bin", "updraft-agent"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_readme_quickstart_runs_as_written() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/quickstart.sh");
    let work = tempfile::tempdir().unwrap();
    let path = format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg(&script)
        .arg(work.path().join("qs"))
        .env("PATH", path)
        .env("UPDRAFT_QUICKSTART_PORT", free_port().to_string())
        .env("NO_PROGRESS", "1")
        .env_remove("UPDRAFT_SERVER")
        .env_remove("UPDRAFT_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the quickstart failed:\n{stdout}\n{stderr}");
    for line in [
        "enrolled as devboard-1 at http://127.0.0.1:",
        "rebooting into the trial of devboard-fw@1.1.0 (slot B)",
        "committed devboard-fw@1.1.0 (slot B)",
        "committed 1",
        "DEVICE                   STATUS",
        "devboard-1               active",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(stderr.contains("info: health checks passed on slot B: committing"), "{stderr}");
}

/// The README's tour, as typed, up to the firmware CI (the pipeline, the
/// simulator and the server have tests of their own): keys, trust roots,
/// rotation, bundles, signatures, verification, plans.
#[test]
fn the_readme_tour_runs_as_typed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let tour = &readme[readme.find("## A tour of the commands").unwrap()..];
    let start = tour.find("```sh\n").unwrap() + 6;
    let end = tour.find("# Firmware CI").unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("docs/examples")).unwrap();
    std::fs::copy(root.join("docs/examples/plan-standard.toml"), work.path().join("docs/examples/plan-standard.toml"))
        .unwrap();
    std::fs::write(work.path().join("tour.sh"), format!("set -euo pipefail\n{}", &tour[start..end])).unwrap();
    let path = format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg("tour.sh")
        .current_dir(work.path())
        .env("PATH", path)
        .env("NO_PROGRESS", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the tour failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("sensor-fw 2.3.1 for sensor"), "{stdout}");
}
