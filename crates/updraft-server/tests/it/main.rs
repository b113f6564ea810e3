//! The server over real HTTP on loopback, against SQLite and (when
//! `UPDRAFT_TEST_DATABASE_URL` is set, always in CI) PostgreSQL.

mod bad_input;
mod crash;
mod ddi;
mod devices;
mod flow;
mod https;
mod openapi;
mod overload;
mod replicas;
mod roles;
mod search;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use updraft_bundle::bundle::ImageInput;
use updraft_bundle::trust::{self, RootParams};
use updraft_bundle::{BuildContext, CreateParams, NoProgress, PrivateKey, Signers, Source, Target};
use updraft_types::{SecurityVersion, Timestamp};

/// A server running on its own runtime; dropping it stops the server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub admin: String,
    pub app: Option<std::sync::Arc<updraft_server::App>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.app.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }
}

impl TestServer {
    /// Runs `f` on the server's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().unwrap().block_on(f)
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub database_url: String,
    /// PostgreSQL runs keep blobs in an object store (file:// through
    /// object_store, the code path S3 uses); SQLite runs in the folder.
    pub blob_url: Option<String>,
    pub tls: Option<updraft_server::TlsFiles>,
    pub trust: updraft_bundle::SignedRoot,
    pub release_key: PrivateKey,
    pub build_key: PrivateKey,
}

/// Databases to run against: SQLite, and PostgreSQL when configured.
pub fn databases() -> Vec<String> {
    let mut out = vec!["sqlite".to_owned()];
    match std::env::var("UPDRAFT_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => out.push(u),
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "UPDRAFT_TEST_DATABASE_URL must be set in CI");
            eprintln!("skipped PostgreSQL: UPDRAFT_TEST_DATABASE_URL is not set");
        }
    }
    out
}

/// A fresh environment: data folder, a database (a new PostgreSQL schema), keys, a trust root.
pub fn env(db: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let database_url = if db == "sqlite" {
        format!("sqlite://{}", dir.path().join("db.sqlite").display())
    } else {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let schema =
            format!("s_{}", dir.path().file_name().unwrap().to_string_lossy().replace(['.', '-'], "_").to_lowercase());
        rt.block_on(async {
            sqlx_create_schema(db, &schema).await;
        });
        let sep = if db.contains('?') { '&' } else { '?' };
        format!("{db}{sep}options=-csearch_path%3D{schema}")
    };
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
    let trust = root;
    let blob_url = (db != "sqlite").then(|| format!("file://{}", dir.path().join("objects").display()));
    Env { dir, database_url, blob_url, tls: None, trust, release_key, build_key }
}

async fn sqlx_create_schema(url: &str, schema: &str) {
    let store = updraft_store::Store::open(url).await.expect("PostgreSQL at UPDRAFT_TEST_DATABASE_URL");
    store.execute_raw(&format!("CREATE SCHEMA {schema}")).await.unwrap();
}

impl Env {
    /// The server's configuration in this environment.
    pub fn config(&self) -> updraft_server::Config {
        updraft_server::Config {
            database_url: self.database_url.clone(),
            blob_url: self.blob_url.clone(),
            tls: self.tls.clone(),
            ..updraft_server::Config::local(self.dir.path(), self.trust.clone())
        }
    }

