//! The on-disk precompile cache: each component version is compiled once
//! per engine configuration, then loaded in milliseconds on every start.
//!
//! An entry is named by the sha256 of the component's bytes and a hash of
//! the engine's compatibility settings, so a wasmtime upgrade or a config
//! change never loads a stale artifact. Each file starts with the sha256 of
//! the artifact that follows, checked before wasmtime sees a byte: a
//! truncated or corrupt entry is recompiled, never loaded.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use shoal_api::Digest;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Found in the cache: not compiled.
    Hit,
    /// Compiled now, and stored for next time.
    Compiled,
}

/// A directory of precompiled components for one engine configuration.
#[derive(Debug, Clone)]
pub struct PrecompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl PrecompileCache {
    /// Opens (creating if needed) the cache at `dir` for `engine`.
    pub fn open(dir: impl Into<PathBuf>, engine: &Engine) -> Result<Self, LoadError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| LoadError::Cache {
            dir: dir.clone(),
            reason: format!("cannot create the directory: {e}"),
        })?;
        let mut hasher = Sha256Hasher::default();
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_key: String = hasher.0.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(PrecompileCache { dir, engine_key })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an entry for `digest` lives in.
    pub fn entry_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", digest.to_hex(), self.engine_key))
    }

    /// Loads the component with `digest` from the cache, or compiles `bytes`
    /// and stores the result. `what` names the component in errors.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &Digest,
        bytes: &[u8],
        what: &str,
    ) -> Result<(Component, CacheStatus), LoadError> {
        let path = self.entry_path(digest);
        if let Some(component) = self.read_entry(engine, &path) {
            return Ok((component, CacheStatus::Hit));
        }
        let artifact = engine
            .precompile_component(bytes)
            .map_err(|e| crate::component::invalid(what, &e))?;
        self.write_entry(&path, &artifact);
        let component = deserialize(engine, &artifact).map_err(|e| LoadError::Cache {
            dir: self.dir.clone(),
            reason: format!("a freshly compiled artifact did not load: {e:#}"),
        })?;
        Ok((component, CacheStatus::Compiled))
    }

    fn read_entry(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let data = std::fs::read(path).ok()?;
        if data.len() < 32 || Sha256::digest(&data[32..]).as_slice() != &data[..32] {
            tracing::warn!(path = %path.display(), "discarding a corrupt precompile cache entry");
            let _ = std::fs::remove_file(path);
            return None;
        }
        match deserialize(engine, &data[32..]) {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding an unusable precompile cache entry");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    /// Stores an entry atomically (write aside, then rename). A failure only
    /// costs a recompile next time, so it is logged, not returned.
    fn write_entry(&self, path: &Path, artifact: &[u8]) {
        let result = (|| -> std::io::Result<()> {
            let mut tmp = tempfile_in(&self.dir)?;
            tmp.1.write_all(&Sha256::digest(artifact))?;
            tmp.1.write_all(artifact)?;
            tmp.1.sync_all()?;
            std::fs::rename(&tmp.0, path)
        })();
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "could not store a precompiled component");
        }
    }
}

/// Creates a uniquely named file in `dir`.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

/// Loads precompiled code.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime runs precompiled bytes as machine code, so they must
    // come from `Engine::precompile_component` of a compatible engine. These
    // do: they were produced by this module into the host's own cache
    // directory (as trusted as the host binary), under a name that includes
    // the engine's compatibility hash, and their sha256 was checked against
    // the one stored beside them, so a truncated or corrupted file never
    // reaches this call. wasmtime itself also checks the engine version and
    // settings in the artifact's header.
    unsafe { Component::deserialize(engine, artifact) }
}

/// Feeds `Hash` output into sha256, for a hash that is stable across
/// processes (std's `DefaultHasher` is not).
#[derive(Default)]
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Not used: the full digest is taken from the inner state.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
