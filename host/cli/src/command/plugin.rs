//! `wulf plugin ...`: install, inspect, toggle and try out plugins.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;
use wulf_core::{FileContent, Node, OverlayFile};
use wulf_plugin::{Listing, Origin, World};

use crate::context::Context;
use crate::table;

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Install a plugin from a directory (plugin.toml + plugin.wasm) or a bare .wasm component
    Install {
        path: PathBuf,
        /// Install under this name instead of the manifest's (or the file's)
        #[arg(long)]
        name: Option<String>,
        /// Replace an installed plugin of the same name
        #[arg(long)]
        force: bool,
    },
    /// List plugins: embedded and installed
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a plugin's manifest, capabilities, limits and whether it loads
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove an installed plugin
    #[command(alias = "rm")]
    Remove { name: String },
    /// Enable a disabled plugin
    Enable { name: String },
    /// Disable a plugin without removing it
    Disable { name: String },
    /// Write the WIT package this wulf speaks (what plugins are built against)
    Wit {
        /// Directory to write it to
        #[arg(long, default_value = "wit")]
        out: PathBuf,
    },
    /// Write a new plugin project that builds with the language's own tool
    New {
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: super::plugin_new::Lang,
        #[arg(long, value_enum, default_value = "overlay-generator")]
        world: super::plugin_new::WorldArg,
        /// Where to write it [default: ./<name>]
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run an overlay generator against a node of the inventory and print what it produced
    /// (an inventory backend: list what it returns)
    Test {
        name: String,
        /// The node to render for (overlay generators)
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

impl PluginCommand {
    /// `plugin wit` and `plugin new` need no state directory.
    pub(crate) fn needs_no_site(&self) -> bool {
        matches!(self, PluginCommand::Wit { .. } | PluginCommand::New { .. })
    }
}

/// The commands that need no state directory ([`PluginCommand::needs_no_site`]).
pub(crate) fn run_offline(command: &PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Wit { out } => super::plugin_new::wit(out),
        PluginCommand::New {
            name,
            lang,
            world,
            dir,
        } => super::plugin_new::new(name, *lang, *world, dir.clone()),
        _ => bail!("this plugin command needs a state directory"),
    }
}

pub(crate) fn run(ctx: &Context, command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Install { path, name, force } => install(ctx, &path, name.as_deref(), force),
        PluginCommand::List { json } => list(ctx, json),
        PluginCommand::Show { name, json } => show(ctx, &name, json),
        PluginCommand::Remove { name } => {
            let listing = ctx.site.registry().remove(&name)?;
            println!("removed plugin `{name}` ({})", listing.source);
            if listing.overrides_embedded {
                println!("the embedded `{name}` is in use again");
            }
            Ok(())
        }
        PluginCommand::Enable { name } => {
            ctx.site.registry().set_enabled(&name, true)?;
            println!("enabled plugin `{name}`");
            Ok(())
        }
        PluginCommand::Disable { name } => {
            ctx.site.registry().set_enabled(&name, false)?;
            println!("disabled plugin `{name}`");
            Ok(())
        }
        PluginCommand::Test { name, node, json } => test(ctx, &name, node.as_deref(), json),
        offline @ (PluginCommand::Wit { .. } | PluginCommand::New { .. }) => run_offline(&offline),
    }
}

fn install(
    ctx: &Context,
    path: &std::path::Path,
    name: Option<&str>,
    force: bool,
) -> anyhow::Result<()> {
    let registry = ctx.site.registry();
    let manifest = registry.install(path, name, force)?;
    // Compile now: it proves the component links against this host, and warms the cache so
    // the first boot does not wait for the compiler.
    let loaded = registry
        .package(&manifest.name)
        .map_err(anyhow::Error::from)
        .and_then(|package| Ok(ctx.site.try_load(&package)?.loaded));
    match loaded {
        Ok(plugin) => {
            let loaded = match plugin.origin {
                Origin::Compiled => "compiled",
                Origin::Cache => "already compiled (the cache had it), loaded",
            };
            println!(
                "installed plugin `{}` {} ({}) in {}, {loaded} in {:.1} s",
                manifest.name,
                manifest.version,
                manifest.world,
                registry.dir().join(&manifest.name).display(),
                plugin.load_time.as_secs_f64()
            );
            Ok(())
        }
        Err(error) => {
            registry.remove(&manifest.name).ok();
            Err(error.context(format!("`{}` was not installed", manifest.name)))
        }
    }
}

fn status(listing: &Listing) -> String {
    match (&listing.manifest, listing.enabled) {
        (Err(e), _) => format!("broken: {e}"),
        (Ok(_), false) => "disabled".into(),
        (Ok(_), true) if listing.overrides_embedded => "enabled (overrides embedded)".into(),
        (Ok(_), true) => "enabled".into(),
    }
}

fn listing_json(listing: &Listing) -> serde_json::Value {
    let manifest = listing.manifest.as_ref().ok();
    json!({
        "name": listing.name,
        "version": manifest.map(|m| m.version.to_string()),
        "world": manifest.map(|m| m.world.to_string()),
        "api_version": manifest.map(|m| m.api_version.to_string()),
        "description": manifest.map(|m| m.description.clone()),
        "source": listing.source.to_string(),
        "enabled": listing.enabled,
        "overrides_embedded": listing.overrides_embedded,
        "error": listing.manifest.as_ref().err(),
    })
}

