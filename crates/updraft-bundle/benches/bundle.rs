//! Bundle speed and memory, measured against references in the same run.
//!
//! `cargo bench -p updraft-bundle --bench bundle` builds a bundle around a
//! 2 GiB image and verifies it, each in a child process so that its peak
//! RSS (VmHWM) is its own; then it verifies a bundle around a 1 GiB image
//! and compares the time with `openssl dgst -sha256` over the same file.
//! `UPDRAFT_BENCH_SMALL=1` uses 256 MiB and 128 MiB instead (a quick check).

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use updraft_bundle::bundle::{ImageInput, Policy};
use updraft_bundle::trust::{self, RootParams};
use updraft_bundle::{BuildContext, CreateParams, NoProgress, PrivateKey, Signers, Source, Target};
use updraft_types::{SecurityVersion, Timestamp};

const MIB: u64 = 1024 * 1024;

fn keys() -> (PrivateKey, PrivateKey) {
    (PrivateKey::from_ed25519_seed(&[1; 32]).unwrap(), PrivateKey::from_ed25519_seed(&[2; 32]).unwrap())
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

fn write_image(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::with_capacity(4 * MIB as usize, std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; MIB as usize];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..size / MIB {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}

fn child(op: &str, dir: &Path) {
    let (release, build) = keys();
    let bundle = dir.join("bench.bundle");
    match op {
        "create" => {
            let params = CreateParams {
                name: "bench".into(),
                version: semver::Version::new(1, 0, 0),
                security_version: SecurityVersion(1),
                family: "bench".into(),
                hardware: vec!["rev-a".into()],
                requires: vec![],
                source: Source { uri: "git+https://example.com/bench".into(), commit: "0".repeat(40) },
                created: Timestamp(1_767_225_600),
                images: vec![ImageInput { name: "rootfs".into(), path: dir.join("image.bin"), target: Target::Slot }],
                sbom: None,
                build: BuildContext { ci: "local".into(), ..Default::default() },
                updraft_version: "bench".into(),
            };
            updraft_bundle::create(&params, &Signers { release: vec![&release], build: &build }, &bundle, &NoProgress)
                .unwrap();
        }
        "verify" => {
            let root = trust::init(
                RootParams {
                    release_keys: vec![release.public().clone()],
                    release_threshold: 1,
                    build_keys: vec![build.public().clone()],
                    expires: Timestamp(4_000_000_000),
                },
                &[&release],
            )
            .unwrap();
            let trusted = trust::verify_pinned(&root, Timestamp(1_800_000_000)).unwrap();
            updraft_bundle::verify_file(&bundle, &trusted, &Policy::default(), &NoProgress).unwrap();
        }
        other => panic!("unknown child op {other}"),
    }
    println!("{}", peak_rss_mib());
}

/// Runs `op` in a child process; returns (wall time, peak RSS in MiB).
fn run_child(op: &str, dir: &Path) -> (Duration, f64) {
    let t = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .env("UPDRAFT_BENCH_CHILD", op)
        .env("UPDRAFT_BENCH_DIR", dir)
        .output()
        .unwrap();
    let elapsed = t.elapsed();
    assert!(out.status.success(), "{op}: {}", String::from_utf8_lossy(&out.stderr));
    (elapsed, String::from_utf8(out.stdout).unwrap().trim().parse().unwrap())
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> (Duration, T)) -> (Duration, T) {
    let mut best = f();
    for _ in 1..n {
        let r = f();
        if r.0 < best.0 {
            best = r;
        }
    }
    best
}

fn openssl_sha256(file: &Path) -> Duration {
    let t = Instant::now();
    let out = Command::new("openssl").args(["dgst", "-sha256"]).arg(file).output().expect("openssl is installed");
    assert!(out.status.success());
    t.elapsed()
}

fn main() {
    if let Ok(op) = std::env::var("UPDRAFT_BENCH_CHILD") {
        child(&op, &PathBuf::from(std::env::var("UPDRAFT_BENCH_DIR").unwrap()));
        return;
    }
    // `cargo test --benches` runs this binary too: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let small = std::env::var_os("UPDRAFT_BENCH_SMALL").is_some();
    let (big, throughput) = if small { (256 * MIB, 128 * MIB) } else { (2048 * MIB, 1024 * MIB) };
    let base = std::env::var_os("UPDRAFT_BENCH_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();

    println!("bundle memory: {} MiB image", big / MIB);
    write_image(&dir.path().join("image.bin"), big);
    let (t, rss) = run_child("create", dir.path());
    println!("  create  {:>8.2} s  peak RSS {:>6.1} MiB  (target < 64 MiB)", t.as_secs_f64(), rss);
    let (t, rss) = run_child("verify", dir.path());
    println!("  verify  {:>8.2} s  peak RSS {:>6.1} MiB  (target < 64 MiB)", t.as_secs_f64(), rss);

    println!("verify throughput: {} MiB image, best of 3, page cache warm", throughput / MIB);
    write_image(&dir.path().join("image.bin"), throughput);
    run_child("create", dir.path());
    let bundle = dir.path().join("bench.bundle");
    let size = std::fs::metadata(&bundle).unwrap().len() as f64 / MIB as f64;
    let reference = best_of(3, || (openssl_sha256(&bundle), ())).0;
    let (ours, _) = best_of(3, || run_child("verify", dir.path()));
    let mibs = |d: Duration| size / d.as_secs_f64();
    println!("  openssl dgst -sha256  {:>7.3} s  {:>7.0} MiB/s  (reference)", reference.as_secs_f64(), mibs(reference));
    println!("  updraft verify        {:>7.3} s  {:>7.0} MiB/s", ours.as_secs_f64(), mibs(ours));
    println!("  ratio {:.2}x of openssl (target >= 0.80x)", reference.as_secs_f64() / ours.as_secs_f64());
}
