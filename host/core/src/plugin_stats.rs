//! Process-wide counts and durations of plugin calls, by plugin, and of the engines and
//! components behind them: the plugin runtime records them, the boot server's `/metrics`
//! reports them (a long-lived process should show one engine, however many builds it ran).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static ENGINES: AtomicU64 = AtomicU64::new(0);
static COMPONENT_LOADS: AtomicU64 = AtomicU64::new(0);

/// Counts one wasm engine created.
pub fn engine_created() {
    ENGINES.fetch_add(1, Ordering::Relaxed);
}

/// Counts one component compiled or read from the cache and linked.
pub fn component_loaded() {
    COMPONENT_LOADS.fetch_add(1, Ordering::Relaxed);
}

/// (engines created, components loaded) so far in this process.
pub fn runtime_counts() -> (u64, u64) {
    (
        ENGINES.load(Ordering::Relaxed),
        COMPONENT_LOADS.load(Ordering::Relaxed),
    )
}

/// Calls of one plugin so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    pub calls: u64,
    /// Calls that ended in an error: the plugin's own, a trap or a limit.
    pub failures: u64,
    pub seconds: f64,
}

static STATS: Mutex<BTreeMap<String, CallStats>> = Mutex::new(BTreeMap::new());

/// Counts one call of `plugin`.
pub fn record(plugin: &str, took: Duration, ok: bool) {
    let mut stats = STATS.lock().unwrap_or_else(|p| p.into_inner());
    let entry = match stats.get_mut(plugin) {
        Some(entry) => entry,
        None => stats.entry(plugin.to_owned()).or_default(),
    };
    entry.calls += 1;
    entry.failures += u64::from(!ok);
    entry.seconds += took.as_secs_f64();
}

/// Every plugin called so far, by name.
pub fn snapshot() -> BTreeMap<String, CallStats> {
    STATS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_failures_and_time_add_up_per_plugin() {
        record("stats-test-a", Duration::from_millis(2), true);
        record("stats-test-a", Duration::from_millis(3), false);
        record("stats-test-b", Duration::from_millis(1), true);
        let stats = snapshot();
        let a = stats["stats-test-a"];
        assert_eq!((a.calls, a.failures), (2, 1));
        assert!((a.seconds - 0.005).abs() < 1e-9);
        assert_eq!(stats["stats-test-b"].calls, 1);
    }
}
