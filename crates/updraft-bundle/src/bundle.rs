//! Creating, verifying, co-signing and inspecting bundles.
//!
//! Archive layout, in the byte-wise sorted order of the archive:
//!
//! ```text
//! manifest.dsse.json          DSSE over manifest.json, release-key signatures
//! manifest.json               the manifest (canonical pretty JSON)
//! meta/provenance.dsse.json   DSSE over the in-toto/SLSA provenance, build-key signature
//! meta/sbom.cdx.json          optional CycloneDX JSON SBOM
//! payload/<image>             the images, sorted by name
//! ```
//!
//! Sorting puts every piece of metadata before the images, so a reader
//! checks the signatures before it consumes a byte of firmware, and a device
//! can stream an image straight to its slot.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};
use updraft_types::{KeyId, SecurityVersion, Sha256Digest, Sha512Digest, Timestamp};

use crate::archive::{self, Entry, ReadError};
use crate::dsse::{self, Envelope, IN_TOTO_PAYLOAD_TYPE, MANIFEST_PAYLOAD_TYPE};
use crate::error::{Error, Rejection, Result};
use crate::fsutil::{self, AtomicFile, Overwrite, CHUNK_BYTES};
use crate::keys::PrivateKey;
use crate::limits::*;
use crate::manifest::*;
use crate::provenance::{self, BuildContext, Statement, StatementInput};
use crate::trust::TrustedRoot;

/// Reports progress of long operations (bytes of images processed).
pub trait Progress {
    fn start(&self, _label: &str, _total_bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

fn from_read(e: ReadError) -> Error {
    match e {
        ReadError::Rejected(r) => Error::Rejected(r),
        ReadError::Io(e) => Error::io("cannot read the bundle", e),
    }
}

// ------------------------------------------------------------------ create

/// One image to put into a bundle.
#[derive(Clone, Debug)]
pub struct ImageInput {
    pub name: String,
    pub path: PathBuf,
    pub target: Target,
}

/// Everything `create` needs besides the keys.
#[derive(Clone, Debug)]
pub struct CreateParams {
    pub name: String,
    pub version: semver::Version,
    pub security_version: SecurityVersion,
    pub family: String,
    pub hardware: Vec<String>,
    pub requires: Vec<Requirement>,
    pub source: Source,
    /// SOURCE_DATE_EPOCH.
    pub created: Timestamp,
    pub images: Vec<ImageInput>,
    pub sbom: Option<PathBuf>,
    pub build: BuildContext,
    /// Recorded as builder.version in the provenance.
    pub updraft_version: String,
}

/// The keys that sign a new bundle.
pub struct Signers<'a> {
    /// Release keys; more can be added later with [`sign`].
    pub release: Vec<&'a PrivateKey>,
    pub build: &'a PrivateKey,
}

/// What `create` wrote.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: Sha256Digest,
    pub manifest_sha256: Sha256Digest,
    pub signers: Vec<KeyId>,
    pub manifest: Manifest,
}

fn check_sbom(bytes: &[u8]) -> Result<(), Rejection> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Rejection::Sbom(format!("not JSON: {e}")))?;
    if v.get("bomFormat").and_then(|f| f.as_str()) != Some("CycloneDX") {
        return Err(Rejection::Sbom("bomFormat must be \"CycloneDX\" (a CycloneDX JSON document)".into()));
    }
    if !v.get("specVersion").is_some_and(|s| s.is_string()) {
        return Err(Rejection::Sbom("specVersion is missing".into()));
    }
    Ok(())
}

fn digests_of(bytes: &[u8]) -> Digests {
    Digests { sha256: Sha256Digest(Sha256::digest(bytes).into()), sha512: Sha512Digest(Sha512::digest(bytes).into()) }
}

