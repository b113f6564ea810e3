//! The pipeline spec: validation and the stage graph; the build stage and
//! the reproducibility check on real shell builds.

use updraft_pipeline::build::{build, first_build, reproduce, FIRST};
use updraft_pipeline::Spec;

const SPEC: &str = r#"
[project]
name = "sensor-fw"

[[families]]
name = "sensor"
hardware = ["rev-b", "rev-c"]
build = ["sh", "build.sh", "sensor"]
images = { rootfs = "out/sensor.img" }

[[families]]
name = "gateway"
hardware = ["gw-1"]
build = ["sh", "build.sh", "gateway"]
images = { rootfs = "out/gateway.img" }

[[targets]]
name = "host"
kind = "emulator"
command = ["sh", "test.sh", "{family}"]
junit = "out/{family}-{target}.xml"

[[targets]]
name = "lab"
kind = "hil"
families = ["sensor"]
command = ["labgrid-client", "-p", "{family}", "run"]
junit = "out/{family}-lab.xml"

[gates]
coverage = { min_percent = 70, report = "out/{family}-coverage.xml" }

[release]
name = "sensor-fw"
security_version = 3
release_keys = ["keys/a.key"]
build_key = "keys/build.key"
server = "https://updraft.example.com"
channel = "beta"
"#;

#[test]
fn the_stage_graph_is_the_matrix() {
    let spec = Spec::parse(SPEC).unwrap();
    let plan: Vec<(String, Vec<String>)> = spec.plan().into_iter().map(|s| (s.id, s.after)).collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        plan,
        vec![
            ("build:sensor".into(), s(&[])),
            ("reproduce:sensor".into(), s(&["build:sensor"])),
            ("test:sensor:host".into(), s(&["build:sensor"])),
            ("test:sensor:lab".into(), s(&["build:sensor"])),
            ("build:gateway".into(), s(&[])),
            ("reproduce:gateway".into(), s(&["build:gateway"])),
            ("test:gateway:host".into(), s(&["build:gateway"])),
            (
                "gates".into(),
                s(&[
                    "reproduce:sensor",
                    "test:sensor:host",
                    "test:sensor:lab",
                    "reproduce:gateway",
                    "test:gateway:host"
                ])
            ),
            ("bundle:sensor".into(), s(&["gates"])),
            ("bundle:gateway".into(), s(&["gates"])),
            ("publish".into(), s(&["bundle:sensor", "bundle:gateway"])),
        ]
    );
}

#[test]
fn bad_specs_are_refused_with_the_reason() {
    for (from, to, needle) in [
        ("name = \"gateway\"", "name = \"sensor\"", "defined twice"),
        ("families = [\"sensor\"]", "families = [\"radio\"]", "family \"radio\", which is not defined"),
        ("build = [\"sh\", \"build.sh\", \"gateway\"]", "build = []", "empty build command"),
        ("min_percent = 70", "min_percent = 170", "percentage"),
        ("release_keys = [\"keys/a.key\"]", "release_keys = []", "needs at least one signature"),
        ("[project]", "[project]\nbogus = 1", "unknown field `bogus`"),
    ] {
        let text = SPEC.replacen(from, to, 1);
        assert_ne!(text, SPEC, "{from}");
        let e = Spec::parse(&text).unwrap_err().to_string();
        assert!(e.contains(needle), "{e} should say {needle:?}");
    }
}

