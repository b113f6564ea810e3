//! The real SWUpdate (Debian's `swupdate`, suricatta in hawkBit mode)
//! against a real `updraft serve`: held back while the rollout is paused,
//! then downloads, installs the payload byte-identically, reports the
//! post-reboot result as suricatta does on its next start (`-c 2`/`-c 3`),
//! failures halt a rollout through the install gate, and an abort before
//! the download reaches it as a cancellation it acknowledges.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{cli, read_admin_token, serve_with, Server};
use crate::{have, key, updraft, workspace};

/// A CMS-signed `.swu` (sw-description, its signature, one file for the
/// `rawfile` handler at `target`), signed by a throwaway self-signed CA.
fn make_swu(dir: &Path, name: &str, payload: &[u8], target: &Path) -> PathBuf {
    use sha2::Digest;
    let work = dir.join(format!("swu-{name}"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("payload.bin"), payload).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(payload));
    let description = format!(
        "software =\n{{\n\tversion = \"{name}\";\n\thardware-compatibility = [ \"rev-a\" ];\n\tfiles: (\n\t\t{{\n\t\t\tfilename = \"payload.bin\";\n\t\t\tpath = \"{}\";\n\t\t\tsha256 = \"{sha}\";\n\t\t}}\n\t);\n}};\n",
        target.display()
    );
    std::fs::write(work.join("sw-description"), description).unwrap();
    let ca = dir.join("ca.pem");
    if !ca.exists() {
        let ok = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=updraft-test"])
            .args(["-addext", "keyUsage=digitalSignature", "-addext", "extendedKeyUsage=emailProtection"])
            .arg("-keyout")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(&ca)
            .output()
            .unwrap();
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    }
    let signed = Command::new("openssl")
        .args([
            "cms",
            "-sign",
            "-in",
            "sw-description",
            "-out",
            "sw-description.sig",
            "-outform",
            "DER",
            "-nosmimecap",
            "-binary",
        ])
        .arg("-signer")
        .arg(&ca)
        .arg("-inkey")
        .arg(dir.join("ca.key"))
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    let out = dir.join(format!("{name}.swu"));
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "crc", "--quiet"])
        .current_dir(&work)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    use std::io::Write;
    cpio.stdin.take().unwrap().write_all(b"sw-description\nsw-description.sig\npayload.bin\n").unwrap();
    assert!(cpio.wait().unwrap().success());
    out
}

/// A running `swupdate -u ...` whose log lines arrive on a channel.
struct Suricatta {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Suricatta {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn suricatta(dir: &Path, server: &Server, id: &str, token: &str, confirm: Option<u8>) -> Suricatta {
    let mut args = format!("-t DEFAULT -u {} -i {id} -k {token} -p 1", server.url);
    if let Some(c) = confirm {
        args.push_str(&format!(" -c {c}"));
    }
    let mut child = Command::new("swupdate")
        .args(["-v", "-H", "board:rev-a", "-k"])
        .arg(dir.join("ca.pem"))
        .args(["-u", &args])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("swupdate runs");
    let (tx, lines) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    Suricatta { child, lines, seen: Vec::new() }
}

impl Suricatta {
    /// Reads its log until a line has every one of `needles` (a minute at most).
    #[track_caller]
    fn wait_for(&mut self, needles: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = needles.iter().all(|n| line.contains(n));
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("swupdate never logged {needles:?}; its log:\n{}", self.seen.join("\n")),
            }
        }
    }
}

fn json(run: crate::Run) -> Value {
    serde_json::from_str(&run.ok().stdout).unwrap()
}

fn bundle(d: &Path, name: &str, version: &str, family: &str, swu: &Path) -> PathBuf {
    let out = d.join(format!("{name}-{version}.bundle"));
    updraft(
        d,
        &[
            "bundle",
            "create",
            "--name",
            name,
            "--version",
            version,
            "--family",
            family,
            "--hardware",
            "rev-a",
            "--security-version",
            "1",
            "--source-uri",
            "git+https://example.com/fw",
            "--source-commit",
            "7fd1a60b01f91b314f59955a4e4d4e80d8edf11d",
            "--source-date-epoch",
            crate::SDE,
            "--build-key",
            &key("build.key"),
            "--sign-with",
            &key("release-a.key"),
            "--sign-with",
            &key("release-b.key"),
            "--image",
            &format!("swu={}", swu.display()),
            "--out",
            &out.display().to_string(),
        ],
    )
    .ok();
    out
}

