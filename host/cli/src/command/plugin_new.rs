//! `wulf plugin wit` and `wulf plugin new`: the WIT package this binary speaks, and starter
//! projects that build with each language's own tool and install with `wulf plugin install`.
//! Everything is compiled into the binary, so both work offline and always match the host.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use wulf_plugin::{API_VERSION, World};

/// The WIT package, file by file.
const WIT: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../../wit/v0.1/types.wit")),
    (
        "worlds.wit",
        include_str!("../../../../wit/v0.1/worlds.wit"),
    ),
    (
        "node-generator.wit",
        include_str!("../../../../wit/v0.1/node-generator.wit"),
    ),
    (
        "cluster-generator.wit",
        include_str!("../../../../wit/v0.1/cluster-generator.wit"),
    ),
];

/// The Rust SDK this binary was built with, vendored into new Rust projects. Its bindings
/// read the WIT from `../wit`, beside it in the project.
const SDK: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../../sdk/src/lib.rs")),
    (
        "src/cluster.rs",
        include_str!("../../../../sdk/src/cluster.rs"),
    ),
    ("src/file.rs", include_str!("../../../../sdk/src/file.rs")),
    ("src/node.rs", include_str!("../../../../sdk/src/node.rs")),
    (
        "src/traits.rs",
        include_str!("../../../../sdk/src/traits.rs"),
    ),
    ("src/log.rs", include_str!("../../../../sdk/src/log.rs")),
    (
        "src/testing.rs",
        include_str!("../../../../sdk/src/testing.rs"),
    ),
    ("README.md", include_str!("../../../../sdk/README.md")),
];

