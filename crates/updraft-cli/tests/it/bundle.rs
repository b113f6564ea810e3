use std::path::Path;

use crate::{create_args, have, key, strs, updraft, updraft_with, workspace};

fn create(dir: &Path, sign_with: &[String]) {
    updraft(dir, &strs(&create_args("fw", "fw.bundle", sign_with))).ok();
}

fn both() -> Vec<String> {
    vec![key("release-a.key"), key("release-c.key")]
}

#[test]
fn inspect_output() {
    let dir = workspace();
    create(dir.path(), &both());
    let run = updraft(dir.path(), &["bundle", "inspect", "fw.bundle"]).ok();
    expect_test::expect_file!["snapshots/inspect.txt"].assert_eq(&run.stdout);
    let run = updraft(dir.path(), &["bundle", "inspect", "fw.bundle", "--json"]).ok();
    expect_test::expect_file!["snapshots/inspect.json"].assert_eq(&run.stdout);
}

#[test]
fn verify_output_and_exit_codes() {
    let dir = workspace();
    create(dir.path(), &both());
    let verify = |extra: &[&str]| {
        let mut args = vec!["bundle", "verify", "fw.bundle", "--trust", "root.json"];
        args.extend_from_slice(extra);
        updraft(dir.path(), &args)
    };
    let run = verify(&["--family", "nrf52", "--hardware", "rev-c", "--min-security-version", "7", "--sha512"]).ok();
    expect_test::expect_file!["snapshots/verify.txt"].assert_eq(&run.stdout);
    let run = verify(&["--json"]).ok();
    expect_test::expect_file!["snapshots/verify.json"].assert_eq(&run.stdout);

    // Rejections: exit 1, the reason on stdout.
    let mut report = String::new();
    for extra in [&["--family", "esp32"][..], &["--hardware", "rev-a"], &["--min-security-version", "8"]] {
        for json in [false, true] {
            let mut args = extra.to_vec();
            if json {
                args.push("--json");
            }
            let run = verify(&args);
            assert_eq!(run.code, 1, "{}", run.stderr);
            report.push_str(&format!("$ verify {}\n{}", args.join(" "), run.stdout));
        }
    }
    expect_test::expect_file!["snapshots/verify-rejected.txt"].assert_eq(&report);

    // Errors: exit 2.
    let run = updraft(dir.path(), &["bundle", "verify", "missing.bundle", "--trust", "root.json"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cannot open missing.bundle"), "{}", run.stderr);
    let run = updraft(dir.path(), &["bundle", "verify", "fw.bundle", "--trust", "fw.bundle"]);
    assert_eq!(run.code, 1, "a bundle is not a trust root: {}", run.stderr);
}

#[test]
fn a_threshold_is_collected_on_different_machines() {
    let dir = workspace();
    create(dir.path(), &[key("release-a.key")]);
    let verify = || updraft(dir.path(), &["bundle", "verify", "fw.bundle", "--trust", "root.json"]);
    let run = verify();
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "rejected: fw.bundle: manifest.dsse.json: 1 valid release signature(s), 2 required\n");
    let run = updraft(dir.path(), &["bundle", "sign", "fw.bundle", "--key", &key("release-c.key")]).ok();
    assert!(run.stdout.starts_with("added signature by 2dbc41da"), "{}", run.stdout);
    verify().ok();
    let run = updraft(dir.path(), &["bundle", "sign", "fw.bundle", "--key", &key("release-c.key"), "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["outcome"], "already-signed");
    // A retired key under a rotated root: the bundle must be signed by current keys.
    let run = updraft(dir.path(), &["bundle", "sign", "fw.bundle", "--key", &key("release-a.pub")]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("hint: pass the .key file"), "{}", run.stderr);
}

#[test]
fn create_is_byte_identical_across_folders_umasks_locales_and_order() {
    let dir = workspace();
    create(dir.path(), &both());
    let other = dir.path().join("elsewhere/deep");
    crate::write_firmware(&other.join("fw"));
    // Other folder, umask, locale, time zone; images, hardware and keys in another order.
    let mut args = create_args("fw", "again.bundle", &[key("release-c.key"), key("release-a.key")]);
    let hw = args.iter().position(|a| a == "rev-c").unwrap();
    args[hw] = "rev-d".into();
    args[hw + 2] = "rev-c".into();
    let img = args.iter().position(|a| a == "--image").unwrap();
    let comp = args.iter().position(|a| a == "--component-image").unwrap();
    args.swap(img, comp);
    args.swap(img + 1, comp + 1);
    let script = "umask 077; exec \"$0\" \"$@\"".to_owned();
    let mut full = vec!["-c".to_owned(), script, env!("CARGO_BIN_EXE_updraft").to_owned()];
    full.extend(args);
    let out = std::process::Command::new("sh")
        .args(&full)
        .current_dir(&other)
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "Pacific/Kiritimati")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a = std::fs::read(dir.path().join("fw.bundle")).unwrap();
    let b = std::fs::read(other.join("again.bundle")).unwrap();
    assert!(a == b, "bundles differ");
}

#[test]
fn create_refuses_without_source_date_epoch_and_leaves_nothing() {
    let dir = workspace();
    let mut args = create_args("fw", "fw.bundle", &both());
    let at = args.iter().position(|a| a == "--source-date-epoch").unwrap();
    args.drain(at..at + 2);
    let run = updraft(dir.path(), &strs(&args));
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("SOURCE_DATE_EPOCH is not set and this is not a git repository"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: export SOURCE_DATE_EPOCH="), "{}", run.stderr);
    assert!(!dir.path().join("fw.bundle").exists());
    // Set but empty (`$(git log ...)` outside a repository) is the same.
    let run = updraft_with(dir.path(), &strs(&args), |c| {
        c.env("SOURCE_DATE_EPOCH", "");
    });
    assert_eq!(run.code, 2, "{}", run.stderr);
    // From the environment, it works.
    let run = updraft_with(dir.path(), &strs(&args), |c| {
        c.env("SOURCE_DATE_EPOCH", crate::SDE);
    });
    run.ok();
    // A missing image: an error, and no output file.
    let mut args = create_args("fw", "other.bundle", &both());
    let img = args.iter().position(|a| a.starts_with("rootfs=")).unwrap();
    args[img] = "rootfs=fw/nope.img".into();
    let run = updraft(dir.path(), &strs(&args));
    assert_eq!(run.code, 2);
    assert!(!dir.path().join("other.bundle").exists());
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn in_ci_the_provenance_names_the_runner_and_the_run() {
    let dir = workspace();
    let mut args = create_args("fw", "fw.bundle", &both());
    for flag in ["--source-uri", "--source-commit", "--source-ref"] {
        let at = args.iter().position(|a| a == flag).unwrap();
        args.drain(at..at + 2);
    }
    updraft_with(dir.path(), &strs(&args), |c| {
        c.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_REPOSITORY", "acme/sensor-fw")
            .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
            .env("GITHUB_REF", "refs/tags/v2.3.1")
            .env("GITHUB_RUN_ID", "42")
            .env("GITHUB_RUN_ATTEMPT", "2")
            .env("RUNNER_ENVIRONMENT", "github-hosted");
    })
    .ok();
    let run = updraft(dir.path(), &["bundle", "verify", "fw.bundle", "--trust", "root.json", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["provenance"]["builderId"], "https://github.com/actions/runner/github-hosted");
    assert_eq!(v["provenance"]["invocationId"], "https://github.com/acme/sensor-fw/actions/runs/42/attempts/2");
    assert_eq!(v["manifest"]["source"]["uri"], "git+https://github.com/acme/sensor-fw");
    // GitLab CI.
    updraft_with(dir.path(), &strs(&args), |c| {
        c.env("GITLAB_CI", "true")
            .env("CI_SERVER_URL", "https://gitlab.example.com")
            .env("CI_PROJECT_URL", "https://gitlab.example.com/acme/sensor-fw")
            .env("CI_COMMIT_SHA", "89abcdef0123456789abcdef0123456789abcdef")
            .env("CI_COMMIT_TAG", "v2.3.1")
            .env("CI_JOB_URL", "https://gitlab.example.com/acme/sensor-fw/-/jobs/7")
            .env("CI_RUNNER_ID", "12");
    })
    .ok();
    let run = updraft(dir.path(), &["bundle", "verify", "fw.bundle", "--trust", "root.json", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["provenance"]["builderId"], "https://gitlab.example.com/-/runners/12");
    assert_eq!(v["provenance"]["invocationId"], "https://gitlab.example.com/acme/sensor-fw/-/jobs/7");
}

/// Standard tools read the bundle and check its signatures: GNU tar lists
/// it, OpenSSL verifies the Ed25519 and the ECDSA DSSE signatures over PAE.
#[test]
fn tar_and_openssl_accept_the_bundle() {
    if !have("tar") || !have("openssl") {
        return;
    }
    let dir = workspace();
    create(dir.path(), &both());
    let out = std::process::Command::new("tar")
        .args(["-tvf", "fw.bundle"])
        .current_dir(dir.path())
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    expect_test::expect![[r#"
        -rw-r--r-- 0/0            2847 2026-01-01 00:00 manifest.dsse.json
        -rw-r--r-- 0/0            1802 2026-01-01 00:00 manifest.json
        -rw-r--r-- 0/0            1765 2026-01-01 00:00 meta/provenance.dsse.json
        -rw-r--r-- 0/0             126 2026-01-01 00:00 meta/sbom.cdx.json
        -rw-r--r-- 0/0             950 2026-01-01 00:00 payload/radio
        -rw-r--r-- 0/0          200000 2026-01-01 00:00 payload/rootfs
    "#]]
    .assert_eq(&listing);
    let out = std::process::Command::new("tar")
        .args(["-xOf", "fw.bundle", "manifest.dsse.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let env: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b64 = |s: &serde_json::Value| {
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s.as_str().unwrap()).unwrap()
    };
    let payload = b64(&env["payload"]);
    let mut pae = format!(
        "DSSEv1 {} {} {} ",
        env["payloadType"].as_str().unwrap().len(),
        env["payloadType"].as_str().unwrap(),
        payload.len()
    )
    .into_bytes();
    pae.extend(&payload);
    std::fs::write(dir.path().join("pae.bin"), &pae).unwrap();
    let ids = [
        ("release-a", std::fs::read_to_string(crate::fixtures().join("keys/release-a.pub")).unwrap()),
        ("release-c", std::fs::read_to_string(crate::fixtures().join("keys/release-c.pub")).unwrap()),
    ];
    let sigs = env["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 2);
    for (name, _) in ids {
        let id = updraft(dir.path(), &["keys", "id", &key(&format!("{name}.pub"))]).ok().stdout.trim().to_owned();
        let sig = sigs.iter().find(|s| s["keyid"] == id.as_str()).expect("signature by key");
        std::fs::write(dir.path().join("sig.bin"), b64(&sig["sig"])).unwrap();
        let args: Vec<String> = if name == "release-a" {
            [
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                &key("release-a.pub"),
                "-rawin",
                "-in",
                "pae.bin",
                "-sigfile",
                "sig.bin",
            ]
            .map(String::from)
            .to_vec()
        } else {
            ["dgst", "-sha256", "-verify", &key("release-c.pub"), "-signature", "sig.bin", "pae.bin"]
                .map(String::from)
                .to_vec()
        };
        let out = std::process::Command::new("openssl").args(&args).current_dir(dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Inside the source's git repository, the commit, the remote and the time
/// of the last commit are taken from it, and said.
#[test]
fn create_takes_the_source_from_the_enclosing_git_repository() {
    let dir = workspace();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("GIT_AUTHOR_DATE", "@1767225600 +0000")
            .env("GIT_COMMITTER_DATE", "@1767225600 +0000")
            .env("GIT_AUTHOR_NAME", "a")
            .env("GIT_AUTHOR_EMAIL", "a@example.com")
            .env("GIT_COMMITTER_NAME", "a")
            .env("GIT_COMMITTER_EMAIL", "a@example.com")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["remote", "add", "origin", "https://user:secret@git.example.com/acme/sensor-fw.git"]);
    git(&["commit", "-q", "--allow-empty", "-m", "v2.3.1"]);
    let commit = git(&["rev-parse", "HEAD"]);
    let mut args = create_args("fw", "fw.bundle", &both());
    for flag in ["--source-uri", "--source-commit", "--source-ref", "--source-date-epoch"] {
        let at = args.iter().position(|a| a == flag).unwrap();
        args.drain(at..at + 2);
    }
    let run = updraft(dir.path(), &strs(&args)).ok();
    assert!(
        run.stderr.contains(&format!(
            "note: source git+https://git.example.com/acme/sensor-fw.git at commit {commit}, from the enclosing git repository"
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("note: SOURCE_DATE_EPOCH=1767225600"), "{}", run.stderr);
    let run = updraft(dir.path(), &["bundle", "inspect", "fw.bundle", "--json"]).ok();
    assert!(run.stdout.contains(&commit) && !run.stdout.contains("secret"), "{}", run.stdout);
}
