//! What a plugin's store holds: its WASI context (empty unless a capability was granted, with
//! virtual clocks), its memory limiter, the tail of its output, and the host interface every
//! plugin imports.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{Level, overlay::wulf::plugin::host, wit};
use crate::guest_output::TailPipe;
use crate::virtual_clock::{HasVirtualClock, VirtualClock};

/// How much of a plugin's stdout and stderr is kept: the last bytes, where panic messages are.
const OUTPUT_TAIL: usize = 4 * 1024;

/// What every store of one plugin starts from.
#[derive(Debug, Clone)]
pub(crate) struct StoreSpec {
    pub plugin: Arc<str>,
    pub config_json: Arc<str>,
    pub memory_bytes: u64,
    /// Read-only directories granted to the plugin, visible at the same path inside.
    pub read_dirs: Arc<[PathBuf]>,
}

pub(crate) struct HostState {
    pub plugin: Arc<str>,
    /// What the call is about, for log lines: `node n001`, `shared files`, `image rocky`.
    pub subject: String,
    config_json: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    /// stdout and stderr, interleaved as written.
    pub output: TailPipe,
    clock: VirtualClock,
    /// The cluster a `generate-shared` of the cluster world reads, during that call only.
    pub cluster: Option<Arc<[wulf_core::Node]>>,
}

impl HostState {
    pub(crate) fn new(spec: &StoreSpec, subject: &str) -> wasmtime::Result<Self> {
        let output = TailPipe::new(OUTPUT_TAIL);
        let clock = VirtualClock::default();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(output.clone())
            .stderr(output.clone())
            .wall_clock(clock.clone())
            .monotonic_clock(clock.clone());
        for dir in spec.read_dirs.iter() {
            let guest = dir.to_string_lossy();
            wasi.preopened_dir(dir, guest.as_ref(), FsPerms::ReadOnly)?;
        }
        Ok(HostState {
            plugin: spec.plugin.clone(),
            subject: subject.to_owned(),
            config_json: spec.config_json.clone(),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                cap: spec.memory_bytes as usize,
                exceeded: false,
            },
            output,
            clock,
            cluster: None,
        })
    }

    /// Readies a warm instance's state for its next call, about `subject`: its output so
    /// far was logged by the last call.
    pub(crate) fn begin_call(&mut self, subject: &str) {
        subject.clone_into(&mut self.subject);
        self.output.clear();
        self.limiter.exceeded = false;
        self.clock.new_call();
    }

    /// What the plugin wrote to stdout and stderr, on one line: the last [`OUTPUT_TAIL`]
    /// bytes, after `...` when more came before. Rust's advice to set `RUST_BACKTRACE` means
    /// nothing inside a sandbox and is dropped, as is the unnamed-thread prefix.
    pub(crate) fn output_text(&self) -> String {
        let (text, dropped) = self.output.contents();
        let mut lines: Vec<&str> = text
            .lines()
            .map(|line| line.trim())
            .filter(|line| !line.is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE"))
            .map(|line| line.strip_prefix("thread '<unnamed>' (1) ").unwrap_or(line))
            .collect();
        if dropped > 0 {
            lines.insert(0, "...");
        }
        lines.join(" ")
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HasVirtualClock for HostState {
    fn virtual_clock(&self) -> &VirtualClock {
        &self.clock
    }
}

/// Caps every linear memory (and tables), and remembers whether the memory cap was the reason
/// a growth failed, so the error can name the limit instead of a bare trap.
pub(crate) struct MemoryLimiter {
    cap: usize,
    pub exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.exceeded = true;
            wasmtime::bail!(
                "memory limit of {} bytes reached growing to {desired}",
                self.cap
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Not the memory cap: the error is reported as the trap it causes, with this message.
        if desired > 1_000_000 {
            wasmtime::bail!("table limit reached growing to {desired} elements");
        }
        Ok(true)
    }
}

impl wit::Host for HostState {}

/// The most records one `cluster.nodes` call returns.
const CLUSTER_PAGE: u32 = 1024;

impl crate::bindings::cluster_overlay::wulf::plugin::cluster::Host for HostState {
    fn size(&mut self) -> wasmtime::Result<u32> {
        Ok(self
            .cluster
            .as_ref()
            .map_or(0, |c| u32::try_from(c.len()).unwrap_or(u32::MAX)))
    }

    fn nodes(&mut self, start: u32, count: u32) -> wasmtime::Result<Vec<wit::Node>> {
        let Some(cluster) = &self.cluster else {
            return Ok(Vec::new());
        };
        let start = (start as usize).min(cluster.len());
        let end = start
            .saturating_add(count.min(CLUSTER_PAGE) as usize)
            .min(cluster.len());
        Ok(cluster[start..end]
            .iter()
            .map(crate::conversion::node_to_wit)
            .collect())
    }
}

impl host::Host for HostState {
    fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<wit::Tag>,
    ) -> wasmtime::Result<()> {
        let fields: Vec<String> = fields
            .iter()
            .map(|t| format!("{}={}", t.key, t.value))
            .collect();
        let fields = fields.join(" ");
        let (plugin, on) = (&*self.plugin, &*self.subject);
        // One target for everything a plugin says, so `plugin test` can show it all.
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, on, fields, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, on, fields, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, on, fields, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, on, fields, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, on, fields, "{message}"),
        }
        Ok(())
    }

    fn config(&mut self) -> wasmtime::Result<String> {
        Ok(self.config_json.to_string())
    }
}
