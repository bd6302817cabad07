//! The HTTP/1.1 connections of the boot server. Requests are parsed here and answered by the
//! axum router; a file response's body ([`SendFile`]) is written with `sendfile(2)`, which a
//! body stream through hyper cannot do. A boot storm is many long downloads of the same few
//! files: with sendfile the bytes go from the page cache to the socket without passing through
//! user space, and a connection costs a few kilobytes, not buffers.
//!
//! Keep-alive and pipelining as HTTP/1.1 has them; requests may carry no body beyond a small
//! one (stage one's reports); slow or stalled clients are timed out.
//!
//! Connections are capped in total (below the open-file limit, so `accept` never runs out of
//! descriptors) and per peer address ([`Limits`]). At a cap, a new connection takes the place
//! of the oldest idle one (waiting for a request, or trickling one in), the peer's own first;
//! only when every connection is busy answering is it refused, with 503. Idle or slow clients,
//! however many, cannot keep a node's request from being answered: a request (head and body)
//! must arrive within 60 s, during which the connection stays sheddable, and a response must be
//! taken at 64 KiB/s on average after its first 60 s.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version, header};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

use crate::files::SendFile;

/// A request's header block may not be larger.
const MAX_HEAD: usize = 16 * 1024;
/// Request bodies are not used; small ones are read and dropped.
const MAX_BODY: u64 = 64 * 1024;
/// Room taken for a request head once its first bytes are there (iPXE's are ~150 bytes; a
/// longer head grows the buffer).
const HEAD_BUFFER: usize = 1024;
/// Bodies the router builds (scripts, status, metrics) are collected up to this size.
const MAX_RESPONSE: usize = 64 << 20;
/// How long a client may take to send a request, or to take the next part of a response.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// sendfile(2) moves at most this much per call, so one huge file cannot hog a worker.
const SENDFILE_STEP: usize = 4 << 20;

/// How many connections are kept at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_peer: usize,
}

/// The open connections: who, and since when each has been idle.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    /// What idle times count from.
    epoch: Instant,
    open: Mutex<Open>,
    shed: AtomicU64,
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    conns: HashMap<u64, Conn>,
    per_peer: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Conn {
    peer: IpAddr,
    state: Arc<ConnState>,
}

/// What a connection and the registry share, so that marking it idle or busy (twice a
/// request) takes no lock.
#[derive(Debug, Default)]
struct ConnState {
    /// When it became idle (waiting for or reading a request), in nanoseconds after
    /// [`Connections::epoch`] plus one; 0 while busy answering.
    idle_since: AtomicU64,
    /// Set when the registry closed it to make room.
    shed: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl Open {
    fn remove(&mut self, id: u64) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&conn.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&conn.peer);
            }
        }
        Some(conn)
    }

    /// Closes the connection idle the longest among those `which` selects.
    fn shed_oldest_idle(&mut self, which: impl Fn(&Conn) -> bool) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, c)| which(c))
            .map(|(id, c)| (c.state.idle_since.load(Ordering::Relaxed), *id))
            .filter(|(since, _)| *since != 0)
            .min();
        match oldest.and_then(|(_, id)| self.remove(id)) {
            Some(conn) => {
                conn.state.shed.store(true, Ordering::Relaxed);
                conn.state.wake.notify_one();
                true
            }
            None => false,
        }
    }
}