/// Creates a bundle at `out`. The output is byte-identical for the same
/// inputs, whatever the working directory, user, umask, locale, time or
/// the order of images and hardware revisions given.
pub fn create(params: &CreateParams, signers: &Signers<'_>, out: &Path, progress: &dyn Progress) -> Result<Created> {
    let invalid = |m: String| Error::Invalid(m);
    if signers.release.is_empty() {
        return Err(invalid("a bundle needs at least one release-key signature; hint: pass --sign-with".into()));
    }
    let mut hardware = params.hardware.clone();
    hardware.sort();
    hardware.dedup();
    let mut requires = params.requires.clone();
    requires.sort_by(|a, b| a.component.cmp(&b.component));
    if requires.windows(2).any(|w| w[0].component == w[1].component) {
        return Err(invalid("one requirement per component; hint: combine them, e.g. 'bootloader>=1.4, <2'".into()));
    }
    let mut inputs = params.images.clone();
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = inputs.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(invalid(format!("image name {:?} is given twice", w[0].name)));
    }
    for i in &inputs {
        check_name(&i.name, "image name").map_err(invalid)?;
    }

    // Pass 1: hash every image.
    let total: u64 = inputs.iter().map(|i| std::fs::metadata(&i.path).map(|m| m.len()).unwrap_or(0)).sum();
    progress.start("hashing images", total);
    let mut images = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let meta = std::fs::metadata(&input.path)
            .map_err(|e| Error::io(format!("cannot read image {}", input.path.display()), e))?;
        if !meta.is_file() {
            return Err(invalid(format!("image {} is not a regular file", input.path.display())));
        }
        let (size, digests) = fsutil::hash_file(&input.path, &|n| progress.advance(n))?;
        images.push(Image {
            name: input.name.clone(),
            path: image_path(&input.name),
            target: input.target.clone(),
            size,
            digests,
        });
    }
    progress.finish();

    let sbom_bytes = match &params.sbom {
        Some(p) => {
            let b = fsutil::read_limited(p, MAX_SBOM_BYTES, "SBOM")?;
            check_sbom(&b).map_err(|r| invalid(format!("{}: {r}", p.display())))?;
            Some(b)
        }
        None => None,
    };
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA.to_owned(),
        name: params.name.clone(),
        version: params.version.clone(),
        security_version: params.security_version,
        family: params.family.clone(),
        hardware,
        requires,
        created: params.created,
        source: params.source.clone(),
        images,
        sbom: sbom_bytes.as_ref().map(|b| SbomEntry {
            path: SBOM_PATH.to_owned(),
            media_type: CYCLONEDX_MEDIA_TYPE.to_owned(),
            size: b.len() as u64,
            digests: digests_of(b),
        }),
        attestations: vec![provenance_entry()],
    };
    manifest.validate().map_err(|r| invalid(r.to_string()))?;
    let manifest_bytes = manifest.to_json();
    let manifest_sha256 = Sha256Digest(Sha256::digest(&manifest_bytes).into());

    let statement = provenance::statement(&StatementInput {
        manifest: &manifest,
        manifest_sha256,
        build: &params.build,
        updraft_version: &params.updraft_version,
    });
    let mut provenance_env = Envelope::new(IN_TOTO_PAYLOAD_TYPE, statement.to_json());
    provenance_env.sign(signers.build);
    let mut manifest_env = Envelope::new(MANIFEST_PAYLOAD_TYPE, manifest_bytes.clone());
    for key in &signers.release {
        manifest_env.sign(key);
    }

    // Pass 2: write the archive, re-hashing each image to catch a file that
    // changed since pass 1.
    let mut file = AtomicFile::create(out, 0o644)?;
    let (size, sha256) = {
        let mut hasher =
            HashingWriter { inner: BufWriter::with_capacity(CHUNK_BYTES, file.file()), sha256: Sha256::new(), size: 0 };
        let write_err = |e: io::Error| Error::io(format!("cannot write {}", out.display()), e);
        let mtime = params.created.unix_s();
        {
            let mut w = archive::Writer::new(&mut hasher);
            let mut meta: Vec<(&str, &[u8])> = Vec::new();
            let manifest_env_bytes = manifest_env.to_json();
            let provenance_bytes = provenance_env.to_json();
            meta.push((MANIFEST_DSSE_PATH, &manifest_env_bytes));
            meta.push((MANIFEST_PATH, &manifest_bytes));
            meta.push((PROVENANCE_PATH, &provenance_bytes));
            if let Some(b) = &sbom_bytes {
                meta.push((SBOM_PATH, b));
            }
            meta.sort_by(|a, b| a.0.cmp(b.0));
            for (path, data) in meta {
                w.append(path, data, mtime).map_err(write_err)?;
            }
            progress.start("writing bundle", total);
            let mut buf = vec![0u8; CHUNK_BYTES];
            for (input, image) in inputs.iter().zip(&manifest.images) {
                let mut f = File::open(&input.path)
                    .map_err(|e| Error::io(format!("cannot open {}", input.path.display()), e))?;
                w.begin(&image.path, image.size, mtime).map_err(write_err)?;
                let mut sha = Sha256::new();
                let mut left = image.size;
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = f
                        .read(&mut buf[..want])
                        .map_err(|e| Error::io(format!("cannot read {}", input.path.display()), e))?;
                    if n == 0 {
                        break;
                    }
                    sha.update(&buf[..n]);
                    w.data(&buf[..n]).map_err(write_err)?;
                    left -= n as u64;
                    progress.advance(n as u64);
                }
                let mut probe = [0u8; 1];
                let grew = f.read(&mut probe).map(|n| n > 0).unwrap_or(true);
                if left > 0 || grew || Sha256Digest(sha.finalize().into()) != image.digests.sha256 {
                    return Err(invalid(format!(
                    "image {} changed while the bundle was being written; hint: run again once the build has finished",
                    input.path.display()
                )));
                }
                w.pad(image.size).map_err(write_err)?;
            }
            w.finish().map_err(write_err)?;
            progress.finish();
        }
        hasher.inner.flush().map_err(write_err)?;
        (hasher.size, Sha256Digest(hasher.sha256.finalize().into()))
    };
    file.commit(Overwrite::Replace)?;
    Ok(Created {
        path: out.to_path_buf(),
        size,
        sha256,
        manifest_sha256,
        signers: signers.release.iter().map(|k| k.id()).collect(),
        manifest,
    })
}

