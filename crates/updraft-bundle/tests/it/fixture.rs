//! Deterministic fixtures: keys from fixed seeds, sample images, a trust
//! root, and a helper that builds a bundle in a temporary folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use updraft_bundle::bundle::ImageInput;
use updraft_bundle::trust::{self, RootParams};
use updraft_bundle::{
    BuildContext, CreateParams, NoProgress, PrivateKey, SignedRoot, Signers, Source, Target, TrustedRoot,
};
use updraft_types::{SecurityVersion, Timestamp};

pub const NOW: Timestamp = Timestamp(1_800_000_000);
pub const SDE: Timestamp = Timestamp(1_767_225_600);

pub struct Keys {
    pub a: PrivateKey,
    pub b: PrivateKey,
    /// ECDSA P-256.
    pub c: PrivateKey,
    pub d: PrivateKey,
    pub build: PrivateKey,
    pub stranger: PrivateKey,
}

pub fn keys() -> Keys {
    let ed = |n: u8| PrivateKey::from_ed25519_seed(&[n; 32]).unwrap();
    Keys {
        a: ed(1),
        b: ed(2),
        c: PrivateKey::from_p256_scalar(&[3; 32]).unwrap(),
        d: ed(4),
        build: ed(5),
        stranger: ed(6),
    }
}

pub fn root_params(k: &Keys, release: &[&PrivateKey], threshold: usize, expires: Timestamp) -> RootParams {
    RootParams {
        release_keys: release.iter().map(|k| k.public().clone()).collect(),
        release_threshold: threshold,
        build_keys: vec![k.build.public().clone()],
        expires,
    }
}

/// Version 1: A, B, C with threshold 2, signed by A and B.
pub fn root1(k: &Keys) -> SignedRoot {
    trust::init(root_params(k, &[&k.a, &k.b, &k.c], 2, NOW.saturating_add(Duration::from_secs(86400))), &[&k.a, &k.b])
        .unwrap()
}

pub fn trusted(k: &Keys) -> TrustedRoot {
    trust::verify_pinned(&root1(k), NOW).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub const SBOM: &str = r#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[]}"#;

/// Writes the sample inputs into `dir`.
pub fn write_inputs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("rootfs.img"), bytes(300_000, 1)).unwrap();
    std::fs::write(dir.join("radio.bin"), bytes(1_000, 2)).unwrap();
    std::fs::write(dir.join("empty.bin"), b"").unwrap();
    std::fs::write(dir.join("sbom.json"), SBOM).unwrap();
}

pub fn params(dir: &Path) -> CreateParams {
    CreateParams {
        name: "sensor-fw".into(),
        version: semver::Version::new(2, 3, 1),
        security_version: SecurityVersion(7),
        family: "nrf52".into(),
        hardware: vec!["rev-d".into(), "rev-c".into()],
        requires: vec!["bootloader>=1.4".parse().unwrap()],
        source: Source { uri: "git+https://git.example.com/acme/sensor-fw".into(), commit: "7fd1a60b".into() },
        created: SDE,
        images: vec![
            ImageInput { name: "rootfs".into(), path: dir.join("rootfs.img"), target: Target::Slot },
            ImageInput { name: "radio".into(), path: dir.join("radio.bin"), target: Target::Component("radio".into()) },
            ImageInput { name: "empty".into(), path: dir.join("empty.bin"), target: Target::Component("spare".into()) },
        ],
        sbom: Some(dir.join("sbom.json")),
        build: BuildContext { ci: "local".into(), source_ref: Some("refs/tags/v2.3.1".into()), ..Default::default() },
        updraft_version: "test".into(),
    }
}

/// A valid bundle signed by A and C (a threshold of root 1), with its folder.
pub struct Built {
    /// Holds the folder until the test ends.
    pub _dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn build_with(k: &Keys, release: &[&PrivateKey]) -> Built {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(&dir.path().join("in"));
    let path = dir.path().join("out.bundle");
    updraft_bundle::create(
        &params(&dir.path().join("in")),
        &Signers { release: release.to_vec(), build: &k.build },
        &path,
        &NoProgress,
    )
    .unwrap();
    Built { _dir: dir, path }
}

pub fn build(k: &Keys) -> Built {
    build_with(k, &[&k.a, &k.c])
}
