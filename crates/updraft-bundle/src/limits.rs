//! Limits on everything a bundle carries. Each is a named constant with the
//! reason for its value; verification refuses anything over a limit.

/// Entries in one archive: the metadata files plus [`MAX_IMAGES`].
pub const MAX_ENTRIES: usize = 4 + MAX_IMAGES;
/// Images in one bundle: enough for a rootfs, a kernel, and a handful of
/// co-processor firmwares.
pub const MAX_IMAGES: usize = 64;
/// One image: larger than any eMMC rootfs slot in the field today.
pub const MAX_IMAGE_BYTES: u64 = 256 * 1024 * 1024 * 1024;
/// `manifest.json`: a manifest with every field at its limit is ~100 KiB.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// `manifest.dsse.json`: base64 of the manifest plus signatures.
pub const MAX_ENVELOPE_BYTES: u64 = 2 * 1024 * 1024;
/// `meta/provenance.dsse.json`: a statement with [`MAX_IMAGES`] subjects
/// and resolved dependencies, in base64.
pub const MAX_PROVENANCE_BYTES: u64 = 4 * 1024 * 1024;
/// The SBOM: a CycloneDX document for a full Linux image is a few MiB.
pub const MAX_SBOM_BYTES: u64 = 32 * 1024 * 1024;
/// Names of bundles, families, hardware revisions, images and components.
pub const MAX_NAME_LEN: usize = 64;
/// Requirements on other components.
pub const MAX_REQUIREMENTS: usize = 16;
/// Entry paths fit the ustar name field without a prefix.
pub const MAX_PATH_LEN: usize = 100;
