//! Deterministic fleet simulation.
//!
//! One thread, one event queue, simulated time. Every virtual device that
//! is updating runs the real [`updraft_agent_core::Agent`]; the real
//! [`updraft_rollout::Controller`] decides. Idle devices are a few dozen
//! bytes: their agent is created when an install starts and dropped when it
//! is done (the journal survives in between, as on a device). The shell
//! around both (network, downloads, slots, bootloader, power cuts, health)
//! is simulated from the fleet and release models, and checkers run after
//! every event. The same inputs and seed give the same run, down to the
//! event hash.

pub mod baseline;
pub mod load;
pub mod model;
mod sim;
pub mod sweep;

pub use model::{Behaviour, Connectivity, Fleet, Group, Outage, Release};
pub use sim::{run, run_with, Downtime, Policy, Progress, Report, Sample, SimError, StratumOutcome, TimelineEntry};
pub use sweep::{sweep, SweepReport};
