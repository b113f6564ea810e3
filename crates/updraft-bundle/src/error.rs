//! Errors of the bundle crate. A [`Rejection`] is a verdict about the input
//! (a bad signature, a tampered archive): the CLI exits 1 on it. Everything
//! else ([`Error::Io`], bad parameters) is an error: exit 2.

use std::path::PathBuf;

use updraft_types::{KeyId, SecurityVersion, Timestamp};

/// A key could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown key algorithm {0:?}; hint: use ed25519 or p256")]
    UnknownAlgorithm(String),
    #[error("this is a private key where a public key was expected; hint: pass the .pub file")]
    NotPublic,
    #[error("this is a public key where a private key was expected; hint: pass the .key file")]
    NotPrivate,
    #[error("unreadable key: {0}")]
    Unreadable(String),
    #[error("cannot encode key: {0}")]
    Encode(String),
}

/// Why an input was refused. Every variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    // --- the archive ---
    #[error("not a bundle: {reason} at byte {offset}")]
    NotUstar { offset: u64, reason: String },
    #[error("archive ends early: {context}")]
    Truncated { context: String },
    #[error("entry header at byte {offset} has a bad checksum")]
    HeaderChecksum { offset: u64 },
    #[error("entry {path:?} is a {kind}; bundles hold only regular files")]
    NotRegularFile { path: String, kind: String },
    #[error("entry path {path:?} is not allowed: {reason}")]
    BadPath { path: String, reason: String },
    #[error("entry {path:?} has a non-canonical header ({field}); bundles are written with fixed metadata")]
    NonCanonicalHeader { path: String, field: String },
    #[error("entry {path:?} appears twice")]
    DuplicateEntry { path: String },
    #[error("entry {path:?} comes after {previous:?}; entries must be sorted by path")]
    OutOfOrder { path: String, previous: String },
    #[error("entry {path:?} is not listed in the manifest")]
    UnlistedEntry { path: String },
    #[error("entry {path:?} is missing")]
    MissingEntry { path: String },
    #[error("padding after entry {path:?} is not all zero bytes")]
    NonZeroPadding { path: String },
    #[error("data after the end of the archive at byte {offset}")]
    TrailingData { offset: u64 },
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("{what}: {count} is over the limit of {limit}")]
    TooMany { what: String, count: u64, limit: u64 },
    #[error("entry {path:?} is {actual} bytes but the manifest says {expected}")]
    SizeMismatch { path: String, expected: u64, actual: u64 },
    #[error("entry {path:?} has {algorithm} {actual} but the manifest says {expected}")]
    DigestMismatch { path: String, algorithm: String, expected: String, actual: String },
    #[error("entry {path:?} has mtime {found} but the manifest was created at {expected}")]
    MtimeMismatch { path: String, found: u64, expected: u64 },

    // --- envelopes and signatures ---
    #[error("{path}: malformed DSSE envelope: {reason}")]
    Envelope { path: String, reason: String },
    #[error("{path}: payloadType {found:?} is not {expected:?}")]
    PayloadType { path: String, found: String, expected: String },
    #[error("{path}: signature {index} (keyid {keyid}) is not by a trusted {role} key")]
    UntrustedSignature { path: String, index: usize, keyid: String, role: String },
    #[error("{path}: key {keyid} signed more than once")]
    DuplicateSignature { path: String, keyid: KeyId },
    #[error("{path}: {valid} valid {role} signature(s), {threshold} required")]
    BelowThreshold { path: String, valid: usize, threshold: usize, role: String },
    #[error("manifest.json differs from the payload signed in manifest.dsse.json")]
    ManifestMismatch,

    // --- content ---
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("invalid provenance: {0}")]
    Provenance(String),
    #[error("invalid SBOM: {0}")]
    Sbom(String),

    // --- trust ---
    #[error("invalid trust root: {0}")]
    TrustRoot(String),
    #[error("trust root version {version} expired at {expires} (now {now}); hint: get a newer root version")]
    TrustRootExpired { version: u64, expires: Timestamp, now: Timestamp },
    #[error("trust root chain broken: {0}")]
    TrustChain(String),

    // --- policy ---
    #[error("bundle is for device family {found:?}, not {expected:?}")]
    WrongFamily { expected: String, found: String },
    #[error("bundle does not support hardware revision {hardware:?} (it supports {supported})")]
    WrongHardware { hardware: String, supported: String },
    #[error("security version {found} is below the minimum {minimum}; refusing a downgrade")]
    SecurityVersionTooLow { found: SecurityVersion, minimum: SecurityVersion },
}

impl Rejection {
    /// A stable, kebab-case name for `--json` output and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::NotUstar { .. } => "not-ustar",
            Rejection::Truncated { .. } => "truncated",
            Rejection::HeaderChecksum { .. } => "header-checksum",
            Rejection::NotRegularFile { .. } => "not-regular-file",
            Rejection::BadPath { .. } => "bad-path",
            Rejection::NonCanonicalHeader { .. } => "non-canonical-header",
            Rejection::DuplicateEntry { .. } => "duplicate-entry",
            Rejection::OutOfOrder { .. } => "out-of-order",
            Rejection::UnlistedEntry { .. } => "unlisted-entry",
            Rejection::MissingEntry { .. } => "missing-entry",
            Rejection::NonZeroPadding { .. } => "non-zero-padding",
            Rejection::TrailingData { .. } => "trailing-data",
            Rejection::TooLarge { .. } => "too-large",
            Rejection::TooMany { .. } => "too-many",
            Rejection::SizeMismatch { .. } => "size-mismatch",
            Rejection::DigestMismatch { .. } => "digest-mismatch",
            Rejection::MtimeMismatch { .. } => "mtime-mismatch",
            Rejection::Envelope { .. } => "malformed-envelope",
            Rejection::PayloadType { .. } => "payload-type",
            Rejection::UntrustedSignature { .. } => "untrusted-signature",
            Rejection::DuplicateSignature { .. } => "duplicate-signature",
            Rejection::BelowThreshold { .. } => "below-threshold",
            Rejection::ManifestMismatch => "manifest-mismatch",
            Rejection::Manifest(_) => "invalid-manifest",
            Rejection::Provenance(_) => "invalid-provenance",
            Rejection::Sbom(_) => "invalid-sbom",
            Rejection::TrustRoot(_) => "invalid-trust-root",
            Rejection::TrustRootExpired { .. } => "trust-root-expired",
            Rejection::TrustChain(_) => "trust-chain",
            Rejection::WrongFamily { .. } => "wrong-family",
            Rejection::WrongHardware { .. } => "wrong-hardware",
            Rejection::SecurityVersionTooLow { .. } => "security-version-too-low",
        }
    }
}

/// The bundle crate's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rejected: {0}")]
    Rejected(#[from] Rejection),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error(transparent)]
    KeyUse(#[from] KeyError),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// The rejection, when the input was refused (exit code 1).
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Error::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
