//! BMC use-cases: power actions and one-time netboots over many nodes at once (bounded
//! fan-out, optional stagger, a per-node result for every node), and console access.

use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wulf_bmc::Drivers;
use wulf_core::bmc::{Bmc, BmcError, BmcReply, BmcTarget, ConsoleCommand, PowerAction, PowerState};

use crate::Site;
use crate::error::{Result, SiteError};
use crate::records::{Kind, expand};

/// What to ask of each node's BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BmcRequest {
    Power(PowerAction),
    /// The next boot from the network, once; then power on (off nodes) or cycle (on nodes).
    BootOncePxe,
}

impl BmcRequest {
    pub fn name(self) -> &'static str {
        match self {
            BmcRequest::Power(action) => action.name(),
            BmcRequest::BootOncePxe => "boot-once pxe",
        }
    }
}

/// Start `count` nodes per `every` (`--stagger 50/5s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stagger {
    pub count: usize,
    pub every: Duration,
}

impl std::str::FromStr for Stagger {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Stagger, String> {
        let usage = "expected N/INTERVAL, e.g. 50/5s (50 nodes every 5 seconds; ms, s, m)";
        let (count, every) = text.split_once('/').ok_or(usage)?;
        let count: usize = count.trim().parse().map_err(|_| usage)?;
        if count == 0 {
            return Err("the count must be at least 1".into());
        }
        let every = parse_duration(every.trim()).ok_or(usage)?;
        Ok(Stagger { count, every })
    }
}

/// `500ms`, `5s`, `2m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// How a batch of BMC calls runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BmcOptions {
    /// BMCs driven at once.
    pub fanout: usize,
    pub stagger: Option<Stagger>,
    /// Per node.
    pub timeout: Duration,
}

/// One node's result.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResult {
    pub node: String,
    /// When its BMC call began, from the start of the run (what a stagger spaces out).
    pub started: Duration,
    pub outcome: std::result::Result<BmcReply, BmcError>,
}

impl Site {
    /// The options from the site configuration, for a command that sets none.
    pub fn bmc_defaults(&self) -> BmcOptions {
        let config = self.config();
        BmcOptions {
            fanout: config.bmc.fanout,
            stagger: None,
            timeout: config.bmc.timeout,
        }
    }

    fn drivers(&self) -> Result<&Drivers> {
        self.bmc
            .get_or_init(|| Drivers::new(self.state.root().join("bmc")))
            .as_ref()
            .map_err(|e| SiteError::Bmc {
                node: String::new(),
                source: e.clone(),
            })
    }

