//! `updraft keys`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use updraft_bundle::fsutil::{write_atomic, Overwrite};
use updraft_bundle::{Algorithm, PrivateKey, PublicKey};

use crate::output::emit;
use crate::Ctx;

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Generate a key pair: NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub.
    #[command(
        after_help = "Examples:\n  updraft keys generate --out-dir keys --name release-a\n  updraft keys generate --out-dir keys --name release-c --algorithm p256"
    )]
    Generate {
        /// Folder to write the keys to (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// File name stem: NAME.key and NAME.pub.
        #[arg(long)]
        name: String,
        /// The key type.
        #[arg(long, value_enum, default_value_t = AlgorithmArg::Ed25519)]
        algorithm: AlgorithmArg,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Print the key id of a public or private key file.
    #[command(after_help = "Example:\n  updraft keys id keys/release-a.pub")]
    Id {
        /// A public (.pub) or private (.key) key file.
        file: PathBuf,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
}

/// A signing key type.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AlgorithmArg {
    /// Ed25519 (the default).
    Ed25519,
    /// ECDSA P-256, for hardware tokens that lack Ed25519.
    P256,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyOut {
    keyid: String,
    algorithm: Algorithm,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<PathBuf>,
}

/// Reads a private key file.
pub fn load_private(path: &std::path::Path) -> anyhow::Result<PrivateKey> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("cannot read key {}", path.display()))?;
    PrivateKey::from_pkcs8_pem(&pem).with_context(|| format!("cannot use key {}", path.display()))
}

/// Reads a public key file (a private key file is refused with a hint).
pub fn load_public(path: &std::path::Path) -> anyhow::Result<PublicKey> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("cannot read key {}", path.display()))?;
    PublicKey::from_pem(&pem).with_context(|| format!("cannot use key {}", path.display()))
}

pub fn run(cmd: KeysCmd, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCmd::Generate { out_dir, name, algorithm, json } => {
            updraft_bundle::manifest::check_name(&name, "key name").map_err(anyhow::Error::msg)?;
            let algorithm = match algorithm {
                AlgorithmArg::Ed25519 => Algorithm::Ed25519,
                AlgorithmArg::P256 => Algorithm::P256,
            };
            std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
            let key_path = out_dir.join(format!("{name}.key"));
            let pub_path = out_dir.join(format!("{name}.pub"));
            for p in [&key_path, &pub_path] {
                if p.exists() {
                    anyhow::bail!(
                        "{} already exists; hint: keys are never overwritten, choose another --name",
                        p.display()
                    );
                }
            }
            let key = PrivateKey::generate(algorithm)?;
            write_atomic(&key_path, key.to_pkcs8_pem()?.as_bytes(), 0o600, Overwrite::Refuse)?;
            write_atomic(&pub_path, key.public().to_pem().as_bytes(), 0o644, Overwrite::Refuse)?;
            let out = KeyOut {
                keyid: key.id().to_hex(),
                algorithm,
                private_key: Some(key_path.clone()),
                public_key: Some(pub_path.clone()),
            };
            emit(json, &out, |s| {
                s.push_str(&format!("{}\n", out.keyid));
            })?;
            if !json {
                eprintln!("wrote {} (mode 0600) and {}", key_path.display(), pub_path.display());
            }
        }
        KeysCmd::Id { file, json } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let key = if text.contains("PRIVATE KEY") {
                PrivateKey::from_pkcs8_pem(&text).map(|k| k.public().clone())
            } else {
                PublicKey::from_pem(&text)
            }
            .with_context(|| format!("cannot use key {}", file.display()))?;
            let out =
                KeyOut { keyid: key.id().to_hex(), algorithm: key.algorithm(), private_key: None, public_key: None };
            emit(json, &out, |s| s.push_str(&format!("{}\n", out.keyid)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
