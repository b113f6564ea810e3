//! The Updraft device agent around `updraft-agent-core`: bootloader
//! backends, slot writers, configuration and (next) the daemon loop with its
//! HTTP client. Synchronous: no async runtime on the device.

pub mod bootloader;
pub mod config;
pub mod fsutil;
pub mod shell;
pub mod slots;
