//! `wulf power <action> NODES`, `wulf node boot-once pxe NODES` and `wulf node console`:
//! flags in, one `Site` call, a progress bar, a per-node table or JSON out.

use std::io::{IsTerminal, Read as _, Seek as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use wulf_core::bmc::{PowerAction, PowerState};
use wulf_site::{BmcOptions, BmcRequest, ConsoleAccess, NodeResult, Stagger};

use crate::context::Context;
use crate::table;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Action {
    On,
    Off,
    Cycle,
    Reset,
    /// An orderly shutdown through the operating system
    Soft,
    Status,
}

impl From<Action> for PowerAction {
    fn from(action: Action) -> PowerAction {
        match action {
            Action::On => PowerAction::On,
            Action::Off => PowerAction::Off,
            Action::Cycle => PowerAction::Cycle,
            Action::Reset => PowerAction::Reset,
            Action::Soft => PowerAction::Soft,
            Action::Status => PowerAction::Status,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct PowerArgs {
    pub action: Action,
    #[command(flatten)]
    pub run: RunArgs,
}

/// How a BMC command runs over many nodes.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Node names or hostlists (n[001-100])
    #[arg(required = true)]
    pub nodes: Vec<String>,
    /// BMCs driven at once [default: bmc.fanout in wulf.toml, else 32]
    #[arg(long, short = 'f')]
    pub fanout: Option<usize>,
    /// Start N nodes per interval: 50/5s
    #[arg(long, value_parser = parse_stagger)]
    pub stagger: Option<Stagger>,
    /// Per node: 20s, 1m [default: bmc.timeout-s in wulf.toml, else 20s]
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Print one JSON object per node (node, action, ok, state, message or error kind and
    /// message, started_s) instead of a table
    #[arg(long)]
    pub json: bool,
}

fn parse_stagger(text: &str) -> Result<Stagger, String> {
    text.parse()
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    wulf_site::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "expected a duration above zero, e.g. 20s, 500ms, 2m".into())
}

pub(crate) fn run_power(ctx: &Context, args: PowerArgs) -> anyhow::Result<()> {
    run(ctx, BmcRequest::Power(args.action.into()), args.run)
}

/// Runs `request` on the nodes, shows each node's result, and fails naming the failed nodes.
pub(crate) fn run(ctx: &Context, request: BmcRequest, args: RunArgs) -> anyhow::Result<()> {
    let mut options: BmcOptions = ctx.site.bmc_defaults();
    if let Some(fanout) = args.fanout {
        if fanout == 0 {
            bail!("--fanout 0: at least one BMC must be driven at a time");
        }
        options.fanout = fanout;
    }
    options.stagger = args.stagger;
    if let Some(timeout) = args.timeout {
        options.timeout = timeout;
    }
    let bar = progress_bar(request, wulf_site::expand(&args.nodes)?.len());
    let results = ctx
        .site
        .bmc_run(&args.nodes, request, &options, &|result| {
            if let Some(bar) = &bar {
                bar.inc(1);
                if let Err(error) = &result.outcome {
                    bar.println(format!("{}: {error}", result.node));
                }
            }
        })?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if args.json {
        table::print_json(&json!(
            results
                .iter()
                .map(|r| result_json(request, r))
                .collect::<Vec<_>>()
        ));
    } else {
        let rows = results
            .iter()
            .map(|r| {
                let (result, detail) = match &r.outcome {
                    Ok(reply) => (
                        match reply.state {
                            Some(PowerState::On) => "on".to_owned(),
                            Some(PowerState::Off) => "off".to_owned(),
                            None => "ok".to_owned(),
                        },
                        reply.message.clone(),
                    ),
                    Err(error) => (format!("FAILED ({})", error.kind()), error.to_string()),
                };
                vec![r.node.clone(), request.name().to_owned(), result, detail]
            })
            .collect();
        table::print(&["node", "action", "result", "detail"], rows);
    }
    let failed: Vec<&NodeResult> = results.iter().filter(|r| r.outcome.is_err()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = failed
        .iter()
        .take(10)
        .filter_map(|r| {
            r.outcome
                .as_ref()
                .err()
                .map(|e| format!("{} ({})", r.node, e.kind()))
        })
        .collect();
    let more = failed.len().saturating_sub(named.len());
    bail!(
        "{} of {} nodes failed: {}{}",
        failed.len(),
        results.len(),
        named.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

fn result_json(request: BmcRequest, result: &NodeResult) -> serde_json::Value {
    match &result.outcome {
        Ok(reply) => json!({
            "node": result.node,
            "action": request.name(),
            "ok": true,
            "started_s": started_s(result),
            "state": reply.state,
            "message": reply.message,
        }),
        Err(error) => json!({
            "node": result.node,
            "action": request.name(),
            "ok": false,
            "started_s": started_s(result),
            "error": { "kind": error.kind(), "message": error.to_string() },
        }),
    }
}

/// When the node's BMC call began, in seconds from the start of the run, to the millisecond.
fn started_s(result: &NodeResult) -> f64 {
    (result.started.as_secs_f64() * 1000.0).round() / 1000.0
}

fn progress_bar(request: BmcRequest, nodes: usize) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(nodes as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg:16} [{bar:30}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("power {}", request.name()));
    Some(bar)
}

#[derive(Debug, Args)]
pub(crate) struct ConsoleArgs {
    pub node: String,
    /// Print the console log `wulf serve` keeps ([console] log = true) instead of attaching
    #[arg(long)]
    pub log: bool,
    /// With --log: keep printing as the console writes
    #[arg(long, short = 'f', requires = "log")]
    pub follow: bool,
}

pub(crate) fn console(ctx: &Context, args: ConsoleArgs) -> anyhow::Result<()> {
    if args.log {
        return console_log(ctx, &args.node, args.follow);
    }
    let command = match ctx.site.console_access(&args.node)? {
        ConsoleAccess::Shared { stream, escape } => {
            return shared_console(&args.node, stream, escape);
        }
        ConsoleAccess::Direct(command) => command,
    };
    eprintln!(
        "[attaching to {}'s console; type {} to leave]",
        args.node, command.escape
    );
    let mut process = std::process::Command::new(&command.program);
    process.args(&command.args);
    for (key, value) in &command.env {
        process.env(key, value.expose());
    }
    let error = std::os::unix::process::CommandExt::exec(&mut process);
    Err(error).with_context(|| format!("running {}", command.program.display()))
}

/// Attaches to a console `wulf serve` shares: its output to stdout, stdin to it, until the
/// escape (`~.` at the start of a line) or until the server closes it.
fn shared_console(node: &str, stream: UnixStream, escape: u8) -> anyhow::Result<()> {
    eprintln!(
        "[{node}'s console, shared with `wulf serve`, which logs it; type {}. to leave]\r",
        escape as char
    );
    let raw = RawTerminal::enter();
    let saved = raw.as_ref().map(|r| r.saved.clone());
    let mut output = stream.try_clone()?;
    let name = node.to_owned();
    let leaving = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let left = std::sync::Arc::clone(&leaving);
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout();
        let mut buf = [0u8; 8192];
        while let Ok(n) = output.read(&mut buf) {
            if n == 0
                || stdout
                    .write_all(&buf[..n])
                    .and_then(|()| stdout.flush())
                    .is_err()
            {
                break;
            }
        }
        if left.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // The server ended the console (or stopped): give the terminal back and leave.
        if let Some(saved) = &saved {
            RawTerminal::restore(saved);
        }
        eprintln!("\r\n[{name}'s console closed by wulf serve]");
        std::process::exit(0);
    });
    let mut input = &stream;
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 1024];
    let (mut line_start, mut escaped) = (true, false);
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            // No more input (a pipe): keep printing until the server closes.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            loop {
                std::thread::park();
            }
        }
        let mut send = Vec::with_capacity(n + 1);
        for &byte in &buf[..n] {
            if escaped {
                escaped = false;
                if byte == b'.' {
                    leaving.store(true, std::sync::atomic::Ordering::SeqCst);
                    drop(raw);
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    eprintln!("[left {node}'s console]");
                    return Ok(());
                }
                send.push(escape);
                if byte == escape {
                    continue;
                }
            } else if line_start && byte == escape {
                escaped = true;
                continue;
            }
            send.push(byte);
            line_start = byte == b'\r' || byte == b'\n';
        }
        input.write_all(&send)?;
    }
}