#[test]
fn swupdate_takes_part_in_rollouts_unchanged() {
    if !(have("swupdate") && have("openssl") && have("cpio")) {
        return;
    }
    let dir = workspace();
    let d = dir.path();
    let target = d.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let payload: Vec<u8> = (0..150_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let swu2 = make_swu(d, "2.0.0", &payload, &target.join("payload.bin"));
    let swu3 = make_swu(d, "3.0.0", b"release three", &target.join("three.bin"));
    let mut server = serve_with(d, &["--poll-interval-s", "1"]);
    let admin = read_admin_token(d, &mut server);
    for b in [bundle(d, "gw-fw", "2.0.0", "gateway", &swu2), bundle(d, "gw-fw", "3.0.0", "gateway", &swu3)] {
        cli(d, &server, &admin, &["release", "publish", &b.display().to_string()]).ok();
    }
    let created = json(cli(
        d,
        &server,
        &admin,
        &["devices", "create", "gw-1", "--ddi", "--family", "gateway", "--hardware", "rev-a", "--json"],
    ));
    let token = created["deviceToken"].as_str().unwrap().to_owned();
    let plan = d.join("plan.toml");
    std::fs::write(&plan, "[selector]\nfamily = \"gateway\"\n[[waves]]\npercent = 100\n[[gates]]\nkind = \"install\"\nmax_failure_rate = 0.05\n").unwrap();
    let plan = plan.display().to_string();
    cli(d, &server, &admin, &["rollout", "create", &plan, "--release", "gw-fw@2.0.0", "--id", "r1"]).ok();

    // Paused: suricatta polls (and sends its configData) but gets no deployment.
    cli(d, &server, &admin, &["rollout", "pause", "r1"]).ok();
    let mut s = suricatta(d, &server, "gw-1", &token, None);
    s.wait_for(&["configData"]);
    s.wait_for(&["Suricatta awakened"]);
    s.wait_for(&["Suricatta awakened"]);
    assert!(!s.seen.iter().any(|l| l.contains("deploymentBase")), "a link while paused:\n{}", s.seen.join("\n"));
    assert!(!target.join("payload.bin").exists());

    // Resumed: it downloads and installs, then waits to report the test result.
    cli(d, &server, &admin, &["rollout", "resume", "r1"]).ok();
    s.wait_for(&["Please restart SWUpdate to report the test results"]);
    drop(s);
    assert_eq!(std::fs::read(target.join("payload.bin")).unwrap(), payload, "installed byte-identically");
    // "After the reboot": the test passed.
    let mut s = suricatta(d, &server, "gw-1", &token, Some(2));
    s.wait_for(&["deploymentBase/", "/feedback"]);
    drop(s);
    let status = json(cli(d, &server, &admin, &["rollout", "status", "r1", "--json"]));
    assert_eq!(status["perWave"][0]["committed"], 1, "{status}");
    let device = json(cli(d, &server, &admin, &["devices", "show", "gw-1", "--json"]));
    assert_eq!(device["release"], "gw-fw@2.0.0", "{device}");
    assert_eq!(device["protocol"], "ddi");
    let listed = cli(d, &server, &admin, &["devices", "list", "--filter", "protocol=ddi"]).ok().stdout;
    assert!(listed.contains("gw-1") && listed.contains("ddi"), "{listed}");

    // An abort before the download: suricatta acknowledges the cancellation.
    cli(d, &server, &admin, &["rollout", "create", &plan, "--release", "gw-fw@3.0.0", "--id", "r3"]).ok();
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let root = format!("{}/DEFAULT/controller/v1/gw-1", server.url);
    let poll = || -> Value {
        agent
            .get(&root)
            .header("Authorization", &format!("TargetToken {token}"))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    assert!(poll()["_links"]["deploymentBase"].is_object());
    cli(d, &server, &admin, &["rollout", "abort", "r3"]).ok();
    let mut s = suricatta(d, &server, "gw-1", &token, None);
    s.wait_for(&["cancelAction/", "/feedback"]);
    drop(s);
    let history = json(cli(d, &server, &admin, &["devices", "show", "gw-1", "--json"]))["history"].to_string();
    assert!(history.contains("cancellation confirmed"), "{history}");
    assert!(!target.join("three.bin").exists());
    let root_now = poll();
    assert!(
        root_now["_links"]["cancelAction"].is_null() && root_now["_links"]["deploymentBase"].is_null(),
        "{root_now}"
    );

    // Failures halt the rollout through the install gate; a device that
    // joins afterwards never gets a deployment.
    let mut tokens = Vec::new();
    for i in 2..10 {
        let c = json(cli(
            d,
            &server,
            &admin,
            &[
                "devices",
                "create",
                &format!("gw-{i}"),
                "--ddi",
                "--family",
                "gateway",
                "--hardware",
                "rev-a",
                "--release",
                "gw-fw@2.0.0",
                "--json",
            ],
        ));
        tokens.push((format!("gw-{i}"), c["deviceToken"].as_str().unwrap().to_owned()));
    }
    cli(d, &server, &admin, &["rollout", "create", &plan, "--release", "gw-fw@3.0.0", "--id", "r4"]).ok();
    for (id, t) in &tokens {
        let state = json(cli(d, &server, &admin, &["rollout", "status", "r4", "--json"]))["state"]["state"].clone();
        if state != "running" {
            break;
        }
        // Its post-reboot test failed.
        let mut s = suricatta(d, &server, id, t, Some(3));
        s.wait_for(&["deploymentBase/", "/feedback"]);
    }
    let status = json(cli(d, &server, &admin, &["rollout", "status", "r4", "--json"]));
    assert_ne!(status["state"]["state"], "running", "the install gate halts it: {status}");
    let late = json(cli(
        d,
        &server,
        &admin,
        &[
            "devices",
            "create",
            "gw-late",
            "--ddi",
            "--family",
            "gateway",
            "--hardware",
            "rev-a",
            "--release",
            "gw-fw@2.0.0",
            "--json",
        ],
    ));
    let late_token = late["deviceToken"].as_str().unwrap();
    let r: Value = agent
        .get(&format!("{}/DEFAULT/controller/v1/gw-late", server.url))
        .header("Authorization", &format!("TargetToken {late_token}"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert!(r["_links"]["deploymentBase"].is_null(), "{r}");
}
