//! Coverage reports: Cobertura (gcovr, coverage.py) and lcov.

use updraft_pipeline::coverage::parse;

#[test]
fn cobertura_and_lcov_are_read() {
    let gcovr = r#"<?xml version='1.0' encoding='UTF-8'?>
<!DOCTYPE coverage SYSTEM 'http://cobertura.sourceforge.net/xml/coverage-04.dtd'>
<coverage line-rate="0.8125" branch-rate="0.5" lines-covered="13" lines-valid="16" branches-covered="2" branches-valid="4" complexity="0.0" timestamp="1767225600" version="gcovr 7.2">
  <sources><source>.</source></sources>
  <packages><package name="src" line-rate="0.8125"><classes/></package></packages>
</coverage>"#;
    let coverage_py = r#"<?xml version="1.0" ?><coverage version="7.6.1" timestamp="1767225600" line-rate="0.9" branch-rate="0"><sources/><packages/></coverage>"#;
    let lcov = "TN:\nSF:src/crc.c\nFN:3,crc16\nDA:3,1\nDA:5,1\nDA:9,0\nLF:3\nLH:2\nend_of_record\nSF:src/main.c\nLF:5\nLH:5\nend_of_record\n";
    for (text, percent, format) in [(gcovr, 81.25, "cobertura"), (coverage_py, 90.0, "cobertura"), (lcov, 87.5, "lcov")]
    {
        let c = parse(text, "cov").unwrap();
        assert!((c.percent - percent).abs() < 1e-9, "{c:?}");
        assert_eq!(c.format, format);
    }
    for (text, needle) in [
        ("<html/>", "not a Cobertura report"),
        ("<coverage version='1'/>", "neither lines-covered"),
        ("hello", "no LF: lines"),
        ("LF:x\n", "bad lcov line"),
    ] {
        let e = parse(text, "cov.xml").unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("cov.xml"), "{e}");
    }
}
