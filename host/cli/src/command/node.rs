//! `wulf node ...` and `wulf profile ...`: one implementation, since a profile is a node record
//! without the node-only fields.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;
use wulf_core::Node;
use wulf_site::{ImportReport, Kind, RecordView, Selection};

use super::node_fields::{FieldArgs, NodeOnlyArgs};
use crate::context::Context;
use crate::remote::Remote;
use crate::table;
use reqwest::Method;

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// What each node last fetched from the running boot server (stage, file, address, time)
    Status(crate::command::status::StatusArgs),
    /// Add nodes: names or hostlists like n[001-100]; --ipaddr and --ipmiaddr count up
    #[command(visible_aliases = ["new", "create"])]
    Add {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        fields: FieldArgs,
        #[command(flatten)]
        node_only: NodeOnlyArgs,
    },
    /// Change only the fields given
    #[command(visible_alias = "modify")]
    Set {
        #[command(flatten)]
        target: SetTarget,
        #[command(flatten)]
        fields: FieldArgs,
        #[command(flatten)]
        node_only: NodeOnlyArgs,
    },
    /// Delete nodes
    #[command(visible_aliases = ["rm", "del", "remove"])]
    Delete(DeleteArgs),
    /// List nodes (all, or those matching hostlists)
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one node merged with its profiles
    Show {
        name: String,
        #[arg(long)]
        json: bool,
        /// Every field with where its value comes from (a profile, the node, or SUPERSEDED)
        #[arg(short, long, conflicts_with = "json")]
        all: bool,
    },
    /// Clear fields, named as `node show --all` lists them: `image`, `kernel.args`,
    /// `network-devices.ib` (a whole device), `network-devices.default.gateway`, `tags.rack`
    Unset(UnsetArgs),
    /// Edit nodes as TOML in $EDITOR; the result is validated before anything is written
    Edit(NamesArgs),
    /// Print nodes as stored (unmerged), as YAML (default) or JSON, for `node import`
    Export {
        /// Names or hostlists [default: every node]
        names: Vec<String>,
        #[arg(long, conflicts_with = "json")]
        yaml: bool,
        #[arg(long)]
        json: bool,
    },
    /// Read a YAML or JSON map of node name to fields: creates missing nodes, and writes the
    /// given fields onto existing ones
    Import {
        file: std::path::PathBuf,
        /// Accepted for wwctl scripts: `import` does not ask
        #[arg(short = 'y', long = "yes")]
        _yes: bool,
    },
    /// Make the next boot, once, a network boot through the BMC, then power on (nodes that
    /// are off) or cycle (nodes that are on)
    BootOnce {
        device: BootDevice,
        #[command(flatten)]
        run: crate::command::power::RunArgs,
    },
    /// Attach to a node's serial console (IPMI Serial over LAN), or read its log
    Console(crate::command::power::ConsoleArgs),
}

