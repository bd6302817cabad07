//! A rootfs tar -> a compressed newc initramfs, with the image's excludes and its transforms
//! applied to the stream of entries.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::Path;

use globset::GlobMatcher;
use sha2::{Digest, Sha256};
use wulf_core::extension::{EntryAction, EntryKind, ImageEntry, TransformRun};
use wulf_core::overlay_file::{FileContent, OverlayFile};

use crate::Progress;
use crate::compress::{Compression, Compressor};
use crate::cpio::{CpioWriter, Entry};
use crate::error::{EntryError, ImageError, Result};
use crate::rootfs::{self, DataReader, TarEntry};

/// The excludes file inside an image, as Warewulf reads it.
pub const EXCLUDES_FILE: &str = "etc/warewulf/excludes";
/// Entries handed to transforms at a time.
const BATCH: usize = 512;

/// How to pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub compression: Compression,
    pub level: u32,
    /// 0: one per core.
    pub threads: usize,
    /// Every entry gets this mtime (for reproducible builds across imports).
    pub mtime: Option<u64>,
}

/// What a pack produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub entries: u64,
    pub excluded: u64,
    pub uncompressed: u64,
    pub compressed: u64,
    pub sha256: String,
}

/// Where an entry's content comes from.
enum Content {
    Tar { offset: u64 },
    Bytes(Vec<u8>),
}

struct Item {
    entry: ImageEntry,
    content: Content,
}

/// Packs `rootfs` into `out`. `transforms` see the entries in order, each after the previous.
pub fn pack<W: Write + Send + 'static>(
    rootfs_tar: &Path,
    out: W,
    options: &PackOptions,
    transforms: &mut [(String, Box<dyn TransformRun>)],
    progress: &dyn Progress,
) -> Result<(Packed, W)> {
    let entries = rootfs::scan(rootfs_tar)?;
    let mut data = DataReader::open(rootfs_tar)?;
    let excludes = Excludes::load(&entries, &mut data)?;
    // Hard-link targets: how many names each has, and where its data is, in case a transform
    // drops the name that carries it.
    let mut link_counts: HashMap<String, u32> = HashMap::new();
    for e in &entries {
        if let EntryKind::Hardlink(target) = &e.entry.kind {
            *link_counts.entry(target.clone()).or_insert(1) += 1;
        }
    }
    let targets: HashMap<String, (u64, u64, u32)> = entries
        .iter()
        .filter(|e| link_counts.contains_key(&e.entry.path))
        .map(|e| {
            (
                e.entry.path.clone(),
                (e.data_offset, e.entry.size, e.entry.mode),
            )
        })
        .collect();

    let hashed = HashingWriter {
        inner: io::BufWriter::with_capacity(1 << 20, out),
        hasher: Sha256::new(),
        written: 0,
    };
    let compressor = Compressor::new(hashed, options.compression, options.level, options.threads)
        .map_err(ImageError::io("starting the compressor"))?;
    let mut packer = Packer {
        cpio: CpioWriter::new(compressor),
        data,
        dirs: HashSet::new(),
        written_files: HashSet::new(),
        targets,
        mtime: options.mtime,
        entries: 0,
    };
    for (target, count) in &link_counts {
        packer.cpio.expect_links(target, *count);
    }

    progress.start("packing", Some(entries.len() as u64));
    let mut excluded = 0;
    let mut batch = Vec::with_capacity(BATCH);
    for e in entries {
        progress.advance(1);
        if excludes.excludes(&e.entry) {
            excluded += 1;
            continue;
        }
        batch.push(Item {
            content: Content::Tar {
                offset: e.data_offset,
            },
            entry: e.entry,
        });
        if batch.len() == BATCH {
            let kept = run_transforms(std::mem::take(&mut batch), transforms, &mut packer.data)?;
            packer.emit_all(kept)?;
        }
    }
    let kept = run_transforms(batch, transforms, &mut packer.data)?;
    packer.emit_all(kept)?;
    for i in 0..transforms.len() {
        let (name, run) = &mut transforms[i];
        let added = run.finish()?;
        tracing::debug!(transform = %name, files = added.len(), "transform finished");
        let items: Vec<Item> = added.into_iter().map(|f| item_from_file(f, 0)).collect();
        // Files a transform adds pass through the transforms after it.
        let kept = run_transforms(items, &mut transforms[i + 1..], &mut packer.data)?;
        packer.emit_all(kept)?;
    }
    progress.finish();

    let entries = packer.entries;
    let uncompressed = packer.cpio.written();
    let compressor = packer
        .cpio
        .finish()
        .map_err(ImageError::io("writing the archive"))?;
    let hashed = compressor
        .finish()
        .map_err(ImageError::io("compressing the archive"))?;
    let packed = Packed {
        entries,
        excluded,
        uncompressed,
        compressed: hashed.written,
        sha256: hex::encode(hashed.hasher.finalize()),
    };
    let out = hashed
        .inner
        .into_inner()
        .map_err(|e| ImageError::io("writing the archive")(e.into_error()))?;
    Ok((packed, out))
}

