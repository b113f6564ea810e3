//! The agent against a real server on loopback: file slots, the file
//! bootloader model, simulated reboots. A good release is downloaded,
//! verified, written, trial-booted, health-checked and committed; a release
//! whose health check fails reverts on its own; a local install works
//! without a server.

use std::path::{Path, PathBuf};

use updraft_agent::bootloader::{Bootloader, FileModel};
use updraft_agent::config::Config;
use updraft_agent::shell::{Shell, Stop};
use updraft_agent_core::Slot;
use updraft_bundle::bundle::ImageInput;
use updraft_bundle::trust::{self, RootParams};
use updraft_bundle::{BuildContext, CreateParams, NoProgress, PrivateKey, Signers, Source, Target};
use updraft_types::{SecurityVersion, Timestamp};

struct Lab {
    dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
    admin: String,
    release_key: PrivateKey,
    build_key: PrivateKey,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().new_agent()
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let release_key = PrivateKey::from_ed25519_seed(&[11; 32]).unwrap();
        let build_key = PrivateKey::from_ed25519_seed(&[12; 32]).unwrap();
        let root = trust::init(
            RootParams {
                release_keys: vec![release_key.public().clone()],
                release_threshold: 1,
                build_keys: vec![build_key.public().clone()],
                expires: Timestamp(4_000_000_000),
            },
            &[&release_key],
        )
        .unwrap();
        std::fs::write(dir.path().join("root.json"), root.to_json()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let started = runtime.block_on(updraft_server::start(updraft_server::Config::local(dir.path(), root))).unwrap();
        let url = format!("http://{}", started.addr);
        Lab { dir, runtime: Some(runtime), url, admin: started.first_admin_token.unwrap(), release_key, build_key }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn bundle(&self, version: &str, image: &[u8]) -> PathBuf {
        let d = self.path(&format!("build-{version}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("rootfs.img"), image).unwrap();
        let out = d.join("fw.bundle");
        updraft_bundle::create(
            &CreateParams {
                name: "fw".into(),
                version: version.parse().unwrap(),
                security_version: SecurityVersion(2),
                family: "sensor".into(),
                hardware: vec!["rev-a".into()],
                requires: vec!["bootloader>=1.4".parse().unwrap()],
                source: Source { uri: "git+https://example.com/fw".into(), commit: "abc".into() },
                created: Timestamp(1_767_225_600),
                images: vec![ImageInput { name: "rootfs".into(), path: d.join("rootfs.img"), target: Target::Slot }],
                sbom: None,
                build: BuildContext { ci: "local".into(), ..Default::default() },
                updraft_version: "test".into(),
            },
            &Signers { release: vec![&self.release_key], build: &self.build_key },
            &out,
            &NoProgress,
        )
        .unwrap();
        out
    }

    fn api(&self, method: &str, path: &str, body: Vec<u8>) -> serde_json::Value {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.admin))
            .header("Content-Type", "application/json")
            .body(body)
            .unwrap();
        let mut res = http().run(req).unwrap();
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        assert!(status < 300, "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// A device with slot A holding 1.0.0, enrolled; returns its agent config path.
    fn device(&self, name: &str, health: &str) -> PathBuf {
        let d = self.path(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("slot-a.img"), b"firmware 1.0.0").unwrap();
        let e = self.api(
            "POST",
            "/api/v1/enrollment-tokens",
            serde_json::to_vec(&serde_json::json!({"uses": 1, "expiresInS": 600})).unwrap(),
        );
        let r = self.api(
            "POST",
            "/api/v1/device/enroll",
            serde_json::to_vec(&serde_json::json!({
                "enrollmentToken": e["token"], "deviceId": name, "family": "sensor", "hardware": "rev-a",
                "region": "eu", "release": "fw@1.0.0", "components": {"bootloader": "1.4.2"}
            }))
            .unwrap(),
        );
        std::fs::write(d.join("token"), r["deviceToken"].as_str().unwrap()).unwrap();
        let config = format!(
            r#"data_dir = {data:?}
trust_root = {root:?}
poll_interval_s = 30

[server]
url = {url:?}
token_file = {token:?}

[device]
family = "sensor"
hardware = "rev-a"
release = "fw@1.0.0"
security_version = 1
components = {{ bootloader = "1.4.2" }}

[bootloader]
kind = "file"
path = {boot:?}

[slots]
A = {a:?}
B = {b:?}

[[health_checks]]
name = "app"
command = ["{health}"]
timeout_s = 10
"#,
            data = d.join("data"),
            root = self.path("root.json"),
            url = self.url,
            token = d.join("token"),
            boot = d.join("boot.json"),
            a = d.join("slot-a.img"),
            b = d.join("slot-b.img"),
        );
        std::fs::write(d.join("agent.toml"), config).unwrap();
        // First boot: the file model boots slot A.
        FileModel { path: d.join("boot.json") }.boot().unwrap();
        d.join("agent.toml")
    }
}

fn boot(config: &Path) {
    let cfg = Config::load(config).unwrap();
    let updraft_agent::config::BootloaderConfig::File { path } = &cfg.bootloader else { unreachable!() };
    FileModel { path: path.clone() }.boot().unwrap();
}

fn pass(config: &Path) -> (Stop, updraft_agent_core::Journal) {
    let mut shell = Shell::start(Config::load(config).unwrap()).unwrap();
    shell.simulate_reboot = true;
    let stop = shell.run(true).unwrap();
    (stop, shell.journal().clone())
}

#[test]
fn a_good_release_commits_and_a_bad_one_reverts() {
    let lab = Lab::new();
    let v1 = lab.bundle("1.0.0", b"firmware 1.0.0");
    let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let v2 = lab.bundle("2.0.0", &image);
    for b in [&v1, &v2] {
        lab.api("POST", "/api/v1/releases", std::fs::read(b).unwrap());
    }
    let good = lab.device("good-1", "true");
    let bad = lab.device("bad-1", "false");
    let plan = "[selector]\nfamily = \"sensor\"\n[[waves]]\npercent = 100\nsoak = \"1d\"\n";
    lab.api(
        "POST",
        "/api/v1/rollouts",
        serde_json::to_vec(&serde_json::json!({"id": "r1", "release": "fw@2.0.0", "plan": plan})).unwrap(),
    );

    // Good: download, verify, write B, arm, reboot; trial boot, health, commit.
    let (stop, j) = pass(&good);
    assert_eq!((stop, j.phase.name()), (Stop::Reboot, "armed"), "{j:?}");
    assert!(std::fs::read(lab.path("good-1/slot-b.img")).unwrap() == image, "slot B holds the image");
    boot(&good);
    let (stop, j) = pass(&good);
    assert_eq!(stop, Stop::Idle);
    assert_eq!(j.installed.release.as_ref().map(|r| r.as_str()), Some("fw@2.0.0"));
    assert_eq!(j.installed.slot, Slot::B);
    assert!(j.unreported.is_empty(), "{:?}", j.unreported);
    let record = FileModel { path: lab.path("good-1/boot.json") }.read().unwrap().unwrap();
    assert!(record.good[1] && !record.trial_armed && record.primary == Slot::B);

    // Bad: the health check fails, the agent reverts, the old slot boots.
    let (stop, _) = pass(&bad);
    assert_eq!(stop, Stop::Reboot);
    boot(&bad);
    let (stop, j) = pass(&bad);
    assert_eq!(stop, Stop::Reboot, "revert reboots: {j:?}");
    boot(&bad);
    let (_, j) = pass(&bad);
    assert_eq!(j.installed.release.as_ref().map(|r| r.as_str()), Some("fw@1.0.0"));
    assert_eq!(j.installed.slot, Slot::A);
    assert!(j.unreported.is_empty());

    // The failure is kept with the device: the health check's verdict and
    // the tail of the agent's log.
    let d = lab.api("GET", "/api/v1/devices/bad-1", vec![]);
    let failure = d["history"].as_array().unwrap().iter().find(|h| h["kind"] == "reverted_health").cloned();
    let detail = failure.map(|h| h["detail"].as_str().unwrap_or_default().to_owned()).unwrap_or_default();
    assert!(detail.contains("health check app failed"), "{d}");
    assert!(detail.contains("-- the agent's log, newest last --"), "{detail}");

    // The server heard both.
    let status = lab.api("GET", "/api/v1/rollouts/r1", vec![]);
    assert_eq!(status["perWave"][0]["committed"], 1, "{status}");
    assert_eq!(status["perWave"][0]["reverted"], 1, "{status}");
}

#[test]
fn a_local_install_and_refusals_before_any_write() {
    let lab = Lab::new();
    let config = lab.device("local-1", "true");
    // A bundle for another family is refused before a byte reaches slot B.
    let image = vec![5u8; 20_000];
    let good = lab.bundle("3.0.0", &image);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_updraft-agent"))
        .args(["install"])
        .arg(&good)
        .arg("--config")
        .arg(&config)
        .arg("--simulate-reboot")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let journal = std::fs::read_to_string(lab.path("local-1/data/journal.json")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("rebooting"),
        "{}\n{journal}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(std::fs::read(lab.path("local-1/slot-b.img")).unwrap() == image, "slot B holds the image");
    boot(&config);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_updraft-agent"))
        .args(["commit", "--simulate-reboot", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["installed"]["release"], "fw@3.0.0", "{v}");

    // A tampered bundle: refused, nothing written to the inactive slot (now A).
    let before = std::fs::read(lab.path("local-1/slot-a.img")).unwrap();
    let mut bytes = std::fs::read(lab.bundle("3.1.0", &vec![6u8; 20_000])).unwrap();
    let n = bytes.len();
    bytes[n - 3000] ^= 1;
    std::fs::write(lab.path("tampered.bundle"), bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_updraft-agent"))
        .args(["install"])
        .arg(lab.path("tampered.bundle"))
        .arg("--config")
        .arg(&config)
        .arg("--simulate-reboot")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused: fw@3.1.0 failed"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(std::fs::read(lab.path("local-1/slot-a.img")).unwrap() == before, "slot A was written");

    // The genuine bundle of the same release is not poisoned by the tampered copy.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_updraft-agent"))
        .args(["install"])
        .arg(lab.path("build-3.1.0/fw.bundle"))
        .arg("--config")
        .arg(&config)
        .arg("--simulate-reboot")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "rebooting into the trial of fw@3.1.0 (slot A)\n");
}

#[test]
fn the_agent_follows_a_trust_root_rotation() {
    let lab = Lab::new();
    let config = lab.device("rot-1", "true");
    // The server adopts version 2 (a new release key), signed by the old and the new key.
    let new_key = PrivateKey::from_ed25519_seed(&[13; 32]).unwrap();
    let v1 = updraft_bundle::SignedRoot::parse(&std::fs::read(lab.path("root.json")).unwrap()).unwrap();
    let v2 = trust::rotate(
        &v1.root,
        RootParams {
            release_keys: vec![new_key.public().clone()],
            release_threshold: 1,
            build_keys: vec![lab.build_key.public().clone()],
            expires: Timestamp(4_000_000_000),
        },
        &[&lab.release_key, &new_key],
    )
    .unwrap();
    lab.api("POST", "/api/v1/trust-root", v2.to_json());
    // A release signed by the new key only.
    let d = lab.path("build-4.0.0");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("rootfs.img"), vec![4u8; 10_000]).unwrap();
    let bundle = d.join("fw.bundle");
    updraft_bundle::create(
        &CreateParams {
            name: "fw".into(),
            version: "4.0.0".parse().unwrap(),
            security_version: SecurityVersion(2),
            family: "sensor".into(),
            hardware: vec!["rev-a".into()],
            requires: vec![],
            source: Source { uri: "git+https://example.com/fw".into(), commit: "abc".into() },
            created: Timestamp(1_767_225_600),
            images: vec![ImageInput { name: "rootfs".into(), path: d.join("rootfs.img"), target: Target::Slot }],
            sbom: None,
            build: BuildContext { ci: "local".into(), ..Default::default() },
            updraft_version: "test".into(),
        },
        &Signers { release: vec![&new_key], build: &lab.build_key },
        &bundle,
        &NoProgress,
    )
    .unwrap();
    lab.api("POST", "/api/v1/releases", std::fs::read(&bundle).unwrap());
    let plan = "[selector]\nfamily = \"sensor\"\n[[waves]]\npercent = 100\nsoak = \"1d\"\n";
    lab.api(
        "POST",
        "/api/v1/rollouts",
        serde_json::to_vec(&serde_json::json!({"id": "r4", "release": "fw@4.0.0", "plan": plan})).unwrap(),
    );
    let (stop, j) = pass(&config);
    assert_eq!(stop, Stop::Reboot, "{j:?}");
    assert!(lab.path("rot-1/data/trust-root.2.json").exists(), "the adopted version is kept");
    boot(&config);
    let (_, j) = pass(&config);
    assert_eq!(j.installed.release.as_ref().map(|r| r.as_str()), Some("fw@4.0.0"));
}

fn agent(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_updraft-agent"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first day of a device through the binary alone: not enrolled (exit 2
/// with the hint), `enroll`, a reboot command that does not reboot (asked
/// again, then the trial is disarmed with the reason: exit 1, never a
/// panic), a wrong token and an unreachable server (exit 2, said on stderr).
#[test]
fn the_agent_binary_enrolls_says_why_and_never_wedges() {
    let lab = Lab::new();
    let v2 = lab.bundle("2.0.0", b"firmware 2.0.0");
    lab.api("POST", "/api/v1/releases", std::fs::read(&v2).unwrap());
    let d = lab.path("dev-1");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("slot-a.img"), b"firmware 1.0.0").unwrap();
    let config = d.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"# a development board
data_dir = {data:?}
trust_root = {root:?}
reboot_command = ["true"]

[device]
family = "sensor"
hardware = "rev-a"
release = "fw@1.0.0"
security_version = 1
components = {{ bootloader = "1.4.2" }}

[bootloader]
kind = "file"
path = {boot:?}

[slots]
A = {a:?}
B = {b:?}
"#,
            data = d.join("data"),
            root = lab.path("root.json"),
            boot = d.join("boot.json"),
            a = d.join("slot-a.img"),
            b = d.join("slot-b.img"),
        ),
    )
    .unwrap();
    // Not enrolled: a local install works, a check-in has nothing to ask.
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + &format!("\n[server]\nurl = {:?}\n", lab.url))
        .unwrap();
    let (code, _, err) = agent(&["check"], &config);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("this device is not enrolled") && err.contains("updraft-agent enroll"), "{err}");

