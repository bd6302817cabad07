//! Compiles plugin crates of this workspace to `wasm32-wasip2` components from a build script.
//!
//! The nested cargo gets its own target directory (so it never waits on the lock of the build
//! that runs it), a clean environment (so `cargo clippy`'s wrapper or the outer build's
//! `RUSTFLAGS` do not leak in) and the workspace's `plugin` profile. Used by the `wulf` binary,
//! which embeds the first-party plugins, and by the tests, which build hostile fixtures. The
//! `wulf` binary also embeds `wulf-agent`, built the same way as a static binary for nodes
//! ([`build_static`]).
//! Depends on nothing but std: it runs before anything else is built.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The compilation target of every plugin.
pub const TARGET: &str = "wasm32-wasip2";

/// A plugin crate found in a directory of the workspace.
#[derive(Debug, Clone)]
pub struct PluginCrate {
    /// The directory holding `Cargo.toml` (and, for shipped plugins, `plugin.toml`).
    pub dir: PathBuf,
    /// The cargo package name.
    pub package: String,
}

/// A plugin crate after the build.
#[derive(Debug, Clone)]
pub struct BuiltPlugin {
    pub krate: PluginCrate,
    /// The component file.
    pub wasm: PathBuf,
}

/// Every crate directly under `parent` (sorted by directory name), read from its `Cargo.toml`.
pub fn discover(parent: &Path) -> Result<Vec<PluginCrate>, String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(parent)
        .map_err(|e| format!("reading {}: {e}", parent.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let manifest = dir.join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest)
                .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
            let package = package_name(&text)
                .ok_or_else(|| format!("{}: no `name` in [package]", manifest.display()))?;
            Ok(PluginCrate { dir, package })
        })
        .collect()
}

/// The `name` of the `[package]` table, read without a TOML parser (build-dependency kept
/// dependency-free); our manifests put it on its own line as `name = "..."`.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(rest) = line.strip_prefix("name") {
            let value = rest.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_string());
        }
    }
    None
}

/// Builds `crates` for [`TARGET`] with the workspace at `workspace` and tells cargo to rerun the
/// calling build script when any of `watch` changes.
pub fn build(
    workspace: &Path,
    crates: &[PluginCrate],
    watch: &[&Path],
) -> Result<Vec<BuiltPlugin>, String> {
    // The nested build also reads the workspace manifest (the `plugin` profile), the lock file
    // and `.cargo/config.toml` (the plugins' link flags).
    rerun_if_changed(
        workspace,
        watch,
        &["Cargo.toml", "Cargo.lock", ".cargo/config.toml"],
    );
    if crates.is_empty() {
        return Ok(Vec::new());
    }
    ensure_target(TARGET)?;
    let target_dir = nested_target_dir(workspace, "wasm-plugins");
    let mut cmd = clean_command(&cargo());
    cmd.current_dir(workspace)
        .args([
            "build",
            "--profile",
            "plugin",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"));
    for krate in crates {
        cmd.args(["-p", &krate.package]);
    }
    let output = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building plugins for {TARGET} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let out = target_dir.join(TARGET).join("plugin");
    crates
        .iter()
        .map(|krate| {
            let wasm = out.join(format!("{}.wasm", krate.package.replace('-', "_")));
            if wasm.is_file() {
                Ok(BuiltPlugin {
                    krate: krate.clone(),
                    wasm,
                })
            } else {
                Err(format!(
                    "{} built, but {} is missing (is it a cdylib?)",
                    krate.package,
                    wasm.display()
                ))
            }
        })
        .collect()
}

fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cargo".into())
}

/// A command with only the variables a nested cargo needs.
fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for key in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "TMPDIR",
        "LANG",
    ] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd
}

/// The target of the binaries wulf ships to x86-64 nodes: statically linked against musl, so
/// they run on any distribution.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds the binary `bin` of `package` for [`STATIC_TARGET`] with the workspace's `profile`,
/// in its own target directory, and tells cargo to rerun the calling build script when any of
/// `watch` changes. The built file.
pub fn build_static(
    workspace: &Path,
    package: &str,
    bin: &str,
    profile: &str,
    watch: &[&Path],
) -> Result<PathBuf, String> {
    rerun_if_changed(workspace, watch, &["Cargo.toml", "Cargo.lock"]);
    ensure_target(STATIC_TARGET)?;
    let target_dir = nested_target_dir(workspace, "static");
    let output = clean_command(&cargo())
        .current_dir(workspace)
        .args(["build", "--profile", profile, "--target", STATIC_TARGET])
        .args(["-p", package, "--bin", bin, "--target-dir"])
        .arg(&target_dir)
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building {package} for {STATIC_TARGET} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let built = static_binary(workspace, bin, profile);
    if built.is_file() {
        Ok(built)
    } else {
        Err(format!(
            "{package} built, but {} is missing",
            built.display()
        ))
    }
}

/// Where [`build_static`] puts `bin` built with `profile`.
pub fn static_binary(workspace: &Path, bin: &str, profile: &str) -> PathBuf {
    nested_target_dir(workspace, "static")
        .join(STATIC_TARGET)
        .join(profile)
        .join(bin)
}

/// The target directory of a nested build, `<target>/<name>`: its own, so it never waits on
/// the lock of the build that runs it.
fn nested_target_dir(workspace: &Path, name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join(name)
}

/// Tells cargo to run the calling build script again when any of `watch`, the workspace's
/// `inputs` or the target directory changes.
fn rerun_if_changed(workspace: &Path, watch: &[&Path], inputs: &[&str]) {
    for path in watch {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for input in inputs {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
}

/// `rust-toolchain.toml` lists the targets, but rustup does not add targets to a toolchain that
/// is already installed: add it when missing.
fn ensure_target(target: &str) -> Result<(), String> {
    let sysroot = clean_command(Path::new("rustc"))
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("running rustc: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(target).is_dir() {
        return Ok(());
    }
    let status = clean_command(Path::new("rustup"))
        .args(["target", "add", target])
        .status()
        .map_err(|e| format!("the {target} target is missing and rustup could not run: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`rustup target add {target}` failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::package_name;

    #[test]
    fn reads_the_package_name_only() {
        let manifest =
            "[lib]\nname = \"x\"\n\n[package]\nversion = \"1\"\nname = \"wulf-plugin-hostname\"\n";
        assert_eq!(
            package_name(manifest).as_deref(),
            Some("wulf-plugin-hostname")
        );
        assert_eq!(package_name("[dependencies]\nname = \"y\"\n"), None);
    }
}