struct HashingWriter<W: Write> {
    inner: W,
    sha256: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha256.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ------------------------------------------------------------------ reading

/// The metadata entries, read but not yet verified.
struct RawMeta {
    manifest_dsse: Vec<u8>,
    manifest: Vec<u8>,
    provenance: Vec<u8>,
    sbom: Option<Vec<u8>>,
    mtime: u64,
    /// The first image entry, already read.
    next: Option<Entry>,
}

fn read_meta<R: Read>(ar: &mut archive::Reader<R>) -> Result<RawMeta> {
    let mut manifest_dsse = None;
    let mut manifest = None;
    let mut provenance = None;
    let mut sbom = None;
    let mut mtime = None;
    let next = loop {
        let Some(entry) = ar.next_entry().map_err(from_read)? else { break None };
        if *mtime.get_or_insert(entry.mtime) != entry.mtime {
            return Err(Rejection::NonCanonicalHeader {
                path: entry.path,
                field: "mtime differs between entries".into(),
            }
            .into());
        }
        let (slot, limit) = match entry.path.as_str() {
            MANIFEST_DSSE_PATH => (&mut manifest_dsse, MAX_ENVELOPE_BYTES),
            MANIFEST_PATH => (&mut manifest, MAX_MANIFEST_BYTES),
            PROVENANCE_PATH => (&mut provenance, MAX_PROVENANCE_BYTES),
            SBOM_PATH => (&mut sbom, MAX_SBOM_BYTES),
            p if p.starts_with(PAYLOAD_DIR) => break Some(entry),
            _ => return Err(Rejection::UnlistedEntry { path: entry.path }.into()),
        };
        if entry.size > limit {
            return Err(Rejection::TooLarge { what: entry.path, size: entry.size, limit }.into());
        }
        *slot = Some(ar.read_all().map_err(from_read)?);
    };
    let missing = |p: &str| Error::Rejected(Rejection::MissingEntry { path: p.to_owned() });
    Ok(RawMeta {
        manifest_dsse: manifest_dsse.ok_or_else(|| missing(MANIFEST_DSSE_PATH))?,
        manifest: manifest.ok_or_else(|| missing(MANIFEST_PATH))?,
        provenance: provenance.ok_or_else(|| missing(PROVENANCE_PATH))?,
        sbom,
        mtime: mtime.unwrap_or_default(),
        next,
    })
}

/// Checks the parts of the metadata that need no keys: the manifest matches
/// the signed payload, is valid, and agrees with the archive (mtime, SBOM).
fn check_meta(raw: &RawMeta, manifest_env: &Envelope) -> Result<Manifest> {
    if manifest_env.payload != raw.manifest {
        return Err(Rejection::ManifestMismatch.into());
    }
    let manifest = Manifest::from_json(&raw.manifest)?;
    if raw.mtime != manifest.created.unix_s() {
        return Err(Rejection::MtimeMismatch {
            path: MANIFEST_PATH.into(),
            found: raw.mtime,
            expected: manifest.created.unix_s(),
        }
        .into());
    }
    match (&manifest.sbom, &raw.sbom) {
        (None, None) => {}
        (None, Some(_)) => return Err(Rejection::UnlistedEntry { path: SBOM_PATH.into() }.into()),
        (Some(_), None) => return Err(Rejection::MissingEntry { path: SBOM_PATH.into() }.into()),
        (Some(entry), Some(bytes)) => {
            if entry.size != bytes.len() as u64 {
                return Err(Rejection::SizeMismatch {
                    path: SBOM_PATH.into(),
                    expected: entry.size,
                    actual: bytes.len() as u64,
                }
                .into());
            }
            check_digests(SBOM_PATH, &entry.digests, &digests_of(bytes), true)?;
            check_sbom(bytes)?;
        }
    }
    Ok(manifest)
}

fn check_digests(path: &str, expected: &Digests, actual: &Digests, sha512: bool) -> Result<(), Rejection> {
    if expected.sha256 != actual.sha256 {
        return Err(Rejection::DigestMismatch {
            path: path.to_owned(),
            algorithm: "sha256".into(),
            expected: expected.sha256.to_hex(),
            actual: actual.sha256.to_hex(),
        });
    }
    if sha512 && expected.sha512 != actual.sha512 {
        return Err(Rejection::DigestMismatch {
            path: path.to_owned(),
            algorithm: "sha512".into(),
            expected: expected.sha512.to_hex(),
            actual: actual.sha512.to_hex(),
        });
    }
    Ok(())
}

// ------------------------------------------------------------------ verify

/// Which digests to check on images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DigestCheck {
    /// SHA-256 (the digest the signed manifest and the provenance bind).
    #[default]
    Sha256,
    /// SHA-256 and SHA-512: about twice the time on CPUs with SHA extensions.
    All,
}

