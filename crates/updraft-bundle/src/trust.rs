//! Trust roots: the pinned list of release keys (with a threshold) and build
//! keys that devices and the server verify bundles against.
//!
//! A trust root is a DSSE envelope (payloadType
//! [`TRUST_ROOT_PAYLOAD_TYPE`](crate::dsse::TRUST_ROOT_PAYLOAD_TYPE)) over a
//! JSON document with a version, an expiry and the keys. Version 1 is signed
//! by a threshold of its own release keys. Version N+1 is signed by a
//! threshold of version N's release keys *and* a threshold of its own, so a
//! holder of any version can walk the chain forward ([`verify_chain`]) and
//! then trusts only the newest version's keys. Intermediate versions may have
//! expired; only the final one must be current (as in TUF).

use serde::{Deserialize, Serialize};
use updraft_types::{KeyId, Timestamp};

use crate::dsse::{self, Envelope, TRUST_ROOT_PAYLOAD_TYPE};
use crate::error::Rejection;
use crate::keys::{Algorithm, PrivateKey, PublicKey};

/// Schema identifier inside every trust root document.
pub const TRUST_ROOT_SCHEMA: &str = "https://updraft.dev/schemas/trust-root/v1";
/// Keys of each role a root may list.
pub const MAX_KEYS_PER_ROLE: usize = 16;
/// Versions one chain walk may cross.
pub const MAX_CHAIN_LENGTH: usize = 1024;
/// Size of a trust root file.
pub const MAX_TRUST_ROOT_BYTES: usize = 256 * 1024;

/// A key as listed in a trust root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListedKey {
    pub keyid: KeyId,
    pub algorithm: Algorithm,
    /// SubjectPublicKeyInfo PEM.
    pub public_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RootDocument {
    schema: String,
    version: u64,
    expires: Timestamp,
    release_threshold: usize,
    release_keys: Vec<ListedKey>,
    build_keys: Vec<ListedKey>,
}

/// A parsed, consistent trust root (its own keys check out; its signatures
/// are checked by [`verify_pinned`] or [`verify_chain`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustRoot {
    pub version: u64,
    pub expires: Timestamp,
    pub release_threshold: usize,
    pub release_keys: Vec<PublicKey>,
    pub build_keys: Vec<PublicKey>,
}

/// A trust root whose signatures and expiry have been checked. Only
/// [`verify_pinned`] and [`verify_chain`] make one; bundle verification
/// takes nothing less.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedRoot(TrustRoot);

impl TrustedRoot {
    pub fn root(&self) -> &TrustRoot {
        &self.0
    }
}

/// What a new root version should say.
#[derive(Clone, Debug)]
pub struct RootParams {
    pub release_keys: Vec<PublicKey>,
    pub release_threshold: usize,
    pub build_keys: Vec<PublicKey>,
    pub expires: Timestamp,
}

/// A trust root file: the envelope and the root it carries.
#[derive(Clone, Debug)]
pub struct SignedRoot {
    pub envelope: Envelope,
    pub root: TrustRoot,
}

fn listed(keys: &[PublicKey]) -> Vec<ListedKey> {
    let mut out: Vec<ListedKey> =
        keys.iter().map(|k| ListedKey { keyid: k.id(), algorithm: k.algorithm(), public_key: k.to_pem() }).collect();
    out.sort_by_key(|k| k.keyid);
    out
}

fn parse_keys(keys: &[ListedKey], role: &str) -> Result<Vec<PublicKey>, Rejection> {
    let bad = |m: String| Rejection::TrustRoot(m);
    if keys.len() > MAX_KEYS_PER_ROLE {
        return Err(bad(format!("{} {role} keys, at most {MAX_KEYS_PER_ROLE}", keys.len())));
    }
    let mut out: Vec<PublicKey> = Vec::new();
    for listed in keys {
        let key =
            PublicKey::from_pem(&listed.public_key).map_err(|e| bad(format!("{role} key {}: {e}", listed.keyid)))?;
        if key.id() != listed.keyid {
            return Err(bad(format!("{role} key listed as {} has key id {}", listed.keyid, key.id())));
        }
        if key.algorithm() != listed.algorithm {
            return Err(bad(format!("{role} key {} is {}, listed as {}", key.id(), key.algorithm(), listed.algorithm)));
        }
        if out.iter().any(|k| k.id() == key.id()) {
            return Err(bad(format!("{role} key {} is listed twice", key.id())));
        }
        out.push(key);
    }
    Ok(out)
}

