//! Admission control for image streams (`[server] max-image-streams`).
//!
//! A boot storm's images are most of its bytes. Sent all at once, a thousand of them keep
//! every worker busy moving data, and the small requests that tell a node what to do next
//! (iPXE scripts, status, agents) wait behind them. With a limit, at most that many image
//! responses are sent at once; the rest wait, first come first served, before their headers
//! are written, and whatever is not an image is never queued. Every image still goes out at
//! the link's full rate, one batch after another, so a storm takes no longer overall.
//!
//! The queue is counted for `/metrics`: how many wait now, how many had to, for how long in
//! all and at most.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The image streams being sent and the queue before them.
#[derive(Debug)]
pub struct ImageStreams {
    /// `None`: no limit.
    permits: Option<Arc<Semaphore>>,
    limit: Option<usize>,
    sending: AtomicU64,
    waiting: AtomicU64,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
    longest_wait_nanos: AtomicU64,
}

/// A place under the limit: held while an image's body is sent, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    streams: Arc<ImageStreams>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.streams.sending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ImageStreams {
    /// At most `limit` image streams at once; `None` sends every one at once.
    pub fn new(limit: Option<usize>) -> Arc<Self> {
        Arc::new(ImageStreams {
            permits: limit.map(|n| Arc::new(Semaphore::new(n))),
            limit,
            sending: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
            longest_wait_nanos: AtomicU64::new(0),
        })
    }

    /// Waits for a place (at once when there is one or no limit).
    pub async fn admit(self: &Arc<Self>) -> Admitted {
        let permit = match &self.permits {
            None => None,
            Some(permits) => match Arc::clone(permits).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => Some(self.queue(permits).await),
            },
        };
        self.sending.fetch_add(1, Ordering::Relaxed);
        Admitted {
            streams: Arc::clone(self),
            _permit: permit,
        }
    }

    async fn queue(&self, permits: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        /// Counts the wait even when the request is dropped while queued (the client left).
        struct Waiting<'a>(&'a ImageStreams, Instant);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                let (streams, since) = (self.0, self.1);
                let nanos = since.elapsed().as_nanos().min(u64::MAX as u128) as u64;
                streams.waiting.fetch_sub(1, Ordering::Relaxed);
                streams.waited.fetch_add(1, Ordering::Relaxed);
                streams.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
                streams
                    .longest_wait_nanos
                    .fetch_max(nanos, Ordering::Relaxed);
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(self, Instant::now());
        Arc::clone(permits)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the semaphore is never closed"))
    }

    /// The gauges and counters in the text exposition format.
    pub fn render_metrics(&self) -> String {
        let seconds = |nanos: &AtomicU64| nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let limit = self.limit.map_or(-1, |n| n as i64);
        format!(
            "# HELP wulf_image_streams Image responses being sent now.\n# TYPE wulf_image_streams gauge\nwulf_image_streams {}\n\
             # HELP wulf_image_streams_limit server.max-image-streams (-1: no limit).\n# TYPE wulf_image_streams_limit gauge\nwulf_image_streams_limit {limit}\n\
             # HELP wulf_image_streams_waiting Image requests waiting for a place under the limit now.\n# TYPE wulf_image_streams_waiting gauge\nwulf_image_streams_waiting {}\n\
             # HELP wulf_image_stream_waits_total Image requests that waited for a place.\n# TYPE wulf_image_stream_waits_total counter\nwulf_image_stream_waits_total {}\n\
             # HELP wulf_image_stream_wait_seconds_total Time image requests spent waiting.\n# TYPE wulf_image_stream_wait_seconds_total counter\nwulf_image_stream_wait_seconds_total {:.6}\n\
             # HELP wulf_image_stream_wait_seconds_max The longest wait for a place.\n# TYPE wulf_image_stream_wait_seconds_max gauge\nwulf_image_stream_wait_seconds_max {:.6}\n",
            self.sending.load(Ordering::Relaxed),
            self.waiting.load(Ordering::Relaxed),
            self.waited.load(Ordering::Relaxed),
            seconds(&self.wait_nanos),
            seconds(&self.longest_wait_nanos),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(streams: &ImageStreams, name: &str) -> f64 {
        let text = streams.render_metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn past_the_limit_a_stream_waits_for_one_to_end_first_come_first_served() {
        let streams = ImageStreams::new(Some(1));
        let first = streams.admit().await;
        let (second, third) = (
            tokio::spawn({
                let streams = Arc::clone(&streams);
                async move { streams.admit().await }
            }),
            tokio::spawn({
                let streams = Arc::clone(&streams);
                async move { streams.admit().await }
            }),
        );
        while metric(&streams, "wulf_image_streams_waiting") < 2.0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(metric(&streams, "wulf_image_streams"), 1.0);
        assert!(!second.is_finished() && !third.is_finished());
        drop(first);
        let second = second.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(metric(&streams, "wulf_image_streams_waiting"), 1.0);
        assert!(!third.is_finished(), "the second came first");
        drop(second);
        let third = third.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(metric(&streams, "wulf_image_stream_waits_total"), 2.0);
        assert!(metric(&streams, "wulf_image_stream_wait_seconds_max") > 0.0);
        drop(third);
        assert_eq!(metric(&streams, "wulf_image_streams"), 0.0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn with_no_limit_nothing_waits_and_a_client_that_leaves_the_queue_is_counted() {
        let open = ImageStreams::new(None);
        let mut all = Vec::new();
        for _ in 0..100 {
            all.push(open.admit().await);
        }
        assert_eq!(metric(&open, "wulf_image_streams"), 100.0);
        assert_eq!(metric(&open, "wulf_image_streams_limit"), -1.0);
        assert_eq!(metric(&open, "wulf_image_stream_waits_total"), 0.0);
        drop(all);

        let limited = ImageStreams::new(Some(1));
        let _held = limited.admit().await;
        let gone = tokio::spawn({
            let limited = Arc::clone(&limited);
            async move { limited.admit().await }
        });
        while metric(&limited, "wulf_image_streams_waiting") < 1.0 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        assert_eq!(metric(&limited, "wulf_image_streams_waiting"), 0.0);
        assert_eq!(metric(&limited, "wulf_image_stream_waits_total"), 1.0);
        assert_eq!(metric(&limited, "wulf_image_streams"), 1.0);
    }
}