/// What the verifier's caller requires beyond valid signatures.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub family: Option<String>,
    pub hardware: Option<String>,
    pub min_security_version: Option<SecurityVersion>,
    pub digests: DigestCheck,
}

/// Summary of the verified provenance.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenanceSummary {
    pub builder_id: String,
    pub build_type: String,
    pub invocation_id: Option<String>,
    pub signers: Vec<KeyId>,
}

/// The verified metadata of a bundle whose images are still to be read.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedHeader {
    pub manifest: Manifest,
    pub manifest_sha256: Sha256Digest,
    /// Release keys whose signatures verified.
    pub signers: Vec<KeyId>,
    pub provenance: ProvenanceSummary,
}

/// A bundle that passed every check. Only [`verify`] and
/// [`BundleStream::finish`] make one.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedBundle {
    #[serde(flatten)]
    pub header: VerifiedHeader,
    pub trust_root_version: u64,
    pub sha512_checked: bool,
}

/// A bundle being verified as it streams: the metadata is verified by
/// [`open`]; each image is checked as the caller copies it out with
/// [`BundleStream::next_image`]. Bytes written to a sink are unverified
/// until `next_image` returns.
pub struct BundleStream<R: Read> {
    ar: archive::Reader<R>,
    header: VerifiedHeader,
    pending: Option<Entry>,
    next_image: usize,
    policy: Policy,
    trust_root_version: u64,
}

fn check_policy(manifest: &Manifest, policy: &Policy) -> Result<(), Rejection> {
    if let Some(family) = &policy.family {
        if *family != manifest.family {
            return Err(Rejection::WrongFamily { expected: family.clone(), found: manifest.family.clone() });
        }
    }
    if let Some(hw) = &policy.hardware {
        if !manifest.hardware.contains(hw) {
            return Err(Rejection::WrongHardware { hardware: hw.clone(), supported: manifest.hardware.join(", ") });
        }
    }
    if let Some(min) = policy.min_security_version {
        if manifest.security_version < min {
            return Err(Rejection::SecurityVersionTooLow { found: manifest.security_version, minimum: min });
        }
    }
    Ok(())
}

