//! The device update state machine: check-in, download into the inactive
//! slot, verification, a trial boot counted by the bootloader, a health
//! check, then commit or revert. Sans-IO (CONTRIBUTING.md): the shell feeds
//! [`Input`]s with the time to [`Agent::handle`], performs the [`Effect`]s
//! it drains with [`Agent::poll_effect`] in order, and wakes it at
//! [`Agent::poll_timeout`]. Every step is persisted in a [`Journal`] before
//! the next effect, so that [`Agent::handle`] with [`Input::Started`]
//! resumes correctly after a power loss at any point.
//!
//! The bundle's signatures and digests are checked by the shell with
//! `updraft-bundle` while it streams; this core makes the decisions: which
//! slot, whether the verified header is acceptable for this device (family,
//! hardware revision, security version, requirements), when to flip the
//! boot flags, and whether to commit or revert.

pub mod boot;
mod machine;

pub use boot::{boot, BootRecord, Booted, Slot, TRIAL_ATTEMPTS};
pub use machine::*;
pub use updraft_types::InstallEvent;
