//! Device search as the database answers it (column terms through indexes,
//! online by stored check-in times, the rest checked on the rows read):
//! every filter of a table gives the devices a scan would, page by page,
//! on SQLite and PostgreSQL; the fleet overview counts online devices and
//! the failures of the last day.

use serde_json::json;

use crate::{databases, env, publish, TestServer};

/// (id, family, hardware, region, checks in, tag)
type Member = (&'static str, &'static str, &'static str, &'static str, bool, Option<&'static str>);

const FLEET: &[Member] = &[
    ("a-1", "sensor", "rev-a", "eu", true, None),
    ("a-2", "sensor", "rev-b", "eu", false, None),
    ("a-3", "meter", "rev-a", "us", true, Some("canary")),
    ("a-4", "meter", "rev-b", "us", false, None),
    ("a-5", "sensor", "rev-a", "us", false, Some("canary")),
    ("a-6", "sensor", "rev-b", "us", true, None),
];

/// (filter, the devices it selects)
const SEARCHES: &[(&str, &[&str])] = &[
    ("", &["a-1", "a-2", "a-3", "a-4", "a-5", "a-6"]),
    ("hardware=rev-a", &["a-1", "a-3", "a-5"]),
    ("hardware=rev-a,region=us", &["a-3", "a-5"]),
    ("family=meter", &["a-3", "a-4"]),
    ("family=meter,hardware=rev-c", &[]),
    ("release=fw@1.0.0", &["a-1", "a-2", "a-3", "a-4", "a-5", "a-6"]),
    ("status=active,region=eu", &["a-1", "a-2"]),
    ("online=true", &["a-1", "a-3", "a-6"]),
    ("online=false", &["a-2", "a-4", "a-5"]),
    ("hardware=rev-b,online=false", &["a-2", "a-4"]),
    ("region=us,tag=canary", &["a-3", "a-5"]),
    ("tag=canary,online=true", &["a-3"]),
];

fn enroll(server: &TestServer, id: &str, family: &str, hardware: &str, region: &str) -> String {
    let e = server.post_json("/api/v1/enrollment-tokens", Some(&server.admin), json!({"uses": 1, "expiresInS": 600}));
    let r = server.post_json(
        "/api/v1/device/enroll",
        None,
        json!({"enrollmentToken": e.json()["token"], "deviceId": id, "family": family, "hardware": hardware,
               "region": region, "release": "fw@1.0.0"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["deviceToken"].as_str().unwrap().to_owned()
}

#[test]
fn every_search_gives_what_a_scan_would_page_by_page() {
    for db in databases() {
        let env = env(&db);
        let server = env.start();
        let operator = server.token("operator");
        let viewer = server.token("viewer");
        let releaser = server.token("releaser");
        assert_eq!(publish(&server, &releaser, &env.bundle("fw", "2.0.0", 2, 2000)).status, 201);
        let mut tokens = Vec::new();
        for &(id, family, hardware, region, online, tag) in FLEET {
            let token = enroll(&server, id, family, hardware, region);
            if online {
                let r = server.post_json("/api/v1/device/check-in", Some(&token), json!({"release": "fw@1.0.0"}));
                assert_eq!(r.status, 200, "{}", r.body);
            }
            if let Some(tag) = tag {
                let r = server.call(
                    "PATCH",
                    &format!("/api/v1/devices/{id}"),
                    Some(&operator),
                    Some(json!({"addTags": [tag]}).to_string().into_bytes()),
                    &[("Content-Type", "application/json")],
                );
                assert_eq!(r.status, 200, "{}", r.body);
            }
            tokens.push(token);
        }
        for &(filter, want) in SEARCHES {
            let mut got = Vec::new();
            let mut after = String::new();
            loop {
                let q: String = form_urlencoded::Serializer::new(String::new()).append_pair("filter", filter).finish();
                let page = server.get(&format!("/api/v1/devices?limit=2&after={after}&{q}"), &viewer).json();
                assert_eq!(page["total"], want.len(), "{db} {filter}: {page}");
                got.extend(page["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()));
                match page["next"].as_str() {
                    Some(next) => after = next.to_owned(),
                    None => break,
                }
            }
            assert_eq!(got, want, "{db}: filter {filter:?}");
        }

        // The overview: three online, three never seen; one failure today.
        let r = server.post_json(
            "/api/v1/device/events",
            Some(&tokens[0]),
            json!({"release": "fw@2.0.0", "event": "reverted_boot", "detail": "kernel panic <at> boot"}),
        );
        assert_eq!(r.status, 204, "{}", r.body);
        let (cookie, _) = server.session(&viewer);
        let page = server.call("GET", "/", None, None, &[("Cookie", &format!("updraft_session={cookie}"))]);
        assert_eq!(page.status, 200);
        for want in [
            "<title>online: 3</title>",
            "<title>offline: 0</title>",
            "<title>never checked in: 3</title>",
            "1 failed installs and reverts",
            "href=\"/devices/a-1\"",
            "kernel panic &lt;at&gt; boot",
        ] {
            assert!(page.body.contains(want), "{db}: the overview lacks {want:?}");
        }
    }
}

/// A search on a rare tag among more devices than a request reads: each
/// page says its total is a lower bound and goes on where the reading
/// stopped; following the pages finds every match, in order.
#[test]
fn a_sparse_search_pages_on_within_its_read_budget() {
    let env = env("sqlite");
    let n = updraft_server::SCAN_ROWS * 2 + 500;
    let rare: Vec<String> = [10, n / 2, n - 3].iter().map(|i| format!("dev-{i:06}")).collect();
    let rows: Vec<(updraft_store::DeviceRow, String)> = (0..n)
        .map(|i| {
            let id = format!("dev-{i:06}");
            let mut row = updraft_store::DeviceRow::new(&id, "sensor", "rev-a");
            if rare.contains(&id) {
                row.tags = vec!["rare".into()];
            }
            (row, format!("upd_sparse{i:06}"))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = updraft_store::Store::open(&env.database_url).await.unwrap();
        updraft_server::import_devices(&store, &rows).await.unwrap();
    });
    let server = env.start();
    let mut got = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page = server.get(&format!("/api/v1/devices?filter=tag%3Drare&after={after}"), &server.admin).json();
        pages += 1;
        if pages == 1 {
            assert_eq!(page["totalIsLowerBound"], true, "{page}");
            assert_eq!(page["total"], 1, "within the first rows read: {page}");
        }
        got.extend(page["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(got, rare);
    assert!(pages >= 3, "{pages} pages: the reading stopped and went on");
    // A column term is answered whole by the database.
    let page = server.get("/api/v1/devices?filter=hardware%3Drev-a&limit=1", &server.admin).json();
    assert_eq!((page["total"].clone(), page["totalIsLowerBound"].clone()), (json!(n), json!(false)), "{page}");
}
