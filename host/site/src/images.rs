//! Images: import, build (with the transforms their settings name), copy, rename and delete,
//! and who uses them. A rename rewrites every node and profile naming the image under the same
//! lock, all or nothing; an image in use is not deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use wulf_core::ImageTransform;
use wulf_image::exec::RunOptions;
use wulf_image::kernel::Kernel;
use wulf_image::store::{ImageMeta, Settings};
use wulf_image::{Compression, ImportBuild, ImportOptions, Progress, Source};

use crate::Site;
use crate::error::{Result, SiteError};
use crate::plugins;

/// An image and the records using it: node ids, and `profile <name>` for profiles.
#[derive(Debug, Clone)]
pub struct ImageUse {
    pub meta: ImageMeta,
    pub users: Vec<String>,
}

impl ImageUse {
    /// How many nodes (not profiles) use it.
    pub fn nodes(&self) -> usize {
        self.users
            .iter()
            .filter(|u| !u.starts_with("profile "))
            .count()
    }
}

/// What `image exec` came to.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    /// The command's exit code (128 + the signal when it was killed).
    pub code: i32,
    /// The image as written when the command succeeded and changed it; `None`: unchanged.
    pub meta: Option<ImageMeta>,
}

/// What `image syncuser` found and did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub plan: wulf_image::users::Plan,
    /// Files given new owners, when written.
    pub reowned: Option<usize>,
    /// The image as written.
    pub meta: Option<ImageMeta>,
}

/// Changing an image keeps owners and makes namespaces and mounts: root only.
fn needs_root(what: &'static str) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err(SiteError::NeedsRoot { what })
    }
}

/// A kernel found in an image, and the nodes whose kernel selection lands on it.
#[derive(Debug, Clone)]
pub struct KernelUse {
    pub image: String,
    pub kernel: Kernel,
    pub default: bool,
    pub nodes: Vec<String>,
}

/// Build settings to change before a build; `None` keeps what the image remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildSettings {
    pub compression: Option<Compression>,
    pub level: Option<u32>,
    /// Image-transform plugins, in order; empty names are dropped (`''` clears the list).
    pub transforms: Option<Vec<String>>,
    pub mtime: Option<u64>,
}

impl BuildSettings {
    fn changes_anything(&self) -> bool {
        self != &BuildSettings::default()
    }

    fn apply(&self, settings: &mut Settings) {
        if let Some(c) = self.compression {
            settings.compression = c;
            settings.level = None;
        }
        if self.level.is_some() {
            settings.level = self.level;
        }
        if let Some(t) = &self.transforms {
            settings.transforms = t.iter().filter(|t| !t.is_empty()).cloned().collect();
        }
        if self.mtime.is_some() {
            settings.mtime = self.mtime;
        }
    }
}

impl Site {
    /// Imports `source` as `name` and, with `build` (compression threads, 0 for all cores),
    /// builds it with the transforms of its settings (a re-import keeps them), all before the
    /// new image replaces an old one: nothing changes, and a replaced image keeps serving,
    /// unless the whole import and build succeed.
    pub async fn import_image(
        &self,
        source: &Source,
        name: &str,
        options: &ImportOptions,
        build: Option<usize>,
        progress: Arc<dyn Progress>,
    ) -> Result<ImageMeta> {
        let transforms = match build {
            Some(_) => {
                let settings = self
                    .images
                    .get(name)
                    .map(|m| m.settings)
                    .unwrap_or_default();
                self.image_transforms(&settings)?
            }
            None => Vec::new(),
        };
        let build = build.map(|threads| ImportBuild {
            transforms: &transforms,
            threads,
        });
        Ok(self
            .images
            .import(source, name, options, build, progress)
            .await?)
    }

    /// Builds an image's initramfs, first recording `settings`; the transforms its settings
    /// name run in order. A failed build leaves the last good archive in place.
    pub fn build_image(
        &self,
        name: &str,
        settings: &BuildSettings,
        threads: usize,
        progress: &dyn Progress,
    ) -> Result<ImageMeta> {
        if let Some(transforms) = &settings.transforms {
            let registry = self.registry();
            for t in transforms.iter().filter(|t| !t.is_empty()) {
                registry
                    .find(t)
                    .map_err(|source| SiteError::UnknownTransform {
                        name: t.clone(),
                        source,
                    })?;
            }
        }
        if settings.changes_anything() {
            self.images.update_settings(name, |s| settings.apply(s))?;
        }
        let transforms = self.image_transforms(&self.images.get(name)?.settings)?;
        self.images
            .build(name, &transforms, threads, progress)
            .map_err(|source| SiteError::ImageBuild {
                image: name.to_owned(),
                source: Box::new(source),
            })
    }

    /// The transforms an image's settings name, loaded, in order.
    fn image_transforms(&self, settings: &Settings) -> Result<Vec<Arc<dyn ImageTransform>>> {
        self.refresh();
        settings
            .transforms
            .iter()
            .map(|t| plugins::image_transform(&self.plugin(t)?))
            .collect()
    }

