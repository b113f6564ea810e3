use crate::{key, updraft, workspace};

#[test]
fn init_refuses_an_incomplete_root_unless_partial_and_sign_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "trust",
        "init",
        "--pubkey",
        &key("release-a.pub"),
        "--pubkey",
        &key("release-b.pub"),
        "--pubkey",
        &key("release-c.pub"),
        "--threshold",
        "2",
        "--build-pubkey",
        &key("build.pub"),
        "--expires",
        "2099-01-01T00:00:00Z",
        "--sign-with",
        &key("release-a.key"),
        "--out",
        "root.json",
    ];
    let run = updraft(dir.path(), &base);
    assert_eq!(run.code, 2);
    expect_test::expect![[r#"
        error: the new root lacks signatures (1 of 2 by its own release keys); hint: pass more --sign-with, or --partial and collect them with `updraft trust sign`
    "#]]
    .assert_eq(&run.stderr);
    assert!(!dir.path().join("root.json").exists());

    let mut partial = base.to_vec();
    partial.push("--partial");
    updraft(dir.path(), &partial).ok();
    assert_eq!(updraft(dir.path(), &["trust", "verify", "root.json"]).code, 1);
    // The second signature, as on another machine.
    let run = updraft(dir.path(), &["trust", "sign", "root.json", "--key", &key("release-c.key")]).ok();
    assert!(run.stdout.contains("complete"), "{}", run.stdout);
    let run = updraft(dir.path(), &["trust", "verify", "root.json"]).ok();
    expect_test::expect![[r#"
        trusted: root.json (version 1)
        trust root version 1, expires 2099-01-01T00:00:00Z
        release keys (2 of 3 must sign):
          2dbc41daa7c2123cfa3f35afabcfe1abc413c0e81ba2b6a3f44f1829198e13f1 p256
          aedcbd7685e140e63c62e6afd55cd293998b9f598d346ecb7d59adac47b97b51 ed25519
          c86ecd2dfdd37cb0a6406724638b9f94bcb33eb05ce012d1e2f55c36069c0374 ed25519
        build keys (1):
          63965bb979f35be685e89407e31cbd650eb0fc8c3f24c2f4140d81c591e179ac ed25519
        signatures: 2
    "#]]
    .assert_eq(&run.stdout);
    // A key that is not listed cannot sign.
    let run = updraft(dir.path(), &["trust", "sign", "root.json", "--key", &key("release-d.key")]);
    assert_eq!(run.code, 2);
    // Bad expiry.
    let mut bad = base.to_vec();
    let at = bad.iter().position(|a| *a == "2099-01-01T00:00:00Z").unwrap();
    bad[at] = "next tuesday";
    let run = updraft(dir.path(), &bad);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("hint: write a duration such as 365d"), "{}", run.stderr);
}

#[test]
fn rotate_and_walk_the_chain() {
    let dir = workspace();
    // v2: B, C, D; signed by B and C (a threshold of v1 and of v2).
    updraft(
        dir.path(),
        &[
            "trust",
            "rotate",
            "--from",
            "root.json",
            "--pubkey",
            &key("release-b.pub"),
            "--pubkey",
            &key("release-c.pub"),
            "--pubkey",
            &key("release-d.pub"),
            "--threshold",
            "2",
            "--build-pubkey",
            &key("build.pub"),
            "--expires",
            "3650d",
            "--sign-with",
            &key("release-b.key"),
            "--sign-with",
            &key("release-c.key"),
            "--out",
            "root.2.json",
        ],
    )
    .ok();
    let run = updraft(dir.path(), &["trust", "verify", "root.json", "root.2.json", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["releaseKeys"].as_array().unwrap().len(), 3);
    // v2 alone, without its predecessor's signatures, is not a valid successor of v1 signed by D only.
    let run = updraft(
        dir.path(),
        &[
            "trust",
            "rotate",
            "--from",
            "root.2.json",
            "--pubkey",
            &key("release-d.pub"),
            "--threshold",
            "1",
            "--build-pubkey",
            &key("build.pub"),
            "--expires",
            "3650d",
            "--sign-with",
            &key("release-d.key"),
            "--out",
            "root.3.json",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("1 of 2 by the previous version's"), "{}", run.stderr);
    let run = updraft(dir.path(), &["trust", "verify", "root.2.json", "root.json"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("version 1 follows version 2"), "{}", run.stderr);
}
