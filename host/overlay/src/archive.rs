//! Per-node overlay archives under `<state>/provision/`:
//! - `nodes/<xx>/<id>.<kind>-<sha>.img.gz`: the node's own files for `system` or `runtime`, in
//!   one of 256 directories (`xx`, from a hash of the id): a directory per node made a cold
//!   build of 100,000 nodes spend most of its time allocating directory inodes;
//! - `shared/<sha>.img.gz`: files a generator computes once for every node (`generate-shared`,
//!   e.g. a 10,000-line hosts file), compressed once;
//! - `index.json`: for each node and kind, the input hash and the segments to send, in order.
//!
//! The kernel unpacks concatenated compressed cpio archives one after another, so a node's
//! archive is its shared segments followed by its own, streamed back to back. A rebuild is
//! decided by a hash of the node's merged record, its overlay sources, the plugins and the
//! server, never by mtimes; a node whose inputs did not change is not touched.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use wulf_core::atomic_file::{WriteLock, write_atomic};
use wulf_core::extension::{EntryKind, Shared as SharedDeps};
use wulf_core::overlay_file::{FileContent, OverlayFile};
use wulf_core::sorted_map::SortedMap;
use wulf_core::{Node, StateDir};
use wulf_image::cpio::{CpioWriter, Entry};

use crate::error::{OverlayError, Result};
use crate::render::{Prepared, Renderer, node_json};

/// The two overlay lists of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    System,
    Runtime,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::System, Kind::Runtime];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::System => "system",
            Kind::Runtime => "runtime",
        }
    }

    pub fn list(self, node: &Node) -> &[String] {
        match self {
            Kind::System => &node.system_overlays,
            Kind::Runtime => &node.runtime_overlays,
        }
    }
}

/// One node's archive of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    pub input: String,
    /// Files relative to the provision directory, sent in this order.
    pub segments: Vec<String>,
    /// Over the segments' own hashes: a strong ETag for the whole.
    pub sha256: String,
    pub size: u64,
    pub files: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Index {
    /// Each node's two archives (a sorted pair, not an eleven-slot tree leaf per node).
    pub nodes: BTreeMap<String, SortedMap<Kind, Archive>>,
    /// Shared segments by generator: made again only when their input changes.
    #[serde(default)]
    pub shared: BTreeMap<String, Shared>,
}

/// A node's two archives.
type NodeArchives = SortedMap<Kind, Archive>;

/// The index as a build reads it: each node's entry stays the JSON text it was read as until
/// the build looks at that node, and is written back as it was read unless the node changed.
/// A build of one node among 10,000 parses one entry, not 20,000 archives.
#[derive(Deserialize)]
struct RawIndex<'a> {
    #[serde(borrow)]
    nodes: BTreeMap<Cow<'a, str>, &'a RawValue>,
    #[serde(default)]
    shared: BTreeMap<String, Shared>,
}

impl RawIndex<'_> {
    /// The archives of `node` it holds; none when it holds none, or an entry that does not
    /// read (the node is built again).
    fn archives(&self, node: &str) -> Option<NodeArchives> {
        serde_json::from_str(self.nodes.get(node)?.get()).ok()
    }
}

/// A node's entry in the index a build writes: as read, or made by the build.
#[derive(Serialize)]
#[serde(untagged)]
enum IndexEntry<'a> {
    Read(&'a RawValue),
    Built(NodeArchives),
}

#[derive(Serialize)]
struct IndexOut<'a> {
    nodes: &'a BTreeMap<Cow<'a, str>, IndexEntry<'a>>,
    shared: &'a BTreeMap<String, Shared>,
}

/// What a build did with one node: its archives when any changed, and how many were kept.
struct NodeOutcome {
    id: String,
    changed: Option<NodeArchives>,
    unchanged: usize,
    /// Its own segments the index named before and its new archives do not, to remove once
    /// the new index is written (own segments are named by their node's entry only).
    replaced: Vec<String>,
}

