//! `updraft pipeline`: gated firmware CI from `updraft.toml`.
//!
//! Today: `plan` (the stage graph) and `run` with the build stage (every
//! family built, then built again elsewhere and compared), the test stage
//! (the matrix, retries, flaky quarantine) and the gates (reproducible,
//! tests, coverage, vulnerabilities, secrets). Bundle and publish stages
//! are being built (issue 7).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use updraft_bundle::fsutil::Overwrite;
use updraft_pipeline::build::{self, Reproduction};
use updraft_pipeline::flaky::{self, FlakyState, TestsVerdict};
use updraft_pipeline::test::{self, TestRun};
use updraft_pipeline::Spec;

use crate::client::ClientArgs;
use crate::output::emit;
use crate::{Ctx, REJECTED};

#[derive(Subcommand)]
pub enum PipelineCmd {
    /// Show the stage graph: builds, reproductions, the test matrix, gates, bundles, publish.
    #[command(
        after_help = "Examples:\n  updraft pipeline plan\n  (cd examples/firmware && updraft pipeline plan --json)"
    )]
    Plan(Common),
    /// Run stages.
    #[command(
        after_help = "Examples:\n  SOURCE_DATE_EPOCH=1767225600 updraft pipeline run\n  updraft pipeline run --stage build --family nrf52 --release-version 2.3.1"
    )]
    Run {
        #[command(flatten)]
        common: Common,
        /// `all`, or one stage: `build` (with the reproducibility check) or `test` (the matrix).
        #[arg(long, default_value = "all")]
        stage: String,
        /// Only this family.
        #[arg(long)]
        family: Option<String>,
        /// SOURCE_DATE_EPOCH for the builds (default: the environment's, else the last commit's time).
        #[arg(long)]
        source_date_epoch: Option<u64>,
        /// The release version (default: the git tag on HEAD, without a leading v).
        #[arg(long)]
        release_version: Option<semver::Version>,
        /// Where an image is not reproducible, also run diffoscope (if installed) and keep its
        /// report beside the build logs (the pipeline's own diagnosis is always shown).
        #[arg(long)]
        explain: bool,
    },
}

#[derive(Args)]
pub struct Common {
    /// The pipeline spec.
    #[arg(long, default_value = "updraft.toml")]
    spec: PathBuf,
    /// Print the result as JSON (camelCase keys).
    #[arg(long)]
    json: bool,
}

fn load(path: &Path) -> anyhow::Result<(Spec, PathBuf)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the pipeline spec {}", path.display()))?;
    let spec = Spec::parse(&text).with_context(|| path.display().to_string())?;
    let root =
        path.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Ok((spec, root))
}

fn source_date_epoch(root: &Path, flag: Option<u64>) -> anyhow::Result<u64> {
    if let Some(v) = flag {
        return Ok(v);
    }
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"));
    }
    let out = std::process::Command::new("git").args(["log", "-1", "--format=%ct"]).current_dir(root).output();
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().parse()?),
        _ => anyhow::bail!(
            "no SOURCE_DATE_EPOCH: pass --source-date-epoch, set the variable, or run inside a git repository"
        ),
    }
}

/// A gate's verdict and its evidence.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Gate {
    gate: String,
    passed: bool,
    evidence: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    commit: String,
    source_date_epoch: Option<u64>,
    builds: Vec<Reproduction>,
    test_runs: Vec<TestRun>,
    tests: Option<TestsVerdict>,
    gates: Vec<Gate>,
    /// Line coverage per family, where the coverage gate read it.
    coverage: Vec<serde_json::Value>,
    /// Configured gates the stages run did not evaluate.
    not_evaluated: Vec<String>,
    /// Bundles written (when every gate passed and a [release] is configured).
    bundles: Vec<serde_json::Value>,
    /// Releases published to the server.
    published: Vec<String>,
    notes: Vec<String>,
    passed: bool,
}

