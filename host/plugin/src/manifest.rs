//! `plugin.toml`: what a plugin says it is and what it asks for, parsed strictly and validated.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The API version this host implements; a plugin's `api-version` must be compatible with it.
pub const API_VERSION: Version = Version {
    major: 0,
    minor: 1,
    patch: 0,
};

/// A manifest that cannot be used, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}` = {value:?}: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// The extension point a plugin implements: one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    OverlayGenerator,
    InventoryBackend,
    ImageTransform,
}

impl World {
    pub const ALL: [World; 3] = [
        World::OverlayGenerator,
        World::InventoryBackend,
        World::ImageTransform,
    ];

    /// The world's name in WIT.
    pub fn as_str(self) -> &'static str {
        match self {
            World::OverlayGenerator => "overlay-generator",
            World::InventoryBackend => "inventory-backend",
            World::ImageTransform => "image-transform",
        }
    }

    /// The interface the world exports.
    pub fn export(self) -> &'static str {
        match self {
            World::OverlayGenerator => "generator",
            World::InventoryBackend => "backend",
            World::ImageTransform => "transform",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.').map(|p| p.parse::<u64>().ok());
        let version = Version {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
        };
        parts.next().is_none().then_some(version)
    }

    /// Semver compatibility as wasmtime's linker applies it to WIT packages: `1.x` with `1.y`,
    /// `0.M.x` with `0.M.y` (M > 0), `0.0.x` only with itself.
    pub fn compatible_with(self, other: Version) -> bool {
        match (self.major, self.minor) {
            (0, 0) => self == other,
            (0, minor) => other.major == 0 && other.minor == minor,
            (major, _) => other.major == major,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    world: String,
    api_version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    capabilities: RawCapabilities,
    #[serde(default)]
    shared: Option<String>,
    #[serde(default)]
    shared_fields: Option<Vec<String>>,
    #[serde(default)]
    config: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawCapabilities {
    #[serde(default)]
    read_dirs: Vec<PathBuf>,
    #[serde(default)]
    ssh_host_keys: bool,
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: Version,
    pub world: World,
    pub api_version: Version,
    pub description: String,
    /// Host directories the plugin asks to read; granted only where the site config allows.
    pub read_dirs: Vec<PathBuf>,
    /// Asks for the cluster's SSH host keys (private keys) under `host-keys` in its config;
    /// granted to embedded plugins, and to others only where the site config allows.
    pub ssh_host_keys: bool,
    /// Overlay generators: what their shared files depend on (`shared = "cluster" | "config"
    /// | "none"`), so the host calls `generate-shared` only when that changed.
    pub shared: wulf_core::extension::Shared,
    /// Configuration defaults, overlaid by the site config.
    pub config: serde_json::Map<String, serde_json::Value>,
}

impl Manifest {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::parse(&text, path)
    }

    /// Validates manifest text that came from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: &'static str, value: &str, reason: &str| ManifestError::Invalid {
            path: path.to_path_buf(),
            key,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if !valid_name(&raw.name) {
            return Err(invalid(
                "name",
                &raw.name,
                "use lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit",
            ));
        }
        let version = Version::parse(&raw.version)
            .ok_or_else(|| invalid("version", &raw.version, "expected MAJOR.MINOR.PATCH"))?;
        let world = World::ALL
            .into_iter()
            .find(|w| w.as_str() == raw.world)
            .ok_or_else(|| {
                invalid(
                    "world",
                    &raw.world,
                    "expected overlay-generator, inventory-backend or image-transform",
                )
            })?;
        let api_version = Version::parse(&raw.api_version).ok_or_else(|| {
            invalid(
                "api-version",
                &raw.api_version,
                "expected MAJOR.MINOR.PATCH",
            )
        })?;
        if !api_version.compatible_with(API_VERSION) {
            return Err(invalid(
                "api-version",
                &raw.api_version,
                &format!(
                    "this host implements wulf:plugin@{API_VERSION}; rebuild the plugin with wulf-sdk {}.{}",
                    API_VERSION.major, API_VERSION.minor
                ),
            ));
        }
        for dir in &raw.capabilities.read_dirs {
            if !dir.is_absolute() {
                return Err(invalid(
                    "capabilities.read-dirs",
                    &dir.display().to_string(),
                    "must be an absolute path",
                ));
            }
        }
        use wulf_core::extension::Shared;
        let shared = match raw.shared.as_deref() {
            None | Some("cluster") => Shared::Cluster,
            Some("config") => Shared::Config,
            Some("none") => Shared::None,
            Some(other) => {
                return Err(invalid(
                    "shared",
                    other,
                    "expected cluster (the default), config or none",
                ));
            }
        };
        let shared = match (shared, &raw.shared_fields) {
            (shared, None) => shared,
            (Shared::Cluster, Some(names)) => {
                let fields =
                    wulf_core::node_fields::NodeFields::parse(names.iter().map(String::as_str))
                        .map_err(|name| {
                            invalid(
                                "shared-fields",
                                &name,
                                &format!(
                                    "not a field of a node record; expected some of: {}",
                                    wulf_core::node_fields::NodeFields::names().join(", ")
                                ),
                            )
                        })?;
                Shared::Fields(fields)
            }
            (other, Some(names)) => {
                return Err(invalid(
                    "shared-fields",
                    &names.join(", "),
                    &format!(
                        "only a plugin whose shared files read the cluster (shared = \"cluster\") names fields; this one says shared = \"{other}\""
                    ),
                ));
            }
        };
        let config = serde_json::to_value(&raw.config)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        Ok(Manifest {
            name: raw.name,
            version,
            world,
            api_version,
            description: raw.description,
            read_dirs: raw.capabilities.read_dirs,
            ssh_host_keys: raw.capabilities.ssh_host_keys,
            shared,
            config,
        })
    }
}