impl Connections {
    pub fn new(limits: Limits) -> Self {
        Connections {
            limits,
            epoch: Instant::now(),
            open: Mutex::default(),
            shed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// An idle stamp for now (never 0).
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // Every change is a few field updates that cannot panic halfway.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a connection from `peer`, made by closing an idle one if a cap is reached;
    /// `None` when every connection in the way is busy.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let mut open = self.lock();
        let from_peer = open.per_peer.get(&peer).copied().unwrap_or(0);
        let mut shed = 0;
        if from_peer >= self.limits.per_peer {
            if !open.shed_oldest_idle(|c| c.peer == peer) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            shed += 1;
        }
        if open.conns.len() >= self.limits.total {
            if !open.shed_oldest_idle(|_| true) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            shed += 1;
        }
        self.shed.fetch_add(shed, Ordering::Relaxed);
        let id = open.next;
        open.next += 1;
        let state = Arc::new(ConnState::default());
        state.idle_since.store(self.now(), Ordering::Relaxed);
        open.conns.insert(
            id,
            Conn {
                peer,
                state: Arc::clone(&state),
            },
        );
        *open.per_peer.entry(peer).or_default() += 1;
        Some(Slot {
            connections: Arc::clone(self),
            id,
            state,
        })
    }

    /// Prometheus lines: open connections, and those shed or refused at a cap.
    pub fn render_metrics(&self) -> String {
        let open = self.lock().conns.len();
        format!(
            "# HELP wulf_http_connections Open HTTP connections.\n# TYPE wulf_http_connections gauge\nwulf_http_connections {open}\n\
             # HELP wulf_http_connections_limit The cap on open HTTP connections.\n# TYPE wulf_http_connections_limit gauge\nwulf_http_connections_limit {}\n\
             # HELP wulf_http_connections_shed_total Idle connections closed to make room at a cap.\n# TYPE wulf_http_connections_shed_total counter\nwulf_http_connections_shed_total {}\n\
             # HELP wulf_http_connections_refused_total Connections refused at a cap (every other one busy).\n# TYPE wulf_http_connections_refused_total counter\nwulf_http_connections_refused_total {}\n",
            self.limits.total,
            self.shed.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// A connection's place in [`Connections`], given up when dropped.
struct Slot {
    connections: Arc<Connections>,
    id: u64,
    state: Arc<ConnState>,
}

impl Slot {
    /// Marks the connection idle (sheddable) or busy; `false` when it was shed meanwhile and
    /// must close.
    fn set_idle(&self, idle: bool) -> bool {
        let stamp = if idle { self.connections.now() } else { 0 };
        self.state.idle_since.store(stamp, Ordering::Relaxed);
        !self.state.shed.load(Ordering::Relaxed)
    }

    /// Resolves when the registry closed this connection to make room.
    async fn shed(&self) {
        self.state.wake.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.lock().remove(self.id);
    }
}

/// Accepts connections forever, one task each, within `connections`' limits.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Arc<Connections>,
) -> io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, or a connection reset before accept: keep serving.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = connections.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: every connection at the cap is busy");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = reply_and_close(&mut stream, StatusCode::SERVICE_UNAVAILABLE).await;
            });
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(stream, peer, router, &slot).await {
                use io::ErrorKind::{BrokenPipe, ConnectionReset};
                if matches!(error.kind(), BrokenPipe | ConnectionReset) {
                    tracing::debug!(%peer, %error, "the client went away");
                } else {
                    tracing::warn!(%peer, %error, "connection ended early");
                }
            }
        });
    }
}

/// One parsed request head.
struct Head {
    request: Request<Body>,
    keep_alive: bool,
    body_len: u64,
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    slot: &Slot,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    // Holds memory only while a request is arriving: a connection that waits for its next
    // request or sends a file holds none (10,000 connections in a storm, 20 MiB).
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if !slot.set_idle(true) {
            return Ok(());
        }
        // Read until a whole header block is buffered (a pipelined one may be already). The
        // whole head must arrive within the timeout, not each piece of it: a client trickling a
        // byte at a time cannot hold the connection.
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        let (mut head, used) = loop {
            match parse(&buf, peer) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) if buf.len() >= MAX_HEAD => {
                    return reply_and_close(
                        &mut stream,
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    )
                    .await;
                }
                Ok(None) => {}
                Err(status) => return reply_and_close(&mut stream, status).await,
            }
            // Straight into the buffer: a chunk array here would sit in every connection's
            // task for its whole life (10,000 connections, 20 MiB).
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, read_some(&stream, &mut buf)) => read,
                () = slot.shed() => {
                    tracing::debug!(%peer, "idle connection closed to make room");
                    return Ok(());
                }
            };
            let Ok(read) = read else {
                if buf.is_empty() {
                    return Ok(()); // an idle keep-alive connection: close it quietly
                }
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head too slow",
                ));
            };
            if read? == 0 {
                return Ok(()); // the client is done
            }
        };
        buf.drain(..used);
        if head.body_len > MAX_BODY {
            return reply_and_close(&mut stream, StatusCode::PAYLOAD_TOO_LARGE).await;
        }
        // The body, within the same deadline as the head: until it is read the request is
        // still arriving, and the connection stays sheddable.
        let mut left = head.body_len;
        let mut body = Vec::new();
        while left > 0 {
            if buf.is_empty() {
                let read = tokio::select! {
                    read = tokio::time::timeout_at(deadline, read_some(&stream, &mut buf)) => read,
                    () = slot.shed() => return Ok(()),
                };
                let n = read.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "request body too slow")
                })??;
                if n == 0 {
                    return Ok(());
                }
            }
            let take = left.min(buf.len() as u64) as usize;
            body.extend(buf.drain(..take));
            left -= take as u64;
        }
        if !body.is_empty() {
            *head.request.body_mut() = Body::from(body);
        }
        if !slot.set_idle(false) {
            return Ok(()); // shed as the request completed: another took its place
        }
        if buf.is_empty() {
            buf = Vec::new(); // nothing pipelined behind this request
        }

        let is_head = head.request.method() == axum::http::Method::HEAD;
        // Boxed: the handlers' futures are large and live only while a request is answered,
        // not in every connection's task while it waits or sends a file.
        let response = match Box::pin(router.clone().oneshot(head.request)).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let keep_alive = head.keep_alive;
        write_response(&mut stream, response, is_head, keep_alive).await?;
        if !keep_alive {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

/// Reads what has arrived into `buf`, taking [`HEAD_BUFFER`] for it only once the first
/// bytes are there.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        if buf.capacity() == buf.len() {
            stream.readable().await?;
            buf.reserve(HEAD_BUFFER);
        }
        match stream.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.readable().await?,
            read => return read,
        }
    }
}

