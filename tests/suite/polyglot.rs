//! Plugins in Python, JavaScript and Rust, as their authors make them: `wulf plugin new`
//! writes the project, the language's own tool builds it (componentize-py from PyPI,
//! componentize-js from npm, cargo), `wulf plugin install` takes it, and a node's archive
//! holds its file. A hostile Python plugin fails alone with the limit named.
//!
//! The toolchains are installed into the test cache on first use (a Python venv, an npm
//! project) and reused by later runs (`wulf_tests::polyglot`).

use std::process::Command;

use wulf_tests::oci::run;
use wulf_tests::polyglot::{build_js, build_python, new_project};
use wulf_tests::{Wulf, test_cache, wulf_bin};

/// One node per language, each listing its plugin.
const NODES: &str = r#"
[nodes.n001]
system-overlays = ["motd-py"]
[nodes.n001.network-devices.default]
hwaddr = "aa:00:00:00:03:01"
[nodes.n002]
system-overlays = ["motd-js"]
[nodes.n002.network-devices.default]
hwaddr = "aa:00:00:00:03:02"
[nodes.n003]
system-overlays = ["motd-rs"]
[nodes.n003.network-devices.default]
hwaddr = "aa:00:00:00:03:03"
"#;

/// The files of node `id`'s system archive, decompressed.
fn system_archive(wulf: &Wulf, id: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(wulf.path().join("provision/index.json")).unwrap())
            .unwrap();
    let mut text = Vec::new();
    for segment in index["nodes"][id]["system"]["segments"].as_array().unwrap() {
        let path = wulf
            .path()
            .join("provision")
            .join(segment.as_str().unwrap());
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()),
            &mut text,
        )
        .unwrap();
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn python_js_and_rust_plugins_from_plugin_new_reach_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let wulf = Wulf::new();
    wulf.write("nodes.toml", NODES);

    // `plugin wit` writes the package the binary speaks; the projects carry the same.
    let wit = dir.path().join("wit");
    run(Command::new(wulf_bin())
        .args(["plugin", "wit", "--out"])
        .arg(&wit));
    let worlds = std::fs::read_to_string(wit.join("worlds.wit")).unwrap();
    assert!(worlds.starts_with("package wulf:plugin@0.1.0;"), "{worlds}");

    let python = new_project(dir.path(), "motd-py", &["--lang", "python"]);
    assert_eq!(
        std::fs::read_to_string(python.join("wit/worlds.wit")).unwrap(),
        worlds
    );
    build_python(&python);

    let js = new_project(dir.path(), "motd-js", &["--lang", "js"]);
    build_js(&js);

    let rust = new_project(dir.path(), "motd-rs", &["--lang", "rust"]);
    let rust_target = test_cache().join("plugin-new-rust-target");
    run(Command::new("cargo")
        .current_dir(&rust)
        .env("CARGO_TARGET_DIR", &rust_target)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"]));
    std::fs::copy(
        rust_target.join("wasm32-wasip2/release/motd_rs.wasm"),
        rust.join("plugin.wasm"),
    )
    .unwrap();

    for project in [&python, &js, &rust] {
        let out = wulf.ok(&["plugin", "install", project.to_str().unwrap()]);
        assert!(out.contains("compiled in"), "{out}");
    }
    // Built with only `generate` (node-overlay-generator), it cannot promise shared files.
    let manifest = std::fs::read_to_string(python.join("plugin.toml")).unwrap();
    std::fs::write(
        python.join("plugin.toml"),
        manifest.replace("shared = \"none\"", "shared = \"cluster\""),
    )
    .unwrap();
    let refused = wulf.fails(&["plugin", "install", python.to_str().unwrap(), "--force"]);
    assert!(
        refused.contains("implements only `generate` (world node-overlay-generator), but its manifest says shared = \"cluster\""),
        "{refused}"
    );
    std::fs::write(python.join("plugin.toml"), manifest).unwrap();
    // A second install of the same component says the cache had it.
    let again = wulf.ok(&["plugin", "install", python.to_str().unwrap(), "--force"]);
    assert!(
        again.contains("already compiled (the cache had it)"),
        "{again}"
    );

    // What the plugin logs shows in `plugin test` without -v, named by plugin and node.
    for name in ["motd-py", "motd-js", "motd-rs"] {
        let out = wulf
            .command(&["plugin", "test", name, "--node", "n001"])
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.contains("/etc/motd 0644 0:0"), "{name}: {stdout}");
        assert!(
            stderr.contains("writing /etc/motd for n001")
                && stderr.contains(&format!("plugin=\"{name}\""))
                && stderr.contains("on=\"node n001\""),
            "{name}: {stderr}"
        );
    }

    // Each node's archive holds its plugin's file; the Rust one's greeting comes from the site
    // config.
    wulf.write(
        "wulf.toml",
        "[plugin.motd-rs.config]\ngreeting = \"Hello from Rust,\"\n",
    );
    let built = wulf.ok(&["overlay", "build"]);
    assert!(built.starts_with("built overlays of 3 node(s)"), "{built}");
    for (node, motd) in [
        ("n001", "Welcome to n001\n"),
        ("n002", "Welcome to n002\n"),
        ("n003", "Hello from Rust, n003\n"),
    ] {
        let archive = system_archive(&wulf, node);
        assert!(
            archive.contains("etc/motd") && archive.contains(motd),
            "{node}: {archive}"
        );
    }

    // Other worlds and languages.
    let backend = new_project(
        dir.path(),
        "csv-like",
        &["--lang", "rust", "--world", "inventory-backend"],
    );
    assert!(
        std::fs::read_to_string(backend.join("src/lib.rs"))
            .unwrap()
            .contains("register_inventory_backend!")
    );
    // A name that is not a plugin name, and a directory in use, are refused.
    let refused = Command::new(wulf_bin())
        .args(["plugin", "new", "Bad Name"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("plugin name \"Bad Name\" is not valid"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let taken = Command::new(wulf_bin())
        .args(["plugin", "new", "motd-py", "--dir"])
        .arg(&python)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&taken.stderr).contains("exists and is not empty"),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
}

#[test]
fn a_hostile_python_plugin_fails_alone_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let project = new_project(dir.path(), "hostile", &["--lang", "python"]);
    let app = std::fs::read_to_string(project.join("app.py")).unwrap();
    // Modules are bundled from the imports at the top of the file.
    let app = app.replacen(
        "from typing import List",
        "import json\nfrom typing import List",
        1,
    );
    let app = app.replace(
        "        try:\n",
        "        mode = json.loads(host.config()).get(\"mode\")\n        if mode == \"loop\":\n            while True:\n                pass\n        if mode == \"memory\":\n            hoard = []\n            while True:\n                hoard.append(bytearray(1 << 20))\n        if mode == \"output\":\n            return [FileEntry(path=\"/var/big\", mode=0o644, uid=0, gid=0, content=FileContent_Regular(b\"x\" * (32 << 20)))]\n        try:\n",
    );
    std::fs::write(project.join("app.py"), app).unwrap();
    build_python(&project);

    let wulf = Wulf::new();
    wulf.write(
        "nodes.toml",
        "[nodes.n001]\n[nodes.n001.network-devices.default]\nhwaddr = \"aa:00:00:00:03:01\"\n",
    );
    wulf.write(
        "wulf.toml",
        "[plugin.h-loop]\nconfig = { mode = \"loop\" }\nlimits = { timeout-ms = 1000 }\n\
         [plugin.h-memory]\nconfig = { mode = \"memory\" }\nlimits = { memory-mib = 96, timeout-ms = 60000 }\n\
         [plugin.h-output]\nconfig = { mode = \"output\" }\nlimits = { memory-mib = 256, output-mib = 8, timeout-ms = 60000 }\n\
         [plugin.h-fine]\n",
    );
    for name in ["h-loop", "h-memory", "h-output", "h-fine"] {
        wulf.ok(&[
            "plugin",
            "install",
            project.to_str().unwrap(),
            "--name",
            name,
        ]);
    }
    let errors: Vec<String> = ["h-loop", "h-memory", "h-output"]
        .iter()
        .map(|name| wulf.fails(&["plugin", "test", name, "--node", "n001"]))
        .collect();
    insta::assert_snapshot!(errors.join(""), @r"
    error: plugin `h-loop` was stopped: it exceeded its time limit of 1000 ms
    error: plugin `h-memory` was stopped: it exceeded its memory limit of 96 MiB
    error: plugin `h-output` was stopped: it exceeded its output limit of 8 MiB
    ");
    // The same component without a mode is fine: the failures were its calls', not the host's.
    let listing = wulf.ok(&["plugin", "test", "h-fine", "--node", "n001"]);
    assert!(listing.contains("/etc/motd 0644 0:0"), "{listing}");
}

#[test]
fn python_and_js_backends_and_transforms_from_plugin_new_work() {
    let dir = tempfile::tempdir().unwrap();
    let wulf = Wulf::new();
    wulf.write(
        "nodes.toml",
        "[nodes.n001]\n[nodes.n001.network-devices.default]\nhwaddr = \"aa:00:00:00:03:01\"\n",
    );
    let mut config = String::from("[plugins]\nbackends = [\"b-py\", \"b-js\"]\n");
    for (lang, short) in [("python", "py"), ("js", "js")] {
        for (world, kind) in [("inventory-backend", "b"), ("image-transform", "t")] {
            let name = format!("{kind}-{short}");
            let project = new_project(dir.path(), &name, &["--lang", lang, "--world", world]);
            match lang {
                "python" => build_python(&project),
                _ => build_js(&project),
            }
            wulf.ok(&["plugin", "install", project.to_str().unwrap()]);
        }
        let n = if short == "py" { 2 } else { 3 };
        config.push_str(&format!(
            "[plugin.b-{short}.config]\nnodes = {{ n10{n} = \"AA:00:00:00:03:0{n}\" }}\n"
        ));
    }
    wulf.write("wulf.toml", &config);

    // The backends' nodes, as the plugin returns them and as the inventory serves them.
    let listed = wulf.ok(&["plugin", "test", "b-py"]);
    assert!(
        listed.contains("n102") && listed.contains("aa:00:00:00:03:02"),
        "{listed}"
    );
    let listed = wulf.ok(&["plugin", "test", "b-js"]);
    assert!(
        listed.contains("n103") && listed.contains("aa:00:00:00:03:03"),
        "{listed}"
    );
    let nodes = wulf.ok(&["node", "list"]);
    for node in ["n001", "n102", "n103"] {
        assert!(nodes.contains(node), "{node}: {nodes}");
    }

    // The transforms, one after the other, in an image build.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("usr/share/doc/pkg")).unwrap();
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(tree.join("usr/share/doc/pkg/README"), "docs\n").unwrap();
    std::fs::write(tree.join("bin/sh"), "sh\n").unwrap();
    wulf.ok(&[
        "image",
        "import",
        tree.to_str().unwrap(),
        "img",
        "--no-build",
    ]);
    wulf.ok(&["image", "build", "img", "--transform", "t-py,t-js"]);
    let show: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["image", "show", "img", "--json"])).unwrap();
    let file = show["build"]["file"].as_str().unwrap().to_owned();
    let mut text = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(
            std::fs::File::open(wulf.path().join("images/img").join(file)).unwrap(),
        ),
        &mut text,
    )
    .unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(!text.contains("usr/share/doc/pkg/README"), "{text}");
    assert!(
        text.contains("etc/t-py") && text.contains("etc/t-js"),
        "{text}"
    );
    assert!(text.contains("built into img"), "{text}");
}
