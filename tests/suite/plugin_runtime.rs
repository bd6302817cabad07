//! The plugin runtime against real components: hostile guests fail alone, with errors that
//! name the plugin and the cause, and the next call to a good plugin succeeds.

use std::path::Path;
use std::sync::Arc;

use wulf_core::extension::{EntryAction, EntryKind, ImageEntry, Limit};
use wulf_core::{
    Config, ExtensionError, FileContent, ImageTransform, InventoryBackend, Node, OverlayGenerator,
    Server, StateDir,
};
use wulf_plugin::{
    LoadError, LoadedPlugin, Manifest, Origin, PluginPackage, Runtime, WasmImageTransform,
    WasmInventoryBackend, WasmOverlayGenerator,
};
use wulf_tests::{fixture_dir, fixture_wasm, workspace};

struct Host {
    state: tempfile::TempDir,
    runtime: Runtime,
}

impl Host {
    fn new() -> Host {
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let runtime = Runtime::new(state.path().join("cache")).unwrap_or_else(|e| panic!("{e}"));
        Host { state, runtime }
    }

    fn config(&self, text: &str) -> Config {
        let state = StateDir::new(self.state.path());
        Config::parse(text, Path::new("wulf.toml"), &state).unwrap_or_else(|e| panic!("{e}"))
    }

    fn load(&self, name: &str, config: &str) -> Result<Arc<LoadedPlugin>, LoadError> {
        self.runtime
            .load(&package(name), &self.config(config).plugins)
            .map(Arc::new)
    }

    fn generator(&self, name: &str, config: &str) -> WasmOverlayGenerator {
        let plugin = self.load(name, config).unwrap_or_else(|e| panic!("{e}"));
        WasmOverlayGenerator::new(plugin).unwrap_or_else(|| panic!("{name} is not a generator"))
    }
}

fn package(name: &str) -> PluginPackage {
    let (dir, crate_name) = if name == "hostname" {
        (
            workspace().join("plugins/hostname"),
            "wulf-plugin-hostname".to_string(),
        )
    } else {
        (fixture_dir(name), format!("wulf-fixture-{name}"))
    };
    let manifest = Manifest::load(&dir.join("plugin.toml")).unwrap_or_else(|e| panic!("{e}"));
    let wasm =
        std::fs::read(fixture_wasm(&crate_name)).unwrap_or_else(|e| panic!("{crate_name}: {e}"));
    PluginPackage {
        manifest,
        wasm: wasm.into(),
        embedded: false,
    }
}

fn server() -> Server {
    Server {
        hostname: "head".into(),
        port: 9873,
        ..Server::default()
    }
}

/// The good plugin still works: a failure elsewhere poisoned nothing.
fn assert_good_plugin_works(host: &Host) {
    let files = host
        .generator("hostname", "")
        .generate(&Node::new("n7"), &server())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files[0].content, FileContent::Regular(b"n7\n".to_vec()));
}

fn generate_error(host: &Host, name: &str, config: &str) -> ExtensionError {
    let generator = host.generator(name, config);
    let error = generator
        .generate(&Node::new("n1"), &server())
        .err()
        .unwrap_or_else(|| panic!("{name} succeeded"));
    // A second call fails the same way: each call gets a fresh store.
    let again = generator.generate(&Node::new("n1"), &server()).err();
    assert_eq!(again.as_ref().map(ExtensionError::plugin), Some(name));
    assert_good_plugin_works(host);
    error
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline() {
    let host = Host::new();
    let started = std::time::Instant::now();
    let error = generate_error(
        &host,
        "looping",
        "[plugin.looping]\nlimits = { timeout-ms = 300 }\n",
    );
    assert_eq!(
        error,
        ExtensionError::Limit {
            plugin: "looping".into(),
            limit: Limit::Time { millis: 300 }
        }
    );
    assert_eq!(
        error.to_string(),
        "plugin `looping` was stopped: it exceeded its time limit of 300 ms"
    );
    // Two calls of 300 ms each; the bound only catches a deadline that never fires.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the loop was not stopped"
    );
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let host = Host::new();
    let error = generate_error(
        &host,
        "membomb",
        "[plugin.membomb]\nlimits = { memory-mib = 32 }\n",
    );
    assert_eq!(
        error,
        ExtensionError::Limit {
            plugin: "membomb".into(),
            limit: Limit::Memory { bytes: 32 << 20 }
        }
    );
    assert_eq!(
        error.to_string(),
        "plugin `membomb` was stopped: it exceeded its memory limit of 32 MiB"
    );
}

