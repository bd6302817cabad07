//! Per-node iPXE scripts from templates: the built-in `default`, `stage-one` and
//! `unconfigured`, or a site template `<state>/ipxe/<name>.ipxe` named by the node's
//! `ipxe-template`, or `stage-one` for a large image (the provisioner's choice:
//! `wulf_core::provision::ipxe_template`): iPXE loads the kernel, the system overlay and stage
//! one, which fetches the image itself (see `wulf-stage1`).
//!
//! A node's script changes only with its record, the templates and the address it was asked
//! on, so scripts are rendered once and kept until the inventory is reloaded (a new
//! generation) or a site template changes (checked at most once a second).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minijinja::{Environment, UndefinedBehavior, context};
use wulf_core::{HwAddr, Node, Provisioner};

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
            cache: Mutex::default(),
        }
    }

    /// The script for a known node from the cache, rendering it on a miss with the template
    /// `provisioner` picks. `generation` is the inventory snapshot's: a new one empties the
    /// cache, as a change of the site templates or of what the template choice reads does.
    pub fn cached_for_node(
        &self,
        generation: u64,
        node: &Node,
        hwaddr: &HwAddr,
        authority: &str,
        provisioner: &dyn Provisioner,
    ) -> Result<Arc<str>, ScriptError> {
        let key = (node.id.clone(), *hwaddr, authority.to_owned());
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = cache
                .templates
                .is_some_and(|(at, _)| at.elapsed() < TEMPLATES_TTL);
            if !fresh {
                let stamp = wulf_core::stamp::tree_stamp(std::slice::from_ref(&self.site_dir))
                    ^ provisioner.ipxe_inputs_stamp();
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
        let template = provisioner.ipxe_template(node);
        let script: Arc<str> = self.for_node(node, &template, hwaddr, authority)?.into();
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

    /// The script for a known node from template `name`, as requested through `hwaddr` from
    /// `authority`.
    pub fn for_node(
        &self,
        node: &Node,
        name: &str,
        hwaddr: &HwAddr,
        authority: &str,
    ) -> Result<String, ScriptError> {
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
            tags => minijinja::Value::from(minijinja::value::Serde(&node.tags)),
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
            .for_node(&node(), "default", &mac, "10.0.0.1:9873")
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
            .for_node(&no_image, "default", &mac, "10.0.0.1:9873")
            .unwrap_or_default();
        assert!(script.contains("has no image"), "{script}");
    }

    #[test]
    fn the_two_stage_script_loads_stage_one_instead_of_the_image() {
        let scripts = IpxeScripts::new("/nonexistent", false);
        let mac = HwAddr::parse("aa:bb:cc:dd:ee:01").unwrap_or_else(|e| panic!("{e}"));
        let large = scripts
            .for_node(&node(), "stage-one", &mac, "10.0.0.1:9873")
            .unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(large);
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
            .for_node(&node, "custom", &mac, "h:1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with("iPXE template `custom`: undefined value"),
            "{error}"
        );
        node.ipxe_template = Some("gone".into());
        let error = scripts
            .for_node(&node, "gone", &mac, "h:1")
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
