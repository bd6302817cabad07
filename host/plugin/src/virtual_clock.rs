//! The clocks a plugin sees: virtual ones. Wall time starts at the Unix epoch and monotonic
//! time at zero, and both advance only when the plugin sleeps, which returns at once. So a
//! plugin's output never depends on when it ran (archives are named by their content), no
//! call blocks in the host where the epoch deadline cannot reach it, and a loop that waits for
//! time to pass is an ordinary busy loop the deadline stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiView};

/// The monotonic-clock interface as `wasmtime_wasi` links it; its sleeps are replaced.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// One store's virtual time, shared by its two clocks: nanoseconds slept in all its calls
/// (monotonic time, which never goes back), and where the current call started (wall time
/// restarts at the epoch with every call, so a warm instance reused for another node sees the
/// same time a fresh one would).
#[derive(Debug, Clone, Default)]
pub(crate) struct VirtualClock(Arc<Times>);

#[derive(Debug, Default)]
struct Times {
    slept: AtomicU64,
    call_started: AtomicU64,
}

impl VirtualClock {
    fn nanos(&self) -> u64 {
        self.0.slept.load(Ordering::Relaxed)
    }

    /// Sleeps `nanos` of virtual time: the clock moves on, nothing waits.
    fn advance(&self, nanos: u64) {
        let _ = self
            .0
            .slept
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_add(nanos))
            });
    }

    /// Moves the clock to `instant` if that is later.
    fn advance_to(&self, instant: u64) {
        self.0.slept.fetch_max(instant, Ordering::Relaxed);
    }

    /// A new call begins: wall time starts again at the epoch.
    pub(crate) fn new_call(&self) {
        self.0.call_started.store(self.nanos(), Ordering::Relaxed);
    }
}

impl HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.nanos()
    }
}

impl HostWallClock for VirtualClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let started = self.0.call_started.load(Ordering::Relaxed);
        Duration::from_nanos(self.nanos().saturating_sub(started))
    }
}

/// A sleep that is already over.
struct Slept;

#[wasmtime_wasi::async_trait]
impl Pollable for Slept {
    async fn ready(&mut self) {}
}

/// What a store's data gives the virtual sleeps.
pub(crate) trait HasVirtualClock: WasiView {
    fn virtual_clock(&self) -> &VirtualClock;
}

/// Replaces the monotonic clock's `subscribe-duration` and `subscribe-instant` in `linker`
/// (after WASI was added to it) with sleeps of virtual time.
pub(crate) fn link<T: HasVirtualClock + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store, (nanos,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            store.data().virtual_clock().advance(nanos);
            slept(store.data_mut())
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store, (instant,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            store.data().virtual_clock().advance_to(instant);
            slept(store.data_mut())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn slept<T: WasiView>(state: &mut T) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let table = state.ctx().table;
    let sleep = table.push(Slept)?;
    Ok((subscribe(table, sleep)?,))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_advance_both_clocks_and_each_call_starts_at_the_epoch() {
        let clock = VirtualClock::default();
        clock.advance(5_000);
        clock.advance_to(3_000);
        assert_eq!(HostMonotonicClock::now(&clock), 5_000);
        assert_eq!(HostWallClock::now(&clock), Duration::from_nanos(5_000));
        clock.new_call();
        assert_eq!(HostWallClock::now(&clock), Duration::ZERO);
        assert_eq!(
            HostMonotonicClock::now(&clock),
            5_000,
            "monotonic never goes back"
        );
        clock.advance_to(7_000);
        assert_eq!(HostWallClock::now(&clock), Duration::from_nanos(2_000));
    }
}
