//! `wwinit`: what the kernel runs first, as Warewulf's overlay of the same name renders it.
//!
//! - `/init` mounts `/proc`, `/sys`, `/dev` and `/run` when absent, reads `/warewulf/config`,
//!   runs `/warewulf/run-init`; with `root = "tmpfs"` (or `ramfs`) it first copies the root
//!   into a tmpfs and `switch_root`s to it, so the image can be swapped out.
//! - `/warewulf/run-init` runs `/warewulf/init.d/*` in lexical order, then execs the node's
//!   `init` (default `/sbin/init`, falling back to `/etc/init` and `/bin/init`).
//! - `/warewulf/config` holds the node's settings as shell variables (mode 0600: it carries
//!   the IPMI password).
//! - `/warewulf/init.d/20-loopback` brings `lo` up.

use wulf_sdk::{File, FileEntry, Node, OverlayGenerator, PluginError, Server};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default = "sixty")]
    reboot_after: u32,
}

fn sixty() -> u32 {
    60
}

pub struct Wwinit;

/// Single-quotes a value for `sh`.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

const INIT: &str = r#"#!/bin/sh
# wulf /init (rendered by the wwinit overlay). The kernel runs this from the initramfs.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

fail() {
    echo "wulf: $*" >&2
    if [ "${REBOOT_AFTER:-0}" -gt 0 ]; then
        echo "wulf: rebooting in ${REBOOT_AFTER} s" >&2
        sleep "$REBOOT_AFTER"
        echo b > /proc/sysrq-trigger
    fi
    exec /bin/sh
}

mountpoint -q /proc 2>/dev/null || { mkdir -p /proc && mount -t proc proc /proc; }
mountpoint -q /sys 2>/dev/null || { mkdir -p /sys && mount -t sysfs sysfs /sys; }
mountpoint -q /dev 2>/dev/null || { mkdir -p /dev && mount -t devtmpfs devtmpfs /dev; }
mkdir -p /dev/pts /run
mountpoint -q /dev/pts 2>/dev/null || mount -t devpts devpts /dev/pts
mountpoint -q /run 2>/dev/null || mount -t tmpfs -o mode=0755 tmpfs /run

[ -r /warewulf/config ] || fail "/warewulf/config is missing: was the system overlay sent?"
. /warewulf/config
echo "wulf: provisioning ${WWHOSTNAME} from image ${WWIMAGE:-?} (root: ${WWROOT})"

case "${WWROOT}" in
    initramfs|"")
        exec /warewulf/run-init
        ;;
    tmpfs|ramfs)
        mkdir -p /newroot
        if [ "${WWROOT}" = tmpfs ]; then
            mount -t tmpfs -o mpol=interleave,mode=0755 tmpfs /newroot || mount -t tmpfs -o mode=0755 tmpfs /newroot || fail "cannot mount a tmpfs on /newroot"
        else
            mount -t ramfs ramfs /newroot || fail "cannot mount a ramfs on /newroot"
        fi
        (cd / && tar -cf - --exclude ./proc --exclude ./sys --exclude ./dev --exclude ./run --exclude ./newroot .) | (cd /newroot && tar -xf -) || fail "copying the root into ${WWROOT} failed"
        mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/run
        for m in /proc /sys /dev /run; do mount --move "$m" "/newroot$m"; done
        exec switch_root /newroot /warewulf/run-init
        fail "switch_root failed"
        ;;
    *)
        fail "root ${WWROOT} is not supported: use initramfs, tmpfs or ramfs"
        ;;
esac
"#;

const RUN_INIT: &str = r#"#!/bin/sh
# wulf /warewulf/run-init: the node's init.d scripts, then its init.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
. /warewulf/config
hostname "${WWHOSTNAME}" 2>/dev/null
for script in /warewulf/init.d/*; do
    [ -f "$script" ] || continue
    echo "wulf: running ${script##*/}"
    sh "$script" || echo "wulf: ${script##*/} failed ($?)" >&2
done
for init in "${WWINIT}" /sbin/init /etc/init /bin/init; do
    if [ -n "$init" ] && [ -x "$init" ]; then
        exec "$init"
    fi