/// What the last whole-cluster build was made from, and the index it left (its stamp).
#[derive(Serialize, Deserialize)]
struct LastBuild {
    identity: String,
    index: u64,
    shared_segments: usize,
}

/// A generator's shared segment and what it was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shared {
    pub input: String,
    /// `None`: the generator returned no shared files.
    pub segment: Option<String>,
    /// The segment's paths, for the runtime overlay's manifest ([`RUNTIME_MANIFEST`]).
    #[serde(default)]
    pub paths: Vec<String>,
}

/// In every runtime overlay: the paths the whole runtime overlay holds, one per line, relative
/// to `/`. The node agent starts from it, so a file that leaves the overlay before the agent's
/// first sync after a boot is still removed.
pub const RUNTIME_MANIFEST: &str = "/warewulf/runtime.manifest";

/// What a build did.
#[derive(Debug, Default)]
pub struct Report {
    pub built: Vec<String>,
    pub unchanged: usize,
    pub shared_segments: usize,
    /// Nodes that could not be built, by id, with why. Their last built archives, if any,
    /// stay in the index and keep being served.
    pub failed: Vec<(String, OverlayError)>,
}

/// The provision directory.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    dir: PathBuf,
    lock: PathBuf,
}

impl ArchiveStore {
    pub fn new(state: &StateDir) -> Self {
        ArchiveStore {
            dir: state.root().join("provision"),
            lock: state.lock_file(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `index.json`: replaced whole (rename) whenever a build changes it.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    pub fn index(&self) -> Result<Index> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| OverlayError::BadIndex {
                path: path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(OverlayError::io(&path, e)),
        }
    }

    /// The segment files of a node's archive, if it was built.
    pub fn segments<'a>(
        &self,
        index: &'a Index,
        node: &str,
        kind: Kind,
    ) -> Option<(Vec<PathBuf>, &'a Archive)> {
        let archive = index.nodes.get(node)?.get(&kind)?;
        Some((
            archive.segments.iter().map(|s| self.dir.join(s)).collect(),
            archive,
        ))
    }

    /// Builds the archives of `nodes` (merged records; the renderer holds the whole cluster,
    /// for shared files). Nodes whose inputs are unchanged are skipped unless `force`. A node
    /// that cannot be built (a failing plugin or template) does not stop the others: every node
    /// that can be built is, and the failures are in the report.
    pub fn build(
        &self,
        renderer: &Renderer,
        nodes: &[Node],
        force: bool,
        threads: usize,
    ) -> Result<Report> {
        fs::create_dir_all(self.dir.join("shared")).map_err(|e| OverlayError::io(&self.dir, e))?;
        fs::create_dir_all(self.dir.join("nodes")).map_err(|e| OverlayError::io(&self.dir, e))?;
        // Taken before the read: a file replaced in between reads as changed below.
        let old_stamp = wulf_core::stamp::tree_stamp(&[self.index_path()]);
        // A build of the whole cluster from what the last one was made from changes nothing:
        // known from one hash, without reading the index or looking at any node.
        let whole =
            std::ptr::eq(nodes, &**renderer.cluster_nodes()).then(|| renderer.build_identity());
        if !force
            && let Some(identity) = &whole
            && let Some(report) = self.unchanged_since_last(identity, old_stamp, nodes.len())
        {
            return Ok(report);
        }
        let old_bytes = self.index_bytes()?;
        let old = {
            let _span = tracing::debug_span!("index read").entered();
            self.parse_index(&old_bytes)?
        };

        // Shared segments: once per generator used by these nodes.
        let used: BTreeSet<&String> = nodes
            .iter()
            .flat_map(|n| Kind::ALL.into_iter().flat_map(move |k| k.list(n)))
            .collect();
        let all = renderer.cluster_nodes();
        let none: Arc<[Node]> = Arc::new([]);
        let mut shared: BTreeMap<String, String> = BTreeMap::new();
        let mut shared_paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut shared_inputs: BTreeMap<String, Shared> = BTreeMap::new();
        // Generators whose shared files could not be made: their nodes cannot be built.
        let mut shared_failed: BTreeMap<String, String> = BTreeMap::new();
        for name in used {
            let Some(Prepared::Generator {
                generator,
                identity,
            }) = renderer.overlays().get(name)
            else {
                continue;
            };
            // Called only when what its shared files depend on changed (or never).
            let deps = generator.shared();
            let cluster_hash = match deps {
                SharedDeps::None => continue,
                SharedDeps::Config => String::new(),
                SharedDeps::Cluster => renderer.cluster_hash().to_owned(),
                SharedDeps::Fields(fields) => renderer.fields_hash(fields),
            };
            let input = hex::encode(Sha256::digest(format!(
                "{identity}\0{cluster_hash}\0{:?}",
                renderer.server()
            )));
            if !force
                && let Some(previous) = old.shared.get(name)
                && previous.input == input
                && previous
                    .segment
                    .as_ref()
                    .is_none_or(|s| self.dir.join(s).exists() && !previous.paths.is_empty())
            {
                if let Some(segment) = &previous.segment {
                    shared.insert(name.clone(), segment.clone());
                    shared_paths.insert(name.clone(), previous.paths.clone());
                }
                shared_inputs.insert(name.clone(), previous.clone());
                continue;
            }
            let _span = tracing::debug_span!("shared", overlay = %name).entered();
            let cluster: Arc<[Node]> = match deps {
                SharedDeps::Fields(fields) => all.iter().map(|n| fields.project(n)).collect(),
                SharedDeps::Cluster => Arc::clone(all),
                _ => Arc::clone(&none),
            };
            let files = match generator.generate_shared(&cluster, renderer.server()) {
                Ok(files) => files,
                Err(source) => {
                    shared_failed.insert(name.clone(), source.to_string());
                    continue;
                }
            };
            if files.is_empty() {
                shared_inputs.insert(
                    name.clone(),
                    Shared {
                        input,
                        segment: None,
                        paths: Vec::new(),
                    },
                );
                continue;
            }
            let merged: BTreeMap<String, OverlayFile> =
                files.into_iter().map(|f| (f.path.clone(), f)).collect();
            let rel = self.write_archive("shared", "", &merged)?;
            let paths: Vec<String> = merged.keys().cloned().collect();
            shared.insert(name.clone(), rel.clone());
            shared_paths.insert(name.clone(), paths.clone());
            shared_inputs.insert(
                name.clone(),
                Shared {
                    input,
                    segment: Some(rel),
                    paths,
                },
            );
        }

        let results: Mutex<Vec<NodeOutcome>> = Mutex::new(Vec::new());
        let failed: Mutex<Vec<(String, OverlayError)>> = Mutex::new(Vec::new());
        let threads = threads.clamp(1, nodes.len().max(1));
        let span = tracing::debug_span!("nodes", count = nodes.len()).entered();
        let chunk = nodes.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for part in nodes.chunks(chunk) {
                let (results, failed, old) = (&results, &failed, &old);
                let shared = (&shared, &shared_paths);
                let shared_failed = &shared_failed;
                scope.spawn(move || {
                    for node in part {
                        // A node fails whole: its other kind's archive, built meanwhile, is
                        // not taken either, so both kinds come from one build.
                        let built = match unbuildable(node, shared_failed) {
                            Some(error) => Err(error),
                            None => self.build_node(renderer, node, old, shared, force),
                        };
                        match built {
                            Ok(outcome) => {
                                if let Ok(mut results) = results.lock() {
                                    results.push(outcome);
                                }
                            }
                            Err(error) => {
                                if let Ok(mut failed) = failed.lock() {
                                    failed.push((node.id.clone(), error));
                                }
                            }
                        }
                    }
                });
            }
        });
        drop(span);
        let mut failed = failed.into_inner().unwrap_or_default();
        failed.sort_by(|a, b| a.0.cmp(&b.0));

