//! Rollout controller tests. Scenarios are fixtures (fleet, releases, plans,
//! device behaviour, a timed script of commands and joins) run through a
//! deterministic device model; each run's decisions and events are
//! summarised and snapshotted.

mod cohorts;
mod harness;
mod plans;
mod purity;
mod scenarios;
