//! The whole path: publish, enroll, roll out, check in, download, report,
//! status, and a restart that loses nothing.

use serde_json::json;

use crate::{databases, env, publish};

#[test]
fn publish_enroll_roll_out_download_report_restart() {
    for db in databases() {
        let env = env(&db);
        let server = env.start();
        let releaser = server.token("releaser");
        let operator = server.token("operator");
        let viewer = server.token("viewer");

        // Publishing: verified, immutable, idempotent.
        let v1 = env.bundle("fw", "1.0.0", 1, 5000);
        let v2 = env.bundle("fw", "2.0.0", 2, 300_000);
        assert_eq!(publish(&server, &releaser, &v1).status, 201);
        let r = publish(&server, &releaser, &v2);
        assert_eq!(r.status, 201, "{}", r.body);
        let sha = r.json()["sha256"].as_str().unwrap().to_owned();
        assert_eq!(publish(&server, &releaser, &v2).status, 200, "identical bytes again");
        let other = env.bundle("fw", "2.0.0", 3, 1000);
        let r = publish(&server, &releaser, &other);
        assert_eq!(r.status, 409, "{}", r.body);
        assert_eq!(r.json()["error"], "conflict");
        let mut tampered = std::fs::read(&v2).unwrap();
        let n = tampered.len();
        tampered[n - 2000] ^= 1;
        let r = server.call("POST", "/api/v1/releases", Some(&releaser), Some(tampered), &[]);
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.json()["error"], "bundle-rejected");
        assert!(r.json()["message"].as_str().unwrap().contains("has sha256"), "{}", r.body);
        let r = server.get("/api/v1/releases/fw@2.0.0/provenance", &viewer);
        assert_eq!(r.status, 200);
        assert!(r.body.contains("payloadType"));
        assert_eq!(
            server.post_json("/api/v1/channels/beta/releases", Some(&releaser), json!({"release": "fw@2.0.0"})).status,
            201
        );
        assert_eq!(server.get("/api/v1/releases/fw@2.0.0", &viewer).json()["channels"], json!(["beta"]));

        // Devices and a rollout.
        let devices: Vec<String> = (0..4).map(|i| server.enroll(&format!("dev-{i}"), "rev-a")).collect();
        let plan = "[selector]\nfamily = \"sensor\"\n[[waves]]\npercent = 100\n[[gates]]\nkind = \"boot\"\nmax_failure_rate = 0.2\n";
        let r = server.post_json(
            "/api/v1/rollouts",
            Some(&operator),
            json!({"id": "r1", "release": "fw@2.0.0", "plan": plan}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json()["state"]["state"], "running");

        // Check-in: an assignment with a download link.
        let r = server.post_json("/api/v1/device/check-in", Some(&devices[0]), json!({"release": "fw@1.0.0"}));
        assert_eq!(r.status, 200, "{}", r.body);
        let a = &r.json()["assignment"];
        assert_eq!(a["release"], "fw@2.0.0");
        assert_eq!(a["sha256"], sha.as_str());
        let url = a["bundleUrl"].as_str().unwrap().to_owned();

        // Download: whole, then resumed from an offset, with ETag.
        let full = server.call("GET", &url, Some(&devices[0]), None, &[]);
        assert_eq!(full.status, 200);
        assert_eq!(full.bytes.len(), std::fs::metadata(&v2).unwrap().len() as usize);
        let etag = full.header("etag").unwrap().to_owned();
        let part =
            server.call("GET", &url, Some(&devices[0]), None, &[("Range", "bytes=1000-1999"), ("If-Range", &etag)]);
        assert_eq!(part.status, 206);
        assert_eq!(part.header("content-range").unwrap(), format!("bytes 1000-1999/{}", full.bytes.len()));
        assert_eq!(&part.bytes[..], &full.bytes[1000..2000]);
        let tail = server.call("GET", &url, Some(&devices[0]), None, &[("Range", "bytes=-10")]);
        assert_eq!(&tail.bytes[..], &full.bytes[full.bytes.len() - 10..]);
        assert_eq!(server.call("GET", &url, Some(&devices[0]), None, &[("If-None-Match", &etag)]).status, 304);
        assert_eq!(server.call("GET", &url, Some(&devices[0]), None, &[("Range", "bytes=999999999-")]).status, 416);

        // Events: the first device commits, the second reverts.
        for (device, events) in [
            (&devices[0], &["downloaded", "installed", "trial_boot", "committed"][..]),
            (&devices[1], &["downloaded", "installed", "reverted_boot"][..]),
        ] {
            server.post_json("/api/v1/device/check-in", Some(device), json!({"release": "fw@1.0.0"}));
            for e in events {
                let r =
                    server.post_json("/api/v1/device/events", Some(device), json!({"release": "fw@2.0.0", "event": e}));
                assert_eq!(r.status, 204, "{}", r.body);
            }
        }
        let r = server.post_json(
            "/api/v1/device/health",
            Some(&devices[0]),
            json!({"periodS": 3600, "crashes": 0, "metrics": {"battery_mw": 120.0}}),
        );
        assert_eq!(r.status, 204, "{}", r.body);
        let status = server.get("/api/v1/rollouts/r1", &viewer).json();
        assert_eq!(status["perWave"][0]["committed"], 1);
        assert_eq!(status["perWave"][0]["reverted"], 1);
        assert_eq!(server.get("/api/v1/devices/dev-0", &viewer).json()["release"], "fw@2.0.0");

        // Operator commands, refused when they do not fit.
        let r = server.call("POST", "/api/v1/rollouts/r1/pause", Some(&operator), None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let r = server.call("POST", "/api/v1/rollouts/r1/pause", Some(&operator), None, &[]);
        assert_eq!(r.status, 409, "{}", r.body);
        let r = server.post_json("/api/v1/device/check-in", Some(&devices[2]), json!({"release": "fw@1.0.0"}));
        assert_eq!(r.json()["reason"], "rollout_not_running");

        // The audit log has who did what.
        let audit = server.get("/api/v1/audit?limit=1000", &viewer).json();
        let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        for needed in [
            "token.create",
            "release.publish",
            "channel.promote",
            "device.enroll",
            "rollout.create",
            "rollout.start",
            "rollout.pause",
            "rollout.state",
        ] {
            assert!(actions.contains(&needed), "{needed} missing from {actions:?}");
        }
        let before = server.get("/api/v1/rollouts/r1", &viewer).json();
        drop(server);

        // A restart rebuilds everything from the database and the journal.
        let server = env.start();
        let after = server.get("/api/v1/rollouts/r1", &viewer).json();
        assert_eq!(before, after, "rollout status after restart");
        let r = server.call("POST", "/api/v1/rollouts/r1/resume", Some(&operator), None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let r = server.post_json("/api/v1/device/check-in", Some(&devices[2]), json!({"release": "fw@1.0.0"}));
        assert_eq!(r.json()["assignment"]["release"], "fw@2.0.0", "{}", r.body);
        let r = server.post_json("/api/v1/device/check-in", Some(&devices[1]), json!({"release": "fw@1.0.0"}));
        assert_eq!(r.json()["reason"], "failed_before", "{}", r.body);
        let metrics = server.call("GET", "/metrics", None, None, &[]).body;
        assert!(metrics.contains("updraft_check_ins_total"), "{metrics}");
        // The state gauge is one-hot.
        for (state, value) in [("running", 1), ("paused", 0), ("created", 0), ("aborted", 0)] {
            let line = format!("updraft_rollout_state{{rollout=\"r1\",state=\"{state}\"}} {value}");
            assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
        }
    }
}

#[test]
fn an_admin_rotates_the_trust_root() {
    use updraft_bundle::trust::{self, RootParams};
    let env = env("sqlite");
    let server = env.start();
    let releaser = server.token("releaser");
    let new_key = updraft_bundle::PrivateKey::from_ed25519_seed(&[9; 32]).unwrap();
    let params = RootParams {
        release_keys: vec![new_key.public().clone()],
        release_threshold: 1,
        build_keys: vec![env.build_key.public().clone()],
        expires: updraft_types::Timestamp(4_000_000_000),
    };
    // Signed by the new key only: not a valid successor.
    let bad = trust::rotate(&env.trust.root, params.clone(), &[&new_key]).unwrap();
    let r = server.call("POST", "/api/v1/trust-root", Some(&server.admin), Some(bad.to_json()), &[]);
    assert_eq!((r.status, r.json()["error"].as_str().unwrap()), (422, "trust-root-rejected"), "{}", r.body);
    let r = server.call("POST", "/api/v1/trust-root", Some(&releaser), Some(bad.to_json()), &[]);
    assert_eq!(r.status, 403);
    // Signed by the old and the new key: adopted.
    let good = trust::rotate(&env.trust.root, params, &[&env.release_key, &new_key]).unwrap();
    let r = server.call("POST", "/api/v1/trust-root", Some(&server.admin), Some(good.to_json()), &[]);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(server.get("/api/v1/trust-root", &releaser).bytes, good.to_json());
    // Bundles signed by the retired key are refused; by the new key, accepted.
    let old = publish(&server, &releaser, &env.bundle("fw", "3.0.0", 5, 1000));
    assert_eq!(old.status, 422, "{}", old.body);
    let new = publish(&server, &releaser, &env.bundle_signed("fw", "3.0.1", 6, 1000, &new_key));
    assert_eq!(new.status, 201, "{}", new.body);
    // It survives a restart (the stored version extends the pinned one).
    drop(server);
    let server = env.start();
    let r = publish(&server, &releaser, &env.bundle_signed("fw", "3.0.2", 7, 1000, &new_key));
    assert_eq!(r.status, 201, "{}", r.body);
}
