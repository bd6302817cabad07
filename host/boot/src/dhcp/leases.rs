//! Full mode's dynamic leases: addresses from the range for clients the inventory has none
//! for, kept in the state directory (written atomically on every change), so a restart of
//! `wulf serve` mid-boot never hands a leased address to another client.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use wulf_core::HwAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    ip: Ipv4Addr,
    /// Unix seconds.
    expires: u64,
}

/// The leases of one server, by hardware address.
#[derive(Debug)]
pub struct Leases {
    file: PathBuf,
    range: Option<(Ipv4Addr, Ipv4Addr)>,
    held: Mutex<BTreeMap<String, Lease>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Leases {
    /// The leases kept in `file` (none when it does not exist yet).
    pub fn open(file: PathBuf, range: Option<(Ipv4Addr, Ipv4Addr)>) -> std::io::Result<Leases> {
        let held = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: not a lease file ({e}); move it away to start afresh",
                        file.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Leases {
            file,
            range,
            held: Mutex::new(held),
        })
    }

    fn save(&self, held: &BTreeMap<String, Lease>) {
        let written = serde_json::to_vec_pretty(held)
            .map_err(std::io::Error::other)
            .and_then(|text| {
                if let Some(dir) = self.file.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                wulf_core::atomic_file::write_atomic(&self.file, &text)
            });
        if let Err(error) = written {
            tracing::error!(file = %self.file.display(), %error, "cannot keep the DHCP leases");
        }
    }

    /// The address for `hwaddr` from the range: the one it holds (expired or not, while nobody
    /// took it), else the first that is free and not `reserved`. Held for `lease` from now.
    pub fn offer(
        &self,
        hwaddr: &HwAddr,
        lease: Duration,
        reserved: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let (first, last) = self.range?;
        let key = hwaddr.to_string();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let now = now();
        // Addresses other clients hold a live lease on.
        let others: std::collections::HashSet<Ipv4Addr> = held
            .iter()
            .filter(|(mac, l)| **mac != key && l.expires > now)
            .map(|(_, l)| l.ip)
            .collect();
        let free = |ip: Ipv4Addr| !reserved(ip) && !others.contains(&ip);
        let ip = match held.get(&key) {
            Some(kept) if in_range(kept.ip, first, last) && free(kept.ip) => kept.ip,
            _ => (u32::from(first)..=u32::from(last))
                .map(Ipv4Addr::from)
                .find(|ip| free(*ip))?,
        };
        // An expired lease of another client on this address ends here.
        held.retain(|mac, l| *mac == key || l.ip != ip);
        held.insert(
            key,
            Lease {
                ip,
                expires: now.saturating_add(lease.as_secs()),
            },
        );
        self.save(&held);
        Some(ip)
    }

    /// The address `hwaddr` holds, if nobody else has taken it since.
    pub fn current(&self, hwaddr: &HwAddr) -> Option<Ipv4Addr> {
        let key = hwaddr.to_string();
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let ip = held.get(&key)?.ip;
        let now = now();
        let taken = held
            .iter()
            .any(|(mac, l)| *mac != key && l.ip == ip && l.expires > now);
        (!taken).then_some(ip)
    }

    /// `hwaddr` took `ip`: held for `lease` from now.
    pub fn confirm(&self, hwaddr: &HwAddr, ip: Ipv4Addr, lease: Duration) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(
            hwaddr.to_string(),
            Lease {
                ip,
                expires: now().saturating_add(lease.as_secs()),
            },
        );
        self.save(&held);
    }

    /// `hwaddr` gave `ip` back.
    pub fn release(&self, hwaddr: &HwAddr, ip: Ipv4Addr) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.get(&hwaddr.to_string()).is_some_and(|l| l.ip == ip) {
            held.remove(&hwaddr.to_string());
            self.save(&held);
        }
    }
}

fn in_range(ip: Ipv4Addr, first: Ipv4Addr, last: Ipv4Addr) -> bool {
    (first..=last).contains(&ip)
}
