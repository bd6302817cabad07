//! Per-node iPXE scripts from templates: the built-in `default`, `stage-one` and
//! `unconfigured`, or a site template `<state>/ipxe/<name>.ipxe` named by the node's
//! `ipxe-template`. A node without one whose image is larger than the server's
//! `stage-one-above` gets `stage-one`: iPXE loads the kernel, the system overlay and stage one,
//! which fetches the image itself (see `wulf-stage1`).
//!
//! A node's script changes only with its record, the templates and the address it was asked
//! on, so scripts are rendered once and kept until the inventory is reloaded (a new
//! generation) or a site template changes (checked at most once a second).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minijinja::{Environment, UndefinedBehavior, context};
use wulf_core::{HwAddr, Node};

const DEFAULT: &str = include_str!("../templates/default.ipxe");
const UNCONFIGURED: &str = include_str!("../templates/unconfigured.ipxe");
const STAGE_ONE: &str = include_str!("../templates/stage-one.ipxe");

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("iPXE template `{name}` for node `{node}` does not exist (looked in {dir})")]
    MissingTemplate {
        name: String,
        node: String,
        dir: String,
    },
    #[error("iPXE template `{name}`: {message}")]
    Render { name: String, message: String },
}

/// How long a look at the site templates is trusted.
const TEMPLATES_TTL: Duration = Duration::from_secs(1);
/// Cached scripts at most; beyond, the cache starts over (a client can send any `Host`).
const MAX_CACHED: usize = 200_000;

/// Renders iPXE scripts, and keeps them.
pub struct IpxeScripts {
    site_dir: PathBuf,
    secure: bool,
    /// The images' directory, watched like the site templates: a rebuilt image may cross
    /// the two-stage threshold.
    images_dir: Option<PathBuf>,
    stage_one_above: u64,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    generation: u64,
    /// When the site templates were last looked at, and what they were.
    templates: Option<(Instant, u64)>,
    /// By (node, MAC asked with, authority).
    scripts: HashMap<(String, HwAddr, String), Arc<str>>,
}

impl IpxeScripts {
    pub fn new(site_dir: impl Into<PathBuf>, secure: bool) -> Self {
        IpxeScripts {
            site_dir: site_dir.into(),
            secure,
            images_dir: None,
            stage_one_above: 0,
            cache: Mutex::default(),
        }
    }

    /// Nodes without an `ipxe-template` whose image is larger than `above` bytes (0: never)
    /// boot in two stages; `images_dir` is watched for rebuilt images.
    pub fn with_stage_one(self, images_dir: PathBuf, above: u64) -> Self {
        IpxeScripts {
            images_dir: Some(images_dir),
            stage_one_above: above,
            ..self
        }
    }

