//! DSSE (Dead Simple Signing Envelope) v1.0, exactly as the specification
//! says: signatures over `PAE(payloadType, payload)`, a base64 payload, an
//! optional unauthenticated `keyid`, and `sig` in base64.
//!
//! Two verification modes:
//! - [`verify_threshold`] is the specification's `(t, n)` rule: signatures
//!   that do not verify are skipped, and at least `t` unique trusted keys
//!   must verify. This is what standard DSSE verifiers accept.
//! - [`verify_strict`] is what Updraft asks of its own envelopes: every
//!   signature must verify with a trusted key, no key may sign twice, and
//!   at least `t` must be present. A changed byte anywhere is refused.

use std::collections::BTreeSet;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use updraft_types::KeyId;

use crate::error::Rejection;
use crate::keys::{PrivateKey, PublicKey};

/// The payloadType of an Updraft bundle manifest (`manifest.json`).
pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.updraft.manifest.v1+json";
/// The payloadType of an in-toto Statement (provenance).
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The payloadType of an Updraft trust root.
pub const TRUST_ROOT_PAYLOAD_TYPE: &str = "application/vnd.updraft.trust-root.v1+json";

/// Signatures an envelope may carry: more is a malformed envelope.
pub const MAX_SIGNATURES: usize = 32;

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// One signature of an envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// Unauthenticated hint; Updraft writes the signer's key id in hex.
    pub keyid: Option<String>,
    pub sig: Vec<u8>,
}

/// A DSSE envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<Signature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    signatures: Vec<WireSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSignature {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    keyid: Option<String>,
    sig: String,
}

/// Decodes standard or URL-safe base64, padded or not, as DSSE requires.
fn decode_b64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let url = s.contains(['-', '_']);
    let padded = s.ends_with('=');
    match (url, padded) {
        (false, true) => STANDARD.decode(s),
        (false, false) => STANDARD_NO_PAD.decode(s),
        (true, true) => URL_SAFE.decode(s),
        (true, false) => URL_SAFE_NO_PAD.decode(s),
    }
}

/// The result of a successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub payload_type: String,
    pub payload: Vec<u8>,
    /// The trusted keys whose signatures verified, sorted.
    pub signers: Vec<KeyId>,
}

impl Envelope {
    /// An envelope without signatures yet.
    pub fn new(payload_type: &str, payload: Vec<u8>) -> Self {
        Envelope { payload_type: payload_type.to_owned(), payload, signatures: Vec::new() }
    }

    /// Adds a signature by `key`, keeping signatures sorted by key id so that
    /// the result does not depend on the order of signing. Returns false, and
    /// changes nothing, if this key has already signed.
    pub fn sign(&mut self, key: &PrivateKey) -> bool {
        let keyid = key.id().to_hex();
        if self.signatures.iter().any(|s| s.keyid.as_deref() == Some(keyid.as_str())) {
            return false;
        }
        let sig = key.sign(&pae(&self.payload_type, &self.payload));
        self.signatures.push(Signature { keyid: Some(keyid), sig });
        self.signatures.sort_by(|a, b| a.keyid.cmp(&b.keyid));
        true
    }

    /// Parses an envelope (either base64 alphabet). `path` names it in errors.
    pub fn from_json(bytes: &[u8], path: &str) -> Result<Self, Rejection> {
        let bad = |reason: String| Rejection::Envelope { path: path.to_owned(), reason };
        let wire: WireEnvelope = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if wire.signatures.len() > MAX_SIGNATURES {
            return Err(Rejection::TooMany {
                what: format!("{path}: signatures"),
                count: wire.signatures.len() as u64,
                limit: MAX_SIGNATURES as u64,
            });
        }
        let payload = decode_b64(&wire.payload).map_err(|e| bad(format!("payload is not base64: {e}")))?;
        let mut signatures = Vec::with_capacity(wire.signatures.len());
        for (i, s) in wire.signatures.into_iter().enumerate() {
            let sig = decode_b64(&s.sig).map_err(|e| bad(format!("signature {i} is not base64: {e}")))?;
            signatures.push(Signature { keyid: s.keyid, sig });
        }
        Ok(Envelope { payload_type: wire.payload_type, payload, signatures })
    }

