//! `manifest.json`: what a bundle holds and what it is for. It is the object
//! the release keys sign (through `manifest.dsse.json`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use updraft_types::{SecurityVersion, Sha256Digest, Sha512Digest, Timestamp};

use crate::error::Rejection;
use crate::limits::{MAX_IMAGES, MAX_IMAGE_BYTES, MAX_NAME_LEN, MAX_REQUIREMENTS, MAX_SBOM_BYTES};

/// Schema identifier inside every manifest.
pub const MANIFEST_SCHEMA: &str = "https://updraft.dev/schemas/manifest/v1";
/// Bundle path of the manifest.
pub const MANIFEST_PATH: &str = "manifest.json";
/// Bundle path of the manifest's DSSE envelope.
pub const MANIFEST_DSSE_PATH: &str = "manifest.dsse.json";
/// Bundle path of the provenance envelope.
pub const PROVENANCE_PATH: &str = "meta/provenance.dsse.json";
/// Bundle path of the optional SBOM.
pub const SBOM_PATH: &str = "meta/sbom.cdx.json";
/// Folder of the images; image `NAME` lives at `payload/NAME`.
pub const PAYLOAD_DIR: &str = "payload/";
/// SBOM media type.
pub const CYCLONEDX_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";
/// Provenance predicate type.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

/// Where an image goes on the device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The inactive A/B slot.
    Slot,
    /// A named component outside the A/B pair (for example a radio firmware).
    Component(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Slot => f.write_str("slot"),
            Target::Component(c) => write!(f, "component:{c}"),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "slot" {
            return Ok(Target::Slot);
        }
        if let Some(c) = s.strip_prefix("component:") {
            check_name(c, "component name")?;
            return Ok(Target::Component(c.to_owned()));
        }
        Err(format!("target {s:?} must be \"slot\" or \"component:NAME\""))
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A requirement on another component of the device, such as
/// `bootloader>=1.4`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub component: String,
    /// A semver requirement (`>=1.4`, `^2`, `>=1.4, <3`).
    pub version: semver::VersionReq,
}

impl FromStr for Requirement {
    type Err = String;

    /// `COMPONENT OP VERSION`, for example `bootloader>=1.4`.
    fn from_str(s: &str) -> Result<Self, String> {
        let split = s
            .find(['>', '<', '=', '^', '~', ' '])
            .ok_or_else(|| format!("requirement {s:?} must look like COMPONENT>=VERSION, e.g. bootloader>=1.4"))?;
        let (component, req) = s.split_at(split);
        check_name(component, "component name")?;
        let version = semver::VersionReq::parse(req.trim())
            .map_err(|e| format!("requirement {s:?}: {e}; hint: write e.g. bootloader>=1.4"))?;
        Ok(Requirement { component: component.to_owned(), version })
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.component, self.version)
    }
}

/// Where the firmware came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Repository URI, e.g. `git+https://github.com/acme/sensor-fw`.
    pub uri: String,
    /// The commit the firmware was built from.
    pub commit: String,
}

/// Digests of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digests {
    pub sha256: Sha256Digest,
    pub sha512: Sha512Digest,
}

/// One firmware image in the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub name: String,
    pub path: String,
    pub target: Target,
    pub size: u64,
    pub digests: Digests,
}

/// The SBOM entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SbomEntry {
    pub path: String,
    pub media_type: String,
    pub size: u64,
    pub digests: Digests,
}

/// An attestation entry. It carries no digest of the attestation itself:
/// the attestation's subjects include `manifest.json`'s digest, so a digest
/// in the other direction would be circular. The attestation is bound to the
/// bundle by its build-key signature and those subjects, which verification
/// checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AttestationEntry {
    pub path: String,
    pub media_type: String,
    pub predicate_type: String,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    pub schema: String,
    pub name: String,
    pub version: semver::Version,
    pub security_version: SecurityVersion,
    pub family: String,
    /// Compatible hardware revisions, sorted.
    pub hardware: Vec<String>,
    /// Requirements on other components, sorted by component.
    pub requires: Vec<Requirement>,
    /// SOURCE_DATE_EPOCH; also the mtime of every archive entry.
    pub created: Timestamp,
    pub source: Source,
    /// Sorted by name.
    pub images: Vec<Image>,
    pub sbom: Option<SbomEntry>,
    pub attestations: Vec<AttestationEntry>,
}

/// Names (bundle name, family, hardware revision, image, component): 1 to
/// [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn check_name(s: &str, what: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {s:?} must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        ))
    }
}

