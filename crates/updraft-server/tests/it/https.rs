//! HTTPS with rustls: a self-signed certificate made with OpenSSL, a client
//! that trusts only it.

use std::sync::Arc;

use crate::env;

#[test]
fn serves_https_with_the_given_certificate() {
    let Ok(out) = std::process::Command::new("openssl").arg("version").output() else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "openssl is missing in CI");
        eprintln!("skipped: openssl is not installed");
        return;
    };
    assert!(out.status.success());
    let mut env = env("sqlite");
    let (cert, key) = (env.dir.path().join("cert.pem"), env.dir.path().join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    env.tls = Some(updraft_server::TlsFiles { cert: cert.clone(), key });
    let server = env.start();
    let pem = std::fs::read(&cert).unwrap();
    let der = ureq::tls::parse_pem(&pem)
        .find_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .unwrap();
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![der]))).build();
    let agent = ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().new_agent();
    let url = format!("https://127.0.0.1:{}/api/v1/releases", server.addr.port());
    let mut r = agent.get(&url).header("Authorization", &format!("Bearer {}", server.admin)).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.body_mut().read_to_string().unwrap(), "[]");
    // Plain HTTP to the TLS port fails; a client that does not trust the certificate fails.
    assert!(crate::agent().get(&format!("http://{}/healthz", server.addr)).call().is_err());
    assert!(crate::agent().get(&format!("https://127.0.0.1:{}/healthz", server.addr.port())).call().is_err());
}
