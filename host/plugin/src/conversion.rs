//! Conversions between `wulf-core` types and the generated WIT types, so generated types never
//! leave this crate.

use std::collections::BTreeMap;

use wulf_core::address::{IPV4_RULE, IPV6_RULE, NETMASK_RULE};
use wulf_core::extension::{EntryAction, EntryKind, ImageEntry};
use wulf_core::hwaddr::HWADDR_RULE;
use wulf_core::node::{Disk, Filesystem, Ipmi, Kernel, NetDevice, Partition, Tags};
use wulf_core::record_error::{RecordKind, ValidationError};
use wulf_core::{FileContent, Node, OverlayFile, Server};

use crate::bindings::transform::exports::wulf::plugin::transform as tx;
use crate::bindings::wit;

fn tags_to_wit(tags: &Tags) -> Vec<wit::Tag> {
    tags.iter()
        .map(|(key, value)| wit::Tag {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

fn tags_from_wit(tags: Vec<wit::Tag>) -> Tags {
    tags.into_iter().map(|t| (t.key, t.value)).collect()
}

pub(crate) fn server_to_wit(server: &Server) -> wit::Server {
    wit::Server {
        hostname: server.hostname.clone(),
        ipaddr: server.ipaddr.clone(),
        netmask: server.netmask.clone(),
        network: server.network.clone(),
        ipaddr6: server.ipaddr6.clone(),
        prefixlen6: server.prefixlen6,
        port: server.port,
    }
}

pub(crate) fn node_to_wit(node: &Node) -> wit::Node {
    let primary = node.primary_network();
    wit::Node {
        id: node.id.clone(),
        comment: node.comment.clone(),
        cluster: node.cluster.clone(),
        profiles: node.profiles.clone(),
        image: node.image.clone(),
        ipxe_template: node.ipxe_template.clone(),
        system_overlays: node.system_overlays.clone(),
        runtime_overlays: node.runtime_overlays.clone(),
        init: node.init.clone(),
        root: node.root.clone(),
        kernel: wit::Kernel {
            version: node.kernel.version.clone(),
            args: node.kernel.args.clone(),
        },
        primary_network: node.primary_network.clone(),
        network_devices: node
            .network_devices
            .iter()
            .map(|(name, d)| wit::NetDevice {
                name: name.clone(),
                device_type: d.device_type.clone(),
                onboot: d.onboot,
                device: d.device.clone(),
                hwaddr: d.hwaddr.map(|v| v.to_string()),
                ipaddr: d.ipaddr.map(|v| v.to_string()),
                netmask: d.netmask.map(|v| v.to_string()),
                gateway: d.gateway.map(|v| v.to_string()),
                ipaddr6: d.ipaddr6.map(|v| v.to_string()),
                prefixlen6: d.prefixlen6,
                gateway6: d.gateway6.map(|v| v.to_string()),
                mtu: d.mtu,
                primary: Some(name.as_str()) == primary,
                tags: tags_to_wit(&d.tags),
            })
            .collect(),
        ipmi: wit::Ipmi {
            username: node.ipmi.username.clone(),
            password: node.ipmi.password.as_ref().map(|p| p.expose().to_owned()),
            ipaddr: node.ipmi.ipaddr.map(|v| v.to_string()),
            gateway: node.ipmi.gateway.map(|v| v.to_string()),
            netmask: node.ipmi.netmask.map(|v| v.to_string()),
            port: node.ipmi.port,
            interface: node.ipmi.interface.clone(),
            escape_char: node.ipmi.escape_char.clone(),
            write: node.ipmi.write,
            template: node.ipmi.template.clone(),
            tags: tags_to_wit(&node.ipmi.tags),
        },
        tags: tags_to_wit(&node.tags),
        resources: node
            .resources
            .iter()
            .map(|(name, value)| wit::Resource {
                name: name.clone(),
                json: value.to_string(),
            })
            .collect(),
        disks: node
            .disks
            .iter()
            .map(|(device, disk)| wit::Disk {
                device: device.clone(),
                wipe_table: disk.wipe_table.unwrap_or(false),
                partitions: disk
                    .partitions
                    .iter()
                    .map(|(name, p)| wit::Partition {
                        name: name.clone(),
                        number: p.number,
                        size_mib: p.size_mib,
                        start_mib: p.start_mib,
                        type_guid: p.type_guid.clone(),
                        guid: p.guid.clone(),
                        wipe_partition_entry: p.wipe_partition_entry.unwrap_or(false),
                        should_exist: p.should_exist.unwrap_or(false),
                        resize: p.resize.unwrap_or(false),
                    })
                    .collect(),
            })
            .collect(),
        filesystems: node
            .filesystems
            .iter()
            .map(|(device, fs)| wit::Filesystem {
                device: device.clone(),
                format: fs.format.clone(),
                path: fs.path.clone(),
                wipe_filesystem: fs.wipe_filesystem.unwrap_or(false),
                label: fs.label.clone(),
                uuid: fs.uuid.clone(),
                options: fs.options.clone(),
                mount_options: fs.mount_options.clone(),
            })
            .collect(),
        asset_key: node.asset_key.clone(),
        discoverable: node.discoverable.unwrap_or(false),
    }
}

/// The record whose addresses are being read, for naming it when one does not parse.
struct Reading<'a> {
    kind: RecordKind,
    id: &'a str,
}

impl Reading<'_> {
    /// An address a backend sent as text; one that does not parse refuses the record, naming
    /// `field` (made only then).
    fn address<T: std::str::FromStr>(
        &self,
        field: impl FnOnce() -> String,
        value: Option<String>,
        rule: &str,
    ) -> Result<Option<T>, ValidationError> {
        let Some(text) = value else { return Ok(None) };
        match text.parse() {
            Ok(parsed) => Ok(Some(parsed)),
            Err(_) => Err(ValidationError {
                kind: self.kind,
                id: self.id.to_owned(),
                field: field(),
                value: text,
                reason: rule.to_owned(),
            }),
        }
    }
}

/// A node or profile record from a backend, its addresses parsed; a record with one that does
/// not parse is refused, naming the field. Bad resource JSON is kept as a string rather than
/// dropped.
pub(crate) fn node_from_wit(kind: RecordKind, node: wit::Node) -> Result<Node, ValidationError> {
    let reading = Reading { kind, id: &node.id };
    let primary = node
        .network_devices
        .iter()
        .find(|d| d.primary)
        .map(|d| d.name.clone());
    let mut network_devices = wulf_core::sorted_map::SortedMap::new();
    for d in node.network_devices {
        let name = d.name;
        let field = |field: &'static str| {
            let name = &name;
            move || format!("network-devices.{name}.{field}")
        };
        let device = NetDevice {
            device_type: d.device_type,
            onboot: d.onboot,
            device: d.device,
            hwaddr: reading.address(field("hwaddr"), d.hwaddr, HWADDR_RULE)?,
            ipaddr: reading.address(field("ipaddr"), d.ipaddr, IPV4_RULE)?,
            netmask: reading.address(field("netmask"), d.netmask, NETMASK_RULE)?,
            gateway: reading.address(field("gateway"), d.gateway, IPV4_RULE)?,
            ipaddr6: reading.address(field("ipaddr6"), d.ipaddr6, IPV6_RULE)?,
            prefixlen6: d.prefixlen6,
            gateway6: reading.address(field("gateway6"), d.gateway6, IPV6_RULE)?,
            mtu: d.mtu,
            tags: tags_from_wit(d.tags),
        };
        network_devices.insert(name, device);
    }
    let i = node.ipmi;
    let ipmi = Ipmi {
        ipaddr: reading.address(|| "ipmi.ipaddr".into(), i.ipaddr, IPV4_RULE)?,
        gateway: reading.address(|| "ipmi.gateway".into(), i.gateway, IPV4_RULE)?,
        netmask: reading.address(|| "ipmi.netmask".into(), i.netmask, NETMASK_RULE)?,
        username: i.username,
        password: i.password.map(wulf_core::secret::Secret::new),
        port: i.port,
        interface: i.interface,
        escape_char: i.escape_char,
        write: i.write,
        template: i.template,
        tags: tags_from_wit(i.tags),
        ..Ipmi::default()
    };
    Ok(Node {
        id: node.id,
        profiles: node.profiles,
        comment: node.comment,
        cluster: node.cluster,
        image: node.image,
        ipxe_template: node.ipxe_template,
        system_overlays: node.system_overlays,
        runtime_overlays: node.runtime_overlays,
        init: node.init,
        root: node.root,
        kernel: Kernel {
            version: node.kernel.version,
            args: node.kernel.args,
        },
        primary_network: node.primary_network.or(primary),
        network_devices,
        ipmi,
        tags: tags_from_wit(node.tags),
        resources: node
            .resources
            .into_iter()
            .map(|r| {
                let value =
                    serde_json::from_str(&r.json).unwrap_or(serde_json::Value::String(r.json));
                (r.name, value)
            })
            .collect(),
        disks: node
            .disks
            .into_iter()
            .map(|d| {
                let partitions: BTreeMap<String, Partition> = d
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let partition = Partition {
                            number: p.number,
                            size_mib: p.size_mib,
                            start_mib: p.start_mib,
                            type_guid: p.type_guid,
                            guid: p.guid,
                            wipe_partition_entry: Some(p.wipe_partition_entry),
                            should_exist: Some(p.should_exist),
                            resize: Some(p.resize),
                        };
                        (p.name, partition)
                    })
                    .collect();
                (
                    d.device,
                    Disk {
                        wipe_table: Some(d.wipe_table),
                        partitions,
                    },
                )
            })
            .collect(),
        filesystems: node
            .filesystems
            .into_iter()
            .map(|f| {
                let fs = Filesystem {
                    format: f.format,
                    path: f.path,
                    wipe_filesystem: Some(f.wipe_filesystem),
                    label: f.label,
                    uuid: f.uuid,
                    options: f.options,
                    mount_options: f.mount_options,
                };
                (f.device, fs)
            })
            .collect(),
        asset_key: node.asset_key,
        discoverable: node.discoverable.then_some(true),
    })
}

