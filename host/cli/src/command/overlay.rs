//! `wulf overlay ...`: site overlays (file trees with templates), generator plugins, and the
//! per-node archives built from them.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;
use wulf_core::overlay_file::FileContent;
use wulf_overlay::source::SourceKind;
use wulf_site::Selection;

use crate::context::Context;
use crate::table;

#[derive(Debug, Subcommand)]
pub(crate) enum OverlayCommand {
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

pub(crate) fn run(ctx: &Context, command: OverlayCommand) -> anyhow::Result<()> {
    let site = &ctx.site;
    match command {
        OverlayCommand::List { json } => list(ctx, json),
        OverlayCommand::Show { name, json } => show(ctx, &name, json),
        OverlayCommand::Create { name } => {
            let path = site.create_overlay(&name)?;
            println!("created overlay `{name}` in {}", path.display());
            Ok(())
        }
        OverlayCommand::Delete { name, force } => {
            site.delete_overlay(&name, force)?;
            println!("deleted overlay `{name}`");
            Ok(())
        }
        OverlayCommand::Mkdir { name, dir, mode } => Ok(site.overlay_mkdir(&name, &dir, mode)?),
        OverlayCommand::Import {
            name,
            file,
            dest,
            mode,
        } => {
            let dest = dest.unwrap_or_else(|| file.display().to_string());
            site.overlay_import(&name, &file, &dest, mode)?;
            println!(
                "imported {} into overlay `{name}` as {dest}",
                file.display()
            );
            Ok(())
        }
        OverlayCommand::Edit { name, file } => {
            let path = site.overlay_file(&name, &file)?;
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
        OverlayCommand::Chmod { name, file, mode } => Ok(site.overlay_chmod(&name, &file, mode)?),
        OverlayCommand::Chown {
            name,
            file,
            uid,
            gid,
        } => Ok(site.overlay_chown(&name, &file, uid, gid)?),
        OverlayCommand::Render { name, file, node } => {
            let rendered = site.render_file(&name, &file, &node)?;
            match &rendered.file.content {
                FileContent::Regular(bytes) => print!("{}", String::from_utf8_lossy(bytes)),
                FileContent::Symlink(target) => println!("{} -> {target}", rendered.path),
                FileContent::Directory => println!("{} is a directory", rendered.path),
            }
            Ok(())
        }
        OverlayCommand::Build { nodes, force, json } => build(ctx, &nodes, force, json),
    }
}

fn build(ctx: &Context, only: &[String], force: bool, json: bool) -> anyhow::Result<()> {
    let selection = if only.is_empty() {
        Selection::All
    } else {
        Selection::Patterns(only.to_vec())
    };
    print_report(&ctx.site.build_overlays(&selection, force)?, json)
}

/// What a build did, as `overlay build` says it; an error when some node failed.
fn print_report(report: &wulf_site::BuildReport, json: bool) -> anyhow::Result<()> {
    let seconds = report.took.as_secs_f64();
    if json {
        table::print_json(&json!({
            "built": report.built,
            "unchanged": report.unchanged,
            "shared_segments": report.shared_segments,
            "failed": report.failed.iter().map(|f| json!({"node": f.node, "error": f.error})).collect::<Vec<_>>(),
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
        for failure in &report.failed {
            eprintln!("error: node `{}`: {}", failure.node, failure.error);
        }
    }
    if !report.failed.is_empty() {
        anyhow::bail!(
            "the overlays of {} node(s) could not be built (the others were); their last built archives, if any, are still served",
            report.failed.len()
        );
    }
    Ok(())
}

fn list(ctx: &Context, json: bool) -> anyhow::Result<()> {
    print_list(&ctx.site.list_overlays()?, json);
    Ok(())
}

/// Overlays as `overlay list` shows them.
fn print_list(rows: &[wulf_site::OverlayListing], json: bool) {
    if json {
        table::print_json(&json!(rows.iter().map(|o| json!({"name": o.name, "kind": o.kind, "files": o.files, "templates": o.templates, "nodes": o.nodes})).collect::<Vec<_>>()));
        return;
    }
    table::print(
        &["overlay", "kind", "files", "templates", "nodes"],
        rows.iter()
            .map(|o| {
                vec![
                    o.name.clone(),
                    o.kind.clone(),
                    o.files.to_string(),
                    o.templates.to_string(),
                    o.nodes.to_string(),
                ]
            })
            .collect(),
    );
}

fn show(ctx: &Context, name: &str, json: bool) -> anyhow::Result<()> {
    let store = ctx.site.overlay_store();
    if !store.exists(name) {
        let listing = ctx
            .site
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

/// `overlay list|build` against a remote server.
pub(crate) fn run_remote(
    remote: &crate::remote::Remote,
    command: OverlayCommand,
) -> anyhow::Result<()> {
    match command {
        OverlayCommand::List { json } => {
            let answer: serde_json::Value = remote.get("/overlays")?;
            let rows = answer["overlays"]
                .as_array()
                .map(|all| {
                    all.iter()
                        .map(|o| wulf_site::OverlayListing {
                            name: o["name"].as_str().unwrap_or_default().to_owned(),
                            kind: o["kind"].as_str().unwrap_or_default().to_owned(),
                            files: o["files"].as_u64().unwrap_or(0) as usize,
                            templates: o["templates"].as_u64().unwrap_or(0) as usize,
                            nodes: o["nodes"].as_u64().unwrap_or(0) as usize,
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            print_list(&rows, json);
            Ok(())
        }
        OverlayCommand::Build { nodes, force, json } => {
            let answer: serde_json::Value = remote.send(
                reqwest::Method::POST,
                "/overlays/build",
                Some(&json!({"nodes": nodes, "force": force})),
            )?;
            let report = wulf_site::BuildReport {
                built: serde_json::from_value(answer["built"].clone())?,
                unchanged: answer["unchanged"].as_u64().unwrap_or(0) as usize,
                shared_segments: answer["shared_segments"].as_u64().unwrap_or(0) as usize,
                failed: answer["failed"]
                    .as_array()
                    .map(|all| {
                        all.iter()
                            .map(|f| wulf_core::provision::NodeFailure {
                                node: f["node"].as_str().unwrap_or_default().to_owned(),
                                error: f["error"].as_str().unwrap_or_default().to_owned(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                took: std::time::Duration::from_millis(answer["took_ms"].as_u64().unwrap_or(0)),
            };
            print_report(&report, json)
        }
        _ => Err(crate::not_remote(
            "overlay show|create|delete|edit|import|mkdir|chmod|chown|render",
        )),
    }
}
