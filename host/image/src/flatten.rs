//! Layers -> one rootfs tar, without extracting anything and without root.
//!
//! Each layer is decompressed once to a plain tar (checking the blob digest and the config's
//! `diff_id` on the way), then indexed by path with the OCI rules applied: later layers win,
//! `.wh.<name>` deletes `<name>` from lower layers, `.wh..wh..opq` empties a directory of lower
//! layers' content. The survivors are written in sorted order, their data copied straight out
//! of the layer tars.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wulf_core::extension::{EntryKind, ImageEntry};

use crate::Progress;
use crate::error::{EntryError, ImageError, Result};
use crate::rootfs::{self, DataReader, RootfsWriter, sort_key};

/// One layer blob as the manifest describes it.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: PathBuf,
    /// `sha256:<hex>` of the blob as stored, checked while reading.
    pub digest: Option<String>,
    /// `sha256:<hex>` of the uncompressed tar, from the image config.
    pub diff_id: Option<String>,
}

/// What a flattened rootfs holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flattened {
    pub entries: u64,
    pub bytes: u64,
}

/// Where the content of a surviving regular file lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Source {
    layer: usize,
    offset: u64,
}

#[derive(Debug, Clone)]
struct Item {
    entry: ImageEntry,
    layer: usize,
    /// Regular files and hard links: the data, as of when the entry was read.
    source: Option<Source>,
}

/// Flattens `layers` (bottom first) into the rootfs tar at `out`, using `work` for the
/// uncompressed layer tars.
pub fn flatten(
    layers: &[Layer],
    work: &Path,
    out: &Path,
    progress: &dyn Progress,
) -> Result<Flattened> {
    let total: u64 = layers
        .iter()
        .map(|l| std::fs::metadata(&l.blob).map_or(0, |m| m.len()))
        .sum();
    progress.start("unpacking layers", Some(total));
    let mut tars = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let tar = work.join(format!("layer-{i}.tar"));
        decompress_layer(i, layer, &tar, progress)?;
        tars.push(tar);
    }
    progress.finish();

    let mut index: BTreeMap<Vec<u8>, Item> = BTreeMap::new();
    for (i, tar) in tars.iter().enumerate() {
        index_layer(i, tar, &mut index)?;
    }
    add_missing_parents(&mut index);
    resolve_hard_links(&mut index);

    let mut readers = tars
        .iter()
        .map(|t| DataReader::open(t))
        .collect::<Result<Vec<_>>>()?;
    let mut writer = RootfsWriter::create(out)?;
    progress.start("writing rootfs", Some(index.len() as u64));
    for item in index.values() {
        match (&item.entry.kind, item.source) {
            (EntryKind::Regular, Some(src)) => {
                let mut data = readers[src.layer].at(src.offset, item.entry.size)?;
                writer.append(&item.entry, &mut data)?;
            }
            _ => writer.append(&item.entry, &mut io::empty())?,
        }
        progress.advance(1);
    }
    progress.finish();
    let flattened = Flattened {
        entries: writer.entries,
        bytes: writer.bytes,
    };
    writer.finish()?;
    for tar in &tars {
        let _ = std::fs::remove_file(tar);
    }
    Ok(flattened)
}

