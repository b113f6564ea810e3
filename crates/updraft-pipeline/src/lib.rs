//! `updraft pipeline`: turns a firmware repository into a signed, gated
//! release inside any CI job. This crate holds the pipeline spec
//! (`updraft.toml`), the stage graph, the build and reproducibility stage,
//! and the JUnit reader; the CLI runs them.

pub mod build;
pub mod coverage;
pub mod diagnose;
pub mod flaky;
pub mod junit;
pub mod secrets;
pub mod spec;
pub mod test;
pub mod vulns;

pub use spec::{Spec, Stage};

/// Errors of the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("invalid pipeline spec: {0}")]
    Spec(String),
    #[error("{0}")]
    Build(String),
    #[error("cannot read the report {path}: {reason}")]
    Junit { path: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PipelineError {
    let what = what.into();
    move |source| PipelineError::Io { what, source }
}
