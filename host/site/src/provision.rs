//! The site as the boot server sees it ([`Provisioner`]): the served inventory, what a node
//! gets at each boot stage, discovery and overlay builds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use wulf_core::provision::{BoxError, BuildSummary, ServedInventory};
use wulf_core::stamp::tree_stamp;
use wulf_core::{BootFile, BootStage, HwAddr, Node, ProvisionError, Provisioner};
use wulf_overlay::archive::Index;
use wulf_overlay::{HostKeys, Kind as ArchiveKind};

use crate::Site;
use crate::records::Selection;

/// (mtime, inode, size) of the archive index: a build replaces it by rename.
type IndexStamp = Option<(Option<std::time::SystemTime>, u64, u64)>;

/// What the boot path keeps between requests.
#[derive(Default)]
pub(crate) struct ProvisionCache {
    /// The last parsed overlay index and the file it was parsed from: with 10,000 nodes it is
    /// megabytes of JSON, too much to parse per request.
    archive_index: Mutex<Option<(IndexStamp, Arc<Index>)>>,
    /// Stage one's `/init` archive in the cache directory, and its SHA-256, once written.
    stage1_init: Mutex<Option<(PathBuf, String)>>,
}

fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> BoxError {
    Box::new(e)
}

impl Site {
    fn archive_index(&self) -> Result<Arc<Index>, BoxError> {
        let stamp = std::fs::metadata(self.archives.index_path()).ok().map(|m| {
            (
                m.modified().ok(),
                std::os::unix::fs::MetadataExt::ino(&m),
                m.len(),
            )
        });
        let mut cached = self
            .provision
            .archive_index
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((seen, index)) = cached.as_ref()
            && *seen == stamp
        {
            return Ok(Arc::clone(index));
        }
        let index = Arc::new(self.archives.index().map_err(boxed)?);
        *cached = Some((stamp, Arc::clone(&index)));
        Ok(index)
    }

    fn image_file(&self, node: &Node, stage: BootStage) -> Result<BootFile, ProvisionError> {
        let image = node.image.clone().ok_or_else(|| ProvisionError::NoImage {
            node: node.id.clone(),
        })?;
        let meta = self
            .images
            .get(&image)
            .map_err(|e| ProvisionError::ImageUnavailable {
                node: node.id.clone(),
                image: image.clone(),
                source: boxed(e),
            })?;
        if stage == BootStage::Kernel || stage == BootStage::Stage1 {
            let wanted = node.kernel.version.as_deref();
            let kernel = wulf_image::kernel::select(&meta.kernels, wanted).ok_or_else(|| {
                ProvisionError::NoKernel {
                    node: node.id.clone(),
                    image: image.clone(),
                    wanted: wanted.map(str::to_owned),
                }
            })?;
            if stage == BootStage::Stage1 {
                return self.stage1_file(&meta, kernel);
            }
            return Ok(BootFile {
                parts: vec![self.images.kernel_path(&image, kernel)],
                etag: if kernel.sha256.is_empty() {
                    format!("{}-{}", meta.imported_at, kernel.file)
                } else {
                    kernel.sha256.clone()
                },
            });
        }
        let path =
            self.images
                .initramfs_path(&meta)
                .ok_or_else(|| ProvisionError::ImageNotBuilt {
                    node: node.id.clone(),
                    image: image.clone(),
                })?;
        Ok(BootFile {
            parts: vec![path],
            etag: meta.build.map(|b| b.sha256).unwrap_or_default(),
        })
    }

    /// Stage one for `kernel` of an image: its `/init` archive, then the kernel's network
    /// drivers when the image's build gathered them.
    fn stage1_file(
        &self,
        meta: &wulf_image::ImageMeta,
        kernel: &wulf_image::Kernel,
    ) -> Result<BootFile, ProvisionError> {
        let (init, init_sha) = self.stage1_init()?;
        let mut parts = vec![init];
        let mut etag = format!("stage1-{}", &init_sha[..16]);
        if let Some(modules) = meta
            .build
            .iter()
            .flat_map(|b| &b.stage1)
            .find(|m| m.kernel == kernel.file)
        {
            parts.push(self.images.path(&meta.name).join(&modules.file));
            etag.push('-');
            etag.push_str(&modules.sha256[..16]);
        }
        Ok(BootFile { parts, etag })
    }

