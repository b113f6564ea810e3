//! The build stage and the reproducibility check: build a family in the
//! repository, then again from a copy of its sources in another folder,
//! with another umask, time zone and locale, and compare the images.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::spec::Family;
use crate::{io, PipelineError};

/// A built image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
pub struct Reproduction {
    pub family: String,
    pub reproducible: bool,
    /// Images whose digests differ: (name, first path, second path).
    pub differ: Vec<(String, PathBuf, PathBuf)>,
    pub first: Vec<Image>,
    pub second: Vec<Image>,
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

/// Builds the family again from a copy of the sources in `work` and compares.
pub fn reproduce(
    root: &Path,
    family: &Family,
    sde: u64,
    first: &[Image],
    work: &Path,
    out_dir: &str,
    log: &Path,
) -> Result<Reproduction, PipelineError> {
    let copy = work.join(format!("rebuild-{}", family.name));
    if copy.exists() {
        std::fs::remove_dir_all(&copy).map_err(io(format!("cannot clear {}", copy.display())))?;
    }
    let mut skip: Vec<PathBuf> = family.images.values().map(PathBuf::from).collect();
    skip.push(PathBuf::from(out_dir));
    for rel in sources(root, &skip)? {
        let to = copy.join(&rel);
        if let Some(d) = to.parent() {
            std::fs::create_dir_all(d).map_err(io(format!("cannot create {}", d.display())))?;
        }
        std::fs::copy(root.join(&rel), &to).map_err(io(format!("cannot copy {}", rel.display())))?;
    }
    let second = build(&copy, family, sde, &SECOND, log)?;
    let differ: Vec<(String, PathBuf, PathBuf)> = first
        .iter()
        .zip(&second)
        .filter(|(a, b)| a.sha256 != b.sha256)
        .map(|(a, b)| (a.name.clone(), a.path.clone(), b.path.clone()))
        .collect();
    Ok(Reproduction {
        family: family.name.clone(),
        reproducible: differ.is_empty(),
        differ,
        first: first.to_vec(),
        second,
    })
}
