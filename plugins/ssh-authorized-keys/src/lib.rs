//! `ssh-authorized-keys`: root's `authorized_keys`, as Warewulf's `ssh.authorized_keys`
//! overlay provides it: the site's keys (from the plugin config, e.g. the admins' keys and the
//! provisioning host's root key) plus any node tag whose key starts with `ssh-key`.

use wulf_sdk::{File, FileEntry, Node, OverlayGenerator, PluginError, Server};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    keys: Vec<String>,
}

pub struct AuthorizedKeys;

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-",
];

impl OverlayGenerator for AuthorizedKeys {
    fn generate(node: &Node, _server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        let config: Config = wulf_sdk::config()?;
        let mut keys = config.keys;
        let mut tags: Vec<_> = node
            .tags
            .iter()
            .filter(|t| t.key.starts_with("ssh-key"))
            .collect();
        tags.sort_by(|a, b| a.key.cmp(&b.key));
        keys.extend(tags.into_iter().map(|t| t.value.clone()));
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        for key in &keys {
            // Options may precede the key type: look for a known type among the fields.
            let known = key
                .split_whitespace()
                .any(|f| KEY_TYPES.iter().any(|t| f.starts_with(t)));
            if !known || key.contains('\n') {
                return Err(PluginError::InvalidInput(format!(
                    "{:?} (for node {}) is not an OpenSSH public key line",
                    key.chars().take(40).collect::<String>(),
                    node.id
                )));
            }
        }
        Ok(vec![
            File::dir("/root/.ssh").mode(0o700).into(),
            File::text("/root/.ssh/authorized_keys", keys.join("\n") + "\n")
                .mode(0o600)
                .into(),
        ])
    }
}

wulf_sdk::register_overlay_generator!(AuthorizedKeys);

#[cfg(test)]
mod tests {
    use super::*;
    use wulf_sdk::Tag;

    #[test]
    fn config_keys_then_node_tags_and_junk_refused() {
        wulf_sdk::testing::set_config(
            serde_json::json!({"keys": ["ssh-ed25519 AAAAC3Nz admin@head"]}),
        );
        let mut node = Node::new("n1");
        node.tags = vec![Tag::new(
            "ssh-key-bob",
            "from=\"10.0.0.0/8\" ssh-rsa AAAAB3 bob",
        )];
        let files = AuthorizedKeys::generate(&node, &Server::new("h", 1))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            files[1].text(),
            Some("ssh-ed25519 AAAAC3Nz admin@head\nfrom=\"10.0.0.0/8\" ssh-rsa AAAAB3 bob\n")
        );
        assert_eq!((files[0].mode, files[1].mode), (0o700, 0o600));
        node.tags = vec![Tag::new("ssh-key", "hunter2")];
        assert!(AuthorizedKeys::generate(&node, &Server::new("h", 1)).is_err());
    }
}