impl TrustRoot {
    fn check(&self) -> Result<(), Rejection> {
        let bad = |m: String| Rejection::TrustRoot(m);
        if self.version == 0 {
            return Err(bad("version must be 1 or more".into()));
        }
        if self.release_keys.is_empty() {
            return Err(bad("no release keys".into()));
        }
        if self.release_threshold == 0 || self.release_threshold > self.release_keys.len() {
            return Err(bad(format!(
                "release threshold {} must be between 1 and the number of release keys ({})",
                self.release_threshold,
                self.release_keys.len()
            )));
        }
        if self.release_keys.len() > MAX_KEYS_PER_ROLE || self.build_keys.len() > MAX_KEYS_PER_ROLE {
            return Err(bad(format!("at most {MAX_KEYS_PER_ROLE} keys per role")));
        }
        let mut ids: Vec<KeyId> = self.release_keys.iter().map(|k| k.id()).collect();
        ids.sort();
        ids.dedup();
        if ids.len() != self.release_keys.len() {
            return Err(bad("a release key is listed twice".into()));
        }
        Ok(())
    }

    fn document(&self) -> RootDocument {
        RootDocument {
            schema: TRUST_ROOT_SCHEMA.to_owned(),
            version: self.version,
            expires: self.expires,
            release_threshold: self.release_threshold,
            release_keys: listed(&self.release_keys),
            build_keys: listed(&self.build_keys),
        }
    }

    /// The root's JSON document (what the envelope signs), pretty-printed.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(&self.document()).expect("root serialises");
        out.push(b'\n');
        out
    }

    /// Fails if the root has expired at `now`.
    pub fn check_expiry(&self, now: Timestamp) -> Result<(), Rejection> {
        if now >= self.expires {
            return Err(Rejection::TrustRootExpired { version: self.version, expires: self.expires, now });
        }
        Ok(())
    }

    pub fn is_release_key(&self, id: KeyId) -> bool {
        self.release_keys.iter().any(|k| k.id() == id)
    }
}

impl SignedRoot {
    /// Parses a trust root file without checking its signatures.
    pub fn parse(bytes: &[u8]) -> Result<Self, Rejection> {
        if bytes.len() > MAX_TRUST_ROOT_BYTES {
            return Err(Rejection::TooLarge {
                what: "trust root".into(),
                size: bytes.len() as u64,
                limit: MAX_TRUST_ROOT_BYTES as u64,
            });
        }
        let envelope = Envelope::from_json(bytes, "trust root")?;
        if envelope.payload_type != TRUST_ROOT_PAYLOAD_TYPE {
            return Err(Rejection::PayloadType {
                path: "trust root".into(),
                found: envelope.payload_type.clone(),
                expected: TRUST_ROOT_PAYLOAD_TYPE.into(),
            });
        }
        let doc: RootDocument =
            serde_json::from_slice(&envelope.payload).map_err(|e| Rejection::TrustRoot(e.to_string()))?;
        if doc.schema != TRUST_ROOT_SCHEMA {
            return Err(Rejection::TrustRoot(format!("unknown schema {:?}", doc.schema)));
        }
        let root = TrustRoot {
            version: doc.version,
            expires: doc.expires,
            release_threshold: doc.release_threshold,
            release_keys: parse_keys(&doc.release_keys, "release")?,
            build_keys: parse_keys(&doc.build_keys, "build")?,
        };
        root.check()?;
        Ok(SignedRoot { envelope, root })
    }

    /// The file's bytes (the envelope in canonical JSON).
    pub fn to_json(&self) -> Vec<u8> {
        self.envelope.to_json()
    }

    /// Adds a signature; returns false if `key` has already signed.
    pub fn sign(&mut self, key: &PrivateKey) -> bool {
        self.envelope.sign(key)
    }
}

fn build(root: TrustRoot, signers: &[&PrivateKey]) -> Result<SignedRoot, Rejection> {
    root.check()?;
    let mut envelope = Envelope::new(TRUST_ROOT_PAYLOAD_TYPE, root.to_json());
    for key in signers {
        envelope.sign(key);
    }
    Ok(SignedRoot { envelope, root })
}

/// Version 1 of a trust root, signed by `signers` (a threshold of its own
/// release keys makes it complete; see [`signing_status`]).
pub fn init(params: RootParams, signers: &[&PrivateKey]) -> Result<SignedRoot, Rejection> {
    let root = TrustRoot {
        version: 1,
        expires: params.expires,
        release_threshold: params.release_threshold,
        release_keys: params.release_keys,
        build_keys: params.build_keys,
    };
    build(root, signers)
}

