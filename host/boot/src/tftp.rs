//! A read-only TFTP server on tokio: RFC 1350 reads with option negotiation (RFC 2347)
//! for `blksize` (2348), `tsize` and `timeout` (2349) and `windowsize` (7440).
//!
//! One task per transfer on its own socket. A new request from a peer that already has a
//! transfer replaces it (the PXE `tsize` probe aborts with an error and asks again from the
//! same port). Files come from one root directory through [`TftpRoot::resolve`], which refuses
//! anything that could leave it. Write requests are refused.

pub mod packet;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use packet::{ErrorCode, Packet};

/// Protocol limits.
#[derive(Debug, Clone, Copy)]
pub struct TftpOptions {
    /// The largest block size granted (RFC 2348 allows 8..=65464).
    pub max_blksize: u16,
    /// The largest window granted (RFC 7440).
    pub max_windowsize: u16,
    /// Retransmission timeout when the client asks for none.
    pub timeout: Duration,
    /// Retransmissions before a transfer is given up.
    pub retries: u32,
    /// Transfers at once; further requests get "server busy".
    pub max_transfers: usize,
}

impl Default for TftpOptions {
    fn default() -> Self {
        TftpOptions {
            max_blksize: 65464,
            max_windowsize: 64,
            timeout: Duration::from_secs(1),
            retries: 5,
            max_transfers: 1024,
        }
    }
}

/// The directory files are served from.
#[derive(Debug, Clone)]
pub struct TftpRoot {
    dir: PathBuf,
}

impl TftpRoot {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TftpRoot { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a request names. Leading slashes are ignored (some ROMs send `/pxelinux.0`);
    /// `..`, `.`, empty components, NUL and backslashes are refused, and so is a symlink that
    /// leads out of the root.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, (ErrorCode, &'static str)> {
        const DENIED: (ErrorCode, &str) = (ErrorCode::AccessViolation, "access violation");
        let relative = name.trim_start_matches('/');
        if relative.is_empty() || relative.contains(['\0', '\\']) {
            return Err(DENIED);
        }
        if relative
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(DENIED);
        }
        let root = self
            .dir
            .canonicalize()
            .map_err(|_| (ErrorCode::FileNotFound, "file not found"))?;
        let path = root
            .join(relative)
            .canonicalize()
            .map_err(|_| (ErrorCode::FileNotFound, "file not found"))?;
        if !path.starts_with(&root) {
            return Err(DENIED);
        }
        if !path.is_file() {
            return Err((ErrorCode::FileNotFound, "file not found"));
        }
        Ok(path)
    }
}

/// Serves read requests arriving on `socket` until the task is dropped.
pub async fn serve(socket: UdpSocket, root: TftpRoot, options: TftpOptions) -> std::io::Result<()> {
    let local = socket.local_addr()?;
    let root = Arc::new(root);
    let slots = Arc::new(Semaphore::new(options.max_transfers));
    let transfers: Arc<Mutex<HashMap<SocketAddr, AbortHandle>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let (len, peer) = socket.recv_from(&mut buf).await?;
        match Packet::parse(&buf[..len]) {
            Ok(Packet::Read {
                filename,
                mode,
                options: requested,
            }) => {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    let _ = socket
                        .send_to(&packet::error(ErrorCode::NotDefined, "server busy"), peer)
                        .await;
                    continue;
                };
                let root = root.clone();
                let registry = transfers.clone();
                let task = tokio::spawn(async move {
                    let _permit = permit;
                    let result =
                        transfer(local, peer, &root, &filename, &mode, &requested, options).await;
                    match result {
                        Ok(()) => {
                            tracing::debug!(%peer, file = %filename, "tftp transfer complete")
                        }
                        Err(e) => {
                            tracing::info!(%peer, file = %filename, error = %e, "tftp transfer ended")
                        }
                    }
                });
                let mut active = transfers_lock(&registry);
                if let Some(previous) = active.insert(peer, task.abort_handle()) {
                    previous.abort();
                }
                active.retain(|_, handle| !handle.is_finished());
            }
            Ok(Packet::Write { .. }) => {
                let _ = socket
                    .send_to(
                        &packet::error(ErrorCode::AccessViolation, "read-only server"),
                        peer,
                    )
                    .await;
            }
            Ok(Packet::Error { .. }) => {}
            Ok(_) => {
                let _ = socket
                    .send_to(
                        &packet::error(ErrorCode::IllegalOperation, "expected a read request"),
                        peer,
                    )
                    .await;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "malformed tftp packet");
                let _ = socket
                    .send_to(
                        &packet::error(ErrorCode::IllegalOperation, "malformed request"),
                        peer,
                    )
                    .await;
            }
        }
    }
}