    /// The BMC of each named node (names and hostlists; every name must exist), in order.
    pub fn bmc_targets(
        &self,
        patterns: &[String],
    ) -> Result<Vec<(String, std::result::Result<BmcTarget, BmcError>)>> {
        let names = expand(patterns)?;
        if names.is_empty() {
            return Err(SiteError::NothingSelected { kind: Kind::Node });
        }
        let inventory = self.inventory_of(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
        names
            .into_iter()
            .map(|name| {
                let node = inventory
                    .nodes
                    .get(&name)
                    .ok_or_else(|| SiteError::RecordNotFound {
                        kind: Kind::Node,
                        name: name.clone(),
                    })?;
                let merged = wulf_core::merge::merge(node, &inventory.profiles).node;
                Ok((name, BmcTarget::of(&merged)))
            })
            .collect()
    }

    /// Runs `request` on every named node's BMC, `options.fanout` at a time, starting
    /// `stagger.count` per `stagger.every`; `progress` sees each result as it comes. Every
    /// node gets a result; a failed node does not stop the others.
    pub fn bmc_run(
        &self,
        patterns: &[String],
        request: BmcRequest,
        options: &BmcOptions,
        progress: &(dyn Fn(&NodeResult) + Sync),
    ) -> Result<Vec<NodeResult>> {
        let targets = self.bmc_targets(patterns)?;
        let drivers = self.drivers()?;
        let slots: Vec<Mutex<Option<NodeResult>>> =
            targets.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..options.fanout.clamp(1, targets.len().max(1)) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((node, target)) = targets.get(i) else {
                            return;
                        };
                        if let Some(stagger) = options.stagger {
                            let wave = u32::try_from(i / stagger.count).unwrap_or(u32::MAX);
                            let at = started + stagger.every.saturating_mul(wave);
                            std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        }
                        let begun = started.elapsed();
                        let outcome = target
                            .clone()
                            .and_then(|target| run_one(drivers, &target, request, options.timeout));
                        let result = NodeResult {
                            node: node.clone(),
                            started: begun,
                            outcome,
                        };
                        progress(&result);
                        *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    }
                });
            }
        });
        Ok(slots
            .into_iter()
            .filter_map(|slot| slot.into_inner().unwrap_or_else(|p| p.into_inner()))
            .collect())
    }

    /// How to attach to a node's serial console, at its BMC.
    pub fn console_command(&self, node: &str) -> Result<ConsoleCommand> {
        let target = self.bmc_target(node)?;
        self.console_at_bmc(&target)
    }

    /// How to reach a node's console: through `wulf serve`, which holds the BMC's one
    /// console session while it logs it, else at the BMC.
    pub fn console_access(&self, node: &str) -> Result<ConsoleAccess> {
        let target = self.bmc_target(node)?;
        match UnixStream::connect(self.console_socket_path(node)) {
            Ok(stream) => Ok(ConsoleAccess::Shared {
                stream,
                escape: target.escape_char.bytes().next().unwrap_or(b'~'),
            }),
            Err(_) => self.console_at_bmc(&target).map(ConsoleAccess::Direct),
        }
    }

    /// One node's BMC; a node without one is an error naming what its record lacks.
    fn bmc_target(&self, node: &str) -> Result<BmcTarget> {
        let (name, target) = self
            .bmc_targets(&[node.to_owned()])?
            .into_iter()
            .next()
            .ok_or(SiteError::NothingSelected { kind: Kind::Node })?;
        target.map_err(|source| SiteError::Bmc { node: name, source })
    }

    fn console_at_bmc(&self, target: &BmcTarget) -> Result<ConsoleCommand> {
        self.drivers()?
            .console(target, self.config().bmc.timeout)
            .map_err(|source| SiteError::Bmc {
                node: target.node.clone(),
                source,
            })
    }
}

/// Where a console is reached (see [`Site::console_access`]).
#[derive(Debug)]
pub enum ConsoleAccess {
    /// Connected to the console `wulf serve` shares: its output comes in, keys go out; the
    /// escape character then `.` at the start of a line leaves.
    Shared { stream: UnixStream, escape: u8 },
    /// A program to run on the terminal, attached at the BMC.
    Direct(ConsoleCommand),
}

/// One node's request, within `timeout` overall.
fn run_one(
    drivers: &Drivers,
    target: &BmcTarget,
    request: BmcRequest,
    timeout: Duration,
) -> std::result::Result<BmcReply, BmcError> {
    match request {
        BmcRequest::Power(action) => drivers.power(target, action, timeout),
        BmcRequest::BootOncePxe => {
            let deadline = Instant::now() + timeout;
            let left = || {
                deadline
                    .checked_duration_since(Instant::now())
                    .filter(|d| !d.is_zero())
                    .ok_or(BmcError::Timeout(timeout))
            };
            let boot = drivers.next_boot_pxe(target, left()?)?;
            let status = drivers.power(target, PowerAction::Status, left()?)?;
            let action = match status.state {
                Some(PowerState::On) => PowerAction::Cycle,
                _ => PowerAction::On,
            };
            let power = drivers.power(target, action, left()?)?;
            Ok(BmcReply {
                state: None,
                message: format!(
                    "{}; power {}: {}",
                    boot.message,
                    action.name(),
                    power.message
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staggers_and_durations_parse_and_bad_ones_say_what_was_expected() {
        assert_eq!(
            "50/5s".parse::<Stagger>(),
            Ok(Stagger {
                count: 50,
                every: Duration::from_secs(5)
            })
        );
        assert_eq!(
            "10/500ms".parse::<Stagger>().map(|s| s.every),
            Ok(Duration::from_millis(500))
        );
        assert!("0/5s".parse::<Stagger>().is_err());
        assert!(
            "50".parse::<Stagger>()
                .is_err_and(|e| e.contains("N/INTERVAL"))
        );
        assert!("50/5h".parse::<Stagger>().is_err());
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("x"), None);
    }
}