    /// Runs `command` inside image `name` (see [`wulf_image::exec`]); when it succeeds and
    /// changed the image, the image is replaced by the changed tree and, with `build`, built,
    /// all before the swap, so the previous image serves until then. A failed command changes
    /// nothing. Root only.
    pub fn exec_image(
        &self,
        name: &str,
        command: &[String],
        options: &RunOptions,
        build: bool,
        threads: usize,
        progress: &dyn Progress,
    ) -> Result<ExecOutcome> {
        needs_root("image exec")?;
        let tree = self.images.unpack_tree(name)?;
        let ran = wulf_image::exec::run_in(&tree.root, command, options)?;
        let code = ran.status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&ran.status).unwrap_or(0)
        });
        if !ran.status.success() || !ran.changed {
            return Ok(ExecOutcome { code, meta: None });
        }
        let meta = self.commit_image(name, &tree, build, threads, progress)?;
        Ok(ExecOutcome {
            code,
            meta: Some(meta),
        })
    }

    /// Makes a changed tree image `name`, built with its transforms unless `build` is off.
    fn commit_image(
        &self,
        name: &str,
        tree: &wulf_image::store::WorkTree,
        build: bool,
        threads: usize,
        progress: &dyn Progress,
    ) -> Result<ImageMeta> {
        let transforms = if build {
            self.image_transforms(&self.images.get(name)?.settings)?
        } else {
            Vec::new()
        };
        self.images
            .commit_tree(name, tree, &transforms, build, threads, progress)
            .map_err(|source| SiteError::ImageBuild {
                image: name.to_owned(),
                source: Box::new(source),
            })
    }

    /// How image `name`'s users and groups differ from the host's, and, with `write`, makes
    /// them agree (the image rewritten and, with `build`, built before it replaces the old one;
    /// root only). A conflict writes nothing.
    pub fn syncuser_image(
        &self,
        name: &str,
        write: bool,
        build: bool,
        threads: usize,
        progress: &dyn Progress,
    ) -> Result<SyncReport> {
        let host = wulf_image::users::Accounts::read(std::path::Path::new("/"))?;
        if !write {
            // Read from the rootfs as it is: no unpacking, no root needed. A file the image
            // lacks reads as empty.
            self.images.get(name)?;
            let files = wulf_image::ImageFiles::new(self.images.clone());
            let text = |path: &str| {
                files
                    .read(name, path)
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default()
            };
            let image = wulf_image::users::Accounts {
                passwd: text("/etc/passwd"),
                group: text("/etc/group"),
            };
            return Ok(SyncReport {
                plan: wulf_image::users::plan(&image, &host),
                reowned: None,
                meta: None,
            });
        }
        needs_root("image syncuser --write")?;
        let tree = self.images.unpack_tree(name)?;
        let plan = wulf_image::users::plan(&wulf_image::users::Accounts::read(&tree.root)?, &host);
        if !plan.conflicts.is_empty() || plan.changes.is_empty() {
            return Ok(SyncReport {
                plan,
                reowned: None,
                meta: None,
            });
        }
        let reowned = wulf_image::users::apply(&tree.root, &host, &plan)?;
        let meta = self.commit_image(name, &tree, build, threads, progress)?;
        Ok(SyncReport {
            plan,
            reowned: Some(reowned),
            meta: Some(meta),
        })
    }

    /// The names of every image.
    pub fn image_names(&self) -> Result<Vec<String>> {
        Ok(self.images.list()?.into_iter().map(|m| m.name).collect())
    }

    /// Nodes (merged) and profiles using each image, by image name.
    pub fn image_users(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let inventory = self.inventory()?;
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, profile) in &inventory.profiles {
            if let Some(image) = &profile.image {
                users
                    .entry(image.clone())
                    .or_default()
                    .push(format!("profile {id}"));
            }
        }
        for node in inventory.merged_nodes() {
            if let Some(image) = node.image {
                users.entry(image).or_default().push(node.id);
            }
        }
        Ok(users)
    }

    /// Every image with its users.
    pub fn list_images(&self) -> Result<Vec<ImageUse>> {
        let mut users = self.image_users()?;
        Ok(self
            .images
            .list()?
            .into_iter()
            .map(|meta| ImageUse {
                users: users.remove(&meta.name).unwrap_or_default(),
                meta,
            })
            .collect())
    }

    /// One image with its users.
    pub fn show_image(&self, name: &str) -> Result<ImageUse> {
        let meta = self.images.get(name)?;
        let users = self.image_users()?.remove(name).unwrap_or_default();
        Ok(ImageUse { meta, users })
    }

    /// The kernels of one image or all, each with the nodes that boot it.
    pub fn kernels(&self, image: Option<&str>) -> Result<Vec<KernelUse>> {
        let images = match image {
            Some(name) => vec![self.images.get(name)?],
            None => self.images.list()?,
        };
        let merged = self.inventory()?.merged_nodes();
        let mut out = Vec::new();
        for image in &images {
            let default = image.default_kernel().map(|k| k.path.clone());
            for kernel in &image.kernels {
                let nodes = merged
                    .iter()
                    .filter(|n| n.image.as_deref() == Some(image.name.as_str()))
                    .filter(|n| {
                        wulf_image::kernel::select(&image.kernels, n.kernel.version.as_deref())
                            .is_some_and(|chosen| chosen.path == kernel.path)
                    })
                    .map(|n| n.id.clone())
                    .collect();
                out.push(KernelUse {
                    image: image.name.clone(),
                    default: default.as_deref() == Some(kernel.path.as_str()),
                    kernel: kernel.clone(),
                    nodes,
                });
            }
        }
        Ok(out)
    }

    /// Deletes an image no node or profile uses.
    pub fn delete_image(&self, name: &str) -> Result<()> {
        self.images.get(name)?;
        if let Some(users) = self.image_users()?.remove(name) {
            return Err(SiteError::ImageInUse {
                image: name.to_owned(),
                users,
            });
        }
        Ok(self.images.delete(name)?)
    }

    /// Copies an image under a new name.
    pub fn copy_image(&self, from: &str, to: &str) -> Result<ImageMeta> {
        Ok(self.images.copy(from, to)?)
    }

    /// Renames an image and every node and profile naming it, all or nothing: under the
    /// state's one write lock the records are rewritten in memory, the image renamed, and the
    /// records written; if writing them fails, the image is renamed back. The records changed.
    pub fn rename_image(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let mut renamed = false;
        let result = self.store.update(|inventory| -> Result<Vec<String>> {
            let mut changed = Vec::new();
            for (id, record) in inventory
                .nodes
                .iter_mut()
                .chain(inventory.profiles.iter_mut())
            {
                if record.image.as_deref() == Some(from) {
                    record.image = Some(to.to_owned());
                    changed.push(id.clone());
                }
            }
            self.images.rename_locked(from, to)?;
            renamed = true;
            Ok(changed)
        });
        match result {
            Err(error) if renamed => match self.images.rename(to, from) {
                Ok(_) => Err(SiteError::RenameRolledBack {
                    from: from.to_owned(),
                    to: to.to_owned(),
                    source: Box::new(error),
                }),
                Err(undo) => {
                    tracing::error!(image = to, error = %crate::error_chain(&undo), "cannot rename the image back after the inventory write failed");
                    Err(error)
                }
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Patch;
    use crate::records::Kind;

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{}", crate::error_chain(&e)))
    }

    /// An image directory as the store keeps it, without importing anything.
    fn fake_image(site: &Site, name: &str) {
        let dir = site.images.path(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let meta = format!(
            "name = \"{name}\"\nsource = \"test\"\nimported-at = 0\nentries = 0\nbytes = 0\n"
        );
        std::fs::write(dir.join("image.toml"), meta).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            site.images.get(name).is_ok(),
            "the fake image does not load"
        );
    }

    #[test]
    fn a_rename_rewrites_records_or_nothing() {
        let (dir, site) = crate::records::tests::site();
        fake_image(&site, "rocky");
        let patch = Patch {
            image: Some("rocky".into()),
            ..Patch::default()
        };
        ok(site.add_records(Kind::Node, &["n1".into()], &patch));
        ok(site.set_records(Kind::Profile, &crate::Selection::All, &patch));
        let changed = ok(site.rename_image("rocky", "rocky9"));
        assert_eq!(changed, vec!["n1".to_string(), "default".to_string()]);
        assert!(site.images.exists("rocky9") && !site.images.exists("rocky"));

        // A hand edit left the file invalid: the image is renamed, then the write is refused,
        // and the image is renamed back.
        let nodes = dir.path().join("nodes.toml");
        let mut text = std::fs::read_to_string(&nodes).unwrap_or_default();
        // Two nodes with one MAC: the file reads, and the checked write is refused.
        text.push_str(
            "\n[nodes.n2.network-devices.default]\nhwaddr = \"aa:bb:cc:dd:ee:01\"\n\
             [nodes.n3.network-devices.default]\nhwaddr = \"aa:bb:cc:dd:ee:01\"\n",
        );
        std::fs::write(&nodes, &text).unwrap_or_else(|e| panic!("{e}"));
        let failed = site.rename_image("rocky9", "alma");
        assert!(
            matches!(failed, Err(SiteError::RenameRolledBack { .. })),
            "{failed:?}"
        );
        assert!(site.images.exists("rocky9") && !site.images.exists("alma"));
        assert_eq!(std::fs::read_to_string(&nodes).unwrap_or_default(), text);
    }

    #[test]
    fn an_image_in_use_is_not_deleted() {
        let (_dir, site) = crate::records::tests::site();
        fake_image(&site, "rocky");
        let patch = Patch {
            image: Some("rocky".into()),
            ..Patch::default()
        };
        ok(site.add_records(Kind::Node, &["n1".into()], &patch));
        let refused = site.delete_image("rocky");
        assert!(
            matches!(&refused, Err(SiteError::ImageInUse { users, .. }) if users == &["n1".to_string()]),
            "{refused:?}"
        );
        ok(site.delete_records(Kind::Node, &["n1".into()]));
        ok(site.delete_image("rocky"));
        assert!(!site.images.exists("rocky"));
    }
}
