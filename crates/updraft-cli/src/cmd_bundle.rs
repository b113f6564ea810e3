//! `updraft bundle`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use updraft_bundle::bundle::{DigestCheck, ImageInput, Policy};
use updraft_bundle::manifest::{Image, Manifest};
use updraft_bundle::{BuildContext, CreateParams, Requirement, SignOutcome, Signers, Source, Target};
use updraft_types::{SecurityVersion, Timestamp};

use crate::cmd_keys::load_private;
use crate::cmd_trust::load_trusted;
use crate::output::{emit, progress_enabled, Bar};
use crate::{Ctx, REJECTED};

#[derive(Args)]
pub struct CreateArgs {
    /// Release name.
    #[arg(long)]
    name: String,
    /// Release version (semver).
    #[arg(long)]
    version: semver::Version,
    /// Device family the bundle is for.
    #[arg(long)]
    family: String,
    /// A compatible hardware revision; repeat for each.
    #[arg(long = "hardware", required = true)]
    hardware: Vec<String>,
    /// Anti-rollback counter: devices refuse bundles below their installed one.
    #[arg(long)]
    security_version: u64,
    /// An image for the A/B slot: NAME=PATH; repeat for each.
    #[arg(long = "image")]
    images: Vec<String>,
    /// An image for a named component outside the A/B pair: NAME=PATH.
    #[arg(long = "component-image")]
    component_images: Vec<String>,
    /// A CycloneDX JSON SBOM to include.
    #[arg(long)]
    sbom: Option<PathBuf>,
    /// A requirement on another component, e.g. 'bootloader>=1.4'; repeat for each.
    #[arg(long = "requires")]
    requires: Vec<String>,
    /// Private release key(s) to sign the manifest with.
    #[arg(long = "sign-with", required = true)]
    sign_with: Vec<PathBuf>,
    /// Private build key that signs the provenance.
    #[arg(long)]
    build_key: PathBuf,
    /// Output bundle file.
    #[arg(long)]
    out: PathBuf,
    /// Seconds since the epoch of the last source change; every timestamp in the bundle.
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<String>,
    /// Source repository URI (default: from GitHub Actions or GitLab CI).
    #[arg(long)]
    source_uri: Option<String>,
    /// Source commit (default: from GitHub Actions or GitLab CI).
    #[arg(long)]
    source_commit: Option<String>,
    /// Git ref built, e.g. refs/tags/v1.2.3 (default: from CI).
    #[arg(long)]
    source_ref: Option<String>,
    /// Provenance builder.id (default: from CI, else a local-builder id).
    #[arg(long)]
    builder_id: Option<String>,
    /// Provenance invocation id (default: the CI job URL).
    #[arg(long)]
    invocation_id: Option<String>,
    /// Print the result as JSON (camelCase keys).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum BundleCmd {
    /// Build a signed, reproducible bundle.
    #[command(
        after_help = "Example:\n  updraft bundle create --name sensor-fw --version 2.3.1 --family sensor --hardware rev-c --security-version 7 --image rootfs=build/rootfs.img --sign-with keys/release-a.key --build-key keys/build.key --out sensor-fw-2.3.1.bundle"
    )]
    Create(Box<CreateArgs>),
    /// Add a release-key signature to a bundle, changing nothing else.
    #[command(after_help = "Example:\n  updraft bundle sign sensor-fw-2.3.1.bundle --key keys/release-c.key")]
    Sign {
        /// The bundle to add a signature to (rewritten in place, atomically).
        file: PathBuf,
        /// The private release key to sign with (.key).
        #[arg(long)]
        key: PathBuf,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle against a trust root (exit 0 valid, 1 rejected, 2 error).
    #[command(
        after_help = "Examples:\n  updraft bundle verify sensor-fw-2.3.1.bundle --trust root.json\n  updraft bundle verify sensor-fw-2.3.1.bundle --trust root.json --family sensor --hardware rev-c --json"
    )]
    Verify {
        /// The bundle to verify.
        file: PathBuf,
        /// The pinned trust root.
        #[arg(long)]
        trust: PathBuf,
        /// Newer trust root versions to walk to, in order.
        #[arg(long = "trust-update")]
        trust_updates: Vec<PathBuf>,
        /// Require this device family.
        #[arg(long)]
        family: Option<String>,
        /// Require support for this hardware revision.
        #[arg(long)]
        hardware: Option<String>,
        /// Refuse bundles below this security version.
        #[arg(long)]
        min_security_version: Option<u64>,
        /// Also check SHA-512 digests of images (slower).
        #[arg(long)]
        sha512: bool,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Show what a bundle holds, without verifying signatures.
    #[command(after_help = "Example:\n  updraft bundle inspect sensor-fw-2.3.1.bundle")]
    Inspect {
        /// The bundle to show.
        file: PathBuf,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
}

fn split_image(spec: &str, target: Target) -> anyhow::Result<ImageInput> {
    let (name, path) = spec
        .split_once('=')
        .with_context(|| format!("image {spec:?} must be NAME=PATH, e.g. rootfs=build/rootfs.img"))?;
    Ok(ImageInput { name: name.to_owned(), path: PathBuf::from(path), target })
}

/// Runs git in the current folder; `None` outside a repository or without git.
fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).stderr(std::process::Stdio::null()).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// A git remote as a source URI (`git+https://...`), without credentials.
fn source_uri_of_remote(remote: &str) -> String {
    let r = remote.trim();
    let r = match (r.find("://"), r.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &r[..s + 3], &r[at + 1..]),
        _ => r.to_owned(),
    };
    if let Some(rest) = r.strip_prefix("git@") {
        // scp-like syntax: git@host:owner/repo.git
        return format!("git+ssh://git@{}", rest.replacen(':', "/", 1));
    }
    if r.starts_with("git+") {
        r
    } else {
        format!("git+{r}")
    }
}

