//! The operator API client used by `release`, `channel`, `rollout`,
//! `devices`, `enroll-token`, `token` and `audit`. The server URL and token
//! come from flags, the environment (`UPDRAFT_SERVER`, `UPDRAFT_TOKEN`), or
//! a TOML file (`UPDRAFT_CLIENT_CONFIG`, default `~/.config/updraft/client.toml`,
//! keys `server` and `token`).

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use serde_json::Value;

#[derive(Args, Clone, Default)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(long, env = "UPDRAFT_SERVER", global = true)]
    pub server: Option<String>,
    /// An API token.
    #[arg(long, env = "UPDRAFT_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    token: Option<String>,
}

/// A refusal by the server (exit code 1), with its error code and message.
#[derive(Debug, thiserror::Error)]
#[error("the server refused ({status} {code}): {message}")]
pub struct Refused {
    pub status: u16,
    pub code: String,
    pub message: String,
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("UPDRAFT_CLIENT_CONFIG") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/updraft/client.toml"))
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let file: FileConfig = match config_path() {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid client config {}", p.display()))?
            }
            _ => FileConfig::default(),
        };
        let base = args.server.clone().or(file.server).unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        Ok(Client { agent, base: base.trim_end_matches('/').to_owned(), token: args.token.clone().or(file.token) })
    }

    /// The server's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish(&self, mut res: ureq::http::Response<ureq::Body>) -> anyhow::Result<Value> {
        let status = res.status().as_u16();
        let text = res.body_mut().with_config().limit(64 * 1024 * 1024).read_to_string().unwrap_or_default();
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(Refused {
                status,
                code: v["error"].as_str().unwrap_or("error").to_owned(),
                message: v["message"].as_str().map(str::to_owned).unwrap_or(text),
            }
            .into());
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("the server sent something that is not JSON: {text:.200}"))
    }

    fn auth(&self) -> anyhow::Result<String> {
        let t = self.token.as_deref().context("no API token; hint: pass --token or set UPDRAFT_TOKEN")?;
        Ok(format!("Bearer {t}"))
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let res = self
            .agent
            .get(&self.url(path))
            .header("Authorization", &self.auth()?)
            .call()
            .with_context(|| format!("cannot reach {}", self.base))?;
        self.finish(res)
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let res = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &self.auth()?)
            .send_json(body)
            .with_context(|| format!("cannot reach {}", self.base))?;
        self.finish(res)
    }

    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let res = self
            .agent
            .put(&self.url(path))
            .header("Authorization", &self.auth()?)
            .send_json(body)
            .with_context(|| format!("cannot reach {}", self.base))?;
        self.finish(res)
    }

    pub fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let res = self
            .agent
            .patch(&self.url(path))
            .header("Authorization", &self.auth()?)
            .send_json(body)
            .with_context(|| format!("cannot reach {}", self.base))?;
        self.finish(res)
    }

    pub fn post_empty(&self, path: &str) -> anyhow::Result<Value> {
        let res = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &self.auth()?)
            .send_empty()
            .with_context(|| format!("cannot reach {}", self.base))?;
        self.finish(res)
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let res = self
            .agent
            .delete(&self.url(path))
            .header("Authorization", &self.auth()?)
            .call()
            .with_context(|| format!("cannot reach {}", self.base))?;
        self.finish(res)
    }

    /// Streams `reader` (`len` bytes) as the body of a POST.
    pub fn post_stream(&self, path: &str, reader: &mut dyn Read, len: u64) -> anyhow::Result<Value> {
        let res = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &self.auth()?)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", &len.to_string())
            .send(ureq::SendBody::from_reader(reader))
            .with_context(|| format!("cannot reach {}", self.base))?;
        self.finish(res)
    }
}
