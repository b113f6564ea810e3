//! The command line's surface, one case per finding of the newcomer's
//! review: key naming, enums validated by clap, server flags only where a
//! server is used, camelCase keys in every `--json`, words for gate limits.

use crate::{key, updraft, workspace};

fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// No key of a JSON output has an underscore (camelCase throughout).
fn assert_camel_case(what: &str, json: &str) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{what}: {e}: {json}"));
    let mut all = Vec::new();
    keys(&v, &mut all);
    let snake: Vec<&String> = all.iter().filter(|k| k.contains('_')).collect();
    assert!(snake.is_empty(), "{what}: snake_case keys {snake:?}");
}

#[test]
fn the_command_line_surface() {
    let dir = workspace();
    let d = dir.path();
    // Public keys are --pubkey; the old spelling is refused with the hint.
    let run = updraft(
        d,
        &[
            "trust",
            "init",
            "--key",
            &key("release-a.pub"),
            "--pubkey",
            &key("release-a.pub"),
            "--threshold",
            "1",
            "--build-pubkey",
            &key("build.pub"),
            "--expires",
            "30d",
            "--sign-with",
            &key("release-a.key"),
            "--out",
            "r.json",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("pass them with --pubkey"), "{}", run.stderr);
    // A root without a build key is refused by clap, naming the flag.
    let run = updraft(
        d,
        &[
            "trust",
            "init",
            "--pubkey",
            &key("release-a.pub"),
            "--threshold",
            "1",
            "--expires",
            "30d",
            "--out",
            "r.json",
        ],
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--build-pubkey"), "{}", run.stderr);
    // Enums are checked before any work, with the allowed values.
    let run = updraft(d, &["token", "create", "x", "--role", "superuser"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("[possible values: viewer, releaser, operator, admin]"), "{}", run.stderr);
    // Server flags only on commands that use a server.
    let run = updraft(d, &["keys", "id", &key("release-a.pub"), "--server", "http://x"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("unexpected argument '--server'"), "{}", run.stderr);
    // camelCase in --json outputs, gate fields included.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/plan-standard.toml");
    std::fs::copy(example, d.join("plan.toml")).unwrap();
    let run = updraft(d, &["rollout", "check", "plan.toml", "--json"]).ok();
    assert_camel_case("rollout check", &run.stdout);
    assert!(run.stdout.contains("\"maxFailureRate\""), "{}", run.stdout);
    let run = updraft(d, &["keys", "id", &key("release-a.pub"), "--json"]).ok();
    assert_camel_case("keys id", &run.stdout);
    // Every --help shows an example.
    for args in [&["devices", "list", "--help"][..], &["bundle", "create", "--help"], &["rollout", "status", "--help"]]
    {
        let run = updraft(d, args).ok();
        assert!(run.stdout.contains("Example"), "{args:?}: {}", run.stdout);
    }
}

#[test]
fn gates_state_their_limit_in_words() {
    let plan = updraft_rollout::Plan::from_toml(
        "[selector]\nfamily = \"x\"\n[[waves]]\npercent = 100\n[[gates]]\nkind = \"crash_rate\"\nmax_ratio = 1.5\n\
         [[gates]]\nkind = \"boot\"\nmax_failure_rate = 0.05\n",
    )
    .unwrap();
    let limits: Vec<String> = plan.gates.iter().map(|g| g.limit()).collect();
    assert_eq!(limits, ["crash rate < 1.5x the baseline", "failure rate < 5%"]);
}
