//! The site configuration (`wulf.toml`), parsed strictly and then validated into [`Config`].
//!
//! An absent file means built-in defaults; an unknown key is an error naming the key and file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::state_dir::StateDir;

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}` = {value}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    plugins: RawPlugins,
    bmc: RawBmc,
    console: RawConsole,
    agent: RawAgent,
    api: RawApi,
    dhcp: RawDhcp,
    plugin: BTreeMap<String, RawPluginSite>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct RawDhcp {
    mode: Option<String>,
    interfaces: Option<Vec<String>>,
    server_ip: Option<String>,
    range: Option<String>,
    lease_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct RawApi {
    enabled: Option<bool>,
    addr: Option<String>,
    tls: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct RawServer {
    http_addr: Option<String>,
    tftp: Option<bool>,
    tftp_addr: Option<String>,
    tftp_root: Option<PathBuf>,
    secure: Option<bool>,
    max_connections: Option<u64>,
    max_connections_per_peer: Option<u64>,
    max_image_streams: Option<u64>,
    stage_one_above_mib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct RawBmc {
    fanout: Option<u64>,
    timeout_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct RawConsole {
    log: Option<bool>,
    dir: Option<PathBuf>,
    max_mib: Option<u64>,
    keep: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct RawAgent {
    servers: Option<Vec<String>>,
    wait_s: Option<u64>,
    jitter_s: Option<u64>,
    hooks: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct RawPlugins {
    dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    limits: RawLimits,
    backends: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct RawLimits {
    timeout_ms: Option<u64>,
    memory_mib: Option<u64>,
    output_mib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct RawPluginSite {
    config: toml::Table,
    grant_read_dirs: Vec<PathBuf>,
    grant_ssh_host_keys: bool,
    limits: RawLimits,
}

/// The validated site configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (`None`: built-in defaults).
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub plugins: PluginsConfig,
    pub bmc: BmcConfig,
    pub console: ConsoleConfig,
    pub agent: AgentConfig,
    pub api: ApiConfig,
    pub dhcp: DhcpConfig,
}

/// The built-in DHCP service of `wulf serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    pub mode: DhcpMode,
    /// The interfaces it answers on; it never answers on others.
    pub interfaces: Vec<String>,
    /// The address clients are sent to for TFTP and HTTP; `None`: each interface's own.
    pub server_ip: Option<std::net::Ipv4Addr>,
    /// Full mode: addresses for clients the inventory has none for (discovery), first to last.
    pub range: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    /// Full mode: how long a lease lasts.
    pub lease: Duration,
}

/// Whether and how `wulf serve` answers DHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    Off,
    /// Boot options only, beside the site's DHCP server, which hands out the addresses.
    Proxy,
    /// Addresses too: each node's from the inventory, and a range for discovery.
    Full,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        DhcpConfig {
            mode: DhcpMode::Off,
            interfaces: Vec::new(),
            server_ip: None,
            range: None,
            lease: Duration::from_secs(3600),
        }
    }
}

/// The admin-facing REST API and dashboard that `wulf serve` runs beside the boot server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub enabled: bool,
    /// Loopback only by default: the API is an admin's door, not the nodes'.
    pub addr: SocketAddr,
    pub tls: TlsMode,
    /// A PEM certificate chain and key; absent, a self-signed pair is made in the state dir.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// When the API speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// On unless the API listens on a loopback address only.
    Auto,
    On,
    Off,
}