    /// `updraft serve --check`: the findings' codes and subjects.
    pub fn check(&self) -> Vec<String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let report = runtime.block_on(updraft_server::check(&self.config())).unwrap();
        report.findings.iter().map(|f| format!("{} {}", f.code, f.subject)).collect()
    }

    pub fn start(&self) -> TestServer {
        self.start_with(|_| {})
    }

    /// Starts the server with a changed configuration.
    pub fn start_with(&self, tweak: impl FnOnce(&mut updraft_server::Config)) -> TestServer {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut config = self.config();
        tweak(&mut config);
        let started = runtime.block_on(updraft_server::start(config)).unwrap();
        let admin = match started.first_admin_token.clone() {
            Some(t) => {
                std::fs::write(self.dir.path().join("admin-token"), &t).unwrap();
                t
            }
            None => std::fs::read_to_string(self.dir.path().join("admin-token")).unwrap(),
        };
        TestServer { addr: started.addr, admin, app: Some(started.app), runtime: Some(runtime) }
    }

    /// Writes a bundle of `name` `version` with a `size`-byte image; returns its path.
    pub fn bundle(&self, name: &str, version: &str, seed: u8, size: usize) -> PathBuf {
        self.bundle_signed(name, version, seed, size, &self.release_key)
    }

    /// The same, signed by `key`.
    pub fn bundle_signed(&self, name: &str, version: &str, seed: u8, size: usize, key: &PrivateKey) -> PathBuf {
        self.bundle_requiring(name, version, seed, size, key, &[])
    }

    /// A bundle of family `sensor`, hardware `rev-a`, with these images (NAME, bytes).
    pub fn bundle_images(&self, name: &str, version: &str, images: &[(&str, &[u8])]) -> PathBuf {
        let dir = self.dir.path().join(format!("in-{name}-{version}-images"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut inputs = Vec::new();
        for (image, bytes) in images {
            let path = dir.join(format!("{image}.img"));
            std::fs::write(&path, bytes).unwrap();
            inputs.push(ImageInput { name: (*image).into(), path, target: Target::Slot });
        }
        let out = dir.join("out.bundle");
        let params = CreateParams {
            name: name.into(),
            version: version.parse().unwrap(),
            security_version: SecurityVersion(1),
            family: "sensor".into(),
            hardware: vec!["rev-a".into()],
            requires: vec![],
            source: Source { uri: "git+https://example.com/fw".into(), commit: "abc".into() },
            created: Timestamp(1_767_225_600),
            images: inputs,
            sbom: None,
            build: BuildContext { ci: "local".into(), ..Default::default() },
            updraft_version: "test".into(),
        };
        let signers = Signers { release: vec![&self.release_key], build: &self.build_key };
        updraft_bundle::create(&params, &signers, &out, &NoProgress).unwrap();
        out
    }

    /// The same, with requirements (`bootloader>=1.4`).
    pub fn bundle_requiring(
        &self,
        name: &str,
        version: &str,
        seed: u8,
        size: usize,
        key: &PrivateKey,
        requires: &[&str],
    ) -> PathBuf {
        let dir = self.dir.path().join(format!("in-{name}-{version}-{seed}"));
        std::fs::create_dir_all(&dir).unwrap();
        let image: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        std::fs::write(dir.join("rootfs.img"), image).unwrap();
        let out = dir.join("out.bundle");
        let params = CreateParams {
            name: name.into(),
            version: version.parse().unwrap(),
            security_version: SecurityVersion(1),
            family: "sensor".into(),
            hardware: vec!["rev-a".into()],
            requires: requires.iter().map(|r| r.parse().unwrap()).collect(),
            source: Source { uri: "git+https://example.com/fw".into(), commit: "abc".into() },
            created: Timestamp(1_767_225_600),
            images: vec![ImageInput { name: "rootfs".into(), path: dir.join("rootfs.img"), target: Target::Slot }],
            sbom: None,
            build: BuildContext { ci: "local".into(), ..Default::default() },
            updraft_version: "test".into(),
        };
        updraft_bundle::create(&params, &Signers { release: vec![key], build: &self.build_key }, &out, &NoProgress)
            .unwrap();
        out
    }
}

/// A blocking HTTP client that returns 4xx and 5xx as responses.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().new_agent()
}

pub struct Resp {
    pub status: u16,
    pub body: String,
    pub bytes: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let agent = agent();
        let url = self.url(path);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.unwrap_or_default()).unwrap();
        let mut res = agent.run(req).unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect();
        let bytes = res.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap_or_default();
        Resp { status, body: String::from_utf8_lossy(&bytes).into_owned(), bytes, headers }
    }

    pub fn get(&self, path: &str, token: &str) -> Resp {
        self.call("GET", path, Some(token), None, &[])
    }

    pub fn post_json(&self, path: &str, token: Option<&str>, body: serde_json::Value) -> Resp {
        self.call(
            "POST",
            path,
            token,
            Some(serde_json::to_vec(&body).unwrap()),
            &[("Content-Type", "application/json")],
        )
    }

    /// Signs in to the dashboard with `token`: the session cookie's value
    /// and the CSRF secret its forms carry.
    pub fn session(&self, token: &str) -> (String, String) {
        let r = self.call(
            "POST",
            "/sign-in",
            None,
            Some(format!("token={token}&next=/").into_bytes()),
            &[("Content-Type", "application/x-www-form-urlencoded")],
        );
        assert_eq!(r.status, 303, "sign-in: {}", r.body);
        let cookie = r.header("set-cookie").expect("a session cookie");
        let secret = cookie.split(';').next().unwrap().strip_prefix("updraft_session=").unwrap().to_owned();
        let page = self.call("GET", "/", None, None, &[("Cookie", &format!("updraft_session={secret}"))]);
        let csrf = page.body.split("name=\"csrf\" value=\"").nth(1).expect("a form").split('"').next().unwrap();
        (secret, csrf.to_owned())
    }

    /// Creates an API token with `role`.
    pub fn token(&self, role: &str) -> String {
        let r = self.post_json(
            "/api/v1/tokens",
            Some(&self.admin),
            serde_json::json!({ "name": format!("t-{role}"), "role": role }),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["token"].as_str().unwrap().to_owned()
    }

    /// Enrolls a device; returns its token.
    pub fn enroll(&self, id: &str, hardware: &str) -> String {
        let e = self.post_json(
            "/api/v1/enrollment-tokens",
            Some(&self.admin),
            serde_json::json!({ "uses": 1, "expiresInS": 3600 }),
        );
        assert_eq!(e.status, 201, "{}", e.body);
        let r = self.post_json(
            "/api/v1/device/enroll",
            None,
            serde_json::json!({
                "enrollmentToken": e.json()["token"],
                "deviceId": id,
                "family": "sensor",
                "hardware": hardware,
                "region": "eu",
                "release": "fw@1.0.0",
            }),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["deviceToken"].as_str().unwrap().to_owned()
    }
}

pub fn publish(server: &TestServer, token: &str, bundle: &Path) -> Resp {
    server.call(
        "POST",
        "/api/v1/releases",
        Some(token),
        Some(std::fs::read(bundle).unwrap()),
        &[("Content-Type", "application/octet-stream")],
    )
}
