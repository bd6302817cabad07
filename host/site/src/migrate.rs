//! Moving a Warewulf 4.4-4.7 site in one command: `nodes.conf`, `warewulf.conf`, the site
//! overlays (Go templates translated) and the images (chroots).
//!
//! [`Site::plan_warewulf`] reads everything and checks every name against what the site has,
//! writing nothing: a dry run is the plan's report, and a bad input stops here with one
//! message. [`Site::apply_warewulf`] writes the plan: images first (the slow part), then
//! overlays, the configuration and last the inventory; a failure removes what it had written.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use wulf_core::Inventory;
use wulf_core::validation::RecordKind;
use wulf_core::warewulf_import::{self, ImportError, conf};
use wulf_image::{ImportOptions, Progress, Source};
use wulf_overlay::go_template::{self, Remark};

use crate::Site;
use crate::error::{Result, SiteError};

/// Where Warewulf keeps its configuration.
pub const WAREWULF_DIR: &str = "/etc/warewulf";

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ReportLine {
    pub kind: ReportKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportKind {
    /// Became something else in wulf.
    Mapped,
    /// Translated with a difference to know of.
    Note,
    /// Left behind, with the reason and what to do.
    NotMapped,
    /// A template kept as a copy, not installed.
    Untranslated,
}

impl ReportKind {
    pub fn label(self) -> &'static str {
        match self {
            ReportKind::Mapped => "mapped",
            ReportKind::Note => "note",
            ReportKind::NotMapped => "not mapped",
            ReportKind::Untranslated => "untranslated",
        }
    }
}

/// A file of a site overlay as it will be written.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    /// Relative to the overlay, as in Warewulf's `rootfs/` (a template keeps its `.ww`).
    pub path: String,
    pub kind: PlannedKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub enum PlannedKind {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
    /// A Go template translated to minijinja.
    Template(String),
    /// A Go template that did not translate: kept outside the overlay, not installed.
    Untranslated(String),
}

#[derive(Debug, Clone)]
pub struct PlannedOverlay {
    pub name: String,
    pub source: PathBuf,
    pub files: Vec<PlannedFile>,
}

impl PlannedOverlay {
    fn count(&self, what: fn(&PlannedKind) -> bool) -> usize {
        self.files.iter().filter(|f| what(&f.kind)).count()
    }
    pub fn templates(&self) -> usize {
        self.count(|k| matches!(k, PlannedKind::Template(_)))
    }
    pub fn untranslated(&self) -> usize {
        self.count(|k| matches!(k, PlannedKind::Untranslated(_)))
    }
}

#[derive(Debug, Clone)]
pub struct PlannedImage {
    pub name: String,
    pub rootfs: PathBuf,
}

/// Everything an import would write, and the report.
#[derive(Debug, Clone)]
pub struct WarewulfPlan {
    pub from: PathBuf,
    pub inventory: Inventory,
    /// The `wulf.toml` to write, and where; `None` without a warewulf.conf.
    pub config: Option<(PathBuf, String)>,
    pub overlays: Vec<PlannedOverlay>,
    pub images: Vec<PlannedImage>,
    pub report: Vec<ReportLine>,
    /// Replace what exists.
    pub force: bool,
}

impl WarewulfPlan {
    fn say(&mut self, kind: ReportKind, text: impl Into<String>) {
        self.report.push(ReportLine {
            kind,
            text: text.into(),
        });
    }
}

/// Where untranslated templates are kept: `<state>/import/warewulf/<overlay>/<path>`.
fn untranslated_dir(site: &Site) -> PathBuf {
    site.state.root().join("import").join("warewulf")
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| SiteError::WarewulfRead {
        path: path.to_path_buf(),
        source,
    })
}

fn bad_file(path: &Path) -> impl FnOnce(ImportError) -> SiteError + '_ {
    move |source| SiteError::WarewulfFile {
        path: path.to_path_buf(),
        source,
    }
}

