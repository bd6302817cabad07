//! `state-version` and `wulf upgrade`, from a state directory in the first release's layout.

use wulf_tests::Wulf;

/// nodes.toml as the first release wrote it: no header, MACs as the admin typed them.
const FIRST_RELEASE_NODES: &str = r#"[profiles.default]
system-overlays = ["hostname"]

[nodes.n1]
profiles = ["default"]

[nodes.n1.network-devices.default]
hwaddr = "52-54-00-AA-BB-01"
ipaddr = "10.0.0.1"
netmask = "255.255.255.0"
"#;

#[test]
fn a_first_release_state_is_upgraded_with_a_backup() {
    let wulf = Wulf::new();
    wulf.write("nodes.toml", FIRST_RELEASE_NODES);
    wulf.write("provision/index.json", "{\"nodes\":{}}");
    let version = wulf.path().join("state-version");

    // An older state still serves and lists; doctor says an upgrade is due.
    assert!(wulf.ok(&["node", "list"]).contains("n1"));
    let doctor = wulf.run(&["doctor"]);
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doctor.contains("state-version 1") && doctor.contains("wulf upgrade"),
        "{doctor}"
    );

    let dry = wulf.ok(&["upgrade", "--dry-run"]);
    assert!(dry.contains("1 -> 2: nodes.toml rewritten"), "{dry}");
    assert!(dry.contains("dry run: would upgrade"), "{dry}");
    assert!(!version.exists());
    assert!(wulf.path().join("provision/index.json").exists());

    let out = wulf.ok(&["upgrade"]);
    assert!(out.contains("from state-version 1 to 2"), "{out}");
    assert_eq!(std::fs::read_to_string(&version).unwrap(), "2\n");
    let nodes = std::fs::read_to_string(wulf.path().join("nodes.toml")).unwrap();
    assert!(nodes.contains("hwaddr = \"52:54:00:aa:bb:01\""), "{nodes}");
    assert!(!wulf.path().join("provision/index.json").exists());
    let backups: Vec<_> = std::fs::read_dir(wulf.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(
        backups[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("state-version-1-")
    );
    assert_eq!(
        std::fs::read_to_string(backups[0].join("nodes.toml")).unwrap(),
        FIRST_RELEASE_NODES
    );
    assert!(backups[0].join("provision/index.json").exists());

    assert!(wulf.ok(&["upgrade"]).contains("nothing to do"));
    wulf.ok(&["overlay", "build"]);
    let doctor = wulf.run(&["doctor"]);
    assert!(!String::from_utf8_lossy(&doctor.stdout).contains("state-version"));
}

#[test]
fn a_new_state_is_stamped_and_a_newer_one_is_refused() {
    let wulf = Wulf::new();
    wulf.ok(&["node", "add", "n1"]);
    let version = wulf.path().join("state-version");
    assert_eq!(std::fs::read_to_string(&version).unwrap(), "2\n");

    std::fs::write(&version, "3\n").unwrap();
    insta::assert_snapshot!(wulf.redact(&wulf.fails(&["node", "list"])), @"error: [STATE] is at state-version 3, written by a newer wulf; this one knows up to 2: run the newer wulf, or restore a backup made before its upgrade");
    std::fs::write(&version, "two\n").unwrap();
    let err = wulf.fails(&["node", "list"]);
    assert!(
        err.contains("state-version") && err.contains("\"two\" is not a number"),
        "{err}"
    );
}