#[test]
fn a_panic_is_reported_with_its_message() {
    let host = Host::new();
    let error = generate_error(&host, "panicking", "");
    let ExtensionError::Trap { plugin, message } = &error else {
        panic!("not a trap: {error:?}")
    };
    assert_eq!(plugin, "panicking");
    assert!(
        message.contains("fixture panicked on purpose for n1"),
        "{message}"
    );
}

#[test]
fn escaping_paths_are_refused() {
    let host = Host::new();
    let error = generate_error(&host, "escaping", "");
    assert_eq!(
        error.to_string(),
        r#"plugin `escaping` returned invalid output: path "/../../etc/passwd" contains `..`"#
    );
    let error = generate_error(
        &host,
        "escaping",
        "[plugin.escaping]\nconfig = { path = \"etc/shadow\" }\n",
    );
    assert_eq!(
        error.to_string(),
        r#"plugin `escaping` returned invalid output: path "etc/shadow" is not absolute"#
    );
}

#[test]
fn output_over_the_cap_is_refused() {
    let host = Host::new();
    let error = generate_error(
        &host,
        "bloated",
        "[plugin.bloated]\nlimits = { output-mib = 1 }\n",
    );
    assert_eq!(
        error,
        ExtensionError::Limit {
            plugin: "bloated".into(),
            limit: Limit::Output { bytes: 1 << 20 }
        }
    );
    let fits = host.generator(
        "bloated",
        "[plugin.bloated]\nconfig = { size-mib = 1 }\nlimits = { output-mib = 2 }\n",
    );
    assert!(fits.generate(&Node::new("n1"), &server()).is_ok());
}

#[test]
fn another_api_version_is_refused_at_load() {
    let host = Host::new();
    let error = host
        .load("old-api", "")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        error,
        "plugin `old-api` is refused: it was built against wulf:plugin@0.2.0, but this host implements wulf:plugin@0.1.0; rebuild it with wulf-sdk 0.1"
    );
    assert_good_plugin_works(&host);
}

#[test]
fn a_world_mismatch_is_refused_at_load() {
    let host = Host::new();
    let mut package = package("hostname");
    package.manifest.world = wulf_plugin::World::ImageTransform;
    let error = host
        .runtime
        .load(&package, &host.config("").plugins)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some(
            "plugin `hostname` is refused: it does not export `wulf:plugin/transform` (the manifest says world `image-transform`); it exports: wulf:plugin/generator@0.1.0"
        )
    );
}

#[test]
fn read_dirs_are_granted_only_by_the_site_config() {
    let host = Host::new();
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = data.path().join("motd");
    std::fs::write(&file, "from the host\n").unwrap_or_else(|e| panic!("{e}"));
    let mut package = package("reader");
    package.manifest.read_dirs = vec![data.path().to_path_buf()];
    let dir = data.path().display();
    let refused = host
        .runtime
        .load(&package, &host.config("").plugins)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        refused,
        Some(format!(
            "plugin `reader` asks to read {dir}, which the site configuration does not grant; to allow it add the directory to `grant-read-dirs` under [plugin.reader] in wulf.toml"
        ))
    );
    let config = host.config(&format!(
        "[plugin.reader]\ngrant-read-dirs = [\"{dir}\"]\nconfig = {{ file = \"{}\" }}\n",
        file.display()
    ));
    let plugin = Arc::new(
        host.runtime
            .load(&package, &config.plugins)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let files = WasmOverlayGenerator::new(plugin)
        .map(|g| g.generate(&Node::new("n1"), &server()))
        .unwrap_or_else(|| panic!("not a generator"))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = |i: usize| match &files[i].content {
        FileContent::Regular(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (text(0).as_str(), text(1).as_str()),
        ("from the host\n", "write refused")
    );
    assert!(!data.path().join("motd.new").exists());
}

#[test]
fn without_a_grant_the_filesystem_does_not_exist() {
    let host = Host::new();
    let error = generate_error(
        &host,
        "reader",
        "[plugin.reader]\nconfig = { file = \"/etc/passwd\" }\n",
    );
    let ExtensionError::Guest { message, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(message.starts_with("reading /etc/passwd:"), "{message}");
}

#[test]
fn the_compile_cache_serves_a_restart() {
    let host = Host::new();
    assert_eq!(
        host.load("hostname", "").map(|p| p.origin).ok(),
        Some(Origin::Compiled)
    );
    let restarted = Runtime::new(host.state.path().join("cache")).unwrap_or_else(|e| panic!("{e}"));
    let again = restarted
        .load(&package("hostname"), &host.config("").plugins)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.origin, Origin::Cache);
}

#[test]
fn a_foreign_cache_file_is_not_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let host = Host::new();
    assert!(host.load("hostname", "").is_ok());
    let cache = host.state.path().join("cache");
    let entry = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .next();
    let entry = entry.unwrap_or_else(|| panic!("no cache entry")).path();
    // World-writable: anyone could have replaced the native code. It must be recompiled.
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666))
        .unwrap_or_else(|e| panic!("{e}"));
    let restarted = Runtime::new(&cache).unwrap_or_else(|e| panic!("{e}"));
    let again = restarted
        .load(&package("hostname"), &host.config("").plugins)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.origin, Origin::Compiled);
}