/// Parses a request head at the start of `buf`: `None` until it is complete; the status to
/// answer for a bad one.
fn parse(buf: &[u8], peer: SocketAddr) -> Result<Option<(Head, usize)>, StatusCode> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Err(_) => return Err(StatusCode::BAD_REQUEST),
    };
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut builder = Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(parsed.path.unwrap_or("/"))
        .version(version);
    let mut connection = String::new();
    let mut body_len: Option<u64> = None;
    for h in parsed.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked request bodies: nothing here takes a body.
            return Err(StatusCode::LENGTH_REQUIRED);
        }
        if name.eq_ignore_ascii_case("content-length") {
            let length: u64 = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(StatusCode::BAD_REQUEST)?;
            // Two lengths that differ: which one a proxy in front believed is anyone's guess
            // (RFC 9112 section 6.3), so the request is refused.
            if body_len.is_some_and(|seen| seen != length) {
                return Err(StatusCode::BAD_REQUEST);
            }
            body_len = Some(length);
        }
        if name.eq_ignore_ascii_case("connection") {
            connection = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        }
        builder = builder.header(name, h.value);
    }
    let keep_alive = match version {
        Version::HTTP_10 => connection.contains("keep-alive"),
        _ => !connection.contains("close"),
    };
    let mut request = builder
        .body(Body::empty())
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    request.extensions_mut().insert(ConnectInfo(peer));
    Ok(Some((
        Head {
            request,
            keep_alive,
            body_len: body_len.unwrap_or(0),
        },
        used,
    )))
}

async fn write_response(
    stream: &mut TcpStream,
    response: Response<Body>,
    is_head: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let (mut parts, body) = response.into_parts();
    let sendfile = parts.extensions.remove::<Arc<SendFile>>();
    // An image's place under `max-image-streams`, given back when its body is out.
    let _admitted = parts.extensions.remove::<Arc<crate::admission::Admitted>>();
    let collected = match &sendfile {
        Some(_) => {
            drop(body);
            None
        }
        None => Some(
            axum::body::to_bytes(body, MAX_RESPONSE)
                .await
                .map_err(io::Error::other)?,
        ),
    };
    // A handler that set a length (a file's, for HEAD) knows better than the empty body.
    let bodiless = matches!(
        parts.status,
        StatusCode::NOT_MODIFIED | StatusCode::NO_CONTENT
    );
    if let Some(bytes) = &collected
        && !bodiless
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            parts.status.as_u16(),
            parts.status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    write_headers(&mut head, &parts.headers, keep_alive);
    // A file can take minutes to send: what is left of the response goes before it does.
    drop(parts);
    match collected {
        Some(bytes) if !is_head => {
            head.extend_from_slice(&bytes);
            timeout(stream.write_all(&head)).await
        }
        _ => {
            timeout(stream.write_all(&head)).await?;
            drop(head);
            match sendfile {
                Some(body) if !is_head => {
                    let mut pace = Pace::new();
                    for (file, offset, len) in &body.pieces {
                        send_piece(stream, file, *offset, *len, &mut pace).await?;
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
    }
}

fn write_headers(out: &mut Vec<u8>, headers: &HeaderMap, keep_alive: bool) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The slowest a client may take a response, after a first [`IO_TIMEOUT`] of grace: one that
/// reads a byte a minute cannot hold a connection (and its place under the caps) for days.
const MIN_SEND_RATE: u64 = 64 * 1024;

/// How much of a response went out since it started.
struct Pace {
    started: Instant,
    sent: u64,
}

impl Pace {
    fn new() -> Self {
        Pace {
            started: Instant::now(),
            sent: 0,
        }
    }

    fn sent(&mut self, bytes: usize) -> io::Result<()> {
        self.sent += bytes as u64;
        let late = self.started.elapsed().saturating_sub(IO_TIMEOUT);
        if (self.sent as f64) < late.as_secs_f64() * MIN_SEND_RATE as f64 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client reads too slowly",
            ));
        }
        Ok(())
    }
}

/// `len` bytes of `file` from `offset` to the socket, by sendfile(2).
async fn send_piece(
    stream: &TcpStream,
    file: &std::fs::File,
    offset: u64,
    len: u64,
    pace: &mut Pace,
) -> io::Result<()> {
    let end = offset + len;
    let mut at = offset;
    while at < end {
        let step = (end - at).min(SENDFILE_STEP as u64) as usize;
        let sent = timeout(stream.async_io(Interest::WRITABLE, || {
            let mut position = at;
            rustix::fs::sendfile(stream, file, Some(&mut position), step).map_err(io::Error::from)
        }))
        .await?;
        if sent == 0 {
            // The file is shorter than when it was opened: it was truncated in place.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was sent",
            ));
        }
        at += sent as u64;
        pace.sent(sent)?;
    }
    Ok(())
}

