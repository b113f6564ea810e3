//! The hawkBit DDI API at the HTTP level: every endpoint, its auth
//! failures, ETags, ranges, cancellation and feedback, as SWUpdate and
//! rauc-hawkbit-updater use them (the real SWUpdate runs in the CLI's tests).

use serde_json::{json, Value};
use sha1::Digest as _;

use crate::{databases, env, publish, Resp, TestServer};

const PLAN: &str = "[selector]\nfamily = \"sensor\"\n[[waves]]\npercent = 100\n[[gates]]\nkind = \"install\"\nmax_failure_rate = 0.5\n";

fn ddi(
    server: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Resp {
    let auth = format!("TargetToken {token}");
    let mut h: Vec<(&str, &str)> = vec![("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    server.call(method, path, None, body.map(|b| serde_json::to_vec(&b).unwrap()), &h)
}

fn create(server: &TestServer, operator: &str, id: &str) -> String {
    let r = server.post_json(
        "/api/v1/devices",
        Some(operator),
        json!({"deviceId": id, "family": "sensor", "hardware": "rev-a", "protocol": "ddi", "release": "fw@1.0.0"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["protocol"], "ddi");
    r.json()["deviceToken"].as_str().unwrap().to_owned()
}

/// The path of `href` (an absolute URL on this server).
fn path_of(server: &TestServer, href: &str) -> String {
    let base = server.url("");
    href.strip_prefix(&base).unwrap_or_else(|| panic!("{href} is not under {base}")).to_owned()
}

fn feedback(execution: &str, finished: &str, details: &[&str]) -> Value {
    // As SWUpdate sends it: legacy id and time, which the server ignores.
    json!({"id": 1, "time": "20261207T120000", "unknownField": true,
           "status": {"result": {"finished": finished, "progress": {"cnt": 1, "of": 1}}, "execution": execution, "details": details}})
}

#[test]
fn a_ddi_device_polls_downloads_reports_and_is_canceled() {
    for db in databases() {
        let env = env(&db);
        let server = env.start();
        let releaser = server.token("releaser");
        let operator = server.token("operator");
        let viewer = server.token("viewer");
        let swu: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(publish(&server, &releaser, &env.bundle("fw", "1.0.0", 1, 1000)).status, 201);
        let b2 = env.bundle_images("fw", "2.0.0", &[("rootfs", &[1, 2, 3]), ("swu", &swu)]);
        assert_eq!(publish(&server, &releaser, &b2).status, 201);
        let t1 = create(&server, &operator, "gw-1");
        let t2 = create(&server, &operator, "gw-2");
        let root1 = "/DEFAULT/controller/v1/gw-1";

        // Auth: none, another device's token, a gateway token while they are off, an unknown tenant.
        assert_eq!(server.call("GET", root1, None, None, &[]).status, 401);
        assert_eq!(ddi(&server, "GET", root1, &t2, None, &[]).status, 401);
        let r = server.call("GET", root1, None, None, &[("Authorization", "GatewayToken 0123456789abcdef")]);
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(ddi(&server, "GET", "/other/controller/v1/gw-1", &t1, None, &[]).status, 404);

        // The root: tenant without case, HH:MM:SS, configData wanted, no deployment yet.
        let r = ddi(&server, "GET", "/default/controller/v1/gw-1", &t1, None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/hal+json"));
        let root = r.json();
        assert_eq!(root["config"]["polling"]["sleep"], "00:00:30");
        assert!(root["_links"]["deploymentBase"].is_null(), "{root}");
        let config_href = root["_links"]["configData"]["href"].as_str().unwrap().to_owned();
        assert!(config_href.starts_with("http://"), "absolute: {config_href}");
        let r = ddi(&server, "GET", root1, &t1, None, &[]);
        let etag = r.header("etag").unwrap().to_owned();
        assert_eq!(ddi(&server, "GET", root1, &t1, None, &[("If-None-Match", &etag)]).status, 304);

        // configData (SWUpdate's shape): attributes plans select on; the link goes.
        let body = json!({"id": "", "time": "20261207T120000", "mode": "replace",
                          "status": {"result": {"finished": "success"}, "execution": "closed", "details": []},
                          "data": {"hardware": "rev-a", "site": "berlin", "region": "eu"}});
        let r = ddi(&server, "PUT", &path_of(&server, &config_href), &t1, Some(body), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let r = ddi(&server, "PUT", &path_of(&server, &config_href), &t1, Some(json!({"data": {}})), &[]);
        assert_eq!(r.status, 400, "empty data: {}", r.body);
        let root = ddi(&server, "GET", root1, &t1, None, &[]).json();
        assert!(root["_links"]["configData"].is_null(), "{root}");
        let d = server.get("/api/v1/devices/gw-1", &viewer).json();
        assert_eq!(d["protocol"], "ddi");
        assert_eq!(d["attributes"]["site"], "berlin");
        assert_eq!(d["region"], "eu");
        let listed = server.get("/api/v1/devices?filter=protocol%3Dddi", &viewer).json();
        assert_eq!(listed["total"], 2, "{listed}");

        // A release without a DDI image cannot be rolled out to DDI devices.
        let r = server.post_json(
            "/api/v1/rollouts",
            Some(&operator),
            json!({"id": "r0", "release": "fw@1.0.0", "plan": PLAN}),
        );
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.json()["error"], "release-not-ddi");
        assert!(r.json()["message"].as_str().unwrap().contains("--image swu="), "{}", r.body);

        // Paused from the start: the link is withheld, never `update: skip`.
        let r = server.post_json(
            "/api/v1/rollouts",
            Some(&operator),
            json!({"id": "r1", "release": "fw@2.0.0", "plan": PLAN}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(server.call("POST", "/api/v1/rollouts/r1/pause", Some(&operator), None, &[]).status, 200);
        let root = ddi(&server, "GET", root1, &t1, None, &[]).json();
        assert!(root["_links"]["deploymentBase"].is_null(), "paused: {root}");
        assert_eq!(server.call("POST", "/api/v1/rollouts/r1/resume", Some(&operator), None, &[]).status, 200);

        // deploymentBase: an id of digits as a string, one chunk, one artifact.
        let root = ddi(&server, "GET", root1, &t1, None, &[]).json();
        let href = root["_links"]["deploymentBase"]["href"].as_str().expect("a deployment").to_owned();
        let c_first = href.split("?c=").nth(1).unwrap().to_owned();
        let again = ddi(&server, "GET", root1, &t1, None, &[]).json();
        assert_eq!(again["_links"]["deploymentBase"]["href"], href.as_str(), "the same deployment, the same c");
        assert!(href.contains("/DEFAULT/controller/v1/gw-1/deploymentBase/") && href.contains("?c="), "{href}");
        let r = ddi(&server, "GET", &path_of(&server, &href), &t1, None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let dep = r.json();
        let id = dep["id"].as_str().expect("id as a string").to_owned();
        assert!(id.bytes().all(|b| b.is_ascii_digit()) && id.parse::<i32>().is_ok(), "{id}");
        assert_eq!(dep["deployment"]["download"], "forced");
        assert_eq!(dep["deployment"]["update"], "forced");
        let chunks = dep["deployment"]["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0]["version"], "2.0.0");
        let arts = chunks[0]["artifacts"].as_array().unwrap();
        assert_eq!(arts.len(), 1);
        let art = &arts[0];
        assert_eq!(art["filename"], "fw-2.0.0.swu");
        assert_eq!(art["size"], json!(swu.len()), "an integer size");
        assert_eq!(art["hashes"]["sha1"], hex::encode(sha1::Sha1::digest(&swu)));
        assert_eq!(art["hashes"]["md5"], hex::encode(md5::Md5::digest(&swu)));
        assert_eq!(art["hashes"]["sha256"], hex::encode(sha2::Sha256::digest(&swu)));
        let dl = path_of(&server, art["_links"]["download-http"]["href"].as_str().unwrap());
        let md5 = path_of(&server, art["_links"]["md5sum-http"]["href"].as_str().unwrap());

        // Another device cannot see this action, nor its artifact.
        let other = format!("/DEFAULT/controller/v1/gw-2/deploymentBase/{id}");
        assert_eq!(ddi(&server, "GET", &other, &t2, None, &[]).status, 404);
        let other_dl = dl.replace("/gw-1/", "/gw-2/");
        assert_eq!(ddi(&server, "GET", &other_dl, &t2, None, &[]).status, 404);
        assert_eq!(ddi(&server, "GET", &dl, &t2, None, &[]).status, 401, "gw-2's token on gw-1's path");

        // Download: whole, a range, ETag = SHA-1, If-Match, the .MD5SUM file.
        let full = ddi(&server, "GET", &dl, &t1, None, &[]);
        assert_eq!(full.status, 200);
        assert_eq!(full.bytes, swu, "the image's bytes exactly");
        let etag = full.header("etag").unwrap().to_owned();
        assert_eq!(etag, format!("\"{}\"", hex::encode(sha1::Sha1::digest(&swu))));
        assert!(full.header("content-disposition").unwrap().contains("fw-2.0.0.swu"));
        let part = ddi(&server, "GET", &dl, &t1, None, &[("Range", "bytes=100-199")]);
        assert_eq!(part.status, 206);
        assert_eq!(part.bytes, &swu[100..200]);
        assert_eq!(ddi(&server, "GET", &dl, &t1, None, &[("If-None-Match", &etag)]).status, 304);
        assert_eq!(ddi(&server, "GET", &dl, &t1, None, &[("If-Match", "\"nope\"")]).status, 412);
        let sum = ddi(&server, "GET", &md5, &t1, None, &[]);
        assert_eq!(sum.status, 200);
        assert_eq!(sum.body, format!("{}  fw-2.0.0.swu\n", hex::encode(md5::Md5::digest(&swu))));
        let list = ddi(&server, "GET", dl.rsplit_once('/').unwrap().0, &t1, None, &[]);
        assert_eq!(list.json()[0]["filename"], "fw-2.0.0.swu", "{}", list.body);

        // Feedback: under way, installed and testing, then closed with success.
        let fb = format!("/DEFAULT/controller/v1/gw-1/deploymentBase/{id}/feedback");
        for (exec, fin, details) in [
            ("proceeding", "none", &["Downloading"][..]),
            ("proceeding", "none", &["Update Installed, Testing Pending."][..]),
            ("closed", "success", &[][..]),
        ] {
            let r = ddi(&server, "POST", &fb, &t1, Some(feedback(exec, fin, details)), &[]);
            assert_eq!(r.status, 200, "{exec}/{fin}: {}", r.body);
        }
        let r = ddi(&server, "POST", &fb, &t1, Some(feedback("closed", "success", &[])), &[]);
        assert_eq!(r.status, 410, "closed twice: {}", r.body);
        let r = ddi(
            &server,
            "POST",
            &fb,
            &t1,
            Some(json!({"status": {"execution": "finished", "result": {"finished": "none"}}})),
            &[],
        );
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(server.get("/api/v1/devices/gw-1", &viewer).json()["release"], "fw@2.0.0");
        let root = ddi(&server, "GET", root1, &t1, None, &[]).json();
        assert!(root["_links"]["deploymentBase"].is_null(), "{root}");
        let installed = root["_links"]["installedBase"]["href"].as_str().expect("installedBase").to_owned();
        let r = ddi(&server, "GET", &path_of(&server, &installed), &t1, None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["id"], id);
        let status = server.get("/api/v1/rollouts/r1", &viewer).json();
        assert_eq!(status["perWave"][0]["committed"], 1, "{status}");

        // Health samples with the same TargetToken.
        let r = server.call(
            "POST",
            "/api/v1/device/health",
            None,
            Some(serde_json::to_vec(&json!({"periodS": 3600, "crashes": 0})).unwrap()),
            &[("Authorization", &format!("TargetToken {t1}")), ("Content-Type", "application/json")],
        );
        assert_eq!(r.status, 204, "{}", r.body);

        // An abort before gw-2's download: offered as cancelAction, which it confirms.
        let root2 = "/DEFAULT/controller/v1/gw-2";
        let root = ddi(&server, "GET", root2, &t2, None, &[]).json();
        assert!(root["_links"]["deploymentBase"].is_object(), "{root}");
        assert_eq!(server.call("POST", "/api/v1/rollouts/r1/abort", Some(&operator), None, &[]).status, 200);
        let root = ddi(&server, "GET", root2, &t2, None, &[]).json();
        assert!(root["_links"]["deploymentBase"].is_null(), "{root}");
        let cancel = root["_links"]["cancelAction"]["href"].as_str().expect("cancelAction").to_owned();
        assert!(!cancel.contains('?'), "{cancel}");
        let r = ddi(&server, "GET", &path_of(&server, &cancel), &t2, None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let stop = r.json()["cancelAction"]["stopId"].as_str().unwrap().to_owned();
        let dep = format!("/DEFAULT/controller/v1/gw-2/deploymentBase/{stop}");
        assert_eq!(ddi(&server, "GET", &dep, &t2, None, &[]).status, 404, "no deployment while canceling");
        let r = ddi(
            &server,
            "POST",
            &format!("{}/feedback", path_of(&server, &cancel)),
            &t2,
            Some(feedback("closed", "success", &["Action canceled."])),
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let root = ddi(&server, "GET", root2, &t2, None, &[]).json();
        assert!(root["_links"]["cancelAction"].is_null() && root["_links"]["deploymentBase"].is_null(), "{root}");

        // A rollback of a release gw-1 committed: a new action assigning the one before.
        let b3 = env.bundle_images("fw", "3.0.0", &[("swu", b"release three")]);
        assert_eq!(publish(&server, &releaser, &b3).status, 201);
        let r = server.post_json(
            "/api/v1/rollouts",
            Some(&operator),
            json!({"id": "r3", "release": "fw@3.0.0", "plan": PLAN}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let root = ddi(&server, "GET", root1, &t1, None, &[]).json();
        let href = root["_links"]["deploymentBase"]["href"].as_str().expect("fw@3.0.0 offered").to_owned();
        assert_ne!(href.split("?c=").nth(1).unwrap(), c_first, "another deployment, another c");
        let dep = ddi(&server, "GET", &path_of(&server, &href), &t1, None, &[]).json();
        assert_eq!(dep["deployment"]["chunks"][0]["version"], "3.0.0");
        let id3 = dep["id"].as_str().unwrap().to_owned();
        let fb3 = format!("/DEFAULT/controller/v1/gw-1/deploymentBase/{id3}/feedback");
        assert_eq!(ddi(&server, "POST", &fb3, &t1, Some(feedback("closed", "success", &[])), &[]).status, 200);
        assert_eq!(server.call("POST", "/api/v1/rollouts/r3/rollback", Some(&operator), None, &[]).status, 200);
        let root = ddi(&server, "GET", root1, &t1, None, &[]).json();
        let href = root["_links"]["deploymentBase"]["href"].as_str().expect("the rollback's action").to_owned();
        let dep = ddi(&server, "GET", &path_of(&server, &href), &t1, None, &[]).json();
        assert_eq!(dep["deployment"]["chunks"][0]["version"], "2.0.0", "{dep}");
        assert_ne!(dep["id"], id3.as_str());

        // The audit log and the history name what happened.
        let audit = server.get("/api/v1/audit?limit=1000", &viewer).json();
        let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        for needed in ["device.create", "device.ddi-config"] {
            assert!(actions.contains(&needed), "{needed} missing from {actions:?}");
        }
        let history = server.get("/api/v1/devices/gw-2", &viewer).json()["history"].to_string();
        assert!(history.contains("cancellation confirmed"), "{history}");
    }
}

#[test]
fn a_failed_ddi_install_counts_in_the_install_gate_and_gateway_tokens_register() {
    let env = env("sqlite");
    let server = env.start_with(|c| {
        c.ddi.gateway_token = Some("gateway-key-0123456789".into());
        c.ddi.auto_register_family = Some("sensor".into());
        c.ddi.tenant = "acme".into();
    });
    let releaser = server.token("releaser");
    let operator = server.token("operator");
    let viewer = server.token("viewer");
    let b2 = env.bundle_images("fw", "2.0.0", &[("raucb", b"a rauc bundle")]);
    assert_eq!(publish(&server, &releaser, &b2).status, 201);
    let gw = |method: &str, path: &str, body: Option<Value>| {
        server.call(
            method,
            path,
            None,
            body.map(|b| serde_json::to_vec(&b).unwrap()),
            &[("Authorization", "GatewayToken gateway-key-0123456789"), ("Content-Type", "application/json")],
        )
    };
    assert_eq!(gw("GET", "/ACME/controller/v1/bad%20id", None).status, 400);
    // Unknown devices register through the gateway token; configData names their hardware.
    for i in 0..8 {
        let root = format!("/acme/controller/v1/rauc-{i}");
        assert_eq!(gw("GET", &root, None).status, 200);
        // rauc-hawkbit-updater's configData: no mode.
        let body = json!({"time": "20261207T120000", "status": {"result": {"finished": "success"}, "execution": "closed"},
                          "data": {"hardware": "rev-a"}});
        assert_eq!(gw("PUT", &format!("{root}/configData"), Some(body)).status, 200);
    }
    let d = server.get("/api/v1/devices/rauc-0", &viewer).json();
    assert_eq!((d["protocol"].as_str(), d["hardware"].as_str()), (Some("ddi"), Some("rev-a")), "{d}");
    let plan = PLAN.replace("0.5", "0.05");
    let r =
        server.post_json("/api/v1/rollouts", Some(&operator), json!({"id": "r1", "release": "fw@2.0.0", "plan": plan}));
    assert_eq!(r.status, 201, "{}", r.body);
    // Each installs and fails: the install gate halts the rollout.
    for i in 0..8 {
        let root = format!("/acme/controller/v1/rauc-{i}");
        let r = gw("GET", &root, None).json();
        let Some(href) = r["_links"]["deploymentBase"]["href"].as_str() else { continue };
        let dep = gw("GET", &path_of(&server, href), None).json();
        let art = &dep["deployment"]["chunks"][0]["artifacts"][0];
        assert_eq!(art["filename"], "fw-2.0.0.raucb");
        let id = dep["id"].as_str().unwrap();
        let fb = format!("{root}/deploymentBase/{id}/feedback");
        assert_eq!(
            gw("POST", &fb, Some(feedback("closed", "failure", &["Installation failed: bad signature"]))).status,
            200
        );
    }
    let status = server.get("/api/v1/rollouts/r1", &viewer).json();
    let state = status["state"]["state"].as_str().unwrap();
    assert!(state == "paused" || state == "rolled_back" || state == "aborted", "halted: {status}");
    let history = server.get("/api/v1/devices/rauc-0", &viewer).json()["history"].to_string();
    assert!(history.contains("bad signature"), "the failure log is kept: {history}");
}

#[test]
fn polling_sleep_is_hh_mm_ss_below_a_day() {
    assert_eq!(updraft_server::ddi::sleep_text(30), "00:00:30");
    assert_eq!(updraft_server::ddi::sleep_text(3661), "01:01:01");
    assert_eq!(updraft_server::ddi::sleep_text(10 * 86_400), "23:59:59");
    assert_eq!(updraft_server::ddi::sleep_text(0), "00:00:01");
}
