//! The `updraft` binary through its command line: exit codes, files and
//! their modes, human and `--json` output (snapshots), reproducibility
//! across folders, umasks and locales, and interoperability with tar and
//! OpenSSL.

mod bundle;
mod dashboard;
mod demo;
mod keys;
mod pipeline;
mod quickstart;
mod rollout;
mod server;
mod simulate;
mod surface;
mod swupdate;
mod torture;
mod trust;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::Command;

pub const SDE: &str = "1767225600";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn key(name: &str) -> String {
    fixtures().join("keys").join(name).display().to_string()
}

/// The result of one run, with the temporary folder replaced by `$DIR`.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `updraft` in `dir` with a clean CI environment.
pub fn updraft(dir: &Path, args: &[&str]) -> Run {
    updraft_with(dir, args, |_| {})
}

pub fn updraft_with(dir: &Path, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_updraft"));
    cmd.args(args).current_dir(dir);
    for var in ["GITHUB_ACTIONS", "GITLAB_CI", "SOURCE_DATE_EPOCH", "NO_PROGRESS"] {
        cmd.env_remove(var);
    }
    tweak(&mut cmd);
    let out = cmd.output().expect("updraft runs");
    let clean = |b: Vec<u8>| {
        String::from_utf8(b)
            .unwrap()
            .replace(&dir.display().to_string(), "$DIR")
            .replace(&fixtures().display().to_string(), "$FIXTURES")
    };
    Run { code: out.status.code().unwrap_or(-1), stdout: clean(out.stdout), stderr: clean(out.stderr) }
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// A folder with firmware inputs and a 2-of-3 trust root (A, B, C; build key).
pub fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_firmware(&dir.path().join("fw"));
    updraft(
        dir.path(),
        &[
            "trust",
            "init",
            "--pubkey",
            &key("release-a.pub"),
            "--pubkey",
            &key("release-b.pub"),
            "--pubkey",
            &key("release-c.pub"),
            "--threshold",
            "2",
            "--build-pubkey",
            &key("build.pub"),
            "--expires",
            "2099-01-01T00:00:00Z",
            "--sign-with",
            &key("release-a.key"),
            "--sign-with",
            &key("release-b.key"),
            "--out",
            "root.json",
        ],
    )
    .ok();
    dir
}

pub fn write_firmware(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x: u32 = 7;
    let rootfs: Vec<u8> = (0..200_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    std::fs::write(dir.join("rootfs.img"), rootfs).unwrap();
    std::fs::write(dir.join("radio.bin"), b"radio firmware 4.2\n".repeat(50)).unwrap();
    std::fs::write(
        dir.join("sbom.cdx.json"),
        r#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[{"type":"library","name":"mbedtls","version":"3.6.2"}]}"#,
    )
    .unwrap();
}

/// `bundle create` arguments for the sample firmware under `fw`.
pub fn create_args<'a>(fw: &'a str, out: &'a str, sign_with: &'a [String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "bundle",
        "create",
        "--name",
        "sensor-fw",
        "--version",
        "2.3.1",
        "--family",
        "nrf52",
        "--hardware",
        "rev-c",
        "--hardware",
        "rev-d",
        "--security-version",
        "7",
        "--requires",
        "bootloader>=1.4",
        "--source-uri",
        "git+https://git.example.com/acme/sensor-fw",
        "--source-commit",
        "7fd1a60b01f91b314f59955a4e4d4e80d8edf11d",
        "--source-ref",
        "refs/tags/v2.3.1",
        "--source-date-epoch",
        SDE,
        "--build-key",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(key("build.key"));
    args.extend(["--image".into(), format!("rootfs={fw}/rootfs.img")]);
    args.extend(["--component-image".into(), format!("radio={fw}/radio.bin")]);
    args.extend(["--sbom".into(), format!("{fw}/sbom.cdx.json")]);
    for k in sign_with {
        args.extend(["--sign-with".into(), k.clone()]);
    }
    args.extend(["--out".into(), out.into()]);
    args
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

/// Whether an external tool is installed. In CI (`CI=true`) a missing tool
/// is a failure: `.ci/run` installs it.
pub fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{tool} is missing in CI; .ci/run must install it");
        eprintln!("skipped: {tool} is not installed");
    }
    found
}
