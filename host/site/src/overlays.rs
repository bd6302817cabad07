//! Overlays: site overlay trees and generator plugins, who uses them, rendering one file for a
//! node, and building the per-node archives. Builds use the process's loaded plugins (no engine
//! or component is made per build) and keep one merged copy of the cluster, shared by the
//! renderer and the generators.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wulf_core::overlay_file::OverlayFile;
use wulf_core::provision::{NodeFailure, error_chain};
use wulf_core::{Node, OverlayGenerator};
use wulf_overlay::render::node_json;
use wulf_overlay::source::{self, SourceKind};
use wulf_overlay::{Renderer, Report};

use crate::Site;
use crate::error::{Result, SiteError};
use crate::plugins;
use crate::records::{Selection, expand};
use wulf_plugin::World;

/// What a build did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildReport {
    /// Nodes whose archives were written, in id order.
    pub built: Vec<String>,
    /// Archives whose inputs had not changed.
    pub unchanged: usize,
    pub shared_segments: usize,
    /// Nodes that could not be built, in id order; the others were.
    pub failed: Vec<NodeFailure>,
    pub took: Duration,
}

/// An overlay as `overlay list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OverlayListing {
    pub name: String,
    /// `site`, or `plugin (<source>)`.
    pub kind: String,
    pub files: usize,
    pub templates: usize,
    /// Nodes (merged) listing it.
    pub nodes: usize,
}

/// One file of an overlay as a node would get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The path on the node, e.g. `/etc/hosts`.
    pub path: String,
    pub file: OverlayFile,
}

impl Site {
    /// Builds the overlay archives of the selected nodes; only nodes whose inputs changed are
    /// written unless `force`. Nodes that cannot be built are in the report's `failed`; every
    /// other node is built.
    pub fn build_overlays(&self, selection: &Selection, force: bool) -> Result<BuildReport> {
        let started = Instant::now();
        let _span = tracing::debug_span!("overlay build").entered();
        let cluster: Arc<[Node]> = {
            let _span = tracing::debug_span!("inventory").entered();
            self.inventory()?.merged_nodes().into()
        };
        // A selection is a copy of its nodes; "all" is the cluster itself, not a second copy.
        let chosen: Option<Vec<Node>> = match selection {
            Selection::All => None,
            Selection::Patterns(patterns) => Some({
                let by_id: BTreeMap<&str, &Node> =
                    cluster.iter().map(|n| (n.id.as_str(), n)).collect();
                expand(patterns)?
                    .into_iter()
                    .map(|id| {
                        by_id.get(id.as_str()).map(|n| (*n).clone()).ok_or(
                            SiteError::RecordNotFound {
                                kind: crate::Kind::Node,
                                name: id,
                            },
                        )
                    })
                    .collect::<Result<_>>()?
            }),
        };
        let selected: &[Node] = chosen.as_deref().unwrap_or(&cluster);
        let names: BTreeSet<String> = selected
            .iter()
            .flat_map(|n| n.system_overlays.iter().chain(&n.runtime_overlays).cloned())
            .collect();
        let renderer = self.renderer(&names, Arc::clone(&cluster))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let Report {
            built,
            unchanged,
            shared_segments,
            failed,
        } = self.archives.build(&renderer, selected, force, threads)?;
        let failed = failed
            .into_iter()
            .map(|(node, error)| NodeFailure {
                node,
                error: error_chain(&error),
            })
            .collect();
        Ok(BuildReport {
            built,
            unchanged,
            shared_segments,
            failed,
            took: started.elapsed(),
        })
    }

    /// The enabled overlay-generator plugins, by name.
    pub(crate) fn generator_plugins(&self) -> Result<BTreeSet<String>> {
        Ok(self
            .registry()
            .list()?
            .into_iter()
            .filter(|l| {
                l.enabled
                    && l.manifest
                        .as_ref()
                        .is_ok_and(|m| m.world == World::OverlayGenerator)
            })
            .map(|l| l.name)
            .collect())
    }

    /// Whether an overlay list's `name` is something: a site overlay, the built-in `agent`, or
    /// one of the enabled `generators` ([`Site::generator_plugins`]).
    pub(crate) fn overlay_exists(&self, name: &str, generators: &BTreeSet<String>) -> bool {
        self.overlays.exists(name) || name == crate::AGENT_OVERLAY || generators.contains(name)
    }

