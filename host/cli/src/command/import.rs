//! `wulf import warewulf`: move a Warewulf v4 site in one command, or only its nodes.conf.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;
use wulf_core::Inventory;
use wulf_site::{ReportKind, WarewulfPlan};

use crate::command::image::Bars;
use crate::context::Context;
use crate::table;

#[derive(Debug, Subcommand)]
pub(crate) enum ImportCommand {
    /// Import a Warewulf 4.4-4.7 site: nodes.conf, warewulf.conf, site overlays (Go templates
    /// translated) and images; or, given a file, only the profiles and nodes of that nodes.conf
    Warewulf {
        /// A nodes.conf to import alone (legacy keys too); without it the whole site of --from
        file: Option<PathBuf>,
        /// Warewulf's configuration directory, with nodes.conf and warewulf.conf
        #[arg(long, value_name = "DIR", conflicts_with = "file")]
        from: Option<PathBuf>,
        /// Print what would be written, what maps to what and what could not be mapped, and
        /// write nothing
        #[arg(long)]
        dry_run: bool,
        /// Replace profiles, nodes, overlays, images and settings that already exist
        #[arg(long)]
        force: bool,
        /// The report as JSON
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(ctx: &Context, command: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Warewulf {
        file,
        from,
        dry_run,
        force,
        json,
    } = command;
    match (file, from) {
        (Some(file), None) if !file.is_dir() => nodes_conf(ctx, &file, dry_run, force),
        (Some(dir), None) | (None, Some(dir)) => site(ctx, &dir, dry_run, force, json),
        _ => site(
            ctx,
            Path::new(wulf_site::WAREWULF_DIR),
            dry_run,
            force,
            json,
        ),
    }
}

fn site(ctx: &Context, from: &Path, dry_run: bool, force: bool, json: bool) -> anyhow::Result<()> {
    let plan = ctx.site.plan_warewulf(from, force)?;
    let summary = summary(&plan);
    if dry_run {
        if json {
            table::print_json(&plan_json(&plan, false));
        } else {
            print_report(&plan, &mut std::io::stdout());
            println!("dry run: would import {summary}; nothing written");
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(ctx.site.apply_warewulf(&plan, Arc::new(Bars::new(json))))?;
    if json {
        table::print_json(&plan_json(&plan, true));
    } else {
        print_report(&plan, &mut std::io::stderr());
        println!("imported {summary} from {}", from.display());
    }
    Ok(())
}

/// `2 profile(s), 3 node(s), 3 overlay(s) (4 templates translated, 1 not), 1 image(s) and wulf.toml`
fn summary(plan: &WarewulfPlan) -> String {
    let templates: usize = plan.overlays.iter().map(|o| o.templates()).sum();
    let untranslated: usize = plan.overlays.iter().map(|o| o.untranslated()).sum();
    let mut text = format!(
        "{} profile(s), {} node(s), {} overlay(s) ({templates} template(s) translated{}), {} image(s)",
        plan.inventory.profiles.len(),
        plan.inventory.nodes.len(),
        plan.overlays.len(),
        if untranslated > 0 {
            format!(", {untranslated} not")
        } else {
            String::new()
        },
        plan.images.len(),
    );
    if let Some((path, _)) = &plan.config {
        text.push_str(&format!(" and {}", path.display()));
    }
    text
}

fn print_report(plan: &WarewulfPlan, out: &mut dyn std::io::Write) {
    for kind in [
        ReportKind::Mapped,
        ReportKind::Note,
        ReportKind::NotMapped,
        ReportKind::Untranslated,
    ] {
        for line in plan.report.iter().filter(|l| l.kind == kind) {
            let _ = writeln!(out, "{}: {}", kind.label(), line.text);
        }
    }
}

fn plan_json(plan: &WarewulfPlan, written: bool) -> serde_json::Value {
    json!({
        "from": plan.from,
        "written": written,
        "profiles": plan.inventory.profiles.keys().collect::<Vec<_>>(),
        "nodes": plan.inventory.nodes.keys().collect::<Vec<_>>(),
        "overlays": plan.overlays.iter().map(|o| json!({
            "name": o.name,
            "source": o.source,
            "files": o.files.len(),
            "templates": o.templates(),
            "untranslated": o.untranslated(),
        })).collect::<Vec<_>>(),
        "images": plan.images.iter().map(|i| json!({
            "name": i.name,
            "rootfs": i.rootfs,
        })).collect::<Vec<_>>(),
        "config": plan.config.as_ref().map(|(path, _)| path),
        "report": plan.report,
    })
}

/// Only a nodes.conf: its profiles and nodes.
fn nodes_conf(ctx: &Context, file: &Path, dry_run: bool, force: bool) -> anyhow::Result<()> {
    let yaml =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let imported =
        wulf_core::warewulf_import::import(&yaml).with_context(|| file.display().to_string())?;
    let counts = format!(
        "{} profile(s) and {} node(s)",
        imported.profiles.len(),
        imported.nodes.len()
    );
    let report = |out: &mut dyn std::io::Write| {
        for line in &imported.mapped {
            let _ = writeln!(out, "mapped: {line}");
        }
        for line in &imported.unmapped {
            let _ = writeln!(out, "not mapped: {line}");
        }
    };
    let incoming = Inventory {
        profiles: imported.profiles.clone(),
        nodes: imported.nodes.clone(),
    };
    if dry_run {
        print!("{}", incoming.to_toml()?);
        report(&mut std::io::stderr());
        eprintln!("dry run: would import {counts}; nothing written");
        return Ok(());
    }
    ctx.site.import_inventory(&incoming, force)?;
    report(&mut std::io::stderr());
    println!("imported {counts} from {}", file.display());
    Ok(())
}
