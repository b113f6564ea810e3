//! The dashboard in a real browser: Debian's `chromium`, driven through
//! `chromedriver` (WebDriver, fantoccini), against `updraft demo --keep`
//! (a real `updraft serve` on loopback with the demo's fleet). Skipped with
//! a printed reason where Chromium is not installed; fails under `CI=true`.
//! Screenshots of every page go to `target/dashboard/` for review.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// A process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `updraft demo --keep`: its server's URL and admin token.
struct Demo {
    _child: Killed,
    _dir: tempfile::TempDir,
    url: String,
    admin: String,
    /// The one-time sign-in link the demo prints (for its admin token).
    link: String,
}

fn start_demo() -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_updraft"))
        .args(["demo", "--keep", "--devices", "40", "--image-mib", "1", "--dir", "kept"])
        .current_dir(dir.path())
        .env("NO_PROGRESS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let export = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("export UPDRAFT_SERVER="))
        .expect("the demo prints its server");
    let link = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("one-time sign-in link (10 minutes): ").map(|(_, u)| u.trim().to_owned()))
        .expect("the demo prints a one-time sign-in link");
    std::thread::spawn(move || for _ in lines {});
    let field =
        |name: &str| export.split_whitespace().find_map(|w| w.strip_prefix(name)).expect("export line").to_owned();
    Demo { url: field("UPDRAFT_SERVER="), admin: field("UPDRAFT_TOKEN="), link, _child: Killed(child), _dir: dir }
}

/// chromedriver on a free port, once it says it listens.
fn start_chromedriver() -> Option<(Killed, u16)> {
    let have = |bin: &str| {
        Command::new("sh").args(["-c", &format!("command -v {bin}")]).output().is_ok_and(|o| o.status.success())
    };
    if !have("chromedriver") || !have("chromium") {
        let reason = "chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: {reason}");
        eprintln!("skipped: {reason}");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines.by_ref().map_while(Result::ok).any(|l| l.contains("started successfully"));
    assert!(started, "chromedriver did not start");
    std::thread::spawn(move || for _ in lines {});
    Some((Killed(child), port))
}

async fn browser(port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1280,1000", format!("--user-data-dir={}", profile.display()),
        ] }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session")
}

/// A JSON call to the server's API with `token`.
fn api(demo: &Demo, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let mut req = ureq::http::Request::builder().method(method).uri(format!("{}{path}", demo.url));
    if !token.is_empty() {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        req = req.header("Content-Type", "application/json");
    }
    let req = req.body(body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default()).unwrap();
    let mut res = agent().run(req).expect("the server answers");
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    assert!(status < 400, "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// An HTTP client that shows every status and follows no redirect.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().new_agent()
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// axe-core's script (`UPDRAFT_AXE_JS`: `.ci/run` fetches a pinned
/// release from the npm registry), or None with a printed reason.
fn axe_script() -> Option<String> {
    match std::env::var("UPDRAFT_AXE_JS").ok().and_then(|p| std::fs::read_to_string(p).ok()) {
        Some(s) => Some(s),
        None => {
            let reason = "UPDRAFT_AXE_JS does not name axe-core's axe.min.js (.ci/run fetches it)";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: {reason}");
            eprintln!("accessibility checks skipped: {reason}");
            None
        }
    }
}

/// A screenshot of the page under `target/dashboard/`, and (with axe-core)
/// no serious or critical accessibility violation on it.
async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
    let Some(axe) = AXE.get_or_init(axe_script) else { return };
    c.execute(axe, vec![]).await.expect("axe-core loads");
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             axe.run(document).then(r => done(r.violations\
               .filter(v => v.impact === 'serious' || v.impact === 'critical')\
               .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))));",
            vec![],
        )
        .await
        .expect("axe-core runs");
    let found: Vec<String> = serde_json::from_value(found).unwrap_or_default();
    assert!(found.is_empty(), "{name}: accessibility violations:\n{}", found.join("\n"));
}

static AXE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
}