struct Packer<W: Write> {
    cpio: CpioWriter<W>,
    data: DataReader,
    dirs: HashSet<String>,
    written_files: HashSet<String>,
    targets: HashMap<String, (u64, u64, u32)>,
    mtime: Option<u64>,
    entries: u64,
}

impl<W: Write> Packer<W> {
    fn emit_all(&mut self, items: Vec<Item>) -> Result<()> {
        for item in items {
            self.emit(item)?;
        }
        Ok(())
    }

    fn emit(&mut self, mut item: Item) -> Result<()> {
        self.ensure_parents(&item.entry.path, item.entry.mtime)?;
        if let Some(mtime) = self.mtime {
            item.entry.mtime = mtime;
        }
        // A hard link whose data-carrying name was dropped becomes a file of its own.
        if let EntryKind::Hardlink(target) = &item.entry.kind
            && !self.written_files.contains(target)
        {
            let Some(&(offset, size, _)) = self.targets.get(target) else {
                return Err(ImageError::BadEntry {
                    archive: self.data.path().display().to_string(),
                    source: EntryError::HardLinkTarget {
                        path: item.entry.path.clone(),
                        target: target.clone(),
                        reason: "the image does not have",
                    },
                });
            };
            item.entry.kind = EntryKind::Regular;
            item.entry.size = size;
            item.content = Content::Tar { offset };
        }
        let entry = &item.entry;
        let cpio_entry = Entry {
            path: &entry.path,
            kind: &entry.kind,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime: entry.mtime,
        };
        let what = || format!("packing /{}", entry.path);
        match (&entry.kind, item.content) {
            (EntryKind::Regular, Content::Tar { offset }) => {
                let mut reader = self.data.at(offset, entry.size)?;
                self.cpio
                    .append(&cpio_entry, entry.size, &mut reader)
                    .map_err(ImageError::io(what()))?;
            }
            (EntryKind::Regular, Content::Bytes(bytes)) => self
                .cpio
                .append_bytes(&cpio_entry, &bytes)
                .map_err(ImageError::io(what()))?,
            _ => self
                .cpio
                .append(&cpio_entry, 0, &mut io::empty())
                .map_err(ImageError::io(what()))?,
        }
        match &entry.kind {
            EntryKind::Directory => {
                self.dirs.insert(entry.path.clone());
            }
            EntryKind::Regular if self.targets.contains_key(&entry.path) => {
                self.written_files.insert(entry.path.clone());
            }
            _ => {}
        }
        self.entries += 1;
        Ok(())
    }

    /// Every parent must exist before its children: the kernel does not create them.
    fn ensure_parents(&mut self, path: &str, mtime: u64) -> Result<()> {
        let parent = rootfs::parent(path);
        if parent.is_empty() || self.dirs.contains(parent) {
            return Ok(());
        }
        self.ensure_parents(parent, mtime)?;
        let kind = EntryKind::Directory;
        let entry = Entry {
            path: parent,
            kind: &kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: self.mtime.unwrap_or(mtime),
        };
        self.cpio
            .append(&entry, 0, &mut io::empty())
            .map_err(ImageError::io(format!("packing /{parent}")))?;
        self.dirs.insert(parent.to_owned());
        self.entries += 1;
        Ok(())
    }
}

fn absolute(entry: &ImageEntry) -> ImageEntry {
    let mut e = entry.clone();
    e.path = format!("/{}", entry.path);
    if let EntryKind::Hardlink(target) = &entry.kind {
        e.kind = EntryKind::Hardlink(format!("/{target}"));
    }
    e
}

