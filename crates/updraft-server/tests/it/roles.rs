//! Every route with every kind of caller: no token, each role, a device.
//! The table in the server (`ROUTES`) drives it, so a new route is covered
//! without touching this test.

use updraft_server::ROUTES;

use crate::{databases, env};

#[test]
fn every_route_checks_its_role() {
    for db in databases() {
        let env = env(&db);
        let server = env.start();
        let device = server.enroll("role-device", "rev-a");
        let mut callers: Vec<(&str, Option<String>)> = vec![("none", None), ("device", Some(device))];
        for role in ["viewer", "releaser", "operator", "admin"] {
            callers.push((role, Some(server.token(role))));
        }
        let mut report = String::new();
        for route in ROUTES {
            let path = route
                .path
                .replace("{sha256}", &"0".repeat(64))
                .replace("{id}", "x")
                .replace("{file}", "manifest")
                .replace("{channel}", "beta")
                .replace("{command}", "pause");
            let mut line = format!("{:6} {:40}", route.method, route.path);
            for (name, token) in &callers {
                let body = if route.method == "POST" { Some(b"{}".to_vec()) } else { None };
                let r =
                    server.call(route.method, &path, token.as_deref(), body, &[("Content-Type", "application/json")]);
                let verdict = match r.status {
                    401 => "401",
                    403 => "403",
                    _ => "ok ",
                };
                if matches!(r.status, 401 | 403) {
                    let v = r.json();
                    assert!(v["error"].is_string() && v["message"].is_string(), "{}: {}", route.path, r.body);
                }
                line.push_str(&format!(" {name}={verdict}"));
            }
            report.push_str(line.trim_end());
            report.push('\n');
        }
        expect_test::expect_file!["snapshots/roles.txt"].assert_eq(&report);
    }
}
