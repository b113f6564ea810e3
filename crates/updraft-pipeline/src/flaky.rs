//! Flaky tests and their quarantine. A test that both passed and failed on
//! the same commit (including a failed run that passes on the pipeline's
//! retry, or a runner's own retry) is flaky: it is quarantined, still runs
//! and is reported, but does not block. A quarantined test that passes
//! `unquarantine_after` times in a row leaves quarantine. The history is a
//! JSON state file (written atomically) under the output folder.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::junit::Outcome;
use crate::test::TestRun;
use crate::{io, PipelineError};

/// Runs remembered per test.
const HISTORY: usize = 50;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TestHistory {
    /// (commit, passed), oldest first.
    pub runs: Vec<(String, bool)>,
    pub quarantined: bool,
    pub passes_in_row: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlakyState {
    /// Keyed `family/target/test id`.
    pub tests: BTreeMap<String, TestHistory>,
}

impl FlakyState {
    pub fn load(path: &Path) -> Result<FlakyState, PipelineError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                PipelineError::Spec(format!(
                    "the flaky-test state {} is not valid: {e}; delete it to start over",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FlakyState::default()),
            Err(e) => Err(io(format!("cannot read {}", path.display()))(e)),
        }
    }

    /// Writes the state atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), PipelineError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(format!("cannot write in {}", dir.display())))?;
        let text = serde_json::to_vec_pretty(self).expect("serializable");
        tmp.write_all(&text).map_err(io("cannot write the flaky-test state"))?;
        tmp.as_file().sync_all().map_err(io("cannot sync the flaky-test state"))?;
        tmp.persist(path).map_err(|e| io(format!("cannot replace {}", path.display()))(e.error))?;
        Ok(())
    }

    pub fn is_quarantined(&self, key: &str) -> bool {
        self.tests.get(key).is_some_and(|h| h.quarantined)
    }

    /// Records one outcome; returns `Some(true)` if the test entered
    /// quarantine, `Some(false)` if it left it.
    pub fn record(
        &mut self,
        commit: &str,
        key: &str,
        passed: bool,
        retried_flaky: bool,
        release_after: u32,
    ) -> Option<bool> {
        let h = self.tests.entry(key.to_owned()).or_default();
        h.runs.push((commit.to_owned(), passed));
        if h.runs.len() > HISTORY {
            h.runs.remove(0);
        }
        let same_commit = h.runs.iter().filter(|(c, _)| c == commit);
        let (mut pass, mut fail) = (false, false);
        for (_, p) in same_commit {
            pass |= *p;
            fail |= !*p;
        }
        let flaky = retried_flaky || (pass && fail);
        if !h.quarantined {
            if flaky {
                h.quarantined = true;
                h.passes_in_row = 0;
                return Some(true);
            }
            return None;
        }
        if passed && !retried_flaky {
            h.passes_in_row += 1;
            if h.passes_in_row >= release_after {
                h.quarantined = false;
                h.passes_in_row = 0;
                // A fresh start: old mixed results of this commit must not re-quarantine it.
                h.runs.clear();
                return Some(false);
            }
        } else {
            h.passes_in_row = 0;
        }
        None
    }
}

/// The tests gate, with its evidence.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestsVerdict {
    pub passed: bool,
    pub cases: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Failures that block (`family/target/test`).
    pub blocking: Vec<String>,
    /// Failures of quarantined tests (reported, not blocking).
    pub quarantined_failures: Vec<String>,
    /// Every test in quarantine after this run.
    pub quarantined: Vec<String>,
    pub newly_quarantined: Vec<String>,
    pub released: Vec<String>,
    /// Runs that produced no usable report, or failed without a failing test.
    pub broken_runs: Vec<String>,
}

/// Records every run (first attempts and retries) and judges the final attempts.
pub fn evaluate(runs: &[TestRun], state: &mut FlakyState, commit: &str, release_after: u32) -> TestsVerdict {
    let mut v = TestsVerdict::default();
    for r in runs {
        for c in r.cases.iter().filter(|c| c.outcome != Outcome::Skipped) {
            let key = format!("{}/{}/{}", r.family, r.target, c.id());
            let passed = c.outcome == Outcome::Passed;
            match state.record(commit, &key, passed, c.retried_flaky, release_after) {
                Some(true) => v.newly_quarantined.push(key),
                Some(false) => v.released.push(key),
                None => {}
            }
        }
    }
    // The last attempt of each (family, target) decides.
    let mut last: BTreeMap<(String, String), &TestRun> = BTreeMap::new();
    for r in runs {
        let k = (r.family.clone(), r.target.clone());
        if last.get(&k).is_none_or(|p| p.attempt < r.attempt) {
            last.insert(k, r);
        }
    }
    for r in last.values() {
        v.cases += r.cases.len();
        v.skipped += r.cases.iter().filter(|c| c.outcome == Outcome::Skipped).count();
        let mut failing = 0;
        for c in r.failed_cases() {
            failing += 1;
            v.failed += 1;
            let key = format!("{}/{}/{}", r.family, r.target, c.id());
            if state.is_quarantined(&key) {
                v.quarantined_failures.push(key);
            } else {
                v.blocking.push(key);
            }
        }
        if let Some(e) = &r.error {
            v.broken_runs.push(format!("{}/{}: {e}", r.family, r.target));
        } else if !r.exit_ok && failing == 0 {
            v.broken_runs.push(format!(
                "{}/{}: the command failed but its report has no failing test (log: {})",
                r.family,
                r.target,
                r.log.display()
            ));
        }
    }
    v.quarantined = state.tests.iter().filter(|(_, h)| h.quarantined).map(|(k, _)| k.clone()).collect();
    v.passed = v.blocking.is_empty() && v.broken_runs.is_empty();
    v
}