/// What `node boot-once` boots from.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum BootDevice {
    /// The network (PXE, then iPXE from wulf)
    Pxe,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProfileCommand {
    /// Add profiles
    #[command(visible_aliases = ["new", "create"])]
    Add {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        fields: FieldArgs,
    },
    /// Change only the fields given
    #[command(visible_alias = "modify")]
    Set {
        #[command(flatten)]
        target: SetTarget,
        #[command(flatten)]
        fields: FieldArgs,
    },
    /// Clear fields (see `wulf node unset`)
    Unset(UnsetArgs),
    /// Edit profiles as TOML in $EDITOR
    Edit(NamesArgs),
    /// Delete profiles no node or profile uses
    #[command(visible_aliases = ["rm", "del", "remove"])]
    Delete(DeleteArgs),
    /// List profiles
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one profile
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// Which records `set` changes.
#[derive(Debug, clap::Args)]
pub(crate) struct SetTarget {
    /// Names or hostlists
    names: Vec<String>,
    /// Every record of the kind
    #[arg(short, long)]
    all: bool,
    /// Accepted for wwctl scripts: `set` changes what it is told without asking
    #[arg(short = 'y', long = "yes")]
    _yes: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct NamesArgs {
    /// Names or hostlists
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    /// Names or hostlists
    #[arg(required = true)]
    names: Vec<String>,
    /// Do not ask
    #[arg(short, long)]
    yes: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct UnsetArgs {
    /// Names or hostlists
    #[arg(required = true)]
    names: Vec<String>,
    #[arg(short, long = "field", required = true, value_name = "FIELD")]
    fields: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    patterns: Vec<String>,
    /// Network view: one row per network device
    #[arg(short, long)]
    net: bool,
    /// IPMI view
    #[arg(short, long)]
    ipmi: bool,
    /// Long view: kernel, image, overlays
    #[arg(short, long)]
    long: bool,
    #[arg(long)]
    json: bool,
    /// Ansible's dynamic-inventory JSON: groups from profiles, clusters, images and tags;
    /// each node's merged record as host variables (no secrets)
    #[arg(long, conflicts_with_all = ["net", "ipmi", "long", "json"])]
    ansible: bool,
}

pub(crate) fn run_node(ctx: &Context, command: NodeCommand) -> anyhow::Result<()> {
    let kind = Kind::Node;
    match command {
        NodeCommand::Add {
            names,
            fields,
            node_only,
        } => add(ctx, kind, &names, &fields, Some(&node_only)),
        NodeCommand::Set {
            target,
            fields,
            node_only,
        } => set(ctx, kind, &target, &fields, Some(&node_only)),
        NodeCommand::Delete(args) => delete(ctx, kind, &args),
        NodeCommand::List(args) => list(ctx, kind, &args),
        NodeCommand::Status(args) => crate::command::status::run(ctx, args),
        NodeCommand::Show {
            name,
            json: false,
            all: true,
        } => show_sources(ctx, &name),
        NodeCommand::Show { name, json, .. } => show(ctx, kind, &name, json),
        NodeCommand::Unset(args) => unset(ctx, kind, &args),
        NodeCommand::Edit(args) => edit(ctx, kind, &args.names),
        NodeCommand::Export { names, json, .. } => export(ctx, &names, json),
        NodeCommand::Import { file, .. } => import(ctx, &file),
        NodeCommand::BootOnce {
            device: BootDevice::Pxe,
            run,
        } => crate::command::power::run(ctx, wulf_site::BmcRequest::BootOncePxe, run),
        NodeCommand::Console(args) => crate::command::power::console(ctx, args),
    }
}

pub(crate) fn run_profile(ctx: &Context, command: ProfileCommand) -> anyhow::Result<()> {
    let kind = Kind::Profile;
    match command {
        ProfileCommand::Add { names, fields } => add(ctx, kind, &names, &fields, None),
        ProfileCommand::Set { target, fields } => set(ctx, kind, &target, &fields, None),
        ProfileCommand::Delete(args) => delete(ctx, kind, &args),
        ProfileCommand::Unset(args) => unset(ctx, kind, &args),
        ProfileCommand::Edit(args) => edit(ctx, kind, &args.names),
        ProfileCommand::List(args) => list(ctx, kind, &args),
        ProfileCommand::Show { name, json } => show(ctx, kind, &name, json),
    }
}

fn summarize(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [first, .., last] => format!("{first} .. {last}"),
    }
}

fn add(
    ctx: &Context,
    kind: Kind,
    patterns: &[String],
    fields: &FieldArgs,
    node_only: Option<&NodeOnlyArgs>,
) -> anyhow::Result<()> {
    let names = ctx
        .site
        .add_records(kind, patterns, &fields.patch(node_only))?;
    print_added(kind, &names);
    Ok(())
}

fn print_added(kind: Kind, names: &[String]) {
    println!(
        "added {} {}(s): {}",
        names.len(),
        kind.noun(),
        summarize(names)
    );
}

fn set(
    ctx: &Context,
    kind: Kind,
    target: &SetTarget,
    fields: &FieldArgs,
    node_only: Option<&NodeOnlyArgs>,
) -> anyhow::Result<()> {
    let selection = if target.all {
        Selection::All
    } else {
        Selection::Patterns(target.names.clone())
    };
    let count = ctx
        .site
        .set_records(kind, &selection, &fields.patch(node_only))?;
    print_updated(kind, count);
    Ok(())
}

fn delete(ctx: &Context, kind: Kind, args: &DeleteArgs) -> anyhow::Result<()> {
    let names = wulf_site::expand(&args.names)?;
    confirm_delete(kind, &names, args.yes)?;
    let deleted = ctx.site.delete_records(kind, &names)?;
    print_deleted(kind, &deleted);
    Ok(())
}

fn print_updated(kind: Kind, count: usize) {
    println!("updated {count} {}(s)", kind.noun());
}

fn print_deleted(kind: Kind, deleted: &[String]) {
    println!(
        "deleted {} {}(s): {}",
        deleted.len(),
        kind.noun(),
        summarize(deleted)
    );
}

/// Asks before a deletion, unless `yes`; refuses without a terminal to ask on.
fn confirm_delete(kind: Kind, names: &[String], yes: bool) -> anyhow::Result<()> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "deleting {} {}(s) needs confirmation: pass --yes",
                names.len(),
                kind.noun()
            );
        }
        eprint!(
            "delete {} {}(s): {}? [y/N] ",
            names.len(),
            kind.noun(),
            summarize(names)
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("nothing deleted");
        }
    }
    Ok(())
}