impl ApiConfig {
    /// Whether the API listening on `addr` speaks TLS.
    pub fn tls_on(&self, addr: SocketAddr) -> bool {
        match self.tls {
            TlsMode::On => true,
            TlsMode::Off => false,
            TlsMode::Auto => !addr.ip().is_loopback(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            addr: SocketAddr::from(([127, 0, 0, 1], 9874)),
            tls: TlsMode::Auto,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// What the `agent` overlay tells `wulf-agent` on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// `host:port` of the servers, in order; empty: the one the node booted from (iPXE puts it
    /// on the kernel command line).
    pub servers: Vec<String>,
    /// How long one long-poll is held.
    pub wait: Duration,
    /// Up to this long before the first request and each retry, so nodes spread out.
    pub jitter: Duration,
    /// `PATTERN : COMMAND`: run on the node when a path matching PATTERN changed.
    pub hooks: Vec<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            servers: Vec::new(),
            wait: Duration::from_secs(55),
            jitter: Duration::from_secs(5),
            hooks: vec![
                "/etc/ssh/sshd_config* : systemctl reload ssh 2>/dev/null || systemctl reload sshd"
                    .to_owned(),
            ],
        }
    }
}

/// How `wulf power` and friends reach BMCs, unless a command says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcConfig {
    /// BMCs driven at once.
    pub fanout: usize,
    /// How long one BMC call may take (ipmitool's wrong-password answer alone takes ~8 s).
    pub timeout: Duration,
}

impl Default for BmcConfig {
    fn default() -> Self {
        BmcConfig {
            fanout: 32,
            timeout: Duration::from_secs(20),
        }
    }
}

/// Console logging by `wulf serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Whether `wulf serve` keeps a log of every node's serial console (through its BMC).
    pub log: bool,
    /// Where the logs go: `<state>/console` by default.
    pub dir: PathBuf,
    /// A node's log is rotated at this size.
    pub max_bytes: u64,
    /// Rotated logs kept per node.
    pub keep: usize,
}

/// Where the boot server listens and what TFTP serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub http_addr: SocketAddr,
    pub tftp: bool,
    /// `None`: port 69 when running as root, else 6969 (chosen by the binary).
    pub tftp_addr: Option<SocketAddr>,
    /// The iPXE binaries; Debian's `ipxe` package puts them here.
    pub tftp_root: PathBuf,
    /// Warewulf's secure mode: the runtime overlay (which may hold secrets) only goes to
    /// privileged source ports (below 1024), that is to root on a booted node, and iPXE
    /// scripts do not fetch it.
    pub secure: bool,
    /// HTTP connections at once; `None`: as many as the open-file limit leaves room for.
    pub max_connections: Option<usize>,
    /// HTTP connections at once from one address.
    pub max_connections_per_peer: usize,
    /// Image responses sent at once; the rest wait their turn before their headers. `None`:
    /// every one at once.
    pub max_image_streams: Option<usize>,
    /// Nodes whose built image is larger than this (bytes, compressed) boot in two stages
    /// unless their `ipxe-template` says otherwise; 0 never chooses it.
    pub stage_one_above: u64,
}

impl ServerConfig {
    /// HTTP connections kept at once under an open-file limit: `max-connections` when set,
    /// else the limit less a quarter of it (at most 3,072 kept back: 1,024 TFTP transfers hold
    /// a socket and a file each, and served files, plugins and the state directory need some).
    pub fn connections_for(&self, open_files: u64) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let reserved = (open_files / 4).min(3 * 1024);
            open_files.saturating_sub(reserved).max(16) as usize
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 9873)),
            tftp: true,
            tftp_addr: None,
            tftp_root: PathBuf::from("/usr/lib/ipxe"),
            secure: false,
            max_connections: None,
            max_connections_per_peer: 512,
            max_image_streams: None,
            stage_one_above: 1 << 30,
        }
    }
}

/// Plugin settings: where they live, their default limits, and per-plugin site settings.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    pub dir: PathBuf,
    pub cache_dir: PathBuf,
    pub limits: Limits,
    /// Inventory backend plugins, consulted in this order after the built-in store.
    pub backends: Vec<String>,
    pub sites: BTreeMap<String, PluginSite>,
    /// The cluster's SSH host keys as granted plugins see them (`{"ed25519": {"private",
    /// "public"}, …}`). Never read from wulf.toml: a command that loads such a plugin fills it.
    pub host_keys: Option<std::sync::Arc<serde_json::Value>>,
}

/// Resource limits of one plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(2),
            memory_bytes: 64 << 20,
            output_bytes: 64 << 20,
        }
    }
}

