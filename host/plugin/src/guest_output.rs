//! Where a plugin's stdout and stderr go: a pipe that takes everything the guest writes and
//! keeps only the last bytes, so a chatty or hostile plugin can neither trap on a full pipe nor
//! make the host hold its output. Panic messages come last, so the tail is what matters.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Debug, Default)]
struct Tail {
    kept: Vec<u8>,
    /// Bytes written before the kept ones and dropped.
    dropped: u64,
}

/// A pipe keeping the last `cap` bytes written to it.
#[derive(Debug, Clone)]
pub(crate) struct TailPipe {
    cap: usize,
    tail: Arc<Mutex<Tail>>,
}

impl TailPipe {
    pub(crate) fn new(cap: usize) -> Self {
        TailPipe {
            cap,
            tail: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = if bytes.len() > self.cap {
            let cut = bytes.len() - self.cap;
            tail.dropped += cut as u64;
            &bytes[cut..]
        } else {
            bytes
        };
        let over = (tail.kept.len() + bytes.len()).saturating_sub(self.cap);
        if over > 0 {
            tail.kept.drain(..over);
            tail.dropped += over as u64;
        }
        tail.kept.extend_from_slice(bytes);
    }

    /// Forgets what was written.
    pub(crate) fn clear(&self) {
        *self.tail.lock().unwrap_or_else(|p| p.into_inner()) = Tail::default();
    }

    /// The kept bytes as text, and how many bytes before them were dropped.
    pub(crate) fn contents(&self) -> (String, u64) {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        (
            String::from_utf8_lossy(&tail.kept).into_owned(),
            tail.dropped,
        )
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for TailPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Any amount, always: what does not fit pushes older bytes out.
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for TailPipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for TailPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_and_counts_the_rest() {
        let pipe = TailPipe::new(8);
        pipe.push(b"0123");
        pipe.push(b"456789");
        assert_eq!(pipe.contents(), ("23456789".to_owned(), 2));
        pipe.push(b"abcdefghijkl");
        assert_eq!(pipe.contents(), ("efghijkl".to_owned(), 14));
    }
}