#[test]
fn an_inventory_backend_lists_and_looks_up() {
    let host = Host::new();
    let config = "[plugin.echo-backend.config]\nnodes = [{ id = \"c001\", hwaddr = \"02:00:00:00:00:01\" }, { id = \"c002\", hwaddr = \"02:00:00:00:00:02\" }, { id = \"c003\", hwaddr = \"02:00\" }]\n";
    let backend = WasmInventoryBackend::new(
        host.load("echo-backend", config)
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|| panic!("not a backend"));
    let nodes = backend.list_nodes().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        nodes
            .iter()
            .filter_map(|n| n.as_ref().ok())
            .map(|n| n.id.as_str())
            .collect::<Vec<_>>(),
        ["c001", "c002"]
    );
    // The record with a MAC that is none is refused alone, naming its field.
    let refused: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.as_ref().err())
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        refused,
        [
            "node `c003`: `network-devices.default.hwaddr` = \"02:00\": not a MAC address; expected six hex pairs like aa:bb:cc:dd:ee:ff"
        ]
    );
    let mac = |text: &str| wulf_core::HwAddr::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let found = backend
        .lookup_hwaddr(&mac("02:00:00:00:00:02"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        found.and_then(Result::ok).map(|n| n.id),
        Some("c002".to_string())
    );
    assert!(matches!(
        backend.lookup_hwaddr(&mac("02:00:00:00:00:09")),
        Ok(None)
    ));
    assert!(matches!(
        backend.accept_discovered(&mac("02:00:00:00:00:09")),
        Ok(None)
    ));
}

#[test]
fn an_image_transform_streams_entries() {
    let host = Host::new();
    let transform = WasmImageTransform::new(
        host.load("doc-stripper", "")
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|| panic!("not a transform"));
    let entry = |path: &str, kind: EntryKind| ImageEntry {
        path: path.into(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: 3,
    };
    let mut run = transform.start("rocky-9").unwrap_or_else(|e| panic!("{e}"));
    let actions = run
        .filter(&[
            entry("/usr/share/doc/bash/README", EntryKind::Regular),
            entry("/etc/motd", EntryKind::Regular),
            entry("/bin/sh", EntryKind::Symlink("bash".into())),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        actions,
        vec![
            EntryAction::Drop,
            EntryAction::WantContent,
            EntryAction::Keep
        ]
    );
    let replaced = run
        .rewrite(&entry("/etc/motd", EntryKind::Regular), b"hi\n".to_vec())
        .unwrap_or_else(|e| panic!("{e}"));
    let EntryAction::Replace(file) = replaced else {
        panic!("{replaced:?}")
    };
    assert_eq!(file.content, FileContent::Regular(b"HI\n".to_vec()));
    let added = run.finish().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        added[0].content,
        FileContent::Regular(b"rocky-9 dropped 1\n".to_vec())
    );
}

/// Released WIT files are frozen: a change to one of `wit/v0.1` breaks every plugin built
/// against it. Interfaces and worlds added later come in files of their own
/// (`node-generator.wit`), which are frozen from then on too.
#[test]
fn released_wit_is_frozen() {
    let dir = workspace().join("wit/v0.1");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let mut listing = String::new();
    for name in names {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        let lines = text.lines().count();
        let sum = text.bytes().fold(0u64, |h, b| {
            h.wrapping_mul(1_099_511_628_211).wrapping_add(u64::from(b))
        });
        listing.push_str(&format!("{name} {lines} lines {sum:016x}\n"));
    }
    insta::assert_snapshot!(listing, @"
    cluster-generator.wit 37 lines 0d346be2f5cdfc1e
    node-generator.wit 20 lines 7a519fac7d73c597
    types.wit 177 lines 6bd6e8853e25901f
    worlds.wit 89 lines 050d4a71c80a3532
    ");
}