    /// Stage one's `/init` archive, written to the cache directory on first use.
    fn stage1_init(&self) -> Result<(PathBuf, String), ProvisionError> {
        let mut cached = self
            .provision
            .stage1_init
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((path, sha)) = cached.as_ref()
            && path.is_file()
        {
            return Ok((path.clone(), sha.clone()));
        }
        let err = |e: std::io::Error| ProvisionError::Stage1 { source: boxed(e) };
        let (bytes, sha) = wulf_image::stage1::init_archive(self.stage1_binary).map_err(err)?;
        let dir = self.state.cache_dir().join("stage1");
        std::fs::create_dir_all(&dir).map_err(err)?;
        let path = dir.join(format!("init-{}.cpio.gz", &sha[..16]));
        if !path.is_file() {
            wulf_core::atomic_file::write_atomic(&path, &bytes).map_err(err)?;
        }
        *cached = Some((path.clone(), sha.clone()));
        Ok((path, sha))
    }

    fn overlay_archive(&self, node: &Node, stage: BootStage) -> Result<BootFile, ProvisionError> {
        let kind = match stage {
            BootStage::System => ArchiveKind::System,
            _ => ArchiveKind::Runtime,
        };
        let index = self
            .archive_index()
            .map_err(|source| ProvisionError::Build {
                node: Some(node.id.clone()),
                source,
            })?;
        self.archives
            .segments(&index, &node.id, kind)
            .map(|(parts, archive)| BootFile {
                parts,
                etag: archive.sha256.clone(),
            })
            .ok_or_else(|| ProvisionError::NoOverlay {
                node: node.id.clone(),
                stage,
            })
    }
}

impl Provisioner for Site {
    fn load_inventory(&self) -> Result<ServedInventory, ProvisionError> {
        self.served_inventory(true)
            .map_err(|e| ProvisionError::Inventory { source: boxed(e) })
    }

    fn inventory_stamp(&self) -> u64 {
        tree_stamp(&[self.state.nodes_file()])
    }

    fn has_backends(&self) -> bool {
        !self.config().plugins.backends.is_empty()
    }

    fn lookup_hwaddr(&self, hwaddr: &HwAddr) -> Result<Option<Node>, ProvisionError> {
        self.backend_lookup(hwaddr)
            .map_err(|e| ProvisionError::Inventory { source: boxed(e) })
    }

    fn discover(&self, hwaddr: &HwAddr) -> Result<Option<String>, ProvisionError> {
        Site::discover(self, hwaddr).map_err(|e| ProvisionError::Discovery {
            hwaddr: *hwaddr,
            source: boxed(e),
        })
    }

    fn ipxe_template(&self, node: &Node) -> String {
        let image_size = node
            .image
            .as_deref()
            .and_then(|image| self.images.get(image).ok())
            .and_then(|meta| meta.build.map(|b| b.size));
        let above = self.config().server.stage_one_above;
        wulf_core::provision::ipxe_template(node, image_size, above).to_owned()
    }

    fn ipxe_inputs_stamp(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            self.images.builds_stamp(),
            self.config().server.stage_one_above,
        )
            .hash(&mut hasher);
        hasher.finish()
    }

    fn boot_file(&self, node: &Node, stage: BootStage) -> Result<BootFile, ProvisionError> {
        match stage {
            BootStage::Kernel | BootStage::Stage1 | BootStage::Image => {
                self.image_file(node, stage)
            }
            BootStage::System | BootStage::Runtime => self.overlay_archive(node, stage),
        }
    }

    fn build_overlays(&self, node: Option<&str>) -> Result<BuildSummary, ProvisionError> {
        let selection = match node {
            Some(id) => Selection::Patterns(vec![id.to_owned()]),
            None => Selection::All,
        };
        let report = self
            .build_overlays(&selection, false)
            .map_err(|e| ProvisionError::Build {
                node: node.map(str::to_owned),
                source: boxed(e),
            })?;
        Ok(BuildSummary {
            built: report.built.len(),
            unchanged: report.unchanged,
            failed: report.failed,
            took: report.took,
        })
    }

    fn overlay_inputs_stamp(&self) -> u64 {
        tree_stamp(&[
            self.config_file(),
            self.serving_file(),
            self.overlays.dir().to_path_buf(),
            self.config().plugins.dir.clone(),
            HostKeys::dir_in(self.state.root()),
            self.images.dir().to_path_buf(),
        ])
    }

    fn forget(&self) {
        *self.plugin_inputs.lock().unwrap_or_else(|p| p.into_inner()) = 0;
        *self
            .provision
            .archive_index
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn archives_stamp(&self) -> u64 {
        tree_stamp(&[self.archives.index_path()])
    }

    fn agent_key(&self) -> Result<Arc<[u8]>, ProvisionError> {
        Site::agent_key(self).map_err(|e| ProvisionError::AgentKey { source: boxed(e) })
    }

    fn changed_since_boot(&self, node: &Node, booted: &[(BootStage, String)]) -> Vec<BootStage> {
        Site::changed_since_boot(self, node, booted)
    }
}
