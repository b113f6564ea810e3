//! Bundles: round trips, reproducibility, co-signing, streaming, and every
//! refusal the verifier promises, each naming its reason.

use std::io::Cursor;

use updraft_bundle::archive::{self, header, Reader, Writer, BLOCK};
use updraft_bundle::bundle::{DigestCheck, Policy};
use updraft_bundle::dsse::Envelope;
use updraft_bundle::manifest::{Manifest, MANIFEST_DSSE_PATH, MANIFEST_PATH};
use updraft_bundle::{NoProgress, SignOutcome, Signers};
use updraft_types::SecurityVersion;

use crate::fixture::{build, build_with, keys, params, trusted, write_inputs, Keys, SDE};

fn verify(bytes: &[u8], k: &Keys, policy: &Policy) -> updraft_bundle::Result<updraft_bundle::VerifiedBundle> {
    updraft_bundle::verify(Cursor::new(bytes), &trusted(k), policy, &NoProgress)
}

/// The entries of a bundle, in order.
fn entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut r = Reader::new(Cursor::new(bytes), 1000);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().map_err(|_| ()).unwrap() {
        out.push((e.path, r.read_all().map_err(|_| ()).unwrap()));
    }
    out
}

fn rebuild(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    for (p, d) in entries {
        w.append(p, d, SDE.unix_s()).unwrap();
    }
    w.finish().unwrap()
}

fn offset_of(bytes: &[u8], path: &str) -> usize {
    let mut at = 0;
    loop {
        let name_end = bytes[at..at + 100].iter().position(|&b| b == 0).unwrap_or(100);
        let size = usize::from_str_radix(std::str::from_utf8(&bytes[at + 124..at + 135]).unwrap(), 8).unwrap();
        if &bytes[at..at + name_end] == path.as_bytes() {
            return at;
        }
        at += BLOCK + size.div_ceil(BLOCK) * BLOCK;
    }
}

