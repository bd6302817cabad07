//! The one wasmtime engine: epoch interruption for deadlines, pooled instance slots, bounded
//! stacks, and the ticker that advances epochs.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are whole ticks.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// The largest linear memory any plugin may be given (the site config's `memory-mib` cap).
pub(crate) const MAX_MEMORY: u64 = 4 << 30;

/// Concurrent plugin instances the pooling allocator has slots for.
const POOL_INSTANCES: u32 = 256;

/// Bytes at the bottom of each pooled memory reset in place (memset) instead of being handed
/// back to the kernel. Our plugins are linked with a 128 KiB stack (`.cargo/config.toml`), so
/// their stack, data and first heap pages live here and a fresh instance per call does not
/// page-fault them in again.
const KEEP_RESIDENT: usize = 256 << 10;

fn base_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(1 << 20)
        .parallel_compilation(true);
    config
}

/// Creates the engine and starts its epoch ticker (a thread that ends with the engine).
///
/// The pooling allocator keeps instance slots mapped between calls, which makes a fresh
/// instance per call cheap. It reserves address space up front; where that is refused (small
/// VA spaces, a tight `ulimit -v`), fall back to mapping memory on demand.
pub(crate) fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = base_config();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 4)
        .total_memories(POOL_INSTANCES)
        .total_tables(POOL_INSTANCES * 4)
        .total_stacks(POOL_INSTANCES)
        .max_tables_per_module(4)
        .max_memory_size(MAX_MEMORY as usize)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = match Engine::new(&config) {
        Ok(engine) => engine,
        Err(e) => {
            tracing::warn!(error = %e, "the pooling allocator is unavailable; mapping plugin memory on demand");
            Engine::new(&base_config())?
        }
    };
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wulf-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .map_err(|e| wasmtime::format_err!("cannot start the epoch ticker: {e}"))?;
    Ok(engine)
}

/// Epoch ticks for a wall-clock budget (at least one, plus one for the partial tick).
pub(crate) fn ticks(budget: Duration) -> u64 {
    (budget.as_nanos() / TICK.as_nanos()) as u64 + 1
}
