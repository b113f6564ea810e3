//! The agent's size and memory: the stripped release binary, and the peak
//! resident memory of `updraft-agent install` streaming a bundle with a
//! 1 GiB image into a slot (verify, then write), next to `sha256sum` of the
//! same bundle measured in the same run.
//!
//! `cargo bench -p updraft-agent --bench agent` (`UPDRAFT_BENCH_MIB` to change the size).

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::process::Command;

use updraft_bundle::bundle::ImageInput;
use updraft_bundle::trust::{self, RootParams};
use updraft_bundle::{BuildContext, CreateParams, NoProgress, PrivateKey, Signers, Source, Target};
use updraft_types::{SecurityVersion, Timestamp};

/// (peak RSS in MiB, seconds) of a command, from GNU time.
fn measure(cmd: &mut Command) -> (f64, f64) {
    let out = cmd.output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default().to_owned();
    let mut parts = last.split_whitespace();
    let kib: f64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    let secs: f64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    (kib / 1024.0, secs)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mib: u64 = std::env::var("UPDRAFT_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let bin = env!("CARGO_BIN_EXE_updraft-agent");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let stripped = d.join("updraft-agent");
    std::fs::copy(bin, &stripped).unwrap();
    let ok = Command::new("strip").arg(&stripped).status().map(|s| s.success()).unwrap_or(false);
    let size = std::fs::metadata(&stripped).unwrap().len() as f64 / 1_000_000.0;

    let release = PrivateKey::from_ed25519_seed(&[1; 32]).unwrap();
    let build = PrivateKey::from_ed25519_seed(&[2; 32]).unwrap();
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
    std::fs::write(d.join("root.json"), root.to_json()).unwrap();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(d.join("image.bin")).unwrap());
        let mut chunk = vec![0u8; 1 << 20];
        for i in 0..mib {
            chunk.iter_mut().enumerate().for_each(|(j, b)| *b = (i as usize).wrapping_mul(31).wrapping_add(j) as u8);
            f.write_all(&chunk).unwrap();
        }
    }
    let bundle = d.join("fw.bundle");
    updraft_bundle::create(
        &CreateParams {
            name: "fw".into(),
            version: semver::Version::new(2, 0, 0),
            security_version: SecurityVersion(1),
            family: "bench".into(),
            hardware: vec!["rev-a".into()],
            requires: vec![],
            source: Source { uri: "git+https://example.com/fw".into(), commit: "0".into() },
            created: Timestamp(1_767_225_600),
            images: vec![ImageInput { name: "rootfs".into(), path: d.join("image.bin"), target: Target::Slot }],
            sbom: None,
            build: BuildContext { ci: "local".into(), ..Default::default() },
            updraft_version: "bench".into(),
        },
        &Signers { release: vec![&release], build: &build },
        &bundle,
        &NoProgress,
    )
    .unwrap();
    std::fs::remove_file(d.join("image.bin")).unwrap();
    std::fs::write(d.join("slot-a.img"), b"factory").unwrap();
    std::fs::write(
        d.join("agent.toml"),
        format!(
            "data_dir = {:?}\ntrust_root = {:?}\n[device]\nfamily = \"bench\"\nhardware = \"rev-a\"\n[bootloader]\nkind = \"file\"\npath = {:?}\n[slots]\nA = {:?}\nB = {:?}\n",
            d.join("data"),
            d.join("root.json"),
            d.join("boot.json"),
            d.join("slot-a.img"),
            d.join("slot-b.img")
        ),
    )
    .unwrap();

    let (ref_rss, ref_secs) = measure(Command::new("/usr/bin/time").args(["-f", "%M %e", "sha256sum"]).arg(&bundle));
    let (rss, secs) = measure(
        Command::new("/usr/bin/time")
            .args(["-f", "%M %e"])
            .arg(&stripped)
            .arg("install")
            .arg(&bundle)
            .arg("--config")
            .arg(d.join("agent.toml"))
            .arg("--simulate-reboot"),
    );
    let written = std::fs::metadata(d.join("slot-b.img")).map(|m| m.len() >> 20).unwrap_or(0);
    println!("updraft-agent, install of a bundle with a {mib} MiB image (verify, then stream into slot B)");
    println!(
        "  stripped binary   {size:>6.2} MB{}  (target < 6 MB)",
        if ok { "" } else { " (strip failed: unstripped)" }
    );
    println!("  sha256sum bundle  peak RSS {ref_rss:>6.1} MiB  {ref_secs:>6.2} s  (reference)");
    println!("  agent install     peak RSS {rss:>6.1} MiB  {secs:>6.2} s  (target < 10 MB); {written} MiB written");
}
