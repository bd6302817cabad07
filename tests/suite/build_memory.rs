//! Memory of an overlay build at scale, measured from outside with GNU time's peak RSS, so a
//! build that keeps memory per node cannot come back unnoticed. Not timed: only the peak is
//! asserted.

use wulf_tests::Wulf;

const NODES: usize = 10_000;
/// The bound the performance issue sets for this test (the build held 2.9 GB before).
const LIMIT_KIB: u64 = 512 * 1024;

fn inventory() -> String {
    let mut text = String::from(
        "[profiles.default]\nsystem-overlays = [\"hostname\", \"motd\"]\n\
         [profiles.default.network-devices.default]\nnetmask = \"255.255.0.0\"\n\n",
    );
    for n in 0..NODES {
        let (hi, lo) = (n >> 8, n & 0xff);
        text.push_str(&format!(
            "[nodes.n{n:05}]\nprofiles = [\"default\"]\n[nodes.n{n:05}.network-devices.default]\n\
             hwaddr = \"02:00:00:00:{hi:02x}:{lo:02x}\"\nipaddr = \"10.0.{hi}.{lo}\"\n\n"
        ));
    }
    text
}

#[test]
fn a_ten_thousand_node_build_stays_within_512_mib() {
    let wulf = Wulf::new();
    wulf.write("nodes.toml", &inventory());
    wulf.ok(&["overlay", "create", "motd"]);
    wulf.write("overlays/motd/etc/motd.ww", "{{ node.id }}\n");
    let (out, peak) = wulf.ok_with_peak_rss(&["overlay", "build", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["built"].as_array().map(Vec::len), Some(NODES));
    eprintln!(
        "overlay build of {NODES} nodes: peak RSS {} MiB",
        peak / 1024
    );
    assert!(
        peak < LIMIT_KIB,
        "the build of {NODES} nodes peaked at {} MiB (limit {} MiB)",
        peak / 1024,
        LIMIT_KIB / 1024
    );
}