#[test]
fn a_reproducible_build_passes_and_an_unreproducible_one_names_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/fw.c"), "int main(void) { return 0; }\n").unwrap();
    // sensor: depends only on the sources and SOURCE_DATE_EPOCH; gateway
    // embeds the folder it was built in, as a careless __FILE__ would.
    std::fs::write(
        root.join("build.sh"),
        "set -e\nmkdir -p out\nif [ \"$1\" = sensor ]; then\n  { cat src/fw.c; echo \"$SOURCE_DATE_EPOCH\"; } > out/sensor.img\n\
         else\n  { cat src/fw.c; pwd; } > out/gateway.img\nfi\n",
    )
    .unwrap();
    let spec = Spec::parse(SPEC).unwrap();
    let work = dir.path().join("work");
    for (family, reproducible) in [("sensor", true), ("gateway", false)] {
        let f = spec.families.iter().find(|f| f.name == family).unwrap();
        let first =
            first_build(&root, f, 1_767_225_600, &work, ".updraft", &work.join(format!("{family}.log"))).unwrap();
        assert_eq!(first.images.len(), 1);
        assert!(first.images[0].path.starts_with(work.join("build").join(family).canonicalize().unwrap()));
        let r = reproduce(&root, f, 1_767_225_600, &first, &work, ".updraft", &work.join("again.log")).unwrap();
        assert_eq!(r.reproducible, reproducible, "{family}: {r:?}");
        if !reproducible {
            assert_eq!(r.differ[0].0, "rootfs");
            // pwd is the build folder: the diagnosis says so.
            let causes: Vec<&str> = r.diagnoses[0].findings.iter().map(|f| f.cause.as_str()).collect();
            assert_eq!(causes, ["build-path"], "{:#?}", r.diagnoses);
        }
    }
    // A failing build says why, with the end of its log.
    std::fs::write(root.join("build.sh"), "echo compiling fw.c; echo 'fw.c:1: error: expected ;' >&2; exit 1\n")
        .unwrap();
    let e = build(&root, &spec.families[0], 1, &FIRST, &work.join("fail.log")).unwrap_err().to_string();
    assert!(e.contains("the build of sensor failed") && e.contains("fw.c:1: error: expected ;"), "{e}");
}

#[test]
fn a_labs_reservation_is_read_as_labgrid_and_scripts_print_it() {
    use updraft_pipeline::test::parse_reservation;
    let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    // (printed, environment, place)
    type Case<'a> = (&'a str, Vec<(String, String)>, Option<&'a str>);
    let cases: &[Case] = &[
        ("export LG_TOKEN=ZDNXX2QA\n", env(&[("LG_TOKEN", "ZDNXX2QA")]), None),
        ("export LG_TOKEN=\"a b\"\n+\n", env(&[("LG_TOKEN", "a b")]), Some("+")),
        ("waiting...\nrack-2/board-7\n", env(&[]), Some("rack-2/board-7")),
        ("BOARD_IP=10.0.0.7\nLG_PLACE='p1'\n\np1\n", env(&[("BOARD_IP", "10.0.0.7"), ("LG_PLACE", "p1")]), Some("p1")),
        ("1X=2\n", env(&[]), Some("1X=2")),
        ("", env(&[]), None),
    ];
    for (printed, vars, place) in cases {
        let (got_env, got_place) = parse_reservation(printed);
        assert_eq!(&got_env, vars, "{printed:?}");
        assert_eq!(got_place.as_deref(), *place, "{printed:?}");
    }
    // A lock must say how to reserve, and a lab's retry budget is bounded.
    let hil = "[project]\nname = \"x\"\n[[families]]\nname = \"f\"\nhardware = [\"h\"]\nbuild = [\"true\"]\n\
               images = { rootfs = \"fw\" }\n[[targets]]\nname = \"rack\"\nkind = \"hil\"\ncommand = [\"true\"]\n\
               junit = \"j.xml\"\n";
    for (extra, needle) in [
        ("lock = { acquire = [] }\n", "empty acquire command"),
        ("infra_retries = 11\n", "at most 10"),
        ("lock = { acquire = [\"x\"], bogus = 1 }\n", "unknown field `bogus`"),
    ] {
        let e = Spec::parse(&format!("{hil}{extra}")).unwrap_err().to_string();
        assert!(e.contains(needle), "{e} should say {needle:?}");
    }
    assert!(Spec::parse(&format!(
        "{hil}lock = {{ acquire = [\"reserve\"], release = [\"free\", \"{{place}}\"] }}\ninfra_retries = 2\n"
    ))
    .is_ok());
}
