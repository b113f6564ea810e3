//! The fleet part of `updraft demo`: the real server on embedded defaults
//! (SQLite and a blob folder in the demo folder, loopback), three signed
//! releases, and virtual devices that each run the real device agent (its
//! core and shell, real HTTP, file-backed slots, the file bootloader model)
//! through a good rollout to 100% and a bad one the health gates stop and
//! roll back on their own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::client::{Client, ClientArgs};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::Read as _;
use updraft_agent::bootloader::{Bootloader, FileModel};
use updraft_agent::config::Config as AgentConfig;
use updraft_agent::shell::{Shell, Stop};

use updraft_agent_core::{Journal, Slot};
use updraft_bundle::bundle::ImageInput;
use updraft_bundle::trust::SignedRoot;
use updraft_bundle::{BuildContext, CreateParams, NoProgress, PrivateKey, Signers, Source, Target};
use updraft_types::{SecurityVersion, Timestamp};

/// The health gate halts a release failing on one hardware revision within
/// the first wave; a good one passes it and goes to everyone.
const PLAN: &str = r#"
name = "demo: 25% then everyone"
on_failure = "rollback"
[selector]
family = "sensor"
[[waves]]
percent = 25
min_devices = 20
[[waves]]
percent = 100
[[gates]]
kind = "install"
max_failure_rate = 0.2
[[gates]]
kind = "health"
max_failure_rate = 0.2
"#;

const VERSIONS: [&str; 3] = ["1.0.0", "1.1.0", "1.2.0"];
/// How long the demo waits for a rollout to settle before it gives up.
const PATIENCE: Duration = Duration::from_secs(180);
/// The virtual fleet's check-in interval while nothing changes (the server
/// evaluates gates on its own once a second).
const IDLE_POLL: Duration = Duration::from_millis(250);

pub struct Keys<'a> {
    pub release: [&'a PrivateKey; 2],
    pub build: &'a PrivateKey,
}

/// What happened, for the report.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetOutcome {
    pub url: String,
    pub devices: usize,
    pub good_rounds: u32,
    pub good_state: String,
    pub good_committed: usize,
    pub bad_rounds: u32,
    pub bad_state: String,
    pub bad_reason: String,
    /// Devices that installed the bad release and went back on their own (health check).
    pub bad_reverted: usize,
    /// Devices that committed the bad release (the healthy revision) and were given the good one back.
    pub bad_rolled_back: usize,
    pub bad_never_offered: usize,
    pub on_good_at_end: usize,
    pub seconds: f64,
}

/// A running demo server, and an admin client of it.
pub struct Lab {
    runtime: Option<tokio::runtime::Runtime>,
    pub url: String,
    pub admin: String,
    client: Client,
}

