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
#[serde(rename_all = "camelCase")]
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
    /// The device's serial console log, kept beside the JUnit.
    pub serial_log: Option<PathBuf>,
    /// The lab's place the run had reserved (its lock's acquire printed it).
    pub place: Option<String>,
    /// Why earlier tries of this run failed for the lab's reasons.
    pub infra_failures: Vec<String>,
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

/// How a command ended: its exit code (None if killed) or a timeout.
struct Ended {
    code: Option<i32>,
    timed_out: bool,
}

/// Runs `args` in `dir` with `env`, output appended to `log` (and stdout to
/// `stdout` where given), killed after `timeout_s`.
fn run_command(
    args: &[String],
    dir: &Path,
    env: &[(String, String)],
    log: &Path,
    stdout: Option<&Path>,
    timeout_s: u64,
) -> Result<Ended, PipelineError> {
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(io(format!("cannot open {}", p.display())))
    };
    let err = open(log)?;
    let out = match stdout {
        Some(p) => std::fs::File::create(p).map_err(io(format!("cannot create {}", p.display())))?,
        None => err.try_clone().map_err(io("cannot duplicate the log file"))?,
    };
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(io(format!("cannot run {:?}", args[0])))?;
    let (tx, rx) = mpsc::channel();
    let id = child.id();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(Duration::from_secs(timeout_s)) {
        Ok(status) => {
            let _ = waiter.join();
            Ok(Ended { code: status.ok().and_then(|s| s.code()), timed_out: false })
        }
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            let _ = waiter.join();
            Ok(Ended { code: None, timed_out: true })
        }
    }
}

/// What a lock's acquire command printed: `NAME=VALUE` lines (with or
/// without `export`, values optionally quoted) and the place (the last
/// other non-empty line).
pub fn parse_reservation(text: &str) -> (Vec<(String, String)>, Option<String>) {
    let mut env = Vec::new();
    let mut place = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let assignment = line.strip_prefix("export ").unwrap_or(line);
        match assignment.split_once('=') {
            Some((k, v))
                if !k.is_empty()
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !k.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                let v = v.trim_matches(|c| c == '"' || c == '\'');
                env.push((k.to_owned(), v.to_owned()));
            }
            _ => place = Some(line.to_owned()),
        }
    }
    (env, place)
}

/// Runs one job in `dir`: the family's build tree when this run built it
/// (a target of one family never sees another family's outputs), else the
/// project's root. With a lock, the device is reserved around the run; a
/// run that fails for the lab's reasons is run again within the target's
/// `infra_retries`.
fn run_one(dir: &Path, spec: &Spec, job: &Job, reports: &Path) -> TestRun {
    let t = spec.targets.iter().find(|t| t.name == job.target).expect("a target of the spec");
    let stem = format!("{}-{}-{}", job.family, job.target, job.attempt);
    let log = reports.join(format!("{stem}.log"));
    let _ = std::fs::remove_file(&log);
    let started = Instant::now();
    let mut infra_failures = Vec::new();
    loop {
        let (mut run, infra) = attempt(dir, spec, job, reports, &stem, &log);
        let Some(reason) = infra else {
            run.infra_failures = infra_failures;
            run.duration_s = started.elapsed().as_secs_f64();
            return run;
        };
        infra_failures.push(reason.clone());
        if infra_failures.len() as u32 > t.infra_retries {
            run.error = Some(format!(
                "the lab failed ({}){}",
                reason,
                if t.infra_retries > 0 {
                    format!(", {} retries spent (infra_retries)", t.infra_retries)
                } else {
                    String::new()
                }
            ));
            run.infra_failures = infra_failures;
            run.duration_s = started.elapsed().as_secs_f64();
            return run;
        }
        let _ = std::fs::OpenOptions::new().append(true).create(true).open(&log).and_then(|mut f| {
            use std::io::Write;
            writeln!(
                f,
                "--- updraft: the lab failed ({reason}); infrastructure retry {} of {}",
                infra_failures.len(),
                t.infra_retries
            )
        });
    }
}

