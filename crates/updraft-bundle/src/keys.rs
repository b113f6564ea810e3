//! Signing keys: Ed25519 (the default) and ECDSA P-256 (for hardware tokens).
//!
//! Private keys are PKCS#8 PEM, public keys SubjectPublicKeyInfo PEM, as
//! OpenSSL writes them. A key id is the SHA-256 of the DER
//! SubjectPublicKeyInfo: one canonical form per key, whatever the PEM
//! line endings or wrapping.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use p256::pkcs8::LineEnding;
use sha2::{Digest, Sha256};
use updraft_types::KeyId;

use crate::error::KeyError;

/// A signature algorithm. DSSE signatures are the raw 64 bytes for Ed25519
/// and ASN.1 DER for ECDSA P-256 with SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Ed25519,
    P256,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::P256 => "p256",
        })
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "ed25519" => Ok(Algorithm::Ed25519),
            "p256" | "ecdsa-p256" => Ok(Algorithm::P256),
            other => Err(KeyError::UnknownAlgorithm(other.to_owned())),
        }
    }
}

#[derive(Clone)]
enum Verifying {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// A public key with its canonical DER form and key id.
#[derive(Clone)]
pub struct PublicKey {
    key: Verifying,
    spki_der: Vec<u8>,
    id: KeyId,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}
impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.algorithm(), self.id)
    }
}

impl PublicKey {
    fn from_verifying(key: Verifying) -> Result<Self, KeyError> {
        let der = match &key {
            Verifying::Ed25519(k) => k.to_public_key_der(),
            Verifying::P256(k) => k.to_public_key_der(),
        }
        .map_err(|e| KeyError::Encode(e.to_string()))?;
        let spki_der = der.as_bytes().to_vec();
        let id = KeyId(Sha256::digest(&spki_der).into());
        Ok(PublicKey { key, spki_der, id })
    }

    /// Reads a `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Self::from_verifying(Verifying::Ed25519(k));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Self::from_verifying(Verifying::P256(k));
        }
        if pem.contains("PRIVATE KEY") {
            return Err(KeyError::NotPublic);
        }
        Err(KeyError::Unreadable("expected an Ed25519 or P-256 public key in PEM (\"BEGIN PUBLIC KEY\")".into()))
    }

    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Self::from_verifying(Verifying::Ed25519(k));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Self::from_verifying(Verifying::P256(k));
        }
        Err(KeyError::Unreadable("expected an Ed25519 or P-256 SubjectPublicKeyInfo".into()))
    }

    /// An Ed25519 public key from its raw 32 bytes.
    pub fn from_ed25519_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let k = ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|e| KeyError::Unreadable(e.to_string()))?;
        Self::from_verifying(Verifying::Ed25519(k))
    }

    pub fn to_pem(&self) -> String {
        let body = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &self.spki_der);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.key {
            Verifying::Ed25519(_) => Algorithm::Ed25519,
            Verifying::P256(_) => Algorithm::P256,
        }
    }

    /// Checks a signature over `message`. Strict: Ed25519 uses
    /// `verify_strict` (no small-order keys, canonical S), ECDSA accepts only
    /// canonical DER with a low S, so that no signature has a second valid
    /// encoding.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            Verifying::Ed25519(k) => {
                let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                    return false;
                };
                k.verify_strict(message, &sig).is_ok()
            }
            Verifying::P256(k) => {
                let Ok(sig) = p256::ecdsa::Signature::from_der(signature) else {
                    return false;
                };
                if sig.to_der().as_bytes() != signature || sig.normalize_s().is_some() {
                    return false;
                }
                p256::ecdsa::signature::Verifier::verify(k, message, &sig).is_ok()
            }
        }
    }

    /// Checks an ECDSA P-256 signature given as raw `r || s` (64 bytes), the
    /// encoding some other DSSE producers use. Ed25519 keys use [`Self::verify`].
    pub fn verify_p256_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            Verifying::P256(k) => match p256::ecdsa::Signature::from_slice(signature) {
                Ok(sig) => p256::ecdsa::signature::Verifier::verify(k, message, &sig).is_ok(),
                Err(_) => false,
            },
            Verifying::Ed25519(_) => false,
        }
    }
}

