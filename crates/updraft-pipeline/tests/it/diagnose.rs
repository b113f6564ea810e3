//! The reproducibility diagnosis on pairs of images that differ for one
//! known reason each, and on real objects from the C compiler.

use std::path::PathBuf;

use updraft_pipeline::diagnose::{examine, first_difference, Context, Finding};

/// The builds ran at 2026-12-07 10:00:00 UTC; the sources are a month older.
const BUILT: u64 = 1_796_637_600;
const SDE: u64 = BUILT - 30 * 86_400;

fn ctx() -> Context {
    Context {
        first_tree: PathBuf::from("/work/proj/.updraft/build/one"),
        second_tree: PathBuf::from("/work/proj/.updraft/rebuild/one"),
        window_s: (BUILT, BUILT + 60),
        source_date_epoch: SDE,
        user: Some("builder7".into()),
        host: Some("ci-runner-3".into()),
    }
}

/// An ar archive: (name, mtime, data) members.
fn ar(members: &[(&str, u64, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, mtime, data) in members {
        out.extend(
            format!("{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", format!("{name}/"), mtime, 0, 0, 644, data.len()).bytes(),
        );
        out.extend(*data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// A ustar archive: (name, mtime, data) members.
fn tar(members: &[(&str, u64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, mtime, data) in members {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let mut put = |at: usize, s: String| h[at..at + s.len()].copy_from_slice(s.as_bytes());
        put(100, "0000644\0".into());
        put(108, "0000000\0".into());
        put(116, "0000000\0".into());
        put(124, format!("{:011o}\0", data.len()));
        put(136, format!("{:011o}\0", mtime));
        put(156, "0".into());
        put(257, "ustar\x0000".into());
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&c| c as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend(h);
        out.extend(*data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A cpio (newc) archive: (name, inode, mtime, data) members.
fn cpio(members: &[(&str, u64, u64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |name: &str, ino: u64, mtime: u64, data: &[u8]| {
        let fields = [ino, 0o100644, 0, 0, 1, mtime, data.len() as u64, 0, 0, 0, 0, name.len() as u64 + 1, 0];
        out.extend(b"070701");
        for f in fields {
            out.extend(format!("{f:08x}").bytes());
        }
        out.extend(name.bytes());
        out.push(0);
        out.resize(out.len().div_ceil(4) * 4, 0);
        out.extend(data);
        out.resize(out.len().div_ceil(4) * 4, 0);
    };
    for (name, ino, mtime, data) in members {
        entry(name, *ino, *mtime, data);
    }
    entry("TRAILER!!!", 0, 0, b"");
    out
}

/// A zip archive's local entries (stored): (name, DOS date, data).
fn zip(members: &[(&str, u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, date, data) in members {
        out.extend(b"PK\x03\x04");
        out.extend(10u16.to_le_bytes()); // version
        out.extend(0u16.to_le_bytes()); // flags
        out.extend(0u16.to_le_bytes()); // stored
        out.extend(0u16.to_le_bytes()); // time
        out.extend(date.to_le_bytes());
        out.extend(0u32.to_le_bytes()); // crc (not checked)
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((name.len() as u16).to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(name.bytes());
        out.extend(*data);
    }
    out
}

fn gzip(mtime: u32, name: bool) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, if name { 0x08 } else { 0 }];
    out.extend(mtime.to_le_bytes());
    out.extend([0, 3]);
    if name {
        out.extend(b"firmware.bin\0");
    }
    out.extend(b"\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    out
}

/// (what, first build, second build, expected (cause, location), a fragment of the detail or fix)
type Case<'a> = (&'a str, Vec<u8>, Vec<u8>, Vec<(&'a str, &'a str)>, &'a str);

fn causes(findings: &[Finding]) -> Vec<(&str, &str)> {
    findings.iter().map(|f| (f.cause.as_str(), f.location.as_str())).collect()
}

#[test]
fn each_known_cause_is_named_with_where_and_its_fix() {
    let first = b"assert failed: /work/proj/.updraft/build/one/src/lfs.c:412".to_vec();
    let second = b"assert failed: /work/proj/.updraft/rebuild/one/src/lfs.c:412".to_vec();
    let t = BUILT.to_string();
    let t2 = (BUILT + 1).to_string();
    let cases: Vec<Case> = vec![
        ("__FILE__", first.clone(), second.clone(), vec![("build-path", "img")], "-ffile-prefix-map=$PWD=."),
        (
            "__DATE__ and __TIME__",
            b"v1.2 built Dec  7 2026 10:00:07".to_vec(),
            b"v1.2 built Dec  7 2026 10:00:41".to_vec(),
            vec![("timestamp", "img")],
            "\"Dec  7 2026\"",
        ),
        (
            "SOURCE_DATE_EPOCH printed in the local time zone (BusyBox's banner)",
            b"BusyBox v1.35.0 (2026-01-01 00:00:00 UTC)".to_vec(),
            b"BusyBox v1.35.0 (2026-01-01 14:00:00 +14)".to_vec(),
            vec![("timestamp", "img")],
            "in the local time zone",
        ),
        (
            "epoch seconds",
            format!("BUILD_TIME={t};").into_bytes(),
            format!("BUILD_TIME={t2};").into_bytes(),
            vec![("timestamp", "img")],
            "SOURCE_DATE_EPOCH",
        ),
        (
            "32-bit time",
            [b"hdr".as_slice(), &(BUILT as u32).to_le_bytes(), b"end"].concat(),
            [b"hdr".as_slice(), &(BUILT as u32 + 9).to_le_bytes(), b"end"].concat(),
            vec![("timestamp", "img")],
            "32-bit times of the build",
        ),
        (
            "user name",
            b"compiled by builder7@ci on x".to_vec(),
            b"compiled by builder7@ci on y".to_vec(),
            vec![("user-name", "img")],
            "KBUILD_BUILD_USER",
        ),
        (
            "ar member times",
            ar(&[("a.o", BUILT, b"AAAA"), ("b.o", BUILT, b"BBB")]),
            ar(&[("a.o", BUILT + 3, b"AAAA"), ("b.o", BUILT + 3, b"BBB")]),
            vec![("archive-metadata", "img")],
            "ar rcsD",
        ),
        (
            "ar member order",
            ar(&[("a.o", 0, b"AAAA"), ("b.o", 0, b"BBB")]),
            ar(&[("b.o", 0, b"BBB"), ("a.o", 0, b"AAAA")]),
            vec![("archive-order", "img")],
            "$(sort ...)",
        ),
        (
            "a path inside an ar member",
            ar(&[("lfs.o", 0, &first)]),
            ar(&[("lfs.o", 0, &second)]),
            vec![("build-path", "img(lfs.o)")],
            "-ffile-prefix-map",
        ),
        (
            "tar times",
            tar(&[("etc/version", BUILT, b"1.2\n")]),
            tar(&[("etc/version", BUILT + 5, b"1.2\n")]),
            vec![("archive-metadata", "img")],
            "--mtime=@$SOURCE_DATE_EPOCH",
        ),
        (
            "tar order",
            tar(&[("a", SDE, b"1"), ("b", SDE, b"2")]),
            tar(&[("b", SDE, b"2"), ("a", SDE, b"1")]),
            vec![("archive-order", "img")],
            "--sort=name",
        ),
        (
            "cpio inodes and times",
            cpio(&[("init", 7, BUILT, b"#!/bin/sh\n")]),
            cpio(&[("init", 912, BUILT + 2, b"#!/bin/sh\n")]),
            vec![("archive-metadata", "img")],
            "--reproducible",
        ),
        (
            "zip times",
            zip(&[("app.bin", 0x5b87, b"x")]),
            zip(&[("app.bin", 0x5b88, b"x")]),
            vec![("archive-metadata", "img")],
            "zip -X",
        ),
        (
            "gzip header",
            gzip(BUILT as u32, true),
            gzip(BUILT as u32 + 4, true),
            vec![("compression-header", "img")],
            "gzip -n",
        ),
    ];
    for (what, a, b, expected, fragment) in cases {
        let mut found = Vec::new();
        examine("img", &a, &b, &ctx(), 0, &mut found);
        assert_eq!(causes(&found), expected, "{what}: {found:#?}");
        assert!(
            found.iter().any(|f| f.detail.contains(fragment) || f.fix.contains(fragment)),
            "{what}: no {fragment:?} in {found:#?}"
        );
    }
}

#[test]
fn one_cause_in_many_members_of_an_archive_is_one_finding() {
    let member = |n: u8| format!("/work/proj/.updraft/build/one/src/f{n}.c").into_bytes();
    let other = |n: u8| format!("/work/proj/.updraft/rebuild/one/src/f{n}.c").into_bytes();
    let (m1, m2, m3) = (member(1), member(2), member(3));
    let (o1, o2, o3) = (other(1), other(2), other(3));
    let a = ar(&[("f1.o", 0, &m1), ("f2.o", 0, &m2), ("f3.o", 0, &m3)]);
    let b = ar(&[("f1.o", 0, &o1), ("f2.o", 0, &o2), ("f3.o", 0, &o3)]);
    let mut found = Vec::new();
    examine("lib.a", &a, &b, &ctx(), 0, &mut found);
    assert_eq!(found.len(), 3);
    let merged = updraft_pipeline::diagnose::merge_members(found);
    assert_eq!(causes(&merged), [("build-path", "lib.a: 3 members: f1.o f2.o f3.o")]);
    assert!(merged[0].detail.starts_with("in f1.o: the build folder is in the image"), "{}", merged[0].detail);
}

#[test]
fn deterministic_differences_are_not_blamed_on_a_cause() {
    // Times equal to SOURCE_DATE_EPOCH, or far from the build, are not the build's.
    let mut found = Vec::new();
    let old = (BUILT - 400 * 86_400).to_string();
    examine("img", format!("v={old} a").as_bytes(), format!("v={old} b").as_bytes(), &ctx(), 0, &mut found);
    examine("img", &gzip(SDE as u32, false), &[gzip(SDE as u32, false), vec![1]].concat(), &ctx(), 0, &mut found);
    assert_eq!(found, vec![]);
}

#[test]
fn the_first_difference_is_shown_in_hex_with_context() {
    let d = first_difference(b"0123456789abcdefXYZ-rest", b"0123456789abcdefxyz-rest").unwrap();
    assert!(d.starts_with("first difference at byte 16 (0x10), 3 bytes from there\n"), "{d}");
    assert!(d.contains("first:  38 39 61 62 63 64 65 66 58 59 5a"), "{d}");
    assert!(d.contains("|89abcdefXYZ-rest|"), "{d}");
    let d = first_difference(b"same", b"same+more").unwrap();
    assert!(d.contains("at byte 4") && d.contains("sizes 4 and 9 bytes"), "{d}");
    assert_eq!(first_difference(b"same", b"same"), None);
}

/// Real objects: the same C file with `__FILE__`, compiled in two folders
/// by absolute path, and archived with `ar` (not deterministic: `U`).
#[test]
fn a_real_object_and_static_library_with_file_paths_are_diagnosed() {
    let have = |c: &str| std::process::Command::new(c).arg("--version").output().is_ok();
    if !have("cc") || !have("ar") {
        assert!(std::env::var("CI").is_err(), "cc and ar are needed (apt-get install gcc binutils)");
        eprintln!("skipped: no cc or ar");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let mut libs = Vec::new();
    for tree in ["build/lfs", "rebuild/lfs"] {
        let dir = root.join(tree);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("lfs.c"),
            "#include <assert.h>\nint lfs_check(int x) { assert(x > 0); return x * 2; }\n",
        )
        .unwrap();
        let src = dir.join("lfs.c");
        let ok = std::process::Command::new("cc")
            .args(["-O2", "-c", "-o"])
            .arg(dir.join("lfs.o"))
            .arg(&src)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let ok = std::process::Command::new("ar")
            .arg("rcsU")
            .arg(dir.join("liblfs.a"))
            .arg(dir.join("lfs.o"))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        libs.push(dir.join("liblfs.a"));
    }
    let ctx = Context {
        first_tree: root.join("build/lfs"),
        second_tree: root.join("rebuild/lfs"),
        window_s: (BUILT, BUILT),
        source_date_epoch: SDE,
        user: None,
        host: None,
    };
    let d = updraft_pipeline::diagnose::diagnose_files("lib", &libs[0], &libs[1], &ctx).unwrap();
    let got = causes(&d.findings);
    assert!(got.contains(&("build-path", "liblfs.a(lfs.o)")), "{:#?}", d.findings);
    assert!(got.contains(&("elf-sections", "liblfs.a(lfs.o)")), "{:#?}", d.findings);
    let path = d.findings.iter().find(|f| f.location == "liblfs.a(lfs.o)" && f.cause == "build-path").unwrap();
    assert!(path.detail.contains("/build/lfs/lfs.c"), "{}", path.detail);
    let elf = d.findings.iter().find(|f| f.cause == "elf-sections").unwrap();
    assert!(elf.detail.contains(".rodata"), "{}", elf.detail);
    assert!(d.first_difference.is_some());
}