fn item_from_file(file: OverlayFile, mtime: u64) -> Item {
    let path = file.path.trim_start_matches('/').to_owned();
    let (kind, size, content) = match file.content {
        FileContent::Regular(bytes) => (EntryKind::Regular, bytes.len() as u64, bytes),
        FileContent::Directory => (EntryKind::Directory, 0, Vec::new()),
        FileContent::Symlink(target) => (EntryKind::Symlink(target), 0, Vec::new()),
    };
    Item {
        entry: ImageEntry {
            path,
            kind,
            mode: file.mode,
            uid: file.uid,
            gid: file.gid,
            mtime,
            size,
        },
        content: Content::Bytes(content),
    }
}

fn run_transforms(
    mut items: Vec<Item>,
    transforms: &mut [(String, Box<dyn TransformRun>)],
    data: &mut DataReader,
) -> Result<Vec<Item>> {
    for (_, run) in transforms.iter_mut() {
        if items.is_empty() {
            break;
        }
        let view: Vec<ImageEntry> = items.iter().map(|i| absolute(&i.entry)).collect();
        let actions = run.filter(&view)?;
        let mut kept = Vec::with_capacity(items.len());
        for ((item, action), seen) in items.into_iter().zip(actions).zip(&view) {
            let action = match action {
                EntryAction::WantContent if item.entry.kind == EntryKind::Regular => {
                    let content = match &item.content {
                        Content::Tar { offset } => data.read(*offset, item.entry.size)?,
                        Content::Bytes(b) => b.clone(),
                    };
                    run.rewrite(seen, content)?
                }
                // Only regular files have content to show; anything else is kept.
                EntryAction::WantContent => EntryAction::Keep,
                other => other,
            };
            match action {
                EntryAction::Keep | EntryAction::WantContent => kept.push(item),
                EntryAction::Drop => {}
                EntryAction::Replace(file) => kept.push(item_from_file(file, item.entry.mtime)),
            }
        }
        items = kept;
    }
    Ok(items)
}

/// `etc/warewulf/excludes`: one pattern per line, `#` comments. A pattern ending in `/`
/// excludes what is under that directory; any other is a glob on the absolute path (`*` does
/// not cross `/`), and excluding a directory excludes its contents.
#[derive(Debug, Default)]
struct Excludes {
    globs: Vec<GlobMatcher>,
    prefixes: Vec<String>,
}

impl Excludes {
    fn load(entries: &[TarEntry], data: &mut DataReader) -> Result<Excludes> {
        let Some(file) = entries
            .iter()
            .find(|e| e.entry.path == EXCLUDES_FILE && e.entry.kind == EntryKind::Regular)
        else {
            return Ok(Excludes::default());
        };
        let text = data.read(file.data_offset, file.entry.size)?;
        let mut excludes = Excludes::default();
        for (n, line) in String::from_utf8_lossy(&text).lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let absolute = if line.starts_with('/') {
                line.to_owned()
            } else {
                format!("/{line}")
            };
            if absolute.ends_with('/') {
                excludes.prefixes.push(absolute);
                continue;
            }
            let glob = globset::GlobBuilder::new(&absolute)
                .literal_separator(true)
                .build()
                .map_err(|source| ImageError::BadExclude {
                    line: n + 1,
                    pattern: line.to_owned(),
                    source,
                })?;
            excludes.globs.push(glob.compile_matcher());
        }
        Ok(excludes)
    }

    fn excludes(&self, entry: &ImageEntry) -> bool {
        if self.globs.is_empty() && self.prefixes.is_empty() {
            return false;
        }
        let path = format!("/{}", entry.path);
        if self.prefixes.iter().any(|p| path.starts_with(p.as_str())) {
            return true;
        }
        // The path or any of its parents matching a glob excludes it.
        let mut candidate = path.as_str();
        loop {
            if self.globs.iter().any(|g| g.is_match(candidate)) {
                return true;
            }
            match candidate.rfind('/') {
                Some(0) | None => return false,
                Some(i) => candidate = &candidate[..i],
            }
        }
    }
}

pub(crate) struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The SHA-256 (hex) and length of what was written, and the writer.
    pub(crate) fn into_parts(self) -> (String, u64, W) {
        (
            hex::encode(self.hasher.finalize()),
            self.written,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