fn fix_checksum(h: &mut [u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h[..BLOCK].iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

#[test]
fn round_trip_verifies_and_reports_what_it_checked() {
    let k = keys();
    let b = build(&k);
    let bytes = std::fs::read(&b.path).unwrap();
    let v = verify(&bytes, &k, &Policy { digests: DigestCheck::All, ..Policy::default() }).unwrap();
    let m = &v.header.manifest;
    assert_eq!(m.hardware, ["rev-c", "rev-d"], "sorted");
    assert_eq!(m.images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["empty", "radio", "rootfs"]);
    assert_eq!(v.header.signers.len(), 2);
    assert!(v.sha512_checked);
    assert_eq!(v.header.provenance.builder_id, updraft_bundle::provenance::LOCAL_BUILDER_ID);
    let names: Vec<String> = entries(&bytes).into_iter().map(|(p, _)| p).collect();
    expect_test::expect![[r#"
        [
            "manifest.dsse.json",
            "manifest.json",
            "meta/provenance.dsse.json",
            "meta/sbom.cdx.json",
            "payload/empty",
            "payload/radio",
            "payload/rootfs",
        ]
    "#]]
    .assert_debug_eq(&names);
    // Policies that match.
    let policy = Policy {
        family: Some("nrf52".into()),
        hardware: Some("rev-c".into()),
        min_security_version: Some(SecurityVersion(7)),
        ..Policy::default()
    };
    verify(&bytes, &k, &policy).unwrap();
}

#[test]
fn the_manifest_is_verified_before_any_image_byte_is_read() {
    let k = keys();
    let bytes = std::fs::read(build(&k).path).unwrap();
    // Only the metadata and the first image's header: `open` succeeds on a
    // prefix that stops where the image data starts.
    let first_image = offset_of(&bytes, "payload/empty") + BLOCK;
    let stream = updraft_bundle::open(Cursor::new(&bytes[..first_image]), &trusted(&k), &Policy::default()).unwrap();
    assert_eq!(stream.header().manifest.name, "sensor-fw");
    // Streaming an image copies exactly its bytes.
    let mut stream = updraft_bundle::open(Cursor::new(&bytes), &trusted(&k), &Policy::default()).unwrap();
    let mut sinks = Vec::new();
    loop {
        let mut sink = Vec::new();
        match stream.next_image(&mut sink, &NoProgress).unwrap() {
            Some(image) => sinks.push((image.name, sink)),
            None => break,
        }
    }
    stream.finish().unwrap();
    assert_eq!(sinks[2].1, crate::fixture::bytes(300_000, 1));
}

#[test]
fn same_inputs_give_the_same_bytes_from_another_folder_and_order() {
    let k = keys();
    let one = std::fs::read(build_with(&k, &[&k.a, &k.c]).path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("elsewhere/deeper");
    write_inputs(&other);
    let mut p = params(&other);
    p.images.reverse();
    p.hardware.reverse();
    let out = dir.path().join("two.bundle");
    // The signers in the other order too.
    updraft_bundle::create(&p, &Signers { release: vec![&k.c, &k.a], build: &k.build }, &out, &NoProgress).unwrap();
    assert!(one == std::fs::read(&out).unwrap(), "bundles differ");
}

#[test]
fn sign_adds_a_signature_and_changes_nothing_else() {
    let k = keys();
    let b = build_with(&k, &[&k.a]);
    let before = std::fs::read(&b.path).unwrap();
    assert_eq!(verify(&before, &k, &Policy::default()).unwrap_err().rejection().unwrap().code(), "below-threshold");
    let (outcome, sigs) = updraft_bundle::sign(&b.path, &k.c, &NoProgress).unwrap();
    assert_eq!((outcome, sigs.len()), (SignOutcome::Added, 2));
    let after = std::fs::read(&b.path).unwrap();
    verify(&after, &k, &Policy::default()).unwrap();
    let (eb, ea) = (entries(&before), entries(&after));
    for (x, y) in eb.iter().zip(&ea) {
        assert_eq!(x.0, y.0);
        if x.0 != MANIFEST_DSSE_PATH {
            assert!(x.1 == y.1, "{} changed", x.0);
        }
    }
    // Equal to a bundle created with both keys at once.
    assert!(after == std::fs::read(build_with(&k, &[&k.a, &k.c]).path).unwrap());
    // Signing again is a no-op.
    assert_eq!(updraft_bundle::sign(&b.path, &k.c, &NoProgress).unwrap().0, SignOutcome::AlreadySigned);
    assert!(after == std::fs::read(&b.path).unwrap());
    // No temporary file is left in the folder.
    let leftovers: Vec<_> = std::fs::read_dir(b.path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

type Mutation = Box<dyn Fn(&Keys, Vec<u8>) -> Vec<u8>>;

fn with_entries(f: impl Fn(&mut Vec<(String, Vec<u8>)>) + 'static) -> Mutation {
    Box::new(move |_, bytes| {
        let mut e = entries(&bytes);
        f(&mut e);
        rebuild(&e)
    })
}

fn edit_manifest(
    f: impl Fn(&mut Manifest) + 'static,
    sign_with: fn(&Keys) -> Vec<&updraft_bundle::PrivateKey>,
) -> Mutation {
    Box::new(move |k, bytes| {
        let mut e = entries(&bytes);
        let mut m: Manifest = serde_json::from_slice(&e[1].1).unwrap();
        f(&mut m);
        let mj = m.to_json();
        let mut env = Envelope::new(updraft_bundle::dsse::MANIFEST_PAYLOAD_TYPE, mj.clone());
        for key in sign_with(k) {
            env.sign(key);
        }
        e[0].1 = env.to_json();
        e[1].1 = mj;
        rebuild(&e)
    })
}

fn at_entry(path: &'static str, f: impl Fn(&mut [u8]) + 'static) -> Mutation {
    Box::new(move |_, mut bytes| {
        let at = offset_of(&bytes, path);
        f(&mut bytes[at..]);
        bytes
    })
}

#[test]
fn every_refusal_names_its_reason() {
    let k = keys();
    let good = std::fs::read(build(&k).path).unwrap();
    let p = Policy::default;
    let cases: Vec<(&str, Mutation, Policy, &str)> = vec![
        (
            "duplicate entry",
            with_entries(|e| {
                let d = e[6].clone();
                e.push(d)
            }),
            p(),
            "duplicate-entry",
        ),
        ("unlisted image entry", with_entries(|e| e.push(("payload/zz".into(), b"x".to_vec()))), p(), "unlisted-entry"),
        (
            "unlisted metadata entry",
            with_entries(|e| e.insert(0, ("extra.txt".into(), b"x".to_vec()))),
            p(),
            "unlisted-entry",
        ),
        (
            "missing image",
            with_entries(|e| {
                e.remove(5);
            }),
            p(),
            "missing-entry",
        ),
        (
            "missing provenance",
            with_entries(|e| {
                e.remove(2);
            }),
            p(),
            "missing-entry",
        ),
        (
            "missing SBOM",
            with_entries(|e| {
                e.remove(3);
            }),
            p(),
            "missing-entry",
        ),
        ("entries out of order", with_entries(|e| e.swap(0, 1)), p(), "out-of-order"),
        ("images swapped", with_entries(|e| e.swap(5, 6)), p(), "missing-entry"),
        ("absolute path", with_entries(|e| e.insert(0, ("/etc/passwd".into(), vec![]))), p(), "bad-path"),
        ("dot-dot path", with_entries(|e| e.push(("payload/../x".into(), vec![]))), p(), "bad-path"),
        (
            "symbolic link",
            at_entry("payload/radio", |h| {
                h[156] = b'2';
                fix_checksum(h)
            }),
            p(),
            "not-regular-file",
        ),
        (
            "hard link",
            at_entry("payload/radio", |h| {
                h[156] = b'1';
                fix_checksum(h)
            }),
            p(),
            "not-regular-file",
        ),
        (
            "device",
            at_entry("payload/radio", |h| {
                h[156] = b'3';
                fix_checksum(h)
            }),
            p(),
            "not-regular-file",
        ),
        (
            "pax header",
            at_entry("payload/radio", |h| {
                h[156] = b'x';
                fix_checksum(h)
            }),
            p(),
            "not-regular-file",
        ),
        ("bad header checksum", at_entry("payload/radio", |h| h[0] ^= 1), p(), "header-checksum"),
        (
            "owner name",
            at_entry("payload/radio", |h| {
                h[265..269].copy_from_slice(b"root");
                fix_checksum(h)
            }),
            p(),
            "non-canonical-header",
        ),
        (
            "mode",
            at_entry("payload/radio", |h| {
                h[100..108].copy_from_slice(b"0000755\0");
                fix_checksum(h)
            }),
            p(),
            "non-canonical-header",
        ),
        (
            "uid",
            at_entry("payload/radio", |h| {
                h[108..116].copy_from_slice(b"0001750\0");
                fix_checksum(h)
            }),
            p(),
            "non-canonical-header",
        ),
        ("non-zero padding", at_entry("payload/radio", |h| h[BLOCK + 1000 + 5] = 1), p(), "non-zero-padding"),
        (
            "trailing data",
            Box::new(|_, mut b| {
                b.extend_from_slice(&[0u8; BLOCK]);
                b
            }),
            p(),
            "trailing-data",
        ),
        (
            "a lone zero block",
            Box::new(|_, mut b| {
                let n = b.len();
                b[n - 1] = 1;
                b
            }),
            p(),
            "not-ustar",
        ),
        ("truncated", Box::new(|_, b| b[..b.len() - 2 * BLOCK - 100].to_vec()), p(), "truncated"),
        ("not a tar at all", Box::new(|_, _| b"hello".repeat(200)), p(), "not-ustar"),
        (
            "oversized manifest",
            Box::new(|_, _| {
                let mut b = header(MANIFEST_DSSE_PATH, 3 * 1024 * 1024, SDE.unix_s()).to_vec();
                b.extend(vec![0u8; 4 * BLOCK]);
                b
            }),
            p(),
            "too-large",
        ),
        ("image digest", at_entry("payload/rootfs", |h| h[BLOCK + 77] ^= 0x80), p(), "digest-mismatch"),
        (
            "image size",
            with_entries(|e| {
                e[6].1.pop();
            }),
            p(),
            "size-mismatch",
        ),
        ("SBOM digest", with_entries(|e| e[3].1[0] = b' '), p(), "digest-mismatch"),
        (
            "manifest differs from the signed payload",
            with_entries(|e| {
                let mut m = e[1].1.clone();
                m.pop();
                m.extend_from_slice(b" \n");
                e[1].1 = m;
            }),
            p(),
            "manifest-mismatch",
        ),
        (
            "envelope not canonical",
            with_entries(|e| {
                let s = String::from_utf8(e[0].1.clone()).unwrap().replacen(",\"", ", \"", 1);
                e[0].1 = s.into_bytes();
            }),
            p(),
            "malformed-envelope",
        ),
        (
            "one signature removed",
            with_entries(|e| {
                let mut env = Envelope::from_json(&e[0].1, "x").unwrap();
                env.signatures.pop();
                e[0].1 = env.to_json();
            }),
            p(),
            "below-threshold",
        ),
        (
            "a signature by an unknown key",
            with_entries(|e| {
                let mut env = Envelope::from_json(&e[0].1, "x").unwrap();
                env.sign(&keys().stranger);
                e[0].1 = env.to_json();
            }),
            p(),
            "untrusted-signature",
        ),
        (
            "a signature duplicated",
            with_entries(|e| {
                let mut env = Envelope::from_json(&e[0].1, "x").unwrap();
                env.signatures.push(env.signatures[0].clone());
                e[0].1 = env.to_json();
            }),
            p(),
            "duplicate-signature",
        ),
        (
            "manifest re-signed by one key only",
            edit_manifest(|m| m.security_version = SecurityVersion(99), |k| vec![&k.a]),
            p(),
            "below-threshold",
        ),
        (
            "provenance signed by a release key",
            with_entries(|e| {
                let mut env = Envelope::from_json(&e[2].1, "x").unwrap();
                env.signatures.clear();
                env.sign(&keys().a);
                e[2].1 = env.to_json();
            }),
            p(),
            "untrusted-signature",
        ),
        (
            "provenance subjects stale",
            edit_manifest(|m| m.version = semver::Version::new(9, 9, 9), |k| vec![&k.a, &k.c]),
            p(),
            "invalid-provenance",
        ),
        ("manifest re-signed unchanged by a threshold", edit_manifest(|_| {}, |k| vec![&k.a, &k.c]), p(), "ok"),
        (
            "mtime differs",
            Box::new(|_, bytes| {
                let mut e = entries(&bytes);
                let mut w = Writer::new(Vec::new());
                for (i, (p, d)) in e.drain(..).enumerate() {
                    w.append(&p, &d, SDE.unix_s() + u64::from(i == 6)).unwrap();
                }
                w.finish().unwrap()
            }),
            p(),
            "mtime-mismatch",
        ),
        (
            "all mtimes moved",
            Box::new(|_, bytes| {
                let mut w = Writer::new(Vec::new());
                for (p, d) in entries(&bytes) {
                    w.append(&p, &d, SDE.unix_s() + 1).unwrap();
                }
                w.finish().unwrap()
            }),
            p(),
            "mtime-mismatch",
        ),
        ("another family", Box::new(|_, b| b), Policy { family: Some("esp32".into()), ..p() }, "wrong-family"),
        (
            "another hardware revision",
            Box::new(|_, b| b),
            Policy { hardware: Some("rev-a".into()), ..p() },
            "wrong-hardware",
        ),
        (
            "a downgrade",
            Box::new(|_, b| b),
            Policy { min_security_version: Some(SecurityVersion(8)), ..p() },
            "security-version-too-low",
        ),
    ];
    let mut report = String::new();
    for (what, mutate, policy, expected) in cases {
        let bytes = mutate(&k, good.clone());
        let got = match verify(&bytes, &k, &policy) {
            Ok(_) => "ok".to_owned(),
            Err(e) => match e.rejection() {
                Some(r) => {
                    report.push_str(&format!("{what}: {r}\n"));
                    r.code().to_owned()
                }
                None => format!("error: {e}"),
            },
        };
        assert_eq!(got, expected, "{what}");
    }
    // Messages name what was wrong (a few, pinned).
    assert!(
        report.contains("symbolic link: entry \"payload/radio\" is a symbolic link; bundles hold only regular files")
    );
    assert!(report.contains("a downgrade: security version 7 is below the minimum 8; refusing a downgrade"));
    assert!(report.contains("one signature removed: manifest.dsse.json: 1 valid release signature(s), 2 required"));
}

#[test]
fn an_expired_trust_root_is_refused_before_any_bundle() {
    let k = keys();
    let r = crate::fixture::root1(&k);
    let err = updraft_bundle::trust::verify_pinned(
        &r,
        crate::fixture::NOW.saturating_add(std::time::Duration::from_secs(2 * 86400)),
    )
    .unwrap_err();
    assert_eq!(err.code(), "trust-root-expired");
}

#[test]
fn the_entry_count_is_limited() {
    let mut w = Writer::new(Vec::new());
    for i in 0..10 {
        w.append(&format!("payload/{i:03}"), b"", 0).unwrap();
    }
    let bytes = w.finish().unwrap();
    let mut r = Reader::new(Cursor::new(bytes), 5);
    let mut seen = 0;
    let err = loop {
        match r.next_entry() {
            Ok(Some(_)) => seen += 1,
            Ok(None) => panic!("limit not enforced"),
            Err(archive::ReadError::Rejected(rej)) => break rej,
            Err(archive::ReadError::Io(e)) => panic!("{e}"),
        }
    };
    assert_eq!((seen, err.code()), (5, "too-many"));
}

#[test]
fn create_refuses_bad_inputs_and_leaves_nothing_behind() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let out = dir.path().join("x.bundle");
    let run = |p: &updraft_bundle::CreateParams| {
        updraft_bundle::create(p, &Signers { release: vec![&k.a], build: &k.build }, &out, &NoProgress)
            .unwrap_err()
            .to_string()
    };
    let mut cases: Vec<(updraft_bundle::CreateParams, &str)> = Vec::new();
    let mut p = params(dir.path());
    p.images[0].path = dir.path().join("missing.img");
    cases.push((p, "cannot read image"));
    let mut p = params(dir.path());
    p.images[1].name = "rootfs".into();
    cases.push((p, "given twice"));
    let mut p = params(dir.path());
    p.images[0].name = "../evil".into();
    cases.push((p, "image name"));
    let mut p = params(dir.path());
    std::fs::write(dir.path().join("bad-sbom.json"), "{\"bomFormat\":\"SPDX\"}").unwrap();
    p.sbom = Some(dir.path().join("bad-sbom.json"));
    cases.push((p, "bomFormat must be"));
    let mut p = params(dir.path());
    p.family = "has space".into();
    cases.push((p, "family"));
    // Markup cannot become a release name (the dashboard shows names).
    let mut p = params(dir.path());
    p.name = "<script>alert(1)</script>".into();
    cases.push((p, "name \"<script>"));
    let mut p = params(dir.path());
    p.hardware.clear();
    cases.push((p, "no compatible hardware"));
    for (p, needle) in cases {
        let msg = run(&p);
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    assert!(!out.exists());
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'));
    assert_eq!(leftovers.count(), 0);
}

#[test]
fn manifest_json_has_the_documented_shape() {
    let k = keys();
    let bytes = std::fs::read(build(&k).path).unwrap();
    let manifest = String::from_utf8(entries(&bytes).remove(1).1).unwrap();
    let _ = MANIFEST_PATH;
    expect_test::expect_file!["snapshots/manifest.json"].assert_eq(&manifest);
    let prov = Envelope::from_json(&entries(&bytes)[2].1, "p").unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&prov.payload).unwrap();
    expect_test::expect_file!["snapshots/provenance.json"]
        .assert_eq(&(serde_json::to_string_pretty(&statement).unwrap() + "\n"));
}

#[test]
fn sizes_of_8_gib_and_more_use_base_256() {
    for size in [0u64, 1, 0o77777777777, 0o77777777777 + 1, 300 * 1024 * 1024 * 1024] {
        let h = header("payload/big", size, SDE.unix_s());
        assert_eq!(h[124] == 0x80, size > 0o77777777777, "{size}");
        let mut r = Reader::new(Cursor::new(h.to_vec()), 10);
        let e = r.next_entry().map_err(|_| ()).unwrap().unwrap();
        assert_eq!((e.path.as_str(), e.size, e.mtime), ("payload/big", size, SDE.unix_s()));
    }
}