    /// A renderer for the overlays `names`, with the generators among them loaded.
    fn renderer(&self, names: &BTreeSet<String>, cluster: Arc<[Node]>) -> Result<Renderer> {
        let _span = tracing::debug_span!("renderer").entered();
        self.refresh();
        let mut generators: BTreeMap<String, Arc<dyn OverlayGenerator>> = BTreeMap::new();
        let mut identities = Vec::new();
        let enabled = self.generator_plugins()?;
        for name in names {
            if self.overlays.exists(name) {
                continue;
            }
            // Built in, before plugins.
            if name == crate::AGENT_OVERLAY {
                let agent = self.agent_overlay()?;
                identities.push((name.clone(), agent.identity.clone()));
                generators.insert(name.clone(), Arc::new(agent));
                continue;
            }
            if !enabled.contains(name) {
                continue;
            }
            let plugin = self.plugin(name)?;
            if let Some(generator) = plugins::overlay_generator(&plugin) {
                generators.insert(name.clone(), generator);
                identities.push((name.clone(), plugin.identity.clone()));
            }
        }
        let build_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut renderer = Renderer::new(
            &self.overlays,
            &generators,
            names,
            cluster,
            &self.server(),
            build_time,
        )?;
        for (name, identity) in identities {
            renderer.set_identity(&name, identity);
        }
        if renderer.reads_images() {
            let files = Arc::new(wulf_image::ImageFiles::new(self.images.clone()));
            let identity = files.identity();
            renderer.set_image_reader(
                Arc::new(move |image: &str, path: &str| {
                    let content = files
                        .read(image, path)
                        .map_err(|e| crate::error_chain(&e))?;
                    String::from_utf8(content.to_vec())
                        .map_err(|_| format!("{path} in image `{image}` is not text"))
                }),
                identity,
            );
        }
        Ok(renderer)
    }

    /// One file of overlay `overlay` as node `node` would get it (`/etc/hosts`, or the
    /// template's name with `.ww`).
    pub fn render_file(&self, overlay: &str, file: &str, node: &str) -> Result<Rendered> {
        let inventory = self.inventory()?;
        let merged = inventory.merged(node)?.node;
        let cluster: Arc<[Node]> = inventory.merged_nodes().into();
        let renderer = self.renderer(&BTreeSet::from([overlay.to_owned()]), cluster)?;
        let files = renderer.render(&merged, &node_json(&merged), &[overlay.to_owned()])?;
        let wanted = if file.starts_with('/') {
            file.to_owned()
        } else {
            format!("/{file}")
        };
        let wanted = wanted.strip_suffix(".ww").unwrap_or(&wanted).to_string();
        match files.get(&wanted) {
            Some(found) => Ok(Rendered {
                path: wanted,
                file: found.clone(),
            }),
            None => Err(SiteError::NotRendered {
                overlay: overlay.to_owned(),
                file: wanted,
                node: node.to_owned(),
                rendered: files.keys().cloned().collect(),
            }),
        }
    }