fn transfers_lock(
    registry: &Mutex<HashMap<SocketAddr, AbortHandle>>,
) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, AbortHandle>> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts).
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, thiserror::Error)]
enum TransferError {
    #[error("refused: {0}")]
    Refused(&'static str),
    #[error("the client aborted: {0}")]
    ClientAborted(String),
    #[error("no answer after {0} retransmissions")]
    TimedOut(u32),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

struct Negotiated {
    blksize: usize,
    windowsize: u64,
    timeout: Duration,
    reply: Vec<(&'static str, String)>,
}

fn negotiate(
    requested: &std::collections::BTreeMap<String, String>,
    size: u64,
    options: TftpOptions,
) -> Negotiated {
    let mut n = Negotiated {
        blksize: 512,
        windowsize: 1,
        timeout: options.timeout,
        reply: Vec::new(),
    };
    let number = |key: &str| requested.get(key).and_then(|v| v.parse::<u64>().ok());
    if let Some(value) = number("blksize").filter(|v| *v >= 8) {
        n.blksize = value.min(u64::from(options.max_blksize)) as usize;
        n.reply.push(("blksize", n.blksize.to_string()));
    }
    if let Some(value) = number("timeout").filter(|v| (1..=255).contains(v)) {
        n.timeout = Duration::from_secs(value);
        n.reply.push(("timeout", value.to_string()));
    }
    if requested.contains_key("tsize") {
        n.reply.push(("tsize", size.to_string()));
    }
    if let Some(value) = number("windowsize").filter(|v| *v >= 1) {
        n.windowsize = value.min(u64::from(options.max_windowsize));
        n.reply.push(("windowsize", n.windowsize.to_string()));
    }
    n
}

async fn transfer(
    local: SocketAddr,
    peer: SocketAddr,
    root: &TftpRoot,
    filename: &str,
    mode: &str,
    requested: &std::collections::BTreeMap<String, String>,
    options: TftpOptions,
) -> Result<(), TransferError> {
    let socket = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
    socket.connect(peer).await?;
    if mode != "octet" && mode != "netascii" {
        return Err(refuse(
            &socket,
            ErrorCode::IllegalOperation,
            "unsupported transfer mode",
        )
        .await);
    }
    let path = match root.resolve(filename) {
        Ok(path) => path,
        Err((code, message)) => return Err(refuse(&socket, code, message).await),
    };
    let Ok(file) = std::fs::File::open(&path) else {
        return Err(refuse(&socket, ErrorCode::FileNotFound, "file not found").await);
    };
    let size = file.metadata()?.len();
    let n = negotiate(requested, size, options);
    let mut recv = vec![0u8; 1024];

    if !n.reply.is_empty() {
        let oack = packet::oack(&n.reply);
        let mut attempts = 0;
        loop {
            socket.send(&oack).await?;
            match tokio::time::timeout(n.timeout, socket.recv(&mut recv)).await {
                Ok(received) => match Packet::parse(&recv[..received?]) {
                    Ok(Packet::Ack { block: 0 }) => break,
                    Ok(Packet::Error { message, .. }) => {
                        return Err(TransferError::ClientAborted(message));
                    }
                    _ => continue,
                },
                Err(_) => {
                    attempts += 1;
                    if attempts > options.retries {
                        return Err(TransferError::TimedOut(options.retries));
                    }
                }
            }
        }
    }

    // Blocks are numbered from 1; a file whose size is a multiple of the block size ends with
    // an empty block. Internally numbers are u64; on the wire they wrap at 65536.
    let last = size / n.blksize as u64 + 1;
    let mut base = 1u64;
    let mut attempts = 0;
    let mut block = vec![0u8; n.blksize];
    let mut out = Vec::with_capacity(n.blksize + 4);
    loop {
        let end = (base + n.windowsize - 1).min(last);
        for number in base..=end {
            let offset = (number - 1) * n.blksize as u64;
            let len = read_full(&file, &mut block, offset)?;
            packet::data(&mut out, number as u16, &block[..len]);
            socket.send(&out).await?;
        }
        // Wait for an ACK that moves the window; ignore duplicates (no Sorcerer's Apprentice:
        // only a timeout triggers a resend).
        let deadline = tokio::time::Instant::now() + n.timeout;
        let acked = loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut recv)).await {
                Ok(received) => match Packet::parse(&recv[..received?]) {
                    Ok(Packet::Ack { block }) => {
                        let ahead = u64::from(block.wrapping_sub((base - 1) as u16));
                        if ahead >= 1 && ahead <= end - base + 1 {
                            break Some(base - 1 + ahead);
                        }
                    }
                    Ok(Packet::Error { message, .. }) => {
                        return Err(TransferError::ClientAborted(message));
                    }
                    _ => {}
                },
                Err(_) => break None,
            }
        };
        match acked {
            Some(acked) if acked >= last => return Ok(()),
            Some(acked) => {
                base = acked + 1;
                attempts = 0;
            }
            None => {
                attempts += 1;
                if attempts > options.retries {
                    return Err(TransferError::TimedOut(options.retries));
                }
            }
        }
    }
}

