//! `fstab`: the node's `/etc/fstab`, as Warewulf's overlay writes it: the base mounts of a
//! diskless root, the node's native filesystems as `noauto` (its disk overlays mount them),
//! every entry of `resources.fstab`, and the NFS exports of the provisioning host from the
//! plugin config.

use wulf_sdk::{File, FileEntry, Node, OverlayGenerator, PluginError, Server};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default)]
    nfs_exports: Vec<Export>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Export {
    path: String,
    #[serde(default)]
    mountpoint: Option<String>,
    #[serde(default)]
    options: Option<String>,
}

/// One `resources.fstab` entry, with Warewulf's defaults.
#[derive(serde::Deserialize)]
struct Entry {
    spec: String,
    file: String,
    #[serde(default = "nfs")]
    vfstype: String,
    #[serde(default = "defaults")]
    mntops: String,
    #[serde(default)]
    freq: u32,
    #[serde(default)]
    passno: u32,
}

fn nfs() -> String {
    "nfs".into()
}

fn defaults() -> String {
    "defaults".into()
}

const BASE: &str = "rootfs / tmpfs defaults 0 0\ndevpts /dev/pts devpts gid=5,mode=620 0 0\ntmpfs /run/shm tmpfs defaults 0 0\nsysfs /sys sysfs defaults 0 0\nproc /proc proc defaults 0 0\n";

pub struct Fstab;

impl OverlayGenerator for Fstab {
    fn generate(node: &Node, server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        let config: Config = wulf_sdk::config()?;
        let mut text = String::from("# /etc/fstab written by wulf (fstab overlay)\n");
        text.push_str(BASE);
        for fs in &node.filesystems {
            let (Some(path), Some(format)) = (&fs.path, &fs.format) else {
                continue;
            };
            let options = fs
                .mount_options
                .clone()
                .unwrap_or_else(|| "defaults".into());
            text.push_str(&format!(
                "{} {path} {format} {options},noauto 0 0\n",
                fs.device
            ));
        }
        if let Some(entries) = node.resource("fstab") {
            let entries: Vec<Entry> = serde_json::from_value(entries).map_err(|e| {
                PluginError::InvalidInput(format!("node {}: resources.fstab: {e}", node.id))
            })?;
            for e in entries {
                text.push_str(&format!(
                    "{} {} {} {} {} {}\n",
                    e.spec, e.file, e.vfstype, e.mntops, e.freq, e.passno
                ));
            }
        }
        if !config.nfs_exports.is_empty() {
            let host = server
                .ipaddr
                .clone()
                .unwrap_or_else(|| server.hostname.clone());
            for export in &config.nfs_exports {
                let mountpoint = export.mountpoint.as_deref().unwrap_or(&export.path);
                let options = export.options.as_deref().unwrap_or("defaults");
                text.push_str(&format!(
                    "{host}:{} {mountpoint} nfs {options} 0 0\n",
                    export.path
                ));
            }
        }
        Ok(vec![File::text("/etc/fstab", text).into()])
    }
}

wulf_sdk::register_overlay_generator!(Fstab);

#[cfg(test)]
mod tests {
    use super::*;
    use wulf_sdk::Resource;

    #[test]
    fn base_resources_and_host_exports() {
        wulf_sdk::testing::set_config(
            serde_json::json!({"nfs-exports": [{"path": "/home"}, {"path": "/srv/apps", "mountpoint": "/apps", "options": "ro"}]}),
        );
        let mut node = Node::new("n1");
        node.resources = vec![Resource {
            name: "fstab".into(),
            json: r#"[{"spec": "nas:/scratch", "file": "/scratch"}]"#.into(),
        }];
        let mut server = Server::new("head", 9873);
        server.ipaddr = Some("10.0.0.254".into());
        let files = Fstab::generate(&node, &server).unwrap_or_else(|e| panic!("{e:?}"));
        let text = files[0].text().unwrap_or_default();
        assert!(text.contains("proc /proc proc defaults 0 0\n"));
        assert!(
            text.contains("nas:/scratch /scratch nfs defaults 0 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "10.0.0.254:/home /home nfs defaults 0 0\n10.0.0.254:/srv/apps /apps nfs ro 0 0\n"
            ),
            "{text}"
        );
        node.resources[0].json = r#"[{"file": "/x"}]"#.into();
        assert!(Fstab::generate(&node, &server).is_err());
    }
}
