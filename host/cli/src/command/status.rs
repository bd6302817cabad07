//! `wulf node status`: what each node last fetched from a running `wulf serve`, and what its
//! agent last said (runtime overlay in sync, reboot needed), read from the server's `/status`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};

use crate::context::Context;
use crate::table;

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Refresh every 2 seconds until interrupted
    #[arg(short, long)]
    watch: bool,
    #[arg(long)]
    json: bool,
}

/// `GET /status` over plain HTTP/1.0.
fn fetch(addr: &str) -> anyhow::Result<serde_json::Value> {
    let target: SocketAddr = addr
        .to_socket_addrs()
        .with_context(|| format!("{addr} is not host:port"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&target, Duration::from_secs(3)).with_context(|| {
            format!("cannot reach wulf serve at {addr}: is it running? (--server picks another)")
        })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /status HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("a malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "{addr}/status answered: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(serde_json::from_str(body)?)
}

fn ago(secs: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match now.saturating_sub(secs) {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

pub(crate) fn run(ctx: &Context, args: StatusArgs) -> anyhow::Result<()> {
    let addr = ctx.boot_server.clone().unwrap_or_else(|| {
        let http = ctx.site.config().server.http_addr;
        if http.ip().is_unspecified() {
            format!("127.0.0.1:{}", http.port())
        } else {
            http.to_string()
        }
    });
    watch(&args, || {
        Ok((
            fetch(&addr)?,
            ctx.site.inventory()?.nodes.keys().cloned().collect(),
        ))
    })
}

/// `node status --server https://...`: the same, from the API.
pub(crate) fn run_remote(remote: &crate::remote::Remote, args: StatusArgs) -> anyhow::Result<()> {
    watch(&args, || {
        let nodes: serde_json::Value = remote.get("/nodes")?;
        let ids = nodes["nodes"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|n| n["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok((remote.get("/status")?, ids))
    })
}

/// Shows what `read` gives (the status, and the inventory's node ids), once or every 2 s.
fn watch(
    args: &StatusArgs,
    read: impl Fn() -> anyhow::Result<(serde_json::Value, Vec<String>)>,
) -> anyhow::Result<()> {
    loop {
        let (status, inventory) = read()?;
        let nodes = status["nodes"].as_object().cloned().unwrap_or_default();
        if args.json {
            table::print_json(&status);
        } else {
            if args.watch {
                print!("\x1b[2J\x1b[H");
            }
            // Every node of the inventory, those never seen too.
            let mut ids = inventory;
            for id in nodes.keys() {
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
            ids.sort();
            let rows = ids
                .iter()
                .map(|id| {
                    let Some(n) = nodes.get(id) else {
                        let mut row = vec![id.clone()];
                        row.extend([String::new(), String::new(), String::new()]);
                        row.extend(["never".into(), String::new(), String::new(), String::new()]);
                        return row;
                    };
                    let seen = n["last_seen"].as_u64().filter(|s| *s > 0);
                    let agent = &n["agent"];
                    let (agent_seen, runtime, reboot) = if agent.is_object() {
                        let reboot: Vec<&str> = agent["reboot_needed"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
                            .unwrap_or_default();
                        (
                            agent["last_seen"].as_u64().map(ago).unwrap_or_default(),
                            if agent["in_sync"].as_bool() == Some(true) {
                                "in sync".to_owned()
                            } else {
                                "out of sync".to_owned()
                            },
                            if reboot.is_empty() {
                                "no".to_owned()
                            } else {
                                format!("yes ({})", reboot.join(", "))
                            },
                        )
                    } else {
                        (String::new(), String::new(), String::new())
                    };
                    vec![
                        id.clone(),
                        n["stage"].as_str().unwrap_or_default().to_string(),
                        n["sent"].as_str().unwrap_or_default().to_string(),
                        n["ipaddr"].as_str().unwrap_or_default().to_string(),
                        seen.map(ago).unwrap_or_default(),
                        agent_seen,
                        runtime,
                        reboot,
                    ]
                })
                .collect();
            table::print(
                &[
                    "node",
                    "stage",
                    "sent",
                    "address",
                    "last seen",
                    "agent seen",
                    "runtime overlay",
                    "reboot needed",
                ],
                rows,
            );
        }
        if !args.watch {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}
