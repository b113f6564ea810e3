//! `updraft demo`: Updraft's main job on embedded defaults, needing nothing
//! but this binary. First a bundle round trip on generated sample data: keys
//! and a 2-of-3 trust root, a bundle, a second signature, verification, the
//! refusals of a tampered copy, a downgrade and a retired key, and a
//! byte-identical rebuild. Then the fleet (`demo_fleet`): the real server,
//! virtual devices running the real agent, a good rollout and a bad one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use updraft_bundle::bundle::{ImageInput, Policy};
use updraft_bundle::fsutil::{write_atomic, Overwrite};
use updraft_bundle::trust::{self, RootParams};
use updraft_bundle::{Algorithm, BuildContext, CreateParams, PrivateKey, Signers, Source, Target};
use updraft_types::{SecurityVersion, Timestamp};

use crate::output::{emit, progress_enabled, Bar};
use crate::Ctx;

#[derive(Args)]
pub struct DemoArgs {
    /// Work in this folder (created; default: a temporary folder removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Size of the sample rootfs image in MiB.
    #[arg(long, default_value_t = 16)]
    image_mib: u64,
    /// Virtual devices in the fleet part (each runs the real agent against the real server).
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// Only the bundle round trip (no server, no fleet).
    #[arg(long)]
    no_fleet: bool,
    /// Keep the folder, and keep the server running (printing its URL and an
    /// admin token) until interrupted.
    #[arg(long)]
    keep: bool,
    /// Print the result as JSON (camelCase keys).
    #[arg(long)]
    json: bool,
}

/// Fewest devices for the fleet part.
const MIN_DEVICES: usize = 40;

#[derive(Serialize)]
struct Step {
    step: String,
    ok: bool,
    detail: String,
    ms: u128,
}

#[derive(Serialize)]
struct Report {
    dir: PathBuf,
    steps: Vec<Step>,
    fleet: Option<crate::demo_fleet::FleetOutcome>,
    passed: bool,
}

/// Deterministic sample bytes (xorshift), so the demo is reproducible.
fn sample_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x = seed | 1;
    let mut left = size;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        let n = left.min(8) as usize;
        f.write_all(&bytes[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

pub(crate) const SBOM: &str = r#"{
  "bomFormat": "CycloneDX",
  "specVersion": "1.5",
  "version": 1,
  "metadata": { "timestamp": "2026-01-01T00:00:00Z",
    "component": { "type": "firmware", "bom-ref": "fw", "name": "demo-fw", "version": "1.2.0" } },
  "components": [
    { "type": "library", "bom-ref": "mbedtls", "name": "mbedtls", "version": "3.6.2",
      "purl": "pkg:github/Mbed-TLS/mbedtls@v3.6.2" }
  ]
}
"#;

/// Ends the demo on SIGINT (Ctrl-C) or SIGTERM, whatever it is doing: the
/// in-process server installs handlers for both (for its graceful
/// shutdown), which would otherwise keep the demo alive. Removes a
/// temporary folder first. Exit code 130 (SIGINT) or 143 (SIGTERM).
fn exit_on_signal(remove: Option<PathBuf>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let (mut int, mut term) = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    std::thread::spawn(move || {
        let code = rt.block_on(async {
            tokio::select! {
                _ = int.recv() => 130,
                _ = term.recv() => 143,
            }
        });
        // From here the demo's own work may fail (its folder goes away):
        // `run` waits for this thread to end the process instead of returning.
        STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("\ndemo: stopped by a signal");
        if let Some(dir) = &remove {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(code);
    });
    Ok(())
}

/// Set when a signal stops the demo.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn run(a: DemoArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let result = run_demo(a, ctx);
    if STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
        // The signal's thread ends the process with its exit code.
        loop {
            std::thread::park();
        }
    }
    result
}

