//! Process-wide counts and durations of plugin calls, by plugin: the plugin runtime records
//! every call, the boot server's `/metrics` reports them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

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
