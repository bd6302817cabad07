//! Where plugins come from: the first-party plugins embedded in the binary, and the plugins
//! directory (`<plugins>/<name>/{plugin.toml, plugin.wasm}`), where a plugin of the same name
//! overrides the embedded one. Install, remove, enable and disable live here too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wulf_core::atomic_file::{WriteLock, write_atomic};

use crate::component_check::{self, SurfaceError};
use crate::manifest::{API_VERSION, Manifest, ManifestError, Version, World, valid_name};
use crate::runtime::PluginPackage;

/// A plugin compiled into the `wulf` binary.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedPlugin {
    pub manifest: &'static str,
    pub wasm: &'static [u8],
}

/// Where a plugin was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Embedded,
    Directory(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Embedded => f.write_str("embedded"),
            Source::Directory(dir) => write!(f, "{}", dir.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no plugin named `{name}` (see `wulf plugin list`)")]
    NotFound { name: String },
    #[error("plugin `{name}` is disabled (enable it with `wulf plugin enable {name}`)")]
    Disabled { name: String },
    #[error("plugin `{name}` is already installed at {}; pass --force to replace it", path.display())]
    Exists { name: String, path: PathBuf },
    #[error(
        "plugin `{name}` is built into wulf and cannot be removed; `wulf plugin disable {name}` turns it off"
    )]
    EmbeddedOnly { name: String },
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("{}: {source}", path.display())]
    Surface { path: PathBuf, source: SurfaceError },
    #[error("{}: {reason}", path.display())]
    BadSource { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One plugin as `wulf plugin list` shows it. A plugin whose manifest is broken is still
/// listed, with the error, so the admin sees it.
#[derive(Debug, Clone)]
pub struct Listing {
    pub name: String,
    pub source: Source,
    pub manifest: Result<Manifest, String>,
    pub enabled: bool,
    /// A directory plugin that hides an embedded one of the same name.
    pub overrides_embedded: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    #[serde(default)]
    disabled: BTreeSet<String>,
}

pub struct Registry {
    dir: PathBuf,
    embedded: &'static [EmbeddedPlugin],
}

impl Registry {
    pub fn new(dir: impl Into<PathBuf>, embedded: &'static [EmbeddedPlugin]) -> Self {
        Registry {
            dir: dir.into(),
            embedded,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join(".state.toml")
    }

    fn state(&self) -> Result<State, RegistryError> {
        let path = self.state_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| RegistryError::BadSource {
                path,
                reason: e.to_string().trim_end().to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(RegistryError::Io { path, source }),
        }
    }

    fn embedded_manifest(plugin: &EmbeddedPlugin) -> Result<Manifest, ManifestError> {
        Manifest::parse(plugin.manifest, Path::new("<embedded>/plugin.toml"))
    }

    /// Every plugin, sorted by name: directory plugins first-class, embedded ones unless a
    /// directory plugin of the same name overrides them.
    pub fn list(&self) -> Result<Vec<Listing>, RegistryError> {
        let disabled = self.state()?.disabled;
        let mut listings = Vec::new();
        let mut dir_names = BTreeSet::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io(&self.dir))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') || !entry.path().is_dir() {
                        continue;
                    }
                    let manifest = Manifest::load(&entry.path().join("plugin.toml"))
                        .map_err(|e| e.to_string())
                        .and_then(|m| {
                            if m.name == name {
                                Ok(m)
                            } else {
                                Err(format!(
                                    "its manifest names it `{}`, but it is installed as `{name}`",
                                    m.name
                                ))
                            }
                        });
                    dir_names.insert(name.clone());
                    listings.push(Listing {
                        enabled: !disabled.contains(&name),
                        name,
                        source: Source::Directory(entry.path()),
                        manifest,
                        overrides_embedded: false,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RegistryError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        }
        for plugin in self.embedded {
            let manifest = Self::embedded_manifest(plugin).map_err(|e| e.to_string());
            let Ok(name) = manifest.as_ref().map(|m| m.name.clone()) else {
                continue;
            };
            if let Some(listing) = listings.iter_mut().find(|l| l.name == name) {
                listing.overrides_embedded = true;
                continue;
            }
            listings.push(Listing {
                enabled: !disabled.contains(&name),
                name,
                source: Source::Embedded,
                manifest,
                overrides_embedded: false,
            });
        }
        listings.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listings)
    }

    /// One plugin's listing.
    pub fn find(&self, name: &str) -> Result<Listing, RegistryError> {
        self.list()?
            .into_iter()
            .find(|l| l.name == name)
            .ok_or_else(|| RegistryError::NotFound {
                name: name.to_string(),
            })
    }

    /// The manifest and component of an enabled plugin.
    pub fn package(&self, name: &str) -> Result<PluginPackage, RegistryError> {
        let listing = self.find(name)?;
        if !listing.enabled {
            return Err(RegistryError::Disabled {
                name: name.to_string(),
            });
        }
        self.package_of(&listing)
    }

    /// The manifest and component of a listed plugin.
    pub fn package_of(&self, listing: &Listing) -> Result<PluginPackage, RegistryError> {
        match &listing.source {
            Source::Directory(dir) => {
                let manifest = Manifest::load(&dir.join("plugin.toml"))?;
                let wasm_path = dir.join("plugin.wasm");
                let wasm = std::fs::read(&wasm_path).map_err(io(&wasm_path))?;
                Ok(PluginPackage {
                    manifest,
                    wasm: wasm.into(),
                    embedded: false,
                })
            }
            Source::Embedded => {
                let plugin = self
                    .embedded
                    .iter()
                    .find(|p| Self::embedded_manifest(p).is_ok_and(|m| m.name == listing.name))
                    .ok_or_else(|| RegistryError::NotFound {
                        name: listing.name.clone(),
                    })?;
                Ok(PluginPackage {
                    manifest: Self::embedded_manifest(plugin)?,
                    wasm: Arc::from(plugin.wasm),
                    embedded: true,
                })
            }
        }
    }

    /// Installs a plugin from a directory holding `plugin.toml` and `plugin.wasm`, or from a
    /// bare component (`.wasm`), whose manifest is derived from what it exports. The plugin is
    /// checked before anything is written, then moved into place in one rename.
    pub fn install(
        &self,
        from: &Path,
        name: Option<&str>,
        force: bool,
    ) -> Result<Manifest, RegistryError> {
        let (manifest_text, wasm, manifest_path) = if from.is_dir() {
            let manifest_path = from.join("plugin.toml");
            let text = std::fs::read_to_string(&manifest_path).map_err(io(&manifest_path))?;
            let wasm_path = from.join("plugin.wasm");
            let wasm = std::fs::read(&wasm_path).map_err(io(&wasm_path))?;
            (text, wasm, manifest_path)
        } else {
            let wasm = std::fs::read(from).map_err(io(from))?;
            let text = derived_manifest(from, name, &wasm)?;
            (text, wasm, from.to_path_buf())
        };
        let manifest_text = match name {
            Some(name) => rename_manifest(&manifest_text, name, &manifest_path)?,
            None => manifest_text,
        };
        let manifest = Manifest::parse(&manifest_text, &manifest_path)?;
        let surface = component_check::surface(&wasm).map_err(|source| RegistryError::Surface {
            path: from.to_path_buf(),
            source,
        })?;
        component_check::check(&surface, manifest.world).map_err(|source| {
            RegistryError::Surface {
                path: from.to_path_buf(),
                source,
            }
        })?;

        let _lock = WriteLock::acquire(&self.dir.join(".lock")).map_err(io(&self.dir))?;
        let target = self.dir.join(&manifest.name);
        if target.exists() && !force {
            return Err(RegistryError::Exists {
                name: manifest.name.clone(),
                path: target,
            });
        }
        let staging = self
            .dir
            .join(format!(".install-{}-{}", manifest.name, std::process::id()));
        let stage = || -> std::io::Result<()> {
            std::fs::create_dir_all(&staging)?;
            write_atomic(&staging.join("plugin.toml"), manifest_text.as_bytes())?;
            write_atomic(&staging.join("plugin.wasm"), &wasm)?;
            if target.exists() {
                std::fs::remove_dir_all(&target)?;
            }
            std::fs::rename(&staging, &target)
        };
        if let Err(e) = stage() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(RegistryError::Io {
                path: target,
                source: e,
            });
        }
        Ok(manifest)
    }

    /// Removes an installed plugin (its directory).
    pub fn remove(&self, name: &str) -> Result<Listing, RegistryError> {
        let listing = self.find(name)?;
        let Source::Directory(dir) = &listing.source else {
            return Err(RegistryError::EmbeddedOnly {
                name: name.to_string(),
            });
        };
        let _lock = WriteLock::acquire(&self.dir.join(".lock")).map_err(io(&self.dir))?;
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
        Ok(listing)
    }

    /// Enables or disables a plugin (embedded or installed).
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), RegistryError> {
        self.find(name)?;
        let _lock = WriteLock::acquire(&self.dir.join(".lock")).map_err(io(&self.dir))?;
        let mut state = self.state()?;
        if enabled {
            state.disabled.remove(name);
        } else {
            state.disabled.insert(name.to_string());
        }
        let path = self.state_file();
        let text = toml::to_string(&state).unwrap_or_default();
        write_atomic(&path, text.as_bytes()).map_err(io(&path))
    }
}