/// What the admin set for one plugin.
#[derive(Debug, Clone, Default)]
pub struct PluginSite {
    /// Overlaid on the `[config]` defaults of the plugin's manifest.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Directories the plugin may read, if its manifest asks for them.
    pub grant_read_dirs: Vec<PathBuf>,
    /// Whether a directory plugin may have the cluster's SSH host keys.
    pub grant_ssh_host_keys: bool,
    limits: RawLimits,
}

impl PluginsConfig {
    /// The limits of `plugin`: its site overrides, else the defaults.
    pub fn limits_for(&self, plugin: &str) -> Limits {
        let Some(site) = self.sites.get(plugin) else {
            return self.limits;
        };
        apply_limits(self.limits, &site.limits)
    }
}

fn apply_limits(base: Limits, raw: &RawLimits) -> Limits {
    Limits {
        timeout: raw
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(base.timeout),
        memory_bytes: raw.memory_mib.map(|m| m << 20).unwrap_or(base.memory_bytes),
        output_bytes: raw.output_mib.map(|m| m << 20).unwrap_or(base.output_bytes),
    }
}

/// `[dhcp]`, checked: a mode that answers needs interfaces; a range is first-last, in order,
/// and only means something when wulf hands out addresses.
fn dhcp_config(
    raw: RawDhcp,
    invalid: &dyn Fn(String, String, &str) -> ConfigError,
) -> Result<DhcpConfig, ConfigError> {
    let mode = match raw.mode.as_deref() {
        None | Some("off") => DhcpMode::Off,
        Some("proxy") => DhcpMode::Proxy,
        Some("full") => DhcpMode::Full,
        Some(other) => {
            return Err(invalid(
                "dhcp.mode".into(),
                format!("{other:?}"),
                "expected \"off\", \"proxy\" (boot options beside the site's DHCP server) or \"full\" (addresses too)",
            ));
        }
    };
    let mut dhcp = DhcpConfig {
        mode,
        interfaces: raw.interfaces.unwrap_or_default(),
        ..DhcpConfig::default()
    };
    if dhcp.mode != DhcpMode::Off && dhcp.interfaces.is_empty() {
        return Err(invalid(
            "dhcp.interfaces".into(),
            "[]".into(),
            "name the interfaces to answer DHCP on, e.g. [\"eth1\"]; wulf never answers on others",
        ));
    }
    if let Some(bad) = dhcp
        .interfaces
        .iter()
        .find(|i| i.is_empty() || i.len() > 15 || i.contains(['/', ' ']))
    {
        return Err(invalid(
            "dhcp.interfaces".into(),
            format!("{bad:?}"),
            "not an interface name (at most 15 characters, no '/' or spaces)",
        ));
    }
    if let Some(text) = raw.server_ip.as_deref() {
        dhcp.server_ip = Some(text.parse().map_err(|_| {
            invalid(
                "dhcp.server-ip".into(),
                format!("{text:?}"),
                "expected an IPv4 address",
            )
        })?);
    }
    if let Some(text) = raw.range.as_deref() {
        let parsed = text
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
            .filter(|(a, b): &(std::net::Ipv4Addr, std::net::Ipv4Addr)| a <= b);
        let Some(range) = parsed else {
            return Err(invalid(
                "dhcp.range".into(),
                format!("{text:?}"),
                "expected FIRST-LAST IPv4 addresses in order, e.g. \"10.0.0.100-10.0.0.199\"",
            ));
        };
        if dhcp.mode != DhcpMode::Full {
            return Err(invalid(
                "dhcp.range".into(),
                format!("{text:?}"),
                "a range of addresses is for mode = \"full\"; in proxy mode the site's DHCP server hands out addresses",
            ));
        }
        dhcp.range = Some(range);
    }
    if let Some(seconds) = raw.lease_s {
        if !(60..=7 * 86_400).contains(&seconds) {
            return Err(invalid(
                "dhcp.lease-s".into(),
                seconds.to_string(),
                "expected 60 to 604800 seconds",
            ));
        }
        dhcp.lease = Duration::from_secs(seconds);
    }
    Ok(dhcp)
}

