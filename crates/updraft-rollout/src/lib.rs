//! The rollout controller: gives a release to the fleet wave by wave over
//! stable cohorts, gates each wave with sequential statistical tests on what
//! devices report (against a baseline for crash rates), and pauses or rolls
//! back on its own.
//!
//! Sans-IO (CONTRIBUTING.md): [`Controller::handle`] takes the time and one
//! [`Input`]; [`Controller::poll_output`] drains decisions and events;
//! [`Controller::poll_timeout`] says when to call again. No clock, no
//! randomness, no IO, so the server and the simulator run the same code.

pub mod engine;
pub mod model;
pub mod plan;
pub mod stats;

pub use engine::{
    cohort_hash, Controller, FleetCounts, FollowUpStatus, HeldBackDevice, MemberStatus, RolloutStatus, StatusCounts,
    StratumStatus, MAX_HELD_BACK_LISTED,
};
pub use model::*;
pub use plan::{
    Dimension, FailureScope, Gate, GateKind, OnFailure, OnInconclusive, Others, Plan, Selector, Strata, Wave, WaveSize,
    Window,
};
pub use stats::Verdict;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("invalid rollout plan: {0}")]
    InvalidPlan(String),
}