/// Reads and verifies a bundle's metadata: release signatures against the
/// trust root, the manifest, the provenance and its build-key signature,
/// the SBOM, and the policy. No image byte has been read when it returns.
pub fn open<R: Read>(reader: R, trust: &TrustedRoot, policy: &Policy) -> Result<BundleStream<R>> {
    let root = trust.root();
    let mut ar = archive::Reader::new(reader, MAX_ENTRIES);
    let raw = read_meta(&mut ar)?;
    let manifest_env = Envelope::from_canonical_json(&raw.manifest_dsse, MANIFEST_DSSE_PATH)?;
    let verified = dsse::verify_strict(
        &manifest_env,
        &root.release_keys,
        root.release_threshold,
        MANIFEST_PAYLOAD_TYPE,
        MANIFEST_DSSE_PATH,
        "release",
    )?;
    let manifest = check_meta(&raw, &manifest_env)?;
    let manifest_sha256 = Sha256Digest(Sha256::digest(&raw.manifest).into());
    check_policy(&manifest, policy)?;

    if root.build_keys.is_empty() {
        return Err(Rejection::TrustRoot(
            "it lists no build keys, so provenance cannot be verified; hint: add one with `updraft trust rotate --build-key`".into(),
        )
        .into());
    }
    let prov_env = Envelope::from_canonical_json(&raw.provenance, PROVENANCE_PATH)?;
    let prov = dsse::verify_strict(&prov_env, &root.build_keys, 1, IN_TOTO_PAYLOAD_TYPE, PROVENANCE_PATH, "build")?;
    let statement = Statement::parse_and_check(&prov.payload, &manifest, manifest_sha256)?;

    let header = VerifiedHeader {
        provenance: ProvenanceSummary {
            builder_id: statement.predicate.run_details.builder.id.clone(),
            build_type: statement.predicate.build_definition.build_type.clone(),
            invocation_id: statement.predicate.run_details.metadata.invocation_id.clone(),
            signers: prov.signers,
        },
        manifest,
        manifest_sha256,
        signers: verified.signers,
    };
    Ok(BundleStream {
        ar,
        header,
        pending: raw.next,
        next_image: 0,
        policy: policy.clone(),
        trust_root_version: root.version,
    })
}

impl<R: Read> BundleStream<R> {
    pub fn header(&self) -> &VerifiedHeader {
        &self.header
    }

    /// Copies the next image into `sink` while checking its size and
    /// digests; returns the image, or `None` after the last one.
    pub fn next_image(&mut self, sink: &mut dyn Write, progress: &dyn Progress) -> Result<Option<Image>> {
        let images = &self.header.manifest.images;
        let Some(image) = images.get(self.next_image).cloned() else {
            return Ok(None);
        };
        let entry = match self.pending.take() {
            Some(e) => e,
            None => self
                .ar
                .next_entry()
                .map_err(from_read)?
                .ok_or_else(|| Rejection::MissingEntry { path: image.path.clone() })?,
        };
        if entry.path != image.path {
            return Err(if images.iter().any(|i| i.path == entry.path) || entry.path > image.path {
                Rejection::MissingEntry { path: image.path.clone() }
            } else {
                Rejection::UnlistedEntry { path: entry.path }
            }
            .into());
        }
        if entry.mtime != self.header.manifest.created.unix_s() {
            return Err(Rejection::MtimeMismatch {
                path: entry.path,
                found: entry.mtime,
                expected: self.header.manifest.created.unix_s(),
            }
            .into());
        }
        if entry.size != image.size {
            return Err(Rejection::SizeMismatch { path: entry.path, expected: image.size, actual: entry.size }.into());
        }
        self.next_image += 1;
        let full = self.policy.digests == DigestCheck::All;
        let actual = hash_entry(&mut self.ar, sink, full, progress)?;
        let expected =
            if full { image.digests.clone() } else { Digests { sha512: actual.sha512, ..image.digests.clone() } };
        check_digests(&image.path, &expected, &actual, full)?;
        Ok(Some(image))
    }

    /// Checks that nothing follows the last image and returns the verdict.
    pub fn finish(mut self) -> Result<VerifiedBundle> {
        while self.next_image < self.header.manifest.images.len() {
            self.next_image(&mut io::sink(), &NoProgress)?;
        }
        let extra = match self.pending.take() {
            Some(e) => Some(e),
            None => self.ar.next_entry().map_err(from_read)?,
        };
        if let Some(e) = extra {
            return Err(Rejection::UnlistedEntry { path: e.path }.into());
        }
        Ok(VerifiedBundle {
            header: self.header,
            trust_root_version: self.trust_root_version,
            sha512_checked: self.policy.digests == DigestCheck::All,
        })
    }
}

