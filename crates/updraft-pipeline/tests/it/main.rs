//! The pipeline's parts on real files and real commands.

mod coverage;
mod diagnose;
mod flaky;
mod junit;
mod secrets;
mod spec;
mod vulns;
