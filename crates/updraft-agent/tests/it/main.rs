//! Bootloader backends against the real tools (libubootenv's
//! fw_printenv/fw_setenv on a file-backed U-Boot environment, grub-editenv)
//! and the file model; slot writers. Tools missing: skipped with a message,
//! a failure under `CI=true`.

mod e2e;
mod parsers;

use std::process::Command;

use updraft_agent::bootloader::{booted_from_cmdline, Bootloader, FileModel, Grub, UBoot};
use updraft_agent::slots::{read_back, SlotWriter};
use updraft_agent_core::{BootRecord, Slot};

fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("-h").output().is_ok() || Command::new(tool).arg("--help").output().is_ok();
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{tool} is missing in CI; .ci/run must install it");
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

/// A walk through the records of an update: fresh, invalidated, armed,
/// three trial boots, committed; and a revert.
fn records() -> Vec<BootRecord> {
    let fresh = BootRecord::fresh(Slot::A);
    let armed = fresh.invalidated(Slot::B).armed(Slot::B);
    let mut out = vec![fresh, fresh.invalidated(Slot::B), armed];
    let mut r = armed;
    for _ in 0..4 {
        let (next, _) = updraft_agent_core::boot(r);
        if let Some(n) = next {
            r = n;
            out.push(r);
        }
    }
    out.push(armed.committed(Slot::B));
    out.push(armed.reverted(Slot::B));
    out
}

fn round_trips(b: &dyn Bootloader) {
    for r in records() {
        assert_eq!(b.write(&r).unwrap(), r);
        assert_eq!(b.read().unwrap(), Some(r));
    }
}

#[test]
fn the_file_model_keeps_the_record_and_boots_like_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let m = FileModel { path: dir.path().join("boot.json") };
    assert_eq!(m.read().unwrap(), None);
    round_trips(&m);
    m.write(&BootRecord::fresh(Slot::A).invalidated(Slot::B).armed(Slot::B)).unwrap();
    let boots: Vec<(Slot, bool)> = (0..5).map(|_| m.boot().map(|b| (b.slot, b.trial)).unwrap()).collect();
    assert_eq!(boots, [(Slot::B, true), (Slot::B, true), (Slot::B, true), (Slot::A, false), (Slot::A, false)]);
    assert_eq!(m.read().unwrap().unwrap().last_revert, Some(Slot::B));
}

#[test]
fn uboot_environment_through_libubootenv() {
    if !have("fw_setenv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("uboot.env");
    std::fs::write(&env, vec![0u8; 16 * 1024]).unwrap();
    let config = dir.path().join("fw_env.config");
    std::fs::write(&config, format!("{} 0x0 0x4000\n", env.display())).unwrap();
    let default_env = dir.path().join("default.env");
    std::fs::write(&default_env, "bootdelay=0\n").unwrap();
    let u = UBoot { config: Some(config), default_env: Some(default_env) };
    round_trips(&u);
    // Our variables live beside U-Boot's own.
    let out = Command::new("fw_printenv").arg("-c").arg(dir.path().join("fw_env.config")).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("bootdelay=0") && text.contains("UPDRAFT_PRIMARY=A"), "{text}");
}

#[test]
fn grub_environment_through_grub_editenv() {
    if !have("grub-editenv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g = Grub { env_file: dir.path().join("grubenv") };
    assert_eq!(g.read().unwrap(), None);
    round_trips(&g);
    assert_eq!(std::fs::metadata(dir.path().join("grubenv")).unwrap().len(), 1024, "GRUB's fixed-size block");
}

#[test]
fn the_kernel_command_line_says_what_booted() {
    let b = booted_from_cmdline("console=ttyS0 root=/dev/mmcblk0p3 updraft.slot=B updraft.trial=1").unwrap();
    assert_eq!((b.slot, b.trial, b.reverted_from), (Slot::B, true, None));
    let b = booted_from_cmdline("updraft.slot=A updraft.reverted_from=B").unwrap();
    assert_eq!((b.slot, b.trial, b.reverted_from), (Slot::A, false, Some(Slot::B)));
    assert!(booted_from_cmdline("quiet splash").is_none());
}

#[test]
fn slots_are_written_synced_read_back_and_never_the_booted_one() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let slot = dir.path().join("slot-b.img");
    assert!(SlotWriter::open(&slot, true, 0).is_err(), "the booted slot is refused");
    let mut w = SlotWriter::open(&slot, false, 0).unwrap();
    w.write_all(&[7u8; 5000]).unwrap();
    assert_eq!(w.sync().unwrap(), 5000);
    // Resume at an offset, as after a power loss.
    drop(w);
    let mut w = SlotWriter::open(&slot, false, 4096).unwrap();
    w.write_all(&[9u8; 4]).unwrap();
    w.finish().unwrap();
    let mut expected = vec![7u8; 5000];
    expected[4096..4100].copy_from_slice(&[9; 4]);
    use sha2::Digest;
    assert_eq!(read_back(&slot, 5000).unwrap().0, <[u8; 32]>::from(sha2::Sha256::digest(&expected)));
    assert!(read_back(&slot, 6000).is_err(), "shorter than expected");
}

#[test]
fn status_shows_the_record_and_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let m = FileModel { path: dir.path().join("boot.json") };
    m.write(&BootRecord::fresh(Slot::A).invalidated(Slot::B).armed(Slot::B)).unwrap();
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "data_dir = {:?}\ntrust_root = \"root.json\"\n[device]\nfamily = \"x\"\nhardware = \"y\"\n[bootloader]\nkind = \"file\"\npath = {:?}\n[slots]\nA = \"a.img\"\nB = \"b.img\"\n",
            dir.path(),
            dir.path().join("boot.json")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_updraft-agent"))
        .args(["status", "--config"])
        .arg(dir.path().join("agent.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "boot record: primary B, good A=true B=false, tries A=0 B=3, trial true, last revert none\njournal: none yet\n"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_updraft-agent"))
        .args(["status", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_example_configuration_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agent.toml");
    let cfg = updraft_agent::config::Config::load(&path).unwrap();
    assert_eq!(cfg.health_checks.len(), 2);
    assert!(cfg.server.is_some());
}

/// The grub.cfg snippet in docs/agent-bootloaders.md is valid GRUB script.
#[test]
fn the_documented_grub_snippet_parses() {
    if !have("grub-script-check") {
        return;
    }
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/agent-bootloaders.md"),
    )
    .unwrap();
    let start = doc.find("## GRUB (`grub.cfg` snippet)").unwrap();
    let body = &doc[start..];
    let open = body.find("```\n").unwrap() + 4;
    let close = body[open..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snippet.cfg");
    std::fs::write(&file, &body[open..open + close]).unwrap();
    let out = Command::new("grub-script-check").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
