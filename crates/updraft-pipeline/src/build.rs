//! The build stage and the reproducibility check. Every build of every
//! family runs in a fresh copy of the project's sources (what git tracks,
//! or everything but `.git` and the output folder), never in a tree that
//! another family or an earlier build has built in: a Makefile that does
//! not track its flags cannot hand one family another family's image. The
//! first build runs in `OUT/build/FAMILY`, the second in
//! `OUT/rebuild/FAMILY` with another umask, time zone and locale, and the
//! images are compared; when they differ, [`crate::diagnose`] looks for
//! the cause.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::spec::Family;
use crate::{io, PipelineError};

/// A built image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// How the second build differs from the first.
#[derive(Clone, Debug)]
pub struct Variation {
    pub umask: &'static str,
    pub tz: &'static str,
    pub locale: &'static str,
}

/// The first build: the CI's own environment, umask 022.
pub const FIRST: Variation = Variation { umask: "022", tz: "UTC", locale: "C" };
/// The second: another umask, the other side of the date line, another locale.
pub const SECOND: Variation = Variation { umask: "077", tz: "Pacific/Kiritimati", locale: "C.UTF-8" };

/// The result of comparing two builds.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reproduction {
    pub family: String,
    /// The folder of the first build: its images are the family's images,
    /// and the family's tests run there.
    pub tree: PathBuf,
    pub reproducible: bool,
    /// Images whose digests differ: (name, first path, second path).
    pub differ: Vec<(String, PathBuf, PathBuf)>,
    pub first: Vec<Image>,
    pub second: Vec<Image>,
    /// Why each differing image differs, as far as Updraft can tell.
    pub diagnoses: Vec<crate::diagnose::Diagnosis>,
}

