//! Plugins in other languages, as their authors build them: `wulf plugin new` projects built
//! with componentize-py (PyPI) and componentize-js (npm), both installed into the test cache on
//! first use and reused by later runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::oci::run;
use crate::{require_command, test_cache, wulf_bin};

/// componentize-py's venv in the test cache: its `bin/`.
pub fn componentize_py() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let venv = test_cache().join("componentize-py-0.25.1");
        let bin = venv.join("bin");
        if !bin.join("componentize-py").exists() {
            require_command("python3", "python3");
            let _ = std::fs::remove_dir_all(&venv);
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
            run(Command::new(bin.join("pip")).args([
                "install",
                "--quiet",
                "componentize-py==0.25.1",
            ]));
        }
        bin
    })
}

/// componentize-js installed with npm in the test cache: its `node_modules`.
pub fn componentize_js() -> &'static Path {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES.get_or_init(|| {
        let project = test_cache().join("componentize-js-0.23.0");
        let modules = project.join("node_modules");
        if !modules.join(".bin/componentize-js").exists() {
            require_command("npm", "npm");
            std::fs::create_dir_all(&project).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(
                project.join("package.json"),
                r#"{"name": "componentize-js-cache", "private": true, "devDependencies": {"@bytecodealliance/componentize-js": "0.23.0"}}"#,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            run(Command::new("npm")
                .current_dir(&project)
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"]));
        }
        modules
    })
}

/// `wulf plugin new <name> <args>` into `dir/<name>`.
pub fn new_project(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let project = dir.join(name);
    let out = run(Command::new(wulf_bin())
        .args(["plugin", "new", name, "--dir"])
        .arg(&project)
        .args(args));
    assert!(out.contains("install it: wulf plugin install"), "{out}");
    project
}

pub fn build_python(project: &Path) {
    let path = format!(
        "{}:{}",
        componentize_py().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new("./build.sh")
        .current_dir(project)
        .env("PATH", path));
    assert!(project.join("plugin.wasm").exists());
}

/// Builds a `wulf plugin new --lang js` project with the cached componentize-js, as `npm run
/// build` does.
pub fn build_js(project: &Path) {
    let modules = project.join("node_modules");
    if !modules.exists() {
        std::os::unix::fs::symlink(componentize_js(), &modules)
            .unwrap_or_else(|e| panic!("{}: {e}", modules.display()));
    }
    run(Command::new("npm")
        .current_dir(project)
        .args(["run", "--silent", "build"]));
    assert!(project.join("plugin.wasm").exists());
}