/// One try of a job; the second value says why the lab (not the firmware)
/// failed, if it did.
fn attempt(dir: &Path, spec: &Spec, job: &Job, reports: &Path, stem: &str, log: &Path) -> (TestRun, Option<String>) {
    let t = spec.targets.iter().find(|t| t.name == job.target).expect("a target of the spec");
    let fam = spec.families.iter().find(|f| f.name == job.family).expect("a family of the spec");
    let mut run = TestRun {
        family: job.family.clone(),
        target: job.target.clone(),
        kind: t.kind,
        attempt: job.attempt,
        exit_ok: false,
        timed_out: false,
        duration_s: 0.0,
        log: log.to_path_buf(),
        junit: None,
        serial_log: None,
        place: None,
        infra_failures: Vec::new(),
        cases: Vec::new(),
        error: None,
    };
    let mut env: Vec<(String, String)> = fam.env.iter().chain(&t.env).map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend([
        ("UPDRAFT_FAMILY".to_owned(), job.family.clone()),
        ("UPDRAFT_TARGET".to_owned(), job.target.clone()),
        ("UPDRAFT_ATTEMPT".to_owned(), job.attempt.to_string()),
        ("UPDRAFT_BUILD_DIR".to_owned(), dir.display().to_string()),
    ]);
    // Reserve the device.
    let mut place = String::new();
    if let Some(lock) = &t.lock {
        let printed = reports.join(format!("{stem}.lock"));
        let args: Vec<String> = lock.acquire.iter().map(|a| expand(a, &job.family, &job.target)).collect();
        match run_command(&args, dir, &env, log, Some(&printed), lock.timeout_s) {
            Ok(Ended { code: Some(0), .. }) => {
                let (vars, p) = parse_reservation(&std::fs::read_to_string(&printed).unwrap_or_default());
                let _ = std::fs::remove_file(&printed);
                env.extend(vars);
                place = p.unwrap_or_default();
                env.push(("UPDRAFT_PLACE".to_owned(), place.clone()));
                run.place = Some(place.clone()).filter(|p| !p.is_empty());
            }
            Ok(Ended { timed_out: true, .. }) => {
                return (run, Some(format!("no device reserved within {} s (lock.timeout_s)", lock.timeout_s)));
            }
            Ok(Ended { code, .. }) => {
                let code = code.map(|c| c.to_string()).unwrap_or_else(|| "a signal".into());
                return (run, Some(format!("the lock's acquire command failed (exit {code}; log: {})", log.display())));
            }
            Err(e) => return (run, Some(e.to_string())),
        }
    }
    let sub = |s: &str| expand(s, &job.family, &job.target).replace("{place}", &place);
    let junit_src = dir.join(sub(&t.junit));
    let serial_src = t.serial_log.as_deref().map(|s| dir.join(sub(s)));
    let _ = std::fs::remove_file(&junit_src);
    if let Some(s) = &serial_src {
        let _ = std::fs::remove_file(s);
    }
    let args: Vec<String> = t.command.iter().map(|a| sub(a)).collect();
    let ended = run_command(&args, dir, &env, log, None, t.timeout_s);
    // Give the device back, whatever happened.
    if let Some(lock) = t.lock.as_ref().filter(|l| !l.release.is_empty()) {
        let args: Vec<String> = lock.release.iter().map(|a| sub(a)).collect();
        match run_command(&args, dir, &env, log, None, lock.timeout_s) {
            Ok(Ended { code: Some(0), .. }) => {}
            _ => {
                let _ = std::fs::OpenOptions::new().append(true).open(log).and_then(|mut f| {
                    use std::io::Write;
                    writeln!(f, "--- updraft: warning: the lock's release command failed")
                });
            }
        }
    }
    let mut infra = None;
    match ended {
        Err(e) => run.error = Some(format!("{e} for {}/{}", job.family, job.target)),
        Ok(Ended { code, timed_out }) => {
            run.exit_ok = code == Some(0);
            run.timed_out = timed_out;
            if timed_out {
                run.error = Some(format!("timed out after {} s", t.timeout_s));
                if t.kind == TargetKind::Hil || t.infra_retries > 0 {
                    infra = Some(format!("timed out after {} s", t.timeout_s));
                }
            } else if let Some(c) = code.filter(|c| t.infra_exit_codes.contains(c)) {
                infra = Some(format!("exit {c}, one of infra_exit_codes"));
            }
        }
    }
    if let Some(src) = serial_src.filter(|s| s.is_file()) {
        let kept = reports.join(format!("{stem}.serial.log"));
        match std::fs::copy(&src, &kept) {
            Ok(_) => run.serial_log = Some(kept),
            Err(e) => run.error = Some(format!("cannot keep the serial log {}: {e}", src.display())),
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
    } else {
        if run.error.is_none() {
            run.error = Some(format!(
                "the command wrote no JUnit report at {}; check `junit` in updraft.toml (log: {})",
                junit_src.display(),
                log.display()
            ));
        }
        if infra.is_none() && t.kind == TargetKind::Hil {
            infra = Some("no JUnit report".into());
        }
    }
    (run, infra)
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
