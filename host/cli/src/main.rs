//! `wulf`: the command-line front of the provisioning host. Parses flags, loads the site
//! configuration and wires the library crates together; no domain logic lives here.

mod command;
mod context;
mod embedded;
mod remote;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

/// A build or a running server makes tens of thousands of short-lived plugin instances, each
/// with allocations of a few hundred KiB. glibc's malloc raises its mmap threshold after the
/// first of them are freed and from then on keeps that memory in its arenas: measured, a
/// 10,000-node build held 2.9 GB. mimalloc gives freed pages back: the same build stays flat.
/// (`--features system-allocator` keeps the system's, for heap profilers such as heaptrack.)
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's `mi_option_e` values for the two options set below (libmimalloc-sys names
/// only some of them; a unit test checks these by their documented defaults).
#[cfg(not(feature = "system-allocator"))]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
#[cfg(not(feature = "system-allocator"))]
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc 3 keeps freed pages committed for a second before giving them back, and commits
/// arena memory eagerly; a build's short bursts then leave the process holding memory it will
/// not use again until the next burst. Freed pages given back at once, and arenas committed as
/// they are used: measured on 10,000 nodes, a cold overlay build peaks at 71 MiB instead of
/// 99-104 MiB and a no-change one at 68 MiB instead of 94, `wulf serve` starts at 53 MiB instead
/// of 96 MiB, at the same speed. (The environment's `MIMALLOC_PURGE_DELAY` and
/// `MIMALLOC_ARENA_EAGER_COMMIT` still win when set.)
#[cfg(not(feature = "system-allocator"))]
#[allow(unsafe_code)]
fn give_memory_back() {
    for (option, variable) in [
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT"),
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY"),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mi_option_set stores an integer in mimalloc's option table; the options
            // are read on each commit and purge, and both take 0.
            unsafe { libmimalloc_sys::mi_option_set(option, 0) };
        }
    }
}

#[cfg(feature = "system-allocator")]
fn give_memory_back() {}

/// The option numbers above name the options meant: their documented defaults read back.
#[cfg(all(test, not(feature = "system-allocator")))]
#[allow(unsafe_code)]
#[test]
fn the_allocator_options_are_the_ones_meant() {
    // SAFETY: mi_option_get reads mimalloc's option table.
    let get = |option| unsafe { libmimalloc_sys::mi_option_get(option) };
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        assert_eq!(get(PURGE_DELAY), 1000, "purge_delay defaults to 1,000 ms");
    }
    if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
        assert_eq!(
            get(ARENA_EAGER_COMMIT),
            2,
            "arena_eager_commit defaults to 2 (on overcommit systems)"
        );
    }
    assert_eq!(get(libmimalloc_sys::mi_option_show_errors), 0);
}

#[derive(Debug, Parser)]
#[command(
    name = "wulf",
    version,
    about = "Stateless cluster provisioning with sandboxed WebAssembly plugins"
)]
struct Cli {
    /// State directory [default: /var/lib/wulf as root, else $XDG_DATA_HOME/wulf]
    #[arg(long, global = true, env = "WULF_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Site configuration [default: /etc/wulf/wulf.toml for the state directory /var/lib/wulf,
    /// else wulf.toml in the state directory; absent means built-in defaults]
    #[arg(long, global = true, env = "WULF_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// More log output (-v info, -vv wulf's debug and step times, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Log format
    #[arg(long, global = true, value_enum, default_value_t = context::LogFormat::Text)]
    log_format: context::LogFormat,

    /// A remote wulf's API (https://host:9874): the commands the API covers go to it. A bare
    /// HOST:PORT is the boot server `node status` reads
    #[arg(long, global = true, env = "WULF_SERVER", value_name = "URL")]
    server: Option<String>,

