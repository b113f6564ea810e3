//! The device's parsers on arbitrary bytes, as `cargo fuzz run parsers`
//! (fuzz/ at the workspace root) feeds them, with a fixed seed: random
//! bytes, and mutations (flipped, cut, duplicated bytes) of valid journals,
//! boot variables and check-in answers. None may panic; the valid seeds
//! must parse.

use updraft_agent::parse;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    r#"{"seq":3,"installed":{"release":"fw@1.0.0","securityVersion":1,"slot":"A"},"phase":{"state":"armed","update":{"assignment":{"release":"fw@2.0.0","url":"/a","bundleSha256":"0707070707070707070707070707070707070707070707070707070707070707","bundleSize":10},"target":"B","from":"A"},"header":{"release":"fw@2.0.0","family":"sensor","hardware":["rev-a"],"securityVersion":1,"requires":[],"imageSize":100,"imageSha256":"0909090909090909090909090909090909090909090909090909090909090909"},"reboots":1},"unreported":[{"release":"fw@2.0.0","kind":"trial_boot","detail":""}],"refused":[]}"#,
    r#"{"seq":1,"installed":{"release":null,"securityVersion":0,"slot":"B"},"phase":{"state":"idle"},"unreported":[],"refused":[]}"#,
    "UPDRAFT_PRIMARY=B\nUPDRAFT_A_TRIES=0\nUPDRAFT_B_TRIES=3\nUPDRAFT_A_GOOD=1\nUPDRAFT_B_GOOD=0\nUPDRAFT_TRIAL=1\nUPDRAFT_REVERTED=\n",
    r#"{"assignment":{"release":"fw@2.0.0","rollout":"r1","reason":"rollout","bundleUrl":"/api/v1/artifacts/x","sha256":"0707070707070707070707070707070707070707070707070707070707070707","size":10},"reason":null,"nextCheckInS":300}"#,
    r#"{"assignment":null,"reason":"not_in_wave","nextCheckInS":300}"#,
];

fn feed(bytes: &[u8]) {
    let _ = parse::boot_vars(bytes);
    let _ = parse::check_in_answer(bytes);
    if let Ok(j) = parse::journal(bytes) {
        parse::start_core(j);
    }
}

#[test]
fn the_seeds_parse() {
    assert!(parse::journal(SEEDS[0].as_bytes()).is_ok(), "{:?}", parse::journal(SEEDS[0].as_bytes()).err());
    assert!(parse::journal(SEEDS[1].as_bytes()).is_ok());
    assert!(parse::boot_vars(SEEDS[2].as_bytes()).unwrap().is_some());
    assert!(
        parse::check_in_answer(SEEDS[3].as_bytes()).is_ok(),
        "{:?}",
        parse::check_in_answer(SEEDS[3].as_bytes()).err()
    );
    assert!(parse::check_in_answer(SEEDS[4].as_bytes()).is_ok());
}

#[test]
fn arbitrary_bytes_never_panic_the_parsers() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..20_000 {
        let mut bytes: Vec<u8> = if round % 4 == 0 {
            (0..rng.below(300)).map(|_| rng.next() as u8).collect()
        } else {
            SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec()
        };
        for _ in 0..1 + rng.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes.truncate(at),
                2 => {
                    let b = bytes[at];
                    bytes.insert(at, b)
                }
                _ => {
                    const ALPHABET: &[u8] = b"{}[]\":,0123456789abAB-=\n";
                    bytes[at] = ALPHABET[rng.below(ALPHABET.len())]
                }
            }
        }
        feed(&bytes);
    }
}
