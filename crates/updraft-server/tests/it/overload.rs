//! No client can starve the server: thousands of slowloris connections
//! (a request head that never ends) while `/healthz` and a device's
//! check-in are still answered, and a clear 503 when every connection is
//! busy serving.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::json;

use crate::{databases, env, publish};

#[test]
fn slow_clients_cannot_use_up_the_connections() {
    let db = databases().remove(0);
    let env = env(&db);
    let server = env.start_with(|c| c.max_connections = 300);
    let device = server.enroll("dev-1", "rev-a");
    // 3,000 connections that send half a request head and then nothing.
    let mut slow = Vec::new();
    for _ in 0..3000 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: updraft\r\nX-Slow: ").unwrap();
        slow.push(s);
    }
    let r = server.call("GET", "/healthz", None, None, &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = server.post_json("/api/v1/device/check-in", Some(&device), json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let metrics = server.call("GET", "/metrics", None, None, &[]).body;
    let evicted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("updraft_connections_evicted_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(evicted >= 2700.0, "the oldest slow connections made way: {evicted}\n{metrics}");
    drop(slow);
}

#[test]
fn every_connection_busy_gets_a_503_with_the_json_error_body() {
    let db = databases().remove(0);
    let env = env(&db);
    let server = env.start_with(|c| c.max_connections = 20);
    let big = env.bundle("fw", "1.0.0", 1, 16 << 20);
    let r = publish(&server, &server.admin, &big);
    assert_eq!(r.status, 201, "{}", r.body);
    let sha = r.json()["sha256"].as_str().unwrap().to_owned();
    // 20 downloads that are never read: each connection is serving.
    let mut busy = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        let head = format!(
            "GET /api/v1/artifacts/{sha} HTTP/1.1\r\nHost: updraft\r\nAuthorization: Bearer {}\r\n\r\n",
            server.admin
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut first = [0u8; 12];
        s.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        busy.push(s);
    }
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(
        answer.ends_with(r#""message":"the server has as many connections as it takes; hint: retry after a second"}"#),
        "{answer}"
    );
    drop(busy);
}
