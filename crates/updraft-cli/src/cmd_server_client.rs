//! Commands that talk to a server: `release`, `channel`, `devices`,
//! `enroll-token`, `token`, `audit` (and `rollout` beyond `check`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{Client, ClientArgs};
use crate::output::{emit, progress_enabled};
use crate::Ctx;

#[derive(Subcommand)]
pub enum ReleaseCmd {
    /// Upload a bundle; the server verifies it against its trust root.
    Publish {
        file: PathBuf,
        /// Also promote it into this channel.
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List releases.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a release (NAME@VERSION).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ChannelCmd {
    /// Put a release (NAME@VERSION) into a channel, without rebuilding it.
    Promote {
        channel: String,
        release: String,
        #[arg(long)]
        json: bool,
    },
    /// List the releases of a channel.
    Show {
        channel: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DevicesCmd {
    /// List devices.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long)]
        json: bool,
    },
    /// Show a device.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum EnrollTokenCmd {
    /// Create an enrollment token for devices (shown once).
    Create {
        /// How many devices may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid (e.g. 7d).
        #[arg(long, default_value = "7d")]
        expires: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create an API token (shown once).
    Create {
        name: String,
        /// viewer, releaser, operator or admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        json: bool,
    },
    /// List API tokens.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API token.
    Revoke {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

fn str_of(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn release_line(r: &Value) -> String {
    format!(
        "{:<28} {:<10} security {:<4} {:>12} bytes  sha256 {}  channels {}\n",
        str_of(r, "id"),
        str_of(r, "family"),
        str_of(r, "securityVersion"),
        str_of(r, "size"),
        &str_of(r, "sha256")[..16.min(str_of(r, "sha256").len())],
        r["channels"]
            .as_array()
            .map(|c| c.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    )
}

/// A reader that advances a progress bar.
struct Counting<'a, R> {
    inner: R,
    bar: &'a indicatif::ProgressBar,
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

pub fn release(cmd: ReleaseCmd, client: &ClientArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    match cmd {
        ReleaseCmd::Publish { file, channel, json } => {
            let f = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
            let len = f.metadata()?.len();
            let bar = if progress_enabled(ctx.quiet, json) {
                let b = indicatif::ProgressBar::new(len);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("template"),
                );
                b.set_message("uploading");
                b
            } else {
                indicatif::ProgressBar::hidden()
            };
            let mut reader = Counting { inner: std::io::BufReader::with_capacity(1 << 20, f), bar: &bar };
            let r = c.post_stream("/api/v1/releases", &mut reader, len)?;
            bar.finish_and_clear();
            if let Some(ch) = &channel {
                c.post(&format!("/api/v1/channels/{ch}/releases"), &json!({ "release": r["id"] }))?;
            }
            let r = c.get(&format!("/api/v1/releases/{}", str_of(&r, "id")))?;
            emit(json, &r, |s| {
                s.push_str(&format!("published {} (sha256 {})\n", str_of(&r, "id"), str_of(&r, "sha256")));
            })?;
        }
        ReleaseCmd::List { json } => {
            let r = c.get("/api/v1/releases")?;
            emit(json, &r, |s| {
                for rel in r.as_array().into_iter().flatten() {
                    s.push_str(&release_line(rel));
                }
            })?;
        }
        ReleaseCmd::Show { id, json } => {
            let r = c.get(&format!("/api/v1/releases/{id}"))?;
            emit(json, &r, |s| {
                for k in [
                    "id",
                    "family",
                    "hardware",
                    "securityVersion",
                    "size",
                    "sha256",
                    "manifestSha256",
                    "signers",
                    "builderId",
                    "channels",
                    "publishedBy",
                ] {
                    s.push_str(&format!("{k:<16} {}\n", str_of(&r, k)));
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn channel(cmd: ChannelCmd, client: &ClientArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    match cmd {
        ChannelCmd::Promote { channel, release, json } => {
            c.post(&format!("/api/v1/channels/{channel}/releases"), &json!({ "release": release }))?;
            let out = json!({ "channel": channel, "release": release });
            emit(json, &out, |s| s.push_str(&format!("{release} is in {channel}\n")))?;
        }
        ChannelCmd::Show { channel, json } => {
            let r = c.get(&format!("/api/v1/channels/{channel}"))?;
            emit(json, &r, |s| {
                for rel in r.as_array().into_iter().flatten() {
                    s.push_str(&format!("{}\n", rel.as_str().unwrap_or_default()));
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn devices(cmd: DevicesCmd, client: &ClientArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    match cmd {
        DevicesCmd::List { limit, after, json } => {
            let r = c.get(&format!("/api/v1/devices?limit={limit}&after={after}"))?;
            emit(json, &r, |s| {
                for d in r.as_array().into_iter().flatten() {
                    s.push_str(&format!(
                        "{:<24} {:<10} {:<8} {:<6} {}\n",
                        str_of(d, "id"),
                        str_of(d, "family"),
                        str_of(d, "hardware"),
                        str_of(d, "region"),
                        str_of(d, "release")
                    ));
                }
            })?;
        }
        DevicesCmd::Show { id, json } => {
            let r = c.get(&format!("/api/v1/devices/{id}"))?;
            emit(json, &r, |s| {
                for k in [
                    "id",
                    "family",
                    "hardware",
                    "region",
                    "tags",
                    "channel",
                    "release",
                    "lastKnownGood",
                    "enrolledMs",
                    "lastSeenMs",
                ] {
                    s.push_str(&format!("{k:<14} {}\n", str_of(&r, k)));
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn enroll_token(cmd: EnrollTokenCmd, client: &ClientArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    let EnrollTokenCmd::Create { uses, expires, json } = cmd;
    let secs = updraft_types::parse_duration(&expires)?.as_secs();
    let r = c.post("/api/v1/enrollment-tokens", &json!({ "uses": uses, "expiresInS": secs }))?;
    emit(json, &r, |s| s.push_str(&format!("{}\n", str_of(&r, "token"))))?;
    Ok(ExitCode::SUCCESS)
}

pub fn token(cmd: TokenCmd, client: &ClientArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    match cmd {
        TokenCmd::Create { name, role, json } => {
            let r = c.post("/api/v1/tokens", &json!({ "name": name, "role": role }))?;
            emit(json, &r, |s| s.push_str(&format!("{}\n", str_of(&r, "token"))))?;
        }
        TokenCmd::List { json } => {
            let r = c.get("/api/v1/tokens")?;
            emit(json, &r, |s| {
                for t in r.as_array().into_iter().flatten() {
                    s.push_str(&format!(
                        "{:>4} {:<20} {:<9} {}\n",
                        str_of(t, "id"),
                        str_of(t, "name"),
                        str_of(t, "role"),
                        if t["revoked"] == true { "revoked" } else { "" }
                    ));
                }
            })?;
        }
        TokenCmd::Revoke { id, json } => {
            c.delete(&format!("/api/v1/tokens/{id}"))?;
            emit(json, &json!({ "revoked": id }), |s| s.push_str(&format!("revoked token {id}\n")))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn audit(
    action: Option<String>,
    after: i64,
    limit: u32,
    json: bool,
    client: &ClientArgs,
) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    let mut path = format!("/api/v1/audit?after={after}&limit={limit}");
    if let Some(a) = &action {
        path.push_str(&format!("&action={a}"));
    }
    let r = c.get(&path)?;
    emit(json, &r, |s| {
        for e in r.as_array().into_iter().flatten() {
            let at = updraft_types::Timestamp((e["atMs"].as_i64().unwrap_or(0) / 1000) as u64);
            s.push_str(&format!(
                "{:>6} {} {:<20} {:<24} {:<20} {}\n",
                str_of(e, "id"),
                at,
                str_of(e, "actor"),
                str_of(e, "action"),
                str_of(e, "subject"),
                str_of(e, "detail")
            ));
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
