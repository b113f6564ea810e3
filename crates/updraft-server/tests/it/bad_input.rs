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
                Some(br#"{"release":"nope@1","event":"installed"}"#.to_vec()),
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

#[test]
fn the_openapi_document_lists_every_route() {
    let doc = updraft_server::openapi_document();
    assert_eq!(doc["openapi"], "3.1.0");
    for r in updraft_server::ROUTES {
        assert!(doc["paths"][r.path][r.method.to_lowercase()].is_object(), "{} {}", r.method, r.path);
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