/// The commit the run is for: `HEAD`, with a digest of the changes when the
/// tree is dirty (so that an edit is not "the same commit"); `local` outside git.
fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| o.stdout)
    };
    let Some(head) = git(&["rev-parse", "HEAD"]) else { return "local".into() };
    let head = String::from_utf8_lossy(&head).trim().to_owned();
    let status = git(&["status", "--porcelain"]).unwrap_or_default();
    if status.is_empty() {
        return head;
    }
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(git(&["diff", "HEAD"]).unwrap_or_default());
    h.update(&status);
    format!("{head}+dirty-{}", &hex::encode(h.finalize())[..12])
}

/// The server to report to: `--server`/`UPDRAFT_SERVER`, else `release.server`; with a token.
fn server_client(spec: &Spec, client: &ClientArgs) -> Option<crate::client::Client> {
    let server = client.server.clone().or_else(|| spec.release.as_ref().and_then(|r| r.server.clone()))?;
    client.token.as_ref()?;
    crate::client::Client::new(&ClientArgs { server: Some(server), token: client.token.clone() }).ok()
}

/// Families whose builds differ (command or environment) but gave a
/// byte-identical image: most likely one build did not see its own settings.
fn same_images(spec: &Spec, builds: &[Reproduction]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in builds.iter().enumerate() {
        for b in &builds[i + 1..] {
            let (Some(fa), Some(fb)) =
                (spec.families.iter().find(|f| f.name == a.family), spec.families.iter().find(|f| f.name == b.family))
            else {
                continue;
            };
            if fa.build == fb.build && fa.env == fb.env {
                continue;
            }
            for ia in &a.first {
                for ib in b.first.iter().filter(|ib| ib.sha256 == ia.sha256) {
                    out.push(format!(
                        "families {} and {} built byte-identical images ({}/{} and {}/{}, sha256 {}) from different \
                         settings; check that the build uses the family's own settings",
                        a.family, b.family, a.family, ia.name, b.family, ib.name, ia.sha256
                    ));
                }
            }
        }
    }
    out
}

/// Runs diffoscope on a differing image; its report goes beside the logs.
fn diffoscope(
    d: &updraft_pipeline::diagnose::Diagnosis,
    family: &str,
    logs: &Path,
    say: &dyn Fn(String),
) -> Option<PathBuf> {
    let report = logs.join(format!("diffoscope-{family}-{}.txt", d.image));
    let run = std::process::Command::new("diffoscope")
        .arg("--text")
        .arg(&report)
        .arg(&d.first)
        .arg(&d.second)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match run {
        // diffoscope exits 1 when the files differ, which they do.
        Ok(s) if s.code().is_some_and(|c| c <= 1) && report.is_file() => Some(report),
        Ok(s) => {
            say(format!("warning: diffoscope failed ({s}) on {family}/{}", d.image));
            None
        }
        Err(_) => {
            say(
                "warning: --explain: diffoscope is not installed (apt-get install diffoscope); the diagnosis above is \
                 the pipeline's own"
                    .to_string(),
            );
            None
        }
    }
}

/// What `pipeline run` was asked.
struct RunOptions {
    stage: String,
    family: Option<String>,
    sde: Option<u64>,
    release_version: Option<semver::Version>,
    explain: bool,
}

