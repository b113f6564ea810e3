//! The pipeline spec, `updraft.toml` (documented in docs/pipeline.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::PipelineError;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub project: Project,
    pub families: Vec<Family>,
    #[serde(default)]
    pub targets: Vec<TestTarget>,
    #[serde(default)]
    pub gates: Gates,
    #[serde(default)]
    pub release: Option<ReleaseSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub name: String,
    /// Where builds, reports and state go, relative to the repository.
    #[serde(default = "default_out")]
    pub out_dir: String,
    /// Parallel test runs at most.
    #[serde(default = "default_jobs")]
    pub jobs: usize,
}

fn default_out() -> String {
    ".updraft".into()
}
fn default_jobs() -> usize {
    2
}

/// A device family: how to build its firmware and where the images land.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    pub name: String,
    pub hardware: Vec<String>,
    /// The build command (program and arguments, run in the repository root).
    pub build: Vec<String>,
    /// Image name → path of the built file, relative to the repository root.
    pub images: BTreeMap<String, String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// An emulator run (QEMU, Renode) or a host build of the firmware.
    Emulator,
    /// Hardware in the loop (labgrid, LAVA...).
    Hil,
}

/// A test target: run for each family it applies to; writes JUnit XML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestTarget {
    pub name: String,
    pub kind: TargetKind,
    /// Families it applies to (default: all).
    #[serde(default)]
    pub families: Vec<String>,
    /// `{family}` and `{target}` are replaced in arguments and paths.
    pub command: Vec<String>,
    /// The JUnit XML file the command writes.
    pub junit: String,
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A shared lab's reservation around each run (labgrid, LAVA, a script).
    #[serde(default)]
    pub lock: Option<Lock>,
    /// Runs that failed for the lab's reasons (no lock, a timeout, an exit
    /// code of `infra_exit_codes`, no report) are run again up to this many
    /// times. Distinct from the retry of failing tests, which finds flaky ones.
    #[serde(default)]
    pub infra_retries: u32,
    /// Exit codes of the command that mean the lab, not the firmware, failed.
    #[serde(default)]
    pub infra_exit_codes: Vec<i32>,
    /// The device's serial console log the command writes; kept beside the
    /// JUnit report (`{family}`, `{target}` and `{place}` are replaced).
    #[serde(default)]
    pub serial_log: Option<String>,
}

/// How a run reserves its device and gives it back.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Waits for and reserves a device. What it prints: `NAME=VALUE` lines
    /// (`export` allowed, as `labgrid-client reserve --shell` prints) go to
    /// the environment of the run and of `release`; the last other line is
    /// the place, `{place}` in the command and `UPDRAFT_PLACE`.
    pub acquire: Vec<String>,
    /// Gives the device back; run after every run that acquired it.
    #[serde(default)]
    pub release: Vec<String>,
    /// How long `acquire` may wait.
    #[serde(default = "default_lock_timeout")]
    pub timeout_s: u64,
}

fn default_timeout() -> u64 {
    1800
}

fn default_lock_timeout() -> u64 {
    3600
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Build every family twice, elsewhere, and compare.
    #[serde(default = "yes")]
    pub reproducible: bool,
    #[serde(default)]
    pub coverage: Option<CoverageGate>,
    #[serde(default)]
    pub vulnerabilities: Option<VulnerabilityGate>,
    #[serde(default)]
    pub secrets: Option<SecretsGate>,
    /// A quarantined test leaves quarantine after this many passes in a row.
    #[serde(default = "default_passes")]
    pub unquarantine_after: u32,
}

impl Default for Gates {
    fn default() -> Self {
        Gates { reproducible: true, coverage: None, vulnerabilities: None, secrets: None, unquarantine_after: 5 }
    }
}

