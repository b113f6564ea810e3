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