done
echo "wulf: no init found (tried ${WWINIT} /sbin/init /etc/init /bin/init)" >&2
exec /bin/sh
"#;

const LOOPBACK: &str = "#!/bin/sh\n# Bring up the loopback interface.\nip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up\n";

impl OverlayGenerator for Wwinit {
    fn generate(node: &Node, server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        let config: Config = wulf_sdk::config()?;
        let root = node.root.clone().unwrap_or_else(|| "initramfs".into());
        let primary = node.primary_device();
        let ipmi = &node.ipmi;
        let mut vars = vec![
            ("WWHOSTNAME", Some(node.id.clone())),
            ("WWIMAGE", node.image.clone()),
            ("WWROOT", Some(root)),
            (
                "WWINIT",
                Some(node.init.clone().unwrap_or_else(|| "/sbin/init".into())),
            ),
            ("WWCLUSTER", node.cluster.clone()),
            ("WWIPADDR", primary.and_then(|d| d.ipaddr.clone())),
            ("WWNETMASK", primary.and_then(|d| d.netmask.clone())),
            ("WWGATEWAY", primary.and_then(|d| d.gateway.clone())),
            ("WWHWADDR", primary.and_then(|d| d.hwaddr.clone())),
            (
                "WWSERVER",
                server
                    .ipaddr
                    .clone()
                    .or_else(|| Some(server.hostname.clone())),
            ),
            ("WWSERVERPORT", Some(server.port.to_string())),
            ("WWIPMI_IPADDR", ipmi.ipaddr.clone()),
            ("WWIPMI_NETMASK", ipmi.netmask.clone()),
            ("WWIPMI_GATEWAY", ipmi.gateway.clone()),
            ("WWIPMI_USER", ipmi.username.clone()),
            ("WWIPMI_PASSWORD", ipmi.password.clone()),
            ("WWIPMI_WRITE", ipmi.write.map(|w| w.to_string())),
            ("REBOOT_AFTER", Some(config.reboot_after.to_string())),
        ];
        vars.retain(|(_, v)| v.is_some());
        let mut text = String::from("# wulf node settings (wwinit overlay)\n");
        for (key, value) in vars {
            text.push_str(&format!(
                "{key}={}\n",
                quote(value.as_deref().unwrap_or_default())
            ));
        }
        Ok(vec![
            File::text("/init", INIT).mode(0o755).into(),
            File::dir("/warewulf").mode(0o755).into(),
            File::dir("/warewulf/init.d").mode(0o755).into(),
            File::text("/warewulf/config", text).mode(0o600).into(),
            File::text("/warewulf/run-init", RUN_INIT)
                .mode(0o755)
                .into(),
            File::symlink("/warewulf/wwprescripts", "run-init").into(),
            File::text("/warewulf/init.d/20-loopback", LOOPBACK)
                .mode(0o755)
                .into(),
        ])
    }
}

wulf_sdk::register_overlay_generator!(Wwinit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_quotes_values_and_skips_unset_ones() {
        wulf_sdk::testing::set_config(serde_json::json!({}));
        let mut node = Node::new("n1");
        node.image = Some("rocky's".into());
        node.root = Some("tmpfs".into());
        let files =
            Wwinit::generate(&node, &Server::new("head", 9873)).unwrap_or_else(|e| panic!("{e:?}"));
        let config = files
            .iter()
            .find(|f| f.path == "/warewulf/config")
            .and_then(|f| f.text())
            .unwrap_or_default();
        assert!(config.contains("WWHOSTNAME='n1'\n"), "{config}");
        assert!(config.contains(r"WWIMAGE='rocky'\''s'"), "{config}");
        assert!(config.contains("WWROOT='tmpfs'\n"), "{config}");
        assert!(!config.contains("WWIPMI_PASSWORD"), "{config}");
        let init = files
            .iter()
            .find(|f| f.path == "/init")
            .unwrap_or_else(|| panic!("no /init"));
        assert_eq!(init.mode, 0o755);
    }
}
