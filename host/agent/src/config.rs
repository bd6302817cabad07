//! `/etc/wulf/agent.conf`, written by the `agent` overlay: `key = value` lines, `#` comments.
//!
//! ```text
//! node = n0001
//! server = 10.0.0.1:9873        # one or more, tried in order
//! credential = /etc/wulf/agent.credential
//! wait = 55                     # seconds a long-poll is held
//! jitter = 5                    # up to this many seconds before the first request and retries
//! state = /run/wulf-agent       # the manifest of what was applied
//! privileged-port = no          # yes: connect from a port below 1024 (secure mode)
//! hook = /etc/ssh/sshd_config* : systemctl reload ssh
//! ```

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// A path pattern; `*` matches any run of characters.
    pub pattern: String,
    /// Run with `/bin/sh -c`.
    pub command: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: String,
    /// `host:port` of each server, in order.
    pub servers: Vec<String>,
    pub credential: PathBuf,
    pub wait: Duration,
    pub jitter: Duration,
    pub state: PathBuf,
    pub hooks: Vec<Hook>,
    /// Connect from a source port below 1024 (the server runs in Warewulf's secure mode).
    pub privileged_port: bool,
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut node = None;
        let mut servers = Vec::new();
        let mut credential = PathBuf::from("/etc/wulf/agent.credential");
        let mut wait = Duration::from_secs(55);
        let mut jitter = Duration::from_secs(5);
        let mut state = PathBuf::from("/run/wulf-agent");
        let mut hooks = Vec::new();
        let mut privileged_port = false;
        for (number, line) in text.lines().enumerate() {
            let line = line.split_once(" #").map_or(line, |(l, _)| l).trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("line {}: {why}: {line:?}", number + 1);
            let (key, value) = line
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| bad("expected key = value"))?;
            let seconds = |v: &str| {
                v.parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| bad("expected whole seconds"))
            };
            match key {
                "node" => node = Some(value.to_owned()),
                "server" => servers.push(value.trim_start_matches("http://").to_owned()),
                "credential" => credential = PathBuf::from(value),
                "wait" => {
                    wait = seconds(value)?;
                    if wait.is_zero() {
                        return Err(bad("a long-poll of 0 s is a busy loop: use 1 or more"));
                    }
                }
                "jitter" => jitter = seconds(value)?,
                "state" => state = PathBuf::from(value),
                "privileged-port" => {
                    privileged_port = match value {
                        "yes" | "true" => true,
                        "no" | "false" => false,
                        _ => return Err(bad("expected yes or no")),
                    }
                }
                "hook" => {
                    let (pattern, command) = value
                        .split_once(" : ")
                        .ok_or_else(|| bad("expected hook = PATTERN : COMMAND"))?;
                    hooks.push(Hook {
                        pattern: pattern.trim().to_owned(),
                        command: command.trim().to_owned(),
                    });
                }
                _ => return Err(bad("unknown key")),
            }
        }
        let node = node.ok_or("no `node = ...` line")?;
        if servers.is_empty() {
            return Err("no `server = host:port` line".into());
        }
        Ok(Config {
            node,
            servers,
            credential,
            wait,
            jitter,
            state,
            hooks,
            privileged_port,
        })
    }
}

impl Config {
    /// Replaces `server = cmdline` by the `wulf.server=` the boot script put on the kernel
    /// command line (`cmdline`: `/proc/cmdline`).
    pub fn resolve_cmdline(&mut self, cmdline: &str) -> Result<(), String> {
        if !self.servers.iter().any(|s| s == "cmdline") {
            return Ok(());
        }
        let booted_from = cmdline
            .split_whitespace()
            .find_map(|arg| arg.strip_prefix("wulf.server="))
            .filter(|s| !s.is_empty())
            .ok_or("`server = cmdline`, but the kernel command line has no wulf.server=")?;
        for server in &mut self.servers {
            if server == "cmdline" {
                *server = booted_from.to_owned();
            }
        }
        Ok(())
    }
}

/// Whether `path` matches `pattern`, where `*` matches any run of characters.
pub fn glob(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == path,
        Some((head, rest)) => {
            let Some(tail) = path.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_overlay_writes() {
        let config = Config::parse(
            "# for n1\nnode = n1\nserver = 10.0.0.1:9873\nserver = http://10.0.0.2:9873\nwait = 30 # seconds\nhook = /etc/ssh/sshd_config* : systemctl reload ssh\n",
        )
        .unwrap();
        assert_eq!(config.servers, ["10.0.0.1:9873", "10.0.0.2:9873"]);
        assert_eq!(config.wait, Duration::from_secs(30));
        assert_eq!(config.hooks[0].command, "systemctl reload ssh");
        assert!(
            Config::parse("server = x:1\n")
                .unwrap_err()
                .contains("node")
        );
        assert!(
            Config::parse("node = n\nserver = x:1\nwait = soon\n")
                .unwrap_err()
                .contains("line 3")
        );
        assert!(Config::parse("node = n\nserver = x:1\ncolour = red\n").is_err());
    }

    #[test]
    fn the_server_can_come_from_the_kernel_command_line() {
        let mut config =
            Config::parse("node = n\nserver = cmdline\nserver = 10.0.0.2:9873\n").unwrap();
        config
            .resolve_cmdline("initrd=image wwid=aa wulf.server=10.0.2.2:41087 console=ttyS0\n")
            .unwrap();
        assert_eq!(config.servers, ["10.0.2.2:41087", "10.0.0.2:9873"]);
        let mut config = Config::parse("node = n\nserver = cmdline\n").unwrap();
        assert!(
            config
                .resolve_cmdline("quiet")
                .unwrap_err()
                .contains("wulf.server=")
        );
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("/etc/ssh/sshd_config*", "/etc/ssh/sshd_config"));
        assert!(glob(
            "/etc/ssh/sshd_config*",
            "/etc/ssh/sshd_config.d/x.conf"
        ));
        assert!(glob("/etc/*.conf", "/etc/a/b.conf"));
        assert!(!glob("/etc/ssh/*", "/etc/hosts"));
        assert!(glob("/etc/hosts", "/etc/hosts"));
    }
}