pub(crate) fn file_from_wit(file: wit::FileEntry) -> OverlayFile {
    OverlayFile {
        path: file.path,
        mode: file.mode,
        uid: file.uid,
        gid: file.gid,
        content: match file.content {
            wit::FileContent::Regular(bytes) => FileContent::Regular(bytes),
            wit::FileContent::Directory => FileContent::Directory,
            wit::FileContent::Symlink(target) => FileContent::Symlink(target),
        },
    }
}

pub(crate) fn entry_to_wit(entry: &ImageEntry) -> tx::Entry {
    tx::Entry {
        path: entry.path.clone(),
        kind: match &entry.kind {
            EntryKind::Regular => tx::EntryKind::Regular,
            EntryKind::Directory => tx::EntryKind::Directory,
            EntryKind::Symlink(t) => tx::EntryKind::Symlink(t.clone()),
            EntryKind::Hardlink(t) => tx::EntryKind::Hardlink(t.clone()),
            EntryKind::CharDevice { major, minor } => tx::EntryKind::CharDevice((*major, *minor)),
            EntryKind::BlockDevice { major, minor } => tx::EntryKind::BlockDevice((*major, *minor)),
            EntryKind::Fifo => tx::EntryKind::Fifo,
            EntryKind::Socket => tx::EntryKind::Socket,
        },
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        mtime: entry.mtime,
        size: entry.size,
    }
}

pub(crate) fn action_from_wit(action: tx::Action) -> EntryAction {
    match action {
        tx::Action::Keep => EntryAction::Keep,
        tx::Action::Drop => EntryAction::Drop,
        tx::Action::WantContent => EntryAction::WantContent,
        tx::Action::Replace(file) => EntryAction::Replace(file_from_wit(file)),
    }
}

/// The plugin's own words for an error it returned.
pub(crate) fn error_message(error: wit::PluginError) -> String {
    match error {
        wit::PluginError::Config(m) => format!("bad configuration: {m}"),
        wit::PluginError::InvalidInput(m) => format!("invalid input: {m}"),
        wit::PluginError::Failed(m) => m,
    }
}
