//! Every route with every kind of caller: no token, each role, a device.
//! The table in the server (`ROUTES`) drives it: the router is folded from
//! the table, one layer enforces each entry's access, and the answer every
//! caller must get is derived here from the entry, so a new route is
//! covered without touching this test. The snapshot is the reviewable
//! record of who may do what.

use updraft_proto::Role;
use updraft_server::{Access, ROUTES};

/// What `caller` (None: no token; "device"; a role) must get from a route
/// with `access`: "ok " (past the access check), "401" or "403"; for
/// dashboard pages, "in " (sent to sign in: no session) too. Pages are
/// called with the role's session cookie and CSRF secret.
fn expected(access: Access, caller: &str) -> &'static str {
    match (access, caller) {
        (Access::Public, _) => "ok ",
        (Access::Page(_), "none" | "device") => "in ",
        (Access::Page(needed), role) => {
            if Role::parse(role).expect("a role").allows(needed) {
                "ok "
            } else {
                "403"
            }
        }
        (_, "none") => "401",
        (Access::Any, _) => "ok ",
        (Access::Device, "device") => "ok ",
        (Access::Device, _) => "403",
        (Access::Role(_), "device") => "403",
        (Access::Role(needed), role) => {
            if Role::parse(role).expect("a role").allows(needed) {
                "ok "
            } else {
                "403"
            }
        }
    }
}

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
                let r = if matches!(route.access, Access::Page(_)) {
                    // A page: the browser's session, never the token itself.
                    let session = token.as_deref().filter(|_| *name != "device").map(|t| server.session(t));
                    let cookie = session.as_ref().map(|(c, _)| format!("updraft_session={c}")).unwrap_or_default();
                    let body = session.as_ref().map(|(_, csrf)| format!("csrf={csrf}").into_bytes());
                    let body = if route.method == "POST" { Some(body.unwrap_or_default()) } else { None };
                    server.call(
                        route.method,
                        &path,
                        None,
                        body,
                        &[("Cookie", &cookie), ("Content-Type", "application/x-www-form-urlencoded")],
                    )
                } else {
                    let body = if route.method == "POST" { Some(b"{}".to_vec()) } else { None };
                    server.call(route.method, &path, token.as_deref(), body, &[("Content-Type", "application/json")])
                };
                let to_sign_in =
                    r.status == 303 && r.header("location").is_some_and(|l| l.starts_with("/sign-in?next="));
                let verdict = match r.status {
                    _ if to_sign_in => "in ",
                    401 => "401",
                    403 => "403",
                    _ => "ok ",
                };
                assert_eq!(verdict, expected(route.access, name), "{name} {} {}: {}", route.method, route.path, r.body);
                assert!(
                    !r.body.contains("no such route") && r.status != 405,
                    "{} {} is in the table but not served: {}",
                    route.method,
                    route.path,
                    r.body
                );
                if matches!(r.status, 401 | 403) && !matches!(route.access, Access::Page(_)) {
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
