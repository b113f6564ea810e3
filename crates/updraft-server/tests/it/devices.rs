//! A device's life on the server: enrollment that waits for acceptance,
//! inventory and components from check-ins, reasons in words, failure logs
//! in its history, lists with filters and pages, tags and attributes that
//! plans select on, decommissioning and enrolling again.

use serde_json::json;

use crate::{databases, env, publish};

#[test]
fn a_devices_life_on_the_server() {
    for db in databases() {
        let env = env(&db);
        let server = env.start();
        let admin = server.admin.clone();
        let operator = server.token("operator");
        let viewer = server.token("viewer");
        let releaser = server.token("releaser");
        let v2 = env.bundle_requiring("fw", "2.0.0", 2, 3000, &env.release_key, &["bootloader>=1.4"]);
        assert_eq!(publish(&server, &releaser, &v2).status, 201);

        // A token that requires acceptance: the device waits as pending.
        let e = server.post_json(
            "/api/v1/enrollment-tokens",
            Some(&admin),
            json!({"uses": 3, "expiresInS": 600, "requireAccept": true}),
        );
        assert_eq!(e.json()["requireAccept"], true, "{}", e.body);
        let enroll = |id: &str| {
            server.post_json(
                "/api/v1/device/enroll",
                None,
                json!({"enrollmentToken": e.json()["token"], "deviceId": id, "family": "sensor", "hardware": "rev-a",
                       "release": "fw@1.0.0", "components": {"bootloader": "1.2.0"}}),
            )
        };
        let r = enroll("m-1");
        assert_eq!((r.status, r.json()["status"].clone()), (201, json!("pending")), "{}", r.body);
        let token = r.json()["deviceToken"].as_str().unwrap().to_owned();
        let check_in =
            |token: &str, body: serde_json::Value| server.post_json("/api/v1/device/check-in", Some(token), body);
        let r = check_in(&token, json!({"release": "fw@1.0.0"}));
        assert_eq!(r.json()["reason"], "pending_acceptance", "{}", r.body);
        assert!(r.json()["detail"].as_str().unwrap().contains("updraft devices accept m-1"), "{}", r.body);
        assert_eq!(server.call("POST", "/api/v1/devices/m-1/accept", Some(&viewer), None, &[]).status, 403);
        let r = server.call("POST", "/api/v1/devices/m-1/accept", Some(&operator), None, &[]);
        assert_eq!((r.status, r.json()["status"].clone()), (200, json!("active")), "{}", r.body);

        // A rollout of a release that requires bootloader>=1.4: held back, in words.
        let plan = "[selector]\nfamily = \"sensor\"\n[[waves]]\npercent = 100\n";
        let r = server.post_json(
            "/api/v1/rollouts",
            Some(&operator),
            json!({"id": "life-1", "release": "fw@2.0.0", "plan": plan}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let inventory = json!({"release": "fw@1.0.0", "slot": "A", "bootState": "good", "securityVersion": 1,
                               "agentVersion": "0.1.0", "freeBytes": 1_000_000, "components": {"bootloader": "1.2.0"},
                               "attributes": {"site": "berlin", "modem": "bg96"}});
        let r = check_in(&token, inventory.clone());
        assert_eq!(r.json()["reason"], "held_back", "{}", r.body);
        assert_eq!(r.json()["detail"], "held back: requires bootloader >=1.4 (device has 1.2.0)", "{}", r.body);
        // The rollout's status lists it, with the reason, counted in its wave.
        let st = server.get("/api/v1/rollouts/life-1", &viewer).json();
        assert_eq!(st["perWave"][0]["heldBack"], 1, "{st}");
        assert_eq!(st["heldBack"][0]["device"], "m-1", "{st}");
        assert_eq!(st["heldBack"][0]["reason"], "held back: requires bootloader >=1.4 (device has 1.2.0)");
        // The bootloader is updated: the next check-in's components get it the release.
        let mut newer = inventory.clone();
        newer["components"] = json!({"bootloader": "1.4.2"});
        let r = check_in(&token, newer);
        assert_eq!(r.json()["assignment"]["release"], "fw@2.0.0", "{}", r.body);
        let st = server.get("/api/v1/rollouts/life-1", &viewer).json();
        assert_eq!(st["heldBack"], json!([]), "{st}");
        // A failure with its log tail, kept with the device.
        let log = format!("health check app failed: exit status: 1; output:\n{}", "panic in main loop\n".repeat(10));
        let r = server.post_json(
            "/api/v1/device/events",
            Some(&token),
            json!({"release": "fw@2.0.0", "event": "reverted_health", "detail": log}),
        );
        assert_eq!(r.status, 204, "{}", r.body);
        let d = server.get("/api/v1/devices/m-1", &viewer).json();
        assert_eq!(d["inventory"]["attr.site"], "berlin", "{d}");
        assert_eq!(d["inventory"]["agentVersion"], "0.1.0");
        assert_eq!(d["components"]["bootloader"], "1.4.2");
        assert_eq!(d["online"], true);
        assert!(d["checkIns"].as_i64().unwrap() >= 3, "{d}");
        let kinds: Vec<&str> = d["history"].as_array().unwrap().iter().map(|h| h["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["reverted_health", "assigned", "check_in", "accepted", "enrolled"], "{d}");
        assert!(d["history"][0]["detail"].as_str().unwrap().contains("panic in main loop"));

        // Tags and attributes; plans select on both.
        let r = server.call(
            "PATCH",
            "/api/v1/devices/m-1",
            Some(&operator),
            Some(serde_json::to_vec(&json!({"addTags": ["canary"], "setAttributes": {"building": "b7"}})).unwrap()),
            &[("Content-Type", "application/json")],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            (r.json()["tags"].clone(), r.json()["attributes"].clone()),
            (json!(["canary"]), json!({"building": "b7"}))
        );
        // A plan that selects on the attribute takes this device, and only devices that have it.
        let plan = "[selector]\nfamily = \"sensor\"\ntags = [\"canary\"]\nattributes = { building = \"b7\" }\n[[waves]]\npercent = 100\n";
        let r = server.post_json(
            "/api/v1/rollouts",
            Some(&operator),
            json!({"id": "attr-1", "release": "fw@2.0.0", "plan": plan}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json()["selected"], 1, "{}", r.body);
        let plan = "[selector]\nfamily = \"sensor\"\nattributes = { building = \"b8\" }\n[[waves]]\npercent = 100\n";
        let r = server.post_json(
            "/api/v1/rollouts",
            Some(&operator),
            json!({"id": "attr-2", "release": "fw@2.0.0", "plan": plan}),
        );
        assert_eq!(r.json()["selected"], 0, "{}", r.body);

        // Lists: filters, a total, pages with a cursor.
        let r2 = enroll("m-2");
        assert_eq!(r2.status, 201);
        let page = server.get("/api/v1/devices?limit=1", &viewer).json();
        assert_eq!((page["total"].clone(), page["next"].clone()), (json!(2), json!("m-1")), "{page}");
        let page = server.get("/api/v1/devices?limit=1&after=m-1", &viewer).json();
        assert_eq!(page["devices"][0]["id"], "m-2");
        assert_eq!(page["next"], serde_json::Value::Null);
        let page = server.get("/api/v1/devices?filter=status%3Dpending", &viewer).json();
        assert_eq!((page["total"].clone(), page["devices"][0]["id"].clone()), (json!(1), json!("m-2")), "{page}");
        let page =
            server.get("/api/v1/devices?filter=attr.building%3Db7%2Ctag%3Dcanary%2Conline%3Dtrue", &viewer).json();
        assert_eq!(page["total"], 1, "{page}");
        let page = server.get("/api/v1/devices?filter=inv.attr.modem%3Dbg96", &viewer).json();
        assert_eq!(page["total"], 1, "{page}");
        let r = server.get("/api/v1/devices?filter=colour%3Dred", &viewer);
        assert_eq!(r.status, 400);
        assert!(r.json()["message"].as_str().unwrap().contains("keys: family"), "{}", r.body);

        // Decommissioned: the token stops working, the history stays, the id enrolls again.
        let r = server.call("POST", "/api/v1/devices/m-1/decommission", Some(&operator), None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(check_in(&token, json!({"release": "fw@1.0.0"})).status, 401);
        // Its places in rollouts stop counting: nothing in progress, nothing to go silent.
        let st = server.get("/api/v1/rollouts/attr-1", &viewer).json();
        assert_eq!((st["selected"].clone(), st["inFlight"].clone()), (json!(0), json!(0)), "{st}");
        let again = enroll("m-1");
        assert_eq!(again.status, 201, "{}", again.body);
        let d = server.get("/api/v1/devices/m-1", &viewer).json();
        assert_eq!(d["status"], "pending");
        assert!(d["history"].as_array().unwrap().iter().any(|h| h["kind"] == "decommissioned"), "{d}");
    }
}