impl Config {
    /// Built-in defaults for a state directory.
    pub fn defaults(state: &StateDir) -> Config {
        Config {
            source: None,
            server: ServerConfig::default(),
            bmc: BmcConfig::default(),
            agent: AgentConfig::default(),
            api: ApiConfig::default(),
            dhcp: DhcpConfig::default(),
            console: ConsoleConfig {
                log: false,
                dir: state.root().join("console"),
                max_bytes: 8 << 20,
                keep: 3,
            },
            plugins: PluginsConfig {
                dir: state.plugins_dir(),
                cache_dir: state.cache_dir(),
                limits: Limits::default(),
                backends: Vec::new(),
                sites: BTreeMap::new(),
                host_keys: None,
            },
        }
    }

    /// Loads `path`; a missing file gives the defaults unless `required`.
    pub fn load(path: &Path, state: &StateDir, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path, state),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::defaults(state))
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses and validates configuration text that came from `path`.
    pub fn parse(text: &str, path: &Path, state: &StateDir) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: String, value: String, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value,
            reason: reason.to_string(),
        };
        let mut defaults = Config::defaults(state);
        let address =
            |key: &str, value: &Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
                value
                    .as_deref()
                    .map(|text| {
                        text.parse::<SocketAddr>().map_err(|_| {
                            invalid(
                                format!("server.{key}"),
                                format!("{text:?}"),
                                "expected IP:PORT, e.g. 0.0.0.0:9873 or [::]:9873",
                            )
                        })
                    })
                    .transpose()
            };
        if let Some(addr) = address("http-addr", &raw.server.http_addr)? {
            defaults.server.http_addr = addr;
        }
        defaults.server.tftp_addr = address("tftp-addr", &raw.server.tftp_addr)?;
        defaults.server.tftp = raw.server.tftp.unwrap_or(true);
        if let Some(root) = raw.server.tftp_root {
            defaults.server.tftp_root = root;
        }
        defaults.server.secure = raw.server.secure.unwrap_or(false);
        if let Some(n) = within(
            "server.max-connections",
            raw.server.max_connections,
            16,
            10_000_000,
            &invalid,
        )? {
            defaults.server.max_connections = Some(n as usize);
        }
        if let Some(n) = within(
            "server.max-connections-per-peer",
            raw.server.max_connections_per_peer,
            1,
            10_000_000,
            &invalid,
        )? {
            defaults.server.max_connections_per_peer = n as usize;
        }
        if let Some(n) = within(
            "server.max-image-streams",
            raw.server.max_image_streams,
            1,
            1_000_000,
            &invalid,
        )? {
            defaults.server.max_image_streams = Some(n as usize);
        }
        if let Some(mib) = within(
            "server.stage-one-above-mib",
            raw.server.stage_one_above_mib,
            0,
            1 << 30,
            &invalid,
        )? {
            defaults.server.stage_one_above = mib << 20;
        }
        defaults.dhcp = dhcp_config(raw.dhcp, &invalid)?;
        defaults.api.enabled = raw.api.enabled.unwrap_or(true);
        if let Some(text) = raw.api.addr.as_deref() {
            defaults.api.addr = text.parse().map_err(|_| {
                invalid(
                    "api.addr".into(),
                    format!("{text:?}"),
                    "expected IP:PORT, e.g. 127.0.0.1:9874 or [::1]:9874",
                )
            })?;
        }
        if let Some(tls) = raw.api.tls.as_deref() {
            defaults.api.tls = match tls {
                "auto" => TlsMode::Auto,
                "on" => TlsMode::On,
                "off" => TlsMode::Off,
                other => {
                    return Err(invalid(
                        "api.tls".into(),
                        format!("{other:?}"),
                        "expected \"auto\" (TLS unless on loopback), \"on\" or \"off\"",
                    ));
                }
            };
        }
        if raw.api.tls_cert.is_some() != raw.api.tls_key.is_some() {
            return Err(invalid(
                "api.tls-cert".into(),
                format!("{:?}", raw.api.tls_cert.unwrap_or_default()),
                "api.tls-cert and api.tls-key go together (PEM files); leave both out for a generated certificate",
            ));
        }
        defaults.api.tls_cert = raw.api.tls_cert;
        defaults.api.tls_key = raw.api.tls_key;
        if let Some(fanout) = within("bmc.fanout", raw.bmc.fanout, 1, 1024, &invalid)? {
            defaults.bmc.fanout = fanout as usize;
        }
        if let Some(seconds) = within("bmc.timeout-s", raw.bmc.timeout_s, 1, 600, &invalid)? {
            defaults.bmc.timeout = Duration::from_secs(seconds);
        }
        defaults.console.log = raw.console.log.unwrap_or(false);
        if let Some(dir) = raw.console.dir {
            defaults.console.dir = dir;
        }
        if let Some(mib) = within("console.max-mib", raw.console.max_mib, 1, 4096, &invalid)? {
            defaults.console.max_bytes = mib << 20;
        }
        if let Some(keep) = raw.console.keep {
            defaults.console.keep = keep;
        }
        if let Some(servers) = raw.agent.servers {
            for server in &servers {
                if server
                    .rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
                {
                    return Err(invalid(
                        "agent.servers".into(),
                        format!("{server:?}"),
                        "expected HOST:PORT, e.g. 10.0.0.1:9873",
                    ));
                }
            }
            defaults.agent.servers = servers;
        }
        if let Some(s) = within("agent.wait-s", raw.agent.wait_s, 1, 300, &invalid)? {
            defaults.agent.wait = Duration::from_secs(s);
        }
        if let Some(s) = within("agent.jitter-s", raw.agent.jitter_s, 0, 300, &invalid)? {
            defaults.agent.jitter = Duration::from_secs(s);
        }
        if let Some(hooks) = raw.agent.hooks {
            if let Some(bad) = hooks
                .iter()
                .find(|h| !h.contains(" : ") || h.contains('\n') || h.contains(" #"))
            {
                return Err(invalid(
                    "agent.hooks".into(),
                    format!("{bad:?}"),
                    "expected \"PATTERN : COMMAND\" on one line, no \" #\" (the agent reads that as a comment), e.g. \"/etc/ssh/* : systemctl reload ssh\"",
                ));
            }
            defaults.agent.hooks = hooks;
        }
        validate_limits(&raw.plugins.limits, "plugins.limits", &invalid)?;
        let mut sites = BTreeMap::new();
        for (name, site) in raw.plugin {
            validate_limits(&site.limits, &format!("plugin.{name}.limits"), &invalid)?;
            for dir in &site.grant_read_dirs {
                if !dir.is_absolute() {
                    return Err(invalid(
                        format!("plugin.{name}.grant-read-dirs"),
                        format!("{:?}", dir.display().to_string()),
                        "must be an absolute path",
                    ));
                }
            }
            let config = serde_json::to_value(&site.config)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default();
            sites.insert(
                name,
                PluginSite {
                    config,
                    grant_read_dirs: site.grant_read_dirs,
                    grant_ssh_host_keys: site.grant_ssh_host_keys,
                    limits: site.limits,
                },
            );
        }
        let plugins = &mut defaults.plugins;
        if let Some(dir) = raw.plugins.dir {
            plugins.dir = dir;
        }
        if let Some(dir) = raw.plugins.cache_dir {
            plugins.cache_dir = dir;
        }
        plugins.limits = apply_limits(plugins.limits, &raw.plugins.limits);
        plugins.backends = raw.plugins.backends;
        plugins.sites = sites;
        defaults.source = Some(path.to_path_buf());
        Ok(defaults)
    }
}

