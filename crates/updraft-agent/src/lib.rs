//! The Updraft device agent around `updraft-agent-core`: bootloader
//! backends, slot writers, configuration, enrollment, the parsers of outside
//! bytes, and the shell that performs the core's effects (HTTP, files,
//! slots, health checks, reboot). Synchronous: no async runtime on the
//! device, and no panics: every failure is a state the core recovers from
//! or an error the command reports.

pub mod bootloader;
pub mod config;
pub mod enroll;
pub mod fsutil;
pub mod inventory;
pub mod log;
pub mod parse;
pub mod shell;
pub mod slots;
