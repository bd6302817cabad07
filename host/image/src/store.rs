//! Images on disk: `<state>/images/<name>/` holds `image.toml`, `rootfs.tar`, the kernels
//! found in it and the built initramfs, named by its content hash.
//!
//! Every change is staged beside the image and swapped in with a rename, so readers (the boot
//! server) see the old image or the new one, and a failed or interrupted import or build
//! leaves the last good one in place.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use wulf_core::StateDir;
use wulf_core::atomic_file::{WriteLock, write_atomic};
use wulf_core::extension::{EntryKind, ImageTransform, TransformRun};

use crate::Progress;
use crate::compress::Compression;
use crate::error::{ImageError, Result};
use crate::flatten::HashingReader;
use crate::kernel::{self, Kernel};
use crate::oci::Platform;
use crate::pack::{self, PackOptions, Packed};
use crate::registry::{self, RegistryOptions};
use crate::rootfs::{self, DataReader, TarEntry};
use crate::source::{self, Source};
use crate::{chroot, flatten};

const META: &str = "image.toml";
const ROOTFS: &str = "rootfs.tar";
const KERNELS: &str = "kernels";

/// `image.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImageMeta {
    pub name: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Unix seconds.
    pub imported_at: u64,
    pub entries: u64,
    /// Bytes of file content in the rootfs.
    pub bytes: u64,
    #[serde(default)]
    pub kernels: Vec<Kernel>,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
}

impl ImageMeta {
    pub fn default_kernel(&self) -> Option<&Kernel> {
        kernel::default_kernel(&self.kernels)
    }
}

/// How an image is built; kept so a rebuild does the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    /// Image-transform plugins run during builds, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<String>,
    /// Fixed mtime for every entry, for reproducible archives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<u64>,
}

/// The current built initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Build {
    /// File name in the image directory: `initramfs-<sha256 prefix>.img.gz`.
    pub file: String,
    pub sha256: String,
    pub compression: Compression,
    pub size: u64,
    pub uncompressed: u64,
    pub entries: u64,
    pub built_at: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<String>,
    /// The network drivers of each kernel, for a two-stage boot's first stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stage1: Vec<crate::stage1::ModulesArchive>,
}

/// Options for [`ImageStore::import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub force: bool,
    pub platform: Option<Platform>,
    pub registry: RegistryOptions,
}

/// How [`ImageStore::import`] builds the image it imported, before it swaps it in.
#[derive(Clone, Copy)]
pub struct ImportBuild<'a> {
    pub transforms: &'a [Arc<dyn ImageTransform>],
    /// Compression threads; 0 for all cores.
    pub threads: usize,
}

/// The image directory of a state directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    blobs: PathBuf,
    lock: PathBuf,
}

