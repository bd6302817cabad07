//! `wulf doctor`: the site's checks, one line each with its fix; `--json` for scripts. Exits 1
//! when a check fails, so it can gate a deployment.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use wulf_site::{Check, DoctorOptions, Health};

use crate::context::Context;

#[derive(Debug, clap::Args)]
pub(crate) struct DoctorArgs {
    /// The DHCP server's configuration [default: /etc/dnsmasq.d/wulf.conf,
    /// /etc/dhcp/dhcpd.conf or /etc/dnsmasq.conf, the first that exists]
    #[arg(long, value_name = "FILE")]
    dhcp_config: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// Runs the checks on `context`, or reports the site that does not open (a configuration that
/// does not parse, say) as the one failed check.
pub(crate) fn run(context: anyhow::Result<Context>, args: DoctorArgs) -> anyhow::Result<()> {
    let checks = match context {
        Ok(ctx) => ctx.site.doctor(&DoctorOptions {
            dhcp_config: args.dhcp_config,
        }),
        Err(error) => vec![Check {
            check: "config",
            health: Health::Fail,
            message: wulf_site::error_chain(error.as_ref()),
            fix: Some(
                "fix the file and key it names (`wulf --help` shows where it is read)".into(),
            ),
        }],
    };
    let count = |health| checks.iter().filter(|c| c.health == health).count();
    let (ok, warn, fail) = (count(Health::Ok), count(Health::Warn), count(Health::Fail));
    if args.json {
        crate::table::print_json(&serde_json::json!({
            "checks": checks,
            "ok": ok,
            "warn": warn,
            "fail": fail,
        }));
    } else {
        let colour = std::io::stdout().is_terminal();
        let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
        for check in &checks {
            let health = check.health.as_str();
            let shown = match (colour, check.health) {
                (false, _) => format!("{health:<4}"),
                (true, Health::Ok) => format!("\x1b[32m{health:<4}\x1b[0m"),
                (true, Health::Warn) => format!("\x1b[33m{health:<4}\x1b[0m"),
                (true, Health::Fail) => format!("\x1b[1;31m{health:<4}\x1b[0m"),
            };
            println!("{shown}  {:<width$}  {}", check.check, check.message);
            if let Some(fix) = &check.fix {
                println!("      {:<width$}  fix: {fix}", "");
            }
        }
        println!("{fail} failed, {warn} warning(s), {ok} ok");
    }
    if fail > 0 {
        anyhow::bail!("{fail} check(s) failed");
    }
    Ok(())
}
