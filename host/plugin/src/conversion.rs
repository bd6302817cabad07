//! Conversions between `wulf-core` types and the generated WIT types, so generated types never
//! leave this crate.

use std::collections::BTreeMap;

use wulf_core::extension::{EntryAction, EntryKind, ImageEntry};
use wulf_core::node::{Disk, Filesystem, Ipmi, Kernel, NetDevice, Partition, Tags};
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
                hwaddr: d.hwaddr.clone(),
                ipaddr: d.ipaddr.clone(),
                netmask: d.netmask.clone(),
                gateway: d.gateway.clone(),
                ipaddr6: d.ipaddr6.clone(),
                prefixlen6: d.prefixlen6,
                gateway6: d.gateway6.clone(),
                mtu: d.mtu,
                primary: Some(name.as_str()) == primary,
                tags: tags_to_wit(&d.tags),
            })
            .collect(),
        ipmi: wit::Ipmi {
            username: node.ipmi.username.clone(),
            password: node.ipmi.password.clone(),
            ipaddr: node.ipmi.ipaddr.clone(),
            gateway: node.ipmi.gateway.clone(),
            netmask: node.ipmi.netmask.clone(),
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

/// A node record from a backend. Bad resource JSON is kept as a string rather than dropped.
pub(crate) fn node_from_wit(node: wit::Node) -> Node {
    let primary = node
        .network_devices
        .iter()
        .find(|d| d.primary)
        .map(|d| d.name.clone());
    Node {
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
        network_devices: node
            .network_devices
            .into_iter()
            .map(|d| {
                let device = NetDevice {
                    device_type: d.device_type,
                    onboot: d.onboot,
                    device: d.device,
                    hwaddr: d.hwaddr,
                    ipaddr: d.ipaddr,
                    netmask: d.netmask,
                    gateway: d.gateway,
                    ipaddr6: d.ipaddr6,
                    prefixlen6: d.prefixlen6,
                    gateway6: d.gateway6,
                    mtu: d.mtu,
                    tags: tags_from_wit(d.tags),
                };
                (d.name, device)
            })
            .collect(),
        ipmi: Ipmi {
            username: node.ipmi.username,
            password: node.ipmi.password,
            ipaddr: node.ipmi.ipaddr,
            gateway: node.ipmi.gateway,
            netmask: node.ipmi.netmask,
            port: node.ipmi.port,
            interface: node.ipmi.interface,
            escape_char: node.ipmi.escape_char,
            write: node.ipmi.write,
            template: node.ipmi.template,
            tags: tags_from_wit(node.ipmi.tags),
        },
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
    }
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
