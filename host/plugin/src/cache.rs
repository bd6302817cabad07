//! The on-disk cache of compiled components.
//!
//! Keyed by the wasm's sha256 and the engine's compatibility hash (which covers the wasmtime
//! version and every setting that changes generated code), so a restart loads native code in
//! milliseconds instead of compiling for seconds. Loading native code is trusted execution:
//! only files this host wrote are read, in a directory only its user can write.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a component came from: the cache or a fresh compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cache,
    Compiled,
}

#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    /// The cache file for `wasm` under `engine`.
    pub fn path_for(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let digest = hex::encode(Sha256::digest(wasm));
        self.dir
            .join(format!("{digest}-{:016x}.cwasm", hasher.finish()))
    }

    /// The compiled component, from the cache when a trusted entry exists, else compiled and
    /// stored (a failure to store is logged, not fatal).
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<(Component, Origin)> {
        let path = self.path_for(engine, wasm);
        if trusted(&path)
            && let Some(component) = deserialize(engine, &path)
        {
            return Ok((component, Origin::Cache));
        }
        let component = Component::from_binary(engine, wasm)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled plugin");
        }
        Ok((component, Origin::Compiled))
    }

    fn store(&self, path: &Path, component: &Component) -> Result<(), String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| e.to_string())?;
        let bytes = component.serialize().map_err(|e| e.to_string())?;
        wulf_core::atomic_file::write_atomic(path, &bytes).map_err(|e| e.to_string())?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())
    }
}

/// A cache file is trusted when it is a regular file owned by us, writable by nobody else, in
/// a directory writable by nobody else.
fn trusted(path: &Path) -> bool {
    let me = rustix::process::geteuid().as_raw();
    let ours = |p: &Path| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.uid() == me && m.mode() & 0o022 == 0 && !m.file_type().is_symlink())
    };
    ours(path) && path.parent().is_some_and(ours)
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> Option<Component> {
    // SAFETY: `deserialize_file` maps native code. The file is one this host serialized itself
    // (`trusted` checked owner and permissions of it and its directory), and wasmtime checks the
    // engine compatibility header, returning an error rather than loading a mismatch.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable cache entry");
            None
        }
    }
}
