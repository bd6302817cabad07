//! `wulf node ...` and `wulf profile ...`: one implementation, since a profile is a node record
//! without the node-only fields.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;
use wulf_core::hostlist;
use wulf_core::inventory::InventoryError;
use wulf_core::{Inventory, InventoryStore, Node};

use super::node_fields::{FieldArgs, NodeOnlyArgs};
use crate::context::Context;
use crate::table;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Node,
    Profile,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Profile => "profile",
        }
    }

    fn records(self, inventory: &Inventory) -> &BTreeMap<String, Node> {
        match self {
            Kind::Node => &inventory.nodes,
            Kind::Profile => &inventory.profiles,
        }
    }

    fn records_mut(self, inventory: &mut Inventory) -> &mut BTreeMap<String, Node> {
        match self {
            Kind::Node => &mut inventory.nodes,
            Kind::Profile => &mut inventory.profiles,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
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
    Import { file: std::path::PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
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
pub struct SetTarget {
    /// Names or hostlists
    names: Vec<String>,
    /// Every record of the kind
    #[arg(short, long)]
    all: bool,
}

#[derive(Debug, clap::Args)]
pub struct NamesArgs {
    /// Names or hostlists
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Names or hostlists
    #[arg(required = true)]
    names: Vec<String>,
    /// Do not ask
    #[arg(short, long)]
    yes: bool,
}

#[derive(Debug, clap::Args)]
pub struct UnsetArgs {
    /// Names or hostlists
    #[arg(required = true)]
    names: Vec<String>,
    #[arg(short, long = "field", required = true, value_name = "FIELD")]
    fields: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
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
}

pub fn run_node(ctx: &Context, command: NodeCommand) -> anyhow::Result<()> {
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
        NodeCommand::Import { file } => import(ctx, &file),
    }
}

pub fn run_profile(ctx: &Context, command: ProfileCommand) -> anyhow::Result<()> {
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

fn expand_all(patterns: &[String]) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for pattern in patterns {
        for name in hostlist::expand(pattern)? {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

fn store(ctx: &Context) -> InventoryStore {
    InventoryStore::new(&ctx.state)
}

fn add(
    ctx: &Context,
    kind: Kind,
    patterns: &[String],
    fields: &FieldArgs,
    node_only: Option<&NodeOnlyArgs>,
) -> anyhow::Result<()> {
    let names = expand_all(patterns)?;
    store(ctx).update(|inventory| -> anyhow::Result<()> {
        let default_profile = kind == Kind::Node
            && fields.profiles.is_none()
            && inventory.profiles.contains_key("default");
        for (offset, name) in names.iter().enumerate() {
            if kind.records(inventory).contains_key(name) {
                bail!(
                    "{} `{name}` already exists (change it with `wulf {} set`)",
                    kind.noun(),
                    kind.noun()
                );
            }
            let mut node = Node::new(name.clone());
            if default_profile {
                node.profiles = vec!["default".into()];
            }
            fields.apply(&mut node, Some(offset))?;
            if let Some(node_only) = node_only {
                node_only.apply(&mut node);
            }
            kind.records_mut(inventory).insert(name.clone(), node);
        }
        Ok(())
    })?;
    println!(
        "added {} {}(s): {}",
        names.len(),
        kind.noun(),
        summarize(&names)
    );
    Ok(())
}

fn summarize(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [first, .., last] => format!("{first} .. {last}"),
    }
}

fn set(
    ctx: &Context,
    kind: Kind,
    target: &SetTarget,
    fields: &FieldArgs,
    node_only: Option<&NodeOnlyArgs>,
) -> anyhow::Result<()> {
    let (patterns, all) = (&target.names, target.all);
    if patterns.is_empty() && !all {
        bail!(
            "which {}s? name them (hostlists work) or pass --all",
            kind.noun()
        );
    }
    let count = store(ctx).update(|inventory| -> anyhow::Result<usize> {
        let names = if all {
            kind.records(inventory).keys().cloned().collect()
        } else {
            expand_all(patterns)?
        };
        for name in &names {
            let node = kind.records_mut(inventory).get_mut(name).with_context(|| {
                format!(
                    "{} `{name}` does not exist (add it with `wulf {} add`)",
                    kind.noun(),
                    kind.noun()
                )
            })?;
            fields.apply(node, None)?;
            if let Some(node_only) = node_only {
                node_only.apply(node);
            }
        }
        Ok(names.len())
    })?;
    println!("updated {count} {}(s)", kind.noun());
    Ok(())
}

fn delete(ctx: &Context, kind: Kind, args: &DeleteArgs) -> anyhow::Result<()> {
    let (names, yes) = (expand_all(&args.names)?, args.yes);
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
            summarize(&names)
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("nothing deleted");
        }
    }
    store(ctx).update(|inventory| -> anyhow::Result<()> {
        for name in &names {
            if !kind.records(inventory).contains_key(name) {
                bail!("{} `{name}` does not exist", kind.noun());
            }
            if kind == Kind::Profile {
                let users: Vec<&str> = inventory
                    .nodes
                    .iter()
                    .chain(&inventory.profiles)
                    .filter(|(_, n)| n.profiles.iter().any(|p| p.trim_start_matches('~') == name))
                    .map(|(id, _)| id.as_str())
                    .filter(|id| !names.iter().any(|n| n == id))
                    .collect();
                if !users.is_empty() {
                    bail!(
                        "profile `{name}` is used by {}; take it off them first",
                        users.join(", ")
                    );
                }
            }
        }
        for name in &names {
            kind.records_mut(inventory).remove(name);
        }
        Ok(())
    })?;
    println!(
        "deleted {} {}(s): {}",
        names.len(),
        kind.noun(),
        summarize(&names)
    );
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
    let inventory = ctx.inventory()?;
    let wanted = expand_all(&args.patterns)?;
    let merged: Vec<Node> = kind
        .records(&inventory)
        .values()
        .filter(|n| wanted.is_empty() || wanted.contains(&n.id))
        .map(|n| match kind {
            Kind::Node => wulf_core::merge::merge(n, &inventory.profiles).node,
            Kind::Profile => n.clone(),
        })
        .collect();
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> = merged
            .iter()
            .map(|n| (n.id.clone(), record_json(n)))
            .collect();
        table::print_json(&serde_json::Value::Object(map));
        return Ok(());
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
                        d.hwaddr.clone().unwrap_or_default(),
                        d.ipaddr.clone().unwrap_or_default(),
                        d.gateway.clone().unwrap_or_default(),
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
                    i.ipaddr.clone().unwrap_or_default(),
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
                    .and_then(|d| d.ipaddr.clone());
                vec![
                    n.id.clone(),
                    n.profiles.join(","),
                    network.unwrap_or_default(),
                ]
            })
            .collect();
        table::print(&[&format!("{noun} name"), "profiles", "network"], rows);
    }
    Ok(())
}

