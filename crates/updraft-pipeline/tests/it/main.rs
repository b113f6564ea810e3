//! The pipeline's parts on real files and real commands.

mod flaky;
mod junit;
mod spec;
