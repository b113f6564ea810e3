//! The test stage: the matrix of families x targets, run in parallel up
//! to a limit, each with a timeout; each writes JUnit XML, which is kept
//! under the output folder for audit and read.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::junit::{self, Case};
use crate::spec::{expand, Spec, TargetKind};
use crate::{io, PipelineError};

/// One run of one target for one family.
#[derive(Clone, Debug, Serialize)]
pub struct TestRun {
    pub family: String,
    pub target: String,
    pub kind: TargetKind,
    /// 1 for the first run, 2 for the retry of a failed one.
    pub attempt: u32,
    pub exit_ok: bool,
    pub timed_out: bool,
    pub duration_s: f64,
    pub log: PathBuf,
    /// The JUnit file as kept for audit.
    pub junit: Option<PathBuf>,
    pub cases: Vec<Case>,
    /// Why the run produced no report, if it did not.
    pub error: Option<String>,
}

impl TestRun {
    pub fn failed_cases(&self) -> impl Iterator<Item = &Case> {
        self.cases.iter().filter(|c| matches!(c.outcome, junit::Outcome::Failed | junit::Outcome::Error))
    }
}

/// A job of the matrix.
#[derive(Clone, Debug)]
pub struct Job {
    pub family: String,
    pub target: String,
    pub attempt: u32,
}

/// The matrix for the given families (all when empty).
pub fn matrix(spec: &Spec, only_family: Option<&str>) -> Vec<Job> {
    let mut jobs = Vec::new();
    for f in spec.families.iter().filter(|f| only_family.is_none_or(|n| n == f.name)) {
        for t in spec.targets.iter().filter(|t| t.families.is_empty() || t.families.contains(&f.name)) {
            jobs.push(Job { family: f.name.clone(), target: t.name.clone(), attempt: 1 });
        }
    }
    jobs
}

/// Runs one job in `dir`: the family's build tree when this run built it
/// (a target of one family never sees another family's outputs), else the
/// project's root.
fn run_one(dir: &Path, spec: &Spec, job: &Job, reports: &Path) -> TestRun {
    let t = spec.targets.iter().find(|t| t.name == job.target).expect("a target of the spec");
    let fam = spec.families.iter().find(|f| f.name == job.family).expect("a family of the spec");
    let stem = format!("{}-{}-{}", job.family, job.target, job.attempt);
    let log = reports.join(format!("{stem}.log"));
    let junit_src = dir.join(expand(&t.junit, &job.family, &job.target));
    let mut run = TestRun {
        family: job.family.clone(),
        target: job.target.clone(),
        kind: t.kind,
        attempt: job.attempt,
        exit_ok: false,
        timed_out: false,
        duration_s: 0.0,
        log: log.clone(),
        junit: None,
        cases: Vec::new(),
        error: None,
    };
    let _ = std::fs::remove_file(&junit_src);
    let args: Vec<String> = t.command.iter().map(|a| expand(a, &job.family, &job.target)).collect();
    let started = Instant::now();
    let result = (|| -> Result<(bool, bool), PipelineError> {
        let out = std::fs::File::create(&log).map_err(io(format!("cannot create {}", log.display())))?;
        let err = out.try_clone().map_err(io("cannot duplicate the log file"))?;
        let mut child = Command::new(&args[0])
            .args(&args[1..])
            .current_dir(dir)
            .envs(&fam.env)
            .envs(&t.env)
            .env("UPDRAFT_FAMILY", &job.family)
            .env("UPDRAFT_TARGET", &job.target)
            .env("UPDRAFT_ATTEMPT", job.attempt.to_string())
            .env("UPDRAFT_BUILD_DIR", dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("cannot run {:?} for {}/{}", args[0], job.family, job.target)))?;
        let (tx, rx) = mpsc::channel();
        let id = child.id();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(Duration::from_secs(t.timeout_s)) {
            Ok(status) => {
                let _ = waiter.join();
                Ok((status.map(|s| s.success()).unwrap_or(false), false))
            }
            Err(_) => {
                let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
                let _ = waiter.join();
                Ok((false, true))
            }
        }
    })();
    run.duration_s = started.elapsed().as_secs_f64();
    match result {
        Err(e) => run.error = Some(e.to_string()),
        Ok((ok, timed_out)) => {
            run.exit_ok = ok;
            run.timed_out = timed_out;
            if timed_out {
                run.error = Some(format!("timed out after {} s", t.timeout_s));
            }
        }
    }
    if junit_src.is_file() {
        let kept = reports.join(format!("{stem}.xml"));
        match std::fs::copy(&junit_src, &kept) {
            Ok(_) => {
                let text = std::fs::read_to_string(&kept).unwrap_or_default();
                match junit::parse(&text, &junit_src.display().to_string()) {
                    Ok(cases) => run.cases = cases,
                    Err(e) => run.error = Some(e.to_string()),
                }
                run.junit = Some(kept);
            }
            Err(e) => run.error = Some(format!("cannot keep {}: {e}", junit_src.display())),
        }
    } else if run.error.is_none() {
        run.error = Some(format!(
            "the command wrote no JUnit report at {}; check `junit` in updraft.toml (log: {})",
            junit_src.display(),
            log.display()
        ));
    }
    run
}

/// Runs `jobs` with at most `parallel` at once; results in job order.
/// Each family's jobs run in its tree from `trees` (its first build), or
/// in `root` where the family was not built in this run.
pub fn run_jobs(
    root: &Path,
    trees: &std::collections::BTreeMap<String, std::path::PathBuf>,
    spec: &Spec,
    jobs: &[Job],
    parallel: usize,
    reports: &Path,
) -> Result<Vec<TestRun>, PipelineError> {
    std::fs::create_dir_all(reports).map_err(io(format!("cannot create {}", reports.display())))?;
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, TestRun)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..parallel.max(1).min(jobs.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let dir = trees.get(&job.family).map(|t| t.as_path()).unwrap_or(root);
                        out.push((i, run_one(dir, spec, job, reports)));
                    }
                    out
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}
