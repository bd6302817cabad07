//! wulf's BMC drivers behind `core`'s [`Bmc`] trait: IPMI through `ipmitool` (its command
//! line from a site-overridable template, as Warewulf renders it) and Redfish over HTTPS;
//! and console capture into rotating per-node logs.

pub mod console;
mod ipmi;
mod redfish;

use std::path::PathBuf;
use std::time::Duration;

use wulf_core::bmc::{Bmc, BmcError, BmcReply, BmcTarget, ConsoleCommand, PowerAction};
use wulf_core::node::BmcDriver;

pub use ipmi::{DEFAULT_TEMPLATE, IpmiTool};
pub use redfish::{Redfish, SerialAccess};

/// Both drivers; each call goes to the one the node's record names.
#[derive(Debug)]
pub struct Drivers {
    ipmi: IpmiTool,
    redfish: Redfish,
}

impl Drivers {
    /// `templates`: the site's `ipmitool` templates (`<state>/bmc`).
    pub fn new(templates: impl Into<PathBuf>) -> Result<Drivers, BmcError> {
        Ok(Drivers {
            ipmi: IpmiTool::new(templates),
            redfish: Redfish::new()?,
        })
    }

    fn driver(&self, target: &BmcTarget) -> &dyn Bmc {
        match target.driver {
            BmcDriver::Ipmi => &self.ipmi,
            BmcDriver::Redfish => &self.redfish,
        }
    }
}

impl Bmc for Drivers {
    fn power(
        &self,
        target: &BmcTarget,
        action: PowerAction,
        timeout: Duration,
    ) -> Result<BmcReply, BmcError> {
        self.driver(target).power(target, action, timeout)
    }

    fn next_boot_pxe(&self, target: &BmcTarget, timeout: Duration) -> Result<BmcReply, BmcError> {
        self.driver(target).next_boot_pxe(target, timeout)
    }

    /// A Redfish BMC that offers IPMI Serial over LAN is reached through `ipmitool`, with the
    /// node's credentials, over lanplus.
    fn console(&self, target: &BmcTarget, timeout: Duration) -> Result<ConsoleCommand, BmcError> {
        match target.driver {
            BmcDriver::Ipmi => self.ipmi.console(target, timeout),
            BmcDriver::Redfish => match self.redfish.serial_access(target, timeout)? {
                SerialAccess::Ipmi { port } => {
                    let sol = BmcTarget {
                        driver: BmcDriver::Ipmi,
                        port: Some(port),
                        interface: "lanplus".into(),
                        ..target.clone()
                    };
                    self.ipmi.console(&sol, timeout)
                }
                SerialAccess::Ssh { port } => Ok(redfish::ssh_console(target, port)),
            },
        }
    }
}