fn list(ctx: &Context, json: bool) -> anyhow::Result<()> {
    let listings = ctx.site.registry().list()?;
    if json {
        table::print_json(&listings.iter().map(listing_json).collect());
        return Ok(());
    }
    let rows = listings
        .iter()
        .map(|l| {
            let m = l.manifest.as_ref().ok();
            vec![
                l.name.clone(),
                m.map(|m| m.version.to_string()).unwrap_or_default(),
                m.map(|m| m.world.to_string()).unwrap_or_default(),
                l.source.to_string(),
                status(l),
            ]
        })
        .collect();
    table::print(&["name", "version", "world", "source", "status"], rows);
    Ok(())
}

fn show(ctx: &Context, name: &str, json: bool) -> anyhow::Result<()> {
    let registry = ctx.site.registry();
    let listing = registry.find(name)?;
    let config = ctx.site.config();
    let limits = config.plugins.limits_for(name);
    let site = config.plugins.sites.get(name);
    let load = registry
        .package_of(&listing)
        .map_err(anyhow::Error::from)
        .and_then(|package| Ok(ctx.site.try_load(&package)?.loaded));
    let load_status = match &load {
        Ok(plugin) => format!(
            "loads: {} in {:.1} ms",
            if plugin.origin == Origin::Cache {
                "from the compile cache"
            } else {
                "compiled"
            },
            plugin.load_time.as_secs_f64() * 1000.0
        ),
        Err(e) => format!("does not load: {}", wulf_site::error_chain(e.as_ref())),
    };
    let mut value = listing_json(&listing);
    if let Ok(manifest) = &listing.manifest {
        let mut config = manifest.config.clone();
        if let Some(site) = site {
            config.extend(site.config.clone());
        }
        if manifest.world == World::OverlayGenerator {
            // What the shared files are made again for: `cluster (fields: ...)`, `none`.
            value["shared_files"] = json!(manifest.shared.to_string());
        }
        value["read_dirs"] = json!(manifest.read_dirs);
        value["granted_read_dirs"] =
            json!(site.map(|s| s.grant_read_dirs.clone()).unwrap_or_default());
        value["config"] = serde_json::Value::Object(config);
    }
    value["limits"] = json!({
        "timeout_ms": limits.timeout.as_millis() as u64,
        "memory_bytes": limits.memory_bytes,
        "output_bytes": limits.output_bytes,
    });
    value["load"] = json!(load_status);
    if json {
        table::print_json(&value);
        return Ok(());
    }
    let text = |key: &str| match &value[key] {
        serde_json::Value::Null => "--".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for key in [
        "name",
        "version",
        "world",
        "api_version",
        "description",
        "source",
        "error",
        "shared_files",
        "read_dirs",
        "granted_read_dirs",
        "config",
        "limits",
        "load",
    ] {
        if !value[key].is_null() {
            println!(
                "{:<18} {}",
                format!("{}:", key.replace('_', " ")),
                text(key)
            );
        }
    }
    println!("{:<18} {}", "status:", status(&listing));
    Ok(())
}

fn test(ctx: &Context, name: &str, node: Option<&str>, json: bool) -> anyhow::Result<()> {
    let world = ctx.site.registry().package(name)?.manifest.world;
    match world {
        World::OverlayGenerator => {
            let node_id =
                node.context("which node? pass --node <id> (see the nodes in nodes.toml)")?;
            let started = Instant::now();
            let files = ctx.site.test_generator(name, node_id)?;
            let elapsed = started.elapsed();
            print_files(&files, json);
            if !json {
                eprintln!(
                    "{} file(s) from `{name}` for node `{node_id}` in {:.2} ms",
                    files.len(),
                    elapsed.as_secs_f64() * 1000.0
                );
            }
            Ok(())
        }
        World::InventoryBackend => {
            let (nodes, refused): (Vec<_>, Vec<_>) = ctx
                .site
                .test_backend(name)?
                .into_iter()
                .partition(Result::is_ok);
            let nodes: Vec<Node> = nodes.into_iter().filter_map(Result::ok).collect();
            for refused in refused.into_iter().filter_map(Result::err) {
                eprintln!("refused: {refused}");
            }
            if json {
                table::print_json(&json!(nodes
                    .iter()
                    .map(|n| json!({"id": n.id, "hwaddrs": n.hwaddrs().collect::<Vec<_>>(), "profiles": n.profiles}))
                    .collect::<Vec<_>>()));
            } else {
                let rows = nodes
                    .iter()
                    .map(|n| {
                        vec![
                            n.id.clone(),
                            n.hwaddrs()
                                .map(|h| h.to_string())
                                .collect::<Vec<_>>()
                                .join(","),
                            n.profiles.join(","),
                        ]
                    })
                    .collect();
                table::print(&["node", "hwaddrs", "profiles"], rows);
            }
            Ok(())
        }
        World::ImageTransform => {
            bail!("`{name}` is an image transform: it runs during `wulf image build`")
        }
    }
}

fn print_files(files: &[OverlayFile], json: bool) {
    if json {
        let files: Vec<_> = files
            .iter()
            .map(|f| {
                let (kind, content) = match &f.content {
                    FileContent::Regular(bytes) => ("file", json!(String::from_utf8_lossy(bytes))),
                    FileContent::Directory => ("dir", serde_json::Value::Null),
                    FileContent::Symlink(target) => ("symlink", json!(target)),
                };
                json!({"path": f.path, "mode": format!("{:04o}", f.mode), "uid": f.uid, "gid": f.gid, "kind": kind, "size": f.size(), "content": content})
            })
            .collect();
        table::print_json(&json!(files));
        return;
    }
    for file in files {
        println!("{}", file.listing());
        if let FileContent::Regular(bytes) = &file.content {
            match std::str::from_utf8(bytes) {
                Ok(text) => {
                    for line in text.lines() {
                        println!("    {line}");
                    }
                }
                Err(_) => println!("    ({} bytes of binary data)", bytes.len()),
            }
        }
    }
}