/// Streams the current entry into `sink` through SHA-256, and SHA-512 when
/// asked (the SHA-512 of an unchecked image is left as zeros).
fn hash_entry<R: Read>(
    ar: &mut archive::Reader<R>,
    sink: &mut dyn Write,
    sha512: bool,
    progress: &dyn Progress,
) -> Result<Digests> {
    let hashed =
        fsutil::hash_stream(&mut |buf| ar.read_data(buf).map_err(from_read), sink, sha512, &|n| progress.advance(n))?;
    Ok(Digests { sha256: hashed.sha256, sha512: hashed.sha512.unwrap_or(Sha512Digest([0; 64])) })
}

/// Verifies a whole bundle from a reader.
pub fn verify<R: Read>(
    reader: R,
    trust: &TrustedRoot,
    policy: &Policy,
    progress: &dyn Progress,
) -> Result<VerifiedBundle> {
    let mut stream = open(reader, trust, policy)?;
    let total = stream.header.manifest.images.iter().map(|i| i.size).sum();
    progress.start("verifying images", total);
    while stream.next_image(&mut io::sink(), progress)?.is_some() {}
    progress.finish();
    stream.finish()
}

/// Verifies the bundle file at `path`.
pub fn verify_file(
    path: &Path,
    trust: &TrustedRoot,
    policy: &Policy,
    progress: &dyn Progress,
) -> Result<VerifiedBundle> {
    let f = File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    verify(BufReader::with_capacity(CHUNK_BYTES, f), trust, policy, progress)
}

// ------------------------------------------------------------------ sign

/// Whether `sign` changed the bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignOutcome {
    Added,
    AlreadySigned,
}

/// Adds a release-key signature to the bundle at `path`, changing nothing
/// else. The bundle's structure and image digests are checked on the way
/// (the signer signs only what is really there); existing signatures are
/// kept as they are (verification checks them against a trust root).
pub fn sign(path: &Path, key: &PrivateKey, progress: &dyn Progress) -> Result<(SignOutcome, Vec<String>)> {
    let f = File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut ar = archive::Reader::new(BufReader::with_capacity(CHUNK_BYTES, f), MAX_ENTRIES);
    let raw = read_meta(&mut ar)?;
    let mut env = Envelope::from_canonical_json(&raw.manifest_dsse, MANIFEST_DSSE_PATH)?;
    if env.payload_type != MANIFEST_PAYLOAD_TYPE {
        return Err(Rejection::PayloadType {
            path: MANIFEST_DSSE_PATH.into(),
            found: env.payload_type,
            expected: MANIFEST_PAYLOAD_TYPE.into(),
        }
        .into());
    }
    let manifest = check_meta(&raw, &env)?;
    if !env.sign(key) {
        let ids = env.signatures.iter().filter_map(|s| s.keyid.clone()).collect();
        return Ok((SignOutcome::AlreadySigned, ids));
    }
    let ids = env.signatures.iter().filter_map(|s| s.keyid.clone()).collect();

    let mut out = AtomicFile::create(path, 0o644)?;
    let write_err = |e: io::Error| Error::io(format!("cannot write {}", path.display()), e);
    {
        let mut bw = BufWriter::with_capacity(CHUNK_BYTES, out.file());
        let mut w = archive::Writer::new(&mut bw);
        let mtime = manifest.created.unix_s();
        let mut meta: Vec<(&str, Vec<u8>)> = vec![
            (MANIFEST_DSSE_PATH, env.to_json()),
            (MANIFEST_PATH, raw.manifest.clone()),
            (PROVENANCE_PATH, raw.provenance.clone()),
        ];
        if let Some(s) = &raw.sbom {
            meta.push((SBOM_PATH, s.clone()));
        }
        meta.sort_by(|a, b| a.0.cmp(b.0));
        for (p, data) in &meta {
            w.append(p, data, mtime).map_err(write_err)?;
        }
        let mut pending = raw.next;
        progress.start("re-writing bundle", manifest.images.iter().map(|i| i.size).sum());
        for image in &manifest.images {
            let entry = match pending.take() {
                Some(e) => e,
                None => ar
                    .next_entry()
                    .map_err(from_read)?
                    .ok_or_else(|| Rejection::MissingEntry { path: image.path.clone() })?,
            };
            if entry.path != image.path {
                return Err(Rejection::UnlistedEntry { path: entry.path }.into());
            }
            if entry.size != image.size {
                return Err(
                    Rejection::SizeMismatch { path: entry.path, expected: image.size, actual: entry.size }.into()
                );
            }
            w.begin(&image.path, image.size, mtime).map_err(write_err)?;
            let actual = {
                let mut sink = WriterSink(&mut w);
                hash_entry(&mut ar, &mut sink, false, progress)?
            };
            check_digests(&image.path, &image.digests, &Digests { sha512: image.digests.sha512, ..actual }, false)?;
            w.pad(image.size).map_err(write_err)?;
        }
        if let Some(e) = pending.take().map_or_else(|| ar.next_entry().map_err(from_read), |e| Ok(Some(e)))? {
            return Err(Rejection::UnlistedEntry { path: e.path }.into());
        }
        w.finish().map_err(write_err)?;
        bw.flush().map_err(write_err)?;
        progress.finish();
    }
    out.commit(Overwrite::Replace)?;
    Ok((SignOutcome::Added, ids))
}

