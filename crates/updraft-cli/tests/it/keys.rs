use std::os::unix::fs::PermissionsExt;

use crate::updraft;

#[test]
fn generate_writes_a_0600_private_key_and_prints_the_key_id() {
    let dir = tempfile::tempdir().unwrap();
    for (name, alg) in [("ed", "ed25519"), ("ec", "p256")] {
        let run = updraft(dir.path(), &["keys", "generate", "--out-dir", "k", "--name", name, "--algorithm", alg]).ok();
        let id = run.stdout.trim().to_owned();
        assert_eq!(id.len(), 64);
        let mode = |f: &str| std::fs::metadata(dir.path().join("k").join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&format!("{name}.key")), 0o600);
        assert_eq!(mode(&format!("{name}.pub")), 0o644);
        for f in [format!("k/{name}.pub"), format!("k/{name}.key")] {
            assert_eq!(updraft(dir.path(), &["keys", "id", &f]).ok().stdout.trim(), id);
        }
        let json: serde_json::Value =
            serde_json::from_str(&updraft(dir.path(), &["keys", "id", &format!("k/{name}.pub"), "--json"]).ok().stdout)
                .unwrap();
        assert_eq!(json["algorithm"], alg);
    }
    // Never overwritten.
    let before = std::fs::read(dir.path().join("k/ed.key")).unwrap();
    let again = updraft(dir.path(), &["keys", "generate", "--out-dir", "k", "--name", "ed"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(before, std::fs::read(dir.path().join("k/ed.key")).unwrap());
    // Clear errors for bad input.
    let bad = updraft(dir.path(), &["keys", "generate", "--out-dir", "k", "--name", "x", "--algorithm", "rsa"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("invalid value 'rsa' for '--algorithm <ALGORITHM>'"), "{}", bad.stderr);
    assert!(bad.stderr.contains("[possible values: ed25519, p256]"), "{}", bad.stderr);
    let bad = updraft(dir.path(), &["keys", "id", "k/nothing.pub"]);
    assert_eq!(bad.code, 2);
}

/// The keys are standard: OpenSSL reads them and derives the same public key.
#[test]
fn openssl_reads_the_keys() {
    if !crate::have("openssl") {
        return;
    }
    for name in ["release-a", "release-c"] {
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in", &crate::key(&format!("{name}.key"))])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            std::fs::read_to_string(crate::key(&format!("{name}.pub"))).unwrap()
        );
    }
}