/// A manifest for a bare component: the world from its export, the API version from the
/// export's package version, the name from `--name` or the file name.
fn derived_manifest(path: &Path, name: Option<&str>, wasm: &[u8]) -> Result<String, RegistryError> {
    let surface = component_check::surface(wasm).map_err(|source| RegistryError::Surface {
        path: path.to_path_buf(),
        source,
    })?;
    let (world, version) = surface
        .exports
        .iter()
        .find_map(|export| {
            let rest = export.strip_prefix("wulf:plugin/")?;
            let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
            let world = World::ALL.into_iter().find(|w| w.export() == iface)?;
            Some((world, Version::parse(version).unwrap_or(API_VERSION)))
        })
        .ok_or_else(|| RegistryError::BadSource {
            path: path.to_path_buf(),
            reason: "exports no wulf plugin interface (generator, backend or transform)".into(),
        })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase().replace('_', "-"))
        .unwrap_or_default();
    let name = name.map(str::to_string).unwrap_or(stem);
    if !valid_name(&name) {
        return Err(RegistryError::BadSource {
            path: path.to_path_buf(),
            reason: format!("`{name}` is not a valid plugin name; pass --name"),
        });
    }
    Ok(format!(
        "name = {name:?}\nversion = \"0.0.0\"\nworld = \"{world}\"\napi-version = \"{version}\"\ndescription = \"installed from {}\"\n",
        path.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default()
    ))
}

/// The manifest text with its `name` replaced.
fn rename_manifest(text: &str, name: &str, path: &Path) -> Result<String, RegistryError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| RegistryError::BadSource {
        path: path.to_path_buf(),
        reason: e.to_string().trim_end().to_string(),
    })?;
    table.insert("name".into(), toml::Value::String(name.to_string()));
    Ok(toml::to_string(&table).unwrap_or_default())
}
