//! `wulf configure dhcp`: the DHCP server configuration that sends PXE firmware to our TFTP
//! (the iPXE binary for its architecture) and iPXE to our HTTP script, as Warewulf's templates
//! do, for dnsmasq or ISC dhcpd. `wulf configure ssh`: the cluster's SSH host keys.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};

use wulf_core::address::Netmask;
use wulf_site::{DhcpHost, Ipv4Net};

use crate::context::Context;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigureCommand {
    /// Write (or --show) a dnsmasq or ISC dhcpd configuration for PXE and iPXE clients
    Dhcp(DhcpArgs),
    /// Generate the cluster's SSH host keys (once; the ssh-host-keys overlay installs them)
    /// and show their fingerprints
    Ssh(SshArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct SshArgs {
    /// Replace the existing keys with new ones (nodes get them at their next boot, and users
    /// will see a changed host key)
    #[arg(long)]
    regenerate: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Dnsmasq,
    Isc,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DhcpArgs {
    /// Which DHCP server
    #[arg(long, value_enum, default_value_t = Format::Dnsmasq)]
    format: Format,
    /// This host's address on the provisioning network [default: server.http-addr's IP]
    #[arg(long)]
    server_ip: Option<Ipv4Addr>,
    /// The provisioning network's netmask
    #[arg(long, default_value = "255.255.255.0")]
    netmask: Ipv4Addr,
    /// Dynamic range for unknown machines, e.g. 10.0.0.100,10.0.0.199 [default: static entries only]
    #[arg(long, value_delimiter = ',', num_args = 1)]
    range: Option<Vec<Ipv4Addr>>,
    /// The default gateway handed to nodes
    #[arg(long)]
    gateway: Option<Ipv4Addr>,
    /// dnsmasq: the interface to serve on
    #[arg(long)]
    interface: Option<String>,
    /// dnsmasq: an IPv6 prefix to announce (router advertisements); without one iPXE waits
    /// about 15 s per boot for IPv6 configuration
    #[arg(long)]
    ipv6_prefix: Option<String>,
    /// Print the configuration instead of writing it
    #[arg(long)]
    show: bool,
    /// Where to write it [default: /etc/dnsmasq.d/wulf.conf or /etc/dhcp/dhcpd.conf]
    #[arg(long)]
    output: Option<PathBuf>,
}

pub(crate) fn run(ctx: &Context, command: ConfigureCommand) -> anyhow::Result<()> {
    match command {
        ConfigureCommand::Dhcp(args) => dhcp(ctx, args),
        ConfigureCommand::Ssh(args) => ssh(ctx, &args),
    }
}

fn ssh(ctx: &Context, args: &SshArgs) -> anyhow::Result<()> {
    let keys = if args.regenerate {
        ctx.site.regenerate_host_keys()?
    } else {
        ctx.site.host_keys()?
    };
    if args.json {
        let rows: Vec<_> = keys
            .keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "type": k.kind,
                    "fingerprint": k.fingerprint,
                    "path": keys.dir.join(format!("ssh_host_{}_key", k.kind)),
                    "public": k.public.trim_end(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("cluster SSH host keys in {}:", keys.dir.display());
    for key in &keys.keys {
        println!("  {:8} {}", key.kind, key.fingerprint);
    }
    println!(
        "nodes get them from the `ssh-host-keys` overlay; in known_hosts one line per key covers every node (narrow `*` to their names):"
    );
    for key in &keys.keys {
        println!("  * {}", key.public.trim_end());
    }
    Ok(())
}

fn dhcp(ctx: &Context, args: DhcpArgs) -> anyhow::Result<()> {
    let http = ctx.site.config().server.http_addr;
    let server = ctx.site.server_ipv4(args.server_ip)?;
    let Some(netmask) = Netmask::from_addr(args.netmask) else {
        bail!("--netmask {} is not a netmask", args.netmask);
    };
    let net = Ipv4Net::of(server, netmask);
    let network = net.network;
    if let Some(range) = &args.range {
        let [start, end] = range.as_slice() else {
            bail!("--range takes two addresses: start,end");
        };
        if !net.contains(*start) || !net.contains(*end) || u32::from(*start) > u32::from(*end) {
            bail!(
                "--range {start},{end} is not an ascending range inside {network}/{}",
                netmask.prefix()
            );
        }
    }
    let hosts = ctx.site.dhcp_hosts(net)?;
    let url = format!(
        "http://{server}:{}/ipxe/${{mac:hexhyp}}?assetkey=${{asset}}",
        http.port()
    );
    let text = match args.format {
        Format::Dnsmasq => dnsmasq(&args, server, network, &url, &hosts),
        Format::Isc => isc(&args, server, network, &url, &hosts),
    };
    if args.show {
        print!("{text}");
        return Ok(());
    }
    let path = args.output.clone().unwrap_or_else(|| match args.format {
        Format::Dnsmasq => PathBuf::from("/etc/dnsmasq.d/wulf.conf"),
        Format::Isc => PathBuf::from("/etc/dhcp/dhcpd.conf"),
    });
    wulf_core::atomic_file::write_atomic(&path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "wrote {} ({} static host(s)); restart the DHCP server to apply it, e.g. systemctl restart {}",
        path.display(),
        hosts.len(),
        match args.format {
            Format::Dnsmasq => "dnsmasq",
            Format::Isc => "isc-dhcp-server",
        }
    );
    Ok(())
}

const HEADER: &str = "# Written by `wulf configure dhcp`: PXE firmware gets the iPXE binary for its\n# architecture from wulf's TFTP; iPXE gets the node's script from wulf's HTTP.\n";

fn dnsmasq(
    args: &DhcpArgs,
    server: Ipv4Addr,
    network: Ipv4Addr,
    url: &str,
    hosts: &[DhcpHost],
) -> String {
    let mut t = String::from(HEADER);
    t.push_str("# DHCP only: DNS stays with the site's resolver, TFTP with wulf.\nport=0\n");
    if let Some(iface) = &args.interface {
        let _ = writeln!(t, "interface={iface}\nbind-interfaces");
    }
    match &args.range {
        Some(range) => {
            let _ = writeln!(
                t,
                "dhcp-range={},{},{},2m",
                range[0], range[1], args.netmask
            );
        }
        None => {
            let _ = writeln!(t, "dhcp-range={network},static,{},2m", args.netmask);
        }
    }
    if let Some(gw) = args.gateway {
        let _ = writeln!(t, "dhcp-option=option:router,{gw}");
    }
    t.push_str(
        "\n# Who is asking: iPXE (option 175 / user class), or PXE firmware by architecture.\n",
    );
    t.push_str("dhcp-match=set:ipxe,175\ndhcp-userclass=set:ipxe,iPXE\n");
    t.push_str("dhcp-match=set:bios,option:client-arch,0\ndhcp-match=set:efi64,option:client-arch,7\ndhcp-match=set:efi64,option:client-arch,9\ndhcp-match=set:arm64,option:client-arch,11\n");
    let _ = writeln!(t, "dhcp-boot=tag:ipxe,{url}");
    let (bios, efi64, arm64) = binaries();
    let _ = writeln!(t, "dhcp-boot=tag:!ipxe,tag:efi64,{efi64},,{server}");
    let _ = writeln!(t, "dhcp-boot=tag:!ipxe,tag:arm64,{arm64},,{server}");
    let _ = writeln!(t, "dhcp-boot=tag:!ipxe,tag:bios,{bios},,{server}");
    match &args.ipv6_prefix {
        Some(prefix) => {
            let _ = writeln!(t, "\n# Router advertisements, so iPXE does not wait for IPv6.\nenable-ra\ndhcp-range={prefix},ra-only");
        }
        None => t.push_str("\n# No IPv6 router advertisement is sent (pass --ipv6-prefix for one): iPXE then\n# waits about 15 s per boot for IPv6 unless another router on the link answers.\n"),
    }
    if !hosts.is_empty() {
        t.push_str("\n# Nodes\n");
        for h in hosts {
            let _ = writeln!(t, "dhcp-host={},{},{},infinite", h.hwaddr, h.ipaddr, h.name);
        }
    }
    t
}

/// The iPXE binaries for BIOS, x86-64 UEFI and arm64 UEFI (option 93: 0, 7, 11), as the
/// built-in DHCP hands them out.
fn binaries() -> (&'static str, &'static str, &'static str) {
    let of = |arch| wulf_core::provision::ipxe_binary(arch).unwrap_or_default();
    (of(0), of(7), of(11))
}

fn isc(
    args: &DhcpArgs,
    server: Ipv4Addr,
    network: Ipv4Addr,
    url: &str,
    hosts: &[DhcpHost],
) -> String {
    let mut t = String::from(HEADER);
    t.push_str("option space ipxe;\noption ipxe-encap-opts code 175 = encapsulate ipxe;\noption ipxe.no-pxedhcp code 176 = unsigned integer 8;\noption ipxe.no-pxedhcp 1;\noption architecture-type code 93 = unsigned integer 16;\n\n");
    let _ = writeln!(t, "subnet {network} netmask {} {{", args.netmask);
    t.push_str("    max-lease-time 120;\n");
    if let Some(range) = &args.range {
        let _ = writeln!(t, "    range {} {};", range[0], range[1]);
    }
    let _ = writeln!(t, "    next-server {server};");
    if let Some(gw) = args.gateway {
        let _ = writeln!(t, "    option routers {gw};");
    }
    let (bios, efi64, arm64) = binaries();
    let _ = writeln!(
        t,
        "    if exists user-class and option user-class = \"iPXE\" {{\n        filename \"{url}\";\n    }} elsif option architecture-type = 00:07 or option architecture-type = 00:09 {{\n        filename \"{efi64}\";\n    }} elsif option architecture-type = 00:0b {{\n        filename \"{arm64}\";\n    }} else {{\n        filename \"{bios}\";\n    }}\n}}"
    );
    for h in hosts {
        let _ = writeln!(
            t,
            "\nhost {} {{\n    hardware ethernet {};\n    fixed-address {};\n    option host-name \"{}\";\n}}",
            h.name, h.hwaddr, h.ipaddr, h.name
        );
    }
    t
}
