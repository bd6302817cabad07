//! What a two-stage boot's first stage needs from an image: the network drivers of each of its
//! kernels, with an index `wulf-stage1` reads (see `wulf_stage1::modules`), as a small
//! archive built beside the initramfs; and stage one's own `/init` archive.
//!
//! The drivers are those of Ethernet and virtual NICs (`drivers/net/ethernet`, the modules at
//! the top of `drivers/net` such as `virtio_net`, `vmxnet3`, Hyper-V's `netvsc`, and the
//! virtio and Hyper-V buses) and everything they depend on by `modules.dep`. Compressed
//! modules (`.ko.gz`, `.ko.zst`) are stored plain, so any kernel loads them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};
use wulf_core::extension::EntryKind;

use crate::cpio::{CpioWriter, Entry};
use crate::error::{ImageError, Result};
use crate::kernel::Kernel;
use crate::rootfs::{DataReader, TarEntry};

/// Where stage one looks for its modules.
pub const MODULES_DIR: &str = "wulf-stage1/modules";

/// Module paths (under `/lib/modules/<version>/`) whose files stage one carries.
fn wanted(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("kernel/drivers/") else {
        return false;
    };
    rest.starts_with("net/ethernet/")
        || rest.starts_with("net/vmxnet3/")
        || rest.starts_with("net/hyperv/")
        || rest.starts_with("virtio/")
        || rest.starts_with("hv/")
        || rest
            .strip_prefix("net/")
            .is_some_and(|file| !file.contains('/'))
}

/// A module archive built for one kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ModulesArchive {
    /// The kernel's file name in the image directory (`vmlinuz-<version>`).
    pub kernel: String,
    /// The archive's file name in the image directory.
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub modules: usize,
}

/// The kernel's module directory in the image (`usr/lib/modules/6.1.0-50-amd64`), by
/// `modules.dep`: the one the kernel's path names, else the first of its version.
fn module_dir(entries: &[TarEntry], kernel: &Kernel) -> Option<String> {
    let mut candidates: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.entry.path.strip_suffix("/modules.dep"))
        .filter(|dir| {
            let parent = crate::rootfs::parent(dir);
            parent == "lib/modules" || parent == "usr/lib/modules"
        })
        .collect();
    candidates.sort_by_key(|dir| (!dir.starts_with("usr/"), dir.len()));
    let release = |dir: &&str| dir.rsplit('/').next().unwrap_or_default().to_owned();
    candidates
        .iter()
        .find(|dir| {
            let r = release(dir);
            kernel.path.ends_with(&format!("-{r}")) || kernel.path.contains(&format!("/{r}/"))
        })
        .or_else(|| {
            candidates
                .iter()
                .find(|dir| release(dir).starts_with(&kernel.version))
        })
        .map(|dir| (*dir).to_owned())
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// `path` without a compression suffix (`.ko.zst` -> `.ko`).
fn plain_path(path: &str) -> &str {
    for suffix in [".gz", ".zst", ".xz"] {
        if let Some(plain) = path.strip_suffix(suffix)
            && plain.ends_with(".ko")
        {
            return plain;
        }
    }
    path
}

fn decompress(path: &str, data: Vec<u8>) -> io::Result<Vec<u8>> {
    if path.ends_with(".ko.gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&data[..]).read_to_end(&mut out)?;
        Ok(out)
    } else if path.ends_with(".ko.zst") {
        zstd::decode_all(&data[..])
    } else if path.ends_with(".ko.xz") {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "xz-compressed modules are not supported yet: rebuild the image's modules with zstd or none",
        ))
    } else {
        Ok(data)
    }
}

