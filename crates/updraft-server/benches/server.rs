//! Check-ins per second and latency with a rollout over 100,000 devices
//! running, artifact download throughput, and the dashboard's device and
//! rollout pages against the API's JSON of the same data, over loopback.
//!
//! `cargo bench -p updraft-server --bench server` (SQLite);
//! `UPDRAFT_BENCH_DATABASE_URL=postgres://... cargo bench ...` adds PostgreSQL.
//! `UPDRAFT_BENCH_DEVICES`, `UPDRAFT_BENCH_SECONDS`, `UPDRAFT_BENCH_CLIENTS` change the load.
//! The reference in the same run is `GET /healthz` with the same clients:
//! the floor of an HTTP round trip on this machine. The check-ins come from
//! the simulator's load generator (`updraft_sim::load`, also behind
//! `updraft simulate --against`).

#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use updraft_bundle::bundle::ImageInput;
use updraft_bundle::trust::{self, RootParams};
use updraft_bundle::{BuildContext, CreateParams, NoProgress, PrivateKey, Signers, Source, Target};
use updraft_store::DeviceRow;
use updraft_types::{SecurityVersion, Timestamp};

fn env_num(k: &str, default: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A 200 whose body was read to the end (so the connection is reused).
fn ok(mut r: ureq::http::Response<ureq::Body>) -> bool {
    r.status() == 200 && r.body_mut().read_to_vec().is_ok()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().new_agent()
}

/// `n` sequential GETs of `path` (with a session cookie or a bearer token):
/// p50 and p99 in ms, and the body's size.
fn timed(
    a: &ureq::Agent,
    base: &str,
    path: &str,
    cookie: Option<&str>,
    token: Option<&str>,
    n: usize,
) -> (f64, f64, usize) {
    let mut ms = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let mut req = a.get(&format!("{base}{path}"));
        if let Some(c) = cookie {
            req = req.header("Cookie", &format!("updraft_session={c}"));
        }
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let t = Instant::now();
        let mut res = req.call().unwrap();
        let body = res.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(res.status().as_u16(), 200, "{path}: {}", String::from_utf8_lossy(&body));
        bytes = body.len();
    }
    ms.sort_by(f64::total_cmp);
    (ms[n / 2], ms[(n * 99 / 100).min(n - 1)], bytes)
}

/// Runs `clients` threads calling `f(agent, i)` for `seconds`; returns (requests/s, p50 ms, p99 ms).
/// One request of a load: the agent and the request number; true if it succeeded.
type Request = Arc<dyn Fn(&ureq::Agent, u64) -> bool + Send + Sync>;

