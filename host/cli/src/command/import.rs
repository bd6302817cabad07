//! `wulf import warewulf <nodes.conf>`: migrate a Warewulf v4 inventory in one command.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use wulf_core::Inventory;

use crate::context::Context;

#[derive(Debug, Subcommand)]
pub(crate) enum ImportCommand {
    /// Import the profiles and nodes of a Warewulf v4 nodes.conf (YAML, legacy keys too)
    Warewulf {
        /// Usually /etc/warewulf/nodes.conf
        file: PathBuf,
        /// Show what would be written, and what could not be mapped, without writing
        #[arg(long)]
        dry_run: bool,
        /// Replace profiles and nodes that already exist
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(ctx: &Context, command: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Warewulf {
        file,
        dry_run,
        force,
    } = command;
    let yaml = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
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
    if dry_run {
        let preview = Inventory {
            profiles: imported.profiles.clone(),
            nodes: imported.nodes.clone(),
        };
        print!("{}", preview.to_toml()?);
        report(&mut std::io::stderr());
        eprintln!("dry run: would import {counts}; nothing written");
        return Ok(());
    }
    let incoming = Inventory {
        profiles: imported.profiles.clone(),
        nodes: imported.nodes.clone(),
    };
    ctx.site.import_inventory(&incoming, force)?;
    report(&mut std::io::stderr());
    println!("imported {counts} from {}", file.display());
    Ok(())
}
