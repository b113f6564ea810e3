//! DSSE against the specification's test vectors.

use updraft_bundle::dsse::{self, Envelope};
use updraft_bundle::{PrivateKey, PublicKey};

#[test]
fn pae_matches_the_specification_vector() {
    assert_eq!(
        dsse::pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    );
    // LEN is the byte length of the UTF-8 type, and an empty body ends in a space.
    assert_eq!(dsse::pae("application/vnd.exämple+json", b""), "DSSEv1 29 application/vnd.exämple+json 0 ".as_bytes());
}

/// protocol.md's example: ECDSA P-256, SHA-256, RFC 6979 nonces, raw r||s.
/// X, Y and d are the spec's decimal values written in hex.
#[test]
fn ecdsa_vector_from_the_specification() {
    let d = hex::decode("d73ec437fd6346e3619c5ebfdfff0f6916804955ad32ac9ac492b0ede1f6ffb7").unwrap();
    let key = PrivateKey::from_p256_scalar(&d.try_into().unwrap()).unwrap();
    let envelope = br#"{"payload": "aGVsbG8gd29ybGQ=", "payloadType": "http://example.com/HelloWorld", "signatures": [{"sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="}]}"#;
    let env = Envelope::from_json(envelope, "vector").unwrap();
    assert_eq!(env.payload, b"hello world");
    let pae = dsse::pae(&env.payload_type, &env.payload);
    // The public key is the spec's (X, Y).
    let mut sec1 = vec![4u8];
    sec1.extend(hex::decode("67cd390f77aa359cb08c2235f652270493a9ed832b0abcc01f70954c0390d238").unwrap());
    sec1.extend(hex::decode("0c782bd54e269125a44f4433aff1432ce94e12bca73aa67ac80cea12608ddf74").unwrap());
    let spki = key.public().spki_der();
    assert!(spki.ends_with(&sec1), "the scalar d yields the spec's public key");
    // Deterministic signing reproduces the vector's signature exactly.
    assert_eq!(key.sign_p256_raw(&pae).unwrap(), env.signatures[0].sig);
    assert!(key.public().verify_p256_raw(&pae, &env.signatures[0].sig));
    assert!(!key
        .public()
        .verify_p256_raw(&dsse::pae("http://example.com/Other", b"hello world"), &env.signatures[0].sig));
    // Updraft writes the same signature as DER, and verifies that.
    let der = key.sign(&pae);
    assert!(key.public().verify(&pae, &der));
}

struct Case {
    id: &'static str,
    envelope: &'static str,
    trusted: &'static [char],
    threshold: usize,
    payload_type: &'static str,
    accept: bool,
}