/// Version N+1 after `previous`. A complete rotation carries a threshold of
/// `previous`'s release keys and a threshold of its own.
pub fn rotate(previous: &TrustRoot, params: RootParams, signers: &[&PrivateKey]) -> Result<SignedRoot, Rejection> {
    let root = TrustRoot {
        version: previous.version + 1,
        expires: params.expires,
        release_threshold: params.release_threshold,
        release_keys: params.release_keys,
        build_keys: params.build_keys,
    };
    build(root, signers)
}

/// How many of the required signatures a root carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningStatus {
    /// Valid signatures by this root's own release keys, and how many are needed.
    pub own: (usize, usize),
    /// Valid signatures by the previous version's release keys (rotations only).
    pub previous: Option<(usize, usize)>,
}

impl SigningStatus {
    pub fn complete(&self) -> bool {
        self.own.0 >= self.own.1 && self.previous.is_none_or(|(have, need)| have >= need)
    }
}

fn count_valid(env: &Envelope, keys: &[PublicKey]) -> usize {
    let message = dsse::pae(&env.payload_type, &env.payload);
    keys.iter().filter(|k| env.signatures.iter().any(|s| k.verify(&message, &s.sig))).count()
}

/// Counts signatures without failing: used to tell a signer what is missing.
pub fn signing_status(signed: &SignedRoot, previous: Option<&TrustRoot>) -> SigningStatus {
    let own = (count_valid(&signed.envelope, &signed.root.release_keys), signed.root.release_threshold);
    let previous = previous.map(|p| (count_valid(&signed.envelope, &p.release_keys), p.release_threshold));
    SigningStatus { own, previous }
}

/// Checks a root taken as the trust anchor (pinned out of band): a threshold
/// of its own release keys signed it, every signature is by one of them, and
/// it has not expired at `now`.
pub fn verify_pinned(signed: &SignedRoot, now: Timestamp) -> Result<TrustedRoot, Rejection> {
    let root = &signed.root;
    dsse::verify_strict(
        &signed.envelope,
        &root.release_keys,
        root.release_threshold,
        TRUST_ROOT_PAYLOAD_TYPE,
        &format!("trust root v{}", root.version),
        "release",
    )?;
    root.check_expiry(now)?;
    Ok(TrustedRoot(root.clone()))
}

/// Walks from the pinned root through `updates` (versions N+1, N+2, ... in
/// order) and returns the newest root, which must not have expired at `now`.
/// Each step needs a threshold of the previous version's release keys and a
/// threshold of the new version's own; any signature by neither is refused.
pub fn verify_chain(pinned: &SignedRoot, updates: &[SignedRoot], now: Timestamp) -> Result<TrustedRoot, Rejection> {
    if updates.len() > MAX_CHAIN_LENGTH {
        return Err(Rejection::TooMany {
            what: "trust root versions".into(),
            count: updates.len() as u64,
            limit: MAX_CHAIN_LENGTH as u64,
        });
    }
    let pinned_root = &pinned.root;
    dsse::verify_strict(
        &pinned.envelope,
        &pinned_root.release_keys,
        pinned_root.release_threshold,
        TRUST_ROOT_PAYLOAD_TYPE,
        &format!("trust root v{}", pinned_root.version),
        "release",
    )?;
    let mut current = pinned_root.clone();
    for next in updates {
        let new = &next.root;
        if new.version != current.version + 1 {
            return Err(Rejection::TrustChain(format!(
                "version {} follows version {}; expected version {}",
                new.version,
                current.version,
                current.version + 1
            )));
        }
        let path = format!("trust root v{}", new.version);
        // Every signature must be by a key of either version.
        let mut union = current.release_keys.clone();
        union.extend(new.release_keys.iter().filter(|k| !current.is_release_key(k.id())).cloned());
        dsse::verify_strict(&next.envelope, &union, 1, TRUST_ROOT_PAYLOAD_TYPE, &path, "release (old or new)")?;
        for (keys, threshold, which) in [
            (&current.release_keys, current.release_threshold, format!("v{} release", current.version)),
            (&new.release_keys, new.release_threshold, format!("v{} release", new.version)),
        ] {
            let valid = count_valid(&next.envelope, keys);
            if valid < threshold {
                return Err(Rejection::BelowThreshold { path: path.clone(), valid, threshold, role: which });
            }
        }
        current = new.clone();
    }
    current.check_expiry(now)?;
    Ok(TrustedRoot(current))
}
