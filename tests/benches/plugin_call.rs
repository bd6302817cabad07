//! Plugin runtime costs, each against its baseline in the same run:
//! - a warm overlay-generator call through the runtime (fresh store, instantiate from the
//!   pre-linked component, call, validate) vs the same plugin logic called natively;
//! - loading a plugin from the on-disk compile cache vs compiling it cold;
//! - per-call cost of Rust, Python (componentize-py) and JavaScript (componentize-js) overlay
//!   generators, each made by `wulf plugin new`: a fresh instance per call against the warm
//!   instances a build reuses (the difference is what instantiation costs).
//!
//! Run with `cargo bench -p wulf-tests --bench plugin_call`. Targets (SPEC §4): under 50 µs of
//! host overhead per warm call, under 1 ms to instantiate from the cache; a Python generator
//! under 1 ms per node in a build.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wulf_core::node::NetDevice;
use wulf_core::{Config, Node, OverlayGenerator, Server, StateDir};
use wulf_plugin::{Manifest, Origin, PluginPackage, Runtime, WasmOverlayGenerator};
use wulf_sdk::OverlayGenerator as _;

fn per_call(iterations: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        f();
    }
    started.elapsed() / iterations
}

/// Time per `generate` call of `generator` for `node`.
fn per_generate(
    iterations: u32,
    generator: &dyn OverlayGenerator,
    node: &Node,
    server: &Server,
) -> Duration {
    per_call(iterations, || {
        black_box(
            generator
                .generate(black_box(node), server)
                .unwrap_or_else(|e| panic!("{e}")),
        );
    })
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let workspace = wulf_tests::workspace();
    let manifest = Manifest::load(&workspace.join("plugins/hostname/plugin.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let wasm = std::fs::read(wulf_tests::fixture_wasm("wulf-plugin-hostname"))
        .unwrap_or_else(|e| panic!("{e}"));
    let package = PluginPackage {
        manifest,
        wasm: wasm.into(),
        embedded: false,
    };
    let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = Config::parse("", Path::new("wulf.toml"), &StateDir::new(state.path()))
        .unwrap_or_else(|e| panic!("{e}"));
    let cache = state.path().join("cache");

    // Cold compile, then loads from the cache (fresh runtimes, as after a restart).
    let cold_started = Instant::now();
    let runtime = Runtime::new(&cache).unwrap_or_else(|e| panic!("{e}"));
    let plugin = runtime
        .load(&package, &config.plugins)
        .unwrap_or_else(|e| panic!("{e}"));
    let cold = cold_started.elapsed();
    assert_eq!(plugin.origin, Origin::Compiled);
    let runtime = Runtime::new(&cache).unwrap_or_else(|e| panic!("{e}"));
    let cached = per_call(50, || {
        let loaded = runtime
            .load(&package, &config.plugins)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.origin, Origin::Cache);
        black_box(loaded);
    });

    // First call on a plugin just loaded from the cache: load + instantiate + call.
    let server = Server {
        hostname: "head".into(),
        port: 9873,
        ..Server::default()
    };
    let mut node = Node::new("n0001");
    node.profiles = vec!["default".into()];
    node.network_devices.insert(
        "default".into(),
        NetDevice {
            hwaddr: "aa:bb:cc:dd:ee:01".parse().ok(),
            ipaddr: "10.0.0.1".parse().ok(),
            ..NetDevice::default()
        },
    );
    let first_call = per_call(50, || {
        let loaded = runtime
            .load(&package, &config.plugins)
            .unwrap_or_else(|e| panic!("{e}"));
        let generator = WasmOverlayGenerator::new(Arc::new(loaded))
            .unwrap_or_else(|| panic!("not a generator"));
        black_box(
            generator
                .generate(&node, &server)
                .unwrap_or_else(|e| panic!("{e}")),
        );
    });

    // Warm calls through the runtime vs the same logic natively.
    let generator =
        WasmOverlayGenerator::new(Arc::new(plugin)).unwrap_or_else(|| panic!("not a generator"));
    let wasm_call = per_generate(20_000, &generator, &node, &server);
    wulf_sdk::testing::set_config(serde_json::json!({}));
    let sdk_node = wulf_sdk::Node::new("n0001");
    let sdk_server = wulf_sdk::Server::new("head", 9873);
    let native_call = per_call(200_000, || {
        black_box(
            wulf_plugin_hostname::Hostname::generate(black_box(&sdk_node), &sdk_server)
                .unwrap_or_default(),
        );
    });

    println!(
        "plugin runtime (hostname overlay generator, {} KiB component)",
        package.wasm.len() / 1024
    );
    println!(
        "  warm call via runtime   {:>9.2} µs   native {:>7.3} µs   ratio {:>6.0}x   host overhead {:>7.2} µs (target < 50 µs)",
        micros(wasm_call),
        micros(native_call),
        wasm_call.as_secs_f64() / native_call.as_secs_f64(),
        micros(wasm_call.saturating_sub(native_call))
    );
    println!(
        "  load from disk cache    {:>9.3} ms   cold compile {:>8.1} ms   ratio {:>6.0}x faster (target < 1 ms)",
        millis(cached),
        millis(cold),
        cold.as_secs_f64() / cached.as_secs_f64()
    );
    println!(
        "  load from cache + first instantiate + call {:>7.3} ms",
        millis(first_call)
    );

    // Fresh instance per call against a build's warm instances, per language.
    let pooled = generator
        .for_build()
        .unwrap_or_else(|| panic!("a wasm generator pools per build"));
    let rust_pooled = per_generate(20_000, &*pooled, &node, &server);
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut rows = vec![(
        "Rust (hostname)".to_owned(),
        package.wasm.len(),
        wasm_call,
        rust_pooled,
    )];
    for (lang, name) in [("python", "motd-py"), ("js", "motd-js")] {
        let project = wulf_tests::polyglot::new_project(scratch.path(), name, &["--lang", lang]);
        match lang {
            "python" => wulf_tests::polyglot::build_python(&project),
            _ => wulf_tests::polyglot::build_js(&project),
        }
        let package = PluginPackage {
            manifest: Manifest::load(&project.join("plugin.toml"))
                .unwrap_or_else(|e| panic!("{e}")),
            wasm: std::fs::read(project.join("plugin.wasm"))
                .unwrap_or_else(|e| panic!("{e}"))
                .into(),
            embedded: false,
        };
        let loaded = runtime
            .load(&package, &config.plugins)
            .unwrap_or_else(|e| panic!("{e}"));
        let generator = WasmOverlayGenerator::new(Arc::new(loaded))
            .unwrap_or_else(|| panic!("not a generator"));
        let fresh = per_generate(300, &generator, &node, &server);
        let pooled = generator
            .for_build()
            .unwrap_or_else(|| panic!("a wasm generator pools per build"));
        let warm = per_generate(3_000, &*pooled, &node, &server);
        let label = if lang == "python" {
            "Python (componentize-py)"
        } else {
            "JavaScript (componentize-js)"
        };
        rows.push((label.to_owned(), package.wasm.len(), fresh, warm));
    }
    println!();
    println!(
        "  {:<30} {:>9} {:>14} {:>14} {:>16} {:>8}",
        "per call, one thread", "size MiB", "fresh µs", "build µs", "instantiate µs", "ratio"
    );
    wulf_tests::report(
        "plugin_call",
        "warm plugin call through the runtime (Rust hostname generator)",
        &format!("{:.2} µs", micros(wasm_call)),
        &format!("{:.3} µs native", micros(native_call)),
        &format!(
            "{:.2} µs host overhead",
            micros(wasm_call.saturating_sub(native_call))
        ),
        "< 50 µs overhead",
    );
    wulf_tests::report(
        "plugin_call",
        "plugin load from the disk cache",
        &format!("{:.3} ms", millis(cached)),
        &format!("{:.1} ms cold compile", millis(cold)),
        &format!("{:.0}x faster", cold.as_secs_f64() / cached.as_secs_f64()),
        "< 1 ms",
    );
    for (label, size, fresh, warm) in rows {
        wulf_tests::report(
            "plugin_call",
            &format!("{label} generator call in a build (warm instance)"),
            &format!("{:.1} µs", micros(warm)),
            &format!("{:.1} µs with a fresh instance per call", micros(fresh)),
            &format!("{:.1}x faster", fresh.as_secs_f64() / warm.as_secs_f64()),
            if label.starts_with("Python") {
                "< 1,000 µs"
            } else {
                ""
            },
        );
        println!(
            "  {:<30} {:>9.1} {:>14.1} {:>14.1} {:>16.1} {:>7.1}x",
            label,
            size as f64 / f64::from(1 << 20),
            micros(fresh),
            micros(warm),
            micros(fresh.saturating_sub(warm)),
            fresh.as_secs_f64() / warm.as_secs_f64()
        );
    }
    println!(
        "  (fresh: a new instance per call; build: a build's warm instances; target: Python under 1,000 µs per node in a build)"
    );
}