fn record_json(node: &Node) -> serde_json::Value {
    let mut value = serde_json::to_value(node).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("id".into(), json!(node.id));
    }
    value
}

fn list(ctx: &Context, kind: Kind, args: &ListArgs) -> anyhow::Result<()> {
    if args.ansible {
        if kind != Kind::Node {
            anyhow::bail!("--ansible lists nodes: `wulf node list --ansible`");
        }
        table::print_json(&ctx.site.ansible_inventory(&args.patterns)?);
        return Ok(());
    }
    let merged = ctx.site.list_records(kind, &args.patterns)?;
    print_list(kind, &merged, args);
    Ok(())
}

/// Records as `list` shows them: JSON, or the network, IPMI, long or short table.
fn print_list(kind: Kind, merged: &[Node], args: &ListArgs) {
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> = merged
            .iter()
            .map(|n| (n.id.clone(), record_json(n)))
            .collect();
        table::print_json(&serde_json::Value::Object(map));
        return;
    }
    let noun = kind.noun();
    if args.net {
        let rows = merged
            .iter()
            .flat_map(|n| {
                n.network_devices.iter().map(move |(net, d)| {
                    vec![
                        n.id.clone(),
                        net.clone(),
                        d.hwaddr.map(|v| v.to_string()).unwrap_or_default(),
                        d.ipaddr.map(|v| v.to_string()).unwrap_or_default(),
                        d.gateway.map(|v| v.to_string()).unwrap_or_default(),
                        d.device.clone().unwrap_or_default(),
                    ]
                })
            })
            .collect();
        table::print(
            &[
                &format!("{noun} name"),
                "network",
                "hwaddr",
                "ipaddr",
                "gateway",
                "device",
            ],
            rows,
        );
    } else if args.ipmi {
        let rows = merged
            .iter()
            .map(|n| {
                let i = &n.ipmi;
                vec![
                    n.id.clone(),
                    i.ipaddr.map(|v| v.to_string()).unwrap_or_default(),
                    i.port.map(|p| p.to_string()).unwrap_or_default(),
                    i.username.clone().unwrap_or_default(),
                    i.interface.clone().unwrap_or_default(),
                ]
            })
            .collect();
        table::print(
            &[
                &format!("{noun} name"),
                "ipmi ipaddr",
                "ipmi port",
                "ipmi username",
                "ipmi interface",
            ],
            rows,
        );
    } else if args.long {
        let rows = merged
            .iter()
            .map(|n| {
                vec![
                    n.id.clone(),
                    n.kernel.version.clone().unwrap_or_default(),
                    n.image.clone().unwrap_or_default(),
                    format!(
                        "{}/{}",
                        n.system_overlays.join(","),
                        n.runtime_overlays.join(",")
                    ),
                ]
            })
            .collect();
        table::print(
            &[
                &format!("{noun} name"),
                "kernel version",
                "image",
                "overlays (s/r)",
            ],
            rows,
        );
    } else {
        let rows = merged
            .iter()
            .map(|n| {
                let network = n
                    .primary_network()
                    .and_then(|p| n.network_devices.get(p))
                    .and_then(|d| d.ipaddr);
                vec![
                    n.id.clone(),
                    n.profiles.join(","),
                    network.map(|v| v.to_string()).unwrap_or_default(),
                ]
            })
            .collect();
        table::print(&[&format!("{noun} name"), "profiles", "network"], rows);
    }
}

fn show(ctx: &Context, kind: Kind, name: &str, json: bool) -> anyhow::Result<()> {
    print_show(kind, name, ctx.site.show_record(kind, name)?, json);
    Ok(())
}