/// A minimal response to a request that cannot be parsed, then the connection closes.
async fn reply_and_close(stream: &mut TcpStream, status: StatusCode) -> io::Result<()> {
    let text = format!(
        "HTTP/1.1 {} {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let _ = timeout(stream.write_all(text.as_bytes())).await;
    let _ = stream.shutdown().await;
    Ok(())
}

async fn timeout<T>(io: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client too slow"))?
}

/// The HTTP request-head parser under generated input, run by every `cargo test` for a
/// bounded number of cases (`WULF_FUZZ_CASES`): arbitrary bytes, heads built from arbitrary
/// methods, targets and headers, and valid heads cut or corrupted anywhere. It must never
/// panic; a head it accepts is complete and its length is within the buffer; conflicting
/// lengths and chunked bodies are refused.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000))
    }

    fn check(buf: &[u8]) -> Result<(), TestCaseError> {
        match parse(buf, peer()) {
            Ok(Some((head, used))) => {
                prop_assert!(used <= buf.len());
                // A head ends with an empty line (httparse takes LF for CRLF anywhere).
                prop_assert!(buf[..used].ends_with(b"\n"));
                let _ = head.request.uri().path();
            }
            Ok(None) => {}
            Err(status) => prop_assert!(status.is_client_error(), "{status}"),
        }
        Ok(())
    }

    fn token() -> impl Strategy<Value = String> {
        "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[ -~]{0,40}"
    }

    proptest! {
        #![proptest_config(crate::tftp::packet::fuzz::config())]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            check(&bytes)?;
        }

        #[test]
        fn generated_heads_parse_or_are_refused(
            method in token(),
            target in "/[ -~&&[^ ]]{0,60}",
            headers in proptest::collection::vec((token(), value()), 0..12),
            lengths in proptest::collection::vec(0u64..100_000, 0..3),
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        ) {
            let mut head = format!("{method} {target} HTTP/1.1\r\n");
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            for length in &lengths {
                head.push_str(&format!("content-length: {length}\r\n"));
            }
            head.push_str("\r\n");
            let bytes = head.into_bytes();
            // Whole: lengths that disagree are refused, agreeing ones taken.
            let chunked = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
            let other_lengths = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
            match parse(&bytes, peer()) {
                Ok(Some((parsed, used))) => {
                    prop_assert_eq!(used, bytes.len());
                    prop_assert!(!chunked);
                    if !other_lengths {
                        prop_assert!(lengths.windows(2).all(|w| w[0] == w[1]));
                        prop_assert_eq!(parsed.body_len, lengths.first().copied().unwrap_or(0));
                    }
                }
                Ok(None) => prop_assert!(false, "a whole head is not partial"),
                Err(status) => prop_assert!(status.is_client_error()),
            }
            // Cut and corrupted.
            let mut broken = bytes.clone();
            for (at, byte) in flips {
                let i = at.index(broken.len());
                broken[i] = byte;
            }
            let end = cut.index(broken.len() + 1);
            check(&broken[..end])?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task is what 10,000 booting nodes hold at once: it keeps no buffers
    /// inline and no handler's future (they are boxed while a request is answered).
    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_task_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let _client = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (stream, peer) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let connections = Arc::new(Connections::new(Limits {
            total: 16,
            per_peer: 16,
        }));
        let slot = connections
            .admit(peer.ip())
            .unwrap_or_else(|| panic!("room for one"));
        let task = connection(stream, peer, Router::new(), &slot);
        let size = std::mem::size_of_val(&task);
        // 3,064 bytes with a read chunk inline and the router's future unboxed.
        assert!(size <= 2048, "a connection's task is {size} bytes");
    }
}
