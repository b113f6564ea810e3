//! The secret scanner: what it finds, what it leaves alone, the allow-list.
//! (Test secrets are assembled at run time so that no scanner flags this file.)

use updraft_pipeline::secrets::{allowed, is_allowed, scan};

#[test]
fn known_shapes_and_high_entropy_assignments_are_found() {
    let aws = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let gh = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
    let pem = format!("-----BEGIN {}PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n", "RSA ");
    let slack = format!("xoxb-{}", "123456789012-abcdefABCDEF");
    let google = format!("AIza{}", "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("const char *k = \"{aws}\";\n"), vec!["AWS access key id"]),
        (format!("token: {gh}\n"), vec!["GitHub token"]),
        (format!("# key\n{pem}"), vec!["private key"]),
        (format!("SLACK={slack}\n"), vec!["Slack token"]),
        (format!("maps = \"{google}\"\n"), vec!["Google API key"]),
        ("wifi_password = \"Zq8#kLp2vN9xR4tW\"\n".into(), vec!["high-entropy secret"]),
        ("API_KEY: 'c2VjcmV0LXRva2VuLWZvci1kZW1v'\n".into(), vec!["high-entropy secret"]),
        // Not secrets: low entropy, too short, prose, a key id inside a longer word.
        ("password = \"aaaaaaaaaaaaaaaaaaaa\"\n".into(), vec![]),
        ("token = abc\n".into(), vec![]),
        ("The token is passed to the next stage.\n".into(), vec![]),
        (format!("X{aws}"), vec![]),
        ("-----BEGIN PUBLIC KEY-----\nMFkwEwYH\n".into(), vec![]),
    ];
    for (text, kinds) in cases {
        let found: Vec<&str> = scan("f", text.as_bytes()).into_iter().map(|f| f.kind).collect();
        assert_eq!(found, kinds, "{text:?}");
    }
    // Inside a binary image, with its position.
    let mut image = vec![0u8; 1000];
    image[500..520].copy_from_slice(aws.as_bytes());
    let f = &scan("out/fw.bin", &image)[0];
    assert_eq!((f.offset, f.kind, f.fingerprint.len()), (500, "AWS access key id", 16));
}

#[test]
fn the_allow_list_accepts_a_fingerprint_everywhere_or_in_one_file() {
    let aws = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let a = scan("src/a.c", aws.as_bytes()).remove(0);
    let b = scan("src/b.c", aws.as_bytes()).remove(0);
    let only_a = allowed(&format!("# documented test key\nsrc/a.c:{}\n", a.fingerprint));
    assert!(is_allowed(&a, &only_a) && !is_allowed(&b, &only_a));
    let everywhere = allowed(&format!("{}  # the AWS docs' example key\n", a.fingerprint));
    assert!(is_allowed(&a, &everywhere) && is_allowed(&b, &everywhere));
}
