//! `updraft demo`: the README's first command, end to end.

use crate::updraft;

#[test]
fn the_demo_rolls_a_good_release_out_and_a_bad_one_back() {
    let dir = tempfile::tempdir().unwrap();
    let r = updraft(dir.path(), &["demo", "--image-mib", "1", "--devices", "40", "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["passed"], true, "{v:#}");
    let f = &v["fleet"];
    assert_eq!(f["goodState"], "completed");
    assert_eq!(f["goodCommitted"], 40);
    assert_eq!(f["badState"], "rolled_back");
    assert!(f["badReason"].as_str().unwrap().contains("rev-c"), "{f}");
    assert_eq!(f["onGoodAtEnd"], 40, "every device runs the good release at the end");
    assert!(f["badReverted"].as_u64().unwrap() > 0);

    let r = updraft(dir.path(), &["demo", "--devices", "3"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--devices must be at least 40"), "{}", r.stderr);
}