/// Cases from the DSSE project's test vectors (testvectors/vectors.json):
/// keys A and B are RFC 8032's first two Ed25519 test keys.
const CASES: &[Case] = &[
    Case {
        id: "single-signature",
        envelope: r#"{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA==","keyid":"A"}]}"#,
        trusted: &['A'],
        threshold: 1,
        payload_type: "application/vnd.in-toto+json",
        accept: true,
    },
    Case {
        id: "url-safe-base64",
        envelope: r#"{"payload":"-_-_Pj8=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"P-_KHICeR7tI6S_YyejJTRtrXhcQyQ2LYPaL8h90KjC9qN8HU_svOQ6TuDOT1HIrsGW886DbWNWcCmX5twLrAw==","keyid":"A"}]}"#,
        trusted: &['A'],
        threshold: 1,
        payload_type: "application/vnd.in-toto+json",
        accept: true,
    },
    Case {
        id: "payload-type-swapped",
        envelope: r#"{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==","payloadType":"application/vnd.example.other+json","signatures":[{"sig":"2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA==","keyid":"A"}]}"#,
        trusted: &['A'],
        threshold: 1,
        payload_type: "application/vnd.example.other+json",
        accept: false,
    },
    Case {
        id: "non-ascii-payload-type",
        envelope: r#"{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==","payloadType":"application/vnd.exämple+json","signatures":[{"sig":"xmSk/ug66ysT7ayhkCIjhAq42zgZXSsEWuzUaNL7w2eGAdF/NU6/fRXPtmfN+5DNSAs5/i2lUnHjbbjPsu0tAw==","keyid":"A"}]}"#,
        trusted: &['A'],
        threshold: 1,
        payload_type: "application/vnd.exämple+json",
        accept: true,
    },
    Case {
        id: "empty-payload",
        envelope: r#"{"payload":"","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"gSggCAaTLTYyRH6FIDBem6meyIynsYy8RTHVzwx9tnTb7Bg/1jMWnuVgI/gffqmbsC2VX5/jHfkkDqsj7CDbDg==","keyid":"A"}]}"#,
        trusted: &['A'],
        threshold: 1,
        payload_type: "application/vnd.in-toto+json",
        accept: true,
    },
    Case {
        id: "threshold-two-distinct-keys",
        envelope: r#"{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA==","keyid":"A"},{"sig":"c1+67/aT0yqEpwx8PsVY3MLHsj9D0CZ014/Fv/QlG59P+9CobUZ7xECJ/V3USG0Ob9CiE5LjReEZUzNF2l7eBw==","keyid":"B"}]}"#,
        trusted: &['A', 'B'],
        threshold: 2,
        payload_type: "application/vnd.in-toto+json",
        accept: true,
    },
    Case {
        id: "threshold-two-one-key-twice",
        envelope: r#"{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA==","keyid":"A"},{"sig":"2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA==","keyid":"A"}]}"#,
        trusted: &['A', 'B'],
        threshold: 2,
        payload_type: "application/vnd.in-toto+json",
        accept: false,
    },
    Case {
        id: "threshold-two-without-keyids",
        envelope: r#"{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA=="},{"sig":"c1+67/aT0yqEpwx8PsVY3MLHsj9D0CZ014/Fv/QlG59P+9CobUZ7xECJ/V3USG0Ob9CiE5LjReEZUzNF2l7eBw=="}]}"#,
        trusted: &['A', 'B'],
        threshold: 2,
        payload_type: "application/vnd.in-toto+json",
        accept: true,
    },
];

fn vector_key(name: char) -> PublicKey {
    let hex = match name {
        'A' => "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        'B' => "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        _ => unreachable!(),
    };
    PublicKey::from_ed25519_bytes(&hex::decode(hex).unwrap().try_into().unwrap()).unwrap()
}

#[test]
fn dsse_project_vectors() {
    // The verifier supports only the types the case names; a swapped type must
    // fail on the signature, not on the type.
    for case in CASES {
        let env = Envelope::from_json(case.envelope.as_bytes(), case.id).unwrap();
        let keys: Vec<PublicKey> = case.trusted.iter().map(|&c| vector_key(c)).collect();
        let got = dsse::verify_threshold(&env, &keys, case.threshold, case.payload_type, case.id);
        assert_eq!(got.is_ok(), case.accept, "{}: {got:?}", case.id);
    }
}

#[test]
fn seeds_of_the_vector_keys_sign_what_the_vectors_hold() {
    let a = PrivateKey::from_ed25519_seed(
        &hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap().try_into().unwrap(),
    )
    .unwrap();
    assert_eq!(a.public(), &vector_key('A'));
    let mut env =
        Envelope::new("application/vnd.in-toto+json", br#"{"_type":"https://in-toto.io/Statement/v1"}"#.to_vec());
    env.sign(&a);
    assert_eq!(
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &env.signatures[0].sig),
        "2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA=="
    );
}

#[test]
fn strict_mode_refuses_what_threshold_mode_skips() {
    let k = crate::fixture::keys();
    let mut env = Envelope::new("t", b"body".to_vec());
    env.sign(&k.a);
    env.sign(&k.stranger);
    let trusted = [k.a.public().clone()];
    assert!(dsse::verify_threshold(&env, &trusted, 1, "t", "x").is_ok());
    let err = dsse::verify_strict(&env, &trusted, 1, "t", "x", "release").unwrap_err();
    assert_eq!(err.code(), "untrusted-signature");
    // Signing twice with one key adds nothing.
    assert!(!env.sign(&k.a));
    assert_eq!(env.signatures.len(), 2);
    // The canonical form round-trips, and nothing else is canonical.
    let json = env.to_json();
    assert_eq!(Envelope::from_canonical_json(&json, "x").unwrap(), env);
    let spaced = String::from_utf8(json).unwrap().replace(",\"", ", \"");
    assert_eq!(Envelope::from_canonical_json(spaced.as_bytes(), "x").unwrap_err().code(), "malformed-envelope");
}
