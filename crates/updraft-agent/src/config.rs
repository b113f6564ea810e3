//! `agent.toml`: see docs/agent.md, examples/agent.toml and examples/agent-file.toml.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::bootloader::{Bootloader, FileModel, Grub, UBoot};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the journal and the staged download live.
    pub data_dir: PathBuf,
    pub bootloader: BootloaderConfig,
    pub slots: Slots,
    /// The server and this device's identity (not needed for `install FILE`).
    #[serde(default)]
    pub server: Option<ServerConfig>,
    /// The pinned trust root, and newer versions to walk to, in order.
    pub trust_root: PathBuf,
    #[serde(default)]
    pub trust_updates: Vec<PathBuf>,
    /// What the device is (checked against every bundle).
    pub device: DeviceConfig,
    /// Health checks run after a trial boot; all must exit 0 in time.
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    /// Seconds between check-ins (a random share of up to 25% is added).
    #[serde(default = "default_poll")]
    pub poll_interval_s: u64,
    /// The command that reboots the device.
    #[serde(default = "default_reboot")]
    pub reboot_command: Vec<String>,
    /// A folder of executable inventory scripts: each prints `KEY=VALUE`
    /// lines, reported as the device's attributes at check-ins.
    #[serde(default)]
    pub inventory_dir: Option<PathBuf>,
    /// Seconds between runs of the inventory scripts (`run`; one-shot
    /// commands run them once).
    #[serde(default = "default_inventory_interval")]
    pub inventory_interval_s: u64,
}

fn default_inventory_interval() -> u64 {
    3600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub url: String,
    /// A file holding the device token, written 0600 by enrollment
    /// (default: `<data_dir>/device-token`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An enrollment token (`upe_...`) shipped in the image: the agent
    /// enrolls on its first start when it has no device token yet.
    #[serde(default)]
    pub enrollment_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub family: String,
    pub hardware: String,
    /// Versions of other components, e.g. `bootloader = "1.4.2"`.
    #[serde(default)]
    pub components: std::collections::BTreeMap<String, String>,
    /// The release of the factory image (used until the first update).
    #[serde(default)]
    pub release: Option<String>,
    /// Its security version.
    #[serde(default)]
    pub security_version: u64,
    /// The device id to enroll with (default: read from `id_file`).
    #[serde(default)]
    pub id: Option<String>,
    /// Where to read the device id from when `id` is not set (default:
    /// /etc/machine-id).
    #[serde(default)]
    pub id_file: Option<PathBuf>,
    /// The region reported at enrollment (plans select on it).
    #[serde(default)]
    pub region: Option<String>,
    /// Tags reported at enrollment.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub name: String,
    pub command: Vec<String>,
    #[serde(default = "default_health_timeout")]
    pub timeout_s: u64,
}

fn default_poll() -> u64 {
    300
}

fn default_reboot() -> Vec<String> {
    vec!["systemctl".into(), "reboot".into()]
}

fn default_health_timeout() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slots {
    #[serde(rename = "A")]
    pub a: PathBuf,
    #[serde(rename = "B")]
    pub b: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BootloaderConfig {
    Uboot {
        #[serde(default)]
        config: Option<PathBuf>,
        #[serde(default)]
        default_env: Option<PathBuf>,
        #[serde(default = "default_cmdline")]
        cmdline: PathBuf,
    },
    Grub {
        env_file: PathBuf,
        #[serde(default = "default_cmdline")]
        cmdline: PathBuf,
    },
    File {
        path: PathBuf,
    },
}

fn default_cmdline() -> PathBuf {
    PathBuf::from("/proc/cmdline")
}

impl Config {
    /// Reads agent.toml. Relative paths in it are relative to its folder,
    /// and `{config}` in `reboot_command` and health check commands stands
    /// for the configuration file's path.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}; hint: pass --config PATH", path.display()))?;
        let mut cfg: Config = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid agent configuration {}: {e}", path.display()))?;
        let config_path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.resolve(&base, &config_path.display().to_string());
        Ok(cfg)
    }

    fn resolve(&mut self, base: &Path, config: &str) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.data_dir);
        abs(&mut self.trust_root);
        self.trust_updates.iter_mut().for_each(abs);
        abs(&mut self.slots.a);
        abs(&mut self.slots.b);
        match &mut self.bootloader {
            BootloaderConfig::Uboot { config, default_env, cmdline } => {
                config.iter_mut().for_each(abs);
                default_env.iter_mut().for_each(abs);
                abs(cmdline);
            }
            BootloaderConfig::Grub { env_file, cmdline } => {
                abs(env_file);
                abs(cmdline);
            }
            BootloaderConfig::File { path } => abs(path),
        }
        if let Some(s) = &mut self.server {
            s.token_file.iter_mut().for_each(abs);
            s.enrollment_token_file.iter_mut().for_each(abs);
        }
        self.device.id_file.iter_mut().for_each(abs);
        self.inventory_dir.iter_mut().for_each(abs);
        let fill = |args: &mut Vec<String>| args.iter_mut().for_each(|a| *a = a.replace("{config}", config));
        fill(&mut self.reboot_command);
        self.health_checks.iter_mut().for_each(|h| fill(&mut h.command));
    }

    pub fn bootloader(&self) -> Box<dyn Bootloader> {
        match &self.bootloader {
            BootloaderConfig::Uboot { config, default_env, .. } => {
                Box::new(UBoot { config: config.clone(), default_env: default_env.clone() })
            }
            BootloaderConfig::Grub { env_file, .. } => Box::new(Grub { env_file: env_file.clone() }),
            BootloaderConfig::File { path } => Box::new(FileModel { path: path.clone() }),
        }
    }

    pub fn journal_path(&self) -> PathBuf {
        self.data_dir.join("journal.json")
    }

    /// The device token's file.
    pub fn token_path(&self) -> PathBuf {
        self.server.as_ref().and_then(|s| s.token_file.clone()).unwrap_or_else(|| self.data_dir.join("device-token"))
    }
}
