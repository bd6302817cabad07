//! A read-only TFTP server on tokio: RFC 1350 reads with option negotiation (RFC 2347)
//! for `blksize` (2348), `tsize` and `timeout` (2349) and `windowsize` (7440).
//!
//! One task per transfer on its own socket. A new request from a peer that already has a
//! transfer replaces it (the PXE `tsize` probe aborts with an error and asks again from the
//! same port). Files come from one root directory through [`TftpRoot::resolve`], which refuses
//! anything that could leave it. Write requests are refused.
//!
//! TFTP requests are unauthenticated UDP, so anyone can spoof them: transfers are capped in
//! total and per peer address, a client may ask for a retransmission timeout of at most
//! [`MAX_CLIENT_TIMEOUT`], and when the slots are full a new request takes the slot of the
//! oldest transfer whose client never answered. A flood of silent requests cannot keep a
//! real PXE client, which answers within a round trip, from booting.

pub mod packet;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use packet::{ErrorCode, Packet};

/// Protocol limits.
#[derive(Debug, Clone, Copy)]
pub struct TftpOptions {
    /// The largest block size granted (RFC 2348 allows 8..=65464).
    pub max_blksize: u16,
    /// The largest window granted (RFC 7440).
    pub max_windowsize: u16,
    /// The longest retransmission timeout when the client asks for none: the first one,
    /// before a round trip was measured, and the cap of the backoff. Once a round trip is
    /// measured, retransmissions follow it (see [`RetransmitTimer`]).
    pub timeout: Duration,
    /// A transfer is given up when nothing moved it for `retries + 1` timeouts.
    pub retries: u32,
    /// Transfers at once; past it a request takes a silent transfer's slot, or gets "server
    /// busy".
    pub max_transfers: usize,
    /// Transfers at once to one peer address (any port).
    pub max_per_peer: usize,
}

/// The longest retransmission timeout a client may ask for (RFC 2349 allows 255 s); a longer
/// one is not acknowledged and the server's own applies.
pub const MAX_CLIENT_TIMEOUT: u64 = 5;

impl Default for TftpOptions {
    fn default() -> Self {
        TftpOptions {
            max_blksize: 65464,
            max_windowsize: 64,
            timeout: Duration::from_secs(1),
            retries: 5,
            max_transfers: 1024,
            max_per_peer: 8,
        }
    }
}

/// A transfer in progress.
struct Running {
    abort: AbortHandle,
    started: Instant,
    /// Whether its client has answered (acknowledged anything).
    heard: Arc<AtomicBool>,
}

/// The transfers in progress, by peer.
#[derive(Default)]
struct Transfers(HashMap<SocketAddr, Running>);