fn yes() -> bool {
    true
}
fn default_passes() -> u32 {
    5
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverageGate {
    pub min_percent: f64,
    /// Cobertura XML or lcov (`.info`) report; `{family}` is replaced.
    pub report: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VulnerabilityGate {
    /// The CycloneDX SBOM.
    pub sbom: String,
    /// A folder of OSV records (JSON), matched offline.
    pub osv_dir: String,
    /// `low`, `medium`, `high` or `critical`: at or above blocks.
    pub max_severity: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsGate {
    /// Source folders to scan besides the images.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Findings to ignore (one `path:fingerprint` per line).
    #[serde(default)]
    pub allow_file: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSpec {
    pub name: String,
    pub security_version: u64,
    pub release_keys: Vec<String>,
    pub build_key: String,
    #[serde(default)]
    pub sbom: Option<String>,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
}

/// One node of the stage graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub id: String,
    pub after: Vec<String>,
    pub what: String,
}

/// Replaces `{family}` and `{target}`.
pub fn expand(s: &str, family: &str, target: &str) -> String {
    s.replace("{family}", family).replace("{target}", target)
}

impl Spec {
    pub fn parse(text: &str) -> Result<Spec, PipelineError> {
        let spec: Spec = toml::from_str(text).map_err(|e| PipelineError::Spec(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), PipelineError> {
        let bad = |m: String| Err(PipelineError::Spec(m));
        if self.families.is_empty() {
            return bad("no [[families]]: a pipeline builds at least one device family".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for f in &self.families {
            if !names.insert(f.name.as_str()) {
                return bad(format!("family {:?} is defined twice", f.name));
            }
            if f.build.is_empty() {
                return bad(format!("family {:?} has an empty build command", f.name));
            }
            if f.images.is_empty() {
                return bad(format!("family {:?} lists no images", f.name));
            }
            if f.hardware.is_empty() {
                return bad(format!("family {:?} lists no hardware revisions", f.name));
            }
        }
        let mut targets = std::collections::BTreeSet::new();
        for t in &self.targets {
            if !targets.insert(t.name.as_str()) {
                return bad(format!("test target {:?} is defined twice", t.name));
            }
            if t.command.is_empty() {
                return bad(format!("test target {:?} has an empty command", t.name));
            }
            if t.lock.as_ref().is_some_and(|l| l.acquire.is_empty()) {
                return bad(format!("test target {:?} has a lock with an empty acquire command", t.name));
            }
            if t.infra_retries > 10 {
                return bad(format!(
                    "test target {:?}: infra_retries is {}; at most 10 (a lab that fails more often needs fixing)",
                    t.name, t.infra_retries
                ));
            }
            if let Some(f) = t.families.iter().find(|f| !names.contains(f.as_str())) {
                return bad(format!("test target {:?} names family {f:?}, which is not defined", t.name));
            }
        }
        if self.project.jobs == 0 {
            return bad("project.jobs must be at least 1".into());
        }
        if let Some(c) = &self.gates.coverage {
            if !(0.0..=100.0).contains(&c.min_percent) {
                return bad(format!("gates.coverage.min_percent is {}; it is a percentage", c.min_percent));
            }
        }
        if let Some(v) = &self.gates.vulnerabilities {
            if !["low", "medium", "high", "critical"].contains(&v.max_severity.as_str()) {
                return bad(format!(
                    "gates.vulnerabilities.max_severity is {:?}; use low, medium, high or critical",
                    v.max_severity
                ));
            }
        }
        if let Some(r) = &self.release {
            if r.release_keys.is_empty() {
                return bad("release.release_keys is empty: a bundle needs at least one signature".into());
            }
        }
        Ok(())
    }

    /// The families a target runs on.
    pub fn target_families<'a>(&'a self, t: &'a TestTarget) -> impl Iterator<Item = &'a Family> + 'a {
        self.families.iter().filter(move |f| t.families.is_empty() || t.families.contains(&f.name))
    }

    /// The stage graph: build and rebuild per family, the test matrix
    /// (families × targets), the gates, bundles, publish.
    pub fn plan(&self) -> Vec<Stage> {
        let mut out = Vec::new();
        let mut before_gates = Vec::new();
        for f in &self.families {
            let before = before_gates.len();
            let build = format!("build:{}", f.name);
            out.push(Stage { id: build.clone(), after: vec![], what: f.build.join(" ") });
            if self.gates.reproducible {
                let id = format!("reproduce:{}", f.name);
                out.push(Stage {
                    id: id.clone(),
                    after: vec![build.clone()],
                    what: "build again elsewhere (other folder, umask, time zone, locale) and compare".into(),
                });
                before_gates.push(id);
            }
            for t in self.targets.iter().filter(|t| t.families.is_empty() || t.families.contains(&f.name)) {
                let id = format!("test:{}:{}", f.name, t.name);
                let what = format!("{:?} {}", t.kind, expand(&t.command.join(" "), &f.name, &t.name)).to_lowercase();
                out.push(Stage { id: id.clone(), after: vec![build.clone()], what });
                before_gates.push(id);
            }
            if before_gates.len() == before {
                before_gates.push(build);
            }
        }
        let mut gates = Vec::new();
        if !self.targets.is_empty() {
            gates.push("tests pass (quarantined tests excepted)".to_owned());
        }
        if self.gates.reproducible {
            gates.push("reproducible".into());
        }
        if let Some(c) = &self.gates.coverage {
            gates.push(format!("coverage >= {}%", c.min_percent));
        }
        if let Some(v) = &self.gates.vulnerabilities {
            gates.push(format!("no vulnerability >= {}", v.max_severity));
        }
        if self.gates.secrets.is_some() {
            gates.push("no secrets".into());
        }
        out.push(Stage { id: "gates".into(), after: before_gates, what: gates.join(", ") });
        if let Some(r) = &self.release {
            let mut bundles = Vec::new();
            for f in &self.families {
                let id = format!("bundle:{}", f.name);
                out.push(Stage {
                    id: id.clone(),
                    after: vec!["gates".into()],
                    what: format!("bundle {} for {}, signed, with provenance", r.name, f.name),
                });
                bundles.push(id);
            }
            if let Some(server) = &r.server {
                let channel = r.channel.as_deref().unwrap_or("none");
                out.push(Stage {
                    id: "publish".into(),
                    after: bundles,
                    what: format!("publish to {server}, channel {channel}"),
                });
            }
        }
        out
    }
}
