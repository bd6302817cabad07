//! Rendering a node's overlay list into files: site overlays (templates and plain files) and
//! generator plugins, merged in list order (a later overlay's file wins), as Warewulf does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use minijinja::Value;
use minijinja::value::Serde;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use wulf_core::node_fields::NodeFields;
use wulf_core::overlay_file::{FileContent, OverlayFile};
use wulf_core::{Node, OverlayGenerator, Server};

use crate::error::{OverlayError, Result};
use crate::source::{self, OverlayStore, SourceFile, SourceKind};
use crate::template::{Rendered, Templates};

/// Leads every input hash. v2: runtime overlays carry their manifest; v3: /root as an
/// implicit parent is 0700; v4: the node enters as its record's digest.
const INPUT_VERSION: &[u8] = b"wulf-overlay-v4\0";

/// An overlay ready to render for many nodes.
pub enum Prepared {
    /// A site overlay; its templates are compiled once.
    Tree {
        files: Vec<SourceFile>,
        hash: String,
        /// Some template reads `cluster`, so any node's change can change its output.
        uses_cluster: bool,
        /// Some template reads image files, so a changed image can change its output.
        uses_images: bool,
    },
    Generator {
        generator: Arc<dyn OverlayGenerator>,
        /// Identifies the plugin's code and config, for rebuild decisions.
        identity: String,
    },
}

