//! `wulf-stage1`: the first stage of a two-stage boot, for images too large to hand to iPXE.
//!
//! iPXE loads the kernel, this program as `/init` (with the network drivers of the image's
//! kernel) and the node's system overlay. Stage one then brings up the booting interface with
//! the overlay's address (or iPXE's lease), fetches the image over HTTP in parallel `Range`
//! requests ([`fetch`]), unpacks it as it arrives into a tmpfs ([`unpack`]), checks it against
//! the SHA-256 the server gave, unpacks the system and runtime overlays over it, and switches
//! root into the image's `/init`. A failed attempt is printed, reported to the server and
//! tried again from a fresh tmpfs; after the last, the node reboots.

pub mod fetch;
pub mod modules;
pub mod net;
pub mod unpack;

use std::collections::BTreeMap;

/// What the kernel command line tells stage one (iPXE writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// `wulf.server=host:port`.
    pub server: String,
    /// `wwid=`: the hardware address the node booted from, as the server's URLs take it.
    pub mac: String,
    /// `wulf.assetkey=`, URI-encoded as iPXE gives it.
    pub asset_key: String,
    /// `wulf.streams=`: ranges fetched at once.
    pub streams: usize,
    /// iPXE's lease: `wulf.ip=`, `wulf.netmask=`, `wulf.gateway=`.
    pub lease: Option<(String, String, String)>,
}

impl Params {
    /// From a kernel command line.
    pub fn from_cmdline(cmdline: &str) -> Result<Params, String> {
        let words: BTreeMap<&str, &str> = cmdline
            .split_whitespace()
            .map(|w| w.split_once('=').unwrap_or((w, "")))
            .collect();
        let server = words.get("wulf.server").filter(|s| !s.is_empty()).ok_or(
            "the kernel command line has no wulf.server=HOST:PORT (the iPXE script sets it)",
        )?;
        let mac = words
            .get("wwid")
            .filter(|s| !s.is_empty())
            .ok_or("the kernel command line has no wwid=MAC (the iPXE script sets it)")?;
        let streams = match words.get("wulf.streams") {
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| format!("wulf.streams={n} is not a number of streams (1-64)"))?,
            None => 4,
        };
        let lease = match (words.get("wulf.ip"), words.get("wulf.netmask")) {
            (Some(ip), Some(mask)) if !ip.is_empty() && !mask.is_empty() => Some((
                (*ip).to_owned(),
                (*mask).to_owned(),
                words
                    .get("wulf.gateway")
                    .copied()
                    .unwrap_or_default()
                    .to_owned(),
            )),
            _ => None,
        };
        Ok(Params {
            server: (*server).to_owned(),
            mac: mac.to_ascii_lowercase().replace('-', ":"),
            asset_key: words
                .get("wulf.assetkey")
                .copied()
                .unwrap_or_default()
                .to_owned(),
            streams,
            lease,
        })
    }

    /// The server's URL path for one of the node's files (`image`, `system`, ...).
    pub fn target(&self, what: &str) -> String {
        format!("/{what}/{}?assetkey={}", self.mac, self.asset_key)
    }
}

/// The variables of a shell file of `KEY='value'` lines, as the `wwinit` overlay writes
/// `/warewulf/config` (single quotes, `'\''` for a quote).
pub fn shell_variables(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let mut value = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '\'' => value.extend(chars.by_ref().take_while(|&c| c != '\'')),
                '\\' => value.extend(chars.next()),
                c => value.push(c),
            }
        }
        vars.insert(key.to_owned(), value);
    }
    vars
}

/// The address to bring the booting interface up with: the node's own (from its overlay's
/// settings) when its primary interface is the one it booted from, else iPXE's lease.
pub fn address_for(vars: &BTreeMap<String, String>, params: &Params) -> Result<net::Ipv4, String> {
    let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let same_device = get("WWHWADDR").is_none_or(|hw| hw.eq_ignore_ascii_case(&params.mac));
    if let (Some(addr), Some(mask), true) = (get("WWIPADDR"), get("WWNETMASK"), same_device) {
        return net::Ipv4::parse(addr, mask, get("WWGATEWAY"))
            .map_err(|e| format!("the node's address in /warewulf/config: {e}"));
    }
    match &params.lease {
        Some((ip, mask, gateway)) => net::Ipv4::parse(ip, mask, Some(gateway))
            .map_err(|e| format!("iPXE's lease (wulf.ip/wulf.netmask): {e}")),
        None => Err(
            "no address for the booting interface: the node has no ipaddr/netmask on it and \
             iPXE passed no lease (wulf.ip=, wulf.netmask=)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_gives_server_node_and_lease() {
        let params = Params::from_cmdline(
            "initrd=stage1 wwid=52-54-00-DE-B1-02 wulf.server=10.0.2.2:9873 wulf.assetkey= \
             wulf.ip=10.0.2.15 wulf.netmask=255.255.255.0 wulf.gateway=10.0.2.2 console=ttyS0",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(params.mac, "52:54:00:de:b1:02");
        assert_eq!(params.streams, 4);
        assert_eq!(params.target("image"), "/image/52:54:00:de:b1:02?assetkey=");
        assert_eq!(
            params.lease,
            Some((
                "10.0.2.15".into(),
                "255.255.255.0".into(),
                "10.0.2.2".into()
            ))
        );
        assert!(Params::from_cmdline("wwid=x").is_err());
        assert!(Params::from_cmdline("wwid=x wulf.server=a:1 wulf.streams=0").is_err());
    }

    #[test]
    fn the_overlay_address_wins_over_the_lease_on_the_booting_device() {
        let vars = shell_variables(
            "# wulf node settings\nWWHOSTNAME='n1'\nWWIPADDR='10.0.2.20'\nWWNETMASK='255.255.255.0'\n\
             WWGATEWAY='10.0.2.2'\nWWHWADDR='52:54:00:de:b1:02'\nWWQUOTED='it'\\''s'\n",
        );
        assert_eq!(vars["WWQUOTED"], "it's");
        let mut params = Params::from_cmdline(
            "wwid=52:54:00:de:b1:02 wulf.server=h:1 wulf.ip=10.0.2.15 wulf.netmask=24",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ip = address_for(&vars, &params).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ip.addr.to_string(), "10.0.2.20");
        params.mac = "52:54:00:de:b1:99".into();
        let ip = address_for(&vars, &params).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (ip.addr.to_string(), ip.gateway),
            ("10.0.2.15".into(), None)
        );
        params.lease = None;
        assert!(address_for(&vars, &params).is_err());
    }
}
