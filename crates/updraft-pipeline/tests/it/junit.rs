//! JUnit files in the shapes pytest, cargo-nextest and Zephyr's twister write.

use updraft_pipeline::junit::{parse, Outcome};

fn read(name: &str) -> Vec<updraft_pipeline::junit::Case> {
    let path = format!("{}/tests/it/junit/{name}", env!("CARGO_MANIFEST_DIR"));
    parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
}

#[test]
fn the_shapes_of_common_runners_are_read() {
    use Outcome::*;
    // (file, [(id, outcome, retried_flaky)])
    type Expected = &'static [(&'static str, Outcome, bool)];
    let cases: &[(&str, Expected)] = &[
        (
            "pytest.xml",
            &[
                ("tests.test_crc::test_crc_empty", Passed, false),
                ("tests.test_crc::test_crc_vector", Failed, false),
                ("tests.test_radio::test_tx", Skipped, false),
                ("tests.test_boot::test_boot[rev-c]", Error, false),
            ],
        ),
        (
            "nextest.xml",
            &[
                ("fw-core::it::crc::vectors", Passed, false),
                ("fw-core::it::radio::retries", Passed, true),
                ("fw-core::it::boot::slots", Failed, false),
            ],
        ),
        (
            "twister.xml",
            &[
                ("kernel.common::kernel.common.test_bitfield", Passed, false),
                ("kernel.common::kernel.common.test_atomic", Failed, false),
                ("drivers.gpio::drivers.gpio.basic", Skipped, false),
            ],
        ),
    ];
    for (file, expected) in cases {
        let got: Vec<(String, Outcome, bool)> =
            read(file).into_iter().map(|c| (c.id(), c.outcome, c.retried_flaky)).collect();
        let want: Vec<(String, Outcome, bool)> = expected.iter().map(|(i, o, f)| (i.to_string(), *o, *f)).collect();
        assert_eq!(got, want, "{file}");
    }
    let pytest = read("pytest.xml");
    assert_eq!(pytest[1].message, "AssertionError: assert 4660 == 10673");
    assert_eq!(pytest[3].message, "failed on setup with \"fixture 'board' not found\"");
    assert_eq!(pytest[0].suite, "pytest");
}

#[test]
fn what_is_not_junit_is_refused_with_the_reason() {
    for (text, needle) in [
        ("<html><body>oops</body></html>", "not a JUnit report"),
        ("<testsuite><testcase name='a'></testsuite>", "not well-formed"),
        ("", "not a JUnit report"),
    ] {
        let e = parse(text, "r.xml").unwrap_err().to_string();
        assert!(e.contains("r.xml") && e.contains(needle), "{e}");
    }
}