/// One record as `show` presents it: TOML with the profiles applied named, or JSON.
fn print_show(kind: Kind, name: &str, view: RecordView, json: bool) {
    let RecordView {
        record,
        applied,
        missing,
    } = view;
    if json {
        let mut value = record_json(&record);
        value["applied-profiles"] = json!(applied);
        table::print_json(&value);
        return;
    }
    println!(
        "# {} {name}{}",
        kind.noun(),
        if applied.is_empty() {
            String::new()
        } else {
            format!(" (profiles applied: {})", applied.join(", "))
        }
    );
    for missing in missing {
        println!("# warning: profile `{missing}` does not exist");
    }
    print!("{}", toml::to_string(&record).unwrap_or_default());
}

fn export(ctx: &Context, patterns: &[String], json: bool) -> anyhow::Result<()> {
    let selected = ctx.site.stored_records(Kind::Node, patterns)?;
    if json {
        table::print_json(&serde_json::to_value(&selected)?);
    } else {
        print!("{}", serde_norway::to_string(&selected)?);
    }
    Ok(())
}

fn import(ctx: &Context, file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let incoming: BTreeMap<String, serde_json::Value> = serde_norway::from_str(&text)
        .with_context(|| format!("{}: expected a map of node name to fields", file.display()))?;
    let ImportReport { created, updated } = ctx
        .site
        .import_nodes(incoming)
        .with_context(|| file.display().to_string())?;
    println!(
        "imported {} node(s): {created} created, {updated} updated",
        created + updated
    );
    Ok(())
}

fn show_sources(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let rows = ctx
        .site
        .field_sources(name)?
        .into_iter()
        .map(|f| vec![name.to_string(), f.field, f.source.to_string(), f.value])
        .collect();
    table::print(&["node", "field", "profile", "value"], rows);
    Ok(())
}

fn unset(ctx: &Context, kind: Kind, args: &UnsetArgs) -> anyhow::Result<()> {
    let count = ctx.site.unset_fields(kind, &args.names, &args.fields)?;
    println!(
        "unset {} on {count} {}(s)",
        args.fields.join(", "),
        kind.noun()
    );
    Ok(())
}

fn edit(ctx: &Context, kind: Kind, patterns: &[String]) -> anyhow::Result<()> {
    let names = wulf_site::expand(patterns)?;
    let selected = ctx.site.stored_records(kind, &names)?;
    let original = toml::to_string(&selected)?;
    let root = ctx.site.state().root();
    let file = root.join(format!(".edit-{}.toml", std::process::id()));
    std::fs::create_dir_all(root)?;
    std::fs::write(
        &file,
        format!(
            "# {}s {}: save and quit to apply; empty the file to cancel.\n{original}",
            kind.noun(),
            names.join(", ")
        ),
    )?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status();
    let edited = std::fs::read_to_string(&file);
    let _ = std::fs::remove_file(&file);
    if !status
        .with_context(|| format!("cannot run the editor `{editor}`"))?
        .success()
    {
        bail!("the editor `{editor}` failed; nothing changed");
    }
    let edited = edited?;
    if edited
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        bail!("the file was emptied; nothing changed");
    }
    let records: BTreeMap<String, Node> = toml::from_str(&edited)
        .map_err(|e| anyhow::anyhow!("the edited file is not valid; nothing changed:\n{e}"))?;
    if toml::to_string(&records)? == original {
        println!("no changes");
        return Ok(());
    }
    ctx.site.replace_records(kind, &names, records)?;
    print_updated(kind, names.len());
    Ok(())
}

/// `/nodes` or `/profiles`.
fn collection(kind: Kind) -> &'static str {
    match kind {
        Kind::Node => "/nodes",
        Kind::Profile => "/profiles",
    }
}

