//! `wulf upgrade`: bring a state directory written by an earlier wulf to this release's layout.

use clap::Args;

use crate::context::Context;
use crate::table;

#[derive(Debug, Args)]
pub(crate) struct UpgradeArgs {
    /// Say what would change, and change nothing
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(ctx: &Context, args: UpgradeArgs) -> anyhow::Result<()> {
    let report = ctx.site.upgrade(args.dry_run)?;
    if args.json {
        table::print_json(&serde_json::to_value(&report)?);
        return Ok(());
    }
    if report.steps.is_empty() {
        println!(
            "{} is at state-version {}, this release's: nothing to do",
            ctx.site.state().root().display(),
            report.to
        );
        return Ok(());
    }
    for step in &report.steps {
        println!("{step}");
    }
    match &report.backup {
        Some(backup) => println!(
            "upgraded {} from state-version {} to {} (backup of what changed in {})",
            ctx.site.state().root().display(),
            report.from,
            report.to,
            backup.display()
        ),
        None => println!(
            "dry run: would upgrade {} from state-version {} to {}; nothing written",
            ctx.site.state().root().display(),
            report.from,
            report.to
        ),
    }
    Ok(())
}
