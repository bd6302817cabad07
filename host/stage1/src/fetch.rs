//! A large file over HTTP as several `Range` requests at once, read back in order.
//!
//! The first range tells the file's length and its ETag, which `wulf serve` makes the SHA-256
//! of the image: every later range is asked `If-Range` that ETag (a rebuilt image mid-download
//! is noticed, not spliced), and the bytes are hashed as they are read, so [`Download::verify`]
//! says whether what was read is what the server meant. Workers stay at most `window` chunks
//! ahead of the reader: memory is `window x chunk`, whatever the file's size. A range that
//! fails is asked again with a growing pause (a server restarting is waited for); one that
//! keeps failing ends the download with the reason.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// How a download is split and retried.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests in flight at once.
    pub streams: usize,
    /// Bytes per range.
    pub chunk: u64,
    /// Chunks fetched ahead of the reader at most (memory: `window x chunk`).
    pub window: u64,
    /// How many times one range is asked before the download gives up.
    pub attempts: u32,
    /// The longest pause between two asks of a range.
    pub max_pause: Duration,
    /// How long one read from the server may wait.
    pub read_timeout: Duration,
    /// Extra request headers (a node's credential, for instance).
    pub headers: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            streams: 4,
            chunk: 8 << 20,
            window: 12,
            attempts: 10,
            max_pause: Duration::from_secs(8),
            read_timeout: Duration::from_secs(30),
            headers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// A range could not be had: the last reason.
    Failed { range: (u64, u64), reason: String },
    /// The server answered something that is not the range asked for.
    Protocol(String),
    /// The server's file changed during the download (a rebuilt image): start again.
    Changed,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Failed { range, reason } => {
                write!(f, "bytes {}-{}: {reason}", range.0, range.1)
            }
            FetchError::Protocol(message) => f.write_str(message),
            FetchError::Changed => f.write_str("the file changed on the server while it was read"),
        }
    }
}

impl std::error::Error for FetchError {}

impl From<FetchError> for io::Error {
    fn from(e: FetchError) -> Self {
        io::Error::other(e)
    }
}

/// What the first range said about the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub len: u64,
    /// As the server sent it, quotes included (for `If-Range`).
    pub etag: String,
}

impl Probe {
    /// The SHA-256 the ETag promises, when it is one.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        let hex_digits = self.etag.trim_start_matches("W/").trim_matches('"');
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut digest).ok()?;
        Some(digest)
    }
}

struct State {
    /// The next chunk a worker takes.
    next_claim: u64,
    /// The chunk the reader waits for.
    next_read: u64,
    done: BTreeMap<u64, Vec<u8>>,
    error: Option<FetchError>,
    /// The reader is gone: workers stop.
    cancelled: bool,
}

struct Shared {
    server: String,
    target: String,
    options: Options,
    probe: Probe,
    chunks: u64,
    state: Mutex<State>,
    /// A chunk arrived, or an error.
    arrived: Condvar,
    /// The reader moved on: room in the window.
    room: Condvar,
    /// Ranges asked again.
    retries: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn range(&self, chunk: u64) -> (u64, u64) {
        let start = chunk * self.options.chunk;
        (start, (start + self.options.chunk).min(self.probe.len) - 1)
    }
}

/// A download in progress: read it like a file, then [`Download::verify`].
pub struct Download {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
    current: Vec<u8>,
    at: usize,
    hasher: Sha256,
    read: u64,
}

/// `GET` one range of `target` from `server` (`host:port`): its bytes, and the length and
/// ETag the server gave.
fn get_range(
    server: &str,
    target: &str,
    (start, end): (u64, u64),
    if_range: Option<&str>,
    options: &Options,
) -> Result<(Vec<u8>, Probe), RangeError> {
    let mut headers: Vec<(&str, String)> = options
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    headers.push(("Range", format!("bytes={start}-{end}")));
    if let Some(etag) = if_range {
        headers.push(("If-Range", etag.to_owned()));
    }
    let response = wulf_agent::http::get(server, target, &headers, options.read_timeout, false)
        .map_err(|e| RangeError::Retry(e.to_string()))?;
    match response.status {
        206 => {}
        200 if if_range.is_some() => return Err(RangeError::Changed),
        // A whole small file: as good as the range when it is the whole file.
        200 if start == 0 && (response.body.len() as u64) <= end + 1 => {
            let probe = Probe {
                len: response.body.len() as u64,
                etag: response.header("etag").unwrap_or_default().to_owned(),
            };
            return Ok((response.body, probe));
        }
        // Busy, rebuilding, restarting: ask again.
        429 | 500..=599 => {
            return Err(RangeError::Retry(format!(
                "HTTP {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body).trim()
            )));
        }
        status => {
            return Err(RangeError::Fatal(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&response.body).trim()
            )));
        }
    }
    let range = response.header("content-range").unwrap_or_default();
    let parsed = range
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('/'))
        .and_then(|(span, len)| {
            let (a, b) = span.split_once('-')?;
            Some((
                a.parse::<u64>().ok()?,
                b.parse::<u64>().ok()?,
                len.parse::<u64>().ok()?,
            ))
        });
    let Some((a, b, len)) = parsed else {
        return Err(RangeError::Fatal(format!(
            "a 206 answer with Content-Range {range:?}"
        )));
    };
    if a != start || b < a || b > end || response.body.len() as u64 != b - a + 1 {
        return Err(RangeError::Fatal(format!(
            "asked for bytes {start}-{end}, got {a}-{b} ({} bytes)",
            response.body.len()
        )));
    }
    let probe = Probe {
        len,
        etag: response.header("etag").unwrap_or_default().to_owned(),
    };
    Ok((response.body, probe))
}

