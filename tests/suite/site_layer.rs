//! The application layer as the front ends see it: one plugin engine for the life of
//! `wulf serve` however many rebuilds it runs, hand-edited inventories refused with the node
//! and field named while the last good one stays in service, and backend records checked one
//! by one.

use std::time::{Duration, Instant};

use wulf_tests::{Wulf, fixture_wasm, metric};

use crate::serve_files::{curl, overlay_text as overlay};

const MAC: &str = "aa:bb:cc:dd:ee:01";

/// A page's body as text; it must be served (200).
fn text(url: &str) -> String {
    let (code, _, body) = curl(&[url]);
    assert_eq!(code, 200, "{url}: {}", String::from_utf8_lossy(&body));
    String::from_utf8_lossy(&body).into_owned()
}

fn wait_until(what: &str, mut done: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = done() {
            return found;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn twenty_rebuilds_in_a_running_server_use_one_engine() {
    let wulf = Wulf::new();
    wulf.ok(&["overlay", "create", "motd"]);
    wulf.write("overlays/motd/etc/motd.ww", "{{ node.comment }}\n");
    wulf.ok(&[
        "profile",
        "set",
        "default",
        "--system-overlays",
        "wwinit,hostname,hosts,network,motd",
    ]);
    wulf.ok(&["node", "add", "n1", "--hwaddr", MAC, "--comment", "edit-0"]);
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let url = format!("http://{}/system/{MAC}", served.http);
    let metrics_url = format!("http://{}/metrics", served.http);
    assert!(overlay(&url).contains("edit-0"));
    let plugins: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["plugin", "list", "--json"])).unwrap();
    let enabled = plugins
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["enabled"] == true)
        .count() as u64;

    for edit in 1..=20 {
        let comment = format!("edit-{edit}");
        wulf.ok(&["node", "set", "n1", "--comment", &comment]);
        wait_until(&format!("the overlay shows {comment}"), || {
            overlay(&url).contains(&comment).then(String::new)
        });
    }
    let metrics = text(&metrics_url);
    assert_eq!(
        metric(&metrics, "wulf_plugin_engines_created_total"),
        1,
        "{metrics}"
    );
    let loads = metric(&metrics, "wulf_plugin_component_loads_total");
    assert!(
        loads <= enabled,
        "no plugin is loaded twice while nothing about plugins changed ({enabled} enabled):\n{metrics}"
    );
    assert!(
        metric(&metrics, "wulf_overlay_builds_total") >= 20,
        "{metrics}"
    );
    assert!(
        metrics.contains("wulf_plugin_calls_total{plugin=\"hostname\",outcome=\"ok\"}"),
        "{metrics}"
    );

    // An edited wulf.toml loads the plugins again, on the same engine.
    wulf.write("wulf.toml", "[plugins.limits]\ntimeout-ms = 4000\n");
    wulf.ok(&["node", "set", "n1", "--comment", "after-config"]);
    wait_until("the overlay follows the config edit", || {
        overlay(&url).contains("after-config").then(String::new)
    });
    let metrics = text(&metrics_url);
    assert_eq!(metric(&metrics, "wulf_plugin_engines_created_total"), 1);
    assert!(
        metric(&metrics, "wulf_plugin_component_loads_total") > loads,
        "{metrics}"
    );
}

