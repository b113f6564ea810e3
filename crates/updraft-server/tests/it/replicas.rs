//! Two server processes on one PostgreSQL: both serve, every change made on
//! one is seen on the other, and exactly one leads the periodic work, the
//! other taking over when the leader dies.

use serde_json::json;

use crate::{env, publish};

#[test]
fn two_replicas_share_one_postgresql() {
    let Some(db) = crate::databases().into_iter().find(|d| d != "sqlite") else {
        return; // skipped, with the reason printed by databases()
    };
    let env = env(&db);
    let a = env.start();
    let b = env.start();
    let releaser = a.token("releaser");
    let operator = b.token("operator");
    let viewer = a.token("viewer");

    assert_eq!(publish(&a, &releaser, &env.bundle("fw", "2.0.0", 2, 4000)).status, 201);
    let plan = "[selector]\nfamily = \"sensor\"\n[[waves]]\npercent = 100\nsoak = \"1d\"\n";
    let r = b.post_json("/api/v1/rollouts", Some(&operator), json!({"id": "r1", "release": "fw@2.0.0", "plan": plan}));
    assert_eq!(r.status, 201, "{}", r.body);

    // A device enrolled on A checks in on B and reports on A; both see it.
    let device = a.enroll("d1", "rev-a");
    let r = b.post_json("/api/v1/device/check-in", Some(&device), json!({"release": "fw@1.0.0"}));
    assert_eq!(r.json()["assignment"]["release"], "fw@2.0.0", "{}", r.body);
    for e in ["downloaded", "installed", "trial_boot", "committed"] {
        let r = a.post_json("/api/v1/device/events", Some(&device), json!({"release": "fw@2.0.0", "event": e}));
        assert_eq!(r.status, 204, "{}", r.body);
    }
    let on_a = a.get("/api/v1/rollouts/r1", &viewer).json();
    let on_b = b.get("/api/v1/rollouts/r1", &viewer).json();
    assert_eq!(on_a, on_b);
    assert_eq!(on_b["perWave"][0]["committed"], 1);

    // A command on A, refused as a duplicate on B.
    assert_eq!(a.call("POST", "/api/v1/rollouts/r1/pause", Some(&operator), None, &[]).status, 200);
    let r = b.call("POST", "/api/v1/rollouts/r1/pause", Some(&operator), None, &[]);
    assert_eq!(r.status, 409, "{}", r.body);

    // Exactly one leader.
    let a_leads = a.block_on(a.app.as_ref().unwrap().try_lead());
    let b_leads = b.block_on(b.app.as_ref().unwrap().try_lead());
    assert!(a_leads != b_leads, "a leads: {a_leads}, b leads: {b_leads}");
    let (leader, follower) = if a_leads { (a, b) } else { (b, a) };
    drop(leader);
    // The database releases a dead session's lock as soon as it sees the
    // connection close; give it a bounded number of tries.
    let took_over = (0..100).any(|_| {
        if follower.block_on(follower.app.as_ref().unwrap().try_lead()) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        false
    });
    assert!(took_over, "the follower did not take over");
    let r = follower.call("POST", "/api/v1/rollouts/r1/resume", Some(&operator), None, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}
