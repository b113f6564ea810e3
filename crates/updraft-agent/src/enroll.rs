//! Enrollment: the device trades an enrollment token (`upe_...`, from
//! `updraft enroll-token create`) for its own device token, kept 0600 in
//! the token file, and the server's address goes into agent.toml. Run by
//! `updraft-agent enroll`, or on the first start when the image ships an
//! enrollment token (`server.enrollment_token_file`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use updraft_types::DeviceId;

use crate::config::{Config, ServerConfig};
use crate::log;

/// Where the device id comes from when neither `--device-id` nor
/// `device.id` names it.
pub const DEFAULT_ID_FILE: &str = "/etc/machine-id";

/// What `updraft-agent enroll` was given.
#[derive(Clone, Debug)]
pub struct Request {
    pub server: String,
    pub enrollment_token: String,
    pub device_id: Option<String>,
    pub device_id_file: Option<PathBuf>,
    /// Enroll again although a device token exists.
    pub force: bool,
}

/// Why enrollment did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Refused by the server or by a check (exit 1).
    #[error("{0}")]
    Refused(String),
    /// Could not be attempted (exit 2).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// The device id: `explicit`, else `device.id`, else the first line of the id file.
pub fn device_id(cfg: &Config, explicit: Option<&str>, file: Option<&Path>) -> anyhow::Result<DeviceId> {
    if let Some(id) = explicit.or(cfg.device.id.as_deref()) {
        return Ok(DeviceId::new(id.trim()));
    }
    let path = file.map(Path::to_path_buf).or_else(|| cfg.device.id_file.clone()).unwrap_or(DEFAULT_ID_FILE.into());
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the device id from {}; hint: pass --device-id ID or set device.id in agent.toml",
            path.display()
        )
    })?;
    let id = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(!id.is_empty(), "{} is empty; hint: pass --device-id ID", path.display());
    Ok(DeviceId::new(id))
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

/// Asks the server for a device token.
fn exchange(
    cfg: &Config,
    http: &ureq::Agent,
    server: &str,
    enrollment_token: &str,
    id: &DeviceId,
) -> Result<String, EnrollError> {
    let url = format!("{}{}", server.trim_end_matches('/'), updraft_proto::paths::ENROLL);
    let body = updraft_proto::EnrollRequest {
        enrollment_token: enrollment_token.trim().to_owned(),
        device_id: id.clone(),
        family: cfg.device.family.clone(),
        hardware: cfg.device.hardware.clone(),
        region: cfg.device.region.clone().unwrap_or_default(),
        tags: cfg.device.tags.clone(),
        channel: None,
        release: cfg.device.release.as_deref().map(updraft_types::ReleaseId::new),
        components: cfg.device.components.clone(),
        utc_offset_min: 0,
    };
    let mut res = http
        .post(&url)
        .send_json(&body)
        .map_err(|e| EnrollError::Failed(anyhow::anyhow!("cannot reach {url}: {e}; hint: check --server")))?;
    let status = res.status().as_u16();
    let text = res.body_mut().with_config().limit(1 << 20).read_to_string().unwrap_or_default();
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<updraft_proto::ErrorBody>(&text).map(|e| e.message).unwrap_or(text);
        let hint = match status {
            409 => "; hint: an admin can decommission the old entry (`updraft devices decommission ID`), or use another --device-id",
            _ => "",
        };
        return Err(EnrollError::Refused(format!("enrollment of {id} refused ({status}): {message}{hint}")));
    }
    let r: updraft_proto::EnrollResponse = serde_json::from_str(&text)
        .map_err(|e| EnrollError::Failed(anyhow::anyhow!("unreadable enrollment answer from {url}: {e}")))?;
    Ok(r.device_token)
}

/// `updraft-agent enroll`: enrolls and writes the token and the server URL.
pub fn enroll(config_path: &Path, req: &Request) -> Result<DeviceId, EnrollError> {
    let cfg = Config::load(config_path)?;
    let token_path = match &cfg.server {
        Some(s) => s.token_file.clone().unwrap_or_else(|| cfg.data_dir.join("device-token")),
        None => cfg.data_dir.join("device-token"),
    };
    if token_path.exists() && !req.force {
        return Err(EnrollError::Refused(format!(
            "this device is enrolled already (its token is in {}); hint: --force enrolls again",
            token_path.display()
        )));
    }
    let id = device_id(&cfg, req.device_id.as_deref(), req.device_id_file.as_deref())?;
    let token = exchange(&cfg, &http(), &req.server, &req.enrollment_token, &id)?;
    std::fs::create_dir_all(token_path.parent().unwrap_or(Path::new(".")))
        .with_context(|| format!("cannot create the folder of {}", token_path.display()))?;
    crate::fsutil::write_atomic_mode(&token_path, format!("{token}\n").as_bytes(), 0o600)
        .with_context(|| format!("cannot write the device token {}", token_path.display()))?;
    set_server(config_path, &req.server, &token_path)?;
    Ok(id)
}

/// Writes `[server] url` and `token_file` into agent.toml, keeping the
/// rest of the file (comments included) as it is.
fn set_server(config_path: &Path, url: &str, token_path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let text =
        std::fs::read_to_string(config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("invalid agent configuration {}", config_path.display()))?;
    if !doc.contains_table("server") {
        doc["server"] = toml_edit::table();
    }
    doc["server"]["url"] = toml_edit::value(url);
    doc["server"]["token_file"] = toml_edit::value(token_path.display().to_string());
    let mode = std::fs::metadata(config_path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o644);
    crate::fsutil::write_atomic_mode(config_path, doc.to_string().as_bytes(), mode)
        .with_context(|| format!("cannot write {}", config_path.display()))
}

/// The device token: read from its file, or obtained on the first start
/// with the enrollment token the image ships.
pub fn device_token(cfg: &Config, server: &ServerConfig, http: &ureq::Agent) -> anyhow::Result<String> {
    let path = cfg.token_path();
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => anyhow::bail!(
            "the device token file {} is empty; hint: enroll again with `updraft-agent enroll`",
            path.display()
        ),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow::Error::new(e).context(format!("cannot read the device token {}", path.display())))
        }
        Err(_) => {}
    }
    let Some(enrollment) = &server.enrollment_token_file else {
        anyhow::bail!(
            "this device is not enrolled: no device token in {}; hint: run `updraft-agent enroll --server {} --token upe_...` \
             (the token comes from `updraft enroll-token create`), or ship one in server.enrollment_token_file",
            path.display(),
            server.url
        );
    };
    let token = std::fs::read_to_string(enrollment)
        .with_context(|| format!("cannot read the enrollment token {}", enrollment.display()))?;
    let id = device_id(cfg, None, None)?;
    log::info(&format!("enrolling as {id} at {} with the shipped enrollment token", server.url));
    let device_token = exchange(cfg, http, &server.url, &token, &id).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::fsutil::write_atomic_mode(&path, format!("{device_token}\n").as_bytes(), 0o600)
        .with_context(|| format!("cannot write the device token {}", path.display()))?;
    log::info(&format!("enrolled as {id}"));
    Ok(device_token)
}
