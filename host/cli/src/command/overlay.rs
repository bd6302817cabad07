//! `wulf overlay ...`: site overlays (file trees with templates), generator plugins, and the
//! per-node archives built from them.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;
use wulf_core::overlay_file::FileContent;
use wulf_core::{Node, OverlayGenerator};
use wulf_overlay::render::node_json;
use wulf_overlay::source::SourceKind;
use wulf_overlay::{ArchiveStore, OverlayStore, Renderer, Report};
use wulf_plugin::{WasmOverlayGenerator, World};

use crate::context::Context;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum OverlayCommand {
    /// List site overlays and overlay-generator plugins, with the nodes using each
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show the files of an overlay
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Create an empty site overlay
    Create { name: String },
    /// Delete a site overlay (refused while a node or profile lists it, unless --force)
    #[command(alias = "rm")]
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Create a directory in an overlay
    Mkdir {
        name: String,
        dir: String,
        #[arg(long, default_value = "755", value_parser = parse_mode)]
        mode: u32,
    },
    /// Copy a host file into an overlay (append .ww to the destination to make a template)
    Import {
        name: String,
        file: PathBuf,
        /// Path inside the overlay [default: the host path]
        dest: Option<String>,
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
    },
    /// Edit a file of an overlay with $VISUAL/$EDITOR (created if missing)
    Edit { name: String, file: String },
    /// Change the mode of a file in an overlay
    Chmod {
        name: String,
        file: String,
        #[arg(value_parser = parse_mode)]
        mode: u32,
    },
    /// Change the owner of a file in an overlay
    Chown {
        name: String,
        file: String,
        uid: u32,
        gid: Option<u32>,
    },
    /// Render one file of an overlay for a node and print it
    Render {
        name: String,
        /// The file as the node sees it, e.g. /etc/hosts
        file: String,
        #[arg(long)]
        node: String,
    },
    /// Build the system and runtime overlay archives of nodes (all when none are named);
    /// only nodes whose inputs changed are rebuilt
    Build {
        nodes: Vec<String>,
        /// Rebuild even when nothing changed
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("mode {s:?} is not an octal mode like 644 or 0755"))
}

pub fn run(ctx: &Context, command: OverlayCommand) -> anyhow::Result<()> {
    let store = OverlayStore::new(&ctx.state);
    match command {
        OverlayCommand::List { json } => list(ctx, &store, json),
        OverlayCommand::Show { name, json } => show(ctx, &store, &name, json),
        OverlayCommand::Create { name } => {
            wulf_overlay::source::validate_name(&name)?;
            let path = store.path(&name);
            if path.exists() {
                bail!("overlay `{name}` already exists");
            }
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            println!("created overlay `{name}` in {}", path.display());
            Ok(())
        }
        OverlayCommand::Delete { name, force } => {
            if !store.exists(&name) {
                bail!("no site overlay named `{name}`");
            }
            let users = users(ctx)?;
            if let Some(used) = users.get(&name).filter(|_| !force) {
                bail!(
                    "overlay `{name}` is used by {}: remove it from their lists first, or use --force",
                    used.join(", ")
                );
            }
            std::fs::remove_dir_all(store.path(&name))?;
            println!("deleted overlay `{name}`");
            Ok(())
        }
        OverlayCommand::Mkdir { name, dir, mode } => {
            let path = existing(&store, &name, &dir)?;
            std::fs::create_dir_all(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            Ok(())
        }
        OverlayCommand::Import {
            name,
            file,
            dest,
            mode,
        } => {
            let dest = dest.unwrap_or_else(|| file.display().to_string());
            let path = existing(&store, &name, &dest)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&file, &path).with_context(|| format!("copying {}", file.display()))?;
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            }
            println!(
                "imported {} into overlay `{name}` as {dest}",
                file.display()
            );
            Ok(())
        }
        OverlayCommand::Edit { name, file } => {
            let path = existing(&store, &name, &file)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let editor = std::env::var("VISUAL")
                .or_else(|_| std::env::var("EDITOR"))
                .unwrap_or_else(|_| "vi".into());
            let status = std::process::Command::new("sh")
                .args(["-c", &format!("{editor} \"$1\""), "sh"])
                .arg(&path)
                .status()
                .with_context(|| format!("running {editor}"))?;
            if !status.success() {
                bail!("{editor} exited with {status}");
            }
            Ok(())
        }
        OverlayCommand::Chmod { name, file, mode } => {
            let path = existing(&store, &name, &file)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("{file} in overlay `{name}`"))?;
            Ok(())
        }
        OverlayCommand::Chown {
            name,
            file,
            uid,
            gid,
        } => {
            let path = existing(&store, &name, &file)?;
            std::os::unix::fs::lchown(&path, Some(uid), gid)
                .with_context(|| format!("{file} in overlay `{name}`"))?;
            Ok(())
        }
        OverlayCommand::Render { name, file, node } => {
            let inventory = ctx.inventory()?;
            let merged = inventory.merged(&node)?.node;
            let cluster = inventory.merged_nodes();
            let renderer = renderer(ctx, &store, &BTreeSet::from([name.clone()]), &cluster)?;
            let files =
                renderer.render(&merged, &node_json(&merged), std::slice::from_ref(&name))?;
            let wanted = if file.starts_with('/') {
                file.clone()
            } else {
                format!("/{file}")
            };
            let wanted = wanted.strip_suffix(".ww").unwrap_or(&wanted).to_string();
            let Some(found) = files.get(&wanted) else {
                let names: Vec<&String> = files.keys().collect();
                bail!(
                    "overlay `{name}` renders no {wanted} for node {node}; it renders: {names:?}"
                );
            };
            match &found.content {
                FileContent::Regular(bytes) => print!("{}", String::from_utf8_lossy(bytes)),
                FileContent::Symlink(target) => println!("{wanted} -> {target}"),
                FileContent::Directory => println!("{wanted} is a directory"),
            }
            Ok(())
        }
        OverlayCommand::Build { nodes, force, json } => build(ctx, &store, &nodes, force, json),
    }
}