fn run_stages(common: &Common, opts: &RunOptions, client: &ClientArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let family = opts.family.as_deref();
    let sde = opts.sde;
    let release_version = opts.release_version.clone();
    let stage = opts.stage.as_str();
    let (do_build, do_test) = match stage {
        "all" => (true, true),
        "build" => (true, false),
        "test" => (false, true),
        other => anyhow::bail!(
            "stage {other:?} is not available; use all (build, test, gates, then bundle and publish), build or test"
        ),
    };
    let (spec, root) = load(&common.spec)?;
    if let Some(n) = family {
        anyhow::ensure!(spec.families.iter().any(|f| f.name == n), "no family {n:?} in {}", common.spec.display());
    }
    // A spinner on a terminal; plain lines otherwise (CI logs).
    let spinner = crate::output::progress_enabled(ctx.quiet, common.json).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    });
    let say = |m: String| match &spinner {
        Some(b) if !m.starts_with("warning") => b.set_message(m),
        Some(b) => b.println(m),
        None if !common.json || m.starts_with("warning") => eprintln!("{m}"),
        None => {}
    };
    let work = root.join(&spec.project.out_dir);
    let logs = work.join("logs");
    let mut report = Report {
        commit: commit(&root),
        source_date_epoch: None,
        builds: Vec::new(),
        test_runs: Vec::new(),
        tests: None,
        gates: Vec::new(),
        coverage: Vec::new(),
        not_evaluated: Vec::new(),
        bundles: Vec::new(),
        published: Vec::new(),
        notes: Vec::new(),
        passed: true,
    };
    if do_build {
        let sde = source_date_epoch(&root, sde)?;
        report.source_date_epoch = Some(sde);
        for f in spec.families.iter().filter(|f| family.is_none_or(|n| f.name == n)) {
            // Every build runs in a fresh copy of the sources (OUT/build/FAMILY,
            // then OUT/rebuild/FAMILY): no family builds in another's tree.
            say(format!("build {}", f.name));
            let log = logs.join(format!("build-{}.log", f.name));
            let first = build::first_build(&root, f, sde, &work, &spec.project.out_dir, &log)?;
            let mut r = if spec.gates.reproducible {
                say(format!("build {} again elsewhere", f.name));
                let log = logs.join(format!("rebuild-{}.log", f.name));
                build::reproduce(&root, f, sde, &first, &work, &spec.project.out_dir, &log)?
            } else {
                Reproduction {
                    family: f.name.clone(),
                    tree: first.tree.clone(),
                    reproducible: true,
                    differ: vec![],
                    first: first.images.clone(),
                    second: first.images,
                    diagnoses: vec![],
                }
            };
            if opts.explain {
                for d in &mut r.diagnoses {
                    d.diffoscope_report = diffoscope(d, &f.name, &logs, &say);
                }
            }
            report.builds.push(r);
        }
        for warning in same_images(&spec, &report.builds) {
            say(format!("warning: {warning}"));
            report.notes.push(warning);
        }
        if spec.gates.reproducible {
            let bad: Vec<String> = report
                .builds
                .iter()
                .flat_map(|r| {
                    r.differ.iter().map(move |(n, _, _)| {
                        // Name the causes found (each once), else point at diffoscope.
                        let mut causes: Vec<&str> = Vec::new();
                        for f in r.diagnoses.iter().filter(|d| &d.image == n).flat_map(|d| &d.findings) {
                            if !causes.contains(&f.cause.as_str()) {
                                causes.push(&f.cause);
                            }
                        }
                        if causes.is_empty() {
                            format!("{}/{n} (cause not found: compare with diffoscope or --explain)", r.family)
                        } else {
                            format!("{}/{n} ({})", r.family, causes.join(", "))
                        }
                    })
                })
                .collect();
            report.gates.push(Gate {
                gate: "reproducible".into(),
                passed: bad.is_empty(),
                evidence: if bad.is_empty() {
                    format!("{} families built twice, identical images", report.builds.len())
                } else {
                    format!("images differ: {}", bad.join("; "))
                },
            });
        }
    }
    if do_test && !spec.targets.is_empty() {
        let reports = work.join("reports").join(&report.commit);
        let jobs = test::matrix(&spec, family);
        say(format!("test: {} runs, {} at a time", jobs.len(), spec.project.jobs));
        let state_path = work.join("flaky.json");
        let mut state = FlakyState::load(&state_path)?;
        let server = server_client(&spec, client);
        let flaky_route = format!("/api/v1/pipelines/{}/flaky", spec.project.name);
        if let Some(c) = &server {
            // The server's history is the shared one (CI runners are ephemeral).
            match c.get(&flaky_route).map(serde_json::from_value::<FlakyState>) {
                Ok(Ok(remote)) => state = remote,
                Ok(Err(e)) => {
                    say(format!("warning: the server's flaky-test history is unreadable ({e}); using the local one"))
                }
                Err(e) => say(format!("warning: cannot read the flaky-test history from the server: {e:#}")),
            }
        }
        let trees: std::collections::BTreeMap<String, PathBuf> =
            report.builds.iter().map(|b| (b.family.clone(), b.tree.clone())).collect();
        let mut runs = test::run_jobs(&root, &trees, &spec, &jobs, spec.project.jobs, &reports)?;
        // A run with failures that would block is retried once: a test that
        // fails and then passes on the same commit is flaky.
        let retry: Vec<test::Job> = runs
            .iter()
            .filter(|r| {
                r.error.is_none()
                    && r.failed_cases().any(|c| !state.is_quarantined(&format!("{}/{}/{}", r.family, r.target, c.id())))
            })
            .map(|r| test::Job { family: r.family.clone(), target: r.target.clone(), attempt: 2 })
            .collect();
        if !retry.is_empty() {
            say(format!("test: retrying {} run(s) with failures", retry.len()));
            runs.extend(test::run_jobs(&root, &trees, &spec, &retry, spec.project.jobs, &reports)?);
        }
        let verdict = flaky::evaluate(&runs, &mut state, &report.commit, spec.gates.unquarantine_after);
        state.save(&state_path)?;
        if let Some(c) = &server {
            let body = serde_json::to_value(&state)?;
            if let Err(e) = c.put(&flaky_route, &body) {
                say(format!("warning: cannot store the flaky-test history on the server: {e:#}"));
            }
        }
        let mut evidence = format!(
            "{} tests, {} failed ({} blocking, {} quarantined), {} skipped",
            verdict.cases,
            verdict.failed,
            verdict.blocking.len(),
            verdict.quarantined_failures.len(),
            verdict.skipped
        );
        for b in verdict.blocking.iter().chain(&verdict.broken_runs) {
            evidence.push_str(&format!("; {b}"));
        }
        report.gates.push(Gate { gate: "tests".into(), passed: verdict.passed, evidence });
        report.test_runs = runs;
        report.tests = Some(verdict);
    }
    if let Some(c) = spec.gates.coverage.as_ref().filter(|_| do_test) {
        let mut low = Vec::new();
        let mut seen = Vec::new();
        for f in spec.families.iter().filter(|f| family.is_none_or(|n| f.name == n)) {
            let tree = report.builds.iter().find(|b| b.family == f.name).map(|b| b.tree.as_path()).unwrap_or(&root);
            let path = tree.join(updraft_pipeline::spec::expand(&c.report, &f.name, ""));
            match std::fs::read_to_string(&path) {
                Ok(text) => match updraft_pipeline::coverage::parse(&text, &path.display().to_string()) {
                    Ok(cov) => {
                        let line =
                            format!("{} {:.1}% ({}/{} lines)", f.name, cov.percent, cov.lines_covered, cov.lines_valid);
                        if cov.percent < c.min_percent {
                            low.push(line.clone());
                        }
                        report.coverage.push(serde_json::json!({ "family": f.name, "percent": cov.percent }));
                        seen.push(line);
                    }
                    Err(e) => low.push(e.to_string()),
                },
                Err(_) => low.push(format!("{}: no coverage report at {}", f.name, path.display())),
            }
        }
        report.gates.push(Gate {
            gate: "coverage".into(),
            passed: low.is_empty(),
            evidence: format!(
                "at least {}%: {}{}",
                c.min_percent,
                seen.join(", "),
                if low.is_empty() { String::new() } else { format!("; below or missing: {}", low.join(", ")) }
            ),
        });
    }
    if let Some(vg) = spec.gates.vulnerabilities.as_ref().filter(|_| do_build) {
        use updraft_pipeline::vulns;
        let sbom_path = root.join(&vg.sbom);
        let sbom = std::fs::read_to_string(&sbom_path)
            .with_context(|| format!("cannot read the SBOM {} (gates.vulnerabilities.sbom)", sbom_path.display()))?;
        let comps = vulns::components(&sbom, &sbom_path.display().to_string())?;
        let matches = vulns::scan(&comps, &root.join(&vg.osv_dir))?;
        let limit = vulns::severity_rank(&vg.max_severity).unwrap_or(3);
        let blocking: Vec<String> = matches
            .iter()
            .filter(|m| vulns::severity_rank(&m.severity).unwrap_or(3) >= limit)
            .map(|m| format!("{} {} {} ({}): {}", m.id, m.component, m.version, m.severity, m.summary))
            .collect();
        report.gates.push(Gate {
            gate: "vulnerabilities".into(),
            passed: blocking.is_empty(),
            evidence: if blocking.is_empty() {
                format!(
                    "{} components checked against {}; {} known below {}",
                    comps.len(),
                    vg.osv_dir,
                    matches.len(),
                    vg.max_severity
                )
            } else {
                format!("at or above {}: {}", vg.max_severity, blocking.join("; "))
            },
        });
    }
    if let Some(sg) = spec.gates.secrets.as_ref().filter(|_| do_build) {
        use updraft_pipeline::secrets;
        let mut findings = Vec::new();
        for b in &report.builds {
            for i in &b.first {
                let data = std::fs::read(&i.path).with_context(|| format!("cannot read {}", i.path.display()))?;
                let shown = i.path.strip_prefix(&root).unwrap_or(&i.path).display().to_string();
                findings.extend(secrets::scan(&shown, &data));
            }
        }
        for p in &sg.paths {
            findings.extend(secrets::scan_path(&root, p, &[spec.project.out_dir.as_str()])?);
        }
        let allow = match &sg.allow_file {
            Some(f) if root.join(f).is_file() => secrets::allowed(&std::fs::read_to_string(root.join(f))?),
            _ => Vec::new(),
        };
        let total = findings.len();
        let blocking: Vec<String> = findings
            .iter()
            .filter(|f| !secrets::is_allowed(f, &allow))
            .map(|f| format!("{}:{} {} (fingerprint {})", f.path, f.line, f.kind, f.fingerprint))
            .collect();
        report.gates.push(Gate {
            gate: "secrets".into(),
            passed: blocking.is_empty(),
            evidence: if blocking.is_empty() {
                format!("no secrets in the images and {} ({} allowed)", sg.paths.join(", "), total)
            } else {
                format!(
                    "{}; if one is not a secret, add its fingerprint to {}",
                    blocking.join("; "),
                    sg.allow_file.as_deref().unwrap_or("the allow_file")
                )
            },
        });
    }
    // Configured gates this stage did not evaluate (e.g. secrets with `--stage test`).
    let configured = [
        ("coverage", spec.gates.coverage.is_some()),
        ("vulnerabilities", spec.gates.vulnerabilities.is_some()),
        ("secrets", spec.gates.secrets.is_some()),
    ];
    for (name, on) in configured {
        if on && !report.gates.iter().any(|g| g.gate == name) {
            report.not_evaluated.push(name.into());
        }
    }
    report.passed = report.gates.iter().all(|g| g.passed);
    let spinner_done = || {
        if let Some(b) = &spinner {
            b.finish_and_clear();
        }
    };
    if let (Some(rel), true, true) = (&spec.release, report.passed, stage == "all") {
        bundle_and_publish(&spec, rel, &root, &work, family, release_version, client, &mut report, &say)?;
    }
    write_summaries(&work, &report)?;
    if let Some(c) = server_client(&spec, client) {
        // Build health for dashboards: the verdicts and their evidence, not every test case.
        let compact = serde_json::json!({
            "stage": stage,
            "family": family,
            "gates": report.gates,
            "coverage": report.coverage,
            "notEvaluated": report.not_evaluated,
            "tests": report.tests.as_ref().map(|t| serde_json::json!({
                "cases": t.cases, "failed": t.failed, "skipped": t.skipped, "blocking": t.blocking,
                "quarantined": t.quarantined, "newlyQuarantined": t.newly_quarantined, "released": t.released,
            })),
            "builds": report.builds.iter().map(|b| serde_json::json!({
                "family": b.family, "reproducible": b.reproducible,
                "images": b.first.iter().map(|i| serde_json::json!({"name": i.name, "sha256": i.sha256, "size": i.size})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "bundles": report.bundles,
            "published": report.published,
        });
        let body = serde_json::json!({
            "project": spec.project.name, "commit": report.commit, "passed": report.passed, "report": compact,
        });
        match c.post("/api/v1/builds", &body) {
            Ok(_) => say(format!("build health posted to the server for {}", spec.project.name)),
            Err(e) => say(format!("warning: cannot post build health to the server: {e:#}")),
        }
    }
    spinner_done();
    emit(common.json, &report, |out| human(&report, out))?;
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::from(REJECTED) })
}

/// The version: the flag, else an exact git tag on HEAD (`v1.4.0` → 1.4.0);
/// none on an untagged commit (bundles are made for releases only).
fn version(root: &Path, flag: Option<semver::Version>) -> anyhow::Result<Option<semver::Version>> {
    if let Some(v) = flag {
        return Ok(Some(v));
    }
    let Some(out) = std::process::Command::new("git")
        .args(["describe", "--tags", "--exact-match", "HEAD"])
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
    else {
        return Ok(None);
    };
    let tag = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(Some(
        tag.trim_start_matches('v').parse().with_context(|| format!("the tag {tag:?} is not a version like v1.4.0"))?,
    ))
}

#[allow(clippy::too_many_arguments)]
fn bundle_and_publish(
    spec: &Spec,
    rel: &updraft_pipeline::spec::ReleaseSpec,
    root: &Path,
    work: &Path,
    family: Option<&str>,
    release_version: Option<semver::Version>,
    client: &ClientArgs,
    report: &mut Report,
    say: &dyn Fn(String),
) -> anyhow::Result<()> {
    use updraft_bundle::bundle::ImageInput;
    use updraft_bundle::{BuildContext, CreateParams, Signers, Source, Target};
    use updraft_types::{SecurityVersion, Timestamp};

    let Some(version) = version(root, release_version)? else {
        say("no bundles: HEAD has no version tag (tag it v1.4.0 or pass --release-version)".into());
        report.notes.push("no bundles: untagged commit and no --release-version".into());
        return Ok(());
    };
    let sde = report.source_date_epoch.context("bundles need the build stage")?;
    let detected = BuildContext::detect(|k| std::env::var(k).ok());
    let source = Source {
        uri: detected
            .source_uri
            .clone()
            .unwrap_or_else(|| format!("file://{}", root.canonicalize().unwrap_or(root.to_path_buf()).display())),
        commit: detected.source_commit.clone().unwrap_or_else(|| report.commit.clone()),
    };
    let release_keys = rel
        .release_keys
        .iter()
        .map(|p| crate::cmd_keys::load_private(&root.join(p)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let build_key = crate::cmd_keys::load_private(&root.join(&rel.build_key))?;
    let out_dir = work.join("bundles");
    std::fs::create_dir_all(&out_dir)?;
    let mut files = Vec::new();
    for f in spec.families.iter().filter(|f| family.is_none_or(|n| f.name == n)) {
        // The images of the family's own (first) build.
        let tree = report
            .builds
            .iter()
            .find(|b| b.family == f.name)
            .map(|b| b.tree.clone())
            .context("bundles need the family's build (run the build stage)")?;
        let images = f
            .images
            .iter()
            .enumerate()
            .map(|(i, (name, path))| ImageInput {
                name: name.clone(),
                path: tree.join(path),
                // The first image (or the one called rootfs) goes to the A/B slot.
                target: if name == "rootfs" || (i == 0 && !f.images.contains_key("rootfs")) {
                    Target::Slot
                } else {
                    Target::Component(name.clone())
                },
            })
            .collect();
        // A release is name@version on the server: with several families,
        // each family's release has its own name.
        let name = if rel.name.contains("{family}") {
            updraft_pipeline::spec::expand(&rel.name, &f.name, "")
        } else if spec.families.len() > 1 {
            format!("{}-{}", rel.name, f.name)
        } else {
            rel.name.clone()
        };
        let out = out_dir.join(format!("{name}-{version}.bundle"));
        say(format!("bundle {}", out.display()));
        let created = updraft_bundle::create(
            &CreateParams {
                name,
                version: version.clone(),
                security_version: SecurityVersion(rel.security_version),
                family: f.name.clone(),
                hardware: f.hardware.clone(),
                requires: Vec::new(),
                source: source.clone(),
                created: Timestamp(sde),
                images,
                sbom: rel.sbom.as_ref().map(|s| root.join(s)),
                build: detected.clone(),
                updraft_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            &Signers { release: release_keys.iter().collect(), build: &build_key },
            &out,
            &updraft_bundle::NoProgress,
        )?;
        report.bundles.push(serde_json::json!({
            "family": f.name, "path": created.path, "sha256": created.sha256.to_string(), "size": created.size,
        }));
        files.push(created.path.clone());
    }
    if let Some(server) = &rel.server {
        let args = ClientArgs {
            server: Some(client.server.clone().unwrap_or_else(|| server.clone())),
            token: client.token.clone(),
        };
        let c = crate::client::Client::new(&args)?;
        for file in files {
            let len = std::fs::metadata(&file)?.len();
            let mut reader = std::fs::File::open(&file)?;
            let r = c
                .post_stream("/api/v1/releases", &mut reader, len)
                .with_context(|| format!("publishing {}", file.display()))?;
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            if let Some(ch) = &rel.channel {
                c.post(&format!("/api/v1/channels/{ch}/releases"), &serde_json::json!({ "release": id }))?;
            }
            say(format!(
                "published {id}{}",
                rel.channel.as_ref().map(|c| format!(" to channel {c}")).unwrap_or_default()
            ));
            report.published.push(id);
        }
    }
    Ok(())
}

fn human(r: &Report, out: &mut String) {
    for b in &r.builds {
        for i in &b.first {
            out.push_str(&format!(
                "{} {}: {} ({} bytes) sha256 {}\n",
                b.family,
                i.name,
                i.path.display(),
                i.size,
                i.sha256
            ));
        }
        if b.reproducible {
            out.push_str(&format!("{}: reproducible (built twice, identical)\n", b.family));
        }
        for (name, a, c) in &b.differ {
            out.push_str(&format!("{}: NOT reproducible: image {name} differs between builds\n", b.family));
            let d = b.diagnoses.iter().find(|d| &d.image == name);
            for f in d.map(|d| d.findings.as_slice()).unwrap_or_default() {
                out.push_str(&format!("  cause ({}, in {}): {}\n    fix: {}\n", f.cause, f.location, f.detail, f.fix));
            }
            if let Some(first) = d.and_then(|d| d.first_difference.as_ref()) {
                out.push_str(&format!("  {first}\n"));
            }
            match d.and_then(|d| d.diffoscope_report.as_ref()) {
                Some(p) => out.push_str(&format!("  diffoscope's report: {}\n", p.display())),
                None => out.push_str(&format!(
                    "  compare: diffoscope {} {} (or run the pipeline with --explain)\n",
                    a.display(),
                    c.display()
                )),
            }
        }
    }
    for t in &r.test_runs {
        let failed = t.failed_cases().count();
        out.push_str(&format!(
            "test {}/{} attempt {}: {} tests, {failed} failed{}\n",
            t.family,
            t.target,
            t.attempt,
            t.cases.len(),
            t.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
        ));
        if let Some(p) = &t.place {
            out.push_str(&format!(
                "  place: {p}
"
            ));
        }
        let exhausted = t.error.as_deref().is_some_and(|e| e.starts_with("the lab failed"));
        for (i, why) in t.infra_failures.iter().enumerate() {
            let again = if i + 1 < t.infra_failures.len() || !exhausted { ": run again" } else { "" };
            out.push_str(&format!("  the lab failed on try {} ({why}){again}\n", i + 1));
        }
        if let Some(p) = &t.serial_log {
            out.push_str(&format!(
                "  serial log: {}
",
                p.display()
            ));
        }
    }
    if let Some(v) = &r.tests {
        for q in &v.newly_quarantined {
            out.push_str(&format!("flaky: {q} failed and passed on the same commit: quarantined\n"));
        }
        for q in &v.released {
            out.push_str(&format!("flaky: {q} passed enough times in a row: out of quarantine\n"));
        }
        for q in &v.quarantined {
            out.push_str(&format!("quarantined (runs, does not block): {q}\n"));
        }
    }
    for g in &r.gates {
        out.push_str(&format!("gate {}: {} ({})\n", g.gate, if g.passed { "pass" } else { "FAIL" }, g.evidence));
    }
    for g in &r.not_evaluated {
        out.push_str(&format!("gate {g}: not evaluated in this stage\n"));
    }
    for b in &r.bundles {
        out.push_str(&format!(
            "bundle {}: {} sha256 {}\n",
            b["family"].as_str().unwrap_or(""),
            b["path"].as_str().unwrap_or(""),
            b["sha256"].as_str().unwrap_or("")
        ));
    }
    for p in &r.published {
        out.push_str(&format!("published {p}\n"));
    }
    for n in &r.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out.push_str(if r.passed { "pipeline: every gate passed\n" } else { "pipeline: a gate FAILED\n" });
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `summary.md` (for a CI job summary) and `junit-summary.xml` (one test case per gate).
fn write_summaries(work: &Path, r: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(work)?;
    let mut md = String::from("## updraft pipeline\n\n| gate | verdict | evidence |\n|---|---|---|\n");
    for g in &r.gates {
        md.push_str(&format!(
            "| {} | {} | {} |\n",
            g.gate,
            if g.passed { "pass" } else { "**FAIL**" },
            g.evidence.replace('|', "\\|")
        ));
    }
    for g in &r.not_evaluated {
        md.push_str(&format!("| {g} | not evaluated | |\n"));
    }
    if let Some(v) = &r.tests {
        if !v.quarantined.is_empty() {
            md.push_str("\nQuarantined tests (they run and are reported, but do not block):\n\n");
            for q in &v.quarantined {
                md.push_str(&format!("- `{q}`\n"));
            }
        }
    }
    md.push_str(&format!(
        "\nCommit `{}`: {}\n",
        r.commit,
        if r.passed { "every gate passed" } else { "a gate failed" }
    ));
    let failures = r.gates.iter().filter(|g| !g.passed).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n<testsuite name=\"updraft-pipeline\" tests=\"{}\" failures=\"{failures}\">\n",
        r.gates.len()
    );
    for g in &r.gates {
        xml.push_str(&format!("<testcase classname=\"gates\" name=\"{}\"", xml_escape(&g.gate)));
        if g.passed {
            xml.push_str("/>\n");
        } else {
            xml.push_str(&format!("><failure message=\"{}\"/></testcase>\n", xml_escape(&g.evidence)));
        }
    }
    xml.push_str("</testsuite>\n</testsuites>\n");
    updraft_bundle::fsutil::write_atomic(&work.join("summary.md"), md.as_bytes(), 0o644, Overwrite::Replace)?;
    updraft_bundle::fsutil::write_atomic(&work.join("junit-summary.xml"), xml.as_bytes(), 0o644, Overwrite::Replace)?;
    Ok(())
}

pub fn run(cmd: PipelineCmd, client: &ClientArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match cmd {
        PipelineCmd::Plan(c) => {
            let (spec, _) = load(&c.spec)?;
            let plan = spec.plan();
            emit(c.json, &plan, |out| {
                for s in &plan {
                    let after =
                        if s.after.is_empty() { String::new() } else { format!("  (after {})", s.after.join(", ")) };
                    out.push_str(&format!("{:<28} {}{after}\n", s.id, s.what));
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        PipelineCmd::Run { common, stage, family, source_date_epoch: sde, release_version, explain } => {
            let opts = RunOptions { stage, family, sde, release_version, explain };
            run_stages(&common, &opts, client, ctx)
        }
    }
}
