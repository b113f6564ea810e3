//! `updraft trust`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use updraft_bundle::fsutil::{write_atomic, Overwrite};
use updraft_bundle::trust::{self, RootParams, SigningStatus};
use updraft_bundle::{SignedRoot, TrustRoot, TrustedRoot};
use updraft_types::Timestamp;

use crate::cmd_keys::{load_private, load_public};
use crate::output::{emit, short};
use crate::Ctx;

#[derive(Args)]
pub struct RootArgs {
    /// A release key's public key file (.pub); repeat for each key.
    #[arg(long = "pubkey", required = true)]
    keys: Vec<PathBuf>,
    /// How many release keys must sign a bundle (and the next root version).
    #[arg(long)]
    threshold: usize,
    /// A build (provenance) key's public key file (.pub); repeat for each
    /// key. At least one: bundles carry provenance signed by a build key.
    #[arg(long = "build-pubkey", required = true)]
    build_keys: Vec<PathBuf>,
    /// Renamed: public keys are --pubkey (`--key` always names a private key).
    #[arg(long = "key", hide = true)]
    old_key: Vec<PathBuf>,
    /// Renamed: --build-pubkey.
    #[arg(long = "build-key", hide = true)]
    old_build_key: Vec<PathBuf>,
    /// When the root expires: a duration from now (365d, 52w) or an RFC 3339 time.
    #[arg(long)]
    expires: String,
    /// A private release key to sign with; repeat to collect a threshold.
    #[arg(long = "sign-with")]
    sign_with: Vec<PathBuf>,
    /// Where to write the new root.
    #[arg(long)]
    out: PathBuf,
    /// Write the root even if it lacks signatures (collect the rest with `updraft trust sign`).
    #[arg(long)]
    partial: bool,
    /// Print the result as JSON (camelCase keys).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum TrustCmd {
    /// Create version 1 of a trust root, signed by a threshold of its own release keys.
    #[command(
        after_help = "Example:\n  updraft trust init --pubkey keys/release-a.pub --pubkey keys/release-b.pub --threshold 1 --build-pubkey keys/build.pub --expires 365d --sign-with keys/release-a.key --out root.json"
    )]
    Init(RootArgs),
    /// Create version N+1 after a root, signed by a threshold of the old and of the new release keys.
    #[command(
        after_help = "Example:\n  updraft trust rotate --from root.json --pubkey keys/release-b.pub --pubkey keys/release-d.pub --threshold 1 --build-pubkey keys/build.pub --expires 365d --sign-with keys/release-b.key --out root.2.json"
    )]
    Rotate {
        /// The current root (version N).
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        args: RootArgs,
    },
    /// Add a signature to a root (to collect a threshold on different machines).
    #[command(after_help = "Example:\n  updraft trust sign root.2.json --key keys/release-d.key --previous root.json")]
    Sign {
        /// The trust root version to add a signature to.
        file: PathBuf,
        /// The private release key to sign with.
        #[arg(long)]
        key: PathBuf,
        /// For a rotation: the previous root version, to report what is still missing.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Check a pinned root and walk a chain of newer versions; print the root to trust.
    #[command(after_help = "Example:\n  updraft trust verify root.json root.2.json root.3.json")]
    Verify {
        /// The pinned (trusted) root.
        pinned: PathBuf,
        /// Newer versions, in order (N+1, N+2, ...).
        updates: Vec<PathBuf>,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Show what a root file says, without checking it.
    #[command(after_help = "Example:\n  updraft trust inspect root.json")]
    Inspect {
        /// A trust root file.
        file: PathBuf,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
}

/// Parses `--expires`: a duration from `now`, or an RFC 3339 time.
pub fn parse_expiry(s: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let d = updraft_types::parse_duration(s).map_err(|e| {
        anyhow::anyhow!("{e}; hint: write a duration such as 365d or a time such as 2027-01-01T00:00:00Z")
    })?;
    Ok(now.saturating_add(d))
}

/// Reads a trust root file.
pub fn load_root(path: &Path) -> anyhow::Result<SignedRoot> {
    let bytes = updraft_bundle::fsutil::read_limited(path, trust::MAX_TRUST_ROOT_BYTES as u64, "trust root")?;
    SignedRoot::parse(&bytes)
        .map_err(updraft_bundle::Error::from)
        .with_context(|| format!("cannot use trust root {}", path.display()))
}

/// Reads and checks the pinned root and any newer versions.
pub fn load_trusted(pinned: &Path, updates: &[PathBuf], now: Timestamp) -> anyhow::Result<TrustedRoot> {
    let pinned_root = load_root(pinned)?;
    let chain = updates.iter().map(|p| load_root(p)).collect::<anyhow::Result<Vec<_>>>()?;
    trust::verify_chain(&pinned_root, &chain, now)
        .map_err(updraft_bundle::Error::from)
        .with_context(|| format!("trust root {} is not trusted", pinned.display()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyView {
    keyid: String,
    algorithm: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RootView {
    version: u64,
    expires: Timestamp,
    release_threshold: usize,
    release_keys: Vec<KeyView>,
    build_keys: Vec<KeyView>,
    signatures: Vec<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing: Option<SigningStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
}

fn view(signed: &SignedRoot, root: &TrustRoot, signing: Option<SigningStatus>, path: Option<PathBuf>) -> RootView {
    let keys = |ks: &[updraft_bundle::PublicKey]| {
        ks.iter().map(|k| KeyView { keyid: k.id().to_hex(), algorithm: k.algorithm().to_string() }).collect()
    };
    RootView {
        version: root.version,
        expires: root.expires,
        release_threshold: root.release_threshold,
        release_keys: keys(&root.release_keys),
        build_keys: keys(&root.build_keys),
        signatures: signed.envelope.signatures.iter().map(|s| s.keyid.clone()).collect(),
        signing,
        path,
    }
}

fn human(v: &RootView, s: &mut String) {
    s.push_str(&format!("trust root version {}, expires {}\n", v.version, v.expires));
    s.push_str(&format!("release keys ({} of {} must sign):\n", v.release_threshold, v.release_keys.len()));
    for k in &v.release_keys {
        s.push_str(&format!("  {} {}\n", k.keyid, k.algorithm));
    }
    s.push_str(&format!("build keys ({}):\n", v.build_keys.len()));
    for k in &v.build_keys {
        s.push_str(&format!("  {} {}\n", k.keyid, k.algorithm));
    }
    s.push_str(&format!("signatures: {}\n", v.signatures.len()));
    if let Some(st) = &v.signing {
        s.push_str(&format!("  by this version's release keys: {} of {} needed\n", st.own.0, st.own.1));
        if let Some((have, need)) = st.previous {
            s.push_str(&format!("  by the previous version's release keys: {have} of {need} needed\n"));
        }
        s.push_str(if st.complete() {
            "complete\n"
        } else {
            "incomplete: collect the missing signatures with `updraft trust sign`\n"
        });
    }
}

fn make_root(args: RootArgs, previous: Option<&TrustRoot>) -> anyhow::Result<ExitCode> {
    if !args.old_key.is_empty() || !args.old_build_key.is_empty() {
        anyhow::bail!(
            "a trust root lists public keys: pass them with --pubkey (release keys) and --build-pubkey (build keys); \
             --key and --build-key always name private keys"
        );
    }
    let now = Timestamp::now();
    let params = RootParams {
        release_keys: args.keys.iter().map(|p| load_public(p)).collect::<anyhow::Result<_>>()?,
        release_threshold: args.threshold,
        build_keys: args.build_keys.iter().map(|p| load_public(p)).collect::<anyhow::Result<_>>()?,
        expires: parse_expiry(&args.expires, now)?,
    };
    if params.expires <= now {
        anyhow::bail!("--expires {} is in the past", params.expires);
    }
    let signers = args.sign_with.iter().map(|p| load_private(p)).collect::<anyhow::Result<Vec<_>>>()?;
    for (k, p) in signers.iter().zip(&args.sign_with) {
        let listed = params.release_keys.iter().any(|r| r.id() == k.id())
            || previous.is_some_and(|prev| prev.is_release_key(k.id()));
        if !listed {
            anyhow::bail!(
                "{} ({}) is not a release key of this root{}; hint: sign with the keys given to --key",
                p.display(),
                short(&k.id().to_hex()),
                if previous.is_some() { " or of the previous version" } else { "" }
            );
        }
    }
    let refs: Vec<&_> = signers.iter().collect();
    let signed = match previous {
        None => trust::init(params, &refs),
        Some(prev) => trust::rotate(prev, params, &refs),
    }
    .map_err(updraft_bundle::Error::from)?;
    let status = trust::signing_status(&signed, previous);
    if !status.complete() && !args.partial {
        anyhow::bail!(
            "the new root lacks signatures ({} of {} by its own release keys{}); hint: pass more --sign-with, or --partial and collect them with `updraft trust sign`",
            status.own.0,
            status.own.1,
            status.previous.map(|(h, n)| format!(", {h} of {n} by the previous version's")).unwrap_or_default()
        );
    }
    write_atomic(&args.out, &signed.to_json(), 0o644, Overwrite::Refuse)?;
    let v = view(&signed, &signed.root, Some(status), Some(args.out.clone()));
    emit(args.json, &v, |s| {
        s.push_str(&format!("wrote {}\n", args.out.display()));
        human(&v, s);
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn run(cmd: TrustCmd, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match cmd {
        TrustCmd::Init(args) => make_root(args, None),
        TrustCmd::Rotate { from, args } => {
            let prev = load_root(&from)?;
            // The old version must be genuine before anyone signs its successor.
            trust::verify_chain(&prev, &[], Timestamp(0))
                .map_err(updraft_bundle::Error::from)
                .with_context(|| format!("trust root {} is not valid", from.display()))?;
            make_root(args, Some(&prev.root))
        }
        TrustCmd::Sign { file, key, previous, json } => {
            let mut signed = load_root(&file)?;
            let key = load_private(&key)?;
            let prev = previous.as_deref().map(load_root).transpose()?;
            let allowed =
                signed.root.is_release_key(key.id()) || prev.as_ref().is_some_and(|p| p.root.is_release_key(key.id()));
            if !allowed {
                anyhow::bail!(
                    "key {} is not a release key of this root{}",
                    short(&key.id().to_hex()),
                    if prev.is_some() {
                        " or of the previous version"
                    } else {
                        "; hint: for a rotation pass --previous"
                    }
                );
            }
            let added = signed.sign(&key);
            if added {
                let mut f = updraft_bundle::fsutil::AtomicFile::create(&file, 0o644)?;
                std::io::Write::write_all(f.file(), &signed.to_json())?;
                f.commit(Overwrite::Replace)?;
            } else {
                eprintln!("key {} has already signed {}; nothing changed", short(&key.id().to_hex()), file.display());
            }
            let status = trust::signing_status(&signed, prev.as_ref().map(|p| &p.root));
            let v = view(&signed, &signed.root, Some(status), Some(file));
            emit(json, &v, |s| human(&v, s))?;
            Ok(ExitCode::SUCCESS)
        }
        TrustCmd::Verify { pinned, updates, json } => {
            let trusted = load_trusted(&pinned, &updates, Timestamp::now())?;
            let last = updates.last().unwrap_or(&pinned);
            let signed = load_root(last)?;
            let v = view(&signed, trusted.root(), None, Some(last.clone()));
            emit(json, &v, |s| {
                s.push_str(&format!("trusted: {} (version {})\n", last.display(), v.version));
                human(&v, s);
            })?;
            Ok(ExitCode::SUCCESS)
        }
        TrustCmd::Inspect { file, json } => {
            let signed = load_root(&file)?;
            let v = view(&signed, &signed.root, Some(trust::signing_status(&signed, None)), None);
            emit(json, &v, |s| {
                s.push_str("(not verified; use `updraft trust verify`)\n");
                human(&v, s);
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