    // Enroll with a one-use token; the token file is 0600, the URL in agent.toml.
    let e = lab.api(
        "POST",
        "/api/v1/enrollment-tokens",
        serde_json::to_vec(&serde_json::json!({"uses": 1, "expiresInS": 600})).unwrap(),
    );
    let token = e["token"].as_str().unwrap();
    let (code, out, err) = agent(&["enroll", "--server", &lab.url, "--token", token, "--device-id", "dev-1"], &config);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("enrolled as dev-1 at {}\n", lab.url));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("data/device-token")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with("# a development board") && text.contains("token_file"), "{text}");
    let (code, _, err) = agent(&["enroll", "--server", &lab.url, "--token", token, "--device-id", "dev-1"], &config);
    assert_eq!(code, Some(1), "enrolled already: {err}");

    // Inventory scripts: KEY=VALUE lines, reported at each check-in.
    std::fs::create_dir_all(d.join("inventory")).unwrap();
    std::fs::write(d.join("inventory/site"), "#!/bin/sh\necho site=berlin\necho 'not a pair'\necho floor=3\n").unwrap();
    std::fs::set_permissions(d.join("inventory/site"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "reboot_command = [\"true\"]",
        "reboot_command = [\"true\"]\ninventory_dir = \"inventory\"",
        1,
    );
    std::fs::write(&config, text).unwrap();

    // Nothing assigned yet: exit 0 and the server's reason in words.
    let (code, out, err) = agent(&["check"], &config);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "up to date: fw@1.0.0 (slot A) (server: no rollout applies to this device)\n");
    let dev = lab.api("GET", "/api/v1/devices/dev-1", vec![]);
    assert_eq!(dev["inventory"]["attr.site"], "berlin", "{dev}");
    assert_eq!(dev["inventory"]["attr.floor"], "3", "{dev}");
    assert_eq!(dev["inventory"]["slot"], "A", "{dev}");
    assert!(dev["inventory"]["freeBytes"].as_str().is_some_and(|f| f.parse::<u64>().is_ok()), "{dev}");

    // A rollout, and a reboot command that does not reboot.
    let plan = "[selector]\nfamily = \"sensor\"\n[[waves]]\npercent = 100\nsoak = \"1d\"\n";
    lab.api(
        "POST",
        "/api/v1/rollouts",
        serde_json::to_vec(&serde_json::json!({"id": "r1", "release": "fw@2.0.0", "plan": plan})).unwrap(),
    );
    let mut outs = Vec::new();
    for _ in 0..4 {
        let (code, out, err) = agent(&["check"], &config);
        assert!(!err.contains("panicked"), "{err}");
        outs.push((code, out, err));
    }
    assert_eq!(outs[0].1, "rebooting into the trial of fw@2.0.0 (slot B)\n", "{:?}", outs[0]);
    assert!(outs[1].2.contains("the reboot did not happen"), "{:?}", outs[1]);
    let (code, _, err) = &outs[3];
    assert_eq!(*code, Some(1), "{err}");
    assert!(err.contains("refused: fw@2.0.0 failed: the device did not boot the trial of slot B"), "{err}");
    assert!(err.contains("hint: reboot_command"), "{err}");
    // At rest on A, and the server heard the failure.
    let (code, out, err) = agent(&["check"], &config);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("up to date: fw@1.0.0 (slot A)"), "{out}");
    let status = lab.api("GET", "/api/v1/rollouts/r1", vec![]);
    assert_eq!(status["perWave"][0]["failed"], 1, "{status}");

    // A wrong token and an unreachable server: exit 2, said on stderr.
    std::fs::write(d.join("data/device-token"), "upd_wrong\n").unwrap();
    let (code, _, err) = agent(&["check"], &config);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("401") && err.contains("updraft-agent enroll"), "{err}");
    let text = std::fs::read_to_string(&config).unwrap().replace(&lab.url, "http://127.0.0.1:9");
    std::fs::write(&config, text).unwrap();
    let (code, _, err) = agent(&["check"], &config);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unreachable"), "{err}");
}