#[test]
fn a_broken_hand_edit_is_refused_by_name_and_the_last_good_inventory_served() {
    let wulf = Wulf::new();
    wulf.ok(&["node", "add", "n1", "--hwaddr", MAC]);
    wulf.ok(&["node", "add", "n2", "--hwaddr", "aa:bb:cc:dd:ee:02"]);
    let good = std::fs::read_to_string(wulf.path().join("nodes.toml")).unwrap();
    let log = wulf.path().join("serve.log");
    let served = wulf.serve_logged(&["--http-addr", "127.0.0.1:0", "--no-tftp"], &log);
    let script = |mac: &str| text(&format!("http://{}/ipxe/{mac}", served.http));
    assert!(script("aa:bb:cc:dd:ee:02").contains("echo wulf: n2"));

    // A third node gets an address that is no address: refused as the file is read.
    let bad_ip = format!(
        "{good}\n[nodes.n3.network-devices.default]\nhwaddr = \"aa:bb:cc:dd:ee:03\"\nipaddr = \"10.0.0.300\"\n"
    );
    wulf.write("nodes.toml", &bad_ip);
    let err = wulf.fails(&["node", "list"]);
    assert!(
        err.contains("nodes.toml")
            && err.contains(
                "node `n3`: `network-devices.default.ipaddr` = \"10.0.0.300\": not an IPv4 address"
            ),
        "{err}"
    );
    // n2 takes n1's MAC: refused as the file is checked.
    let broken = good.replace("aa:bb:cc:dd:ee:02", MAC);
    wulf.write("nodes.toml", &broken);
    let err = wulf.fails(&["node", "list"]);
    assert!(
        err.contains("nodes.toml")
            && err.contains("node `n2`: `network-devices.default.hwaddr` = \"aa:bb:cc:dd:ee:01\": node `n1` has this address too"),
        "{err}"
    );
    let logged = wait_until("the server logs the refused inventory", || {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        log.contains("inventory reload failed").then_some(log)
    });
    assert!(
        logged.contains("node `n2`: `network-devices.default.hwaddr`"),
        "{logged}"
    );
    assert!(
        !logged.contains("\u{1b}["),
        "a log file gets no colour codes:\n{logged}"
    );
    // Still the last good inventory: n2 keeps its own MAC, n3 is not known.
    assert!(script("aa:bb:cc:dd:ee:02").contains("echo wulf: n2"));
    assert!(script(MAC).contains("echo wulf: n1"));
    assert!(script("aa:bb:cc:dd:ee:03").contains("not a known node"));

    // An edit through wulf repairs the file; the server follows.
    wulf.write("nodes.toml", &good);
    wulf.ok(&["node", "set", "n2", "--comment", "repaired"]);
    wulf.ok(&["node", "add", "n3", "--hwaddr", "aa:bb:cc:dd:ee:03"]);
    wait_until("the server loads the repaired inventory", || {
        script("aa:bb:cc:dd:ee:03")
            .contains("echo wulf: n3")
            .then(String::new)
    });
    // A file that is not TOML at all is refused the same way.
    wulf.write("nodes.toml", "[nodes.n1\n");
    let err = wulf.fails(&["node", "list"]);
    assert!(err.contains("nodes.toml is not a valid inventory"), "{err}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(script("aa:bb:cc:dd:ee:03").contains("echo wulf: n3"));
}

#[test]
fn backend_records_with_bad_addresses_are_refused_one_by_one() {
    let wulf = Wulf::new();
    wulf.write(
        "wulf.toml",
        "[plugins]\nbackends = [\"echo\"]\n\n[plugin.echo.config]\nnodes = [\
         { id = \"b1\", hwaddr = \"02:00:00:00:00:01\" }, \
         { id = \"b2\", hwaddr = \"not-a-mac\" }, \
         { id = \"b3\", hwaddr = \"aa:bb:cc:dd:ee:01\" }]\n",
    );
    wulf.ok(&[
        "plugin",
        "install",
        &fixture_wasm("wulf-fixture-echo-backend")
            .display()
            .to_string(),
        "--name",
        "echo",
    ]);
    wulf.ok(&["node", "add", "n1", "--hwaddr", MAC]);
    let out = wulf.run(&["node", "list", "--json"]);
    assert!(out.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&String> = listed.as_object().unwrap().keys().collect();
    assert_eq!(ids, ["b1", "n1"]);
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.contains("record=b2")
            && warnings.contains("`network-devices.default.hwaddr` = \"not-a-mac\"")
            && warnings.contains("record=b3")
            && warnings.contains("belongs to node `n1`"),
        "{warnings}"
    );

    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let script = |mac: &str| text(&format!("http://{}/ipxe/{mac}", served.http));
    assert!(script("02:00:00:00:00:01").contains("echo wulf: b1"));
    assert!(script(MAC).contains("echo wulf: n1"));
}
