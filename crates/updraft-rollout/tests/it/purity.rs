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
    // Every source file, in submodules too (engine/*.rs).
    let mut stack = vec![src];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for word in forbidden {
                assert!(!text.contains(word), "{} uses {word}", path.display());
            }
        }
    }
    assert!(files >= 10, "only {files} source files found");
}
