//! The core must stay sans-IO: no clock, no randomness, no IO, no hasher
//! seeded at random. This test fails if one sneaks into the source.

#[test]
fn the_core_reads_no_clock_draws_no_randomness_and_does_no_io() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let forbidden = [
        "SystemTime",
        "Instant::now",
        "rand::",
        "OsRng",
        "getrandom",
        "std::fs",
        "std::net",
        "std::thread",
        "RandomState",
        "HashMap::new(",
        "HashSet",
        "println!",
        "eprintln!",
    ];
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for word in forbidden {
            assert!(!text.contains(word), "{} uses {word}", path.display());
        }
    }
}