const SDK_MANIFEST: &str = r#"[package]
name = "wulf-sdk"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = { version = "0.61.1", default-features = false, features = ["macros", "realloc", "std", "bitflags", "macro-string"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WorldArg {
    OverlayGenerator,
    InventoryBackend,
    ImageTransform,
}

impl WorldArg {
    fn world(self) -> World {
        match self {
            WorldArg::OverlayGenerator => World::OverlayGenerator,
            WorldArg::InventoryBackend => World::InventoryBackend,
            WorldArg::ImageTransform => World::ImageTransform,
        }
    }
}

/// Writes the WIT package into `out`.
pub(crate) fn wit(out: &Path) -> anyhow::Result<()> {
    write_wit(out)?;
    println!(
        "wrote the WIT package wulf:plugin@{API_VERSION} ({}) to {}",
        WIT.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        out.display()
    );
    Ok(())
}

fn write_wit(out: &Path) -> anyhow::Result<()> {
    for (name, text) in WIT {
        write(&out.join(name), text)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a new plugin project `name` in `dir` (default `./<name>`).
pub(crate) fn new(
    name: &str,
    lang: Lang,
    world: WorldArg,
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    if !wulf_plugin::manifest::valid_name(name) {
        bail!(
            "plugin name {name:?} is not valid: use lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit"
        );
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} exists and is not empty: choose another directory with --dir",
            dir.display()
        );
    }
    let world_name = world.world().to_string();
    // Cargo takes letters, digits, `-` and `_`, not starting with a digit.
    let crate_name = match name.replace(['-', '.'], "_") {
        c if c.starts_with(|ch: char| ch.is_ascii_digit()) => format!("wulf_{c}"),
        c => c,
    };
    // Python and JavaScript bindings want every export implemented: a new overlay generator
    // builds against the world with only `generate`.
    let build_world = match world {
        WorldArg::OverlayGenerator => "node-overlay-generator",
        _ => world_name.as_str(),
    };
    let shared = match world {
        WorldArg::OverlayGenerator => {
            "# Built against the node-overlay-generator world: per-node files only.\nshared = \"none\"\n"
        }
        _ => "",
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{world}}", &world_name)
            .replace("{{build_world}}", build_world)
            .replace("{{api}}", &API_VERSION.to_string())
            .replace("{{crate}}", &crate_name)
            .replace("{{lang}}", lang_name(lang))
            .replace("{{shared}}\n", shared)
    };
    let files: Vec<(&str, &str)> = match lang {
        Lang::Rust => vec![
            (
                "Cargo.toml",
                include_str!("../../templates/plugin/rust/Cargo.toml"),
            ),
            (
                ".cargo/config.toml",
                include_str!("../../templates/plugin/rust/config.toml"),
            ),
            (
                "src/lib.rs",
                match world {
                    WorldArg::OverlayGenerator => {
                        include_str!("../../templates/plugin/rust/overlay-generator.rs")
                    }
                    WorldArg::InventoryBackend => {
                        include_str!("../../templates/plugin/rust/inventory-backend.rs")
                    }
                    WorldArg::ImageTransform => {
                        include_str!("../../templates/plugin/rust/image-transform.rs")
                    }
                },
            ),
            (
                "plugin.toml",
                include_str!("../../templates/plugin/rust/plugin.toml"),
            ),
            (
                "README.md",
                include_str!("../../templates/plugin/rust/README.md"),
            ),
        ],
        Lang::Python => vec![
            (
                "app.py",
                match world {
                    WorldArg::OverlayGenerator => {
                        include_str!("../../templates/plugin/python/overlay-generator.py")
                    }
                    WorldArg::InventoryBackend => {
                        include_str!("../../templates/plugin/python/inventory-backend.py")
                    }
                    WorldArg::ImageTransform => {
                        include_str!("../../templates/plugin/python/image-transform.py")
                    }
                },
            ),
            (
                "build.sh",
                include_str!("../../templates/plugin/python/build.sh"),
            ),
            (
                "plugin.toml",
                include_str!("../../templates/plugin/python/plugin.toml"),
            ),
            (
                "README.md",
                include_str!("../../templates/plugin/python/README.md"),
            ),
        ],
        Lang::Js => vec![
            (
                "app.js",
                match world {
                    WorldArg::OverlayGenerator => {
                        include_str!("../../templates/plugin/js/overlay-generator.js")
                    }
                    WorldArg::InventoryBackend => {
                        include_str!("../../templates/plugin/js/inventory-backend.js")
                    }
                    WorldArg::ImageTransform => {
                        include_str!("../../templates/plugin/js/image-transform.js")
                    }
                },
            ),
            (
                "package.json",
                include_str!("../../templates/plugin/js/package.json"),
            ),
            (
                "plugin.toml",
                include_str!("../../templates/plugin/js/plugin.toml"),
            ),
            (
                "README.md",
                include_str!("../../templates/plugin/js/README.md"),
            ),
        ],
    };
    for (path, text) in &files {
        write(&dir.join(path), &fill(text))?;
    }
    write_wit(&dir.join("wit"))?;
    if lang == Lang::Rust {
        let sdk = dir.join("wulf-sdk");
        write(&sdk.join("Cargo.toml"), SDK_MANIFEST)?;
        for (path, text) in SDK {
            write(
                &sdk.join(path),
                &text.replace("\"../wit/v0.1\"", "\"../wit\""),
            )?;
        }
    }
    if lang == Lang::Python {
        set_executable(&dir.join("build.sh"))?;
    }
    let build = match lang {
        Lang::Rust => format!(
            "cargo build --release --target wasm32-wasip2 && cp target/wasm32-wasip2/release/{crate_name}.wasm plugin.wasm"
        ),
        Lang::Python => "./build.sh   (needs componentize-py: pip install componentize-py)".into(),
        Lang::Js => "npm install && npm run build".into(),
    };
    println!(
        "wrote a {} {world_name} plugin `{name}` in {}\nbuild it:   cd {} && {build}\ninstall it: wulf plugin install {}   (--force to replace it after a rebuild)",
        lang_name(lang),
        dir.display(),
        dir.display(),
        dir.display()
    );
    Ok(())
}

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    }
}

fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(test)]
mod tests {
    /// The names of the files in `dir` (relative to this crate), each after `prefix`, sorted.
    fn files_in(dir: &str, prefix: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| format!("{prefix}{}", e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn sorted<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut names: Vec<String> = names.map(str::to_owned).collect();
        names.sort();
        names
    }

    /// New projects and `plugin wit` carry every file of the package: a world added in a new
    /// file and not listed here would leave the vendored SDK unable to build.
    #[test]
    fn every_file_of_the_wit_package_is_carried() {
        let carried = sorted(super::WIT.iter().map(|(n, _)| *n));
        assert_eq!(carried, files_in("../../wit/v0.1", ""));
    }

    /// The vendored SDK has every source file of `sdk/src`.
    #[test]
    fn every_file_of_the_sdk_is_vendored() {
        let vendored = sorted(
            super::SDK
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| n.starts_with("src/")),
        );
        assert_eq!(vendored, files_in("../../sdk/src", "src/"));
    }
}