/// The terminal in raw mode (keys go to the console as typed), restored when dropped.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    /// `None` when stdin is not a terminal.
    fn enter() -> Option<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawTerminal { saved })
    }

    fn restore(saved: &rustix::termios::Termios) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            saved,
        );
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        RawTerminal::restore(&self.saved);
    }
}

fn console_log(ctx: &Context, node: &str, follow: bool) -> anyhow::Result<()> {
    let files = ctx.site.console_logs(node)?;
    if files.is_empty() && !follow {
        bail!(
            "no console log for {node} in {}: `wulf serve` keeps one when wulf.toml has [console] log = true",
            ctx.site.console_dir().display()
        );
    }
    let mut out = std::io::stdout().lock();
    let current = ctx.site.console_log_path(node);
    for file in files.iter().filter(|f| **f != current) {
        let mut text = Vec::new();
        std::fs::File::open(file)
            .and_then(|mut f| f.read_to_end(&mut text))
            .with_context(|| file.display().to_string())?;
        out.write_all(&text)?;
    }
    follow_file(&current, follow, &mut out)
}

/// Prints `path`, and with `follow` whatever is appended to it, across rotations.
fn follow_file(path: &Path, follow: bool, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let mut position = 0u64;
    let mut inode = None;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if let Ok(mut file) = std::fs::File::open(path) {
            let meta = file.metadata()?;
            if inode != Some(meta.ino()) || meta.len() < position {
                // Rotated (a new file) or truncated: from its start.
                inode = Some(meta.ino());
                position = 0;
            }
            file.seek(std::io::SeekFrom::Start(position))?;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
                position += n as u64;
            }
            out.flush()?;
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `power ACTION NODES` against a remote server, with its site's fan-out and timeout.
pub(crate) fn run_remote(remote: &crate::remote::Remote, args: PowerArgs) -> anyhow::Result<()> {
    if args.run.fanout.is_some() || args.run.stagger.is_some() || args.run.timeout.is_some() {
        bail!(
            "through --server, power runs with the server's bmc.fanout and bmc.timeout-s; --fanout, --stagger and --timeout work on the wulf host"
        );
    }
    let action = PowerAction::from(args.action).name();
    let answer: serde_json::Value = remote.send(
        reqwest::Method::POST,
        "/power",
        Some(&json!({"nodes": args.run.nodes, "action": action})),
    )?;
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    if args.run.json {
        table::print_json(&json!(results));
    } else {
        let rows = results
            .iter()
            .map(|r| {
                let ok = r["ok"].as_bool() == Some(true);
                let result = match (ok, r["state"].as_str()) {
                    (true, Some(state)) => state.to_owned(),
                    (true, None) => "ok".to_owned(),
                    (false, _) => "FAILED".to_owned(),
                };
                vec![
                    r["node"].as_str().unwrap_or_default().to_owned(),
                    action.to_owned(),
                    result,
                    r["message"].as_str().unwrap_or_default().to_owned(),
                ]
            })
            .collect();
        table::print(&["node", "action", "result", "detail"], rows);
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r["ok"].as_bool() != Some(true))
        .filter_map(|r| r["node"].as_str())
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    bail!(
        "{} of {} nodes failed: {}",
        failed.len(),
        results.len(),
        failed.join(", ")
    )
}
