//! Trust roots: pinning, rotation chains, and every way a chain breaks.

use std::time::Duration;

use updraft_bundle::trust::{self, SignedRoot};

use crate::fixture::{keys, root1, root_params, Keys, NOW};
use updraft_types::Timestamp;

fn later(days: u64) -> Timestamp {
    NOW.saturating_add(Duration::from_secs(days * 86400))
}

/// v2 retires A and adds D (B, C, D; threshold 2).
fn v2(k: &Keys, signers: &[&updraft_bundle::PrivateKey]) -> SignedRoot {
    trust::rotate(&root1(k).root, root_params(k, &[&k.b, &k.c, &k.d], 2, later(30)), signers).unwrap()
}

fn reparse(r: &SignedRoot) -> SignedRoot {
    SignedRoot::parse(&r.to_json()).unwrap()
}

#[test]
fn a_pinned_root_needs_a_threshold_of_its_own_keys_and_must_be_current() {
    let k = keys();
    let r1 = reparse(&root1(&k));
    assert_eq!(trust::verify_pinned(&r1, NOW).unwrap().root().version, 1);
    let err = trust::verify_pinned(&r1, later(2)).unwrap_err();
    assert_eq!(err.code(), "trust-root-expired", "{err}");

    let one = trust::init(root_params(&k, &[&k.a, &k.b, &k.c], 2, later(1)), &[&k.a]).unwrap();
    assert_eq!(trust::verify_pinned(&reparse(&one), NOW).unwrap_err().code(), "below-threshold");
    assert!(!trust::signing_status(&one, None).complete());

    let strange = trust::init(root_params(&k, &[&k.a, &k.b, &k.c], 2, later(1)), &[&k.a, &k.b, &k.stranger]).unwrap();
    assert_eq!(trust::verify_pinned(&reparse(&strange), NOW).unwrap_err().code(), "untrusted-signature");

    assert_eq!(
        trust::init(root_params(&k, &[&k.a], 2, later(1)), &[&k.a]).unwrap_err().code(),
        "invalid-trust-root",
        "threshold above the number of keys"
    );
}

#[test]
fn a_holder_of_version_1_walks_to_version_3_and_trusts_only_its_keys() {
    let k = keys();
    let r1 = root1(&k);
    let r2 = reparse(&v2(&k, &[&k.b, &k.c]));
    assert!(trust::signing_status(&r2, Some(&r1.root)).complete());
    // v3: D and the stranger's key, threshold 1; signed by a threshold of v2 (C, D) and of itself (D).
    let r3 = trust::rotate(&r2.root, root_params(&k, &[&k.d, &k.stranger], 1, later(60)), &[&k.c, &k.d]).unwrap();
    let r3 = reparse(&r3);
    let trusted = trust::verify_chain(&r1, &[r2.clone(), r3.clone()], NOW).unwrap();
    assert_eq!(trusted.root().version, 3);
    assert!(!trusted.root().is_release_key(k.a.id()));
    assert!(!trusted.root().is_release_key(k.b.id()));
    assert!(trusted.root().is_release_key(k.stranger.id()));
    // Intermediate versions may have expired; the last one must not.
    assert_eq!(trust::verify_chain(&r1, &[r2.clone(), r3.clone()], later(45)).unwrap().root().version, 3);
    assert_eq!(trust::verify_chain(&r1, &[r2], later(45)).unwrap_err().code(), "trust-root-expired");
}

#[test]
fn broken_chains_are_refused_with_the_reason() {
    let k = keys();
    let r1 = root1(&k);
    let cases: Vec<(&str, SignedRoot, &str)> = vec![
        // A and B are old keys only: no threshold of the new version.
        ("no threshold of the new keys", v2(&k, &[&k.a, &k.b]), "below-threshold"),
        // D is new only; C is both: one old signature, threshold 2.
        ("no threshold of the old keys", v2(&k, &[&k.c, &k.d]), "below-threshold"),
        ("a signature by neither version", v2(&k, &[&k.b, &k.c, &k.stranger]), "untrusted-signature"),
        (
            "a skipped version",
            {
                let r2 = v2(&k, &[&k.b, &k.c]);
                trust::rotate(&r2.root, root_params(&k, &[&k.b, &k.c, &k.d], 2, later(30)), &[&k.b, &k.c]).unwrap()
            },
            "trust-chain",
        ),
    ];
    for (what, r2, code) in cases {
        let err = trust::verify_chain(&r1, &[reparse(&r2)], NOW).unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err}");
    }
}

#[test]
fn root_files_are_strictly_parsed() {
    let k = keys();
    let json = String::from_utf8(root1(&k).to_json()).unwrap();
    assert!(SignedRoot::parse(json.as_bytes()).is_ok());
    for (what, bad) in [
        ("not json", "{".to_owned()),
        ("wrong payload type", json.replace("trust-root.v1+json", "trust-root.v9+json")),
        ("oversized", " ".repeat(trust::MAX_TRUST_ROOT_BYTES + 1)),
    ] {
        assert!(SignedRoot::parse(bad.as_bytes()).is_err(), "{what}");
    }
}