    /// Nodes and profiles listing each overlay: `profile <name>` for profiles (their own
    /// lists, negations included), node ids for nodes (merged lists).
    pub fn overlay_users(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let inventory = self.inventory()?;
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, profile) in &inventory.profiles {
            for o in profile
                .system_overlays
                .iter()
                .chain(&profile.runtime_overlays)
            {
                users
                    .entry(o.trim_start_matches('~').to_string())
                    .or_default()
                    .push(format!("profile {id}"));
            }
        }
        for node in inventory.merged_nodes() {
            for o in node.system_overlays.iter().chain(&node.runtime_overlays) {
                let list = users.entry(o.clone()).or_default();
                if !list.contains(&node.id) {
                    list.push(node.id.clone());
                }
            }
        }
        Ok(users)
    }

    /// Site overlays, the built-in `agent` and overlay-generator plugins (a site overlay hides
    /// the others of the same name), by name.
    pub fn list_overlays(&self) -> Result<Vec<OverlayListing>> {
        let users = self.overlay_users()?;
        let nodes = |name: &str| {
            users.get(name).map_or(0, |u| {
                u.iter().filter(|u| !u.starts_with("profile ")).count()
            })
        };
        let mut out = Vec::new();
        for name in self.overlays.list()? {
            let files = self.overlays.files(&name)?;
            let templates = files
                .iter()
                .filter(|f| matches!(f.kind, SourceKind::Template(_)))
                .count();
            out.push(OverlayListing {
                nodes: nodes(&name),
                name,
                kind: "site".into(),
                files: files.len(),
                templates,
            });
        }
        if !self.overlays.exists(crate::AGENT_OVERLAY) {
            out.push(OverlayListing {
                nodes: nodes(crate::AGENT_OVERLAY),
                name: crate::AGENT_OVERLAY.into(),
                kind: "built-in".into(),
                files: 0,
                templates: 0,
            });
        }
        for listing in self.registry().list()? {
            if listing
                .manifest
                .as_ref()
                .is_ok_and(|m| m.world == World::OverlayGenerator)
                && !self.overlays.exists(&listing.name)
            {
                out.push(OverlayListing {
                    nodes: nodes(&listing.name),
                    kind: format!("plugin ({})", listing.source),
                    name: listing.name,
                    files: 0,
                    templates: 0,
                });
            }
        }
        out.sort();
        Ok(out)
    }

    /// Creates an empty site overlay.
    pub fn create_overlay(&self, name: &str) -> Result<PathBuf> {
        source::validate_name(name)?;
        let path = self.overlays.path(name);
        if path.exists() {
            return Err(SiteError::OverlayExists {
                name: name.to_owned(),
            });
        }
        std::fs::create_dir_all(&path).map_err(SiteError::io(&path))?;
        Ok(path)
    }

    /// Deletes a site overlay no node or profile lists, or any with `force`.
    pub fn delete_overlay(&self, name: &str, force: bool) -> Result<()> {
        self.overlay_dir(name)?;
        if !force && let Some(users) = self.overlay_users()?.remove(name) {
            return Err(SiteError::OverlayInUse {
                name: name.to_owned(),
                users,
            });
        }
        let path = self.overlays.path(name);
        std::fs::remove_dir_all(&path).map_err(SiteError::io(&path))
    }

    /// The directory of an existing site overlay.
    fn overlay_dir(&self, name: &str) -> Result<PathBuf> {
        if !self.overlays.exists(name) {
            return Err(SiteError::OverlayNotFound {
                name: name.to_owned(),
            });
        }
        Ok(self.overlays.path(name))
    }

    /// Where `file` (a path on the node, or a template's with `.ww`) lives in an existing site
    /// overlay; its parent directories are created.
    pub fn overlay_file(&self, name: &str, file: &str) -> Result<PathBuf> {
        self.overlay_dir(name)?;
        let path = self.overlays.file_path(name, file)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(SiteError::io(parent))?;
        }
        Ok(path)
    }

    /// Creates a directory in a site overlay.
    pub fn overlay_mkdir(&self, name: &str, dir: &str, mode: u32) -> Result<()> {
        let path = self.overlay_file(name, dir)?;
        std::fs::create_dir_all(&path).map_err(SiteError::io(&path))?;
        set_mode(&path, mode)
    }

    /// Copies a host file into a site overlay as `dest`.
    pub fn overlay_import(
        &self,
        name: &str,
        from: &std::path::Path,
        dest: &str,
        mode: Option<u32>,
    ) -> Result<PathBuf> {
        let path = self.overlay_file(name, dest)?;
        std::fs::copy(from, &path).map_err(SiteError::io(from))?;
        if let Some(mode) = mode {
            set_mode(&path, mode)?;
        }
        Ok(path)
    }

    pub fn overlay_chmod(&self, name: &str, file: &str, mode: u32) -> Result<()> {
        set_mode(&self.overlay_file(name, file)?, mode)
    }

    pub fn overlay_chown(&self, name: &str, file: &str, uid: u32, gid: Option<u32>) -> Result<()> {
        let path = self.overlay_file(name, file)?;
        std::os::unix::fs::lchown(&path, Some(uid), gid).map_err(SiteError::io(&path))
    }
}

fn set_mode(path: &std::path::Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(SiteError::io(path))
}