fn run_demo(a: DemoArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    // Flags first: nothing is done for a run that cannot pass.
    if !a.no_fleet && a.devices < MIN_DEVICES {
        anyhow::bail!(
            "--devices must be at least {MIN_DEVICES} (the gates need 20 good outcomes in a first wave of half the fleet at most)"
        );
    }
    if a.image_mib == 0 || a.image_mib > 4096 {
        anyhow::bail!("--image-mib must be 1 to 4096");
    }
    let temp;
    let dir = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("updraft-demo-").tempdir()?;
            if a.keep {
                temp.keep()
            } else {
                temp.path().to_path_buf()
            }
        }
    };
    // Absolute: the agents' configurations name files in it.
    let dir = std::path::absolute(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    exit_on_signal((a.dir.is_none() && !a.keep).then(|| dir.clone()))?;
    let mut steps: Vec<Step> = Vec::new();
    let live = !a.json;
    let mut record = |step: &str, ok: bool, detail: String, started: Instant| {
        if live {
            eprintln!("{} {step}: {detail}", if ok { "ok  " } else { "FAIL" });
        }
        steps.push(Step { step: step.into(), ok, detail, ms: started.elapsed().as_millis() });
    };
    let bar = Bar::new(progress_enabled(ctx.quiet, a.json));
    let now = Timestamp::now();

    // Keys: three release keys (one ECDSA P-256, as on a hardware token) and a build key.
    let t = Instant::now();
    let keys_dir = dir.join("keys");
    std::fs::create_dir_all(&keys_dir)?;
    let mut keys = Vec::new();
    for (name, alg) in [
        ("release-a", Algorithm::Ed25519),
        ("release-b", Algorithm::Ed25519),
        ("release-c", Algorithm::P256),
        ("release-d", Algorithm::Ed25519),
        ("build", Algorithm::Ed25519),
    ] {
        let k = PrivateKey::generate(alg)?;
        write_atomic(&keys_dir.join(format!("{name}.key")), k.to_pkcs8_pem()?.as_bytes(), 0o600, Overwrite::Replace)?;
        write_atomic(&keys_dir.join(format!("{name}.pub")), k.public().to_pem().as_bytes(), 0o644, Overwrite::Replace)?;
        keys.push(k);
    }
    let [ka, kb, kc, kd, kbuild] = <[PrivateKey; 5]>::try_from(keys).map_err(|_| anyhow::anyhow!("five keys"))?;
    record("keys", true, "3 release keys (2 Ed25519, 1 P-256), a spare, and a build key".into(), t);

    // Trust root v1: 2 of 3.
    let t = Instant::now();
    let params = |release: Vec<&PrivateKey>| RootParams {
        release_keys: release.iter().map(|k| k.public().clone()).collect(),
        release_threshold: 2,
        build_keys: vec![kbuild.public().clone()],
        expires: now.saturating_add(std::time::Duration::from_secs(365 * 86400)),
    };
    let root1 = trust::init(params(vec![&ka, &kb, &kc]), &[&ka, &kb]).map_err(updraft_bundle::Error::from)?;
    write_atomic(&dir.join("root.1.json"), &root1.to_json(), 0o644, Overwrite::Replace)?;
    let trusted1 = trust::verify_pinned(&root1, now).map_err(updraft_bundle::Error::from)?;
    record("trust root", true, "version 1, release threshold 2 of 3, signed by A and B".into(), t);

    // Sample firmware.
    let t = Instant::now();
    let fw = dir.join("firmware");
    std::fs::create_dir_all(&fw)?;
    sample_file(&fw.join("rootfs.img"), a.image_mib * 1024 * 1024, 0x5eed)?;
    sample_file(&fw.join("radio.bin"), 96 * 1024 + 7, 0xfade)?;
    std::fs::write(fw.join("sbom.cdx.json"), SBOM)?;
    record("firmware", true, format!("rootfs.img ({} MiB), radio.bin, CycloneDX SBOM", a.image_mib), t);

    let params_for = |fw: &Path, order_reversed: bool| {
        let mut images = vec![
            ImageInput { name: "rootfs".into(), path: fw.join("rootfs.img"), target: Target::Slot },
            ImageInput { name: "radio".into(), path: fw.join("radio.bin"), target: Target::Component("radio".into()) },
        ];
        let mut hardware = vec!["rev-b".to_owned(), "rev-c".to_owned()];
        if order_reversed {
            images.reverse();
            hardware.reverse();
        }
        CreateParams {
            name: "demo-fw".into(),
            version: semver::Version::new(1, 2, 0),
            security_version: SecurityVersion(3),
            family: "sensor".into(),
            hardware,
            requires: vec!["bootloader>=1.4".parse().expect("valid requirement")],
            source: Source {
                uri: "git+https://git.example.com/acme/sensor-fw".into(),
                commit: "7fd1a60b01f91b314f59955a4e4d4e80d8edf11d".into(),
            },
            created: Timestamp(1_767_225_600),
            images,
            sbom: Some(fw.join("sbom.cdx.json")),
            build: BuildContext {
                ci: "local".into(),
                source_ref: Some("refs/tags/v1.2.0".into()),
                ..BuildContext::default()
            },
            updraft_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    };

    // Bundle, signed by A only: below the threshold.
    let t = Instant::now();
    let bundle = dir.join("demo-fw-1.2.0.bundle");
    updraft_bundle::create(&params_for(&fw, false), &Signers { release: vec![&ka], build: &kbuild }, &bundle, &bar)?;
    let r = updraft_bundle::verify_file(&bundle, &trusted1, &Policy::default(), &bar);
    let refused = matches!(&r, Err(updraft_bundle::Error::Rejected(updraft_bundle::Rejection::BelowThreshold { .. })));
    record(
        "one signature",
        refused,
        match r {
            Err(e) => e.to_string(),
            Ok(_) => "accepted with 1 of 2 signatures".into(),
        },
        t,
    );

    // Second signature, as on another machine (the P-256 key).
    let t = Instant::now();
    updraft_bundle::sign(&bundle, &kc, &bar)?;
    let policy = Policy {
        family: Some("sensor".into()),
        hardware: Some("rev-c".into()),
        min_security_version: Some(SecurityVersion(3)),
        ..Policy::default()
    };
    let v = updraft_bundle::verify_file(&bundle, &trusted1, &policy, &bar);
    let ok = v.is_ok();
    record(
        "co-signed",
        ok,
        match v {
            Ok(v) => format!(
                "valid: {} signatures, provenance by {}",
                v.header.signers.len(),
                v.header.provenance.builder_id
            ),
            Err(e) => e.to_string(),
        },
        t,
    );

    // Reproducible: rebuild elsewhere with inputs in another order, both keys at once.
    let t = Instant::now();
    let fw2 = dir.join("firmware-copy");
    std::fs::create_dir_all(&fw2)?;
    for f in ["rootfs.img", "radio.bin", "sbom.cdx.json"] {
        std::fs::copy(fw.join(f), fw2.join(f))?;
    }
    let bundle2 = dir.join("rebuild.bundle");
    updraft_bundle::create(
        &params_for(&fw2, true),
        &Signers { release: vec![&kc, &ka], build: &kbuild },
        &bundle2,
        &bar,
    )?;
    let same = std::fs::read(&bundle)? == std::fs::read(&bundle2)?;
    record(
        "reproducible",
        same,
        if same { "rebuild from another folder and order is byte-identical".into() } else { "rebuild differs".into() },
        t,
    );

    // Tampering, downgrade, wrong hardware.
    let t = Instant::now();
    let tampered = dir.join("tampered.bundle");
    let mut bytes = std::fs::read(&bundle)?;
    let at = bytes.len() - 4096;
    bytes[at] ^= 0x01;
    std::fs::write(&tampered, bytes)?;
    let r = updraft_bundle::verify_file(&tampered, &trusted1, &Policy::default(), &bar);
    record("tampered copy", r.is_err(), r.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into()), t);
    let t = Instant::now();
    let r = updraft_bundle::verify_file(
        &bundle,
        &trusted1,
        &Policy { min_security_version: Some(SecurityVersion(4)), ..Policy::default() },
        &bar,
    );
    record("downgrade", r.is_err(), r.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into()), t);

    // Rotation: v2 retires A and adds D; signed by B and C (a threshold of both versions).
    let t = Instant::now();
    let root2 =
        trust::rotate(&root1.root, params(vec![&kb, &kc, &kd]), &[&kb, &kc]).map_err(updraft_bundle::Error::from)?;
    write_atomic(&dir.join("root.2.json"), &root2.to_json(), 0o644, Overwrite::Replace)?;
    let trusted2 =
        trust::verify_chain(&root1, std::slice::from_ref(&root2), now).map_err(updraft_bundle::Error::from)?;
    let r = updraft_bundle::verify_file(&bundle, &trusted2, &Policy::default(), &bar);
    record(
        "root rotation",
        r.is_err() && trusted2.root().version == 2,
        format!(
            "v1 -> v2 walked; the bundle signed by retired key A is refused: {}",
            r.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into())
        ),
        t,
    );

    // The fleet: the real server, the real agent on virtual devices, two rollouts.
    let mut fleet = None;
    let mut lab = None;
    if !a.no_fleet {
        let t = Instant::now();
        let server_dir = dir.join("server");
        std::fs::create_dir_all(&server_dir)?;
        let l = crate::demo_fleet::start_server(&server_dir, &root1)?;
        record("server", true, format!("updraft serve on {} (SQLite and blobs in {})", l.url, server_dir.display()), t);
        let t = Instant::now();
        let keys = crate::demo_fleet::Keys { release: [&ka, &kb], build: &kbuild };
        let show = progress_enabled(ctx.quiet, a.json);
        let o = crate::demo_fleet::run(&dir, a.devices, &keys, &l, show)?;
        record(
            "good release",
            o.good_state == "completed" && o.good_committed == o.devices,
            format!(
                "demo-fw@1.1.0 rolled out to {} of {} devices in {} rounds of check-ins ({})",
                o.good_committed, o.devices, o.good_rounds, o.good_state
            ),
            t,
        );
        record(
            "bad release",
            o.bad_state == "rolled_back" && o.on_good_at_end == o.devices,
            format!(
                "demo-fw@1.2.0 fails its health check on rev-c: {} ({}); {} devices reverted on their own, {} that \
                 had committed it were given 1.1.0 back, {} never got it; all {} run 1.1.0",
                o.bad_state, o.bad_reason, o.bad_reverted, o.bad_rolled_back, o.bad_never_offered, o.on_good_at_end
            ),
            t,
        );
        fleet = Some(o);
        lab = Some(l);
    }

    let passed = steps.iter().all(|s| s.ok);
    let report = Report { dir: dir.clone(), steps, fleet, passed };
    emit(a.json, &report, |s| {
        s.push_str(&format!("demo: {}\n", if passed { "all checks passed" } else { "FAILED" }));
        if a.keep || a.dir.is_some() {
            s.push_str(&format!("files in {}\n", dir.display()));
            s.push_str(&format!("try: updraft bundle inspect {}\n", bundle.display()));
            s.push_str(&format!(
                "     updraft bundle verify {} --trust {}\n",
                bundle.display(),
                dir.join("root.1.json").display()
            ));
        }
    })?;
    if let (true, Some(l)) = (a.keep, &lab) {
        eprintln!("the server keeps running (Ctrl-C to stop):");
        eprintln!("  export UPDRAFT_SERVER={} UPDRAFT_TOKEN={}", l.url, l.admin);
        eprintln!("  updraft rollout list; updraft rollout status bad; updraft devices list");
        eprintln!("  dashboard: {}/rollouts/bad (sign in with the UPDRAFT_TOKEN above)", l.url);
        match l.sign_in_link() {
            Ok(link) => eprintln!("  or open this one-time sign-in link (10 minutes): {link}"),
            Err(e) => eprintln!("  (no one-time sign-in link: {e:#})"),
        }
        // Until SIGINT or SIGTERM (exit_on_signal ends the process).
        loop {
            std::thread::park();
        }
    }
    drop(lab);
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
