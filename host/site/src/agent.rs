//! The node agent's side of the site: the key every node's credential is derived from, the
//! built-in `agent` overlay that ships `wulf-agent` with its unit, configuration and credential,
//! and the rule that says a node needs a reboot.
//!
//! A node's credential is `HMAC(agent key, node id)` ([`wulf_agent::proto::Credential`]): the
//! server stores nothing per node and can check any node's request. It reaches the node in its
//! system overlay, readable by root only. Whoever can fetch a node's system overlay (its MAC, and
//! its asset key when one is set) can act as that node towards the agent endpoint, as in
//! Warewulf; a credential never crosses the network after that, so watching the network later
//! gives nothing, and no node can use its own credential to read another node's files. In
//! secure mode agents also connect from privileged ports, as Warewulf's rule for runtime
//! overlays has it.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::Digest as _;
use wulf_agent::proto::Credential;
use wulf_core::config::AgentConfig;
use wulf_core::extension::Shared;
use wulf_core::overlay_file::{FileContent, OverlayFile};
use wulf_core::{BootStage, ExtensionError, Node, OverlayGenerator, Provisioner, Server};

use crate::Site;
use crate::error::{Result, SiteError};

/// The built-in overlay's name, as overlay lists use it.
pub const AGENT_OVERLAY: &str = "agent";

/// A node tag listing the servers (`host:port`, comma-separated) its agent talks to, in order;
/// it overrides `[agent] servers` of the site configuration.
pub const AGENT_SERVERS_TAG: &str = "agent-servers";

/// The agent key, read once per process.
#[derive(Default)]
pub(crate) struct AgentKey(Mutex<Option<Arc<[u8]>>>);