impl Lab {
    /// A one-time dashboard sign-in link for the admin token (10 minutes).
    pub fn sign_in_link(&self) -> anyhow::Result<String> {
        let r = self.client.post("/api/v1/sign-in-links", &serde_json::json!({}))?;
        let path = r["path"].as_str().context("the server answered no sign-in link")?;
        Ok(format!("{}{path}", self.url))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Lab {
    /// The rollout's state name and reason.
    fn state(&self, id: &str) -> anyhow::Result<(String, String)> {
        let s = self.client.get(&format!("/api/v1/rollouts/{id}"))?;
        let st = &s["state"];
        let name = st["state"].as_str().or(st.as_str()).unwrap_or("unknown").to_owned();
        Ok((name, st["reason"].as_str().unwrap_or_default().to_owned()))
    }
}

struct Device {
    config: PathBuf,
    /// The agent's journal (`data_dir/journal.json`).
    journal: PathBuf,
    boot: PathBuf,
    slots: [PathBuf; 2],
    hardware: String,
}

impl Device {
    /// What the booted slot runs (the version marker at the start of the image).
    fn running(&self) -> anyhow::Result<String> {
        // After a boot the primary slot is the one that booted (no record yet: slot A).
        let primary = FileModel { path: self.boot.clone() }.read()?.map_or(Slot::A, |r| r.primary);
        // The version marker is at the start of the image: read only that.
        let mut head = Vec::with_capacity(32);
        std::fs::File::open(&self.slots[primary.index()])?.take(32).read_to_end(&mut head)?;
        Ok(VERSIONS.iter().find(|v| head.starts_with(marker(v).as_bytes())).map_or("?", |v| v).to_owned())
    }

    /// One round: check in and follow the update through its reboots.
    fn round(&self) -> anyhow::Result<()> {
        for _ in 0..6 {
            // The bad release fails its health check on rev-c only.
            let healthy = !(self.hardware == "rev-c" && self.running()? == "1.2.0");
            let mut shell = Shell::start(AgentConfig::load(&self.config)?)?;
            shell.simulate_reboot = true;
            shell.force_health(healthy);
            match shell.run(true)? {
                Stop::Reboot => {
                    FileModel { path: self.boot.clone() }.boot()?;
                }
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// The release the agent's journal says is installed (the factory
    /// release before the first update). Reads the journal file alone: a
    /// whole `Shell::start` would verify the trust chain on every census.
    fn installed(&self) -> anyhow::Result<String> {
        match std::fs::read(&self.journal) {
            Ok(bytes) => {
                let j: Journal = serde_json::from_slice(&bytes).context("unreadable agent journal")?;
                Ok(j.installed.release.map(|r| r.as_str().to_owned()).unwrap_or_default())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("demo-fw@1.0.0".into()),
            Err(e) => Err(e.into()),
        }
    }
}

fn marker(version: &str) -> String {
    format!("demo-fw {version}\n")
}

fn image(version: &str) -> Vec<u8> {
    let mut v = marker(version).into_bytes();
    let mut x: u64 = 0x9e37_79b9 ^ version.len() as u64 ^ u64::from(version.as_bytes()[2]);
    while v.len() < 192 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

fn build(dir: &Path, version: &str, keys: &Keys) -> anyhow::Result<PathBuf> {
    let d = dir.join(format!("build-{version}"));
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("rootfs.img"), image(version))?;
    std::fs::write(d.join("sbom.cdx.json"), crate::demo::SBOM.replace("1.2.0", version))?;
    let out = dir.join(format!("demo-fw-{version}.bundle"));
    updraft_bundle::create(
        &CreateParams {
            name: "demo-fw".into(),
            version: version.parse()?,
            security_version: SecurityVersion(3),
            family: "sensor".into(),
            hardware: vec!["rev-b".into(), "rev-c".into()],
            requires: vec!["bootloader>=1.4".parse().expect("valid requirement")],
            source: Source {
                uri: "git+https://git.example.com/acme/sensor-fw".into(),
                commit: "7fd1a60b01f91b314f59955a4e4d4e80d8edf11d".into(),
            },
            created: Timestamp(1_767_225_600),
            images: vec![ImageInput { name: "rootfs".into(), path: d.join("rootfs.img"), target: Target::Slot }],
            sbom: Some(d.join("sbom.cdx.json")),
            build: BuildContext { ci: "local".into(), ..BuildContext::default() },
            updraft_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        &Signers { release: keys.release.to_vec(), build: keys.build },
        &out,
        &NoProgress,
    )?;
    Ok(out)
}

/// Starts the server in `dir` (SQLite, blob folder, loopback, random port).
pub fn start_server(dir: &Path, root: &SignedRoot) -> anyhow::Result<Lab> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started = runtime
        .block_on(updraft_server::start(updraft_server::Config::local(dir, root.clone())))
        .map_err(|e| anyhow::anyhow!("cannot start the server: {e}"))?;
    let admin = started.first_admin_token.context("the new server printed no admin token")?;
    let url = format!("http://{}", started.addr);
    let client = Client::new(&ClientArgs { server: Some(url.clone()), token: Some(admin.clone()) })?;
    Ok(Lab { runtime: Some(runtime), url, admin, client })
}

fn enroll(lab: &Lab, dir: &Path, n: usize) -> anyhow::Result<Vec<Device>> {
    let token = lab.client.post("/api/v1/enrollment-tokens", &serde_json::json!({"uses": n, "expiresInS": 3600}))?;
    let token = token["token"].as_str().context("no enrollment token in the answer")?;
    // Half rev-b in eu, half rev-c in us, enrolled by the simulator's load generator.
    let fleet: updraft_sim::Fleet = updraft_sim::model::parse(
        &format!(
            "family = \"sensor\"\n\
             [[groups]]\ncount = {}\nhardware = \"rev-b\"\nregion = \"eu\"\ncomponents = {{ bootloader = \"1.4.2\" }}\n\
             [[groups]]\ncount = {}\nhardware = \"rev-c\"\nregion = \"us\"\ncomponents = {{ bootloader = \"1.4.2\" }}\n",
            n.div_ceil(2),
            n / 2
        ),
        "demo fleet",
    )
    .map_err(anyhow::Error::msg)?;
    let enrolled =
        updraft_sim::load::enroll(&lab.url, token, &fleet, "demo-fw@1.0.0", "sensor-").map_err(anyhow::Error::msg)?;
    let base = image("1.0.0");
    let mut devices = Vec::with_capacity(n);
    for (i, e) in enrolled.into_iter().enumerate() {
        let hardware = e.hardware;
        let d = dir.join("devices").join(format!("sensor-{i:07}"));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("slot-a.img"), &base)?;
        std::fs::write(d.join("token"), e.auth.trim_start_matches("Bearer "))?;
        let config = format!(
            "data_dir = {data:?}\ntrust_root = {root:?}\npoll_interval_s = 30\n\n[server]\nurl = {url:?}\n\
             token_file = {token:?}\n\n[device]\nfamily = \"sensor\"\nhardware = {hardware:?}\n\
             release = \"demo-fw@1.0.0\"\nsecurity_version = 3\ncomponents = {{ bootloader = \"1.4.2\" }}\n\n\
             [bootloader]\nkind = \"file\"\npath = {boot:?}\n\n[slots]\nA = {a:?}\nB = {b:?}\n",
            data = d.join("data"),
            root = dir.join("root.1.json"),
            url = lab.url,
            token = d.join("token"),
            boot = d.join("boot.json"),
            a = d.join("slot-a.img"),
            b = d.join("slot-b.img"),
        );
        std::fs::write(d.join("agent.toml"), config)?;
        FileModel { path: d.join("boot.json") }.boot()?;
        devices.push(Device {
            config: d.join("agent.toml"),
            journal: AgentConfig::load(&d.join("agent.toml"))?.journal_path(),
            boot: d.join("boot.json"),
            slots: [d.join("slot-a.img"), d.join("slot-b.img")],
            hardware,
        });
    }
    Ok(devices)
}

/// One round over the fleet on two threads.
fn round(devices: &[Device]) -> anyhow::Result<()> {
    let half = devices.len().div_ceil(2);
    std::thread::scope(|s| {
        let jobs: Vec<_> = devices
            .chunks(half.max(1))
            .map(|chunk| s.spawn(move || chunk.iter().try_for_each(Device::round)))
            .collect();
        jobs.into_iter().try_for_each(|j| j.join().map_err(|_| anyhow::anyhow!("a device thread panicked"))?)
    })
}

fn census(devices: &[Device]) -> anyhow::Result<[usize; 3]> {
    let mut c = [0; 3];
    for d in devices {
        let r = d.installed()?;
        if let Some(i) = VERSIONS.iter().position(|v| r.ends_with(v)) {
            c[i] += 1;
        }
    }
    Ok(c)
}

/// Runs rounds until `done` says so; returns the rounds taken.
fn drive(
    lab: &Lab,
    devices: &[Device],
    rollout: &str,
    bar: &Option<ProgressBar>,
    done: impl Fn(&str, &[usize; 3]) -> bool,
) -> anyhow::Result<(u32, String, String)> {
    let started = Instant::now();
    let mut last = None;
    let mut n = 0;
    while started.elapsed() < PATIENCE {
        n += 1;
        // Say what is happening now, not what the last round ended with.
        if let Some(b) = bar {
            b.set_position(u64::from(n));
            b.set_message(format!("{rollout}: every device checks in and follows its update..."));
        }
        round(devices)?;
        let c = census(devices)?;
        let (state, reason) = lab.state(rollout)?;
        if let Some(b) = bar {
            b.set_position(u64::from(n));
            b.set_message(format!("{rollout}: {state}; devices on 1.0.0 {} / 1.1.0 {} / 1.2.0 {}", c[0], c[1], c[2]));
        }
        if done(&state, &c) {
            return Ok((n, state, reason));
        }
        let now = Some((state, c));
        if now == last {
            std::thread::sleep(IDLE_POLL);
        }
        last = now;
    }
    let (state, reason) = lab.state(rollout)?;
    bail!("rollout {rollout} did not settle in {} s (state {state} {reason})", PATIENCE.as_secs())
}

pub fn run(dir: &Path, n: usize, keys: &Keys, lab: &Lab, show: bool) -> anyhow::Result<FleetOutcome> {
    let t0 = Instant::now();
    // Hundreds of agents run in this process: their logs only when asked for.
    if std::env::var_os("UPDRAFT_LOG").is_none() {
        updraft_agent::log::set_max(None);
    }
    for v in VERSIONS {
        let b = build(dir, v, keys)?;
        let len = std::fs::metadata(&b)?.len();
        lab.client
            .post_stream("/api/v1/releases", &mut std::fs::File::open(&b)?, len)
            .with_context(|| format!("publishing {v}"))?;
    }
    let devices = enroll(lab, dir, n)?;
    let bar = show.then(|| {
        let b = ProgressBar::new_spinner();
        b.set_style(ProgressStyle::with_template("{spinner} round {pos:>3} {msg}").expect("valid template"));
        b
    });

    lab.client
        .post("/api/v1/rollouts", &serde_json::json!({"id": "good", "release": "demo-fw@1.1.0", "plan": PLAN}))?;
    let (good_rounds, good_state, _) = drive(lab, &devices, "good", &bar, |s, c| s == "completed" && c[1] == n)?;
    let good_committed = census(&devices)?[1];

    lab.client.post("/api/v1/rollouts", &serde_json::json!({"id": "bad", "release": "demo-fw@1.2.0", "plan": PLAN}))?;
    let (bad_rounds, bad_state, bad_reason) =
        drive(lab, &devices, "bad", &bar, |s, c| s == "rolled_back" && c[2] == 0 && c[1] == n)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let status = lab.client.get("/api/v1/rollouts/bad")?;
    let sum = |k: &str| -> u64 {
        status["perWave"].as_array().map_or(0, |w| w.iter().map(|x| x[k].as_u64().unwrap_or(0)).sum())
    };
    let assigned = sum("assigned") as usize;
    let reverted = sum("reverted") as usize;
    Ok(FleetOutcome {
        url: lab.url.clone(),
        devices: n,
        good_rounds,
        good_state,
        good_committed,
        bad_rounds,
        bad_state,
        bad_reason,
        bad_reverted: reverted,
        bad_rolled_back: sum("committed") as usize,
        bad_never_offered: n.saturating_sub(assigned),
        on_good_at_end: census(&devices)?[1],
        seconds: t0.elapsed().as_secs_f64(),
    })
}