/// Names for a query string: spaces between them, as the API reads them.
fn names_query(names: &[String]) -> String {
    names
        .iter()
        .map(|n| {
            n.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b',' => {
                        char::from(b).to_string()
                    }
                    other => format!("%{other:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("%20")
}

pub(crate) fn run_node_remote(remote: &Remote, command: NodeCommand) -> anyhow::Result<()> {
    let kind = Kind::Node;
    match command {
        NodeCommand::Add {
            names,
            fields,
            node_only,
        } => add_remote(remote, kind, &names, &fields.patch(Some(&node_only))),
        NodeCommand::Set {
            target,
            fields,
            node_only,
        } => set_remote(remote, kind, &target, &fields.patch(Some(&node_only))),
        NodeCommand::Delete(args) => delete_remote(remote, kind, &args),
        NodeCommand::List(args) if !args.ansible => list_remote(remote, kind, &args),
        NodeCommand::Show {
            name,
            json,
            all: false,
        } => show_remote(remote, kind, &name, json),
        NodeCommand::Status(args) => crate::command::status::run_remote(remote, args),
        _ => Err(crate::not_remote(
            "node unset|edit|export|import|boot-once|console, list --ansible, show --all",
        )),
    }
}

pub(crate) fn run_profile_remote(remote: &Remote, command: ProfileCommand) -> anyhow::Result<()> {
    let kind = Kind::Profile;
    match command {
        ProfileCommand::Add { names, fields } => {
            add_remote(remote, kind, &names, &fields.patch(None))
        }
        ProfileCommand::Set { target, fields } => {
            set_remote(remote, kind, &target, &fields.patch(None))
        }
        ProfileCommand::Delete(args) => delete_remote(remote, kind, &args),
        ProfileCommand::List(args) if !args.ansible => list_remote(remote, kind, &args),
        ProfileCommand::Show { name, json } => show_remote(remote, kind, &name, json),
        _ => Err(crate::not_remote("profile unset|edit")),
    }
}

fn add_remote(
    remote: &Remote,
    kind: Kind,
    patterns: &[String],
    patch: &wulf_site::Patch,
) -> anyhow::Result<()> {
    let created: serde_json::Value = remote.send(
        Method::POST,
        collection(kind),
        Some(&json!({"names": patterns, "fields": patch})),
    )?;
    let names: Vec<String> = serde_json::from_value(created["created"].clone())?;
    print_added(kind, &names);
    Ok(())
}

fn set_remote(
    remote: &Remote,
    kind: Kind,
    target: &SetTarget,
    patch: &wulf_site::Patch,
) -> anyhow::Result<()> {
    let updated: serde_json::Value = remote.send(
        Method::PATCH,
        collection(kind),
        Some(&json!({"names": target.names, "all": target.all, "fields": patch})),
    )?;
    print_updated(kind, updated["updated"].as_u64().unwrap_or(0) as usize);
    Ok(())
}

fn delete_remote(remote: &Remote, kind: Kind, args: &DeleteArgs) -> anyhow::Result<()> {
    let names = wulf_site::expand(&args.names)?;
    confirm_delete(kind, &names, args.yes)?;
    // The patterns, not the names: the server expands them as it would its own.
    let path = format!("{}?names={}", collection(kind), names_query(&args.names));
    let deleted: serde_json::Value = remote.send(Method::DELETE, &path, None::<&()>)?;
    let deleted: Vec<String> = serde_json::from_value(deleted["deleted"].clone())?;
    print_deleted(kind, &deleted);
    Ok(())
}

fn list_remote(remote: &Remote, kind: Kind, args: &ListArgs) -> anyhow::Result<()> {
    let mut path = format!("{}?records=true", collection(kind));
    if !args.patterns.is_empty() {
        path.push_str(&format!("&names={}", names_query(&args.patterns)));
    }
    let answer: serde_json::Value = remote.get(&path)?;
    let records = match kind {
        Kind::Node => &answer["records"],
        Kind::Profile => &answer["profiles"],
    };
    let merged = records
        .as_object()
        .map(|all| {
            all.iter()
                .map(|(id, record)| {
                    let mut node: Node = serde_json::from_value(record.clone())
                        .with_context(|| format!("the server's record of {id}"))?;
                    node.id.clone_from(id);
                    Ok(node)
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    print_list(kind, &merged, args);
    Ok(())
}

fn show_remote(remote: &Remote, kind: Kind, name: &str, json: bool) -> anyhow::Result<()> {
    let shown: serde_json::Value = remote.get(&format!(
        "{}/{}",
        collection(kind),
        names_query(&[name.to_owned()])
    ))?;
    let mut record: Node = serde_json::from_value(shown["merged"].clone())
        .with_context(|| format!("the server's record of {name}"))?;
    record.id = name.to_owned();
    let view = RecordView {
        record,
        applied: serde_json::from_value(shown["profiles_applied"].clone()).unwrap_or_default(),
        missing: serde_json::from_value(shown["profiles_missing"].clone()).unwrap_or_default(),
    };
    print_show(kind, name, view, json);
    Ok(())
}
