//! Where the running `wulf serve` listens, recorded in the state directory while it runs, so
//! that what every command builds (overlays name the server's address and port) matches what
//! the server itself builds, even when `serve --http-addr` overrides the configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wulf_core::atomic_file::write_atomic;

use crate::Site;
use crate::error::{Result, SiteError};

/// The record's file in the state directory.
const FILE: &str = "serving.json";

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    pid: u32,
    http: SocketAddr,
    /// The API's base URL (`http://127.0.0.1:9874`), when it runs.
    #[serde(default)]
    api: Option<String>,
}

/// The record of this process's server, locked while it lives (however the process ends, the
/// lock goes with it, so a record nobody holds is stale); removed when dropped.
#[derive(Debug)]
pub struct Serving {
    path: PathBuf,
    _held: std::fs::File,
}

impl Drop for Serving {
    fn drop(&mut self) {
        // Only ours: a server started since may have replaced it.
        if read(&self.path).is_some_and(|r| r.pid == std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read(path: &Path) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

impl Site {
    pub(crate) fn serving_file(&self) -> PathBuf {
        self.state().root().join(FILE)
    }

    /// Records that this process serves HTTP on `http` (the address it bound, port included)
    /// and the API at `api` (a base URL), until the returned guard is dropped.
    pub fn record_serving(&self, http: SocketAddr, api: Option<String>) -> Result<Serving> {
        let path = self.serving_file();
        let record = Record {
            pid: std::process::id(),
            http,
            api,
        };
        let held = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)
            .and_then(|text| write_atomic(&path, &text))
            .and_then(|()| std::fs::File::open(&path))
            .and_then(|file| file.lock().map(|()| file))
            .map_err(SiteError::io(&path))?;
        Ok(Serving { path, _held: held })
    }

    /// The address a live server recorded, if one runs on this state directory: one whose
    /// record is locked (by the server, for as long as it runs).
    pub(crate) fn serving_addr(&self) -> Option<SocketAddr> {
        self.serving_record().map(|r| r.http)
    }

    /// The base URL of the API: the running server's, else the one the configuration gives.
    pub fn api_url(&self) -> String {
        if let Some(url) = self.serving_record().and_then(|r| r.api) {
            return url;
        }
        let api = self.config().api.clone();
        api_base_url(api.addr, api.tls_on(api.addr))
    }

    /// A link that opens the dashboard with `token` (in the fragment: browsers never send it,
    /// so it stays out of server and proxy logs).
    pub fn dashboard_link(&self, token: &str) -> String {
        format!("{}/#token={token}", self.api_url())
    }

    fn serving_record(&self) -> Option<Record> {
        let path = self.serving_file();
        let file = std::fs::File::open(&path).ok()?;
        let held = matches!(
            file.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        );
        if !held {
            return None;
        }
        read(&path)
    }
}

/// `http(s)://addr`, loopback standing in for an unspecified address.
pub fn api_base_url(addr: SocketAddr, tls: bool) -> String {
    let shown = match addr.ip() {
        ip if ip.is_unspecified() && addr.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    };
    format!("{}://{shown}", if tls { "https" } else { "http" })
}