fn strictly_sorted<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> bool {
    items.windows(2).all(|w| key(&w[0]) < key(&w[1]))
}

impl Manifest {
    /// Checks the rules that serde cannot: names, order, uniqueness, limits,
    /// and that every path is the one its name implies.
    pub fn validate(&self) -> Result<(), Rejection> {
        let bad = |m: String| Rejection::Manifest(m);
        if self.schema != MANIFEST_SCHEMA {
            return Err(bad(format!("unknown schema {:?}", self.schema)));
        }
        check_name(&self.name, "name").map_err(bad)?;
        check_name(&self.family, "family").map_err(bad)?;
        if self.hardware.is_empty() {
            return Err(bad("no compatible hardware revisions".into()));
        }
        for h in &self.hardware {
            check_name(h, "hardware revision").map_err(bad)?;
        }
        if !strictly_sorted(&self.hardware, |h| h.clone()) {
            return Err(bad("hardware revisions must be sorted and unique".into()));
        }
        if self.requires.len() > MAX_REQUIREMENTS {
            return Err(bad(format!("more than {MAX_REQUIREMENTS} requirements")));
        }
        for r in &self.requires {
            check_name(&r.component, "component").map_err(bad)?;
        }
        if !strictly_sorted(&self.requires, |r| r.component.clone()) {
            return Err(bad("requirements must be sorted by component, one per component".into()));
        }
        if self.source.uri.is_empty() || self.source.commit.is_empty() {
            return Err(bad("source uri and commit must not be empty".into()));
        }
        if self.images.is_empty() {
            return Err(bad("no images".into()));
        }
        if self.images.len() > MAX_IMAGES {
            return Err(Rejection::TooMany {
                what: "images".into(),
                count: self.images.len() as u64,
                limit: MAX_IMAGES as u64,
            });
        }
        for image in &self.images {
            check_name(&image.name, "image name").map_err(bad)?;
            if image.path != image_path(&image.name) {
                return Err(bad(format!("image {:?} must be at {:?}", image.name, image_path(&image.name))));
            }
            if image.size > MAX_IMAGE_BYTES {
                return Err(Rejection::TooLarge { what: image.path.clone(), size: image.size, limit: MAX_IMAGE_BYTES });
            }
        }
        if !strictly_sorted(&self.images, |i| i.name.clone()) {
            return Err(bad("images must be sorted by name and unique".into()));
        }
        if let Some(sbom) = &self.sbom {
            if sbom.path != SBOM_PATH || sbom.media_type != CYCLONEDX_MEDIA_TYPE {
                return Err(bad(format!("the SBOM must be {SBOM_PATH} ({CYCLONEDX_MEDIA_TYPE})")));
            }
            if sbom.size > MAX_SBOM_BYTES {
                return Err(Rejection::TooLarge { what: SBOM_PATH.into(), size: sbom.size, limit: MAX_SBOM_BYTES });
            }
        }
        let expected = vec![provenance_entry()];
        if self.attestations != expected {
            return Err(bad(format!("attestations must be exactly the provenance at {PROVENANCE_PATH}")));
        }
        Ok(())
    }

    /// The canonical bytes: pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("manifest serialises");
        out.push(b'\n');
        out
    }

    /// Parses, validates, and requires the canonical form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Rejection> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| Rejection::Manifest(e.to_string()))?;
        m.validate()?;
        if m.to_json() != bytes {
            return Err(Rejection::Manifest("not in canonical form (as `updraft bundle create` writes it)".into()));
        }
        Ok(m)
    }

    /// Every path the archive must hold, sorted as the archive holds them.
    pub fn expected_paths(&self) -> Vec<String> {
        let mut paths = vec![MANIFEST_DSSE_PATH.to_owned(), MANIFEST_PATH.to_owned(), PROVENANCE_PATH.to_owned()];
        if let Some(s) = &self.sbom {
            paths.push(s.path.clone());
        }
        paths.extend(self.images.iter().map(|i| i.path.clone()));
        paths.sort();
        paths
    }
}

/// The bundle path of image `name`.
pub fn image_path(name: &str) -> String {
    format!("{PAYLOAD_DIR}{name}")
}

/// The one attestation entry every bundle lists.
pub fn provenance_entry() -> AttestationEntry {
    AttestationEntry {
        path: PROVENANCE_PATH.to_owned(),
        media_type: "application/vnd.dsse.envelope.v1+json".to_owned(),
        predicate_type: SLSA_PROVENANCE_V1.to_owned(),
    }
}