        let _lock = WriteLock::acquire(&self.lock).map_err(|e| OverlayError::io(&self.lock, e))?;
        // Another build may have written the index meanwhile; otherwise (it is replaced by
        // rename, so a new file is a new inode) what was read is still current.
        let reread;
        // `ours`: the index this build read, when another one replaced it meanwhile.
        let (mut index, ours) = if wulf_core::stamp::tree_stamp(&[self.index_path()]) == old_stamp {
            (old, None)
        } else {
            reread = self.index_bytes()?;
            (self.parse_index(&reread)?, Some(old))
        };
        let mut report = Report {
            shared_segments: shared.len(),
            failed,
            ..Report::default()
        };
        let mut entries: BTreeMap<Cow<str>, IndexEntry> = std::mem::take(&mut index.nodes)
            .into_iter()
            .map(|(id, raw)| (id, IndexEntry::Read(raw)))
            .collect();
        let mut built = BTreeSet::new();
        let mut replaced = Vec::new();
        for outcome in results.into_inner().unwrap_or_default() {
            report.unchanged += outcome.unchanged;
            let id = &outcome.id;
            replaced.extend(outcome.replaced.into_iter().map(|r| (id.clone(), r)));
            if let Some(archives) = outcome.changed {
                entries.insert(Cow::Owned(outcome.id.clone()), IndexEntry::Built(archives));
                built.insert(outcome.id);
            } else if let Some(ours) = &ours
                && let Some((read_id, raw)) = ours.nodes.get_key_value(outcome.id.as_str())
            {
                // Found unchanged in the entry this build read: that entry goes back, whatever
                // the other build wrote (it may be gone, or made from another inventory).
                entries.insert(read_id.clone(), IndexEntry::Read(raw));
            }
        }
        report.built = built.into_iter().collect();
        let shared_changed = shared_inputs
            .iter()
            .any(|(k, v)| index.shared.get(k) != Some(v));
        index.shared.extend(shared_inputs);
        let nothing_new = report.built.is_empty() && !shared_changed && self.index_path().exists();
        if !nothing_new {
            let _span = tracing::debug_span!("index write").entered();
            let out = IndexOut {
                nodes: &entries,
                shared: &index.shared,
            };
            let text = serde_json::to_vec(&out).map_err(OverlayError::SerializeIndex)?;
            write_atomic(&self.index_path(), &text)
                .map_err(|e| OverlayError::io(&self.index_path(), e))?;
            self.collect_garbage(&entries, &index.shared, &replaced);
        }
        if let Some(identity) = whole
            && report.failed.is_empty()
        {
            self.remember_build(identity, report.shared_segments);
        }
        Ok(report)
    }

    /// The index file as it is; an empty index when there is none yet.
    fn index_bytes(&self) -> Result<Vec<u8>> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(b"{\"nodes\":{}}".to_vec()),
            Err(e) => Err(OverlayError::io(&path, e)),
        }
    }

    fn parse_index<'a>(&self, bytes: &'a [u8]) -> Result<RawIndex<'a>> {
        serde_json::from_slice(bytes).map_err(|source| OverlayError::BadIndex {
            path: self.index_path(),
            source,
        })
    }

    fn last_build_path(&self) -> PathBuf {
        self.dir.join("last-build.json")
    }

    /// The report of a build that has nothing to do: the last whole build was made from
    /// `identity`, and the index is the one it left. (An archive deleted by hand since is
    /// made again by `overlay build --force`.) `index` is the index's stamp now; a missing
    /// index stamps differently from any written one.
    fn unchanged_since_last(&self, identity: &str, index: u64, nodes: usize) -> Option<Report> {
        let text = fs::read(self.last_build_path()).ok()?;
        let last: LastBuild = serde_json::from_slice(&text).ok()?;
        (last.identity == identity && last.index == index).then(|| Report {
            unchanged: nodes * Kind::ALL.len(),
            shared_segments: last.shared_segments,
            ..Report::default()
        })
    }

    /// Notes that the index now holds every node's archives made from `identity`; called
    /// under the write lock, after the index is written. Best effort: without the note the
    /// next build only takes the longer way to the same answer.
    fn remember_build(&self, identity: String, shared_segments: usize) {
        let last = LastBuild {
            identity,
            index: wulf_core::stamp::tree_stamp(&[self.index_path()]),
            shared_segments,
        };
        if let Ok(text) = serde_json::to_vec(&last)
            && let Err(error) = write_atomic(&self.last_build_path(), &text)
        {
            tracing::debug!(%error, "the last build's note was not written");
        }
    }

    fn build_node(
        &self,
        renderer: &Renderer,
        node: &Node,
        old: &RawIndex,
        (shared, shared_paths): (&BTreeMap<String, String>, &BTreeMap<String, Vec<String>>),
        force: bool,
    ) -> Result<NodeOutcome> {
        let digest = renderer.digest_of(node);
        let mut previous = old.archives(&node.id).unwrap_or_default();
        let mut archives = NodeArchives::default();
        let mut unchanged = 0;
        let mut replaced = Vec::new();
        // The template view is built only for a node that is rendered.
        let mut json = None;
        for kind in Kind::ALL {
            let list = kind.list(node);
            let shared_segments: Vec<String> =
                list.iter().filter_map(|n| shared.get(n).cloned()).collect();
            // What the node's own segment is made from. Not which shared segments go before
            // it: when one changes (a node added changes every hosts file), each node's
            // archive is put together again from its own segment, not rendered again. The
            // runtime overlay's manifest lists the shared paths, so they are its input.
            let mut extra = kind.as_str().to_owned();
            if kind == Kind::Runtime {
                for path in list.iter().filter_map(|n| shared_paths.get(n)).flatten() {
                    extra.push('\n');
                    extra.push_str(path);
                }
            }
            let input = renderer.input_hash(&digest, list, &extra);
            match previous.remove(&kind) {
                Some(mut previous)
                    if !force
                        && previous.input == input
                        && previous
                            .segments
                            .last()
                            .is_some_and(|own| self.dir.join(own).exists()) =>
                {
                    let own_at = previous.segments.len() - 1;
                    if previous.segments[..own_at] == shared_segments[..] {
                        unchanged += 1;
                    } else {
                        let mut segments = shared_segments;
                        segments.push(previous.segments.swap_remove(own_at));
                        previous = self.assemble(input, segments, previous.files);
                    }
                    archives.insert(kind, previous);
                    continue;
                }
                // Rendered again: its previous own segment goes, unless the same content
                // makes the same name.
                stale => replaced.extend(stale.and_then(|mut p| p.segments.pop())),
            }
            let json = json.get_or_insert_with(|| node_json(node));
            let mut files = renderer.render(node, json, list)?;
            if kind == Kind::Runtime {
                let manifest = runtime_manifest(
                    list.iter()
                        .filter_map(|n| shared_paths.get(n))
                        .flatten()
                        .chain(files.keys()),
                );
                files.insert(RUNTIME_MANIFEST.to_owned(), manifest);
            }
            let rel = self.write_archive(
                &format!("nodes/{}", shard(&node.id)),
                &format!("{}.{}-", node.id, kind.as_str()),
                &files,
            )?;
            let count = files.len();
            drop(files);
            let mut segments = shared_segments;
            segments.push(rel);
            archives.insert(kind, self.assemble(input, segments, count));
        }
        replaced.retain(|own| !archives.values().any(|a| a.segments.last() == Some(own)));
        Ok(NodeOutcome {
            replaced,
            id: node.id.clone(),
            changed: (unchanged < Kind::ALL.len()).then_some(archives),
            unchanged,
        })
    }

    /// A node's archive of `segments` (shared ones first, its own last), which exist.
    fn assemble(&self, input: String, segments: Vec<String>, files: usize) -> Archive {
        let mut whole = Sha256::new();
        let mut size = 0;
        for s in &segments {
            whole.update(s.as_bytes());
            size += fs::metadata(self.dir.join(s)).map_or(0, |m| m.len());
        }
        Archive {
            input,
            sha256: hex::encode(whole.finalize()),
            segments,
            size,
            files,
        }
    }

    /// Packs `files` into `<dir>/<prefix><sha>.img.gz`, streamed to disk as it is compressed
    /// (never held whole in memory), named by its content: a crash leaves a temp file or the
    /// complete archive, never a torn one. The path relative to the provision directory.
    fn write_archive(
        &self,
        dir: &str,
        prefix: &str,
        files: &BTreeMap<String, OverlayFile>,
    ) -> Result<String> {
        let abs = self.dir.join(dir);
        fs::create_dir_all(&abs).map_err(|e| OverlayError::io(&abs, e))?;
        let tmp = abs.join(format!(
            ".tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = fs::File::create(&tmp).map_err(|e| OverlayError::io(&tmp, e))?;
        let written =
            pack_into(files, HashingWriter::new(std::io::BufWriter::new(file))).and_then(|out| {
                let (buffered, sha) = out.finish();
                buffered
                    .into_inner()
                    .map_err(|e| OverlayError::io(&tmp, e.into_error()))?;
                Ok(sha)
            });
        let sha = match written {
            Ok(sha) => sha,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let rel = format!("{dir}/{prefix}{}.img.gz", &sha[..32]);
        let path = self.dir.join(&rel);
        if path.exists() {
            let _ = fs::remove_file(&tmp);
        } else {
            fs::rename(&tmp, &path).map_err(|e| OverlayError::io(&path, e))?;
        }
        Ok(rel)
    }

    /// Removes the segments no archive uses any more: the shared ones, and the nodes' own
    /// segments this build replaced (named, so no directory of 100,000 files is listed).
    fn collect_garbage(
        &self,
        entries: &BTreeMap<Cow<str>, IndexEntry>,
        shared: &BTreeMap<String, Shared>,
        replaced: &[(String, String)],
    ) {
        let names = |entry: &IndexEntry, segment: &str| match entry {
            // A segment's name (its directory and content hash) cannot occur in an entry's
            // text but as that segment.
            IndexEntry::Read(raw) => raw.get().contains(segment),
            IndexEntry::Built(archives) => archives
                .values()
                .any(|a| a.segments.iter().any(|s| s == segment)),
        };
        // The generators' current segments are used; an older one while some node's archive
        // still names it.
        if let Ok(files) = fs::read_dir(self.dir.join("shared")) {
            for e in files.flatten() {
                let rel = format!("shared/{}", e.file_name().to_string_lossy());
                let used = shared.values().any(|s| s.segment.as_deref() == Some(&rel))
                    || entries.values().any(|e| names(e, &rel));
                if e.path().is_file() && !used {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        // A node's own segment is named by its entry only (and the same content makes the
        // same name, so a node changed back names its old segment again).
        for (id, rel) in replaced {
            if !entries.get(id.as_str()).is_some_and(|e| names(e, rel)) {
                let path = self.dir.join(rel);
                let _ = fs::remove_file(&path);
                // The layout before the 256 directories had one directory per node: it goes
                // when its last segment does.
                if let Some(parent) = path.parent()
                    && parent.parent() == Some(&*self.dir.join("nodes"))
                    && !is_shard(parent)
                {
                    let _ = fs::remove_dir(parent);
                }
            }
        }
    }
}

/// The directory under `nodes/` of a node's own segments: one of 256, by a hash of its id.
fn shard(id: &str) -> String {
    format!("{:02x}", Sha256::digest(id.as_bytes())[0])
}

/// Whether `dir` is one of the 256 directories of [`shard`].
fn is_shard(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Why `node` cannot be built before trying: a generator it lists failed its shared files.
fn unbuildable(node: &Node, shared_failed: &BTreeMap<String, String>) -> Option<OverlayError> {
    let (overlay, message) = Kind::ALL
        .into_iter()
        .flat_map(|k| k.list(node))
        .find_map(|name| shared_failed.get_key_value(name))?;
    Some(OverlayError::Shared {
        overlay: overlay.clone(),
        message: message.clone(),
    })
}

/// A writer that hashes what passes through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            sha: Sha256::new(),
        }
    }

    /// The writer and the hex sha256 of everything written.
    fn finish(self) -> (W, String) {
        let (inner, digest) = self.into_digest();
        (inner, hex::encode(digest))
    }

    /// The writer and the sha256 of everything written.
    pub(crate) fn into_digest(self) -> (W, [u8; 32]) {
        (self.inner, self.sha.finalize().into())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// [`RUNTIME_MANIFEST`] for an overlay of `paths` (and itself).
fn runtime_manifest<'a>(paths: impl Iterator<Item = &'a String>) -> OverlayFile {
    let mut all: BTreeSet<&str> = paths.map(|p| p.trim_start_matches('/')).collect();
    all.insert(RUNTIME_MANIFEST.trim_start_matches('/'));
    let mut text = String::new();
    for path in all {
        text.push_str(path);
        text.push('\n');
    }
    OverlayFile {
        path: RUNTIME_MANIFEST.to_owned(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        content: FileContent::Regular(text.into_bytes()),
    }
}

/// The mode of a parent directory no overlay declared, made so the kernel can create what is
/// inside: the one the FHS gives it, because the kernel (and the node agent) apply it to the
/// image's directory. A key under `/root` must not leave `/root` readable by all.
fn implicit_mode(path: &str) -> u32 {
    match path {
        "root" => 0o700,
        "tmp" | "var/tmp" => 0o1777,
        _ => 0o755,
    }
}

/// A newc cpio of `files` (parents created where missing, see [`implicit_mode`]),
/// gzip-compressed into `out`, which is handed back.
fn pack_into<W: Write>(files: &BTreeMap<String, OverlayFile>, out: W) -> Result<W> {
    let io = OverlayError::Pack;
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
    let mut cpio = CpioWriter::new(gz);
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let dir_kind = EntryKind::Directory;
    for (path, file) in files {
        let rel = path.trim_start_matches('/');
        let mut parents = Vec::new();
        let mut p = rel;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if dirs.contains(p) {
                break;
            }
            parents.push(p.to_owned());
        }
        for parent in parents.into_iter().rev() {
            if dirs.insert(parent.clone()) {
                let entry = Entry {
                    path: &parent,
                    kind: &dir_kind,
                    mode: implicit_mode(&parent),
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                };
                cpio.append(&entry, 0, &mut std::io::empty()).map_err(io)?;
            }
        }
        let (kind, bytes): (EntryKind, &[u8]) = match &file.content {
            FileContent::Regular(b) => (EntryKind::Regular, b),
            FileContent::Directory => {
                if !dirs.insert(rel.to_owned()) {
                    continue;
                }
                (EntryKind::Directory, b"")
            }
            FileContent::Symlink(t) => (EntryKind::Symlink(t.clone()), b""),
        };
        let entry = Entry {
            path: rel,
            kind: &kind,
            mode: file.mode,
            uid: file.uid,
            gid: file.gid,
            mtime: 0,
        };
        cpio.append(&entry, bytes.len() as u64, &mut &bytes[..])
            .map_err(io)?;
    }
    let gz = cpio.finish().map_err(io)?;
    gz.finish().map_err(io)
}

/// Writes a node's archive (all segments, in order) to `out`.
pub fn copy_archive(segments: &[PathBuf], out: &mut dyn Write) -> std::io::Result<()> {
    for s in segments {
        let mut f = fs::File::open(s)?;
        std::io::copy(&mut f, out)?;
    }
    Ok(())
}