enum RangeError {
    Retry(String),
    Fatal(String),
    Changed,
}

/// Asks for `range` until it comes, the server's file changes, or `attempts` run out.
fn fetch_with_retries(
    shared: &Shared,
    range: (u64, u64),
    if_range: Option<&str>,
) -> Result<(Vec<u8>, Probe), FetchError> {
    let options = &shared.options;
    let mut pause = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match get_range(&shared.server, &shared.target, range, if_range, options) {
            Ok(got) => return Ok(got),
            Err(RangeError::Changed) => return Err(FetchError::Changed),
            Err(RangeError::Fatal(reason)) => return Err(FetchError::Protocol(reason)),
            Err(RangeError::Retry(reason)) if attempt >= options.attempts => {
                return Err(FetchError::Failed { range, reason });
            }
            Err(RangeError::Retry(reason)) => {
                shared
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                eprintln!(
                    "wulf-stage1: bytes {}-{}: {reason}; asking again in {:.1} s ({attempt}/{})",
                    range.0,
                    range.1,
                    pause.as_secs_f32(),
                    options.attempts
                );
                let started = Instant::now();
                while started.elapsed() < pause {
                    if shared.lock().cancelled {
                        return Err(FetchError::Protocol("cancelled".into()));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                pause = (pause * 2).min(options.max_pause);
                attempt += 1;
            }
        }
    }
}

fn worker(shared: Arc<Shared>) {
    loop {
        let chunk = {
            let mut state = shared.lock();
            loop {
                if state.cancelled || state.error.is_some() || state.next_claim >= shared.chunks {
                    return;
                }
                if state.next_claim < state.next_read + shared.options.window {
                    break;
                }
                state = shared.room.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.next_claim += 1;
            state.next_claim - 1
        };
        let range = shared.range(chunk);
        let result = fetch_with_retries(&shared, range, Some(&shared.probe.etag));
        let mut state = shared.lock();
        match result {
            Ok((bytes, probe))
                if probe.etag == shared.probe.etag && probe.len == shared.probe.len =>
            {
                state.done.insert(chunk, bytes);
            }
            Ok(_) => {
                state.error.get_or_insert(FetchError::Changed);
            }
            Err(e) => {
                state.error.get_or_insert(e);
            }
        }
        shared.arrived.notify_all();
    }
}

impl Download {
    /// Starts fetching `target` from `server`: the first range is asked here (its answer
    /// says how long the file is), the rest by `options.streams` workers.
    pub fn start(server: &str, target: &str, options: Options) -> Result<Download, FetchError> {
        let options = Options {
            streams: options.streams.max(1),
            chunk: options.chunk.max(64 << 10),
            window: options.window.max(options.streams as u64).max(1),
            attempts: options.attempts.max(1),
            ..options
        };
        let mut shared = Shared {
            server: server.to_owned(),
            target: target.to_owned(),
            probe: Probe {
                len: 0,
                etag: String::new(),
            },
            chunks: 0,
            state: Mutex::new(State {
                next_claim: 1,
                next_read: 0,
                done: BTreeMap::new(),
                error: None,
                cancelled: false,
            }),
            arrived: Condvar::new(),
            room: Condvar::new(),
            retries: Default::default(),
            options,
        };
        let (first, probe) = fetch_with_retries(&shared, (0, shared.options.chunk - 1), None)?;
        shared.chunks = probe.len.div_ceil(shared.options.chunk);
        shared.probe = probe;
        shared.lock().done.insert(0, first);
        let shared = Arc::new(shared);
        let workers = (0..shared.options.streams)
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("range-{i}"))
                    .spawn(move || worker(shared))
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| FetchError::Protocol(format!("starting the download threads: {e}")))?;
        Ok(Download {
            shared,
            workers,
            current: Vec::new(),
            at: 0,
            hasher: Sha256::new(),
            read: 0,
        })
    }

    pub fn probe(&self) -> &Probe {
        &self.shared.probe
    }

    /// How many ranges were asked again so far.
    pub fn retries(&self) -> u64 {
        self.shared
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads what is left (unread bytes still count), then checks the whole against the
    /// SHA-256 the ETag gave: `Ok(true)` when they match, `Ok(false)` when the server gave no
    /// hash to check against, an error on a mismatch.
    pub fn verify(&mut self) -> io::Result<bool> {
        io::copy(self, &mut io::sink())?;
        let Some(expected) = self.shared.probe.sha256() else {
            return Ok(false);
        };
        let got: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if got == expected {
            Ok(true)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the {} bytes read hash to sha256 {}, the server said {}: the download was corrupted",
                    self.read,
                    hex::encode(got),
                    hex::encode(expected)
                ),
            ))
        }
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.current.len() {
            let mut state = self.shared.lock();
            if state.next_read >= self.shared.chunks {
                return Ok(0);
            }
            loop {
                let wanted = state.next_read;
                if let Some(chunk) = state.done.remove(&wanted) {
                    state.next_read += 1;
                    self.shared.room.notify_all();
                    self.current = chunk;
                    self.at = 0;
                    break;
                }
                if let Some(error) = &state.error {
                    return Err(error.clone().into());
                }
                state = self
                    .shared
                    .arrived
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            drop(state);
            self.hasher.update(&self.current);
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        self.read += n as u64;
        Ok(n)
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        self.shared.lock().cancelled = true;
        self.shared.room.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
