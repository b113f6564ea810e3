//! `updraft serve` as a process, driven by the CLI client commands, killed
//! with SIGKILL and restarted: nothing it acknowledged is lost.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{create_args, key, strs, updraft, updraft_with, workspace};

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    /// What it wrote to stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `updraft serve` on a free port and waits for it to say where it listens.
fn serve(dir: &Path) -> Server {
    serve_with(dir, &[])
}

pub(crate) fn serve_with(dir: &Path, extra: &[&str]) -> Server {
    serve_logging(dir, extra, "info")
}

fn serve_logging(dir: &Path, extra: &[&str], log: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_updraft"))
        .args(["serve", "--listen", "127.0.0.1:0", "--trust", "root.json", "--data-dir", "data"])
        .args(extra)
        .current_dir(dir)
        .env("UPDRAFT_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    let mut lines = stderr.lines();
    for line in lines.by_ref() {
        if let Some(rest) = line.unwrap().strip_prefix("updraft serving on ") {
            url = Some(rest.split_whitespace().next().unwrap().to_owned());
            break;
        }
    }
    let url = url.expect("the server printed its address");
    // Keep reading its stderr so that it never writes into a closed pipe.
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    Server { child, url, log }
}

/// The first start writes the admin token to a file (mode 0600) and,
/// off a terminal, prints only the file's path.
pub(crate) fn read_admin_token(dir: &Path, server: &mut Server) -> String {
    let mut line = String::new();
    BufReader::new(server.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let path = dir.join(line.trim());
    assert_eq!(line.trim(), "data/admin-token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

pub(crate) fn cli(dir: &Path, server: &Server, token: &str, args: &[&str]) -> crate::Run {
    let url = server.url.clone();
    let token = token.to_owned();
    updraft_with(dir, args, move |c| {
        c.env("UPDRAFT_SERVER", url).env("UPDRAFT_TOKEN", token).env("UPDRAFT_CLIENT_CONFIG", "/nonexistent");
    })
}

#[test]
fn the_cli_drives_a_server_that_survives_sigkill() {
    let dir = workspace();
    let d = dir.path();
    updraft(d, &strs(&create_args("fw", "fw.bundle", &[key("release-a.key"), key("release-c.key")]))).ok();
    let mut server = serve(d);
    let admin = read_admin_token(d, &mut server);
    assert!(admin.starts_with("upa_"), "{admin:?}");

    // Tokens with roles.
    let releaser =
        cli(d, &server, &admin, &["token", "create", "ci", "--role", "releaser"]).ok().stdout.trim().to_owned();
    let operator =
        cli(d, &server, &admin, &["token", "create", "ops", "--role", "operator"]).ok().stdout.trim().to_owned();
    let run = cli(d, &server, &releaser, &["token", "list"]);
    assert_eq!(run.code, 1, "a releaser cannot list tokens: {}", run.stderr);
    assert!(run.stderr.contains("forbidden"), "{}", run.stderr);

    // Publish (verified), promote, list.
    let run = cli(d, &server, &releaser, &["release", "publish", "fw.bundle", "--channel", "beta", "--json"]).ok();
    let rel: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(rel["id"], "sensor-fw@2.3.1");
    assert_eq!(rel["channels"], serde_json::json!(["beta"]));
    let run = cli(d, &server, &releaser, &["release", "list"]).ok();
    assert!(run.stdout.starts_with("sensor-fw@2.3.1"), "{}", run.stdout);

    // A rollout, paused by hand.
    std::fs::write(
        d.join("plan.toml"),
        "[selector]\nfamily = \"nrf52\"\n[[waves]]\npercent = 10\nsoak = \"1d\"\n[[waves]]\npercent = 100\n",
    )
    .unwrap();
    let run =
        cli(d, &server, &operator, &["rollout", "create", "plan.toml", "--release", "sensor-fw@2.3.1", "--id", "r1"])
            .ok();
    assert!(run.stdout.contains("rollout r1 of sensor-fw@2.3.1: running"), "{}", run.stdout);
    let run = cli(d, &server, &operator, &["rollout", "pause", "r1"]).ok();
    assert!(run.stdout.contains(": paused"), "{}", run.stdout);
    let run = cli(d, &server, &operator, &["rollout", "pause", "r1"]);
    assert_eq!(run.code, 1, "pausing twice is refused: {}", run.stderr);
    // The server's log: a line per operator call with the caller's name,
    // no colours on a pipe, never a secret.
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("route=/api/v1/rollouts/{id}/{command} status=409"), "{log}");
    assert!(log.contains("actor=token:ops"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI codes in a log on a pipe: {log}");
    assert!(!log.contains("upa_") && !log.contains("upd_"), "a secret in the log: {log}");
    let enroll = cli(d, &server, &admin, &["enroll-token", "create", "--uses", "5", "--expires", "1h"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert!(enroll.starts_with("upe_"));

    // SIGKILL, restart: everything acknowledged is there.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = serve(d);
    let run = cli(d, &server, &admin, &["rollout", "status", "r1", "--json"]).ok();
    let status: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status["state"]["state"], "paused");
    let run = cli(d, &server, &operator, &["rollout", "resume", "r1"]).ok();
    assert!(run.stdout.contains(": running"), "{}", run.stdout);
    let run = cli(d, &server, &admin, &["audit", "--json"]).ok();
    let audit: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in [
        "token.create",
        "release.publish",
        "channel.promote",
        "rollout.create",
        "rollout.pause",
        "enrollment-token.create",
        "rollout.resume",
    ] {
        assert!(actions.contains(&a), "{a} missing: {actions:?}");
    }
    // --watch on a pipe: a line per change, and it ends with the rollout.
    cli(d, &server, &operator, &["rollout", "abort", "r1"]).ok();
    let run = cli(d, &server, &operator, &["rollout", "status", "r1", "--watch"]).ok();
    assert!(run.stdout.contains("r1: aborted wave 1/2"), "{}", run.stdout);
    // Unreachable server: exit 2.
    let run = updraft_with(d, &["release", "list"], |c| {
        c.env("UPDRAFT_SERVER", "http://127.0.0.1:9").env("UPDRAFT_TOKEN", "x");
    });
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn simulate_drives_a_real_server_as_a_load_generator() {
    let dir = workspace();
    let d = dir.path();
    updraft(d, &strs(&create_args("fw", "fw.bundle", &[key("release-a.key"), key("release-c.key")]))).ok();
    // A load test: each simulated device checks in far more often than a
    // real one may (2 a second by default).
    let mut server = serve_with(d, &["--device-requests-per-s", "100000"]);
    let admin = read_admin_token(d, &mut server);
    cli(d, &server, &admin, &["release", "publish", "fw.bundle"]).ok();
    std::fs::write(d.join("plan.toml"), "[selector]\nfamily = \"nrf52\"\n[[waves]]\npercent = 100\n").unwrap();
    cli(d, &server, &admin, &["rollout", "create", "plan.toml", "--release", "sensor-fw@2.3.1", "--id", "r1"]).ok();
    std::fs::write(
        d.join("fleet.toml"),
        "family = \"nrf52\"\n[[groups]]\ncount = 30\nhardware = \"rev-c\"\nregion = \"eu\"\n\
         components = { bootloader = \"1.4.2\" }\n",
    )
    .unwrap();
    std::fs::write(d.join("release.toml"), "name = \"sensor-fw\"\nversion = \"2.3.1\"\nbase = \"2.3.0\"\n").unwrap();
    let url = server.url.clone();
    let args = ["simulate", "--against", &url, "--fleet", "fleet.toml", "--release", "release.toml"];
    // docs/simulation.md: the token must be an admin's (it creates the
    // enrollment token); an operator's is refused, and says so.
    let operator = cli(d, &server, &admin, &["token", "create", "load", "--role", "operator", "--json"]).ok();
    let operator: serde_json::Value = serde_json::from_str(&operator.stdout).unwrap();
    let refused = cli(d, &server, operator["token"].as_str().unwrap(), &[&args[..], &["--seconds", "1"]].concat());
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("admin"), "{}", refused.stderr);
    let run = cli(d, &server, &admin, &[&args[..], &["--seconds", "2", "--clients", "2", "--json"]].concat()).ok();
    let r: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(r["devices"], 30);
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["checkIns"].as_u64().unwrap() > 30, "{r}");
    assert_eq!(r["committed"], 30, "every device took the release: {r}");
    let status = cli(d, &server, &admin, &["rollout", "status", "r1", "--json"]).ok();
    let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(s["perWave"][0]["committed"], 30, "{s}");
}

#[test]
fn the_pipeline_publishes_its_bundles_and_promotes_them() {
    if !crate::have("cc") || !crate::have("make") {
        return;
    }
    let dir = workspace();
    let d = dir.path();
    let mut server = serve(d);
    let admin = read_admin_token(d, &mut server);
    let fw = d.join("acme");
    crate::pipeline::copy_example(&fw);
    // Sign with two keys of the server's 2-of-3 trust root; publish to it.
    let spec = std::fs::read_to_string(fw.join("updraft.toml")).unwrap();
    let spec = spec
        .replace(
            "release_keys = [\"keys/release.key\"]",
            &format!("release_keys = [{:?}, {:?}]", key("release-a.key"), key("release-c.key")),
        )
        .replace("build_key = \"keys/build.key\"", &format!("build_key = {:?}", key("build.key")))
        .replace("# server = \"https://updraft.example.com\"", &format!("server = {:?}", server.url))
        .replace("# channel = \"beta\"", "channel = \"beta\"");
    std::fs::write(fw.join("updraft.toml"), spec).unwrap();
    let run = cli(
        &fw,
        &server,
        &admin,
        &["pipeline", "run", "--release-version", "1.4.0", "--source-date-epoch", "1767225600"],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("published acme-fw-sensor@1.4.0"), "{}", run.stdout);
    assert!(run.stdout.contains("published acme-fw-gateway@1.4.0"), "{}", run.stdout);
    let list = cli(d, &server, &admin, &["release", "list", "--json"]).ok();
    assert!(list.stdout.contains("acme-fw-gateway@1.4.0") && list.stdout.contains("beta"), "{}", list.stdout);

    // Build health and the flaky-test history are on the server.
    let get = |path: &str| -> serde_json::Value {
        let out = std::process::Command::new("curl")
            .args(["-sf", "-H", &format!("Authorization: Bearer {admin}"), &format!("{}{path}", server.url)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    if crate::have("curl") {
        let builds = get("/api/v1/builds?project=acme-fw");
        assert_eq!(builds[0]["passed"], true, "{builds}");
        assert_eq!(builds[0]["report"]["gates"][1]["gate"], "tests", "{builds}");
        assert_eq!(builds[0]["report"]["published"].as_array().unwrap().len(), 2, "{builds}");
        let flaky = get("/api/v1/pipelines/acme-fw/flaky");
        let tests = flaky["tests"].as_object().unwrap();
        assert!(tests.keys().any(|k| k.ends_with("radio_link_retry")), "{flaky}");
        assert!(tests.values().any(|h| h["quarantined"] == true), "{flaky}");
    }
}

/// Every secret a run creates (the first admin token, API tokens, an
/// enrollment token, device tokens) is absent from the server's whole log
/// at trace level, and from its stdout.
#[test]
fn no_secret_reaches_the_log_even_at_trace_level() {
    let dir = workspace();
    let d = dir.path();
    let mut server = serve_logging(d, &[], "trace");
    let mut out = String::new();
    BufReader::new(server.child.stdout.take().unwrap()).read_line(&mut out).unwrap();
    let admin = std::fs::read_to_string(d.join(out.trim())).unwrap().trim().to_owned();
    let mut secrets = vec![admin.clone()];
    let ci = cli(d, &server, &admin, &["token", "create", "ci", "--role", "releaser"]).ok().stdout.trim().to_owned();
    secrets.push(ci.clone());
    cli(d, &server, &ci, &["release", "list"]).ok();
    let enroll = cli(d, &server, &admin, &["enroll-token", "create", "--uses", "2", "--expires", "1h"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    secrets.push(enroll.clone());
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    for id in ["meter-1", "meter-2"] {
        let body =
            serde_json::json!({"enrollmentToken": enroll, "deviceId": id, "family": "nrf52", "hardware": "rev-c"});
        let mut r = agent.post(&format!("{}/api/v1/device/enroll", server.url)).send_json(&body).unwrap();
        let v: serde_json::Value = r.body_mut().read_json().unwrap();
        let token = v["deviceToken"].as_str().unwrap().to_owned();
        let r = agent
            .post(&format!("{}/api/v1/device/check-in", server.url))
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(serde_json::json!({}))
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        secrets.push(token);
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("DEBUG sqlx::query") && log.contains("route=/api/v1/device/check-in"),
        "a trace-level log: {log}"
    );
    for s in &secrets {
        // The secret part, without its kind prefix.
        assert!(!log.contains(&s[4..]), "a secret in the trace log: {}...", &s[..8]);
    }
    assert_eq!(out.trim(), "data/admin-token", "stdout off a terminal has the path, not the token");
}
