//! `wulf-agent [--config FILE] [--root DIR] [--once]`: keeps this node's runtime overlay in
//! sync with `wulf serve`. One line per apply goes to stdout (the journal, under systemd).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use wulf_agent::config::Config;
use wulf_agent::{Agent, Outcome, SyncError};

struct Args {
    config: PathBuf,
    root: PathBuf,
    once: bool,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        config: PathBuf::from("/etc/wulf/agent.conf"),
        root: PathBuf::from("/"),
        once: false,
    };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--config" => args.config = given.next().ok_or("--config needs a file")?.into(),
            "--root" => args.root = given.next().ok_or("--root needs a directory")?.into(),
            "--once" => args.once = true,
            "--version" => {
                println!("wulf-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}: wulf-agent [--config FILE] [--root DIR] [--once]"
                ));
            }
        }
    }
    Ok(args)
}

/// A random wait of up to `max`.
fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let millis = max.as_millis().max(1) as u64;
    Duration::from_millis(u64::from_le_bytes(wulf_agent::random_bytes()) % millis)
}

/// How long a hook may run before it is killed (the agent waits for it: no sync meanwhile).
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

fn run_hooks(agent: &Agent, applied: &wulf_agent::apply::Applied) {
    for hook in agent.hooks_for(applied) {
        let mut child = match std::process::Command::new("/bin/sh")
            .args(["-c", &hook.command])
            .stdin(std::process::Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!("wulf-agent: hook `{}` did not start: {e}", hook.command);
                continue;
            }
        };
        let started = std::time::Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() < HOOK_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        match status {
            Some(s) if s.success() => println!("wulf-agent: hook `{}` ran", hook.command),
            Some(s) => eprintln!("wulf-agent: hook `{}` failed ({s})", hook.command),
            None => eprintln!(
                "wulf-agent: hook `{}` was killed after {} s",
                hook.command,
                HOOK_TIMEOUT.as_secs()
            ),
        }
    }
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("wulf-agent: {message}");
            return ExitCode::from(2);
        }
    };
    let config = match std::fs::read_to_string(&args.config)
        .map_err(|e| format!("cannot read {}: {e}", args.config.display()))
        .and_then(|text| {
            Config::parse(&text).map_err(|e| format!("{}: {e}", args.config.display()))
        }) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("wulf-agent: {message}");
            return ExitCode::from(2);
        }
    };
    let mut config = config;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Err(message) = config.resolve_cmdline(&cmdline) {
        eprintln!("wulf-agent: {}: {message}", args.config.display());
        return ExitCode::from(2);
    }
    let mut agent = match Agent::new(config, &args.root) {
        Ok(agent) => agent,
        Err(message) => {
            eprintln!("wulf-agent: {message}");
            return ExitCode::from(2);
        }
    };
    println!(
        "wulf-agent {}: node {}, servers {}",
        env!("CARGO_PKG_VERSION"),
        agent.config.node,
        agent.config.servers.join(", ")
    );
    if !args.once {
        std::thread::sleep(jitter(agent.config.jitter));
    }
    let mut backoff = Duration::from_secs(1);
    loop {
        // The first exchange fetches the overlay whatever it is; the later ones wait.
        let wait = if agent.etag().is_none() {
            Duration::ZERO
        } else {
            agent.config.wait
        };
        let started = std::time::Instant::now();
        match agent.sync(wait) {
            Ok(Outcome::Applied(applied)) => {
                backoff = Duration::from_secs(1);
                println!(
                    "wulf-agent: runtime overlay {} from {}: {} written{}, {} removed{}, {} unchanged",
                    agent.etag().unwrap_or("?").trim_matches('"'),
                    agent.server(),
                    applied.written.len(),
                    list(&applied.written),
                    applied.removed.len(),
                    list(&applied.removed),
                    applied.unchanged
                );
                run_hooks(&agent, &applied);
                if args.once {
                    return ExitCode::SUCCESS;
                }
                // A change reaches every node at once: spread the next requests.
                std::thread::sleep(jitter(agent.config.jitter / 5));
            }
            Ok(Outcome::Unchanged) => {
                backoff = Duration::from_secs(1);
                if args.once {
                    return ExitCode::SUCCESS;
                }
                // A server that answers at once (not a long-poll) is not asked in a busy loop.
                if started.elapsed() < Duration::from_secs(1) {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            Err(error) => {
                eprintln!("wulf-agent: {error} (server {})", agent.server());
                if args.once {
                    return ExitCode::FAILURE;
                }
                if !matches!(error, SyncError::Refused(..) | SyncError::Unsigned) {
                    agent.next_server();
                }
                std::thread::sleep(backoff + jitter(agent.config.jitter));
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// ` (a, b, c)` for a short list of paths, nothing for none.
fn list(paths: &[String]) -> String {
    if paths.is_empty() {
        return String::new();
    }
    let mut shown: Vec<String> = paths.iter().take(5).map(|p| format!("/{p}")).collect();
    if paths.len() > 5 {
        shown.push(format!("and {} more", paths.len() - 5));
    }
    format!(" ({})", shown.join(", "))
}
