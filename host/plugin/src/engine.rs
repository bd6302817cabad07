//! The one wasmtime engine: epoch interruption for deadlines, bounded stacks, and the ticker
//! that advances epochs.

use std::time::Duration;

use wasmtime::{Config, Engine};

/// How often the epoch advances; deadlines are whole ticks.
pub const TICK: Duration = Duration::from_millis(5);

/// Creates the engine and starts its epoch ticker (a thread that ends with the engine).
pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(1 << 20)
        .parallel_compilation(true);
    let engine = Engine::new(&config)?;
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
pub fn ticks(budget: Duration) -> u64 {
    (budget.as_nanos() / TICK.as_nanos()) as u64 + 1
}