/// Plugin names become directory names and overlay-list entries.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && name.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "csv"
version = "1.2.3"
world = "inventory-backend"
api-version = "0.1.0"
[capabilities]
read-dirs = ["/srv/inventory"]
[config]
file = "nodes.csv"
"#;

    fn error(text: &str) -> String {
        Manifest::parse(text, Path::new("plugins/x/plugin.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn parses_a_complete_manifest() {
        let m = Manifest::parse(GOOD, Path::new("plugin.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (m.name.as_str(), m.world, m.version.to_string()),
            ("csv", World::InventoryBackend, "1.2.3".into())
        );
        assert_eq!(m.read_dirs, vec![PathBuf::from("/srv/inventory")]);
        assert_eq!(m.config["file"], "nodes.csv");
    }

    #[test]
    fn version_compatibility_follows_wasmtime() {
        let v = |s| {
            Version::parse(s).unwrap_or(Version {
                major: 9,
                minor: 9,
                patch: 9,
            })
        };
        assert!(v("0.1.7").compatible_with(v("0.1.0")));
        assert!(!v("0.2.0").compatible_with(v("0.1.0")));
        assert!(!v("0.0.1").compatible_with(v("0.0.2")));
        assert!(v("1.4.0").compatible_with(v("1.0.0")));
        assert_eq!(Version::parse("1.2"), None);
        assert_eq!(Version::parse("1.2.3.4"), None);
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let shared = |value: &str| {
            Manifest::parse(
                &GOOD.replace(
                    "[capabilities]",
                    &format!("shared = \"{value}\"\n[capabilities]"),
                ),
                Path::new("plugin.toml"),
            )
            .map(|m| m.shared)
        };
        use wulf_core::extension::Shared;
        assert_eq!(shared("config").ok(), Some(Shared::Config));
        assert_eq!(shared("none").ok(), Some(Shared::None));
        assert_eq!(
            Manifest::parse(GOOD, Path::new("p")).ok().map(|m| m.shared),
            Some(Shared::Cluster)
        );
        insta::assert_snapshot!(error(&GOOD.replace("[capabilities]", "shared = \"sometimes\"\n[capabilities]")), @r#"plugins/x/plugin.toml: `shared` = "sometimes": expected cluster (the default), config or none"#);
        let fields = |lines: &str| {
            Manifest::parse(
                &GOOD.replace("[capabilities]", &format!("{lines}\n[capabilities]")),
                Path::new("plugin.toml"),
            )
            .map(|m| m.shared)
        };
        assert_eq!(
            fields("shared-fields = [\"network-devices\", \"ipmi\"]").ok(),
            Some(Shared::Fields(
                wulf_core::node_fields::NodeFields::parse(["network-devices", "ipmi"])
                    .unwrap_or_default()
            ))
        );
        insta::assert_snapshot!(error(&GOOD.replace("[capabilities]", "shared-fields = [\"ipmi\", \"hostname\"]\n[capabilities]")), @r#"plugins/x/plugin.toml: `shared-fields` = "hostname": not a field of a node record; expected some of: profiles, comment, cluster, image, ipxe-template, system-overlays, runtime-overlays, init, root, kernel, primary-network, network-devices, ipmi, tags, resources, disks, filesystems, asset-key, discoverable"#);
        insta::assert_snapshot!(error(&GOOD.replace("[capabilities]", "shared = \"config\"\nshared-fields = [\"ipmi\"]\n[capabilities]")), @r#"plugins/x/plugin.toml: `shared-fields` = "ipmi": only a plugin whose shared files read the cluster (shared = "cluster") names fields; this one says shared = "config""#);
        insta::assert_snapshot!(error(&GOOD.replace("[config]", "colour = 1\n[config]")), @"
        plugins/x/plugin.toml: TOML parse error at line 8, column 1
          |
        8 | colour = 1
          | ^^^^^^
        unknown field `colour`, expected `read-dirs` or `ssh-host-keys`
        ");
        insta::assert_snapshot!(error(&GOOD.replace("0.1.0", "0.2.0")), @r#"plugins/x/plugin.toml: `api-version` = "0.2.0": this host implements wulf:plugin@0.1.0; rebuild the plugin with wulf-sdk 0.1"#);
        insta::assert_snapshot!(error(&GOOD.replace("inventory-backend", "printer")), @r#"plugins/x/plugin.toml: `world` = "printer": expected overlay-generator, inventory-backend or image-transform"#);
        insta::assert_snapshot!(error(&GOOD.replace("\"csv\"", "\"../csv\"")), @r#"plugins/x/plugin.toml: `name` = "../csv": use lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit"#);
        insta::assert_snapshot!(error(&GOOD.replace("/srv/inventory", "srv")), @r#"plugins/x/plugin.toml: `capabilities.read-dirs` = "srv": must be an absolute path"#);
        insta::assert_snapshot!(error("name = \"x\"\n"), @r#"
        plugins/x/plugin.toml: TOML parse error at line 1, column 1
          |
        1 | name = "x"
          | ^
        missing field `version`
        "#);
    }
}
