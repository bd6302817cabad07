//! Prometheus metrics of the boot server, in the text exposition format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default)]
struct Counters {
    /// (stage, status code) -> requests.
    requests: BTreeMap<(String, u16), u64>,
    /// stage -> bytes promised in Content-Length of successful responses.
    bytes: BTreeMap<String, u64>,
    overlay_builds: u64,
    overlay_build_failures: u64,
    overlay_build_seconds: f64,
}

/// Counters, updated by the handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    pub fn request(&self, stage: &str, status: u16, bytes: u64) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.requests.entry((stage.to_string(), status)).or_default() += 1;
        if (200..300).contains(&status) {
            *c.bytes.entry(stage.to_string()).or_default() += bytes;
        }
    }

    pub fn overlay_build(&self, took: Duration, ok: bool) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.overlay_builds += 1;
        if !ok {
            c.overlay_build_failures += 1;
        }
        c.overlay_build_seconds += took.as_secs_f64();
    }

    /// The text exposition format.
    pub fn render(&self, nodes: usize) -> String {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP wulf_http_requests_total Provisioning requests by stage and status code.\n# TYPE wulf_http_requests_total counter\n");
        for ((stage, code), n) in &c.requests {
            let _ = writeln!(
                out,
                "wulf_http_requests_total{{stage=\"{stage}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP wulf_http_sent_bytes_total Bytes of successful responses by stage.\n# TYPE wulf_http_sent_bytes_total counter\n");
        for (stage, n) in &c.bytes {
            let _ = writeln!(out, "wulf_http_sent_bytes_total{{stage=\"{stage}\"}} {n}");
        }
        let errors: u64 = c
            .requests
            .iter()
            .filter(|((_, code), _)| *code >= 400)
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(
            out,
            "# HELP wulf_boot_errors_total Provisioning requests answered with an error.\n# TYPE wulf_boot_errors_total counter\nwulf_boot_errors_total {errors}"
        );
        let _ = writeln!(
            out,
            "# HELP wulf_overlay_builds_total Overlay builds run on demand.\n# TYPE wulf_overlay_builds_total counter\nwulf_overlay_builds_total {}",
            c.overlay_builds
        );
        let _ = writeln!(
            out,
            "# HELP wulf_overlay_build_failures_total On-demand overlay builds that failed.\n# TYPE wulf_overlay_build_failures_total counter\nwulf_overlay_build_failures_total {}",
            c.overlay_build_failures
        );
        let _ = writeln!(
            out,
            "# HELP wulf_overlay_build_seconds_total Time spent in on-demand overlay builds.\n# TYPE wulf_overlay_build_seconds_total counter\nwulf_overlay_build_seconds_total {:.6}",
            c.overlay_build_seconds
        );
        let plugins = wulf_core::plugin_stats::snapshot();
        out.push_str("# HELP wulf_plugin_calls_total Plugin calls by plugin and outcome.\n# TYPE wulf_plugin_calls_total counter\n");
        for (plugin, s) in &plugins {
            let _ = writeln!(
                out,
                "wulf_plugin_calls_total{{plugin=\"{plugin}\",outcome=\"ok\"}} {}\nwulf_plugin_calls_total{{plugin=\"{plugin}\",outcome=\"error\"}} {}",
                s.calls - s.failures,
                s.failures
            );
        }
        out.push_str("# HELP wulf_plugin_call_seconds Time in plugin calls (instantiate, run, check).\n# TYPE wulf_plugin_call_seconds summary\n");
        for (plugin, s) in &plugins {
            let _ = writeln!(
                out,
                "wulf_plugin_call_seconds_sum{{plugin=\"{plugin}\"}} {:.6}\nwulf_plugin_call_seconds_count{{plugin=\"{plugin}\"}} {}",
                s.seconds, s.calls
            );
        }
        let (engines, loads) = wulf_core::plugin_stats::runtime_counts();
        let _ = writeln!(
            out,
            "# HELP wulf_plugin_engines_created_total Wasm engines created by this process (one is expected).\n# TYPE wulf_plugin_engines_created_total counter\nwulf_plugin_engines_created_total {engines}"
        );
        let _ = writeln!(
            out,
            "# HELP wulf_plugin_component_loads_total Plugin components compiled or read from the cache, and linked.\n# TYPE wulf_plugin_component_loads_total counter\nwulf_plugin_component_loads_total {loads}"
        );
        let _ = writeln!(
            out,
            "# HELP wulf_nodes Nodes in the inventory.\n# TYPE wulf_nodes gauge\nwulf_nodes {nodes}"
        );
        out
    }
}

/// The agents' gauges: heard from, out of sync with their runtime overlay, needing a reboot,
/// parked on a long-poll now.
pub fn render_agents(
    seen: usize,
    out_of_sync: usize,
    reboot_needed: usize,
    waiting: usize,
) -> String {
    format!(
        "# HELP wulf_agents Node agents heard from since the server started.\n# TYPE wulf_agents gauge\nwulf_agents {seen}\n\
         # HELP wulf_agents_out_of_sync Agents whose runtime overlay differs from the current one.\n# TYPE wulf_agents_out_of_sync gauge\nwulf_agents_out_of_sync {out_of_sync}\n\
         # HELP wulf_nodes_reboot_needed Nodes whose kernel, image or system overlay changed since they booted.\n# TYPE wulf_nodes_reboot_needed gauge\nwulf_nodes_reboot_needed {reboot_needed}\n\
         # HELP wulf_agents_waiting Agents parked on a long-poll.\n# TYPE wulf_agents_waiting gauge\nwulf_agents_waiting {waiting}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_exposition_format() {
        let m = Metrics::default();
        m.request("kernel", 200, 100);
        m.request("kernel", 200, 50);
        m.request("image", 404, 10);
        m.overlay_build(Duration::from_millis(1500), true);
        let text = m.render(3);
        assert!(
            text.contains("wulf_http_requests_total{stage=\"kernel\",code=\"200\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("wulf_http_sent_bytes_total{stage=\"kernel\"} 150\n"),
            "{text}"
        );
        assert!(
            !text.contains("wulf_http_sent_bytes_total{stage=\"image\"}"),
            "{text}"
        );
        assert!(text.contains("wulf_boot_errors_total 1\n"), "{text}");
        assert!(
            text.contains("wulf_overlay_build_seconds_total 1.500000\n"),
            "{text}"
        );
        assert!(text.contains("wulf_nodes 3\n"), "{text}");
    }
}