impl Transfers {
    /// Makes room for a transfer to `peer`, or says why there is none: a transfer to the same
    /// peer and port is replaced; past a cap, the oldest transfer whose client never answered
    /// (the peer's own first) gives up its slot.
    fn admit(&mut self, peer: SocketAddr, options: &TftpOptions) -> Result<(), &'static str> {
        self.0.retain(|_, t| !t.abort.is_finished());
        if let Some(previous) = self.0.remove(&peer) {
            previous.abort.abort();
        }
        let same_ip = |ip: IpAddr| move |addr: &SocketAddr| addr.ip() == ip;
        if self.0.keys().filter(|a| same_ip(peer.ip())(a)).count() >= options.max_per_peer
            && !self.reclaim(same_ip(peer.ip()))
        {
            return Err("too many transfers to this address");
        }
        if self.0.len() >= options.max_transfers && !self.reclaim(|_| true) {
            return Err("server busy");
        }
        Ok(())
    }

    /// Aborts the oldest silent transfer among the peers `which` selects.
    fn reclaim(&mut self, which: impl Fn(&SocketAddr) -> bool) -> bool {
        let oldest = self
            .0
            .iter()
            .filter(|(addr, t)| which(addr) && !t.heard.load(Ordering::Relaxed))
            .min_by_key(|(_, t)| t.started)
            .map(|(addr, _)| *addr);
        match oldest.and_then(|addr| self.0.remove(&addr)) {
            Some(silent) => {
                silent.abort.abort();
                tracing::debug!("a silent tftp transfer gave up its slot");
                true
            }
            None => false,
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
    let transfers: Arc<Mutex<Transfers>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let (len, peer) = socket.recv_from(&mut buf).await?;
        match Packet::parse(&buf[..len]) {
            Ok(Packet::Read {
                filename,
                mode,
                options: requested,
            }) => {
                let admitted = transfers_lock(&transfers).admit(peer, &options);
                if let Err(why) = admitted {
                    tracing::debug!(%peer, why, "tftp request refused");
                    let _ = socket
                        .send_to(&packet::error(ErrorCode::NotDefined, why), peer)
                        .await;
                    continue;
                }
                let root = root.clone();
                let heard = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn({
                    let heard = Arc::clone(&heard);
                    async move {
                        let result = transfer(
                            local, peer, &root, &filename, &mode, &requested, options, &heard,
                        )
                        .await;
                        match result {
                            Ok(()) => {
                                tracing::debug!(%peer, file = %filename, "tftp transfer complete")
                            }
                            Err(e) => {
                                tracing::info!(%peer, file = %filename, error = %e, "tftp transfer ended")
                            }
                        }
                    }
                });
                transfers_lock(&transfers).0.insert(
                    peer,
                    Running {
                        abort: task.abort_handle(),
                        started: Instant::now(),
                        heard,
                    },
                );
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

fn transfers_lock(registry: &Mutex<Transfers>) -> std::sync::MutexGuard<'_, Transfers> {
    // A panic while holding this lock cannot leave the map inconsistent (single changes).
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

pub(crate) struct Negotiated {
    blksize: usize,
    windowsize: u64,
    timeout: Duration,
    /// The client asked for `timeout` (RFC 2349): it is then used as asked, not adapted.
    fixed_timeout: bool,
    reply: Vec<(&'static str, String)>,
}

/// The shortest retransmission timeout: below it, a client busy for a moment (a PXE ROM
/// writing a block to memory) would get blocks it already has.
const MIN_RTO: Duration = Duration::from_millis(20);

/// When to resend a window, from the round trips measured on this transfer: RFC 6298's
/// estimator (SRTT + 4·RTTVAR, samples only from windows sent once, doubled on each timeout),
/// between [`MIN_RTO`] and the negotiated timeout. A PXE ROM reads in lock-step, so every
/// lost packet costs one timeout: a fixed second made 0.1 % loss on a 1 ms link cost more
/// than the transfer itself.
#[derive(Debug, Clone)]
pub(crate) struct RetransmitTimer {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    max: Duration,
    fixed: bool,
}

impl RetransmitTimer {
    fn new(max: Duration, fixed: bool) -> Self {
        RetransmitTimer {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: max,
            max,
            fixed,
        }
    }

    fn rto(&self) -> Duration {
        self.rto
    }

    /// A round trip of a window that was sent once.
    fn sample(&mut self, rtt: Duration) {
        if self.fixed {
            return;
        }
        let (srtt, rttvar) = match self.srtt {
            None => (rtt, rtt / 2),
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                (srtt * 7 / 8 + rtt / 8, self.rttvar * 3 / 4 + delta / 4)
            }
        };
        self.srtt = Some(srtt);
        self.rttvar = rttvar;
        self.rto = (srtt + rttvar * 4).clamp(MIN_RTO, self.max);
    }

    /// The window was not acknowledged in time.
    fn backoff(&mut self) {
        self.rto = (self.rto * 2).min(self.max);
    }
}

pub(crate) fn negotiate(
    requested: &std::collections::BTreeMap<String, String>,
    size: u64,
    options: TftpOptions,
) -> Negotiated {
    let mut n = Negotiated {
        blksize: 512,
        windowsize: 1,
        timeout: options.timeout,
        fixed_timeout: false,
        reply: Vec::new(),
    };
    let number = |key: &str| requested.get(key).and_then(|v| v.parse::<u64>().ok());
    if let Some(value) = number("blksize").filter(|v| *v >= 8) {
        n.blksize = value.min(u64::from(options.max_blksize)) as usize;
        n.reply.push(("blksize", n.blksize.to_string()));
    }
    if let Some(value) = number("timeout").filter(|v| (1..=MAX_CLIENT_TIMEOUT).contains(v)) {
        n.timeout = Duration::from_secs(value);
        n.fixed_timeout = true;
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

/// Sends `filename` to `peer`; `heard` is set once the client answers.
#[allow(clippy::too_many_arguments)]
async fn transfer(
    local: SocketAddr,
    peer: SocketAddr,
    root: &TftpRoot,
    filename: &str,
    mode: &str,
    requested: &std::collections::BTreeMap<String, String>,
    options: TftpOptions,
    heard: &AtomicBool,
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
    let mut timer = RetransmitTimer::new(n.timeout, n.fixed_timeout);
    // Given up when nothing moved the transfer for this long.
    let patience = n.timeout * (options.retries + 1);

    if !n.reply.is_empty() {
        let oack = packet::oack(&n.reply);
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            let sent = Instant::now();
            socket.send(&oack).await?;
            match tokio::time::timeout(timer.rto(), socket.recv(&mut recv)).await {
                Ok(received) => match Packet::parse(&recv[..received?]) {
                    Ok(Packet::Ack { block: 0 }) => {
                        heard.store(true, Ordering::Relaxed);
                        if attempts == 0 {
                            timer.sample(sent.elapsed());
                        }
                        break;
                    }
                    Ok(Packet::Error { message, .. }) => {
                        return Err(TransferError::ClientAborted(message));
                    }
                    _ => continue,
                },
                Err(_) => {
                    attempts += 1;
                    timer.backoff();
                    if started.elapsed() >= patience {
                        return Err(TransferError::TimedOut(attempts));
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
    let mut stalled = Instant::now();
    let mut block = vec![0u8; n.blksize];
    let mut out = Vec::with_capacity(n.blksize + 4);
    loop {
        let end = (base + n.windowsize - 1).min(last);
        let sent = Instant::now();
        for number in base..=end {
            let offset = (number - 1) * n.blksize as u64;
            let len = read_full(&file, &mut block, offset)?;
            packet::data(&mut out, number as u16, &block[..len]);
            socket.send(&out).await?;
        }
        // Wait for an ACK that moves the window; ignore duplicates (no Sorcerer's Apprentice:
        // only a timeout triggers a resend).
        let deadline = tokio::time::Instant::now() + timer.rto();
        let acked = loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut recv)).await {
                Ok(received) => match Packet::parse(&recv[..received?]) {
                    Ok(Packet::Ack { block }) => {
                        heard.store(true, Ordering::Relaxed);
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
                // Karn: a window sent again cannot tell which copy was acknowledged.
                if attempts == 0 {
                    timer.sample(sent.elapsed());
                }
                base = acked + 1;
                attempts = 0;
                stalled = Instant::now();
            }
            None => {
                attempts += 1;
                timer.backoff();
                if stalled.elapsed() >= patience {
                    return Err(TransferError::TimedOut(attempts));
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
    fn full_slots_go_to_new_requests_from_silent_transfers_only() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let _entered = runtime.enter();
        let options = TftpOptions {
            max_transfers: 3,
            max_per_peer: 2,
            ..TftpOptions::default()
        };
        let mut transfers = Transfers::default();
        let addr = |ip: u8, port: u16| SocketAddr::from(([127, 0, 0, ip], port));
        let start = |t: &mut Transfers, peer: SocketAddr, heard: bool| {
            let r = t.admit(peer, &options);
            if r.is_ok() {
                let task = tokio::spawn(std::future::pending::<()>());
                t.0.insert(
                    peer,
                    Running {
                        abort: task.abort_handle(),
                        started: Instant::now(),
                        heard: Arc::new(AtomicBool::new(heard)),
                    },
                );
            }
            r
        };
        assert_eq!(start(&mut transfers, addr(2, 1), true), Ok(()));
        assert_eq!(start(&mut transfers, addr(2, 2), true), Ok(()));
        assert_eq!(
            start(&mut transfers, addr(2, 3), false),
            Err("too many transfers to this address"),
            "the peer's transfers all answer"
        );
        assert_eq!(start(&mut transfers, addr(3, 1), false), Ok(()));
        // Full: a new peer takes the silent transfer's slot, never an answering one's.
        assert_eq!(start(&mut transfers, addr(4, 1), false), Ok(()));
        assert!(!transfers.0.contains_key(&addr(3, 1)));
        assert!(transfers.0.contains_key(&addr(2, 1)) && transfers.0.contains_key(&addr(2, 2)));
        transfers
            .0
            .values()
            .for_each(|t| t.heard.store(true, Ordering::Relaxed));
        assert_eq!(start(&mut transfers, addr(5, 1), false), Err("server busy"));
        // The same peer and port asking again replaces its transfer.
        assert_eq!(start(&mut transfers, addr(4, 1), false), Ok(()));
        assert_eq!(transfers.0.len(), 3);
    }

    #[test]
    fn retransmission_follows_the_measured_round_trip() {
        let second = Duration::from_secs(1);
        let mut timer = RetransmitTimer::new(second, false);
        // Nothing measured yet: the configured timeout.
        assert_eq!(timer.rto(), second);
        // A steady 1 ms link: the floor, not a second.
        for _ in 0..20 {
            timer.sample(Duration::from_millis(1));
        }
        assert_eq!(timer.rto(), MIN_RTO);
        // A slow client (150 ms a round trip) is waited for.
        for _ in 0..20 {
            timer.sample(Duration::from_millis(150));
        }
        let slow = timer.rto();
        assert!(
            slow >= Duration::from_millis(150) && slow < second,
            "{slow:?}"
        );
        // Each timeout doubles it, up to the configured timeout.
        timer.backoff();
        assert_eq!(timer.rto(), (slow * 2).min(second));
        for _ in 0..10 {
            timer.backoff();
        }
        assert_eq!(timer.rto(), second);
        // A timeout the client asked for is kept as asked.
        let mut asked = RetransmitTimer::new(Duration::from_secs(3), true);
        asked.sample(Duration::from_millis(1));
        assert_eq!(asked.rto(), Duration::from_secs(3));
    }

    #[test]
    fn a_client_cannot_ask_for_a_long_timeout() {
        let ask = |timeout: &str| {
            let requested = [("timeout".to_string(), timeout.to_string())].into();
            let n = negotiate(&requested, 1, TftpOptions::default());
            (n.timeout, n.reply)
        };
        assert_eq!(
            ask("3"),
            (Duration::from_secs(3), vec![("timeout", "3".to_string())])
        );
        assert_eq!(ask("255"), (Duration::from_secs(1), vec![]));
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