fn load(clients: u64, seconds: u64, f: Request) -> (f64, f64, f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let stop = stop.clone();
            let f = f.clone();
            std::thread::spawn(move || {
                let a = agent();
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if !f(&a, i) {
                        errors += 1;
                    }
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    i += clients;
                }
                (lat, errors)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    (all.len() as f64 / elapsed, p(0.5), p(0.99), errors)
}

fn bench(db_label: &str, database_url: Option<String>) {
    let devices = env_num("UPDRAFT_BENCH_DEVICES", 100_000);
    let seconds = env_num("UPDRAFT_BENCH_SECONDS", 10);
    let clients = env_num("UPDRAFT_BENCH_CLIENTS", 8);
    let dir = tempfile::tempdir().unwrap();
    let database_url = database_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("db.sqlite").display()));
    let release_key = PrivateKey::from_ed25519_seed(&[7; 32]).unwrap();
    let build_key = PrivateKey::from_ed25519_seed(&[8; 32]).unwrap();
    let root = trust::init(
        RootParams {
            release_keys: vec![release_key.public().clone()],
            release_threshold: 1,
            build_keys: vec![build_key.public().clone()],
            expires: Timestamp(4_000_000_000),
        },
        &[&release_key],
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // Devices, imported in bulk.
    let t = Instant::now();
    let tokens: Vec<String> = (0..devices).map(|i| format!("upd_bench{i:08}")).collect();
    runtime.block_on(async {
        let store = updraft_store::Store::open(&database_url).await.unwrap();
        let rows: Vec<(DeviceRow, String)> = (0..devices)
            .map(|i| {
                (
                    DeviceRow {
                        region: ["eu", "us", "ap"][i as usize % 3].into(),
                        channel: Some("stable".into()),
                        release: Some("fw@1.0.0".into()),
                        last_known_good: Some("fw@1.0.0".into()),
                        enrolled_ms: 1,
                        // hawkBit DDI clients: the same devices poll both APIs below.
                        protocol: updraft_store::PROTOCOL_DDI.into(),
                        ..DeviceRow::new(
                            &format!("dev-{i:08}"),
                            "sensor",
                            ["rev-a", "rev-b", "rev-c", "rev-d"][i as usize % 4],
                        )
                    },
                    tokens[i as usize].clone(),
                )
            })
            .collect();
        updraft_server::import_devices(&store, &rows).await.unwrap();
    });
    let import = t.elapsed();
    let t = Instant::now();
    let started = runtime
        .block_on(updraft_server::start(updraft_server::Config {
            database_url: database_url.clone(),
            poll_interval_s: 60,
            // The load is many times what real callers may send.
            rate_limits: updraft_server::RateLimits::unlimited(),
            ..updraft_server::Config::local(dir.path(), root)
        }))
        .unwrap();
    let replay = t.elapsed();
    let base = format!("http://{}", started.addr);
    let admin = started.first_admin_token.clone().unwrap();

    // Two releases (1 MiB... and 256 MiB for the download figure) and a running rollout.
    let make = |version: &str, size: usize| {
        let d = dir.path().join(format!("in-{version}"));
        std::fs::create_dir_all(&d).unwrap();
        let mut img = vec![0u8; size];
        for (i, b) in img.iter_mut().enumerate() {
            *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1];
        }
        std::fs::write(d.join("rootfs.img"), img).unwrap();
        // What a SWUpdate device installs (its DDI artifact): 64 KiB.
        std::fs::write(d.join("update.swu"), vec![7u8; 64 << 10]).unwrap();
        let out = d.join("b.bundle");
        updraft_bundle::create(
            &CreateParams {
                name: "fw".into(),
                version: version.parse().unwrap(),
                security_version: SecurityVersion(1),
                family: "sensor".into(),
                hardware: vec!["rev-a".into(), "rev-b".into(), "rev-c".into(), "rev-d".into()],
                requires: vec![],
                source: Source { uri: "git+https://example.com/fw".into(), commit: "abc".into() },
                created: Timestamp(1_767_225_600),
                images: vec![
                    ImageInput { name: "rootfs".into(), path: d.join("rootfs.img"), target: Target::Slot },
                    ImageInput { name: "swu".into(), path: d.join("update.swu"), target: Target::Slot },
                ],
                sbom: None,
                build: BuildContext { ci: "local".into(), ..Default::default() },
                updraft_version: "bench".into(),
            },
            &Signers { release: vec![&release_key], build: &build_key },
            &out,
            &NoProgress,
        )
        .unwrap();
        out
    };
    let a = agent();
    let big = make("2.0.0", 256 << 20);
    let mut res = a
        .post(&format!("{base}/api/v1/releases"))
        .header("Authorization", &format!("Bearer {admin}"))
        .send(std::fs::read(&big).unwrap())
        .unwrap();
    assert_eq!(res.status().as_u16(), 201, "{}", res.body_mut().read_to_string().unwrap_or_default());
    let rel: serde_json::Value = res.body_mut().read_json().unwrap();
    let sha = rel["sha256"].as_str().unwrap().to_owned();
    let plan = "[selector]\nfamily = \"sensor\"\n[[waves]]\npercent = 1\nsoak = \"1d\"\n[[waves]]\npercent = 100\n[[gates]]\nkind = \"boot\"\nmax_failure_rate = 0.05\n";
    let mut res = a
        .post(&format!("{base}/api/v1/rollouts"))
        .header("Authorization", &format!("Bearer {admin}"))
        .send_json(serde_json::json!({ "id": "bench", "release": "fw@2.0.0", "plan": plan }))
        .unwrap();
    assert_eq!(res.status().as_u16(), 201, "{}", res.body_mut().read_to_string().unwrap_or_default());

    println!("server, {db_label}: {devices} devices (imported in {:.1} s, journal replayed in {:.1} s), rollout running, {clients} clients, {seconds} s each", import.as_secs_f64(), replay.as_secs_f64());
    let healthz = format!("{base}/healthz");
    let (rps, p50, p99, _) = load(clients, seconds, Arc::new(move |a, _| a.get(&healthz).call().is_ok_and(ok)));
    println!("  GET /healthz       {rps:>9.0} /s  p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  (reference: the HTTP floor)");
    // The simulator's load generator: devices check in with their own
    // tokens; the 1% in the first wave get the release and report their
    // install events, so the rollout sees real traffic.
    let devs: Vec<updraft_sim::load::LoadDevice> = tokens
        .iter()
        .map(|t| updraft_sim::load::LoadDevice {
            auth: format!("Bearer {t}"),
            hardware: "rev-a".into(),
            region: "eu".into(),
            release: std::sync::Mutex::new("fw@1.0.0".into()),
        })
        .collect();
    let st = updraft_sim::load::check_ins(&base, &devs, None, seconds, clients as usize);
    let (rps, p50, p99, errors) = (st.check_ins_per_s, st.p50_ms, st.p99_ms, st.errors);
    println!("  device check-in    {rps:>9.0} /s  p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  errors {errors}  (target >= 10,000 /s, p99 < 20 ms)");
    println!("    (updraft_sim::load: {} assignments followed by {} install events)", st.assignments, st.events);
    // The same devices as hawkBit DDI clients: root polls with their TargetTokens
    // (a device in the first wave gets its deploymentBase link: a DDI action is created).
    let polls: Arc<Vec<(String, String)>> = Arc::new(
        (0..devices as usize)
            .map(|i| (format!("{base}/DEFAULT/controller/v1/dev-{i:08}"), format!("TargetToken {}", tokens[i])))
            .collect(),
    );
    let n = polls.len() as u64;
    let (rps, p50, p99, errors) = load(
        clients,
        seconds,
        Arc::new(move |a, i| {
            let (url, auth) = &polls[(i % n) as usize];
            a.get(url).header("Authorization", auth).call().is_ok_and(ok)
        }),
    );
    println!("  DDI root poll      {rps:>9.0} /s  p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  errors {errors}  (target >= 10,000 /s, p99 < 20 ms)");

    // Download: one client, the 256 MiB bundle, and a range from its middle.
    let dl = format!("{base}/api/v1/artifacts/{sha}");
    let t = Instant::now();
    let mut res = a.get(&dl).header("Authorization", &format!("Bearer {admin}")).call().unwrap();
    let mut reader = res.body_mut().with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let k = std::io::Read::read(&mut reader, &mut buf).unwrap();
        if k == 0 {
            break;
        }
        total += k as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  download           {:>9.0} MiB/s ({} MiB, one client; target >= 1 GB/s = 954 MiB/s)",
        total as f64 / secs / 1048576.0,
        total >> 20
    );
    let t = Instant::now();
    let mut res = a
        .get(&dl)
        .header("Authorization", &format!("Bearer {admin}"))
        .header("Range", &format!("bytes={}-{}", total / 2, total / 2 + (1 << 20) - 1))
        .call()
        .unwrap();
    let part = res.body_mut().read_to_vec().unwrap();
    println!(
        "  1 MiB range at the middle: {:.2} ms (status {}, {} bytes)",
        t.elapsed().as_secs_f64() * 1000.0,
        res.status(),
        part.len()
    );

    // The dashboard: a page of 100 devices from the middle of the fleet and
    // the rollout page, against the API's JSON of the same data.
    let res = a
        .post(&format!("{base}/sign-in"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(format!("token={admin}&next=/"))
        .unwrap();
    let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().trim_start_matches("updraft_session=").to_owned();
    let mid = format!("dev-{:08}", devices / 2);
    // Every page loads the stylesheet and the script: its weight includes them.
    let assets: usize =
        ["/assets/app.css", "/assets/app.js"].iter().map(|p| timed(&a, &base, p, None, None, 1).2).sum();
    println!("  page weight = the HTML + the stylesheet and script every page loads ({} KB)", assets / 1024);
    let pages: Vec<(&str, String, Option<String>, &str)> = vec![
        (
            "devices, 100 of all",
            format!("/devices?after={mid}"),
            Some(format!("/api/v1/devices?after={mid}&limit=100")),
            "< 50 ms",
        ),
        (
            "devices, rev-c",
            format!("/devices?hardware=rev-c&after={mid}"),
            Some(format!("/api/v1/devices?filter=hardware%3Drev-c&after={mid}&limit=100")),
            "< 50 ms",
        ),
        (
            "devices, offline",
            format!("/devices?online=false&after={mid}"),
            Some(format!("/api/v1/devices?filter=online%3Dfalse&after={mid}&limit=100")),
            "< 50 ms",
        ),
        (
            "devices, rev-c+offline",
            format!("/devices?hardware=rev-c&online=false&after={mid}"),
            Some(format!("/api/v1/devices?filter=hardware%3Drev-c%2Conline%3Dfalse&after={mid}&limit=100")),
            "-",
        ),
        ("device", format!("/devices/{mid}"), Some(format!("/api/v1/devices/{mid}")), "-"),
        ("rollout", "/rollouts/bench".to_owned(), Some("/api/v1/rollouts/bench".to_owned()), "< 20 ms"),
        ("rollouts", "/rollouts".to_owned(), Some("/api/v1/rollouts".to_owned()), "-"),
        ("overview", "/".to_owned(), None, "-"),
        ("releases", "/releases".to_owned(), Some("/api/v1/releases".to_owned()), "-"),
        ("release", "/releases/fw@2.0.0".to_owned(), Some("/api/v1/releases/fw@2.0.0".to_owned()), "-"),
        ("builds", "/builds".to_owned(), Some("/api/v1/builds".to_owned()), "-"),
        ("audit", "/audit".to_owned(), Some("/api/v1/audit".to_owned()), "-"),
        ("tokens", "/tokens".to_owned(), Some("/api/v1/tokens".to_owned()), "-"),
    ];
    for (what, page, api, target) in pages {
        let (p50, p99, bytes) = timed(&a, &base, &page, Some(&cookie), None, 20);
        let reference = match api {
            Some(api) => {
                let (r50, r99, rbytes) = timed(&a, &base, &api, None, Some(&admin), 20);
                format!("the API's JSON: p50 {r50:.2} ms, p99 {r99:.2} ms, {} KB", rbytes / 1024)
            }
            None => "no API of the same data".to_owned(),
        };
        println!(
            "  page {what:<24} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  weight {:>4} KB   ({reference}; target {target}, < 200 KB)",
            (bytes + assets) / 1024,
        );
    }
    drop(started);
    runtime.shutdown_timeout(Duration::from_secs(5));
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    bench("SQLite", None);
    if let Ok(url) = std::env::var("UPDRAFT_BENCH_DATABASE_URL") {
        // A fresh schema for this run, dropped afterwards.
        let schema = format!("bench_{}", std::process::id());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let admin = rt.block_on(updraft_store::Store::open(&url)).unwrap();
        rt.block_on(admin.execute_raw(&format!("CREATE SCHEMA {schema}"))).unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        bench("PostgreSQL", Some(format!("{url}{sep}options=-csearch_path%3D{schema}")));
        rt.block_on(admin.execute_raw(&format!("DROP SCHEMA {schema} CASCADE"))).unwrap();
    }
}
