//! Inventory load + merge of 10,000 nodes with 5 profiles each, and lookup by MAC, against the
//! baseline of parsing the same TOML into a plain table in the same run.
//!
//! Then the floor every command pays on that inventory, through the real binary: `wulf node
//! show` when `nodes.toml` must be parsed and checked, and when its checked copy under
//! `cache/` is current (it then reads only that node's record), and `wulf node list` of one
//! node (which reads every record), against `wulf --version` (process start alone) in the
//! same run.
//!
//! Run with `cargo bench -p wulf-tests --bench inventory`. Targets (issue: inventory): full
//! load and merge under 200 ms, MAC lookup under 1 µs after load; (issue: performance round
//! two) the CLI's floor on 10,000 nodes under 20 ms.

use std::hint::black_box;
use std::time::{Duration, Instant};

use wulf_boot::node_index::Snapshot;
use wulf_core::{HwAddr, Inventory};
use wulf_tests::{Wulf, best_of};

fn inventory_toml(nodes: usize) -> String {
    let mut text = String::new();
    for p in 0..5 {
        text.push_str(&format!(
            "[profiles.p{p}]\nsystem-overlays = [\"o{p}\"]\nkernel = {{ args = [\"a{p}\"] }}\ntags = {{ t{p} = \"v\" }}\n[profiles.p{p}.network-devices.default]\nnetmask = \"255.255.0.0\"\nmtu = {}\n\n",
            1500 + p
        ));
    }
    for n in 0..nodes {
        text.push_str(&format!(
            "[nodes.n{n:05}]\nprofiles = [\"p0\", \"p1\", \"p2\", \"p3\", \"p4\"]\nimage = \"rocky-9\"\n[nodes.n{n:05}.network-devices.default]\nhwaddr = \"02:00:00:{:02x}:{:02x}:{:02x}\"\nipaddr = \"10.{}.{}.{}\"\n[nodes.n{n:05}.ipmi]\nipaddr = \"10.200.{}.{}\"\n\n",
            (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff, 1 + (n >> 16), (n >> 8) & 0xff, n & 0xff, n >> 8, n & 0xff
        ));
    }
    text
}

fn main() {
    let nodes = 10_000;
    let text = inventory_toml(nodes);
    let baseline = best_of(5, || {
        black_box(text.parse::<toml::Table>().unwrap_or_default());
    });
    let parse = best_of(5, || {
        black_box(Inventory::from_toml(&text).unwrap_or_default());
    });
    let inventory = Inventory::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    let load_merge = best_of(5, || {
        let inventory = Inventory::from_toml(&text).unwrap_or_default();
        black_box(Snapshot::build(&inventory, 1));
    });
    let validate = best_of(5, || {
        black_box(wulf_core::validation::validate(&inventory).is_ok());
    });
    let snapshot = Snapshot::build(&inventory, 1);
    assert_eq!(snapshot.nodes.len(), nodes);
    let macs: Vec<HwAddr> = (0..nodes)
        .map(|n| {
            HwAddr::parse(&format!(
                "02:00:00:{:02x}:{:02x}:{:02x}",
                (n >> 16) & 0xff,
                (n >> 8) & 0xff,
                n & 0xff
            ))
            .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let lookups = 1_000_000;
    let started = Instant::now();
    for i in 0..lookups {
        black_box(snapshot.lookup(black_box(&macs[i % nodes])));
    }
    let lookup = started.elapsed() / lookups as u32;

    // The CLI's floor.
    let wulf = Wulf::new();
    wulf.write("nodes.toml", &text);
    let cached = wulf.path().join("cache/inventory.json");
    let show = || {
        let out = wulf.run(&["node", "show", "n05000"]);
        assert!(out.status.success(), "{out:?}");
    };
    let start = best_of(10, || {
        let out = wulf.run(&["--version"]);
        assert!(out.status.success());
    });
    let uncached = best_of(5, || {
        let _ = std::fs::remove_file(&cached);
        show();
    });
    show();
    let floor = best_of(20, show);
    // A command that reads every record (the list is filtered so that printing costs nothing).
    let every = best_of(20, || {
        let out = wulf.run(&["node", "list", "n05000"]);
        assert!(out.status.success(), "{out:?}");
    });

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "inventory: {nodes} nodes x 5 profiles, {} KiB of TOML",
        text.len() / 1024
    );
    println!(
        "  parse into a plain TOML table (baseline) {:>8.1} ms",
        ms(baseline)
    );
    println!(
        "  parse into wulf records                  {:>8.1} ms   ratio {:.2}x baseline",
        ms(parse),
        parse.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "  load + merge + MAC index                 {:>8.1} ms   ratio {:.2}x baseline (target < 200 ms)",
        ms(load_merge),
        load_merge.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "  validate (every write does this)         {:>8.1} ms",
        ms(validate)
    );
    println!(
        "  MAC lookup after load                    {:>8.3} µs (target < 1 µs)",
        lookup.as_secs_f64() * 1e6
    );
    println!("the CLI on this inventory, best wall time:");
    println!(
        "  `wulf --version` (process start)         {:>8.1} ms",
        ms(start)
    );
    println!(
        "  `wulf node show n05000`, parse and check {:>8.1} ms",
        ms(uncached)
    );
    println!(
        "  `wulf node show n05000`, checked copy    {:>8.1} ms   {:.1}x faster (target < 20 ms)",
        ms(floor),
        uncached.as_secs_f64() / floor.as_secs_f64()
    );
    wulf_tests::report(
        "inventory",
        &format!("load + merge + MAC index, {nodes} nodes"),
        &format!("{:.1} ms", ms(load_merge)),
        &format!("{:.1} ms (TOML parse alone)", ms(baseline)),
        &format!("{:.2}x", load_merge.as_secs_f64() / baseline.as_secs_f64()),
        "< 200 ms",
    );
    println!(
        "  `wulf node list n05000`, every record    {:>8.1} ms",
        ms(every)
    );
    wulf_tests::report(
        "inventory",
        &format!("`wulf node list n05000` on {nodes} nodes (reads every record)"),
        &format!("{:.1} ms", ms(every)),
        &format!("{:.1} ms `wulf --version`", ms(start)),
        "",
        "",
    );
    wulf_tests::report(
        "inventory",
        &format!("`wulf node show` on {nodes} nodes (the CLI's floor)"),
        &format!("{:.1} ms", ms(floor)),
        &format!(
            "{:.1} ms uncached; {:.1} ms `wulf --version`",
            ms(uncached),
            ms(start)
        ),
        &format!(
            "{:.1}x faster",
            uncached.as_secs_f64() / floor.as_secs_f64()
        ),
        "< 20 ms",
    );
}
