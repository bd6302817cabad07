//! Builds the fixture plugins in `fixtures/` (hostile and well-behaved guests) and the
//! first-party plugins for wasm32-wasip2 and tells the harness where each component is.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest_dir.join("..");
    let fixtures = manifest_dir.join("fixtures");
    let plugins = workspace.join("plugins");
    let result = wulf_plugin_build::discover(&fixtures).and_then(|mut crates| {
        crates.extend(wulf_plugin_build::discover(&plugins)?);
        let watch = [
            fixtures.as_path(),
            &plugins,
            &workspace.join("sdk"),
            &workspace.join("wit"),
        ];
        wulf_plugin_build::build(&workspace, &crates, &watch)
    });
    match result {
        Ok(built) => {
            let dir = built
                .first()
                .and_then(|b| b.wasm.parent())
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            println!("cargo:rustc-env=WULF_FIXTURE_WASM_DIR={dir}");
        }
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    }
}