fn show(ctx: &Context, kind: Kind, name: &str, json: bool) -> anyhow::Result<()> {
    let inventory = ctx.inventory()?;
    let record = kind
        .records(&inventory)
        .get(name)
        .with_context(|| format!("{} `{name}` does not exist", kind.noun()))?;
    let (record, applied, missing) = match kind {
        Kind::Node => {
            let merged = inventory
                .merged(name)
                .map_err(|e: InventoryError| anyhow::anyhow!(e))?;
            (merged.node, merged.applied, merged.missing)
        }
        Kind::Profile => (record.clone(), Vec::new(), Vec::new()),
    };
    if json {
        let mut value = record_json(&record);
        value["applied-profiles"] = json!(applied);
        table::print_json(&value);
        return Ok(());
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
    Ok(())
}

fn export(ctx: &Context, patterns: &[String], json: bool) -> anyhow::Result<()> {
    let inventory = store(ctx).load()?;
    let wanted = expand_all(patterns)?;
    if let Some(missing) = wanted.iter().find(|n| !inventory.nodes.contains_key(*n)) {
        bail!("node `{missing}` does not exist");
    }
    let selected: BTreeMap<&String, &Node> = inventory
        .nodes
        .iter()
        .filter(|(id, _)| wanted.is_empty() || wanted.contains(id))
        .collect();
    if json {
        table::print_json(&serde_json::to_value(&selected)?);
    } else {
        print!("{}", serde_norway::to_string(&selected)?);
    }
    Ok(())
}

/// Lays `incoming` over `existing`: objects merge key by key, anything else is replaced.
fn overlay_json(existing: &mut serde_json::Value, incoming: serde_json::Value) {
    match (existing, incoming) {
        (serde_json::Value::Object(existing), serde_json::Value::Object(incoming)) => {
            for (key, value) in incoming {
                overlay_json(
                    existing.entry(key).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
        (existing, incoming) => *existing = incoming,
    }
}

fn import(ctx: &Context, file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let incoming: BTreeMap<String, serde_json::Value> = serde_norway::from_str(&text)
        .with_context(|| format!("{}: expected a map of node name to fields", file.display()))?;
    let (mut created, mut updated) = (0, 0);
    store(ctx).update(|inventory| -> anyhow::Result<()> {
        for (id, fields) in incoming {
            let mut value = match inventory.nodes.get(&id) {
                Some(node) => {
                    updated += 1;
                    serde_json::to_value(node)?
                }
                None => {
                    created += 1;
                    json!({})
                }
            };
            overlay_json(&mut value, fields);
            let mut node: Node = serde_json::from_value(value)
                .with_context(|| format!("{}: node `{id}`", file.display()))?;
            node.id = id.clone();
            inventory.nodes.insert(id, node);
        }
        Ok(())
    })?;
    println!(
        "imported {} node(s): {created} created, {updated} updated",
        created + updated
    );
    Ok(())
}

fn show_sources(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let inventory = ctx.inventory()?;
    let node = inventory
        .nodes
        .get(name)
        .with_context(|| format!("node `{name}` does not exist"))?;
    let rows = wulf_core::merge::field_sources(node, &inventory.profiles)
        .into_iter()
        .map(|f| vec![name.to_string(), f.field, f.source.to_string(), f.value])
        .collect();
    table::print(&["node", "field", "profile", "value"], rows);
    Ok(())
}

/// Removes a dotted path from a record's JSON form; `false` when it was not set.
fn remove_path(value: &mut serde_json::Value, path: &str) -> bool {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (
            parent
                .split('.')
                .try_fold(&mut *value, |v, key| v.get_mut(key)),
            last,
        ),
        None => (Some(value), path),
    };
    parent
        .and_then(|p| p.as_object_mut())
        .and_then(|map| map.remove(last))
        .is_some()
}

fn unset(ctx: &Context, kind: Kind, args: &UnsetArgs) -> anyhow::Result<()> {
    let (names, fields) = (expand_all(&args.names)?, &args.fields);
    store(ctx).update(|inventory| -> anyhow::Result<()> {
        for name in &names {
            let node = kind
                .records_mut(inventory)
                .get_mut(name)
                .with_context(|| format!("{} `{name}` does not exist", kind.noun()))?;
            let mut value = serde_json::to_value(&*node)?;
            for field in fields {
                if !remove_path(&mut value, field) {
                    bail!(
                        "{} `{name}` has no `{field}` set (see `wulf {} show {name}`)",
                        kind.noun(),
                        kind.noun()
                    );
                }
            }
            let mut cleared: Node = serde_json::from_value(value)?;
            cleared.id = name.clone();
            *node = cleared;
        }
        Ok(())
    })?;
    println!(
        "unset {} on {} {}(s)",
        fields.join(", "),
        names.len(),
        kind.noun()
    );
    Ok(())
}

fn edit(ctx: &Context, kind: Kind, patterns: &[String]) -> anyhow::Result<()> {
    let names = expand_all(patterns)?;
    let inventory = store(ctx).load()?;
    let mut selected = BTreeMap::new();
    for name in &names {
        let node = kind
            .records(&inventory)
            .get(name)
            .with_context(|| format!("{} `{name}` does not exist", kind.noun()))?;
        selected.insert(name.clone(), node.clone());
    }
    let original = toml::to_string(&selected)?;
    let file = ctx
        .state
        .root()
        .join(format!(".edit-{}.toml", std::process::id()));
    std::fs::create_dir_all(ctx.state.root())?;
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
    let mut records: BTreeMap<String, Node> = toml::from_str(&edited)
        .map_err(|e| anyhow::anyhow!("the edited file is not valid; nothing changed:\n{e}"))?;
    if toml::to_string(&records)? == original {
        println!("no changes");
        return Ok(());
    }
    store(ctx).update(|inventory| -> anyhow::Result<()> {
        let records_of_kind = kind.records_mut(inventory);
        for name in &names {
            records_of_kind.remove(name);
        }
        for (name, mut node) in std::mem::take(&mut records) {
            node.id = name.clone();
            records_of_kind.insert(name, node);
        }
        Ok(())
    })?;
    println!("updated {} {}(s)", names.len(), kind.noun());
    Ok(())
}
