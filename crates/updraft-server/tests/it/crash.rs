//! Regressions of what a crash, a storm or an older version left behind
//! (the crash-torture test in the CLI's tests kills a real process; these
//! pin each case on its own): state written by an older, non-atomic
//! enrollment or publish, an enrollment whose answer was lost, a blob gone
//! from the store, staged uploads, and contention on SQLite.

use serde_json::json;

use crate::{databases, env, publish};

const PLAN: &str = "[selector]\nfamily = \"sensor\"\n[[waves]]\npercent = 100\n";

fn blob_path(env: &crate::Env, sha: &str) -> std::path::PathBuf {
    match &env.blob_url {
        Some(_) => env.dir.path().join("objects/sha256").join(sha),
        None => env.dir.path().join("blobs/sha256").join(sha),
    }
}

#[test]
fn what_a_crash_left_is_found_and_repaired_at_start_up() {
    for db in databases() {
        let env = env(&db);
        let server = env.start();
        let admin = server.admin.clone();
        let v1 = env.bundle("fw", "1.0.0", 1, 5000);
        let r = publish(&server, &admin, &v1);
        assert_eq!(r.status, 201, "{}", r.body);
        let sha = r.json()["sha256"].as_str().unwrap().to_owned();
        server.enroll("dev-0", "rev-a");
        // What an older server could leave: a device row whose journal
        // entry and audit entry never committed (defect: it was locked out).
        let token = "upd_0000000000000000000000000000000000000000000000000000000000000001";
        let sql = format!(
            "INSERT INTO devices (id, token_hash, family, hardware, region, tags, components, utc_offset_min, enrolled_ms) \
             VALUES ('dev-lost', '{}', 'sensor', 'rev-a', 'eu', '[]', '{{}}', 0, 1)",
            updraft_store::hash_secret(token)
        );
        server.block_on(server.app.as_ref().unwrap().store.execute_raw(&sql)).unwrap();
        drop(server);
        // A blob gone from the store, a staged upload a kill left behind.
        std::fs::remove_file(blob_path(&env, &sha)).unwrap();
        std::fs::write(env.dir.path().join("blobs/tmp/upload-left-by-a-kill"), b"partial").unwrap();
        let found = env.check();
        for f in ["device-not-in-controller dev-lost", "device-not-audited dev-lost", "release-blob-missing fw@1.0.0"] {
            assert!(found.contains(&f.to_owned()), "{db}: {f} not in {found:?}");
        }
        assert!(found.iter().any(|f| f.starts_with("staged-upload")), "{db}: {found:?}");
        assert!(env.dir.path().join("blobs/tmp/upload-left-by-a-kill").exists(), "--check changes nothing");

        // The start repairs what it can; a re-publish of the same bytes restores the blob.
        let server = env.start();
        assert!(!env.dir.path().join("blobs/tmp/upload-left-by-a-kill").exists(), "{db}: staged uploads removed");
        let r = server.get(&format!("/api/v1/artifacts/{sha}"), &admin);
        assert_eq!(r.status, 404, "{db}");
        assert_eq!(publish(&server, &admin, &v1).status, 200, "{db}: identical bytes");
        let r = server.get(&format!("/api/v1/artifacts/{sha}"), &admin);
        assert_eq!(r.status, 200, "{db}: the blob is back");
        // The repaired device takes part in rollouts.
        let r = server.post_json(
            "/api/v1/rollouts",
            Some(&admin),
            json!({"id": "r1", "release": "fw@1.0.0", "plan": PLAN}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json()["selected"], 2, "{db}: both devices are selected: {}", r.body);
        let r = server.post_json("/api/v1/device/check-in", Some(token), json!({}));
        assert_eq!(r.json()["assignment"]["release"], "fw@1.0.0", "{db}: {}", r.body);
        drop(server);
        assert_eq!(env.check(), Vec::<String>::new(), "{db}: consistent after the repair");
    }
}

#[test]
fn an_enrollment_whose_answer_was_lost_is_retried() {
    for db in databases() {
        let env = env(&db);
        let server = env.start();
        let e = server.post_json(
            "/api/v1/enrollment-tokens",
            Some(&server.admin),
            json!({ "uses": 1, "expiresInS": 3600 }),
        );
        let enrollment = e.json()["token"].as_str().unwrap().to_owned();
        let body =
            json!({ "enrollmentToken": enrollment, "deviceId": "dev-1", "family": "sensor", "hardware": "rev-a" });
        let first = server.post_json("/api/v1/device/enroll", None, body.clone());
        assert_eq!(first.status, 201, "{}", first.body);
        // The answer never reached the device: it asks again, with the same (single-use) token.
        let again = server.post_json("/api/v1/device/enroll", None, body.clone());
        assert_eq!(again.status, 201, "{db}: {}", again.body);
        let lost = first.json()["deviceToken"].as_str().unwrap().to_owned();
        let token = again.json()["deviceToken"].as_str().unwrap().to_owned();
        assert_eq!(server.post_json("/api/v1/device/check-in", Some(&lost), json!({})).status, 401, "{db}");
        assert_eq!(server.post_json("/api/v1/device/check-in", Some(&token), json!({})).status, 200, "{db}");
        // Once it has checked in, the id is taken.
        let r = server.post_json("/api/v1/device/enroll", None, body);
        assert_eq!(r.status, 409, "{db}: {}", r.body);
        let audit = server.get("/api/v1/audit?action=device.enroll-retry", &server.admin).json();
        assert_eq!(audit.as_array().unwrap().len(), 1, "{db}: {audit}");
    }
}

#[test]
fn publishes_during_an_enrollment_storm_and_a_rollout_never_answer_500() {
    for db in databases() {
        let env = env(&db);
        let server = env.start();
        let admin = server.admin.clone();
        assert_eq!(publish(&server, &admin, &env.bundle("fw", "1.0.0", 1, 2000)).status, 201);
        let r = server.post_json(
            "/api/v1/rollouts",
            Some(&admin),
            json!({"id": "r1", "release": "fw@1.0.0", "plan": PLAN}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let bundles: Vec<_> = (2..10).map(|i| env.bundle("fw", &format!("1.0.{i}"), i as u8, 200_000)).collect();
        let e =
            server.post_json("/api/v1/enrollment-tokens", Some(&admin), json!({ "uses": 100000, "expiresInS": 3600 }));
        let enrollment = e.json()["token"].as_str().unwrap().to_owned();
        let statuses = std::thread::scope(|s| {
            let storm: Vec<_> = (0..3)
                .map(|t| {
                    let (server, enrollment) = (&server, &enrollment);
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for i in 0..150 {
                            let body = json!({ "enrollmentToken": enrollment, "deviceId": format!("storm-{t}-{i}"),
                                "family": "sensor", "hardware": "rev-a" });
                            let r = server.post_json("/api/v1/device/enroll", None, body);
                            out.push(r.status);
                            if r.status == 201 {
                                let token = r.json()["deviceToken"].as_str().unwrap().to_owned();
                                out.push(server.post_json("/api/v1/device/check-in", Some(&token), json!({})).status);
                            }
                        }
                        out
                    })
                })
                .collect();
            let mut out: Vec<u16> = bundles.iter().map(|b| publish(&server, &admin, b).status).collect();
            assert!(out.iter().all(|s| *s == 201), "{db}: publishes {out:?}");
            for t in storm {
                out.extend(t.join().unwrap());
            }
            out
        });
        assert!(
            statuses.iter().all(|s| *s < 500),
            "{db}: {:?}",
            statuses.iter().filter(|s| **s >= 500).collect::<Vec<_>>()
        );
        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 8 + 450, "{db}");
    }
}