/// A path inside an overlay that must exist as an overlay.
fn existing(store: &OverlayStore, name: &str, file: &str) -> anyhow::Result<PathBuf> {
    if !store.exists(name) {
        bail!("no site overlay named `{name}`: create it with `wulf overlay create {name}`");
    }
    Ok(store.file_path(name, file)?)
}

/// A loaded generator and what identifies its output: version, code and config.
type Generators = BTreeMap<String, (Arc<dyn OverlayGenerator>, String)>;

/// The overlay-generator plugins, by name.
fn generators(ctx: &Context) -> anyhow::Result<Generators> {
    let registry = ctx.registry();
    let mut out = BTreeMap::new();
    let listings = registry.list()?;
    let wanted: Vec<_> = listings
        .iter()
        .filter(|l| {
            l.enabled
                && l.manifest
                    .as_ref()
                    .is_ok_and(|m| m.world == World::OverlayGenerator)
        })
        .collect();
    if wanted.is_empty() {
        return Ok(out);
    }
    let runtime = ctx.runtime()?;
    for listing in wanted {
        let package = registry.package(&listing.name)?;
        let plugin = Arc::new(ctx.load_plugin(&runtime, &package)?);
        // What the plugin's output depends on besides the node: its code and the config it
        // sees (hashed: it may hold the host keys, and identities are stored in the index).
        let identity = {
            use sha2::Digest as _;
            format!(
                "{}@{}:{}:{}",
                listing.name,
                package.manifest.version,
                hex::encode(sha2::Sha256::digest(&package.wasm)),
                hex::encode(sha2::Sha256::digest(plugin.config_json()))
            )
        };
        if let Some(generator) = WasmOverlayGenerator::new(plugin) {
            let generator = Arc::new(generator) as Arc<dyn OverlayGenerator>;
            out.insert(listing.name.clone(), (generator, identity));
        }
    }
    Ok(out)
}

fn renderer(
    ctx: &Context,
    store: &OverlayStore,
    names: &BTreeSet<String>,
    cluster: &[Node],
) -> anyhow::Result<Renderer> {
    let loaded = generators(ctx)?;
    let plain = loaded
        .iter()
        .map(|(name, (g, _))| (name.clone(), Arc::clone(g)))
        .collect();
    let build_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut renderer = Renderer::new(store, &plain, names, cluster, &ctx.server(), build_time)?;
    for (name, (_, identity)) in loaded {
        renderer.set_identity(&name, identity);
    }
    if renderer.reads_images() {
        let files = Arc::new(wulf_image::ImageFiles::new(wulf_image::ImageStore::new(
            &ctx.state,
        )));
        let identity = files.identity();
        renderer.set_image_reader(
            Arc::new(move |image: &str, path: &str| {
                let content = files.read(image, path).map_err(|e| e.to_string())?;
                String::from_utf8(content.to_vec())
                    .map_err(|_| format!("{path} in image `{image}` is not text"))
            }),
            identity,
        );
    }
    Ok(renderer)
}

fn build_nodes(
    ctx: &Context,
    store: &OverlayStore,
    only: &[String],
    force: bool,
) -> anyhow::Result<(Report, f64)> {
    let cluster = ctx.inventory()?.merged_nodes();
    let selected: Vec<Node> = if only.is_empty() {
        cluster.clone()
    } else {
        let mut ids = Vec::new();
        for pattern in only {
            ids.extend(wulf_core::hostlist::expand(pattern)?);
        }
        let mut out = Vec::new();
        for id in ids {
            let node = cluster
                .iter()
                .find(|n| n.id == id)
                .with_context(|| format!("no node named `{id}`"))?;
            out.push(node.clone());
        }
        out
    };
    let names: BTreeSet<String> = selected
        .iter()
        .flat_map(|n| n.system_overlays.iter().chain(&n.runtime_overlays).cloned())
        .collect();
    let renderer = renderer(ctx, store, &names, &cluster)?;
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = ArchiveStore::new(&ctx.state).build(&renderer, &selected, force, threads)?;
    Ok((report, started.elapsed().as_secs_f64()))
}