/// Writes the network-driver archive of `kernel` to `out` (gzip); `None` when the image has
/// no modules for it (a kernel with its drivers built in boots stage one as it is).
pub fn write_modules_archive(
    entries: &[TarEntry],
    data: &mut DataReader,
    by_path: &HashMap<&str, &TarEntry>,
    kernel: &Kernel,
    out: &Path,
) -> Result<Option<(String, u64, usize)>> {
    let Some(dir) = module_dir(entries, kernel) else {
        return Ok(None);
    };
    let read = |data: &mut DataReader, rel: &str| -> Result<Option<Vec<u8>>> {
        let path = format!("{dir}/{rel}");
        match crate::store::resolve_file(by_path, &path) {
            Some(e) => Ok(Some(data.read(e.data_offset, e.entry.size)?)),
            None => Ok(None),
        }
    };
    let deps_text = read(data, "modules.dep")?.unwrap_or_default();
    let deps_text = String::from_utf8_lossy(&deps_text);
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in deps_text.lines() {
        if let Some((module, list)) = line.split_once(':') {
            deps.insert(
                module.trim().to_owned(),
                list.split_whitespace().map(str::to_owned).collect(),
            );
        }
    }
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    for (module, list) in &deps {
        if wanted(module) {
            chosen.insert(module.clone());
            chosen.extend(list.iter().cloned());
        }
    }
    let names: BTreeSet<String> = chosen.iter().map(|m| module_name(m)).collect();

    let file = std::fs::File::create(out).map_err(ImageError::at(out))?;
    let hashed = crate::pack::HashingWriter::new(io::BufWriter::new(file));
    let gz = flate2::write::GzEncoder::new(hashed, flate2::Compression::default());
    let mut cpio = CpioWriter::new(gz);
    let io_err = |e: io::Error| ImageError::io("writing the stage-one modules archive")(e);
    let mut made_dirs = BTreeSet::new();
    let dir_kind = EntryKind::Directory;
    let file_kind = EntryKind::Regular;
    let mut add_dirs = |cpio: &mut CpioWriter<_>, path: &str| -> io::Result<()> {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            if made_dirs.insert(parent.to_owned()) {
                cpio.append_bytes(&Entry::root(parent, &dir_kind, 0o755), b"")?;
            }
            at += i + 1;
        }
        Ok(())
    };
    let mut index = String::from("# The network drivers stage one may load, written by wulf.\n");
    let mut count = 0;
    for module in &chosen {
        let Some(raw) = read(data, module)? else {
            continue;
        };
        let bytes = decompress(module, raw).map_err(|e| ImageError::Stage1 {
            message: format!("{dir}/{module}: {e}"),
        })?;
        let plain = plain_path(module);
        let path = format!("{MODULES_DIR}/{plain}");
        add_dirs(&mut cpio, &path).map_err(io_err)?;
        cpio.append_bytes(&Entry::root(&path, &file_kind, 0o644), &bytes)
            .map_err(io_err)?;
        // modules.dep lists a module's dependencies last-loaded first.
        let load_first: Vec<String> = deps
            .get(module)
            .map(|list| list.iter().rev().map(|d| module_name(d)).collect())
            .unwrap_or_default();
        index.push_str(&format!(
            "module {} {plain} {}\n",
            module_name(module),
            load_first.join(" ")
        ));
        count += 1;
    }
    let aliases = read(data, "modules.alias")?.unwrap_or_default();
    for line in String::from_utf8_lossy(&aliases).lines() {
        let mut words = line.split_whitespace();
        if let (Some("alias"), Some(pattern), Some(module)) =
            (words.next(), words.next(), words.next())
            && names.contains(&module.replace('-', "_"))
        {
            index.push_str(&format!("alias {pattern} {}\n", module.replace('-', "_")));
        }
    }
    let index_path = format!("{MODULES_DIR}/modules.index");
    add_dirs(&mut cpio, &index_path).map_err(io_err)?;
    cpio.append_bytes(
        &Entry::root(&index_path, &file_kind, 0o644),
        index.as_bytes(),
    )
    .map_err(io_err)?;
    let gz = cpio.finish().map_err(io_err)?;
    let hashed = gz.finish().map_err(io_err)?;
    let (sha256, size, mut writer) = hashed.into_parts();
    writer.flush().map_err(io_err)?;
    writer
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .sync_all()
        .map_err(io_err)?;
    Ok(Some((sha256, size, count)))
}

/// Stage one's own archive: `/init` (the static `wulf-stage1`), the mount points it uses and
/// `/dev/console`, gzip-compressed; with its SHA-256.
pub fn init_archive(binary: &[u8]) -> io::Result<(Vec<u8>, String)> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut cpio = CpioWriter::new(gz);
    let dir = EntryKind::Directory;
    let entry = Entry::root;
    for path in ["dev", "proc", "sys", "newroot", "wulf-stage1"] {
        cpio.append_bytes(&entry(path, &dir, 0o755), b"")?;
    }
    let console = EntryKind::CharDevice { major: 5, minor: 1 };
    cpio.append_bytes(&entry("dev/console", &console, 0o600), b"")?;
    cpio.append_bytes(&entry("init", &EntryKind::Regular, 0o755), binary)?;
    let bytes = cpio.finish()?.finish()?;
    let sha = hex::encode(Sha256::digest(&bytes));
    Ok((bytes, sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_drivers_are_chosen_by_path() {
        assert!(wanted("kernel/drivers/net/virtio_net.ko"));
        assert!(wanted("kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko"));
        assert!(wanted("kernel/drivers/net/vmxnet3/vmxnet3.ko"));
        assert!(wanted("kernel/drivers/virtio/virtio_pci.ko"));
        assert!(!wanted("kernel/drivers/net/wireless/ath/ath9k/ath9k.ko"));
        assert!(!wanted("kernel/drivers/gpu/drm/i915/i915.ko"));
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko.zst"),
            "virtio_rng"
        );
        assert_eq!(
            plain_path("kernel/net/core/failover.ko.zst"),
            "kernel/net/core/failover.ko"
        );
    }
}
