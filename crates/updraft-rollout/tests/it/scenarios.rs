//! Every `scenarios/*.toml` fixture runs and its log is compared with
//! `scenarios/*.snap` (`UPDATE_EXPECT=1 cargo test` to refresh). Each
//! scenario runs twice to check that the run is deterministic.

use crate::harness::{run, Fixture};

#[test]
fn scenarios() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "toml").then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    assert!(names.len() >= 8, "scenarios: {names:?}");
    for name in names {
        let text = std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap();
        let fixture: Fixture = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let log = run(&fixture);
        assert_eq!(log, run(&fixture), "{name}: two runs differ");
        assert!(!log.contains("VIOLATION"), "{name}:\n{log}");
        expect_test::expect_file![format!("scenarios/{name}.snap")].assert_eq(&log);
    }
}
