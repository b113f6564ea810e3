//! `updraft pipeline`: gated firmware CI from `updraft.toml`.
//!
//! Today: `plan` (the stage graph) and `run --stage build` (every family
//! built, then built again elsewhere and compared). The test matrix, gates,
//! bundle and publish stages are being built (issue 7).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use updraft_pipeline::build::{self, Reproduction};
use updraft_pipeline::Spec;

use crate::output::emit;
use crate::{Ctx, REJECTED};

#[derive(Subcommand)]
pub enum PipelineCmd {
    /// Show the stage graph: builds, reproductions, the test matrix, gates, bundles, publish.
    Plan(Common),
    /// Run stages.
    Run {
        #[command(flatten)]
        common: Common,
        /// Only this stage (available now: build, which also checks reproducibility).
        #[arg(long, default_value = "build")]
        stage: String,
        /// Only this family.
        #[arg(long)]
        family: Option<String>,
        /// SOURCE_DATE_EPOCH for the builds (default: the environment's, else the last commit's time).
        #[arg(long)]
        source_date_epoch: Option<u64>,
    },
}

#[derive(Args)]
pub struct Common {
    /// The pipeline spec.
    #[arg(long, default_value = "updraft.toml")]
    spec: PathBuf,
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

#[derive(Serialize)]
struct BuildReport {
    source_date_epoch: u64,
    families: Vec<Reproduction>,
    passed: bool,
}

pub fn run(cmd: PipelineCmd, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
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
        PipelineCmd::Run { common, stage, family, source_date_epoch: sde } => {
            if stage != "build" {
                anyhow::bail!(
                    "stage {stage:?} is not available yet; `--stage build` builds every family and checks that it reproduces (see docs/pipeline.md)"
                );
            }
            let (spec, root) = load(&common.spec)?;
            let sde = source_date_epoch(&root, sde)?;
            let work = root.join(&spec.project.out_dir);
            let mut families = Vec::new();
            for f in spec.families.iter().filter(|f| family.as_ref().is_none_or(|n| &f.name == n)) {
                if !common.json {
                    eprintln!("building {} ...", f.name);
                }
                let logs = work.join("logs");
                let first = build::build(&root, f, sde, &build::FIRST, &logs.join(format!("build-{}.log", f.name)))?;
                let r = if spec.gates.reproducible {
                    if !common.json {
                        eprintln!("building {} again elsewhere ...", f.name);
                    }
                    build::reproduce(
                        &root,
                        f,
                        sde,
                        &first,
                        &work.join("rebuild"),
                        &spec.project.out_dir,
                        &logs.join(format!("rebuild-{}.log", f.name)),
                    )?
                } else {
                    Reproduction {
                        family: f.name.clone(),
                        reproducible: true,
                        differ: vec![],
                        first: first.clone(),
                        second: first,
                    }
                };
                families.push(r);
            }
            if let Some(n) = &family {
                if families.is_empty() {
                    anyhow::bail!("no family {n:?} in {}", common.spec.display());
                }
            }
            let passed = families.iter().all(|r| r.reproducible);
            let report = BuildReport { source_date_epoch: sde, families, passed };
            emit(common.json, &report, |out| {
                for r in &report.families {
                    for i in &r.first {
                        out.push_str(&format!(
                            "{} {}: {} ({} bytes) sha256 {}\n",
                            r.family,
                            i.name,
                            i.path.display(),
                            i.size,
                            i.sha256
                        ));
                    }
                    if r.reproducible {
                        out.push_str(&format!("{}: reproducible (built twice, identical)\n", r.family));
                    }
                    for (name, a, b) in &r.differ {
                        out.push_str(&format!(
                            "{}: NOT reproducible: image {name} differs between builds\n  compare: diffoscope {} {}\n",
                            r.family,
                            a.display(),
                            b.display()
                        ));
                    }
                }
                out.push_str(if report.passed { "gate reproducible: pass\n" } else { "gate reproducible: FAIL\n" });
            })?;
            Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(REJECTED) })
        }
    }
}
