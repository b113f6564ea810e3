//! The agent's log: one line per message on stderr (journald adds the time
//! and the unit under the shipped systemd unit), filtered by `UPDRAFT_LOG`
//! (`error`, `warn`, `info` (the default), `debug`, or `off`). A logging
//! framework would cost more binary size than these lines; the agent has
//! one thread and one sink.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

/// How much to say, from `off` (0) to `debug` (4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static MAX: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// The newest lines written (at any level that is written), for failure
/// reports: the server keeps them with the device's history.
static RECENT: std::sync::Mutex<std::collections::VecDeque<String>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());
/// Bytes of recent lines kept.
pub const RECENT_BYTES: usize = 16 * 1024;

/// Reads `UPDRAFT_LOG`; an unknown value keeps `info` and says so.
pub fn init_from_env() {
    let Ok(v) = std::env::var("UPDRAFT_LOG") else { return };
    let level = match v.trim().to_ascii_lowercase().as_str() {
        "off" | "none" => 0,
        "error" => 1,
        "warn" | "warning" => 2,
        "" | "info" => 3,
        "debug" | "trace" => 4,
        other => {
            log(Level::Warn, &format!("UPDRAFT_LOG={other:?} is not a level; hint: off, error, warn, info or debug"));
            3
        }
    };
    MAX.store(level, Ordering::Relaxed);
}

/// Writes messages up to `level` only (`None`: nothing), whatever
/// `UPDRAFT_LOG` says: for programs that run agents in-process (the demo).
pub fn set_max(level: Option<Level>) {
    MAX.store(level.map_or(0, |l| l as u8), Ordering::Relaxed);
}

/// Whether messages at `level` are written.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX.load(Ordering::Relaxed)
}

/// Writes one line at `level` (newlines in `message` are kept on one line).
pub fn log(level: Level, message: &str) {
    if !enabled(level) {
        return;
    }
    let line = format!("{}: {}\n", level.name(), message.trim_end().replace('\n', " | "));
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    recent.push_back(line);
    let mut size: usize = recent.iter().map(String::len).sum();
    while size > RECENT_BYTES {
        match recent.pop_front() {
            Some(l) => size -= l.len(),
            None => break,
        }
    }
}

/// The newest log lines, oldest first (at most [`RECENT_BYTES`]).
pub fn recent() -> String {
    RECENT.lock().unwrap_or_else(|e| e.into_inner()).iter().map(String::as_str).collect()
}

pub fn error(message: &str) {
    log(Level::Error, message)
}
pub fn warn(message: &str) {
    log(Level::Warn, message)
}
pub fn info(message: &str) {
    log(Level::Info, message)
}
pub fn debug(message: &str) {
    log(Level::Debug, message)
}