fn create(a: CreateArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let sde = match a.source_date_epoch.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => s.to_owned(),
        None => {
            let t = git(&["log", "-1", "--format=%ct"]).context(
                "SOURCE_DATE_EPOCH is not set and this is not a git repository; hint: \
                 export SOURCE_DATE_EPOCH=<seconds of the last source change> or pass --source-date-epoch",
            )?;
            eprintln!("note: SOURCE_DATE_EPOCH={t}, the time of the last commit of the enclosing git repository");
            t
        }
    };
    let created = Timestamp::parse_source_date_epoch(&sde)?;
    let mut detected = BuildContext::detect(|k| std::env::var(k).ok());
    if detected.source_commit.is_none() && a.source_commit.is_none() {
        if let Some(commit) = git(&["rev-parse", "HEAD"]) {
            let remote = git(&["config", "--get", "remote.origin.url"]).map(|r| source_uri_of_remote(&r));
            if let (None, None) = (&remote, &a.source_uri) {
                anyhow::bail!(
                    "the enclosing git repository has no remote.origin.url to name the source; \
                     hint: pass --source-uri (e.g. git+https://example.com/fw.git)"
                );
            }
            let uri = a.source_uri.clone().or(remote).unwrap_or_default();
            eprintln!("note: source {uri} at commit {commit}, from the enclosing git repository");
            if git(&["status", "--porcelain", "--untracked-files=no"]).is_some() {
                eprintln!("warning: the working tree has changes not committed; the bundle names commit {commit}");
            }
            detected.source_uri = Some(uri);
            detected.source_commit = Some(commit);
            if detected.source_ref.is_none() {
                detected.source_ref = git(&["symbolic-ref", "-q", "HEAD"]);
            }
        }
    }
    let build = BuildContext {
        builder_id: a.builder_id.or(detected.builder_id.clone()),
        invocation_id: a.invocation_id.or(detected.invocation_id.clone()),
        source_uri: a.source_uri.or(detected.source_uri.clone()),
        source_commit: a.source_commit.or(detected.source_commit.clone()),
        source_ref: a.source_ref.or(detected.source_ref.clone()),
        ci: detected.ci,
    };
    let (Some(uri), Some(commit)) = (build.source_uri.clone(), build.source_commit.clone()) else {
        anyhow::bail!("cannot tell which source this is; hint: pass --source-uri and --source-commit, run it inside the source's git repository, or in GitHub Actions or GitLab CI");
    };
    let mut images = Vec::new();
    for spec in &a.images {
        images.push(split_image(spec, Target::Slot)?);
    }
    for spec in &a.component_images {
        let (name, _) = spec.split_once('=').unwrap_or((spec, ""));
        images.push(split_image(spec, Target::Component(name.to_owned()))?);
    }
    if images.is_empty() {
        anyhow::bail!("no images; hint: pass --image NAME=PATH");
    }
    let requires = a
        .requires
        .iter()
        .map(|r| r.parse::<Requirement>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let release = a.sign_with.iter().map(|p| load_private(p)).collect::<anyhow::Result<Vec<_>>>()?;
    let build_key = load_private(&a.build_key)?;
    let params = CreateParams {
        name: a.name,
        version: a.version,
        security_version: SecurityVersion(a.security_version),
        family: a.family,
        hardware: a.hardware,
        requires,
        source: Source { uri, commit },
        created,
        images,
        sbom: a.sbom,
        build,
        updraft_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let bar = Bar::new(progress_enabled(ctx.quiet, a.json));
    let created = updraft_bundle::create(
        &params,
        &Signers { release: release.iter().collect(), build: &build_key },
        &a.out,
        &bar,
    )?;
    emit(a.json, &created, |s| {
        s.push_str(&format!("wrote {} ({} bytes)\n", created.path.display(), created.size));
        s.push_str(&format!("sha256 {}\n", created.sha256));
        s.push_str(&format!(
            "{} {} for {} ({}), security version {}\n",
            created.manifest.name,
            created.manifest.version,
            created.manifest.family,
            created.manifest.hardware.join(", "),
            created.manifest.security_version
        ));
        for k in &created.signers {
            s.push_str(&format!("signed by {k}\n"));
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn manifest_lines(m: &Manifest, s: &mut String) {
    s.push_str(&format!("name:             {}\n", m.name));
    s.push_str(&format!("version:          {}\n", m.version));
    s.push_str(&format!("security version: {}\n", m.security_version));
    s.push_str(&format!("family:           {}\n", m.family));
    s.push_str(&format!("hardware:         {}\n", m.hardware.join(", ")));
    if !m.requires.is_empty() {
        let r: Vec<String> = m.requires.iter().map(|r| r.to_string()).collect();
        s.push_str(&format!("requires:         {}\n", r.join(", ")));
    }
    s.push_str(&format!("created:          {}\n", m.created));
    s.push_str(&format!("source:           {} @ {}\n", m.source.uri, m.source.commit));
    s.push_str("images:\n");
    for Image { name, target, size, digests, .. } in &m.images {
        let target = target.to_string();
        s.push_str(&format!("  {name:<12} {target:<16} {size:>12} bytes  sha256 {}\n", digests.sha256));
    }
    if let Some(sbom) = &m.sbom {
        s.push_str(&format!("sbom:             {} ({} bytes, sha256 {})\n", sbom.path, sbom.size, sbom.digests.sha256));
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Refused {
    valid: bool,
    reason: &'static str,
    message: String,
}

pub fn run(cmd: BundleCmd, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match cmd {
        BundleCmd::Create(a) => create(*a, ctx),
        BundleCmd::Sign { file, key, json } => {
            let key = load_private(&key)?;
            let bar = Bar::new(progress_enabled(ctx.quiet, json));
            let (outcome, signatures) =
                updraft_bundle::sign(&file, &key, &bar).with_context(|| format!("cannot sign {}", file.display()))?;
            #[derive(Serialize)]
            struct Out {
                outcome: SignOutcome,
                keyid: String,
                signatures: Vec<String>,
            }
            let out = Out { outcome, keyid: key.id().to_hex(), signatures };
            emit(json, &out, |s| {
                match outcome {
                    SignOutcome::Added => s.push_str(&format!("added signature by {}\n", out.keyid)),
                    SignOutcome::AlreadySigned => {
                        s.push_str(&format!("{} had already signed; nothing changed\n", out.keyid))
                    }
                }
                s.push_str(&format!("{} signature(s): {}\n", out.signatures.len(), out.signatures.join(", ")));
            })?;
            Ok(ExitCode::SUCCESS)
        }
        BundleCmd::Verify { file, trust, trust_updates, family, hardware, min_security_version, sha512, json } => {
            let trusted = load_trusted(&trust, &trust_updates, Timestamp::now())?;
            let policy = Policy {
                family,
                hardware,
                min_security_version: min_security_version.map(SecurityVersion),
                digests: if sha512 { DigestCheck::All } else { DigestCheck::Sha256 },
            };
            let bar = Bar::new(progress_enabled(ctx.quiet, json));
            match updraft_bundle::verify_file(&file, &trusted, &policy, &bar) {
                Ok(v) => {
                    #[derive(Serialize)]
                    struct Out<'a> {
                        valid: bool,
                        #[serde(flatten)]
                        bundle: &'a updraft_bundle::VerifiedBundle,
                    }
                    emit(json, &Out { valid: true, bundle: &v }, |s| {
                        s.push_str(&format!("valid: {}\n", file.display()));
                        manifest_lines(&v.header.manifest, s);
                        for k in &v.header.signers {
                            s.push_str(&format!("release signature: {k}\n"));
                        }
                        s.push_str(&format!(
                            "provenance:       {} (signed by {})\n",
                            v.header.provenance.builder_id,
                            v.header.provenance.signers.iter().map(|k| k.to_hex()).collect::<Vec<_>>().join(", ")
                        ));
                        s.push_str(&format!(
                            "trust root:       version {}; digests checked: {}\n",
                            v.trust_root_version,
                            if v.sha512_checked { "sha256, sha512" } else { "sha256" }
                        ));
                    })?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(updraft_bundle::Error::Rejected(r)) => {
                    let out = Refused { valid: false, reason: r.code(), message: r.to_string() };
                    emit(json, &out, |s| s.push_str(&format!("rejected: {}: {}\n", file.display(), out.message)))?;
                    Ok(ExitCode::from(REJECTED))
                }
                Err(e) => Err(e.into()),
            }
        }
        BundleCmd::Inspect { file, json } => {
            let i =
                updraft_bundle::inspect_file(&file).with_context(|| format!("cannot inspect {}", file.display()))?;
            emit(json, &i, |s| {
                s.push_str(&format!("{} (not verified; use `updraft bundle verify`)\n", file.display()));
                manifest_lines(&i.manifest, s);
                s.push_str(&format!("manifest sha256:  {}\n", i.manifest_sha256));
                for sig in &i.signatures {
                    s.push_str(&format!("signature:        {}\n", sig.keyid.as_deref().unwrap_or("(no keyid)")));
                }
                s.push_str(&format!("provenance:       {} ({})\n", i.provenance_builder_id, i.provenance_build_type));
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