/// Builds the overlays of one node; what `wulf serve` runs when a node's are missing.
/// The boot server's builds: one node's archives, or every node's (`None`), incrementally.
pub fn build_for_server(ctx: &Context, id: Option<&str>) -> anyhow::Result<()> {
    let only: Vec<String> = id.map(str::to_owned).into_iter().collect();
    let (report, seconds) = build_nodes(ctx, &OverlayStore::new(&ctx.state), &only, false)?;
    if !report.built.is_empty() {
        tracing::info!(
            nodes = report.built.len(),
            unchanged = report.unchanged,
            seconds,
            "overlay archives rebuilt"
        );
    }
    Ok(())
}

fn build(
    ctx: &Context,
    store: &OverlayStore,
    only: &[String],
    force: bool,
    json: bool,
) -> anyhow::Result<()> {
    let (report, seconds) = build_nodes(ctx, store, only, force)?;
    if json {
        table::print_json(&json!({
            "built": report.built,
            "unchanged": report.unchanged,
            "shared_segments": report.shared_segments,
            "seconds": seconds,
        }));
    } else {
        println!(
            "built overlays of {} node(s) ({} archive(s) unchanged, {} shared segment(s)) in {:.2} s",
            report.built.len(),
            report.unchanged,
            report.shared_segments,
            seconds
        );
    }
    Ok(())
}

/// Nodes and profiles listing each overlay.
fn users(ctx: &Context) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let inventory = ctx.inventory()?;
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, profile) in &inventory.profiles {
        for o in profile
            .system_overlays
            .iter()
            .chain(&profile.runtime_overlays)
        {
            users
                .entry(o.trim_start_matches('~').to_string())
                .or_default()
                .push(format!("profile {id}"));
        }
    }
    for node in inventory.merged_nodes() {
        for o in node.system_overlays.iter().chain(&node.runtime_overlays) {
            let list = users.entry(o.clone()).or_default();
            if !list.contains(&node.id) {
                list.push(node.id.clone());
            }
        }
    }
    Ok(users)
}

fn list(ctx: &Context, store: &OverlayStore, json: bool) -> anyhow::Result<()> {
    let users = users(ctx)?;
    let mut rows = Vec::new();
    for name in store.list()? {
        let files = store.files(&name)?;
        let templates = files
            .iter()
            .filter(|f| matches!(f.kind, SourceKind::Template(_)))
            .count();
        rows.push((name, "site".to_string(), files.len(), templates));
    }
    for listing in ctx.registry().list()? {
        if listing
            .manifest
            .as_ref()
            .is_ok_and(|m| m.world == World::OverlayGenerator)
            && !store.exists(&listing.name)
        {
            rows.push((
                listing.name.clone(),
                format!("plugin ({})", listing.source),
                0,
                0,
            ));
        }
    }
    rows.sort();
    let nodes = |name: &str| {
        users.get(name).map_or(0, |u| {
            u.iter().filter(|u| !u.starts_with("profile ")).count()
        })
    };
    if json {
        table::print_json(&json!(rows.iter().map(|(n, k, f, t)| json!({"name": n, "kind": k, "files": f, "templates": t, "nodes": nodes(n)})).collect::<Vec<_>>()));
        return Ok(());
    }
    table::print(
        &["overlay", "kind", "files", "templates", "nodes"],
        rows.iter()
            .map(|(n, k, f, t)| {
                vec![
                    n.clone(),
                    k.clone(),
                    f.to_string(),
                    t.to_string(),
                    nodes(n).to_string(),
                ]
            })
            .collect(),
    );
    Ok(())
}

fn show(ctx: &Context, store: &OverlayStore, name: &str, json: bool) -> anyhow::Result<()> {
    if !store.exists(name) {
        let listing = ctx
            .registry()
            .find(name)
            .with_context(|| format!("no overlay named `{name}`"))?;
        println!(
            "`{name}` is an overlay-generator plugin ({}); see `wulf plugin test {name} --node <id>`",
            listing.source
        );
        return Ok(());
    }
    let files = store.files(name)?;
    if json {
        table::print_json(&json!(files.iter().map(|f| json!({
            "path": f.path, "source": f.source, "mode": format!("{:04o}", f.mode), "uid": f.uid, "gid": f.gid,
            "kind": match &f.kind { SourceKind::Directory => "dir", SourceKind::File(_) => "file", SourceKind::Template(_) => "template", SourceKind::Symlink(_) => "symlink" },
        })).collect::<Vec<_>>()));
        return Ok(());
    }
    table::print(
        &["path", "mode", "owner", "kind"],
        files
            .iter()
            .map(|f| {
                let kind = match &f.kind {
                    SourceKind::Directory => "dir".to_string(),
                    SourceKind::File(b) => format!("file, {} bytes", b.len()),
                    SourceKind::Template(_) => format!("template ({})", f.source),
                    SourceKind::Symlink(t) => format!("-> {t}"),
                };
                vec![
                    f.path.clone(),
                    format!("{:04o}", f.mode),
                    format!("{}:{}", f.uid, f.gid),
                    kind,
                ]
            })
            .collect(),
    );
    Ok(())
}
