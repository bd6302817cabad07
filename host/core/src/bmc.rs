//! The trait BMC drivers implement (IPMI through `ipmitool`, Redfish), and what a driver is
//! given and returns. Drivers are blocking and bounded: every call finishes by its deadline.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::node::{BmcDriver, Node, RedfishScheme, Tags};
use crate::secret::Secret;

/// A power action (`wulf power <action>`), with Warewulf's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    On,
    Off,
    Cycle,
    Reset,
    /// An orderly shutdown through the operating system (ACPI).
    Soft,
    Status,
}

impl PowerAction {
    pub fn name(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
            PowerAction::Soft => "soft",
            PowerAction::Status => "status",
        }
    }
}

/// A node's power as its BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    On,
    Off,
}

/// What a BMC did: the power state it reports (for `status`) and its own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcReply {
    pub state: Option<PowerState>,
    pub message: String,
}

/// Everything a driver needs to reach one node's BMC, from the node's merged record.
#[derive(Debug, Clone, PartialEq)]
pub struct BmcTarget {
    pub node: String,
    pub driver: BmcDriver,
    pub address: Ipv4Addr,
    /// The port when the record gives one; each driver has its default.
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// IPMI: `lan` (the default) or `lanplus`.
    pub interface: String,
    /// IPMI: the SOL escape character (`~` by default).
    pub escape_char: String,
    /// IPMI: a site template for the `ipmitool` command line, by name.
    pub template: Option<String>,
    pub scheme: RedfishScheme,
    pub tls_verify: bool,
    pub system_id: Option<String>,
    pub tags: Tags,
}

impl BmcTarget {
    /// The BMC of a merged node record; `NotConfigured` names what the record lacks.
    pub fn of(node: &Node) -> Result<BmcTarget, BmcError> {
        let ipmi = &node.ipmi;
        let address = ipmi.ipaddr.ok_or(BmcError::NotConfigured {
            missing: "ipmi.ipaddr (set it with --ipmiaddr)",
        })?;
        Ok(BmcTarget {
            node: node.id.clone(),
            driver: ipmi.driver.unwrap_or_default(),
            address,
            port: ipmi.port,
            username: ipmi.username.clone(),
            password: ipmi.password.clone(),
            interface: ipmi.interface.clone().unwrap_or_else(|| "lan".into()),
            escape_char: ipmi.escape_char.clone().unwrap_or_else(|| "~".into()),
            template: ipmi.template.clone(),
            scheme: ipmi.scheme.unwrap_or_default(),
            tls_verify: ipmi.tls_verify.unwrap_or(true),
            system_id: ipmi.system_id.clone(),
            tags: ipmi.tags.clone(),
        })
    }
}

/// How to attach to a node's serial console: a program the caller runs with its terminal
/// (or a pty, to log it). Secrets travel in `env`, never in `args`.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, Secret)>,
    /// What ends the session when typed (IPMI SOL: the escape character, then `.`).
    pub escape: String,
}

impl std::fmt::Debug for ConsoleCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleCommand")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("escape", &self.escape)
            .finish_non_exhaustive()
    }
}

/// Why a BMC call failed. Messages never carry a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcError {
    #[error("no BMC configured: the record has no {missing}")]
    NotConfigured { missing: &'static str },
    #[error("timed out after {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// The BMC answered and refused or failed the request.
    #[error("the BMC refused: {0}")]
    Refused(String),
    /// What the driver runs is missing or broken (no `ipmitool`, a bad site template).
    #[error("{0}")]
    Driver(String),
    #[error("not supported: {0}")]
    Unsupported(String),
}

impl BmcError {
    /// A short word for tables and `--json`: timeout, auth, unreachable, ...
    pub fn kind(&self) -> &'static str {
        match self {
            BmcError::NotConfigured { .. } => "not-configured",
            BmcError::Timeout(_) => "timeout",
            BmcError::Auth(_) => "auth",
            BmcError::Unreachable(_) => "unreachable",
            BmcError::Tls(_) => "tls",
            BmcError::Refused(_) => "refused",
            BmcError::Driver(_) => "driver",
            BmcError::Unsupported(_) => "unsupported",
        }
    }
}

/// A BMC driver. Every call returns by `timeout` (a hung BMC is a [`BmcError::Timeout`]).
pub trait Bmc: Send + Sync {
    fn power(
        &self,
        target: &BmcTarget,
        action: PowerAction,
        timeout: Duration,
    ) -> Result<BmcReply, BmcError>;

    /// Makes the next boot, and only the next, a network boot.
    fn next_boot_pxe(&self, target: &BmcTarget, timeout: Duration) -> Result<BmcReply, BmcError>;

    /// How to attach to the node's serial console.
    fn console(&self, target: &BmcTarget, timeout: Duration) -> Result<ConsoleCommand, BmcError>;
}