async fn sign_in(c: &Client, demo: &Demo, path: &str, token: &str) {
    c.goto(&format!("{}{path}", demo.url)).await.unwrap();
    c.wait().for_element(Locator::Css("form.signin")).await.expect("signed out: to sign-in");
    c.find(Locator::Id("token")).await.unwrap().send_keys(token).await.unwrap();
    c.find(Locator::Css("form.signin button")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Css("form.signout")).await.expect("signed in");
    assert_eq!(c.current_url().await.unwrap().path(), path, "back where sign-in was asked");
}

/// Submits a confirmed action and accepts the confirmation, checking that
/// it names what will happen; waits until the page shows state `then`.
async fn act(c: &Client, command: &str, says: &str, then: &str) {
    c.find(Locator::Css(&format!("button.cmd-{command}"))).await.unwrap().click().await.unwrap();
    let question = c.get_alert_text().await.expect("a confirmation");
    assert!(question.contains(says), "{question}");
    c.accept_alert().await.unwrap();
    c.wait().for_element(Locator::Css(&format!("#live .state-{then}"))).await.expect("the new state shown");
}

/// A form POST with a session cookie, as a forger would send it.
fn post_form(demo: &Demo, path: &str, cookie: &str, body: &str) -> u16 {
    agent()
        .post(&format!("{}{path}", demo.url))
        .header("Cookie", &format!("updraft_session={cookie}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(body)
        .unwrap()
        .status()
        .as_u16()
}

/// Signs in over HTTP (no browser): the session cookie and the page's CSRF secret.
fn session(demo: &Demo, token: &str) -> (String, String) {
    let agent = agent();
    let res = agent
        .post(&format!("{}/sign-in", demo.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(format!("token={token}&next=/"))
        .unwrap();
    assert_eq!(res.status().as_u16(), 303);
    let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let secret = cookie.split(';').next().unwrap().strip_prefix("updraft_session=").unwrap().to_owned();
    let mut page =
        agent.get(&format!("{}/", demo.url)).header("Cookie", &format!("updraft_session={secret}")).call().unwrap();
    let html = page.body_mut().read_to_string().unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    (secret, csrf)
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let Some((_driver, port)) = start_chromedriver() else { return };
    let demo = start_demo();
    let operator =
        api(&demo, "POST", "/api/v1/tokens", &demo.admin, Some(json!({"name": "ops-alice", "role": "operator"})));
    let operator = operator["token"].as_str().unwrap().to_owned();
    let viewer = api(&demo, "POST", "/api/v1/tokens", &demo.admin, Some(json!({"name": "view-bob", "role": "viewer"})));
    let viewer = viewer["token"].as_str().unwrap().to_owned();
    // A rollout to act on and watch: one wave, no gates, for a device the
    // test itself plays.
    let plan = "name = \"live\"\n[selector]\nfamily = \"sensor\"\nhardware = [\"rev-b\"]\n[[waves]]\npercent = 100\nsoak = \"2h\"\n[[gates]]\nkind = \"boot\"\nmax_failure_rate = 0.1\n";
    api(
        &demo,
        "POST",
        "/api/v1/rollouts",
        &demo.admin,
        Some(json!({"id": "live", "release": "demo-fw@1.1.0", "plan": plan})),
    );
    let enrollment =
        api(&demo, "POST", "/api/v1/enrollment-tokens", &demo.admin, Some(json!({"uses": 1, "expiresInS": 600})));
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = browser(port, profile.path()).await;
        // The operator: the demo's halted release, then the live rollout.
        sign_in(&c, &demo, "/rollouts/bad", &operator).await;
        let live = text(&c, "#live").await;
        assert!(live.contains("gate health failed for hardware rev-c"), "{live}");
        assert!(text(&c, "ul.failed").await.contains("reverted"), "failed devices listed");
        let first = c.find(Locator::Css("ul.failed a")).await.unwrap().attr("href").await.unwrap();
        assert!(first.is_some_and(|h| h.starts_with("/devices/sensor-")), "failed devices link to their pages");
        let strata = text(&c, "section[aria-labelledby=strata]").await;
        assert!(strata.contains("rev-c") && strata.contains("Held back"), "waves by hardware and region: {strata}");
        shot(&c, "rollout-halted").await;
        c.goto(&format!("{}/", demo.url)).await.unwrap();
        let overview = text(&c, "main").await;
        assert!(overview.contains("Devices by hardware revision"), "{overview}");
        let failures = text(&c, "section[aria-labelledby=failures]").await;
        assert!(failures.contains("reverted health") && failures.contains("sensor-"), "{failures}");
        assert!(text(&c, "section[aria-labelledby=online] svg").await.contains("online"), "online chart");
        shot(&c, "overview").await;
        c.goto(&format!("{}/rollouts", demo.url)).await.unwrap();
        shot(&c, "rollouts").await;

        c.goto(&format!("{}/rollouts/live", demo.url)).await.unwrap();
        assert!(text(&c, "#live").await.contains("0 updates in progress"));
        // A device joins and checks in: the open page changes without a reload.
        let enrolled = api(&demo, "POST", "/api/v1/device/enroll", "", Some(json!({
            "enrollmentToken": enrollment["token"], "deviceId": "live-0001", "family": "sensor", "hardware": "rev-b",
        })));
        let device = enrolled["deviceToken"].as_str().unwrap().to_owned();
        let answer = api(&demo, "POST", "/api/v1/device/check-in", &device, Some(json!({"release": null, "components": {"bootloader": "1.4.2"}})));
        assert!(answer.to_string().contains("demo-fw@1.1.0"), "{answer}");
        c.wait().for_element(Locator::Css("#live[data-updated]")).await.expect("a live update");
        assert!(text(&c, "#live").await.contains("1 updates in progress"));
        shot(&c, "rollout-live").await;
        act(&c, "pause", "no device is given the release", "paused").await;
        assert!(text(&c, "#live").await.contains("paused"));
        act(&c, "rollback", "last known good release", "rolled_back").await;
        assert!(text(&c, "#live").await.contains("rolled back"));
        assert!(c.find_all(Locator::Css("button.cmd-resume")).await.unwrap().is_empty());
        // The audit log names the operator.
        c.goto(&format!("{}/audit?action=rollout.rollback", demo.url)).await.unwrap();
        let audit = text(&c, "main table").await;
        assert!(audit.contains("token:ops-alice") && audit.contains("live"), "{audit}");
        shot(&c, "audit").await;
        // Attacker-controlled text renders as text.
        let evil = "\"><img src=x onerror=alert(1)>";
        api(&demo, "PATCH", "/api/v1/devices/live-0001", &demo.admin, Some(json!({"setAttributes": {"note": evil}})));
        c.goto(&format!("{}/audit?action=device.change", demo.url)).await.unwrap();
        assert!(text(&c, "main table").await.contains(evil));
        assert!(c.get_alert_text().await.is_err(), "no script ran");
        assert!(c.find_all(Locator::Css("main table img")).await.unwrap().is_empty());
        c.goto(&format!("{}/devices/live-0001", demo.url)).await.unwrap();
        assert!(text(&c, "main").await.contains(evil), "the attribute, as text");
        assert!(c.get_alert_text().await.is_err(), "no script ran");
        assert!(c.find_all(Locator::Css("main img")).await.unwrap().is_empty());
        shot(&c, "device").await;
        // Devices: filters and keyset pages.
        c.goto(&format!("{}/devices?hardware=rev-c", demo.url)).await.unwrap();
        assert!(text(&c, "main").await.contains("20 devices match."));
        shot(&c, "devices").await;
        // Releases: the manifest, signatures and the SBOM, searchable.
        c.goto(&format!("{}/releases", demo.url)).await.unwrap();
        c.find(Locator::LinkText("demo-fw@1.2.0")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css("table.sbom")).await.expect("the release page");
        let release = text(&c, "main").await;
        assert!(release.contains("rootfs") && release.contains("Signatures"), "{release}");
        let signatures = text(&c, "section[aria-labelledby=signatures] table").await;
        assert!(signatures.contains("v1") && signatures.contains("accepted"), "trust-root versions: {signatures}");
        assert!(!c.find_all(Locator::Css("table.sbom tbody tr")).await.unwrap().is_empty(), "SBOM components: {release}");
        shot(&c, "release").await;
        // Release names cannot hold markup (refused when a bundle is made or
        // published); what a link carries into the page is text.
        let url = c.current_url().await.unwrap();
        c.goto(&format!("{url}?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E")).await.unwrap();
        assert!(c.get_alert_text().await.is_err(), "no script ran");
        let q = c.find(Locator::Css("input[name=q]")).await.unwrap().prop("value").await.unwrap();
        assert_eq!(q.as_deref(), Some("<script>alert(1)</script>"), "the search, as text");
        c.find(Locator::Css("form.signout button")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css("form.signin")).await.expect("signed out");
        // A viewer sees no action.
        sign_in(&c, &demo, "/rollouts/bad", &viewer).await;
        assert!(c.find_all(Locator::Css(".actions")).await.unwrap().is_empty());
        c.goto(&format!("{}/builds", demo.url)).await.unwrap();
        shot(&c, "builds").await;
        c.find(Locator::Css("form.signout button")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css("form.signin")).await.expect("signed out");
        // The demo's one-time link signs the admin in, once.
        c.goto(&demo.link).await.unwrap();
        c.wait().for_element(Locator::Css("form.signout")).await.expect("signed in by the link");
        // An admin creates a token; it is shown once.
        c.goto(&format!("{}/tokens", demo.url)).await.unwrap();
        c.find(Locator::Css("form[action='/tokens'] input[name='name']")).await.unwrap().send_keys("from-browser").await.unwrap();
        c.find(Locator::Css("form[action='/tokens'] button")).await.unwrap().click().await.unwrap();
        let secret = c.wait().for_element(Locator::Css("code.secret")).await.unwrap().text().await.unwrap();
        assert!(secret.starts_with("upa_"), "{secret}");
        assert!(text(&c, "main table").await.contains("from-browser"));
        shot(&c, "tokens").await;
        c.find(Locator::Css("form.signout button")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css("form.signin")).await.expect("signed out");
        c.goto(&demo.link).await.unwrap();
        assert!(text(&c, "main").await.contains("used already"), "a link works once");
        c.close().await.unwrap();
    });
    // Forged and tokenless POSTs.
    let (viewer_cookie, viewer_csrf) = session(&demo, &viewer);
    assert_eq!(post_form(&demo, "/rollouts/bad/pause", &viewer_cookie, &format!("csrf={viewer_csrf}")), 403);
    let (op_cookie, _) = session(&demo, &operator);
    assert_eq!(post_form(&demo, "/rollouts/bad/pause", &op_cookie, ""), 403, "no CSRF token");
    assert_eq!(post_form(&demo, "/rollouts/bad/pause", &op_cookie, "csrf=forged"), 403, "a wrong CSRF token");
    assert_eq!(post_form(&demo, "/rollouts/bad/pause", "ses_nothing", "csrf=x"), 303, "signed out: to sign-in");
    // An incomplete form is refused with a page, not the API's JSON.
    let (admin_cookie, admin_csrf) = session(&demo, &demo.admin);
    assert_eq!(
        post_form(&demo, "/tokens", &admin_cookie, &format!("csrf={admin_csrf}")),
        400,
        "a token without a name"
    );
    // Revoking the token ends its sessions.
    let tokens = api(&demo, "GET", "/api/v1/tokens", &demo.admin, None);
    let id = tokens.as_array().unwrap().iter().find(|t| t["name"] == "ops-alice").unwrap()["id"].clone();
    api(&demo, "DELETE", &format!("/api/v1/tokens/{id}"), &demo.admin, None);
    assert_eq!(post_form(&demo, "/sign-out", &op_cookie, "csrf=x"), 303, "the session died with its token");
}