enum Signing {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

/// A private signing key. Signing is deterministic for both algorithms
/// (Ed25519 by construction, ECDSA with RFC 6979 nonces), which keeps
/// bundles reproducible.
pub struct PrivateKey {
    key: Signing,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({} {})", self.public.algorithm(), self.public.id())
    }
}

impl PrivateKey {
    fn from_signing(key: Signing) -> Result<Self, KeyError> {
        let public = match &key {
            Signing::Ed25519(k) => PublicKey::from_verifying(Verifying::Ed25519(k.verifying_key()))?,
            Signing::P256(k) => PublicKey::from_verifying(Verifying::P256(*k.verifying_key()))?,
        };
        Ok(PrivateKey { key, public })
    }

    /// A new key from the operating system's random number generator.
    pub fn generate(algorithm: Algorithm) -> Result<Self, KeyError> {
        let mut rng = rand_core::OsRng;
        let key = match algorithm {
            Algorithm::Ed25519 => Signing::Ed25519(ed25519_dalek::SigningKey::generate(&mut rng)),
            Algorithm::P256 => Signing::P256(p256::ecdsa::SigningKey::random(&mut rng)),
        };
        Self::from_signing(key)
    }

    /// An Ed25519 key from a 32-byte seed (test vectors, fixtures).
    pub fn from_ed25519_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        Self::from_signing(Signing::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed)))
    }

    /// A P-256 key from its 32-byte big-endian scalar (test vectors, fixtures).
    pub fn from_p256_scalar(scalar: &[u8; 32]) -> Result<Self, KeyError> {
        let k = p256::ecdsa::SigningKey::from_slice(scalar).map_err(|e| KeyError::Unreadable(e.to_string()))?;
        Self::from_signing(Signing::P256(k))
    }

    /// Reads a `-----BEGIN PRIVATE KEY-----` PEM (unencrypted PKCS#8).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        if pem.contains("ENCRYPTED PRIVATE KEY") {
            return Err(KeyError::Unreadable(
                "encrypted PKCS#8 keys are not supported; hint: decrypt with `openssl pkcs8 -topk8 -nocrypt`".into(),
            ));
        }
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Self::from_signing(Signing::Ed25519(k));
        }
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Self::from_signing(Signing::P256(k));
        }
        if pem.contains("PUBLIC KEY") {
            return Err(KeyError::NotPrivate);
        }
        Err(KeyError::Unreadable(
            "expected an Ed25519 or P-256 private key in PKCS#8 PEM (\"BEGIN PRIVATE KEY\")".into(),
        ))
    }

    /// The PKCS#8 PEM. The caller writes it with mode 0600.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let pem = match &self.key {
            // PKCS#8 v1 (no embedded public key), as OpenSSL writes it:
            // OpenSSL 3.0 refuses the v2 form for Ed25519.
            Signing::Ed25519(k) => ed25519_dalek::pkcs8::KeypairBytes { secret_key: k.to_bytes(), public_key: None }
                .to_pkcs8_pem(LineEnding::LF),
            Signing::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
        }
        .map_err(|e| KeyError::Encode(e.to_string()))?;
        Ok(pem.to_string())
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn id(&self) -> KeyId {
        self.public.id()
    }

    /// Signs `message`: raw 64 bytes for Ed25519, DER (low S) for P-256.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.key {
            Signing::Ed25519(k) => ed25519_dalek::Signer::sign(k, message).to_bytes().to_vec(),
            Signing::P256(k) => {
                let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(k, message);
                let sig = sig.normalize_s().unwrap_or(sig);
                sig.to_der().as_bytes().to_vec()
            }
        }
    }

    /// Signs `message` with P-256 and returns raw `r || s` (test vectors only).
    pub fn sign_p256_raw(&self, message: &[u8]) -> Option<Vec<u8>> {
        match &self.key {
            Signing::P256(k) => {
                let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(k, message);
                Some(sig.to_bytes().to_vec())
            }
            Signing::Ed25519(_) => None,
        }
    }
}