/// Tells the client why its request is refused (best effort: it may be gone).
async fn refuse(socket: &UdpSocket, code: ErrorCode, message: &'static str) -> TransferError {
    let _ = socket.send(&packet::error(code, message)).await;
    TransferError::Refused(message)
}

/// Reads up to `buf.len()` bytes at `offset`, fewer only at the end of the file.
fn read_full(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("undionly.kpxe"), b"x").unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(dir.path().join("sub")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("sub/passwd"))
            .unwrap_or_else(|e| panic!("{e}"));
        let root = TftpRoot::new(dir.path());
        assert!(root.resolve("undionly.kpxe").is_ok());
        assert!(root.resolve("/undionly.kpxe").is_ok());
        for bad in [
            "../etc/passwd",
            "sub/../undionly.kpxe",
            "./undionly.kpxe",
            "sub//x",
            "a\\b",
            "sub/passwd",
            "",
        ] {
            assert_eq!(
                root.resolve(bad).err().map(|e| e.0),
                Some(ErrorCode::AccessViolation),
                "{bad:?}"
            );
        }
        assert_eq!(
            root.resolve("missing").err().map(|e| e.0),
            Some(ErrorCode::FileNotFound)
        );
        assert_eq!(
            root.resolve("sub").err().map(|e| e.0),
            Some(ErrorCode::FileNotFound)
        );
    }

    #[test]
    fn negotiation_clamps() {
        let requested = [
            ("blksize", "100000"),
            ("tsize", "0"),
            ("windowsize", "500"),
            ("timeout", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let n = negotiate(&requested, 1234, TftpOptions::default());
        assert_eq!(
            (n.blksize, n.windowsize, n.timeout),
            (65464, 64, Duration::from_secs(1))
        );
        assert_eq!(
            n.reply,
            vec![
                ("blksize", "65464".to_string()),
                ("tsize", "1234".to_string()),
                ("windowsize", "64".to_string())
            ]
        );
    }
}
