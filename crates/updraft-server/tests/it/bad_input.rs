//! Bad input gets a clear 4xx with a JSON body, and nothing is stored.

use serde_json::json;

use crate::{databases, env, publish};

/// What was wrong, path, token, body, expected status, expected error code.
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<Vec<u8>>, u16, &'a str);

#[test]
fn bad_requests_are_refused_clearly() {
    for db in databases() {
        let env = env(&db);
        let server = env.start();
        let device = server.enroll("d1", "rev-a");
        let viewer = server.token("viewer");
        let cases: Vec<Case> = vec![
            (
                "malformed JSON",
                "/api/v1/device/check-in",
                Some(&device),
                Some(b"{not json".to_vec()),
                400,
                "bad-request",
            ),
            (
                "unknown field",
                "/api/v1/device/check-in",
                Some(&device),
                Some(br#"{"release":null,"speed":3}"#.to_vec()),
                400,
                "bad-request",
            ),
            (
                "oversized body",
                "/api/v1/device/health",
                Some(&device),
                Some(vec![b' '; 512 * 1024]),
                413,
                "payload-too-large",
            ),
            (
                "wrong device token",
                "/api/v1/device/check-in",
                Some("upd_0000"),
                Some(b"{}".to_vec()),
                401,
                "unauthorized",
            ),
            (
                "event about an unknown release",
                "/api/v1/device/events",
                Some(&device),
                Some(br#"{"release":"nope@1.0.0","event":"installed"}"#.to_vec()),
                422,
                "unknown-release",
            ),
            ("path trick in an id", "/api/v1/devices/..%2F..%2Fetc", Some(&viewer), None, 400, "bad-request"),
            ("bad digest", "/api/v1/artifacts/../../etc/passwd", Some(&viewer), None, 404, "not-found"),
            ("short digest", "/api/v1/artifacts/abc", Some(&viewer), None, 400, "bad-request"),
            ("no such route", "/api/v2/nothing", Some(&viewer), None, 404, "not-found"),
        ];
        for (what, path, token, body, status, code) in cases {
            let method = if body.is_some() { "POST" } else { "GET" };
            let r = server.call(method, path, token, body, &[("Content-Type", "application/json")]);
            assert_eq!(r.status, status, "{what}: {}", r.body);
            if !code.is_empty() {
                assert_eq!(r.json()["error"], code, "{what}: {}", r.body);
            }
        }
        // An enrollment with a used token stores nothing.
        let e =
            server.post_json("/api/v1/enrollment-tokens", Some(&server.admin), json!({"uses": 1, "expiresInS": 60}));
        let token = e.json()["token"].as_str().unwrap().to_owned();
        let body =
            |id: &str| json!({"enrollmentToken": token, "deviceId": id, "family": "sensor", "hardware": "rev-a"});
        assert_eq!(server.post_json("/api/v1/device/enroll", None, body("d2")).status, 201);
        let r = server.post_json("/api/v1/device/enroll", None, body("d3"));
        assert_eq!((r.status, r.json()["error"].as_str().unwrap()), (401, "bad-enrollment-token"));
        assert_eq!(server.get("/api/v1/devices/d3", &viewer).status, 404);
        // A device cannot use the operator API nor another device's data.
        assert_eq!(server.get("/api/v1/devices/d2", &device).status, 403);
        let metrics = server.call("GET", "/metrics", None, None, &[]).body;
        assert!(metrics.contains("updraft_rejected_requests_total{kind=\"bad-request\"}"), "{metrics}");
    }
}

/// What schemathesis (.ci/schemathesis) found, each answered as the
/// OpenAPI document says.
#[test]
fn bodies_are_held_to_the_documented_schemas() {
    let db = databases().remove(0);
    let env = env(&db);
    let server = env.start();
    let device = server.enroll("s1", "rev-a");
    let admin = server.admin.clone();
    let operator = server.token("operator");
    let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let cases: Vec<(&str, &str, &str, &str, String, u16, &str)> = vec![
        // JSON has one number type: 6340.0 is the integer 6340.
        (
            "an integer written 6340.0",
            "POST",
            "/api/v1/enrollment-tokens",
            &admin,
            r#"{"uses": 2.0, "expiresInS": 6340.0}"#.into(),
            201,
            "",
        ),
        (
            "an offset written -491.0",
            "POST",
            "/api/v1/device/check-in",
            &device,
            r#"{"utcOffsetMin": -491.0}"#.into(),
            200,
            "",
        ),
        (
            "a fraction where an integer is due",
            "POST",
            "/api/v1/enrollment-tokens",
            &admin,
            r#"{"uses": 2.5, "expiresInS": 60}"#.into(),
            400,
            "bad-request",
        ),
        // serde would take an array for a struct, its fields by position.
        (
            "an array for an object",
            "POST",
            "/api/v1/device/check-in",
            &device,
            "[null, null]".into(),
            400,
            "bad-request",
        ),
        (
            "a report that is not an object",
            "POST",
            "/api/v1/builds",
            &admin,
            r#"{"project": "p", "commit": "c", "passed": true, "report": [null]}"#.into(),
            422,
            "invalid-field",
        ),
        (
            "a flaky history that is not an object",
            "PUT",
            "/api/v1/pipelines/p/flaky",
            &admin,
            "[1]".into(),
            400,
            "bad-request",
        ),
        (
            "65 tags added at once",
            "PATCH",
            "/api/v1/devices/s1",
            &operator,
            serde_json::json!({"addTags": many}).to_string(),
            422,
            "too-large",
        ),
        (
            "an attribute of 1,025 characters",
            "PATCH",
            "/api/v1/devices/s1",
            &operator,
            serde_json::json!({"setAttributes": {"site": "é".repeat(1025)}}).to_string(),
            422,
            "too-large",
        ),
        (
            "an attribute of 1,024 two-byte characters",
            "PATCH",
            "/api/v1/devices/s1",
            &operator,
            serde_json::json!({"setAttributes": {"site": "é".repeat(1024)}}).to_string(),
            200,
            "",
        ),
        (
            "an empty attribute at check-in",
            "POST",
            "/api/v1/device/check-in",
            &device,
            r#"{"attributes": {"site": ""}}"#.into(),
            422,
            "invalid-field",
        ),
    ];
    for (what, method, path, token, body, status, code) in cases {
        let r =
            server.call(method, path, Some(token), Some(body.into_bytes()), &[("Content-Type", "application/json")]);
        assert_eq!(r.status, status, "{what}: {}", r.body);
        if !code.is_empty() {
            assert_eq!(r.json()["error"], code, "{what}: {}", r.body);
        }
    }
    // The last live admin token cannot be revoked (that would lock every
    // admin out); with a second one, the first can go.
    let tokens = server.get("/api/v1/tokens", &admin).json();
    let id = tokens.as_array().unwrap().iter().find(|t| t["role"] == "admin").unwrap()["id"].to_string();
    let revoke = |token: &str| server.call("DELETE", &format!("/api/v1/tokens/{id}"), Some(token), None, &[]);
    let r = revoke(&admin);
    assert_eq!((r.status, r.json()["error"].as_str()), (409, Some("last-admin-token")), "{}", r.body);
    let second = server.token("admin");
    assert_eq!(revoke(&second).status, 204);
    assert_eq!(server.get("/api/v1/tokens", &admin).status, 401);
}

#[test]
fn the_openapi_document_lists_every_route() {
    let doc = updraft_server::openapi_document();
    assert_eq!(doc["openapi"], "3.1.0");
    for r in updraft_server::ROUTES.iter().filter(|r| !r.is_page()) {
        assert!(doc["paths"][r.path][r.method.to_lowercase()].is_object(), "{} {}", r.method, r.path);
    }
    // Dashboard pages are not API: not in the document.
    for r in updraft_server::ROUTES.iter().filter(|r| r.is_page()) {
        assert!(doc["paths"][r.path][r.method.to_lowercase()].is_null(), "{} {}", r.method, r.path);
    }
}

/// What is asked, method, path, headers, expected status, expected error
/// code (empty: a success, not JSON).
type HttpCase<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);

#[test]
fn ranges_and_conditions_follow_rfc_9110_and_every_error_is_json() {
    let db = databases().remove(0);
    let env = env(&db);
    let server = env.start();
    let admin = server.admin.clone();
    let r = publish(&server, &admin, &env.bundle("fw", "1.0.0", 1, 3000));
    let sha = r.json()["sha256"].as_str().unwrap().to_owned();
    let etag = format!("\"{sha}\"");
    let listed = format!("\"0000\", {etag}");
    let weak = format!("W/{etag}");
    let art = format!("/api/v1/artifacts/{sha}");
    let cases: Vec<HttpCase> = vec![
        ("two ranges: ignored, the whole", "GET", art.clone(), vec![("Range", "bytes=0-0,1-1")], 200, ""),
        ("another unit: ignored", "GET", art.clone(), vec![("Range", "items=0-1")], 200, ""),
        ("an empty range set: ignored", "GET", art.clone(), vec![("Range", "bytes=")], 200, ""),
        ("last before first: ignored", "GET", art.clone(), vec![("Range", "bytes=5-1")], 200, ""),
        ("one range", "GET", art.clone(), vec![("Range", "bytes=0-9")], 206, ""),
        ("past the end", "GET", art.clone(), vec![("Range", "bytes=999999-")], 416, "range-not-satisfiable"),
        ("If-None-Match: *", "GET", art.clone(), vec![("If-None-Match", "*")], 304, ""),
        ("If-None-Match: a list with the tag", "GET", art.clone(), vec![("If-None-Match", &listed)], 304, ""),
        ("If-None-Match: the weak tag", "GET", art.clone(), vec![("If-None-Match", &weak)], 304, ""),
        ("If-None-Match: another tag", "GET", art.clone(), vec![("If-None-Match", "\"0000\"")], 200, ""),
        ("a method the route does not take", "DELETE", "/api/v1/releases".into(), vec![], 405, "method-not-allowed"),
        ("a query that does not parse", "GET", "/api/v1/audit?limit=many".into(), vec![], 400, "bad-request"),
        ("an unknown query key", "GET", "/api/v1/audit?bogus=1".into(), vec![], 400, "bad-request"),
        ("an undecodable path", "GET", "/api/v1/devices/%FF%FE".into(), vec![], 400, "bad-request"),
        ("no such route", "POST", "/nothing/here".into(), vec![], 404, "not-found"),
    ];
    for (what, method, path, headers, status, code) in cases {
        let r = server.call(method, &path, Some(&admin), None, &headers);
        assert_eq!(r.status, status, "{what}: {}", r.body);
        if !code.is_empty() {
            assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
            assert_eq!(r.json()["error"], code, "{what}: {}", r.body);
            assert!(!r.json()["message"].as_str().unwrap().is_empty(), "{what}");
        }
    }
    let r = server.call("GET", &art, Some(&admin), None, &[("Range", "bytes=0-0,1-1")]);
    let whole = server.call("GET", &art, Some(&admin), None, &[]);
    assert_eq!(r.bytes, whole.bytes, "the whole artifact");
    assert_eq!(r.header("content-range"), None);
}

/// Defects of the hostile-input probe, one row each: the field, what was
/// sent, the answer and its code.
#[test]
fn every_device_field_is_validated_and_bounded() {
    let db = databases().remove(0);
    let env = env(&db);
    let server = env.start();
    let e = server.post_json("/api/v1/enrollment-tokens", Some(&server.admin), json!({"uses": 100, "expiresInS": 600}));
    let token = e.json()["token"].as_str().unwrap().to_owned();
    let enroll = |extra: serde_json::Value| {
        let mut body = json!({"enrollmentToken": token, "deviceId": "v1", "family": "sensor", "hardware": "rev-a"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        server.post_json("/api/v1/device/enroll", None, body)
    };
    let many_tags: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
    let cases = [
        ("release as SQL", json!({"release": "x' OR 1=1 --"}), 422, "invalid-field"),
        ("release without a version", json!({"release": "fw"}), 422, "invalid-field"),
        ("channel with a space", json!({"channel": "stable beta"}), 422, "invalid-field"),
        ("a tag with NUL", json!({"tags": ["a\u{0}b"]}), 422, "invalid-field"),
        ("a tag with ESC and CRLF", json!({"tags": ["\u{1b}[31m\r\n"]}), 422, "invalid-field"),
        ("5,000 tags", json!({"tags": many_tags}), 422, "too-large"),
        ("utcOffsetMin 32767", json!({"utcOffsetMin": 32767}), 422, "invalid-field"),
        ("a device id of 200 bytes", json!({"deviceId": "d".repeat(200)}), 422, "too-large"),
        ("a component without a version", json!({"components": {"modem": "new"}}), 422, "invalid-field"),
    ];
    for (what, extra, status, code) in cases {
        let r = enroll(extra);
        assert_eq!((r.status, r.json()["error"].as_str().unwrap_or_default()), (status, code), "{what}: {}", r.body);
    }
    assert_eq!(server.get("/api/v1/devices/v1", &server.admin).status, 404, "nothing was stored");
    // A release the server does not have is reported, never the last known good.
    let r = enroll(json!({"release": "fw@9.9.9"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let device = r.json()["deviceToken"].as_str().unwrap().to_owned();
    let d = server.get("/api/v1/devices/v1", &server.admin).json();
    assert_eq!((d["release"].as_str(), d["lastKnownGood"].as_str()), (Some("fw@9.9.9"), None), "{d}");

    let long_name = "m".repeat(3900);
    let big_detail = "x".repeat(70 * 1024);
    let metrics65: serde_json::Map<String, serde_json::Value> =
        (0..65).map(|i| (format!("m{i}"), json!(1.0))).collect();
    let cases = [
        ("/api/v1/device/health", json!({"periodS": 60, "metrics": {long_name.clone(): 1.0}}), 422, "too-large"),
        ("/api/v1/device/health", json!({"periodS": 60, "metrics": metrics65}), 422, "too-large"),
        ("/api/v1/device/health", json!({"periodS": 60, "metrics": {"bad name": 1.0}}), 422, "invalid-field"),
        ("/api/v1/device/health", json!({"periodS": 0}), 422, "invalid-field"),
        ("/api/v1/device/health", json!({"periodS": 60, "crashes": 4_000_000_000u64}), 422, "invalid-field"),
        (
            "/api/v1/device/events",
            json!({"release": "fw@1.0.0", "event": "failed", "detail": big_detail}),
            422,
            "too-large",
        ),
        ("/api/v1/device/events", json!({"release": "bogus", "event": "failed"}), 422, "invalid-field"),
        ("/api/v1/device/check-in", json!({"release": "x' OR 1=1 --"}), 422, "invalid-field"),
        ("/api/v1/device/check-in", json!({"utcOffsetMin": -3000}), 422, "invalid-field"),
    ];
    for (path, body, status, code) in cases {
        let r = server.post_json(path, Some(&device), body.clone());
        assert_eq!(
            (r.status, r.json()["error"].as_str().unwrap_or_default()),
            (status, code),
            "{path} {body:.80}: {}",
            r.body
        );
    }
}

#[test]
fn a_looping_device_is_slowed_down_with_429_and_retry_after() {
    let db = databases().remove(0);
    let env = env(&db);
    let server = env.start_with(|c| {
        c.rate_limits.device_per_s = 1;
        c.rate_limits.device_burst = 100;
        c.rate_limits.health_per_hour = 5;
    });
    let device = server.enroll("loop-1", "rev-a");
    let other = server.enroll("quiet-1", "rev-a");
    // The hourly allowance of health reports, then 429.
    let health = json!({"periodS": 60, "metrics": {"tempC": 40.0}});
    for _ in 0..5 {
        assert_eq!(server.post_json("/api/v1/device/health", Some(&device), health.clone()).status, 204);
    }
    let r = server.post_json("/api/v1/device/health", Some(&device), health.clone());
    assert_eq!((r.status, r.json()["error"].as_str().unwrap()), (429, "rate-limited"), "{}", r.body);
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((600..=720).contains(&after), "one report per 12 minutes: {after}");
    // The burst of requests, then 429; another device is not affected.
    let statuses: Vec<u16> =
        (0..120).map(|_| server.post_json("/api/v1/device/check-in", Some(&device), json!({})).status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert_eq!(server.post_json("/api/v1/device/check-in", Some(&other), json!({})).status, 200);
    let metrics = server.call("GET", "/metrics", None, None, &[]).body;
    assert!(metrics.contains("updraft_rate_limited_total{kind=\"device\"}"), "{metrics}");
}
