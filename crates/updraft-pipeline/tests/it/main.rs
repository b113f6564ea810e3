//! The pipeline's parts on real files and real commands.

mod junit;
mod spec;