/// An image that ships an enrollment token enrolls on its first start;
/// `status --json` speaks camelCase.
#[test]
fn a_shipped_enrollment_token_enrolls_on_first_start() {
    let lab = Lab::new();
    let d = lab.path("shipped");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("slot-a.img"), b"firmware 1.0.0").unwrap();
    let e = lab.api(
        "POST",
        "/api/v1/enrollment-tokens",
        serde_json::to_vec(&serde_json::json!({"uses": 1, "expiresInS": 600})).unwrap(),
    );
    std::fs::write(d.join("enroll.token"), e["token"].as_str().unwrap()).unwrap();
    std::fs::write(d.join("machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let config = d.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "data"
trust_root = {root:?}
reboot_command = ["true"]

[server]
url = {url:?}
enrollment_token_file = "enroll.token"

[device]
family = "sensor"
hardware = "rev-a"
release = "fw@1.0.0"
id_file = "machine-id"

[bootloader]
kind = "file"
path = "boot.json"

[slots]
A = "slot-a.img"
B = "slot-b.img"
"#,
            root = lab.path("root.json"),
            url = lab.url,
        ),
    )
    .unwrap();
    let (code, out, err) = agent(&["check"], &config);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("enrolling as 0123456789abcdef0123456789abcdef"), "{err}");
    assert!(out.starts_with("up to date: fw@1.0.0 (slot A)"), "{out}");
    assert!(d.join("data/device-token").exists());
    let dev = lab.api("GET", "/api/v1/devices/0123456789abcdef0123456789abcdef", vec![]);
    assert_eq!(dev["status"], "active", "{dev}");
    let (code, out, _) = agent(&["status", "--json"], &config);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("\"bootRecord\"") && out.contains("\"securityVersion\"") && !out.contains("security_version"),
        "{out}"
    );
}
