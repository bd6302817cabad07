//! `ssh-host-keys`: the cluster's SSH host keys in `/etc/ssh`, as Warewulf's `ssh.host_keys`
//! overlay writes them. One key set, generated on the host, for every node: a node keeps its
//! identity across reboots, and users' `known_hosts` needs one line per key type for the whole
//! cluster. The keys are the same for every node, so they are written once, as a shared
//! segment (`generate-shared`).

use std::collections::BTreeMap;

use wulf_sdk::{File, FileEntry, Node, OverlayGenerator, PluginError, Server};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    private: String,
    public: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    /// Filled in by the host, which holds the keys: key type -> pair.
    #[serde(default)]
    host_keys: BTreeMap<String, Pair>,
}

pub struct HostKeys;

impl OverlayGenerator for HostKeys {
    fn generate(_node: &Node, _server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        Ok(Vec::new())
    }

    fn generate_shared(_nodes: &[Node], _server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        let config: Config = wulf_sdk::config()?;
        if config.host_keys.is_empty() {
            return Err(PluginError::Config(
                "no host keys were given: this plugin needs the `ssh-host-keys` capability, which the host grants to embedded plugins (run `wulf configure ssh` to see the keys)".into(),
            ));
        }
        let mut files: Vec<FileEntry> = vec![File::dir("/etc/ssh").mode(0o755).into()];
        for (kind, pair) in &config.host_keys {
            let valid_kind = !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric());
            if !valid_kind
                || !pair
                    .private
                    .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
                || pair.public.lines().count() != 1
            {
                return Err(PluginError::InvalidInput(format!(
                    "host key `{kind}` is not an OpenSSH key pair"
                )));
            }
            let path = format!("/etc/ssh/ssh_host_{kind}_key");
            files.push(File::text(&path, pair.private.clone()).mode(0o600).into());
            files.push(
                File::text(format!("{path}.pub"), pair.public.clone())
                    .mode(0o644)
                    .into(),
            );
        }
        Ok(files)
    }
}

wulf_sdk::register_overlay_generator!(HostKeys);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_each_pair_and_refuses_a_missing_or_bad_set() {
        let server = Server::new("h", 1);
        wulf_sdk::testing::set_config(serde_json::json!({"host-keys": {
            "ed25519": {"private": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAA\n-----END OPENSSH PRIVATE KEY-----\n",
                        "public": "ssh-ed25519 AAAA root@h\n"}
        }}));
        let files = HostKeys::generate_shared(&[], &server).unwrap_or_else(|e| panic!("{e:?}"));
        let listed: Vec<_> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(
            listed,
            [
                ("/etc/ssh", 0o755),
                ("/etc/ssh/ssh_host_ed25519_key", 0o600),
                ("/etc/ssh/ssh_host_ed25519_key.pub", 0o644)
            ]
        );
        assert_eq!(files[2].text(), Some("ssh-ed25519 AAAA root@h\n"));

        wulf_sdk::testing::set_config(serde_json::json!({}));
        assert!(HostKeys::generate_shared(&[], &server).is_err());
        wulf_sdk::testing::set_config(serde_json::json!({"host-keys": {
            "../x": {"private": "-----BEGIN OPENSSH PRIVATE KEY-----", "public": "k"}
        }}));
        assert!(HostKeys::generate_shared(&[], &server).is_err());
    }
}