struct WriterSink<'a, W: Write>(&'a mut archive::Writer<W>);

impl<W: Write> Write for WriterSink<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.data(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ------------------------------------------------------------------ inspect

/// One signature as found (not verified).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureInfo {
    pub keyid: Option<String>,
    pub size: usize,
}

/// What `inspect` shows: the contents, unverified.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub manifest: Manifest,
    pub manifest_sha256: Sha256Digest,
    pub payload_type: String,
    pub signatures: Vec<SignatureInfo>,
    pub provenance_builder_id: String,
    pub provenance_build_type: String,
    pub provenance_invocation_id: Option<String>,
    pub provenance_signatures: Vec<SignatureInfo>,
}

/// Reads a bundle's metadata without a trust root (no signature is
/// verified and no image is read).
pub fn inspect<R: Read>(reader: R) -> Result<Inspection> {
    let mut ar = archive::Reader::new(reader, MAX_ENTRIES);
    let raw = read_meta(&mut ar)?;
    let env = Envelope::from_json(&raw.manifest_dsse, MANIFEST_DSSE_PATH)?;
    let manifest = check_meta(&raw, &env)?;
    let manifest_sha256 = Sha256Digest(Sha256::digest(&raw.manifest).into());
    let prov_env = Envelope::from_json(&raw.provenance, PROVENANCE_PATH)?;
    let statement = Statement::parse_and_check(&prov_env.payload, &manifest, manifest_sha256)?;
    let sigs = |e: &Envelope| {
        e.signatures.iter().map(|s| SignatureInfo { keyid: s.keyid.clone(), size: s.sig.len() }).collect::<Vec<_>>()
    };
    Ok(Inspection {
        manifest_sha256,
        payload_type: env.payload_type.clone(),
        signatures: sigs(&env),
        provenance_builder_id: statement.predicate.run_details.builder.id.clone(),
        provenance_build_type: statement.predicate.build_definition.build_type.clone(),
        provenance_invocation_id: statement.predicate.run_details.metadata.invocation_id.clone(),
        provenance_signatures: sigs(&prov_env),
        manifest,
    })
}

/// Inspects the bundle file at `path`.
pub fn inspect_file(path: &Path) -> Result<Inspection> {
    let f = File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    inspect(BufReader::new(f))
}

// ------------------------------------------------------------------ raw metadata

/// The metadata files of a bundle, as stored in it (for a server that keeps
/// them beside the blob). Read without any check: verify the bundle first.
#[derive(Clone, Debug)]
pub struct MetadataFiles {
    pub manifest: Vec<u8>,
    pub manifest_dsse: Vec<u8>,
    pub provenance_dsse: Vec<u8>,
    pub sbom: Option<Vec<u8>>,
}

/// Reads the metadata files of the bundle at `path`.
pub fn metadata_files(path: &Path) -> Result<MetadataFiles> {
    let f = File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut ar = archive::Reader::new(BufReader::new(f), MAX_ENTRIES);
    let raw = read_meta(&mut ar)?;
    Ok(MetadataFiles {
        manifest: raw.manifest,
        manifest_dsse: raw.manifest_dsse,
        provenance_dsse: raw.provenance,
        sbom: raw.sbom,
    })
}