    /// A stamp of the site templates and of each image (its directory and `image.toml`,
    /// which every build and import replace), not of their contents.
    fn inputs_stamp(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        use std::os::unix::fs::MetadataExt as _;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        wulf_core::stamp::tree_stamp(std::slice::from_ref(&self.site_dir)).hash(&mut hasher);
        if let Some(dir) = &self.images_dir
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            let mut seen: Vec<(std::ffi::OsString, u64, i64, i64)> = entries
                .flatten()
                .filter_map(|e| {
                    let meta = std::fs::metadata(e.path().join("image.toml")).ok()?;
                    Some((e.file_name(), meta.ino(), meta.mtime(), meta.mtime_nsec()))
                })
                .collect();
            seen.sort();
            seen.hash(&mut hasher);
        }
        hasher.finish()
    }
    /// The script for a known node from the cache, rendering it on a miss. `generation` is
    /// the inventory snapshot's: a new one empties the cache. `image_size` is asked on a miss
    /// only.
    pub fn cached_for_node(
        &self,
        generation: u64,
        node: &Node,
        hwaddr: &HwAddr,
        authority: &str,
        image_size: impl FnOnce() -> Option<u64>,
    ) -> Result<Arc<str>, ScriptError> {
        let key = (node.id.clone(), *hwaddr, authority.to_owned());
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = cache
                .templates
                .is_some_and(|(at, _)| at.elapsed() < TEMPLATES_TTL);
            if !fresh {
                let stamp = self.inputs_stamp();
                if cache.templates.map(|(_, s)| s) != Some(stamp) {
                    cache.scripts.clear();
                }
                cache.templates = Some((Instant::now(), stamp));
            }
            if cache.generation != generation {
                cache.scripts.clear();
                cache.generation = generation;
            }
            if let Some(script) = cache.scripts.get(&key) {
                return Ok(Arc::clone(script));
            }
        }
        let script: Arc<str> = self.for_node(node, hwaddr, authority, image_size())?.into();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.generation == generation {
            if cache.scripts.len() >= MAX_CACHED {
                cache.scripts.clear();
            }
            cache.scripts.insert(key, Arc::clone(&script));
        }
        Ok(script)
    }

    fn source(&self, name: &str, node: &str) -> Result<String, ScriptError> {
        let path = self.site_dir.join(format!("{name}.ipxe"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(_) if name == "default" => Ok(DEFAULT.to_string()),
            Err(_) if name == "unconfigured" => Ok(UNCONFIGURED.to_string()),
            Err(_) if name == "stage-one" => Ok(STAGE_ONE.to_string()),
            Err(_) => Err(ScriptError::MissingTemplate {
                name: name.to_string(),
                node: node.to_string(),
                dir: self.site_dir.display().to_string(),
            }),
        }
    }

    fn render(&self, name: &str, node: &str, ctx: minijinja::Value) -> Result<String, ScriptError> {
        let source = self.source(name, node)?;
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let err = |e: minijinja::Error| ScriptError::Render {
            name: name.to_string(),
            message: e.to_string(),
        };
        env.add_template(name, &source).map_err(err)?;
        let mut script = env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(err)?;
        // Jinja drops the template's final newline; a script is lines, so keep it.
        if source.ends_with('\n') && !script.ends_with('\n') {
            script.push('\n');
        }
        Ok(script)
    }

    /// The script for a known node, as requested through `hwaddr` from `authority`, whose
    /// built image has `image_size` bytes.
    pub fn for_node(
        &self,
        node: &Node,
        hwaddr: &HwAddr,
        authority: &str,
        image_size: Option<u64>,
    ) -> Result<String, ScriptError> {
        let large =
            self.stage_one_above > 0 && image_size.is_some_and(|s| s > self.stage_one_above);
        let name = match node.ipxe_template.as_deref() {
            Some(name) => name,
            None if large => "stage-one",
            None => "default",
        };
        let ctx = context! {
            id => &node.id,
            hostname => &node.id,
            cluster => &node.cluster,
            image => &node.image,
            hwaddr => hwaddr.to_string(),
            authority => authority,
            kernel_args => node.kernel.args.join(" "),
            kernel_version => &node.kernel.version,
            root => &node.root,
            init => &node.init,
            tags => &node.tags,
            secure => self.secure,
        };
        self.render(name, &node.id, ctx)
    }

    /// The script for a hardware address no node has.
    pub fn unconfigured(&self, hwaddr: &HwAddr, authority: &str) -> Result<String, ScriptError> {
        self.render(
            "unconfigured",
            "(unknown)",
            context! { hwaddr => hwaddr.to_string(), authority => authority },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        let mut node = Node::new("n001");
        node.image = Some("rocky-9".into());
        node.kernel.args = vec!["quiet".into(), "console=ttyS0".into()];
        node
    }

    #[test]
    fn default_and_unconfigured_scripts() {
        let scripts = IpxeScripts::new("/nonexistent", false);
        let mac = HwAddr::parse("AA-BB-CC-DD-EE-01").unwrap_or_else(|e| panic!("{e}"));
        let script = scripts
            .for_node(&node(), &mac, "10.0.0.1:9873", None)
            .unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(script);
        insta::assert_snapshot!(
            scripts
                .unconfigured(&mac, "10.0.0.1:9873")
                .unwrap_or_default()
        );
        let mut no_image = node();
        no_image.image = None;
        let script = scripts
            .for_node(&no_image, &mac, "10.0.0.1:9873", None)
            .unwrap_or_default();
        assert!(script.contains("has no image"), "{script}");
    }

    #[test]
    fn large_images_boot_in_two_stages_unless_the_node_says_otherwise() {
        let images = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let scripts = IpxeScripts::new("/nonexistent", false)
            .with_stage_one(images.path().to_path_buf(), 1000);
        let mac = HwAddr::parse("aa:bb:cc:dd:ee:01").unwrap_or_else(|e| panic!("{e}"));
        let render = |node: &Node, size| {
            scripts
                .for_node(node, &mac, "10.0.0.1:9873", size)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let small = render(&node(), Some(1000));
        assert!(small.contains("initrd --name image"), "{small}");
        let large = render(&node(), Some(1001));
        insta::assert_snapshot!(large);
        let mut pinned = node();
        pinned.ipxe_template = Some("default".into());
        assert!(render(&pinned, Some(1 << 40)).contains("initrd --name image"));
        pinned.ipxe_template = Some("stage-one".into());
        assert!(render(&pinned, Some(1)).contains("initrd --name stage1"));
        let never =
            IpxeScripts::new("/nonexistent", false).with_stage_one(images.path().to_path_buf(), 0);
        let script = never
            .for_node(&node(), &mac, "h:1", Some(1 << 40))
            .unwrap_or_default();
        assert!(
            script.contains("initrd --name image"),
            "0 never chooses two stages"
        );
    }

    #[test]
    fn site_templates_override_and_errors_name_the_template() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.path().join("custom.ipxe"),
            "#!ipxe\necho {{ id }} {{ nope }}\n",
        )
        .unwrap_or_default();
        let scripts = IpxeScripts::new(dir.path(), false);
        let mac = HwAddr::parse("aa:bb:cc:dd:ee:01").unwrap_or_else(|e| panic!("{e}"));
        let mut node = node();
        node.ipxe_template = Some("custom".into());
        let error = scripts
            .for_node(&node, &mac, "h:1", None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with("iPXE template `custom`: undefined value"),
            "{error}"
        );
        node.ipxe_template = Some("gone".into());
        let error = scripts
            .for_node(&node, &mac, "h:1", None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            format!(
                "iPXE template `gone` for node `n001` does not exist (looked in {})",
                dir.path().display()
            )
        );
    }
}