/// Layer blobs may be gzip, zstd or plain tar whatever their media type says (docker-archive
/// has none): the magic bytes decide.
fn decompress_layer(i: usize, layer: &Layer, out: &Path, progress: &dyn Progress) -> Result<()> {
    let what = format!("layer {} ({})", i + 1, layer.blob.display());
    let file = File::open(&layer.blob).map_err(ImageError::io(what.clone()))?;
    let mut blob = HashingReader::new(CountingReader {
        inner: file,
        progress,
    });
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut blob, &mut magic).map_err(ImageError::io(what.clone()))?;
    let head = io::Cursor::new(magic[..n].to_vec()).chain(&mut blob);
    let mut decoder: Box<dyn Read + '_> = match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(head)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            Box::new(zstd::stream::read::Decoder::new(head).map_err(ImageError::io(what.clone()))?)
        }
        _ => Box::new(head),
    };
    let mut tar =
        io::BufWriter::with_capacity(256 * 1024, File::create(out).map_err(ImageError::at(out))?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ImageError::BadArchive {
                    archive: what,
                    problem: "it is corrupt or truncated",
                    source,
                });
            }
        };
        hasher.update(&buf[..n]);
        tar.write_all(&buf[..n]).map_err(ImageError::at(out))?;
    }
    tar.flush().map_err(ImageError::at(out))?;
    drop(decoder);
    // Read what the decoder left (trailing padding) so the blob digest covers every byte.
    io::copy(&mut blob, &mut io::sink()).map_err(ImageError::io(what.clone()))?;
    if let Some(expected) = &layer.digest {
        let actual = format!("sha256:{}", hex::encode(blob.hasher.finalize_reset()));
        if !expected.starts_with("sha256:") {
            return Err(ImageError::BadDigest {
                what,
                digest: expected.clone(),
                reason: "uses an algorithm wulf does not check (only sha256)",
            });
        }
        if &actual != expected {
            return Err(ImageError::DigestMismatch {
                what,
                subject: "the blob",
                claimed_by: "the manifest",
                actual,
                expected: expected.clone(),
            });
        }
    }
    if let Some(expected) = &layer.diff_id {
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if &actual != expected {
            return Err(ImageError::DigestMismatch {
                what,
                subject: "the uncompressed layer",
                claimed_by: "the image config",
                actual,
                expected: expected.clone(),
            });
        }
    }
    Ok(())
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

struct CountingReader<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Hashes everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    pub(crate) hasher: Sha256,
}

impl<R> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn index_layer(i: usize, tar: &Path, index: &mut BTreeMap<Vec<u8>, Item>) -> Result<()> {
    let layer_name = format!("layer {}", i + 1);
    let bad_entry = |source: EntryError| ImageError::BadEntry {
        archive: layer_name.clone(),
        source,
    };
    let bad_tar = |problem: &'static str| {
        let archive = layer_name.clone();
        move |source: io::Error| ImageError::BadArchive {
            archive,
            problem,
            source,
        }
    };
    let file = File::open(tar).map_err(ImageError::at(tar))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(64 * 1024, file));
    let entries = archive
        .entries_with_seek()
        .map_err(bad_tar("not a tar archive"))?;
    for e in entries {
        let e = e.map_err(bad_tar("broken tar entry"))?;
        let Some(tar_entry) = rootfs::entry_from_tar(&e).map_err(bad_entry)? else {
            continue;
        };
        let mut entry = tar_entry.entry;
        let name = entry.path.rsplit('/').next().unwrap_or_default().to_owned();
        let dir = rootfs::parent(&entry.path).to_owned();

        if let Some(hidden) = name.strip_prefix(".wh.") {
            check_parents(index, &entry.path, &dir).map_err(bad_entry)?;
            if hidden == ".wh..opq" {
                remove_lower(index, &dir, i, false);
            } else {
                let target = if dir.is_empty() {
                    hidden.to_owned()
                } else {
                    format!("{dir}/{hidden}")
                };
                remove_lower(index, &target, i, true);
            }
            continue;
        }
        check_parents(index, &entry.path, &dir).map_err(bad_entry)?;

        let mut source = None;
        match &mut entry.kind {
            EntryKind::Regular => {
                source = Some(Source {
                    layer: i,
                    offset: tar_entry.data_offset,
                })
            }
            EntryKind::Hardlink(target) => {
                let clean = rootfs::normalize(target)
                    .map_err(|source| {
                        bad_entry(EntryError::HardLink {
                            path: entry.path.clone(),
                            source: Box::new(source),
                        })
                    })?
                    .ok_or_else(|| {
                        bad_entry(EntryError::HardLinkToRoot {
                            path: entry.path.clone(),
                        })
                    })?;
                let Some(linked) = index.get(&sort_key(&clean)) else {
                    return Err(bad_entry(EntryError::HardLinkTarget {
                        path: entry.path.clone(),
                        target: clean,
                        reason: "no earlier entry created",
                    }));
                };
                if linked.source.is_none() {
                    return Err(bad_entry(EntryError::HardLinkTarget {
                        path: entry.path.clone(),
                        target: clean,
                        reason: "is not a regular file",
                    }));
                }
                source = linked.source;
                entry.size = linked.entry.size;
                *target = clean;
            }
            _ => {}
        }
        let key = sort_key(&entry.path);
        if let Some(existing) = index.get_mut(&key) {
            let both_dirs =
                existing.entry.kind == EntryKind::Directory && entry.kind == EntryKind::Directory;
            if both_dirs {
                existing.entry = entry;
                existing.layer = i;
                continue;
            }
            if existing.entry.kind == EntryKind::Directory {
                remove_lower(index, &entry.path, usize::MAX, true);
            }
        }
        index.insert(
            key,
            Item {
                entry,
                layer: i,
                source,
            },
        );
    }
    Ok(())
}

