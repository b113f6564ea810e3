//! `updraft demo`: the README's first command, end to end.

use crate::updraft;

#[test]
fn the_demo_rolls_a_good_release_out_and_a_bad_one_back() {
    let dir = tempfile::tempdir().unwrap();
    let r = updraft(dir.path(), &["demo", "--image-mib", "1", "--devices", "40", "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["passed"], true, "{v:#}");
    let f = &v["fleet"];
    assert_eq!(f["goodState"], "completed");
    assert_eq!(f["goodCommitted"], 40);
    assert_eq!(f["badState"], "rolled_back");
    assert!(f["badReason"].as_str().unwrap().contains("rev-c"), "{f}");
    assert_eq!(f["onGoodAtEnd"], 40, "every device runs the good release at the end");
    assert!(f["badReverted"].as_u64().unwrap() > 0);

    // Flags are checked before any work: nothing is written.
    let r = updraft(dir.path(), &["demo", "--devices", "3", "--dir", "work"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--devices must be at least 40"), "{}", r.stderr);
    assert!(!dir.path().join("work").exists(), "the demo worked before refusing its flags");
}

/// Starts the demo, waits until stderr shows `line`, sends `signal`, and
/// returns the exit code and how long the demo took to stop.
fn stop_demo_with(args: &[&str], line: &str, signal: &str) -> (Option<i32>, std::time::Duration) {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_updraft"))
        .arg("demo")
        .args(args)
        .current_dir(dir.path())
        .env("NO_PROGRESS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let seen = lines.by_ref().map_while(Result::ok).any(|l| l.contains(line));
    assert!(seen, "the demo never printed {line:?}");
    std::thread::spawn(move || for _ in lines {});
    let sent = std::time::Instant::now();
    let status = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    // Wait for the exit on another thread, with a generous bound so that a
    // demo that ignores the signal fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait().map(|s| s.code()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(code) => (code.unwrap(), sent.elapsed()),
        Err(_) => {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("the demo did not stop within 30 s of {signal}");
        }
    }
}

#[test]
fn the_demo_stops_on_sigterm_and_ctrl_c() {
    // --keep: the server keeps running until a signal.
    let (code, took) = stop_demo_with(
        &["--image-mib", "1", "--devices", "40", "--keep", "--dir", "kept"],
        "the server keeps running",
        "-TERM",
    );
    assert_eq!(code, Some(143), "SIGTERM ends the demo (took {took:?})");
    // Ctrl-C in the middle of the fleet part.
    let (code, took) = stop_demo_with(&["--image-mib", "1", "--devices", "40"], "ok   server", "-INT");
    assert_eq!(code, Some(130), "SIGINT ends the demo (took {took:?})");
    eprintln!("the demo stopped {took:?} after SIGINT");
}
