//! Fault injection for the crash-torture test: named points between the
//! steps of multi-step operations where a test build can kill the process.
//! Compiled in only with the `fault-injection` feature (the CLI's tests
//! turn it on); otherwise `point` is an empty function.
//!
//! `UPDRAFT_FAULT_POINT=NAME` and `UPDRAFT_FAULT_AFTER=N` abort the process
//! (no destructors, no flushing: as `kill -9` or a power cut would) the
//! N-th time (from 1) the point `NAME` is reached.

/// Every point, for the tests to choose from.
pub const POINTS: &[&str] = &[
    "journal.batch.before-commit",
    "change.before-commit",
    "change.after-commit",
    "publish.after-upload",
    "publish.after-blob",
    "enroll.before-answer",
];

#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    debug_assert!(POINTS.contains(&name), "unknown fault point {name}");
    let Ok(wanted) = std::env::var("UPDRAFT_FAULT_POINT") else { return };
    if wanted != name {
        return;
    }
    let after: u64 = std::env::var("UPDRAFT_FAULT_AFTER").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 >= after {
        eprintln!("fault injection: aborting at {name}");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