/// Warewulf's rule for image names: `^[\w\-.:]+$`, and not `.`/`..`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::BadName {
            name: name.to_owned(),
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ImageStore {
    pub fn new(state: &StateDir) -> Self {
        ImageStore {
            dir: state.root().join("images"),
            blobs: state.cache_dir().join("blobs").join("sha256"),
            lock: state.lock_file(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn rootfs(&self, name: &str) -> PathBuf {
        self.path(name).join(ROOTFS)
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path(name).join(META).is_file()
    }

    pub fn get(&self, name: &str) -> Result<ImageMeta> {
        validate_name(name)?;
        let path = self.path(name).join(META);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound(name.to_owned()));
            }
            Err(e) => return Err(ImageError::at(&path)(e)),
        };
        toml::from_str(&text).map_err(|source| ImageError::BadMeta { path, source })
    }

    /// Every image, by name.
    pub fn list(&self) -> Result<Vec<ImageMeta>> {
        let mut out = Vec::new();
        let dir = match fs::read_dir(&self.dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(ImageError::at(&self.dir)(e)),
        };
        for entry in dir {
            let entry = entry.map_err(ImageError::at(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().join(META).is_file() {
                continue;
            }
            out.push(self.get(&name)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The file of a kernel of an image.
    pub fn kernel_path(&self, image: &str, kernel: &Kernel) -> PathBuf {
        self.path(image).join(KERNELS).join(&kernel.file)
    }

    /// A stamp of every image's metadata file (which each import and build replaces), not of
    /// their contents: it changes when any image is imported, built, renamed or deleted.
    pub fn builds_stamp(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        use std::os::unix::fs::MetadataExt as _;
        let mut seen: Vec<(std::ffi::OsString, u64, i64, i64)> = fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let meta = fs::metadata(e.path().join(META)).ok()?;
                        Some((e.file_name(), meta.ino(), meta.mtime(), meta.mtime_nsec()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        seen.sort();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        seen.hash(&mut hasher);
        hasher.finish()
    }

    /// The built initramfs, if there is one.
    pub fn initramfs_path(&self, meta: &ImageMeta) -> Option<PathBuf> {
        meta.build
            .as_ref()
            .map(|b| self.path(&meta.name).join(&b.file))
    }

    fn staging(&self, what: &str, name: &str) -> PathBuf {
        self.dir
            .join(format!(".{what}-{name}-{}", std::process::id()))
    }

    /// A fresh staging directory (not yet created), removed when dropped unless it was moved
    /// into place by [`ImageStore::swap_in`].
    fn stage(&self, what: &str, name: &str) -> Staging {
        let path = self.staging(what, name);
        let _ = fs::remove_dir_all(&path);
        Staging(path)
    }

    /// Removes staging directories left by processes that no longer run.
    fn clean_stale(&self) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ![".import-", ".trash-", ".exec-", ".commit-"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                continue;
            }
            let pid = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Imports `source` as `name` and, given `build` (the transforms of its settings, which a
    /// re-import keeps), builds its initramfs. All of it happens beside the image: a replaced
    /// image keeps serving until the new one is complete and swapped in with one rename, and
    /// nothing changes unless the whole import (and build) succeeds.
    pub async fn import(
        &self,
        source: &Source,
        name: &str,
        options: &ImportOptions,
        build: Option<ImportBuild<'_>>,
        progress: Arc<dyn Progress>,
    ) -> Result<ImageMeta> {
        validate_name(name)?;
        if self.exists(name) && !options.force {
            return Err(ImageError::Exists(name.to_owned()));
        }
        fs::create_dir_all(&self.dir).map_err(ImageError::at(&self.dir))?;
        self.clean_stale();
        let staging = self.stage("import", name);
        let mut meta = self
            .import_into(&staging.0, source, name, options, Arc::clone(&progress))
            .await?;
        if let Some(build) = build {
            meta.build = Some(pack_in(
                &staging.0,
                &meta,
                build.transforms,
                build.threads,
                progress.as_ref(),
            )?);
            self.write_meta_at(&staging.0, &meta)?;
        }
        let _lock = WriteLock::acquire(&self.lock).map_err(ImageError::at(&self.lock))?;
        if self.exists(name) && !options.force {
            return Err(ImageError::Exists(name.to_owned()));
        }
        self.swap_in(&staging.0, name)?;
        Ok(meta)
    }

    async fn import_into(
        &self,
        staging: &Path,
        source: &Source,
        name: &str,
        options: &ImportOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<ImageMeta> {
        let work = staging.join("work");
        fs::create_dir_all(&work).map_err(ImageError::at(&work))?;
        let rootfs_tar = staging.join(ROOTFS);
        let platform = options.platform.clone().unwrap_or_else(Platform::host);
        let (flattened, digest, image_platform) = match source {
            Source::Chroot(dir) => (
                chroot::import_dir(dir, &rootfs_tar, progress.as_ref())?,
                None,
                None,
            ),
            other => {
                let resolved = match other {
                    Source::Registry(reference) => {
                        registry::pull(
                            reference,
                            &platform,
                            &options.registry,
                            &self.blobs,
                            Arc::clone(&progress),
                        )
                        .await?
                    }
                    Source::OciLayout { dir, tag } => source::read_layout(
                        dir,
                        tag.as_deref(),
                        &platform,
                        &format!("OCI layout {}", dir.display()),
                    )?,
                    Source::OciArchive { file, tag } => {
                        let unpacked = work.join("archive");
                        source::unpack_archive(file, &unpacked)?;
                        source::read_layout(
                            &unpacked,
                            tag.as_deref(),
                            &platform,
                            &format!("OCI archive {}", file.display()),
                        )?
                    }
                    Source::DockerArchive { file } => {
                        let unpacked = work.join("archive");
                        source::unpack_archive(file, &unpacked)?;
                        source::read_docker_archive(
                            &unpacked,
                            &format!("docker archive {}", file.display()),
                        )?
                    }
                    Source::Chroot(_) => unreachable!("handled above"),
                };
                let flattened =
                    flatten::flatten(&resolved.layers, &work, &rootfs_tar, progress.as_ref())?;
                (flattened, resolved.digest, resolved.platform)
            }
        };
        let _ = fs::remove_dir_all(&work);
        let kernels = extract_kernels(&rootfs_tar, &staging.join(KERNELS))?;
        let previous = self.get(name).ok();
        let meta = ImageMeta {
            name: name.to_owned(),
            source: source.to_string(),
            digest,
            platform: image_platform,
            imported_at: now(),
            entries: flattened.entries,
            bytes: flattened.bytes,
            kernels,
            // A re-import keeps how the admin asked the image to be built.
            settings: previous.map(|p| p.settings).unwrap_or_default(),
            build: None,
        };
        self.write_meta_at(staging, &meta)?;
        Ok(meta)
    }

    /// Moves a staged image directory into place, replacing an existing one in one atomic
    /// exchange (`renameat2(RENAME_EXCHANGE)`): at every instant the name holds a whole image,
    /// so a kill at any point leaves the old one or the new one. The old image is left at
    /// `staging` (its guard removes it). Where the filesystem cannot exchange, two renames.
    fn swap_in(&self, staging: &Path, name: &str) -> Result<()> {
        let target = self.path(name);
        if target.exists() {
            use rustix::fs::{CWD, RenameFlags, renameat_with};
            match renameat_with(CWD, staging, CWD, &target, RenameFlags::EXCHANGE) {
                Ok(()) => {
                    let _ = fs::remove_dir_all(staging);
                }
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                    let trash = self.staging("trash", name);
                    fs::rename(&target, &trash).map_err(ImageError::at(&target))?;
                    fs::rename(staging, &target).map_err(ImageError::at(&target))?;
                    let _ = fs::remove_dir_all(&trash);
                }
                Err(e) => return Err(ImageError::at(&target)(e.into())),
            }
        } else {
            fs::rename(staging, &target).map_err(ImageError::at(&target))?;
        }
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn write_meta_at(&self, dir: &Path, meta: &ImageMeta) -> Result<()> {
        let text = toml::to_string(meta).map_err(|source| ImageError::Serialize {
            image: meta.name.clone(),
            source,
        })?;
        let path = dir.join(META);
        write_atomic(&path, text.as_bytes()).map_err(ImageError::at(&path))
    }

    /// Changes how an image is built.
    pub fn update_settings(
        &self,
        name: &str,
        change: impl FnOnce(&mut Settings),
    ) -> Result<ImageMeta> {
        let _lock = WriteLock::acquire(&self.lock).map_err(ImageError::at(&self.lock))?;
        let mut meta = self.get(name)?;
        change(&mut meta.settings);
        self.write_meta_at(&self.path(name), &meta)?;
        Ok(meta)
    }

    /// Builds the initramfs of `name` with its settings and `transforms` (loaded for the names
    /// in its settings, in order). The new archive replaces the old one only when complete.
    pub fn build(
        &self,
        name: &str,
        transforms: &[Arc<dyn ImageTransform>],
        threads: usize,
        progress: &dyn Progress,
    ) -> Result<ImageMeta> {
        let meta = self.get(name)?;
        let dir = self.path(name);
        let build_lock = dir.join(".build.lock");
        let _building = WriteLock::acquire(&build_lock).map_err(ImageError::at(&build_lock))?;
        let build = pack_in(&dir, &meta, transforms, threads, progress)?;
        let file_name = build.file.clone();
        let _lock = WriteLock::acquire(&self.lock).map_err(ImageError::at(&self.lock))?;
        let mut meta = self.get(name)?;
        meta.build = Some(build);
        self.write_meta_at(&dir, &meta)?;
        // Old archives go; a transfer in flight keeps its open file.
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let n = entry.file_name().to_string_lossy().into_owned();
                let current = n == file_name || build_meta_files(&meta).any(|f| f == n);
                if (n.starts_with("initramfs-") || n.starts_with("stage1-")) && !current {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(meta)
    }

    /// `name`'s rootfs unpacked into a new working tree beside it (root only: owners, modes
    /// and devices are kept), removed when dropped.
    pub fn unpack_tree(&self, name: &str) -> Result<WorkTree> {
        let meta = self.get(name)?;
        self.clean_stale();
        let staged = self.stage("exec", name);
        let root = staged.0.join("root");
        fs::create_dir_all(&root).map_err(ImageError::at(&root))?;
        let tree = WorkTree {
            _staged: staged,
            root,
            base: meta.imported_at,
        };
        let tar = self.path(name).join(ROOTFS);
        let out = std::process::Command::new("tar")
            .args([
                "--extract",
                "--preserve-permissions",
                "--numeric-owner",
                "--file",
            ])
            .arg(&tar)
            .arg("--directory")
            .arg(&tree.root)
            .output()
            .map_err(ImageError::io("running tar"))?;
        if !out.status.success() {
            return Err(ImageError::Io {
                context: format!("unpacking {}", tar.display()),
                source: std::io::Error::other(
                    String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                ),
            });
        }
        Ok(tree)
    }

    /// Makes `tree` the rootfs of `name`: packed, its kernels found again and, with `build`,
    /// its initramfs built, all beside the image, which is then replaced in one rename. A
    /// failure anywhere leaves the image as it was, still served.
    pub fn commit_tree(
        &self,
        name: &str,
        tree: &WorkTree,
        transforms: &[Arc<dyn ImageTransform>],
        build: bool,
        threads: usize,
        progress: &dyn Progress,
    ) -> Result<ImageMeta> {
        // Checked now, to spare the packing, and again under the lock before the swap.
        self.check_base(name, tree)?;
        let previous = self.get(name)?;
        let staging = self.stage("commit", name);
        fs::create_dir_all(&staging.0).map_err(ImageError::at(&staging.0))?;
        let rootfs_tar = staging.0.join(ROOTFS);
        let flattened = chroot::import_dir(&tree.root, &rootfs_tar, progress)?;
        let kernels = extract_kernels(&rootfs_tar, &staging.0.join(KERNELS))?;
        let mut meta = ImageMeta {
            entries: flattened.entries,
            bytes: flattened.bytes,
            kernels,
            imported_at: now(),
            build: None,
            ..previous
        };
        if build {
            meta.build = Some(pack_in(&staging.0, &meta, transforms, threads, progress)?);
        }
        self.write_meta_at(&staging.0, &meta)?;
        let _lock = WriteLock::acquire(&self.lock).map_err(ImageError::at(&self.lock))?;
        self.check_base(name, tree)?;
        self.swap_in(&staging.0, name)?;
        Ok(meta)
    }

    /// Refuses to replace an image that changed since `tree` was unpacked from it.
    fn check_base(&self, name: &str, tree: &WorkTree) -> Result<()> {
        if self.get(name)?.imported_at == tree.base {
            Ok(())
        } else {
            Err(ImageError::ChangedMeanwhile {
                image: name.to_owned(),
            })
        }
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        self.get(name)?;
        let _lock = WriteLock::acquire(&self.lock).map_err(ImageError::at(&self.lock))?;
        let trash = self.staging("trash", name);
        let path = self.path(name);
        fs::rename(&path, &trash).map_err(ImageError::at(&path))?;
        fs::remove_dir_all(&trash).map_err(ImageError::at(&trash))
    }

    /// Copies an image (rootfs, kernels, build) under a new name.
    pub fn copy(&self, from: &str, to: &str) -> Result<ImageMeta> {
        validate_name(to)?;
        let mut meta = self.get(from)?;
        if self.exists(to) {
            return Err(ImageError::Exists(to.to_owned()));
        }
        let staging = self.stage("import", to);
        copy_dir(&self.path(from), &staging.0)?;
        meta.name = to.to_owned();
        self.write_meta_at(&staging.0, &meta)?;
        let _lock = WriteLock::acquire(&self.lock).map_err(ImageError::at(&self.lock))?;
        if self.exists(to) {
            return Err(ImageError::Exists(to.to_owned()));
        }
        self.swap_in(&staging.0, to)?;
        Ok(meta)
    }

    /// Renames an image. The caller rewrites nodes and profiles that refer to it.
    pub fn rename(&self, from: &str, to: &str) -> Result<ImageMeta> {
        let _lock = WriteLock::acquire(&self.lock).map_err(ImageError::at(&self.lock))?;
        self.rename_locked(from, to)
    }

    /// [`ImageStore::rename`] for a caller that already holds the state directory's write
    /// lock (the inventory store's, which is the same file), so that the image and the records
    /// naming it change under one lock.
    pub fn rename_locked(&self, from: &str, to: &str) -> Result<ImageMeta> {
        validate_name(to)?;
        let mut meta = self.get(from)?;
        if self.exists(to) {
            return Err(ImageError::Exists(to.to_owned()));
        }
        meta.name = to.to_owned();
        self.write_meta_at(&self.path(from), &meta)?;
        let (src, dst) = (self.path(from), self.path(to));
        fs::rename(&src, &dst).map_err(ImageError::at(&dst))?;
        Ok(meta)
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(ImageError::at(to))?;
    for entry in fs::read_dir(from).map_err(ImageError::at(from))? {
        let entry = entry.map_err(ImageError::at(from))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().map_err(ImageError::at(&src))?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            fs::copy(&src, &dst).map_err(ImageError::at(&src))?;
        }
    }
    Ok(())
}

/// Finds the kernels in a rootfs tar and copies them out, so the boot server serves plain
/// files. Symlinks are followed inside the image.
/// A staging directory beside the images, removed when dropped; after a successful
/// [`ImageStore::swap_in`] there is nothing left to remove.
#[derive(Debug)]
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A rootfs unpacked for a change (`image exec`, `image syncuser`), removed when dropped.
#[derive(Debug)]
pub struct WorkTree {
    _staged: Staging,
    /// The image's `/`.
    pub root: PathBuf,
    /// When the rootfs it came from was made: a commit over a newer one is refused.
    base: u64,
}

/// Packs `dir`'s rootfs into `dir/initramfs-<sha>.<ext>` with `meta`'s settings; the file is
/// complete before it has its name. What the build was.
fn pack_in(
    dir: &Path,
    meta: &ImageMeta,
    transforms: &[Arc<dyn ImageTransform>],
    threads: usize,
    progress: &dyn Progress,
) -> Result<Build> {
    let settings = &meta.settings;
    let compression = settings.compression;
    let options = PackOptions {
        compression,
        level: settings.level.unwrap_or(compression.default_level()),
        threads,
        mtime: settings.mtime,
    };
    let mut runs: Vec<(String, Box<dyn TransformRun>)> = transforms
        .iter()
        .map(|t| Ok((t.name().to_owned(), t.start(&meta.name)?)))
        .collect::<Result<_>>()?;
    sweep_dead_temps(dir);
    let tmp = dir.join(format!(".initramfs.tmp-{}", std::process::id()));
    let file = File::create(&tmp).map_err(ImageError::at(&tmp))?;
    let packed = pack::pack(&dir.join(ROOTFS), file, &options, &mut runs, progress).and_then(
        |(packed, file): (Packed, File)| {
            file.sync_all().map_err(ImageError::at(&tmp))?;
            Ok(packed)
        },
    );
    let packed = match packed {
        Ok(p) => p,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let file_name = format!(
        "initramfs-{}.{}",
        &packed.sha256[..16],
        compression.extension()
    );
    let target = dir.join(&file_name);
    fs::rename(&tmp, &target).map_err(ImageError::at(&target))?;
    let stage1 = modules_archives(dir, meta)?;
    Ok(Build {
        file: file_name,
        sha256: packed.sha256,
        compression,
        size: packed.compressed,
        uncompressed: packed.uncompressed,
        entries: packed.entries,
        built_at: now(),
        transforms: transforms.iter().map(|t| t.name().to_owned()).collect(),
        stage1,
    })
}

/// The files of `meta`'s build besides the initramfs.
fn build_meta_files(meta: &ImageMeta) -> impl Iterator<Item = &str> {
    meta.build
        .iter()
        .flat_map(|b| b.stage1.iter().map(|m| m.file.as_str()))
}

/// The network-driver archive of each of `meta`'s kernels, for stage one, written into `dir`.
fn modules_archives(dir: &Path, meta: &ImageMeta) -> Result<Vec<crate::stage1::ModulesArchive>> {
    if meta.kernels.is_empty() {
        return Ok(Vec::new());
    }
    let rootfs_tar = dir.join(ROOTFS);
    let entries = rootfs::scan(&rootfs_tar)?;
    let by_path: std::collections::HashMap<&str, &TarEntry> =
        entries.iter().map(|e| (e.entry.path.as_str(), e)).collect();
    let mut data = DataReader::open(&rootfs_tar)?;
    let mut archives = Vec::new();
    for kernel in &meta.kernels {
        let tmp = dir.join(format!(".stage1.tmp-{}", std::process::id()));
        let written =
            crate::stage1::write_modules_archive(&entries, &mut data, &by_path, kernel, &tmp);
        let (sha256, size, modules) = match written {
            Ok(Some(written)) => written,
            Ok(None) => {
                let _ = fs::remove_file(&tmp);
                continue;
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let file = format!("stage1-{}-{}.cpio.gz", kernel.file, &sha256[..16]);
        let target = dir.join(&file);
        fs::rename(&tmp, &target).map_err(ImageError::at(&target))?;
        archives.push(crate::stage1::ModulesArchive {
            kernel: kernel.file.clone(),
            file,
            sha256,
            size,
            modules,
        });
    }
    Ok(archives)
}

/// Removes `.initramfs.tmp-<pid>` files of builds whose process is gone (killed mid-build):
/// each can be hundreds of megabytes.
fn sweep_dead_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".initramfs.tmp-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn extract_kernels(rootfs_tar: &Path, into: &Path) -> Result<Vec<Kernel>> {
    let entries = rootfs::scan(rootfs_tar)?;
    let by_path: std::collections::HashMap<&str, &TarEntry> =
        entries.iter().map(|e| (e.entry.path.as_str(), e)).collect();
    let mut data = DataReader::open(rootfs_tar)?;
    let mut kernels: Vec<Kernel> = Vec::new();
    for e in &entries {
        if !kernel::is_kernel_path(&e.entry.path) {
            continue;
        }
        let path = format!("/{}", e.entry.path);
        let Some(version) = kernel::version_of(&path) else {
            continue;
        };
        if kernels.iter().any(|k| k.version == version) {
            continue;
        }
        let Some(file) = resolve_file(&by_path, &e.entry.path) else {
            tracing::warn!(
                path,
                "kernel path does not lead to a file in the image; skipped"
            );
            continue;
        };
        fs::create_dir_all(into).map_err(ImageError::at(into))?;
        let name = format!("vmlinuz-{version}");
        let out = into.join(&name);
        let mut dst = File::create(&out).map_err(ImageError::at(&out))?;
        // Hashed on the way out: the strong ETag the boot server sends for it.
        let mut src = HashingReader::new(data.at(file.data_offset, file.entry.size)?);
        rootfs::copy_exact(&mut src, &mut dst, file.entry.size, &path)?;
        dst.flush().map_err(ImageError::at(&out))?;
        kernels.push(Kernel {
            path,
            version,
            file: name,
            size: file.entry.size,
            sha256: hex::encode(sha2::Digest::finalize(src.hasher)),
        });
    }
    Ok(kernels)
}

/// Follows symlinks and hard links (at most 16) to a regular file.
pub(crate) fn resolve_file<'a>(
    by_path: &std::collections::HashMap<&str, &'a TarEntry>,
    path: &str,
) -> Option<&'a TarEntry> {
    let mut current = path.to_owned();
    for _ in 0..16 {
        let e = by_path.get(current.as_str())?;
        match &e.entry.kind {
            EntryKind::Regular => return Some(e),
            EntryKind::Hardlink(target) => current = target.clone(),
            EntryKind::Symlink(target) => {
                let joined = if target.starts_with('/') {
                    target.clone()
                } else {
                    format!("{}/{target}", rootfs::parent(&current))
                };
                // `..` inside the image is fine; it just cannot go above the root.
                let mut parts: Vec<&str> = Vec::new();
                for part in joined.split('/') {
                    match part {
                        "" | "." => {}
                        ".." => {
                            parts.pop();
                        }
                        p => parts.push(p),
                    }
                }
                current = parts.join("/");
            }
            _ => return None,
        }
    }
    None
}

/// Files of images, read on demand, for templates' `include_from(image, path)`: each image's
/// rootfs index is scanned once, and each file read once, however many nodes ask.
pub struct ImageFiles {
    store: ImageStore,
    indexes: Mutex<HashMap<String, Arc<Vec<TarEntry>>>>,
    files: Mutex<HashMap<ImagePath, Arc<Vec<u8>>>>,
}

/// (image, absolute path).
type ImagePath = (String, String);

impl std::fmt::Debug for ImageFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFiles")
            .field("dir", &self.store.dir())
            .finish_non_exhaustive()
    }
}

impl ImageFiles {
    /// Larger files are refused: this is for configuration files, not payloads.
    pub const MAX_BYTES: u64 = 16 << 20;

    pub fn new(store: ImageStore) -> Self {
        ImageFiles {
            store,
            indexes: Default::default(),
            files: Default::default(),
        }
    }

    /// What reads depend on: every image's metadata (a re-import or rebuild changes it).
    pub fn identity(&self) -> String {
        let metas = self.store.list().unwrap_or_default();
        let text = serde_json::to_string(&metas).unwrap_or_default();
        hex::encode(sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(text),
        ))
    }

    /// The content of `path` (absolute, inside the image; symlinks followed) in `image`.
    pub fn read(&self, image: &str, path: &str) -> Result<Arc<Vec<u8>>> {
        let key = (image.to_owned(), path.to_owned());
        if let Some(found) = self.files.lock().ok().and_then(|f| f.get(&key).cloned()) {
            return Ok(found);
        }
        let relative = path.trim_start_matches('/');
        if !path.starts_with('/') || relative.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(ImageError::BadImagePath {
                path: path.to_owned(),
            });
        }
        let entries = self.index(image)?;
        let by_path: HashMap<&str, &TarEntry> =
            entries.iter().map(|e| (e.entry.path.as_str(), e)).collect();
        let file = resolve_file(&by_path, relative).ok_or_else(|| ImageError::NotAFile {
            image: image.to_owned(),
            path: path.to_owned(),
        })?;
        if file.entry.size > Self::MAX_BYTES {
            return Err(ImageError::FileTooLarge {
                image: image.to_owned(),
                path: path.to_owned(),
                size: file.entry.size,
            });
        }
        let rootfs = self.store.rootfs(image);
        let content = Arc::new(DataReader::open(&rootfs)?.read(file.data_offset, file.entry.size)?);
        if let Ok(mut files) = self.files.lock() {
            files.insert(key, Arc::clone(&content));
        }
        Ok(content)
    }

    fn index(&self, image: &str) -> Result<Arc<Vec<TarEntry>>> {
        if let Some(found) = self.indexes.lock().ok().and_then(|i| i.get(image).cloned()) {
            return Ok(found);
        }
        if !self.store.exists(image) {
            return Err(ImageError::NotFound(image.to_owned()));
        }
        let entries = Arc::new(rootfs::scan(&self.store.rootfs(image))?);
        if let Ok(mut indexes) = self.indexes.lock() {
            indexes.insert(image.to_owned(), Arc::clone(&entries));
        }
        Ok(entries)
    }
}