/// Everything a build needs, prepared once: overlays, compiled templates, the cluster.
pub struct Renderer {
    overlays: BTreeMap<String, Prepared>,
    templates: Templates,
    server: Server,
    server_value: Value,
    cluster: Value,
    cluster_nodes: Arc<[Node]>,
    /// Made when first asked for: a build of one node often needs neither.
    cluster_hash: OnceLock<String>,
    /// Each cluster record's [`node_digest`], in cluster order.
    digests: OnceLock<Vec<[u8; 32]>>,
    /// The server as templates see it, serialised once for every node's input hash.
    server_bytes: Vec<u8>,
    /// What image files read by templates depend on (see [`Renderer::set_image_reader`]).
    images_identity: String,
    build_time: u64,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("overlays", &self.overlays.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The node as templates see it: every field, keys in snake_case
/// (`node.network_devices.default.ipaddr`).
pub fn node_json(node: &Node) -> Json {
    fn snake(v: Json) -> Json {
        match v {
            Json::Object(map) => Json::Object(
                map.into_iter()
                    .map(|(k, v)| (k.replace('-', "_"), snake(v)))
                    .collect(),
            ),
            Json::Array(items) => Json::Array(items.into_iter().map(snake).collect()),
            other => other,
        }
    }
    let mut json = snake(serde_json::to_value(node).unwrap_or(Json::Null));
    if let Json::Object(map) = &mut json {
        map.insert("id".into(), Json::String(node.id.clone()));
        for key in ["network_devices", "tags", "resources"] {
            map.entry(key)
                .or_insert_with(|| Json::Object(Default::default()));
        }
        for key in ["system_overlays", "runtime_overlays", "profiles"] {
            map.entry(key).or_insert_with(|| Json::Array(Vec::new()));
        }
        map.entry("ipmi")
            .or_insert_with(|| Json::Object(Default::default()));
        map.entry("kernel")
            .or_insert_with(|| serde_json::json!({"args": []}));
    }
    json
}

/// What a node's archives are made from, as a digest: its id and merged record serialised
/// straight into the hash (building the template view of every node only to hash it cost a
/// no-change build of 10,000 nodes most of its time).
pub fn node_digest(node: &Node) -> [u8; 32] {
    record_digest(node, |out| Ok(serde_json::to_writer(out, node)?))
}

/// A digest of `node`'s id and of what `body` writes of it.
fn record_digest(
    node: &Node,
    body: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> [u8; 32] {
    use std::io::Write as _;
    let mut out = crate::archive::HashingWriter::new(std::io::sink());
    // Writing into a hash over a sink cannot fail.
    let _ = out.write_all(node.id.as_bytes());
    let _ = out.write_all(&[0]);
    let _ = body(&mut out);
    out.into_digest().1
}

fn server_json(server: &Server) -> Json {
    serde_json::json!({
        "hostname": server.hostname,
        "ipaddr": server.ipaddr,
        "netmask": server.netmask,
        "network": server.network,
        "ipaddr6": server.ipaddr6,
        "prefixlen6": server.prefixlen6,
        "port": server.port,
    })
}

impl Renderer {
    /// Prepares the overlays named in `names`: a site overlay directory if there is one,
    /// else the generator plugin of that name.
    pub fn new(
        store: &OverlayStore,
        generators: &BTreeMap<String, Arc<dyn OverlayGenerator>>,
        names: &BTreeSet<String>,
        cluster: Arc<[Node]>,
        server: &Server,
        build_time: u64,
    ) -> Result<Renderer> {
        let mut templates = Templates::new();
        let mut overlays = BTreeMap::new();
        for name in names {
            let prepared = if store.exists(name) {
                let files = store.files(name)?;
                let (mut uses_cluster, mut uses_images) = (false, false);
                for f in &files {
                    if let SourceKind::Template(text) = &f.kind {
                        let key = template_key(name, &f.source);
                        uses_images |= text.contains("include_from");
                        templates.add(&key, text.clone()).map_err(|message| {
                            OverlayError::Template {
                                overlay: name.clone(),
                                file: f.source.clone(),
                                message,
                            }
                        })?;
                        // A template that reads the cluster makes every node's archive
                        // follow every node; `node.cluster` (the cluster's name) does not.
                        uses_cluster |= templates.reads(&key, text, "cluster");
                    }
                }
                Prepared::Tree {
                    hash: source::hash_files(&files),
                    files,
                    uses_cluster,
                    uses_images,
                }
            } else if let Some(generator) = generators.get(name) {
                Prepared::Generator {
                    // Warm state (a plugin's instances) lives as long as this build.
                    generator: generator
                        .for_build()
                        .unwrap_or_else(|| Arc::clone(generator)),
                    identity: generator.name().to_owned(),
                }
            } else {
                return Err(OverlayError::NotFound(name.clone()));
            };
            overlays.insert(name.clone(), prepared);
        }
        // The cluster as templates see it is only built when a template reads it.
        let any_cluster = overlays.values().any(|p| {
            matches!(
                p,
                Prepared::Tree {
                    uses_cluster: true,
                    ..
                }
            )
        });
        let cluster_json: Vec<Json> = if any_cluster {
            cluster.iter().map(node_json).collect()
        } else {
            Vec::new()
        };
        Ok(Renderer {
            overlays,
            templates,
            server: server.clone(),
            server_value: Value::from(Serde(server_json(server))),
            cluster: Value::from(Serde(serde_json::json!({ "nodes": cluster_json }))),
            cluster_nodes: cluster,
            cluster_hash: OnceLock::new(),
            digests: OnceLock::new(),
            server_bytes: serde_json::to_vec(&server_json(server)).unwrap_or_default(),
            images_identity: String::new(),
            build_time,
        })
    }

    /// Whether some template reads image files.
    pub fn reads_images(&self) -> bool {
        self.overlays.values().any(|p| {
            matches!(
                p,
                Prepared::Tree {
                    uses_images: true,
                    ..
                }
            )
        })
    }

    /// Lets templates read image files (`include_from`); `identity` changes when an image
    /// does, and rebuilds the nodes whose templates read images.
    pub fn set_image_reader(&mut self, read: crate::template::ImageReader, identity: String) {
        self.templates.set_image_reader(read);
        self.images_identity = identity;
    }

    /// Overrides a generator's identity (its plugin version, wasm hash and config).
    pub fn set_identity(&mut self, name: &str, value: String) {
        if let Some(Prepared::Generator { identity, .. }) = self.overlays.get_mut(name) {
            *identity = value;
        }
    }

    pub fn overlays(&self) -> &BTreeMap<String, Prepared> {
        &self.overlays
    }

    /// A hash of every merged node: what `generate-shared` output depends on.
    pub fn cluster_hash(&self) -> &str {
        self.cluster_hash.get_or_init(|| {
            let mut hasher = Sha256::new();
            for digest in self.digests() {
                hasher.update(digest);
            }
            hex::encode(hasher.finalize())
        })
    }

    /// A hash of `fields` of every merged node (and the ids): what the shared files of a
    /// generator that declares its fields depend on.
    pub fn fields_hash(&self, fields: NodeFields) -> String {
        let _span = tracing::debug_span!("fields hash", %fields).entered();
        let digest = |node: &Node| record_digest(node, |out| fields.write_json(node, out));
        let mut hasher = Sha256::new();
        hasher.update(fields.to_string().as_bytes());
        for digest in on_every_core(&self.cluster_nodes, digest) {
            hasher.update(digest);
        }
        hex::encode(hasher.finalize())
    }

    /// Each cluster record's [`node_digest`], made the first time it is asked for.
    fn digests(&self) -> &[[u8; 32]] {
        self.digests.get_or_init(|| {
            let _span =
                tracing::debug_span!("cluster digests", nodes = self.cluster_nodes.len()).entered();
            on_every_core(&self.cluster_nodes, node_digest)
        })
    }

    /// `node`'s [`node_digest`]: the one made for the cluster when `node` is one of the
    /// cluster's own records (a build of every node), else made now (a copy may differ).
    pub fn digest_of(&self, node: &Node) -> [u8; 32] {
        let size = std::mem::size_of::<Node>().max(1);
        let offset =
            (node as *const Node as usize).wrapping_sub(self.cluster_nodes.as_ptr() as usize);
        match self.cluster_nodes.get(offset / size) {
            Some(member) if offset.is_multiple_of(size) && std::ptr::eq(member, node) => {
                self.digests()[offset / size]
            }
            _ => node_digest(node),
        }
    }

    /// Every merged node of the cluster, as `generate-shared` sees them.
    pub fn cluster_nodes(&self) -> &Arc<[Node]> {
        &self.cluster_nodes
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    /// What decides whether a node's archive for `list` must be rebuilt.
    /// `node` is the node's [`node_digest`].
    pub fn input_hash(&self, node: &[u8; 32], list: &[String], extra: &str) -> String {
        let mut h = Sha256::new();
        h.update(INPUT_VERSION);
        h.update(node);
        h.update(&self.server_bytes);
        h.update(extra.as_bytes());
        for name in list {
            self.hash_overlay(&mut h, name);
        }
        hex::encode(h.finalize())
    }

    /// Everything a whole-cluster build is made from, in one hash: the records, the server,
    /// the images and each overlay's sources or plugin. When it equals the last whole build's,
    /// every node's [`input_hash`](Self::input_hash) and every shared segment's input does too.
    pub fn build_identity(&self) -> String {
        let mut h = Sha256::new();
        h.update(INPUT_VERSION);
        h.update(self.cluster_hash().as_bytes());
        h.update(&self.server_bytes);
        h.update(format!("{:?}", self.server).as_bytes());
        h.update(self.images_identity.as_bytes());
        for name in self.overlays.keys() {
            self.hash_overlay(&mut h, name);
        }
        hex::encode(h.finalize())
    }

    /// What overlay `name` brings to an input: its sources (and the cluster or the images,
    /// when its templates read them) or its plugin's identity.
    fn hash_overlay(&self, h: &mut Sha256, name: &str) {
        h.update(name.as_bytes());
        h.update([0]);
        match self.overlays.get(name) {
            Some(Prepared::Tree {
                hash,
                uses_cluster,
                uses_images,
                ..
            }) => {
                h.update(hash.as_bytes());
                if *uses_cluster {
                    h.update(self.cluster_hash().as_bytes());
                }
                if *uses_images {
                    h.update(self.images_identity.as_bytes());
                }
            }
            Some(Prepared::Generator { identity, .. }) => h.update(identity.as_bytes()),
            None => h.update(b"missing"),
        }
    }

    /// The files of `list` for one node, merged in order: a later overlay's file wins.
    pub fn render(
        &self,
        node: &Node,
        node_value: &Json,
        list: &[String],
    ) -> Result<BTreeMap<String, OverlayFile>> {
        let mut merged = BTreeMap::new();
        let ctx = minijinja::context! {
            node => Value::from(Serde(node_value)),
            cluster => self.cluster.clone(),
            server => self.server_value.clone(),
            build => minijinja::context! { time => self.build_time },
        };
        for name in list {
            let prepared = self
                .overlays
                .get(name)
                .ok_or_else(|| OverlayError::NotFound(name.clone()))?;
            match prepared {
                Prepared::Tree { files, .. } => {
                    for f in files {
                        let owned = |path: String, content: FileContent| OverlayFile {
                            path,
                            mode: f.mode,
                            uid: f.uid,
                            gid: f.gid,
                            content,
                        };
                        match &f.kind {
                            SourceKind::Directory => {
                                merged.insert(
                                    f.path.clone(),
                                    owned(f.path.clone(), FileContent::Directory),
                                );
                            }
                            SourceKind::File(bytes) => {
                                merged.insert(
                                    f.path.clone(),
                                    owned(f.path.clone(), FileContent::Regular(bytes.clone())),
                                );
                            }
                            SourceKind::Symlink(target) => {
                                merged.insert(
                                    f.path.clone(),
                                    owned(f.path.clone(), FileContent::Symlink(target.clone())),
                                );
                            }
                            SourceKind::Template(_) => {
                                let ctx = minijinja::context! { overlay => name, ..ctx.clone() };
                                let rendered = self
                                    .templates
                                    .render(&template_key(name, &f.source), &f.path, &ctx)
                                    .map_err(|message| OverlayError::Template {
                                        overlay: name.clone(),
                                        file: f.source.clone(),
                                        message: format!(
                                            "{message} (rendering for node {})",
                                            node.id
                                        ),
                                    })?;
                                for r in rendered {
                                    let file = match r {
                                        Rendered::File { path, content } => {
                                            owned(path, FileContent::Regular(content.into_bytes()))
                                        }
                                        Rendered::Symlink { path, target } => {
                                            owned(path, FileContent::Symlink(target))
                                        }
                                    };
                                    let clean = wulf_core::overlay_file::clean_path(&file.path)
                                        .map_err(|e| OverlayError::Template {
                                            overlay: name.clone(),
                                            file: f.source.clone(),
                                            message: e.to_string(),
                                        })?;
                                    merged.insert(
                                        clean.clone(),
                                        OverlayFile {
                                            path: clean,
                                            ..file
                                        },
                                    );
                                }
                            }
                        }
                    }
                }
                Prepared::Generator { generator, .. } => {
                    let files = generator.generate(node, &self.server).map_err(|source| {
                        OverlayError::Plugin {
                            overlay: name.clone(),
                            node: node.id.clone(),
                            source,
                        }
                    })?;
                    for file in files {
                        merged.insert(file.path.clone(), file);
                    }
                }
            }
        }
        Ok(merged)
    }
}

/// `f` of each node, in order, the nodes split across the machine's cores.
fn on_every_core(nodes: &[Node], f: impl Fn(&Node) -> [u8; 32] + Sync) -> Vec<[u8; 32]> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = nodes.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let parts: Vec<_> = nodes
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn template_key(overlay: &str, source: &str) -> String {
    format!("{overlay}/{source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_records_digest_is_reused_and_a_copys_is_made() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = OverlayStore::new(&wulf_core::StateDir::new(dir.path()));
        let cluster: Arc<[Node]> = (0..3).map(|n| Node::new(format!("n{n}"))).collect();
        let renderer = Renderer::new(
            &store,
            &BTreeMap::new(),
            &BTreeSet::new(),
            Arc::clone(&cluster),
            &Server::default(),
            0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for node in cluster.iter() {
            assert_eq!(renderer.digest_of(node), node_digest(node));
        }
        let mut copy = cluster[1].clone();
        assert_eq!(renderer.digest_of(&copy), node_digest(&cluster[1]));
        copy.comment = Some("changed".into());
        assert_ne!(renderer.digest_of(&copy), node_digest(&cluster[1]));
        assert_eq!(renderer.digest_of(&copy), node_digest(&copy));
    }
}
