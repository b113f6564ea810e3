//! `agent.toml`: see docs/agent.md and examples/agent.toml.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::bootloader::{Bootloader, FileModel, Grub, UBoot};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the journal lives.
    pub data_dir: PathBuf,
    pub bootloader: BootloaderConfig,
    pub slots: Slots,
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
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid agent configuration {}: {e}", path.display()))
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
}
