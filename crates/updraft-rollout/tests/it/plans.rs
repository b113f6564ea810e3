//! Plans used by the scenarios, read from `plans/NAME.toml`.

use updraft_rollout::Plan;

pub fn plan(name: &str) -> Plan {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/plans").join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Plan::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn plan_errors_say_what_is_wrong() {
    let cases = [
        ("waves = []\n[selector]\nfamily = \"x\"", "a plan has 1 to 32 waves"),
        ("[selector]\nfamily = \"x\"\n[[waves]]\npercent = 50\n[[waves]]\npercent = 10", "waves are cumulative"),
        ("[selector]\nfamily = \"x\"\n[[waves]]\npercent = 150", "must be above 0 and at most 100"),
        ("[selector]\nfamily = \"x\"\n[[waves]]\npercent = 10\ncount = 5", "exactly one of percent or count"),
        (
            "[selector]\nfamily = \"x\"\n[[waves]]\npercent = 10\n[[gates]]\nkind = \"install\"\nmax_failure_rate = 2",
            "between 0 and 1 (0.02 is 2%)",
        ),
        (
            "[selector]\nfamily = \"x\"\n[[waves]]\npercent = 10\n[[gates]]\nkind = \"boot\"\nmax_failure_rate = 0.1\nconfidence = 1.5",
            "confidence 1.5 must be between 0.5 and 1",
        ),
        ("[selector]\nfamily = \"x\"\n[[waves]]\npercent = 10\nsoak = \"soon\"", "duration"),
        ("[selector]\nfamily = \"x\"\n[[waves]]\npercent = 10\n[window]\nstart = \"25:00\"\nend = \"02:00\"", "not a time of day"),
        ("[selector]\nfamily = \"x\"\n[[waves]]\npercent = 10\nspeed = 3", "unknown field `speed`"),
    ];
    for (text, needle) in cases {
        let err = Plan::from_toml(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    }
}

#[test]
fn the_documented_examples_parse() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&docs).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("plan") {
            Plan::from_toml(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 1, "no example plans in docs/examples");
}