/// One build: its images, the tree it ran in and when (Unix seconds).
#[derive(Clone, Debug)]
pub struct Built {
    pub images: Vec<Image>,
    pub tree: PathBuf,
    pub started_s: u64,
    pub ended_s: u64,
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn sha256_file(path: &Path) -> Result<(String, u64), PipelineError> {
    let mut f = std::fs::File::open(path).map_err(io(format!("cannot read the image {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(format!("cannot read the image {}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(h.finalize()), size))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs the family's build in `root` with `SOURCE_DATE_EPOCH = sde`; output
/// goes to `log`. Returns the images with their digests.
pub fn build(root: &Path, family: &Family, sde: u64, v: &Variation, log: &Path) -> Result<Vec<Image>, PipelineError> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    }
    let out = std::fs::File::create(log).map_err(io(format!("cannot create {}", log.display())))?;
    let err = out.try_clone().map_err(io("cannot duplicate the log file"))?;
    // The umask is set by a shell that then runs the command itself.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {} && exec \"$@\"", v.umask))
        .arg("sh")
        .args(&family.build)
        .current_dir(root)
        .envs(&family.env)
        .env("SOURCE_DATE_EPOCH", sde.to_string())
        .env("TZ", v.tz)
        .env("LC_ALL", v.locale)
        .env("LANG", v.locale)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(io(format!("cannot run the build of {}", family.name)))?;
    if !status.success() {
        return Err(PipelineError::Build(format!(
            "the build of {} failed ({status}); the end of {}:\n{}",
            family.name,
            log.display(),
            tail(log, 20)
        )));
    }
    family
        .images
        .iter()
        .map(|(name, rel)| {
            let path = root.join(rel);
            if !path.is_file() {
                return Err(PipelineError::Build(format!(
                    "the build of {} succeeded but image {name} is missing at {}; check `images` in updraft.toml",
                    family.name,
                    path.display()
                )));
            }
            let (sha256, size) = sha256_file(&path)?;
            Ok(Image { name: name.clone(), path, sha256, size })
        })
        .collect()
}

/// The files to copy for a rebuild: what git tracks, or everything but
/// `.git`, the output folder and the images.
fn sources(root: &Path, skip: &[PathBuf]) -> Result<Vec<PathBuf>, PipelineError> {
    let git = Command::new("git").args(["ls-files", "-z"]).current_dir(root).stderr(Stdio::null()).output();
    if let Ok(o) = git {
        if o.status.success() && !o.stdout.is_empty() {
            return Ok(o
                .stdout
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
                .filter(|p| root.join(p).is_file())
                .collect());
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in std::fs::read_dir(&dir).map_err(io(format!("cannot list {}", dir.display())))? {
            let entry = entry.map_err(io(format!("cannot list {}", dir.display())))?;
            let p = rel.join(entry.file_name());
            if p == Path::new(".git") || skip.iter().any(|s| s == &p) {
                continue;
            }
            let ft = entry.file_type().map_err(io(format!("cannot stat {}", p.display())))?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A fresh copy of the project's sources at `tree` (emptied first).
pub fn fresh_tree(root: &Path, family: &Family, out_dir: &str, tree: &Path) -> Result<(), PipelineError> {
    if tree.exists() {
        std::fs::remove_dir_all(tree).map_err(io(format!("cannot clear {}", tree.display())))?;
    }
    std::fs::create_dir_all(tree).map_err(io(format!("cannot create {}", tree.display())))?;
    let mut skip: Vec<PathBuf> = family.images.values().map(PathBuf::from).collect();
    skip.push(PathBuf::from(out_dir));
    for rel in sources(root, &skip)? {
        let to = tree.join(&rel);
        if let Some(d) = to.parent() {
            std::fs::create_dir_all(d).map_err(io(format!("cannot create {}", d.display())))?;
        }
        std::fs::copy(root.join(&rel), &to).map_err(io(format!("cannot copy {}", rel.display())))?;
    }
    Ok(())
}

/// Builds `family` in a fresh copy of the sources at `tree`.
pub fn build_in(
    root: &Path,
    family: &Family,
    sde: u64,
    v: &Variation,
    out_dir: &str,
    tree: &Path,
    log: &Path,
) -> Result<Built, PipelineError> {
    fresh_tree(root, family, out_dir, tree)?;
    let started_s = now_s();
    let images = build(tree, family, sde, v, log)?;
    // The absolute path is what a build embeds, so that is what the diagnosis looks for.
    let tree = tree.canonicalize().unwrap_or_else(|_| tree.to_path_buf());
    Ok(Built { images, tree, started_s, ended_s: now_s() })
}

/// The first build of `family`: `work/build/FAMILY`.
pub fn first_build(
    root: &Path,
    family: &Family,
    sde: u64,
    work: &Path,
    out_dir: &str,
    log: &Path,
) -> Result<Built, PipelineError> {
    build_in(root, family, sde, &FIRST, out_dir, &work.join("build").join(&family.name), log)
}

/// Builds the family again in `work/rebuild/FAMILY`, compares the images
/// and, where they differ, diagnoses why.
pub fn reproduce(
    root: &Path,
    family: &Family,
    sde: u64,
    first: &Built,
    work: &Path,
    out_dir: &str,
    log: &Path,
) -> Result<Reproduction, PipelineError> {
    let second = build_in(root, family, sde, &SECOND, out_dir, &work.join("rebuild").join(&family.name), log)?;
    let differ: Vec<(String, PathBuf, PathBuf)> = first
        .images
        .iter()
        .zip(&second.images)
        .filter(|(a, b)| a.sha256 != b.sha256)
        .map(|(a, b)| (a.name.clone(), a.path.clone(), b.path.clone()))
        .collect();
    let context = crate::diagnose::Context {
        first_tree: first.tree.clone(),
        second_tree: second.tree.clone(),
        window_s: (first.started_s.min(second.started_s), first.ended_s.max(second.ended_s)),
        source_date_epoch: sde,
        user: crate::diagnose::user_name(),
        host: crate::diagnose::host_name(),
    };
    let diagnoses = differ
        .iter()
        .map(|(name, a, b)| crate::diagnose::diagnose_files(name, a, b, &context))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Reproduction {
        family: family.name.clone(),
        tree: first.tree.clone(),
        reproducible: differ.is_empty(),
        differ,
        first: first.images.clone(),
        second: second.images,
        diagnoses,
    })
}