/// Refuses entries whose parent is a symlink or a file: writing through a symlink is how a
/// hostile layer escapes the root (`etc -> /host/etc`, then `etc/passwd`).
fn check_parents(
    index: &BTreeMap<Vec<u8>, Item>,
    path: &str,
    dir: &str,
) -> std::result::Result<(), EntryError> {
    let mut prefix = dir;
    while !prefix.is_empty() {
        if let Some(item) = index.get(&sort_key(prefix)) {
            match &item.entry.kind {
                EntryKind::Directory => {}
                EntryKind::Symlink(target) => {
                    return Err(EntryError::ThroughSymlink {
                        path: path.to_owned(),
                        link: prefix.to_owned(),
                        target: target.clone(),
                    });
                }
                _ => {
                    return Err(EntryError::InsideNonDirectory {
                        path: path.to_owned(),
                        parent: prefix.to_owned(),
                    });
                }
            }
        }
        prefix = rootfs::parent(prefix);
    }
    Ok(())
}

/// Removes what lower layers (`layer < below`) put at `path` (if `itself`) and beneath it.
fn remove_lower(index: &mut BTreeMap<Vec<u8>, Item>, path: &str, below: usize, itself: bool) {
    let key = sort_key(path);
    if itself && index.get(&key).is_some_and(|item| item.layer < below) {
        index.remove(&key);
    }
    let mut start = key;
    if !start.is_empty() {
        start.push(0);
    }
    let doomed: Vec<Vec<u8>> = index
        .range(start.clone()..)
        .take_while(|(k, _)| k.starts_with(&start))
        .filter(|(_, item)| item.layer < below)
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        index.remove(&k);
    }
}

/// Layers may leave out parent directories; the initramfs needs every one of them.
fn add_missing_parents(index: &mut BTreeMap<Vec<u8>, Item>) {
    let mut missing = BTreeMap::new();
    for item in index.values() {
        let mut dir = rootfs::parent(&item.entry.path);
        while !dir.is_empty() {
            let key = sort_key(dir);
            if index.contains_key(&key) || missing.contains_key(&key) {
                break;
            }
            missing.insert(
                key,
                Item {
                    entry: ImageEntry {
                        path: dir.to_owned(),
                        kind: EntryKind::Directory,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        mtime: item.entry.mtime,
                        size: 0,
                    },
                    layer: item.layer,
                    source: None,
                },
            );
            dir = rootfs::parent(dir);
        }
    }
    index.extend(missing);
}

/// Groups names that share content. The first name in sorted order carries the data; the
/// others become hard links to it. A link whose target was later replaced or deleted keeps
/// the content it had, as a file of its own.
fn resolve_hard_links(index: &mut BTreeMap<Vec<u8>, Item>) {
    let mut first_name: HashMap<Source, String> = HashMap::new();
    for item in index.values_mut() {
        let Some(source) = item.source else { continue };
        let linkable = matches!(item.entry.kind, EntryKind::Regular | EntryKind::Hardlink(_));
        if !linkable {
            continue;
        }
        match first_name.get(&source) {
            Some(first) => item.entry.kind = EntryKind::Hardlink(first.clone()),
            None => {
                item.entry.kind = EntryKind::Regular;
                first_name.insert(source, item.entry.path.clone());
            }
        }
    }
}
