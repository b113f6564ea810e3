//! What the device reports about itself at each check-in: the agent's
//! version, free space where downloads are staged, and the output of the
//! inventory scripts (as Mender's): every executable file in
//! `inventory_dir`, run in name order with a timeout, printing `KEY=VALUE`
//! lines. A script that fails or times out is logged and skipped.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::log;

/// How long one inventory script may run.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most attributes reported (the server keeps as many).
pub const MAX_ATTRIBUTES: usize = updraft_proto::MAX_INVENTORY_ATTRIBUTES;
/// Longest value kept.
pub const MAX_VALUE_BYTES: usize = updraft_proto::MAX_INVENTORY_VALUE_LEN;

/// Free bytes on the file system of `path`, if it can be told.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+' | b':'))
        && !k.contains("..")
}

/// Parses `KEY=VALUE` lines; other lines are ignored.
pub fn parse(text: &str, into: &mut BTreeMap<String, String>) {
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let (k, v) = (k.trim(), v.trim());
        if !valid_key(k) || v.is_empty() || into.len() >= MAX_ATTRIBUTES && !into.contains_key(k) {
            continue;
        }
        let mut v = v.to_owned();
        if v.len() > MAX_VALUE_BYTES {
            let mut cut = MAX_VALUE_BYTES;
            while !v.is_char_boundary(cut) {
                cut -= 1;
            }
            v.truncate(cut);
        }
        into.insert(k.to_owned(), v);
    }
}

/// Runs the scripts of `dir` and collects their attributes.
pub fn run_scripts(dir: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut scripts: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
            .collect(),
        Err(e) => {
            log::warn(&format!("cannot read the inventory folder {}: {e}", dir.display()));
            return out;
        }
    };
    scripts.sort();
    for script in scripts {
        let child = std::process::Command::new(&script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                log::warn(&format!("inventory script {}: cannot run it: {e}", script.display()));
                continue;
            }
        };
        let id = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(SCRIPT_TIMEOUT) {
            Ok(Ok(o)) if o.status.success() => parse(&String::from_utf8_lossy(&o.stdout), &mut out),
            Ok(Ok(o)) => log::warn(&format!("inventory script {} failed: {}", script.display(), o.status)),
            Ok(Err(e)) => log::warn(&format!("inventory script {}: {e}", script.display())),
            Err(_) => {
                let _ = std::process::Command::new("kill").arg("-9").arg(id.to_string()).status();
                log::warn(&format!(
                    "inventory script {} timed out after {} s",
                    script.display(),
                    SCRIPT_TIMEOUT.as_secs()
                ));
            }
        }
    }
    out
}
