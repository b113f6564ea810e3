//! OSV matching on the example project's SBOM and records.

use std::path::Path;

use updraft_pipeline::vulns::{compare, components, scan};

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/firmware")
}

#[test]
fn versions_inside_the_ranges_match_and_others_do_not() {
    let sbom = std::fs::read_to_string(example().join("sbom.cdx.json")).unwrap();
    // (lwip version, mbedtls version) -> ids found
    let cases: &[(&str, &str, &[&str])] = &[
        ("2.2.0", "v3.6.2", &[]),
        ("2.1.2", "v3.6.2", &["EXAMPLE-2025-0001"]),
        ("2.1.3", "v3.6.1", &["EXAMPLE-2025-0002"]),
        ("1.4.1", "v3.0.0", &["EXAMPLE-2025-0001", "EXAMPLE-2025-0002"]),
        ("2.2.0", "v2.28.0", &[]),
    ];
    for (lwip, mbed, ids) in cases {
        let text = sbom
            .replace("\"version\": \"2.2.0\"", &format!("\"version\": \"{lwip}\""))
            .replace("\"version\": \"3.6.2\"", &format!("\"version\": \"{}\"", mbed.trim_start_matches('v')));
        let comps = components(&text, "sbom.cdx.json").unwrap();
        let found: Vec<String> = scan(&comps, &example().join("osv")).unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(found, *ids, "lwip {lwip}, mbedtls {mbed}");
    }
    let comps = components(&sbom.replace("\"version\": \"2.2.0\"", "\"version\": \"2.0.0\""), "s").unwrap();
    let m = &scan(&comps, &example().join("osv")).unwrap()[0];
    assert_eq!((m.severity.as_str(), m.component.as_str()), ("high", "lwip"));
}

#[test]
fn dotted_versions_compare_as_numbers() {
    use std::cmp::Ordering::*;
    for (a, b, o) in
        [("1.10", "1.9", Greater), ("2.1.3", "2.1.3", Equal), ("v3.6", "3.6.0", Equal), ("1.0", "1.0.1", Less)]
    {
        assert_eq!(compare(a, b), o, "{a} vs {b}");
    }
    assert!(components("{}", "x.json").unwrap_err().to_string().contains("not a CycloneDX SBOM"));
}
