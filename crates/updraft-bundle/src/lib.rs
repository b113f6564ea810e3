//! The Updraft bundle format: one signed, reproducible file that carries
//! firmware images for one device family from CI to devices.
//!
//! - [`keys`]: Ed25519 and P-256 keys, PEM, key ids.
//! - [`dsse`]: DSSE envelopes and PAE, exactly as the specification says.
//! - [`trust`]: versioned, threshold-signed trust roots and their rotation chain.
//! - [`manifest`], [`provenance`]: what the bundle says about itself.
//! - [`archive`]: the deterministic, strictly parsed ustar container.
//! - [`bundle`]: create, verify (streaming), co-sign, inspect.
//!
//! The agent and the server call this crate; the CLI only wires flags to it.

pub mod archive;
pub mod bundle;
pub mod dsse;
pub mod error;
pub mod fsutil;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod provenance;
pub mod trust;

pub use bundle::{
    create, inspect, inspect_file, metadata_files, open, sign, verify, verify_file, BundleStream, CreateParams,
    Created, DigestCheck, ImageInput, Inspection, MetadataFiles, NoProgress, Policy, Progress, SignOutcome, Signers,
    VerifiedBundle, VerifiedHeader,
};
pub use error::{Error, KeyError, Rejection, Result};
pub use keys::{Algorithm, PrivateKey, PublicKey};
pub use manifest::{Manifest, Requirement, Source, Target};
pub use provenance::BuildContext;
pub use trust::{SignedRoot, TrustRoot, TrustedRoot};
