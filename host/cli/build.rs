//! Builds the first-party plugins in `plugins/` for wasm32-wasip2 and `wulf-agent` as a static
//! binary, and writes `embedded.rs`, which embeds each plugin's manifest and component, the
//! agent and stage one into the binary.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest_dir.join("../..");
    let plugins_dir = workspace.join("plugins");
    let result = wulf_plugin_build::discover(&plugins_dir).and_then(|crates| {
        let watch = [
            plugins_dir.as_path(),
            &workspace.join("sdk"),
            &workspace.join("wit"),
        ];
        wulf_plugin_build::build(&workspace, &crates, &watch)
    });
    let built = match result {
        Ok(built) => built,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    };
    let mut code =
        String::from("pub(crate) static EMBEDDED: &[wulf_plugin::EmbeddedPlugin] = &[\n");
    for plugin in &built {
        let manifest = plugin.krate.dir.join("plugin.toml");
        let _ = writeln!(
            code,
            "    wulf_plugin::EmbeddedPlugin {{ manifest: include_str!({:?}), wasm: include_bytes!({:?}) }},",
            manifest.display().to_string(),
            plugin.wasm.display().to_string()
        );
    }
    code.push_str("];\n");
    let agent = match wulf_plugin_build::build_static(
        &workspace,
        "wulf-agent",
        "wulf-agent",
        "agent",
        &[&workspace.join("host/agent")],
    ) {
        Ok(agent) => agent,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    };
    let _ = writeln!(
        code,
        "/// `wulf-agent` for x86-64 nodes, static.\npub(crate) static AGENT: &[u8] = include_bytes!({:?});",
        agent.display().to_string()
    );
    let stage1 = match wulf_plugin_build::build_static(
        &workspace,
        "wulf-stage1",
        "wulf-stage1",
        "agent",
        &[
            &workspace.join("host/stage1"),
            &workspace.join("host/agent"),
        ],
    ) {
        Ok(stage1) => stage1,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    };
    let _ = writeln!(
        code,
        "/// `wulf-stage1`, the `/init` of two-stage boots on x86-64 nodes, static.\npub(crate) static STAGE1: &[u8] = include_bytes!({:?});",
        stage1.display().to_string()
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("embedded.rs");
    if let Err(e) = std::fs::write(&out, code) {
        eprintln!("writing {}: {e}", out.display());
        std::process::exit(1);
    }
}