fn validate_limits(
    raw: &RawLimits,
    table: &str,
    invalid: &impl Fn(String, String, &str) -> ConfigError,
) -> Result<(), ConfigError> {
    let checks = [
        ("timeout-ms", raw.timeout_ms, 1, 600_000),
        ("memory-mib", raw.memory_mib, 1, 4096),
        ("output-mib", raw.output_mib, 1, 4096),
    ];
    for (key, value, min, max) in checks {
        within(&format!("{table}.{key}"), value, min, max, invalid)?;
    }
    Ok(())
}

/// `value` when it is absent or between `min` and `max`; otherwise the error naming `key`.
fn within(
    key: &str,
    value: Option<u64>,
    min: u64,
    max: u64,
    invalid: &impl Fn(String, String, &str) -> ConfigError,
) -> Result<Option<u64>, ConfigError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(invalid(
            key.to_owned(),
            v.to_string(),
            &format!("must be between {min} and {max}"),
        )),
        _ => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let state = StateDir::new("/var/lib/wulf");
        Config::parse(text, Path::new("/etc/wulf.toml"), &state).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_per_plugin_overrides() {
        let config = parse(
            r#"
[plugins.limits]
timeout-ms = 500
[plugin.csv]
grant-read-dirs = ["/srv/inventory"]
config = { file = "nodes.csv" }
limits = { memory-mib = 16 }
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.plugins.dir, PathBuf::from("/var/lib/wulf/plugins"));
        let csv = config.plugins.limits_for("csv");
        assert_eq!(
            (csv.timeout, csv.memory_bytes),
            (Duration::from_millis(500), 16 << 20)
        );
        assert_eq!(config.plugins.limits_for("other").memory_bytes, 64 << 20);
        assert_eq!(config.plugins.sites["csv"].config["file"], "nodes.csv");
    }

    #[test]
    fn errors_name_the_file_and_key() {
        insta::assert_snapshot!(parse("[plugins]\nspeed = 3\n").err().unwrap_or_default(), @r"
        /etc/wulf.toml: TOML parse error at line 2, column 1
          |
        2 | speed = 3
          | ^^^^^
        unknown field `speed`, expected one of `dir`, `cache-dir`, `limits`, `backends`
        ");
        insta::assert_snapshot!(parse("[plugin.x.limits]\ntimeout-ms = 0\n").err().unwrap_or_default(), @"/etc/wulf.toml: `plugin.x.limits.timeout-ms` = 0: must be between 1 and 600000");
        insta::assert_snapshot!(parse("[server]\nhttp-addr = \"localhost\"\n").err().unwrap_or_default(), @r#"/etc/wulf.toml: `server.http-addr` = "localhost": expected IP:PORT, e.g. 0.0.0.0:9873 or [::]:9873"#);
        insta::assert_snapshot!(parse("[plugin.x]\ngrant-read-dirs = [\"srv\"]\n").err().unwrap_or_default(), @r#"/etc/wulf.toml: `plugin.x.grant-read-dirs` = "srv": must be an absolute path"#);
    }

    #[test]
    fn image_streams_are_unlimited_unless_a_limit_is_set() {
        let shown = |text: &str| parse(text).map(|c| c.server.max_image_streams);
        assert_eq!(shown(""), Ok(None));
        assert_eq!(shown("[server]\nmax-image-streams = 64\n"), Ok(Some(64)));
        insta::assert_snapshot!(shown("[server]\nmax-image-streams = 0\n").err().unwrap_or_default(), @"/etc/wulf.toml: `server.max-image-streams` = 0: must be between 1 and 1000000");
    }

    #[test]
    fn dhcp_and_api_settings_are_checked() {
        let full = parse("[dhcp]\nmode = \"full\"\ninterfaces = [\"eth1\"]\nrange = \"10.0.0.100-10.0.0.199\"\nlease-s = 600\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(full.dhcp.mode, DhcpMode::Full);
        assert_eq!(
            full.dhcp.range,
            Some((
                std::net::Ipv4Addr::new(10, 0, 0, 100),
                std::net::Ipv4Addr::new(10, 0, 0, 199)
            ))
        );
        assert_eq!(full.dhcp.lease, Duration::from_secs(600));
        for (text, says) in [
            (
                "[dhcp]\nmode = \"proxy\"\n",
                "name the interfaces to answer DHCP on",
            ),
            ("[dhcp]\nmode = \"relay\"\n", "expected \"off\", \"proxy\""),
            (
                "[dhcp]\nmode = \"proxy\"\ninterfaces = [\"eth1\"]\nrange = \"10.0.0.1-10.0.0.9\"\n",
                "a range of addresses is for mode = \"full\"",
            ),
            (
                "[dhcp]\nmode = \"full\"\ninterfaces = [\"eth1\"]\nrange = \"10.0.0.9-10.0.0.1\"\n",
                "FIRST-LAST IPv4 addresses in order",
            ),
            (
                "[dhcp]\nmode = \"full\"\ninterfaces = [\"a/b\"]\n",
                "not an interface name",
            ),
            (
                "[dhcp]\nserver-ip = \"10.0.0\"\n",
                "expected an IPv4 address",
            ),
            ("[dhcp]\nlease-s = 5\n", "60 to 604800"),
            ("[api]\ntls = \"maybe\"\n", "expected \"auto\""),
            ("[api]\naddr = \"localhost\"\n", "expected IP:PORT"),
            ("[api]\ntls-cert = \"/etc/wulf/api.crt\"\n", "go together"),
        ] {
            let error = parse(text).err().unwrap_or_default();
            assert!(error.contains(says), "{text}: {error}");
        }
        let api = ApiConfig::default();
        assert!(!api.tls_on(api.addr), "loopback: plain HTTP");
        assert!(api.tls_on(SocketAddr::from(([10, 0, 0, 1], 9874))));
    }

    #[test]
    fn connections_leave_room_for_tftp_and_files() {
        let mut server = ServerConfig::default();
        assert_eq!(server.connections_for(1024), 768);
        assert_eq!(server.connections_for(20_000), 20_000 - 3072);
        assert_eq!(server.connections_for(8), 16);
        server.max_connections = Some(100);
        assert_eq!(server.connections_for(20_000), 100);
    }

    /// The commented `wulf.toml` the package installs shows every default as it is, and each
    /// line it shows parses when uncommented.
    #[test]
    fn the_shipped_configuration_shows_the_defaults() {
        let shipped = include_str!("../../cli/dist/wulf.toml");
        let state = StateDir::new("/var/lib/wulf");
        let path = Path::new("/etc/wulf/wulf.toml");
        let defaults = Config::defaults(&state);
        let commented = Config::parse(shipped, path, &state).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(commented.server, defaults.server);
        let uncommented: Vec<&str> = shipped
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with("[plugin")
                        || (rest.starts_with(|c: char| c.is_ascii_lowercase())
                            && rest.contains(" = ")) =>
                {
                    rest
                }
                _ => line,
            })
            .collect();
        let all = Config::parse(&uncommented.join("\n"), path, &state)
            .unwrap_or_else(|e| panic!("{e}\n{}", uncommented.join("\n")));
        let port_69 = ServerConfig {
            tftp_addr: Some(SocketAddr::from(([0, 0, 0, 0], 69))),
            ..defaults.server.clone()
        };
        assert_eq!(all.server, port_69, "as root");
        assert_eq!(all.bmc, defaults.bmc);
        assert_eq!(all.console, defaults.console);
        assert_eq!(all.agent, defaults.agent);
        let shown_pair = ApiConfig {
            tls_cert: Some(PathBuf::from("/etc/wulf/api.crt")),
            tls_key: Some(PathBuf::from("/etc/wulf/api.key")),
            ..defaults.api.clone()
        };
        assert_eq!(all.api, shown_pair);
        assert_eq!(commented.api, defaults.api);
        assert_eq!(
            (&all.plugins.dir, &all.plugins.cache_dir, all.plugins.limits),
            (
                &defaults.plugins.dir,
                &defaults.plugins.cache_dir,
                defaults.plugins.limits
            )
        );
        assert!(all.plugins.backends.is_empty());
        assert_eq!(
            all.plugins.sites.keys().collect::<Vec<_>>(),
            ["csv-inventory", "my-ssh-keys"]
        );
    }
}