    /// The API token for --server
    #[arg(long, global = true, env = "WULF_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// A CA certificate (PEM) to trust for --server, e.g. the server's <state>/api/tls.crt
    #[arg(long, global = true, env = "WULF_CACERT", value_name = "FILE")]
    cacert: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the provisioning host: HTTP (iPXE scripts, status) and TFTP (iPXE binaries)
    Serve(command::serve::ServeArgs),
    /// Manage nodes
    #[command(subcommand, visible_alias = "nodes")]
    Node(command::node::NodeCommand),
    /// Manage profiles: shared settings nodes inherit, in order
    #[command(subcommand, visible_alias = "profiles")]
    Profile(command::node::ProfileCommand),
    /// Manage images: import from registries and archives, build initramfs, kernels
    #[command(
        subcommand,
        visible_alias = "images",
        alias = "container",
        alias = "vnfs"
    )]
    Image(command::image::ImageCommand),
    /// Manage overlays: site file trees with templates, generator plugins, per-node archives
    #[command(subcommand, visible_alias = "overlays")]
    Overlay(command::overlay::OverlayCommand),
    /// Configure services around wulf: DHCP for PXE and iPXE clients
    #[command(subcommand)]
    Configure(command::configure::ConfigureCommand),
    /// Import an inventory from another tool
    #[command(subcommand)]
    Import(command::import::ImportCommand),
    /// Manage plugins: overlay generators, inventory backends, image transforms
    #[command(subcommand)]
    Plugin(command::plugin::PluginCommand),
    /// Power nodes on, off, cycle, reset, soft (shutdown) or show their status, through
    /// their BMCs (IPMI or Redfish), many at once
    Power(command::power::PowerArgs),
    /// Manage API tokens: scoped (read, write, power, admin), expiring, stored hashed
    #[command(subcommand)]
    Token(command::token::TokenCommand),
    /// Print a link that opens the web dashboard with a read-only token
    Dashboard(command::token::DashboardArgs),
    /// Check this host before booting nodes: ports, iPXE binaries, DHCP, images, overlays,
    /// nodes, plugins, clock, disk space; each finding with its fix. Exits 1 when one fails
    Doctor(command::doctor::DoctorArgs),
    /// Bring a state directory written by an earlier wulf to this release's layout, after a
    /// backup of what changes
    Upgrade(command::upgrade::UpgradeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (wulf.1, wulf-node.1, wulf-node-add.1, ...) into a directory
    Man {
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

/// `wulf ... | head`: a reader that stops early. Rust ignores SIGPIPE, so printing to the closed
/// pipe panics; end quietly instead, with the status a shell expects (128 + SIGPIPE).
fn end_quietly_on_a_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    give_memory_back();
    end_quietly_on_a_closed_stdout();
    let cli = Cli::parse();
    let plugin_logs = matches!(
        cli.command,
        Command::Plugin(command::plugin::PluginCommand::Test { .. })
    );
    context::init_tracing(cli.verbose, cli.log_format, plugin_logs);
    // Generated from the flags themselves; they need no state directory.
    match &cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "wulf", &mut script);
            // A closed pipe (`| head`) is not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            return ExitCode::SUCCESS;
        }
        Command::Man { out } => {
            return match std::fs::create_dir_all(out)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), out))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: writing man pages to {}: {error}", out.display());
                    ExitCode::FAILURE
                }
            };
        }
        // Offline: what plugin authors run, on any machine.
        Command::Plugin(cmd) if cmd.needs_no_site() => {
            return finish(command::plugin::run_offline(cmd));
        }
        _ => {}
    }
    // Commands the API covers go to a remote server when one is named (by flag or the
    // client file); the others always work here, and say so when a remote is named.
    let covered = matches!(
        cli.command,
        Command::Node(_)
            | Command::Profile(_)
            | Command::Image(_)
            | Command::Overlay(_)
            | Command::Power(_)
            | Command::Token(_)
            | Command::Dashboard(_)
    );
    let named_remote = cli
        .server
        .as_deref()
        .is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"));
    if named_remote && !covered {
        return finish(Err(not_remote("this command")));
    }
    if covered {
        match remote::Remote::from_flags(
            cli.server.as_deref(),
            cli.token.as_deref(),
            cli.cacert.as_deref(),
        ) {
            Ok(Some(remote)) => return finish(run_remote(&remote, cli.command)),
            Ok(None) => {}
            Err(error) => return finish(Err(error)),
        }
    }
    if let Command::Doctor(args) = cli.command {
        let context = context::Context::new(cli.state_dir, cli.config);
        return match command::doctor::run(context, args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {}", wulf_site::error_chain(error.as_ref()));
                ExitCode::FAILURE
            }
        };
    }
    let boot_server = cli.server;
    let result = context::Context::new(cli.state_dir, cli.config)
        .map(|ctx| ctx.with_boot_server(boot_server))
        .and_then(|ctx| match cli.command {
            Command::Serve(args) => command::serve::run(&ctx, args),
            Command::Node(cmd) => command::node::run_node(&ctx, cmd),
            Command::Profile(cmd) => command::node::run_profile(&ctx, cmd),
            Command::Image(cmd) => command::image::run(&ctx, cmd),
            Command::Overlay(cmd) => command::overlay::run(&ctx, cmd),
            Command::Configure(cmd) => command::configure::run(&ctx, cmd),
            Command::Import(cmd) => command::import::run(&ctx, cmd),
            Command::Plugin(cmd) => command::plugin::run(&ctx, cmd),
            Command::Power(args) => command::power::run_power(&ctx, args),
            Command::Token(cmd) => command::token::run(&ctx, cmd),
            Command::Dashboard(args) => command::token::dashboard(&ctx, args),
            Command::Upgrade(args) => command::upgrade::run(&ctx, args),
            Command::Completions { .. } | Command::Man { .. } | Command::Doctor(_) => Ok(()),
        });
    finish(result)
}

/// A command against a remote server's API: those the API covers; the others say so.
fn run_remote(remote: &remote::Remote, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Node(cmd) => command::node::run_node_remote(remote, cmd),
        Command::Profile(cmd) => command::node::run_profile_remote(remote, cmd),
        Command::Image(cmd) => command::image::run_remote(remote, cmd),
        Command::Overlay(cmd) => command::overlay::run_remote(remote, cmd),
        Command::Power(args) => command::power::run_remote(remote, args),
        Command::Token(cmd) => command::token::run_remote(remote, cmd),
        Command::Dashboard(args) => command::token::dashboard_remote(remote, args),
        _ => Err(not_remote("this command")),
    }
}

/// What a remote command cannot do, said the same way everywhere.
pub(crate) fn not_remote(what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "`{what}` works on the wulf host itself, not through --server: the API covers node and \
         profile add|set|delete|list|show, node status, image list|import|build, overlay \
         list|build, power, token and dashboard"
    )
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", wulf_site::error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}