    /// The canonical JSON form Updraft writes: compact, standard base64 with
    /// padding, fields in the specification's order, and a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = WireEnvelope {
            payload: STANDARD.encode(&self.payload),
            payload_type: self.payload_type.clone(),
            signatures: self
                .signatures
                .iter()
                .map(|s| WireSignature { keyid: s.keyid.clone(), sig: STANDARD.encode(&s.sig) })
                .collect(),
        };
        let mut out = serde_json::to_vec(&wire).expect("envelope serialises");
        out.push(b'\n');
        out
    }

    /// Parses and requires the canonical form, so that an envelope inside a
    /// bundle has exactly one encoding.
    pub fn from_canonical_json(bytes: &[u8], path: &str) -> Result<Self, Rejection> {
        let env = Self::from_json(bytes, path)?;
        if env.to_json() != bytes {
            return Err(Rejection::Envelope {
                path: path.to_owned(),
                reason: "not in canonical form (compact JSON, standard base64, final newline)".into(),
            });
        }
        Ok(env)
    }

    fn candidates<'k>(&self, sig: &Signature, keys: &'k [PublicKey]) -> Vec<&'k PublicKey> {
        // The keyid narrows the search only; it is never trusted.
        let hinted: Vec<&PublicKey> = match &sig.keyid {
            Some(id) => keys.iter().filter(|k| k.id().to_hex() == *id).collect(),
            None => Vec::new(),
        };
        if hinted.is_empty() {
            keys.iter().collect()
        } else {
            hinted
        }
    }
}

/// The specification's `(t, n)` verification: skips signatures that do not
/// verify, requires `threshold` unique trusted keys, then checks the type.
pub fn verify_threshold(
    env: &Envelope,
    keys: &[PublicKey],
    threshold: usize,
    expected_type: &str,
    path: &str,
) -> Result<Verified, Rejection> {
    let message = pae(&env.payload_type, &env.payload);
    let mut accepted = BTreeSet::new();
    for sig in &env.signatures {
        if let Some(k) = env.candidates(sig, keys).into_iter().find(|k| k.verify(&message, &sig.sig)) {
            accepted.insert(k.id());
        }
    }
    finish(env, accepted, threshold, expected_type, path, "trusted")
}

/// Updraft's strict verification (see the module documentation). `role`
/// names the keys in messages ("release", "build").
pub fn verify_strict(
    env: &Envelope,
    keys: &[PublicKey],
    threshold: usize,
    expected_type: &str,
    path: &str,
    role: &str,
) -> Result<Verified, Rejection> {
    let message = pae(&env.payload_type, &env.payload);
    let mut accepted = BTreeSet::new();
    for (index, sig) in env.signatures.iter().enumerate() {
        let Some(k) = env.candidates(sig, keys).into_iter().find(|k| k.verify(&message, &sig.sig)) else {
            return Err(Rejection::UntrustedSignature {
                path: path.to_owned(),
                index,
                keyid: sig.keyid.clone().unwrap_or_else(|| "none".into()),
                role: role.to_owned(),
            });
        };
        // In a strict envelope even the unauthenticated hint must be true:
        // a changed keyid is a changed envelope.
        if sig.keyid.as_ref().is_some_and(|id| *id != k.id().to_hex()) {
            return Err(Rejection::Envelope {
                path: path.to_owned(),
                reason: format!(
                    "signature {index} has keyid {:?} but was made by key {}",
                    sig.keyid.as_deref().unwrap_or(""),
                    k.id()
                ),
            });
        }
        if !accepted.insert(k.id()) {
            return Err(Rejection::DuplicateSignature { path: path.to_owned(), keyid: k.id() });
        }
    }
    finish(env, accepted, threshold, expected_type, path, role)
}

fn finish(
    env: &Envelope,
    accepted: BTreeSet<KeyId>,
    threshold: usize,
    expected_type: &str,
    path: &str,
    role: &str,
) -> Result<Verified, Rejection> {
    assert!(threshold >= 1, "a threshold of zero would accept unsigned envelopes");
    if accepted.len() < threshold {
        return Err(Rejection::BelowThreshold {
            path: path.to_owned(),
            valid: accepted.len(),
            threshold,
            role: role.to_owned(),
        });
    }
    // Only after the signatures: check the type (DSSE's order).
    if env.payload_type != expected_type {
        return Err(Rejection::PayloadType {
            path: path.to_owned(),
            found: env.payload_type.clone(),
            expected: expected_type.to_owned(),
        });
    }
    Ok(Verified {
        payload_type: env.payload_type.clone(),
        payload: env.payload.clone(),
        signers: accepted.into_iter().collect(),
    })
}