fn conflict(what: &'static str, name: &str, why: impl Into<String>) -> SiteError {
    SiteError::MigrationConflict {
        what,
        name: name.to_owned(),
        why: why.into(),
    }
}

/// Only comments and blank lines: the packaged wulf.toml before anyone set anything.
fn only_comments(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

impl Site {
    /// Reads a Warewulf install (`from` is its configuration directory, usually
    /// [`WAREWULF_DIR`]) and plans its import, writing nothing. Without `force`, a profile,
    /// node, overlay, image or configuration the site already has is a conflict.
    pub fn plan_warewulf(&self, from: &Path, force: bool) -> Result<WarewulfPlan> {
        let meta = std::fs::metadata(from).map_err(|source| SiteError::WarewulfRead {
            path: from.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(SiteError::WarewulfRead {
                path: from.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "not a directory (give the directory holding nodes.conf and warewulf.conf)",
                ),
            });
        }
        let nodes_path = from.join("nodes.conf");
        let imported =
            warewulf_import::import(&read_text(&nodes_path)?).map_err(bad_file(&nodes_path))?;
        let conf_path = from.join("warewulf.conf");
        let server = match conf_path.exists() {
            true => Some(
                conf::read(&read_text(&conf_path)?, &imported.network_overlays)
                    .map_err(bad_file(&conf_path))?,
            ),
            false => None,
        };
        let mut plan = WarewulfPlan {
            from: from.to_path_buf(),
            inventory: Inventory {
                profiles: imported.profiles,
                nodes: imported.nodes,
            },
            config: None,
            overlays: Vec::new(),
            images: Vec::new(),
            report: Vec::new(),
            force,
        };
        for line in imported.mapped {
            plan.say(ReportKind::Mapped, format!("nodes.conf: {line}"));
        }
        for line in imported.unmapped {
            plan.say(ReportKind::NotMapped, format!("nodes.conf: {line}"));
        }
        self.check_records(&plan.inventory, force)?;

        let (overlay_dir, chroot_dir) = match &server {
            Some(s) => (s.overlay_dir.clone(), s.chroot_dir.clone()),
            None => conf::default_dirs(),
        };
        match server {
            Some(server) => {
                let path = self.config_file();
                self.check_config_conflict(&path, force)?;
                wulf_core::config::Config::parse(&server.toml, &path, &self.state)?;
                for line in server.mapped {
                    plan.say(ReportKind::Mapped, line);
                }
                for line in server.unmapped {
                    plan.say(ReportKind::NotMapped, line);
                }
                plan.config = Some((path, server.toml));
            }
            None => plan.say(
                ReportKind::NotMapped,
                format!(
                    "no warewulf.conf in {}: wulf.toml is left as it is",
                    from.display()
                ),
            ),
        }
        self.plan_overlays(&mut plan, &overlay_dir, from)?;
        self.plan_images(&mut plan, &chroot_dir)?;
        Ok(plan)
    }

    fn check_records(&self, incoming: &Inventory, force: bool) -> Result<()> {
        if force {
            return Ok(());
        }
        let existing = self.store.load()?;
        let shipped = Inventory::shipped();
        for id in incoming.profiles.keys() {
            let untouched_default =
                id == "default" && existing.profiles.get(id) == shipped.profiles.get(id);
            if existing.profiles.contains_key(id) && !untouched_default {
                return Err(SiteError::ImportConflict {
                    kind: RecordKind::Profile,
                    name: id.clone(),
                });
            }
        }
        if let Some(id) = incoming
            .nodes
            .keys()
            .find(|id| existing.nodes.contains_key(*id))
        {
            return Err(SiteError::ImportConflict {
                kind: RecordKind::Node,
                name: id.clone(),
            });
        }
        Ok(())
    }

    fn check_config_conflict(&self, path: &Path, force: bool) -> Result<()> {
        if force {
            return Ok(());
        }
        match std::fs::read_to_string(path) {
            Ok(text) if !only_comments(&text) => Err(conflict(
                "configuration",
                &path.display().to_string(),
                "has settings; pass --force to replace it (the old file is kept beside it as .before-import)",
            )),
            _ => Ok(()),
        }
    }

    fn plan_overlays(&self, plan: &mut WarewulfPlan, dir: &Path, sysconf: &Path) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                plan.say(
                    ReportKind::NotMapped,
                    format!("no site overlays: {} does not exist", dir.display()),
                );
                return Ok(());
            }
            Err(source) => {
                return Err(SiteError::WarewulfRead {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let registry = self.registry();
        let mut distribution = Vec::new();
        for name in names {
            if let Some((wulf, _)) = warewulf_import::is_distribution_overlay(&name) {
                distribution.push(match wulf {
                    Some(plugin) if plugin != name => format!("{name} (plugin {plugin})"),
                    _ => name,
                });
                continue;
            }
            wulf_overlay::source::validate_name(&name).map_err(|_| {
                conflict(
                    "overlay",
                    &name,
                    "is not a valid wulf overlay name (letters, digits, `_`, `-`, `.`); rename it in Warewulf first",
                )
            })?;
            if registry.find(&name).is_ok() {
                return Err(conflict(
                    "overlay",
                    &name,
                    "has the name of a wulf plugin, which a site overlay would hide; rename it in Warewulf (and in nodes.conf) first",
                ));
            }
            if self.overlays.exists(&name) && !plan.force {
                return Err(conflict(
                    "overlay",
                    &name,
                    "already exists; pass --force to replace it",
                ));
            }
            let source = dir.join(&name);
            let root = match source.join("rootfs") {
                r if r.is_dir() => r,
                _ => source.clone(),
            };
            let mut files = Vec::new();
            walk(&root, &root, &mut files)?;
            let mut overlay = PlannedOverlay {
                name: name.clone(),
                source: root,
                files: Vec::new(),
            };
            for mut file in files {
                if let PlannedKind::File(bytes) = &file.kind
                    && file.path.ends_with(".ww")
                {
                    let Ok(go) = std::str::from_utf8(bytes) else {
                        plan.say(
                            ReportKind::Untranslated,
                            format!(
                                "overlay `{name}`: {}: not UTF-8 text; kept as a plain file",
                                file.path
                            ),
                        );
                        continue;
                    };
                    let source = format!("{}/{}", overlay.source.display(), file.path);
                    let t = go_template::translate(
                        go,
                        go_template::Origin {
                            source: &source,
                            sysconf: &sysconf.display().to_string(),
                        },
                    );
                    let say = |remark: &Remark| {
                        format!(
                            "overlay `{name}`: {} line {}: {}",
                            file.path, remark.line, remark.text
                        )
                    };
                    for note in &t.notes {
                        plan.say(ReportKind::Note, say(note));
                    }
                    if t.problems.is_empty() {
                        file.kind = PlannedKind::Template(t.text);
                    } else {
                        let kept = untranslated_dir(self).join(&name).join(&file.path);
                        for problem in &t.problems {
                            plan.say(ReportKind::Untranslated, say(problem));
                        }
                        plan.say(
                            ReportKind::Untranslated,
                            format!(
                                "overlay `{name}`: {} is not installed; its Go template is kept in {}: translate it by hand into overlays/{name}/{}",
                                file.path,
                                kept.display(),
                                file.path
                            ),
                        );
                        let mut header = String::from(
                            "# wulf import warewulf: this Go template did not translate; nodes do not get it.\n",
                        );
                        for p in &t.problems {
                            header.push_str(&format!("# line {}: {}\n", p.line, p.text));
                        }
                        file.kind = PlannedKind::Untranslated(format!("{header}{go}"));
                    }
                }
                overlay.files.push(file);
            }
            plan.say(
                ReportKind::Mapped,
                format!(
                    "overlay `{name}`: {} file(s), {} template(s) translated{}",
                    overlay.files.len(),
                    overlay.templates(),
                    match overlay.untranslated() {
                        0 => String::new(),
                        n => format!(", {n} not"),
                    }
                ),
            );
            plan.overlays.push(overlay);
        }
        if !distribution.is_empty() {
            plan.say(
                ReportKind::Mapped,
                format!(
                    "Warewulf's own overlays in {} are not copied: wulf's plugins of the same job replace them ({})",
                    dir.display(),
                    distribution.join(", ")
                ),
            );
        }
        Ok(())
    }

    fn plan_images(&self, plan: &mut WarewulfPlan, dir: &Path) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                plan.say(
                    ReportKind::NotMapped,
                    format!("no images: {} does not exist", dir.display()),
                );
                return Ok(());
            }
            Err(source) => {
                return Err(SiteError::WarewulfRead {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let used: BTreeSet<String> = plan
            .inventory
            .profiles
            .values()
            .chain(plan.inventory.nodes.values())
            .filter_map(|r| r.image.clone())
            .collect();
        let mut images = Vec::new();
        for name in names {
            let rootfs = dir.join(&name).join("rootfs");
            let has_shell = ["bin/sh", "usr/bin/sh"]
                .iter()
                .any(|sh| std::fs::symlink_metadata(rootfs.join(sh)).is_ok());
            if !has_shell {
                plan.say(
                    ReportKind::NotMapped,
                    format!(
                        "image `{name}`: {} has no /bin/sh, so it is no image Warewulf could build; import it yourself with `wulf image import`",
                        rootfs.display()
                    ),
                );
                continue;
            }
            wulf_image::store::validate_name(&name).map_err(|_| {
                conflict(
                    "image",
                    &name,
                    "is not a valid wulf image name (letters, digits, `_`, `-`, `.`, `:`); rename it in Warewulf first",
                )
            })?;
            if self.images.exists(&name) && !plan.force {
                return Err(conflict(
                    "image",
                    &name,
                    "already exists; pass --force to replace it",
                ));
            }
            plan.say(
                ReportKind::Mapped,
                format!(
                    "image `{name}`: {} -> image `{name}`, built{}",
                    rootfs.display(),
                    if used.contains(&name) {
                        ""
                    } else {
                        " (no node or profile uses it)"
                    }
                ),
            );
            images.push(PlannedImage { name, rootfs });
        }
        for name in used {
            if !images.iter().any(|i| i.name == name) && !self.images.exists(&name) {
                plan.say(
                    ReportKind::NotMapped,
                    format!(
                        "image `{name}` is named in nodes.conf but not found in {}: import it with `wulf image import`",
                        dir.display()
                    ),
                );
            }
        }
        plan.images = images;
        Ok(())
    }

    /// Writes a plan: images (imported and built), overlays, the configuration, the
    /// inventory. On a failure what this call wrote is removed again.
    pub async fn apply_warewulf(
        &self,
        plan: &WarewulfPlan,
        progress: Arc<dyn Progress>,
    ) -> Result<()> {
        let mut written = Written::default();
        let result = self.write_plan(plan, progress, &mut written).await;
        if result.is_err() {
            written.undo(self);
        }
        result
    }

    async fn write_plan(
        &self,
        plan: &WarewulfPlan,
        progress: Arc<dyn Progress>,
        written: &mut Written,
    ) -> Result<()> {
        let options = ImportOptions {
            force: plan.force,
            ..ImportOptions::default()
        };
        for image in &plan.images {
            let existed = self.images.exists(&image.name);
            self.import_image(
                &Source::Chroot(image.rootfs.clone()),
                &image.name,
                &options,
                Some(0),
                Arc::clone(&progress),
            )
            .await?;
            if !existed {
                written.images.push(image.name.clone());
            }
        }
        for overlay in &plan.overlays {
            self.write_overlay(overlay, written)?;
        }
        if let Some((path, text)) = &plan.config {
            if path.exists() {
                let backup = path.with_extension("toml.before-import");
                std::fs::copy(path, &backup).map_err(SiteError::io(&backup))?;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(SiteError::io(parent))?;
            }
            wulf_core::atomic_file::write_atomic(path, text.as_bytes())
                .map_err(SiteError::io(path))?;
        }
        self.import_inventory(&plan.inventory, plan.force)?;
        Ok(())
    }

    fn write_overlay(&self, overlay: &PlannedOverlay, written: &mut Written) -> Result<()> {
        let final_dir = self.overlays.path(&overlay.name);
        let staged = final_dir.with_file_name(format!(".import-{}", overlay.name));
        let _ = std::fs::remove_dir_all(&staged);
        std::fs::create_dir_all(&staged).map_err(SiteError::io(&staged))?;
        written.staged.push(staged.clone());
        let root = rustix::process::geteuid().is_root();
        for file in &overlay.files {
            let (dir, rel) = match &file.kind {
                PlannedKind::Untranslated(_) => {
                    (untranslated_dir(self).join(&overlay.name), &file.path)
                }
                _ => (staged.clone(), &file.path),
            };
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(SiteError::io(parent))?;
            }
            match &file.kind {
                PlannedKind::Dir => {
                    std::fs::create_dir_all(&path).map_err(SiteError::io(&path))?;
                }
                PlannedKind::File(bytes) => {
                    std::fs::write(&path, bytes).map_err(SiteError::io(&path))?;
                }
                PlannedKind::Template(text) | PlannedKind::Untranslated(text) => {
                    std::fs::write(&path, text).map_err(SiteError::io(&path))?;
                }
                PlannedKind::Symlink(target) => {
                    std::os::unix::fs::symlink(target, &path).map_err(SiteError::io(&path))?;
                }
            }
            if !matches!(file.kind, PlannedKind::Symlink(_)) {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
                    .map_err(SiteError::io(&path))?;
            }
            if root {
                std::os::unix::fs::lchown(&path, Some(file.uid), Some(file.gid))
                    .map_err(SiteError::io(&path))?;
            }
        }
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(SiteError::io(&final_dir))?;
        }
        std::fs::rename(&staged, &final_dir).map_err(SiteError::io(&final_dir))?;
        written.staged.retain(|s| s != &staged);
        written.overlays.push(final_dir);
        Ok(())
    }
}

/// What an apply wrote, to remove on failure.
#[derive(Default)]
struct Written {
    images: Vec<String>,
    staged: Vec<PathBuf>,
    overlays: Vec<PathBuf>,
}

impl Written {
    fn undo(self, site: &Site) {
        for dir in self.staged.iter().chain(&self.overlays) {
            let _ = std::fs::remove_dir_all(dir);
        }
        for image in &self.images {
            let _ = site.images.delete(image);
        }
    }
}

/// Every entry below `root`, sorted, as planned files.
fn walk(root: &Path, dir: &Path, out: &mut Vec<PlannedFile>) -> Result<()> {
    let read = |source| SiteError::WarewulfRead {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(read)?
        .collect::<std::result::Result<_, _>>()
        .map_err(|source| SiteError::WarewulfRead {
            path: dir.to_path_buf(),
            source,
        })?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let failed = |source| SiteError::WarewulfRead {
            path: path.clone(),
            source,
        };
        let meta = std::fs::symlink_metadata(&path).map_err(failed)?;
        let kind = if meta.is_dir() {
            PlannedKind::Dir
        } else if meta.file_type().is_symlink() {
            PlannedKind::Symlink(std::fs::read_link(&path).map_err(|source| {
                SiteError::WarewulfRead {
                    path: path.clone(),
                    source,
                }
            })?)
        } else if meta.is_file() {
            PlannedKind::File(
                std::fs::read(&path).map_err(|source| SiteError::WarewulfRead {
                    path: path.clone(),
                    source,
                })?,
            )
        } else {
            continue;
        };
        let is_dir = matches!(kind, PlannedKind::Dir);
        out.push(PlannedFile {
            path: rel,
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
        if is_dir {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}
