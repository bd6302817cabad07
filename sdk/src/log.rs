//! Structured logging into the host's log.
//!
//! Records carry the plugin's name on the host side; `fields` become structured fields there.
//! In native builds (unit tests) records go to stderr.

pub use crate::bindings::overlay::wulf::plugin::host::Level;

/// Logs `message` at `level` with structured `fields`.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<crate::Tag> = fields
        .iter()
        .map(|(k, v)| crate::Tag::new(*k, *v))
        .collect();
    emit(level, message, &fields);
}

#[cfg(target_arch = "wasm32")]
fn emit(level: Level, message: &str, fields: &[crate::Tag]) {
    crate::bindings::overlay::wulf::plugin::host::log(level, message, fields);
}

#[cfg(not(target_arch = "wasm32"))]
fn emit(level: Level, message: &str, fields: &[crate::Tag]) {
    let fields: Vec<String> = fields
        .iter()
        .map(|t| format!("{}={}", t.key, t.value))
        .collect();
    eprintln!("[{level:?}] {message} {}", fields.join(" "));
}

/// Logs at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message, &[]);
}

/// Logs at info level.
pub fn info(message: &str) {
    log(Level::Info, message, &[]);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message, &[]);
}

/// Logs at error level.
pub fn error(message: &str) {
    log(Level::Error, message, &[]);
}