impl Site {
    /// `<state>/keys/agent.key`, made (32 random bytes, root-only) when missing.
    pub fn agent_key(&self) -> Result<Arc<[u8]>> {
        let mut cached = self.agent_key.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = cached.as_ref() {
            return Ok(Arc::clone(key));
        }
        let path = self.agent_key_path();
        let key: Arc<[u8]> = match std::fs::read(&path) {
            Ok(key) if key.len() >= 32 => key.into(),
            Ok(_) => {
                return Err(SiteError::AgentKey {
                    path,
                    message: "it is shorter than 32 bytes; remove it to make a new one".into(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut random| random.read_exact(&mut key))
                    .and_then(|()| {
                        std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
                        wulf_core::atomic_file::write_atomic_mode(&path, &key, 0o600)
                    })
                    .map_err(|e| SiteError::AgentKey {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                tracing::info!("made the node agents' key {}", path.display());
                Arc::from(&key[..])
            }
            Err(e) => {
                return Err(SiteError::AgentKey {
                    path,
                    message: e.to_string(),
                });
            }
        };
        *cached = Some(Arc::clone(&key));
        Ok(key)
    }

    fn agent_key_path(&self) -> PathBuf {
        wulf_overlay::HostKeys::dir_in(self.state.root()).join("agent.key")
    }

    /// The credential of `node`.
    pub fn agent_credential(&self, node: &str) -> Result<Credential> {
        Ok(Credential::derive(&self.agent_key()?, node))
    }

    /// The built-in `agent` overlay generator.
    pub(crate) fn agent_overlay(&self) -> Result<AgentOverlay> {
        let key = self.agent_key()?;
        let config = self.config().agent.clone();
        let secure = self.config().server.secure;
        let identity = format!(
            "agent@{}:{}:{}:{:?}:{secure}",
            env!("CARGO_PKG_VERSION"),
            hex::encode(sha2::Sha256::digest(self.agent_binary)),
            hex::encode(sha2::Sha256::digest(&key)),
            config
        );
        Ok(AgentOverlay {
            binary: self.agent_binary,
            key,
            config,
            secure,
            identity: hex::encode(sha2::Sha256::digest(identity)),
        })
    }

    /// Which of the kernel, image and system overlay a node would get now differ from what it
    /// booted (`booted`: the ETags it was sent; an unknown one is empty and never counts).
    pub fn changed_since_boot(
        &self,
        node: &Node,
        booted: &[(BootStage, String)],
    ) -> Vec<BootStage> {
        booted
            .iter()
            .filter(|(_, etag)| !etag.is_empty())
            .filter(|(stage, etag)| {
                self.boot_file(node, *stage)
                    .map_or(true, |now| now.etag != *etag)
            })
            .map(|(stage, _)| *stage)
            .collect()
    }
}

/// `host:port` with a host of letters, digits, dots, dashes or colons (IPv6 in brackets).
fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && port.parse::<u16>().is_ok()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    })
}

/// The built-in overlay that runs `wulf-agent` on a node: the binary, its systemd unit (enabled)
/// and a fallback for images without systemd are the same for every node (one shared segment);
/// the configuration and the credential are the node's own.
pub(crate) struct AgentOverlay {
    binary: &'static [u8],
    key: Arc<[u8]>,
    config: AgentConfig,
    /// The server is in secure mode: agents connect from privileged ports.
    secure: bool,
    /// What the archives depend on: the binary, the key and the configuration.
    pub identity: String,
}

const UNIT: &str = "[Unit]
Description=wulf node agent: keeps the runtime overlay in sync with the provisioning host
Documentation=man:wulf(1)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/sbin/wulf-agent
Restart=always
RestartSec=5s

[Install]
WantedBy=multi-user.target
";

/// Run by `/warewulf/run-init` before the image's init: systemd starts the agent from its unit;
/// any other init gets it started here, in the background.
const FALLBACK: &str = "#!/bin/sh
# wulf: start wulf-agent on images whose init is not systemd (systemd starts it from its unit).
for init in /usr/lib/systemd/systemd /lib/systemd/systemd; do
    [ -x \"$init\" ] && exit 0
done
mkdir -p /var/log
# Detached, and deaf to the hangup of this shell (an ignored signal stays ignored across exec).
(trap '' HUP; exec /usr/sbin/wulf-agent) </dev/null >>/var/log/wulf-agent.log 2>&1 &
echo \"wulf: wulf-agent started (log in /var/log/wulf-agent.log)\"
";

fn file(path: &str, mode: u32, content: impl Into<Vec<u8>>) -> OverlayFile {
    OverlayFile {
        path: path.to_owned(),
        mode,
        uid: 0,
        gid: 0,
        content: FileContent::Regular(content.into()),
    }
}

impl AgentOverlay {
    /// `/etc/wulf/agent.conf` for `node`.
    fn config_text(&self, node: &Node) -> Result<String, ExtensionError> {
        let mut text = format!(
            "# wulf-agent's configuration for {0}, written by wulf's `agent` overlay.\nnode = {0}\n",
            node.id
        );
        // The node's own list (tag `agent-servers`), else the site's, else where it booted from.
        let from_tag: Vec<&str> = node
            .tags
            .get(AGENT_SERVERS_TAG)
            .map(|list| list.split([',', ' ']).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        if let Some(bad) = from_tag.iter().find(|s| !is_host_port(s)) {
            return Err(ExtensionError::Guest {
                plugin: AGENT_OVERLAY.into(),
                message: format!(
                    "node {}: tag {AGENT_SERVERS_TAG}: {bad:?} is not HOST:PORT (e.g. 10.0.0.1:9873)",
                    node.id
                ),
            });
        }
        let servers: Vec<&str> = if from_tag.is_empty() {
            self.config.servers.iter().map(String::as_str).collect()
        } else {
            from_tag
        };
        if servers.is_empty() {
            text.push_str("# The server the node booted from (wulf.server= on the kernel command line).\nserver = cmdline\n");
        }
        for server in servers {
            text.push_str(&format!("server = {server}\n"));
        }
        text.push_str(&format!(
            "credential = /etc/wulf/agent.credential\nwait = {}\njitter = {}\n",
            self.config.wait.as_secs(),
            self.config.jitter.as_secs()
        ));
        if self.secure {
            text.push_str("privileged-port = yes\n");
        }
        for hook in &self.config.hooks {
            text.push_str(&format!("hook = {hook}\n"));
        }
        Ok(text)
    }
}

impl OverlayGenerator for AgentOverlay {
    fn name(&self) -> &str {
        AGENT_OVERLAY
    }

    fn generate(&self, node: &Node, _server: &Server) -> Result<Vec<OverlayFile>, ExtensionError> {
        let credential = Credential::derive(&self.key, &node.id);
        Ok(vec![
            OverlayFile {
                path: "/etc/wulf".into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
                content: FileContent::Directory,
            },
            file("/etc/wulf/agent.conf", 0o644, self.config_text(node)?),
            file(
                "/etc/wulf/agent.credential",
                0o600,
                format!("{}\n", credential.to_hex()),
            ),
        ])
    }

    fn generate_shared(
        &self,
        _nodes: &std::sync::Arc<[Node]>,
        _server: &Server,
    ) -> Result<Vec<OverlayFile>, ExtensionError> {
        Ok(vec![
            file("/usr/sbin/wulf-agent", 0o755, self.binary),
            file("/etc/systemd/system/wulf-agent.service", 0o644, UNIT),
            OverlayFile {
                path: "/etc/systemd/system/multi-user.target.wants/wulf-agent.service".into(),
                mode: 0o777,
                uid: 0,
                gid: 0,
                content: FileContent::Symlink("/etc/systemd/system/wulf-agent.service".into()),
            },
            file("/warewulf/init.d/90-wulf-agent", 0o755, FALLBACK),
        ])
    }

    fn shared(&self) -> Shared {
        Shared::Config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(servers: &[&str]) -> AgentOverlay {
        AgentOverlay {
            binary: b"",
            key: Arc::from(&[1u8; 32][..]),
            config: AgentConfig {
                servers: servers.iter().map(|s| s.to_string()).collect(),
                ..AgentConfig::default()
            },
            secure: false,
            identity: String::new(),
        }
    }

    fn conf(overlay: &AgentOverlay, node: &Node) -> String {
        let files = overlay
            .generate(node, &Server::default())
            .unwrap_or_default();
        let conf = files
            .iter()
            .find(|f| f.path == "/etc/wulf/agent.conf")
            .map(|f| match &f.content {
                FileContent::Regular(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => String::new(),
            });
        conf.unwrap_or_default()
    }

    #[test]
    fn servers_come_from_the_node_then_the_site_then_the_boot() {
        let mut node = Node::new("n1");
        assert!(conf(&overlay(&[]), &node).contains("server = cmdline\n"));
        let site = overlay(&["10.0.0.1:9873", "10.0.0.2:9873"]);
        let text = conf(&site, &node);
        assert!(
            text.contains("server = 10.0.0.1:9873\nserver = 10.0.0.2:9873\n"),
            "{text}"
        );
        node.tags.insert(
            AGENT_SERVERS_TAG.into(),
            "10.9.0.1:9873, 10.9.0.2:9873".into(),
        );
        let text = conf(&site, &node);
        assert!(
            text.contains("server = 10.9.0.1:9873\nserver = 10.9.0.2:9873\n"),
            "{text}"
        );
        assert!(!text.contains("10.0.0.1"), "{text}");
        assert!(text.contains("hook = /etc/ssh/sshd_config*"), "{text}");
        node.tags.insert(
            AGENT_SERVERS_TAG.into(),
            "10.9.0.1:9873\ncredential = /tmp/x".into(),
        );
        let refused = site.generate(&node, &Server::default());
        assert!(
            matches!(&refused, Err(ExtensionError::Guest { message, .. }) if message.contains("is not HOST:PORT")),
            "{refused:?}"
        );
    }

    #[test]
    fn the_credential_is_the_nodes_and_root_only() {
        let files = overlay(&[])
            .generate(&Node::new("n1"), &Server::default())
            .unwrap_or_default();
        let credential = files
            .iter()
            .find(|f| f.path == "/etc/wulf/agent.credential")
            .map(|f| (f.mode, f.content.clone()));
        let expected = Credential::derive(&[1u8; 32], "n1").to_hex();
        assert_eq!(
            credential,
            Some((
                0o600,
                FileContent::Regular(format!("{expected}\n").into_bytes())
            ))
        );
    }
}
