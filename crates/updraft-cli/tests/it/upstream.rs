//! `updraft pipeline` on upstream sources that no one here wrote: Debian's
//! source packages of BusyBox and zlib, fetched with `apt-get source` and a
//! private apt configuration (not the system's), with the worked examples
//! of examples/upstream/ (docs/pipeline.md, "Worked examples").
//!
//! The downloads are kept in the target folder between runs (apt checks
//! them against the signed index each time). Without apt-get or the
//! network the tests are skipped with the reason, except under CI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::have;

/// The private apt root: its own sources list (deb-src of Debian's main
/// archive), lists and cache, updated once per test run.
fn apt() -> Result<&'static Path, String> {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ROOT.get_or_init(|| {
        if !have("apt-get") {
            return Err("no apt-get on this machine".into());
        }
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("upstream-apt");
        for d in ["lists/partial", "cache/archives/partial", "etc/sources.list.d"] {
            std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
        }
        let codename = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| t.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(str::to_owned)))
            .unwrap_or_else(|| "bookworm".into());
        std::fs::write(
            root.join("etc/sources.list"),
            format!(
                "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian \
                 {codename} main\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let out = apt_get(&root).arg("update").output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("apt-get update failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(root)
    })
    .as_ref()
    .map(PathBuf::as_path)
    .map_err(Clone::clone)
}

fn apt_get(root: &Path) -> Command {
    let mut c = Command::new("apt-get");
    let opt = |k: &str, v: &Path| format!("-o{k}={}", v.display());
    c.args(["-q", "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root", "-oDir::State::status=/var/lib/dpkg/status"])
        .arg(opt("Dir::Etc::SourceList", &root.join("etc/sources.list")))
        .arg(opt("Dir::Etc::SourceParts", &root.join("etc/sources.list.d")))
        .arg(opt("Dir::State::Lists", &root.join("lists")))
        .arg(opt("Dir::Cache", &root.join("cache")));
    c
}

/// The upstream sources of Debian's source package `package` (the `.orig`
/// tarball, without Debian's changes), extracted into `to`; None (skipped,
/// with the reason printed) where they cannot be had outside CI.
fn upstream(package: &str, to: &Path) -> Option<()> {
    static FETCH: Mutex<()> = Mutex::new(());
    let fetched = (|| -> Result<PathBuf, String> {
        let root = apt()?;
        let _one = FETCH.lock().unwrap_or_else(|e| e.into_inner());
        let dir = root.join("sources");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = apt_get(root)
            .args(["source", "--download-only", package])
            .current_dir(&dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("apt-get source {package} failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let mut orig: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(&format!("{package}_")) && n.contains(".orig.tar.")
            })
            .collect();
        orig.sort();
        orig.pop().ok_or_else(|| format!("no upstream tarball of {package}"))
    })();
    match fetched {
        Ok(tarball) => {
            std::fs::create_dir_all(to).unwrap();
            let ok = Command::new("tar")
                .arg("-xf")
                .arg(&tarball)
                .arg("-C")
                .arg(to)
                .arg("--strip-components=1")
                .status()
                .unwrap()
                .success();
            assert!(ok, "tar -xf {}", tarball.display());
            Some(())
        }
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "the upstream sources are needed under CI: {e}");
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// The worked example's files over the upstream sources.
fn add_example(name: &str, to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/upstream").join(name);
    for rel in ["updraft.toml", "updraft"] {
        let ok = Command::new("cp").arg("-r").arg(from.join(rel)).arg(to).status().unwrap().success();
        assert!(ok);
    }
}

fn pipeline(dir: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let r = crate::updraft_with(dir, args, |c| {
        c.env("SOURCE_DATE_EPOCH", crate::SDE);
    });
    let v = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
    (r.code, v, r.stderr)
}

fn findings(v: &serde_json::Value) -> Vec<(String, String)> {
    v["builds"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["diagnoses"].as_array().unwrap().iter())
        .flat_map(|d| d["findings"].as_array().unwrap().iter())
        .map(|f| (f["cause"].as_str().unwrap().to_owned(), f["detail"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn zlib_families_are_isolated_and_debug_information_is_diagnosed() {
    if !have("cc") || !have("make") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(()) = upstream("zlib", d) else { return };
    add_example("zlib", d);
    // As shipped: both families reproducible, zlib's own tests pass, and
    // its Makefile (which does not track CFLAGS) gives each family its own library.
    let (code, v, err) = pipeline(d, &["pipeline", "run", "--json"]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    let digests: Vec<&str> =
        v["builds"].as_array().unwrap().iter().map(|b| b["first"][0]["sha256"].as_str().unwrap()).collect();
    assert_eq!(digests.len(), 2);
    assert_ne!(digests[0], digests[1], "zlib-debug shipped zlib's library");
    assert_eq!(v["tests"]["cases"], 2, "{:#}", v["tests"]);
    // Without the prefix map, the debug information holds the build folder.
    let toml = std::fs::read_to_string(d.join("updraft.toml")).unwrap();
    let unfixed = toml.replace("CFLAGS=\\\"$CFLAGS -ffile-prefix-map=$PWD=.\\\" ./configure", "./configure");
    assert_ne!(unfixed, toml);
    std::fs::write(d.join("updraft.toml"), unfixed).unwrap();
    let (code, v, err) = pipeline(d, &["pipeline", "run", "--stage", "build", "--family", "zlib-debug", "--json"]);
    assert_eq!(code, 1, "{v:#}\n{err}");
    let f = findings(&v);
    let path = f.iter().find(|(c, _)| c == "build-path").unwrap_or_else(|| panic!("{f:#?}"));
    assert!(
        path.1.contains(".updraft/build/zlib-debug") && path.1.contains(".updraft/rebuild/zlib-debug"),
        "{}",
        path.1
    );
    let loc = v["builds"][0]["diagnoses"][0]["findings"][0]["location"].as_str().unwrap();
    assert!(loc.starts_with("libz.a: 15 members: adler32.o"), "{loc}");
    assert!(f.iter().any(|(c, d)| c == "elf-sections" && d.contains(".debug_line_str")), "{f:#?}");
}

#[test]
fn busybox_is_diagnosed_as_shipped_and_reproducible_without_its_timestamp() {
    if !have("cc") || !have("make") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(()) = upstream("busybox", d) else { return };
    add_example("busybox", d);
    // As upstream ships it, the banner holds SOURCE_DATE_EPOCH in the local time zone.
    let toml = std::fs::read_to_string(d.join("updraft.toml")).unwrap();
    std::fs::write(d.join("updraft.toml"), toml.replace("env = { KCONFIG_NOTIMESTAMP = \"1\" }\n", "")).unwrap();
    let (code, v, err) = pipeline(d, &["pipeline", "run", "--stage", "build", "--json"]);
    assert_eq!(code, 1, "{v:#}\n{err}");
    let f = findings(&v);
    let t = f.iter().find(|(c, _)| c == "timestamp").unwrap_or_else(|| panic!("{f:#?}"));
    assert!(t.1.contains("in the local time zone"), "{}", t.1);
    // With the example's setting: reproducible, and BusyBox's own test
    // suite for the shipped applets passes.
    std::fs::write(d.join("updraft.toml"), toml).unwrap();
    let (code, v, err) = pipeline(d, &["pipeline", "run", "--json"]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_eq!(v["builds"][0]["reproducible"], true);
    let cases = v["tests"]["cases"].as_u64().unwrap();
    assert!(cases >= 150, "{:#}", v["tests"]);
    assert_eq!(v["tests"]["failed"], 0, "{:#}", v["tests"]);
}
