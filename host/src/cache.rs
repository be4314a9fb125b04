//! The on-disk precompile cache: each component version is compiled once
//! per engine configuration, then loaded in milliseconds on every start.
//!
//! An entry is named by the sha256 of the component's bytes and a hash of
//! the engine's compatibility settings, so a wasmtime upgrade or a config
//! change never loads a stale artifact.
//!
//! # Why entries carry a MAC
//!
//! A precompiled artifact is machine code that wasmtime maps and runs as
//! is: whoever can put a file in the cache can run code as the host,
//! outside every sandbox. So the cache trusts no file for being there.
//! Each entry carries an HMAC-SHA256 under a key only this host holds,
//! computed over the artifact together with what it claims to be (the
//! component's sha256 and the engine's compatibility hash), and checked
//! before wasmtime sees a byte. An entry that does not verify (tampered,
//! truncated, written by another host or by an older Shoal, or moved to
//! another component's name) is deleted and recompiled, with a warning.
//!
//! An entry is laid out as `tag ‖ MAGIC ‖ sha256 ‖ engine hash ‖
//! artifact`, the tag being the HMAC of everything after it. The tag is
//! checked in constant time over the file as read, then the sha256 and the
//! engine hash in it are compared with the ones asked for.
//!
//! HMAC comes from `ring`, which the host already builds for TLS: the
//! `hmac` crate would switch on a feature of the `digest` crate that
//! wasmtime and cranelift share through `sha2`, and so rebuild them.
//!
//! The key is 32 random bytes in [`KEY_FILE`] beside the cache directory
//! (in the host's data dir, mode 0600, made on first use), or handed to
//! [`PrecompileCache::open_with_key`]. Keeping it outside the cache
//! directory means a process that can only write cache entries still
//! cannot forge them.
//!
//! # Permissions
//!
//! The cache directory is created 0700. An existing one that other users
//! may read or write is *fixed* (set to 0700, with a warning), because
//! the MAC already protects every entry that was written while it was
//! open; one owned by another user is *refused*, because this host cannot
//! take it back from its owner. A key file that other users could read
//! is replaced by a new key (its entries are then recompiled), since the
//! old one may have leaked; one owned by another user is refused.

use std::hash::Hasher;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest as _, Sha256};
use shoal_api::Digest;
use wasmtime::Engine;
use wasmtime::component::Component;
use zeroize::Zeroizing;

use crate::error::LoadError;

/// The file, in the cache directory's parent, that holds the host's cache
/// key.
pub const KEY_FILE: &str = "precompile-cache.key";

/// The format of an entry, first of what its MAC covers: a tag made for
/// anything else under the same key never verifies as an entry.
const MAGIC: &[u8; 8] = b"SHOALPC1";

/// Bytes of a MAC tag (HMAC-SHA256).
const TAG_LEN: usize = 32;

/// Bytes of the header after the tag: magic, sha256, engine hash.
const HEADER_LEN: usize = MAGIC.len() + 32 + 32;

/// Bytes of a cache key.
pub const KEY_LEN: usize = 32;

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Found in the cache: not compiled.
    Hit,
    /// Compiled now, and stored for next time.
    Compiled,
    /// Already loaded on this host by another component of the same
    /// digest, whose compiled code it shares: neither read nor compiled.
    Shared,
}

/// A directory of precompiled components for one engine configuration.
#[derive(Clone)]
pub struct PrecompileCache {
    dir: PathBuf,
    /// The first bytes of `engine_hash` in hex, for file names.
    engine_key: String,
    /// sha256 of the engine's compatibility hash, bound into every MAC.
    engine_hash: [u8; 32],
    key: Arc<hmac::Key>,
}

impl std::fmt::Debug for PrecompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("PrecompileCache")
            .field("dir", &self.dir)
            .field("engine_key", &self.engine_key)
            .finish_non_exhaustive()
    }
}

impl PrecompileCache {
    /// Opens (creating if needed) the cache at `dir` for `engine`, with the
    /// host's key from [`KEY_FILE`] in `dir`'s parent (made on first use).
    pub fn open(dir: impl Into<PathBuf>, engine: &Engine) -> Result<Self, LoadError> {
        let dir = dir.into();
        let fail = |reason: String| LoadError::Cache {
            dir: dir.clone(),
            reason,
        };
        let parent = match dir.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => {
                return Err(fail(
                    "it has no parent directory to keep its key in; use a directory below the data dir"
                        .into(),
                ));
            }
        };
        secure_dir(&dir).map_err(&fail)?;
        let key = load_or_create_key(&parent.join(KEY_FILE)).map_err(&fail)?;
        Ok(Self::with_key(dir, engine, key))
    }

    /// Opens (creating if needed) the cache at `dir` for `engine`, with
    /// entries authenticated under `key` (keep it secret, and the same
    /// across restarts, or every entry is recompiled).
    pub fn open_with_key(
        dir: impl Into<PathBuf>,
        engine: &Engine,
        key: [u8; KEY_LEN],
    ) -> Result<Self, LoadError> {
        let dir = dir.into();
        let key = Zeroizing::new(key);
        secure_dir(&dir).map_err(|reason| LoadError::Cache {
            dir: dir.clone(),
            reason,
        })?;
        Ok(Self::with_key(dir, engine, key))
    }

    fn with_key(dir: PathBuf, engine: &Engine, key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let engine_hash = engine_hash(engine);
        let engine_key = hex(&engine_hash[..8]);
        PrecompileCache {
            dir,
            engine_key,
            engine_hash,
            // ring keeps its own copy; ours is zeroed when `key` drops.
            key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &key[..])),
        }
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

    /// This engine's compatibility hash in hex: the name, with the
    /// component's sha256, of the artifact the cluster compiled for an
    /// engine like this one.
    pub fn engine_id(&self) -> String {
        hex(&self.engine_hash)
    }

    /// Whether an entry for `digest` is on disk (it is verified when read).
    pub fn has_entry(&self, digest: &Digest) -> bool {
        self.entry_path(digest).exists()
    }

    /// Takes in `artifact`, the component `digest` compiled once for the
    /// cluster by a scheduler (read from the artifact store, which only
    /// schedulers may write). It is loaded once with `engine`, so that
    /// wasmtime checks it was made by an engine of these settings and
    /// version, then stored under this host's own MAC like one compiled
    /// here.
    pub fn import(&self, engine: &Engine, digest: &Digest, artifact: &[u8]) -> Result<(), String> {
        deserialize(engine, artifact).map_err(|e| format!("it does not load here: {e:#}"))?;
        self.write_entry(digest, &self.entry_path(digest), artifact);
        Ok(())
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
        if let Some(component) = self.read_entry(engine, digest, &path) {
            return Ok((component, CacheStatus::Hit));
        }
        let artifact = engine
            .precompile_component(bytes)
            .map_err(|e| crate::component::invalid(what, &e))?;
        self.write_entry(digest, &path, &artifact);
        let component = deserialize(engine, &artifact).map_err(|e| LoadError::Cache {
            dir: self.dir.clone(),
            reason: format!("a freshly compiled artifact did not load: {e:#}"),
        })?;
        Ok((component, CacheStatus::Compiled))
    }

    /// The header of an entry for `digest`, after its tag.
    fn header(&self, digest: &Digest) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        let (magic, rest) = header.split_at_mut(MAGIC.len());
        let (sha, engine) = rest.split_at_mut(32);
        magic.copy_from_slice(MAGIC);
        sha.copy_from_slice(digest.as_bytes());
        engine.copy_from_slice(&self.engine_hash);
        header
    }

    /// The artifact in an entry's `data`, if its MAC verifies and it is the
    /// entry for `digest` under this engine.
    fn verified<'a>(&self, digest: &Digest, data: &'a [u8]) -> Option<&'a [u8]> {
        if data.len() < TAG_LEN + HEADER_LEN {
            return None;
        }
        let (tag, signed) = data.split_at(TAG_LEN);
        // Compares in constant time.
        hmac::verify(&self.key, signed, tag).ok()?;
        let (header, artifact) = signed.split_at(HEADER_LEN);
        (header == self.header(digest).as_slice()).then_some(artifact)
    }

    fn read_entry(&self, engine: &Engine, digest: &Digest, path: &Path) -> Option<Component> {
        // Read once and check, then load, the same bytes: nothing can swap
        // the file between the check and the use.
        let data = match std::fs::read(path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a precompile cache entry; recompiling");
                return None;
            }
        };
        let Some(artifact) = self.verified(digest, &data) else {
            tracing::warn!(
                path = %path.display(),
                "discarding a precompile cache entry that does not verify against this host's cache key (tampered, corrupt, from another host or an older format); recompiling"
            );
            let _ = std::fs::remove_file(path);
            return None;
        };
        match deserialize(engine, artifact) {
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
    fn write_entry(&self, digest: &Digest, path: &Path, artifact: &[u8]) {
        let header = self.header(digest);
        let mut mac = hmac::Context::with_key(&self.key);
        mac.update(&header);
        mac.update(artifact);
        let tag = mac.sign();
        let result = (|| -> std::io::Result<()> {
            let (tmp, mut file) = tempfile_in(&self.dir)?;
            let written = (|| {
                file.write_all(tag.as_ref())?;
                file.write_all(&header)?;
                file.write_all(artifact)?;
                file.sync_all()?;
                std::fs::rename(&tmp, path)
            })();
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written
        })();
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "could not store a precompiled component");
        }
    }
}

/// Makes `dir` (0700) if needed, then checks that it belongs to this
/// process's user and that no one else may use it: refused if it belongs
/// to another user, fixed (to 0700, with a warning) if it is open to
/// others.
fn secure_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the directory: {e}"))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot inspect the directory: {e}"))?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    check_owner(&meta, "directory")?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{mode:03o}"),
            "the precompile cache directory is open to other users; restricting it to 0700 (entries written meanwhile are checked against their MAC)"
        );
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            format!(
                "it is open to other users (mode {mode:03o}) and cannot be restricted to 0700: {e}"
            )
        })?;
    }
    Ok(())
}

/// Refuses a file or directory that belongs to another user.
fn check_owner(meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "the {what} belongs to uid {}, not to uid {me} that this host runs as: whoever owns it could plant code this host would run; chown it to {me} or use another data dir",
            meta.uid()
        ));
    }
    Ok(())
}

/// The key in `path`, made (32 random bytes, mode 0600) if there is none.
/// A key other users could read is replaced; one that belongs to another
/// user is refused.
fn load_or_create_key(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    match std::fs::metadata(path) {
        Ok(meta) => match existing_key(path, &meta)? {
            Some(key) => Ok(key),
            None => {
                std::fs::remove_file(path)
                    .map_err(|e| format!("cannot replace the cache key {}: {e}", path.display()))?;
                create_key(path)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(path),
        Err(e) => Err(format!(
            "cannot inspect the cache key {}: {e}",
            path.display()
        )),
    }
}

/// The key in the existing file `path`, or `None` (with a warning) when it
/// must be replaced: readable by others, or not a key.
fn existing_key(
    path: &Path,
    meta: &std::fs::Metadata,
) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, String> {
    let where_ = path.display();
    check_owner(meta, &format!("cache key {where_}"))?;
    if !meta.is_file() {
        return Err(format!("the cache key {where_} is not a file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %where_,
            mode = format!("{mode:03o}"),
            "the precompile cache key was readable by other users; replacing it (every cached component will be recompiled once)"
        );
        return Ok(None);
    }
    let bytes = Zeroizing::new(
        std::fs::read(path).map_err(|e| format!("cannot read the cache key {where_}: {e}"))?,
    );
    match <[u8; KEY_LEN]>::try_from(bytes.as_slice()) {
        Ok(key) => Ok(Some(Zeroizing::new(key))),
        Err(_) => {
            tracing::warn!(
                path = %where_,
                "the precompile cache key is not {KEY_LEN} bytes; replacing it (every cached component will be recompiled once)"
            );
            Ok(None)
        }
    }
}

/// Makes a new key at `path`: written whole to a private file aside, then
/// linked into place, so that of two processes starting at once one wins
/// and both use its key; no one ever reads half a key.
fn create_key(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    let where_ = path.display();
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(&mut key[..])
        .map_err(|_| "cannot make a cache key: the system's random source failed".to_string())?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (tmp, mut file) =
        tempfile_in(dir).map_err(|e| format!("cannot write the cache key {where_}: {e}"))?;
    let linked = file
        .write_all(&key[..])
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(path)
                .map_err(|e| format!("cannot inspect the cache key {where_}: {e}"))?;
            existing_key(path, &meta)?.ok_or_else(|| {
                format!("another process made an unusable cache key {where_} at the same time; remove it and start again")
            })
        }
        Err(e) => Err(format!("cannot write the cache key {where_}: {e}")),
    }
}

/// Creates a uniquely named file in `dir`, readable by its owner only.
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
        .mode(0o600)
        .open(&path)?;
    Ok((path, file))
}

/// Loads precompiled code.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime runs precompiled bytes as machine code, so they must
    // come from `Engine::precompile_component` of a compatible engine. These
    // do: either they were just compiled by this process; or they were read
    // from the cache and their HMAC, under a key only this host holds, was
    // verified over exactly these bytes together with the component's
    // sha256 and this engine's compatibility hash; or they are being
    // imported from the cluster's artifact store, which only schedulers may
    // write (NATS permissions, as for component bytes and desired state),
    // and which they fill with `Engine::precompile_component` of an engine
    // of the hosts' code settings. A file that anyone else wrote,
    // truncated, corrupted or moved never reaches this call. wasmtime
    // itself also checks the engine version and settings in the artifact's
    // header.
    unsafe { Component::deserialize(engine, artifact) }
}

/// sha256 of `engine`'s compatibility hash: equal for two engines exactly
/// when one loads what the other compiled.
pub(crate) fn engine_hash(engine: &Engine) -> [u8; 32] {
    let mut hasher = Sha256Hasher::default();
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hasher.0.finalize().into()
}

/// `bytes` in lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "(component)";
    const OTHER: &str = "(component (core module))";

    fn engine() -> Engine {
        Engine::default()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_correct_entry_loads_from_the_cache() {
        let data = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = PrecompileCache::open(data.path().join("cache"), &engine).unwrap();
        let digest = Digest::of(EMPTY.as_bytes());
        let (_, first) = cache
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(first, CacheStatus::Compiled);
        // A second cache on the same data dir (a restart) reads the same key.
        let again = PrecompileCache::open(data.path().join("cache"), &engine).unwrap();
        let (_, second) = again
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(second, CacheStatus::Hit);
    }

    #[test]
    fn a_tampered_entry_is_recompiled_not_loaded() {
        let data = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = PrecompileCache::open(data.path().join("cache"), &engine).unwrap();
        let digest = Digest::of(EMPTY.as_bytes());
        cache
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        let path = cache.entry_path(&digest);

        // One flipped bit in the artifact.
        let mut entry = std::fs::read(&path).unwrap();
        let last = entry.len() - 1;
        entry[last] ^= 1;
        std::fs::write(&path, &entry).unwrap();
        let (_, status) = cache
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(status, CacheStatus::Compiled);
        // The recompiled entry replaced it, and verifies.
        let (_, status) = cache
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(status, CacheStatus::Hit);
    }

    #[test]
    fn a_forged_entry_is_recompiled_not_loaded() {
        let data = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = PrecompileCache::open(data.path().join("cache"), &engine).unwrap();
        let digest = Digest::of(EMPTY.as_bytes());
        let path = cache.entry_path(&digest);
        let other = engine.precompile_component(OTHER.as_bytes()).unwrap();

        // Planted under the component's name: another artifact, in the
        // pre-MAC format (its sha256 in front) ...
        let mut planted = Sha256::digest(&other).to_vec();
        planted.extend_from_slice(&other);
        std::fs::write(&path, &planted).unwrap();
        let (_, status) = cache
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(status, CacheStatus::Compiled);

        // ... in the current format, with a MAC under another key (another
        // host's cache copied here) ...
        let elsewhere = tempfile::tempdir().unwrap();
        let theirs =
            PrecompileCache::open_with_key(elsewhere.path().join("cache"), &engine, [7; KEY_LEN])
                .unwrap();
        theirs.write_entry(&digest, &path, &other);
        let (_, status) = cache
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(status, CacheStatus::Compiled);

        // ... or a genuine entry of another component moved to this name.
        let other_digest = Digest::of(OTHER.as_bytes());
        cache
            .load_or_compile(&engine, &other_digest, OTHER.as_bytes(), "other")
            .unwrap();
        std::fs::copy(cache.entry_path(&other_digest), &path).unwrap();
        let (_, status) = cache
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(status, CacheStatus::Compiled);
        // Each time the bad entry was deleted and replaced by a good one.
        let (_, status) = cache
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(status, CacheStatus::Hit);
    }

    #[test]
    fn a_key_passed_in_is_used_and_entries_follow_it() {
        let data = tempfile::tempdir().unwrap();
        let engine = engine();
        let dir = data.path().join("cache");
        let digest = Digest::of(EMPTY.as_bytes());
        let one = PrecompileCache::open_with_key(&dir, &engine, [1; KEY_LEN]).unwrap();
        one.load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        let same = PrecompileCache::open_with_key(&dir, &engine, [1; KEY_LEN]).unwrap();
        let (_, status) = same
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(status, CacheStatus::Hit);
        let other = PrecompileCache::open_with_key(&dir, &engine, [2; KEY_LEN]).unwrap();
        let (_, status) = other
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(status, CacheStatus::Compiled);
        // No key file is made when the key is passed in.
        assert!(!data.path().join(KEY_FILE).exists());
        // The debug form never shows the key.
        assert!(!format!("{other:?}").contains("2, 2, 2"));
    }

    #[test]
    fn the_key_and_the_directory_are_private() {
        let data = tempfile::tempdir().unwrap();
        let engine = engine();
        let dir = data.path().join("cache");
        PrecompileCache::open(&dir, &engine).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let key_path = data.path().join(KEY_FILE);
        assert_eq!(mode(&key_path), 0o600);
        let key = std::fs::read(&key_path).unwrap();
        assert_eq!(key.len(), KEY_LEN);

        // A directory open to others is fixed; entries are kept.
        let digest = Digest::of(EMPTY.as_bytes());
        let cache = PrecompileCache::open(&dir, &engine).unwrap();
        cache
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(mode(&cache.entry_path(&digest)), 0o600);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let cache = PrecompileCache::open(&dir, &engine).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let (_, status) = cache
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(status, CacheStatus::Hit);

        // A key others could read is replaced, and the entries under the
        // old one are recompiled.
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cache = PrecompileCache::open(&dir, &engine).unwrap();
        assert_eq!(mode(&key_path), 0o600);
        assert_ne!(std::fs::read(&key_path).unwrap(), key);
        let (_, status) = cache
            .load_or_compile(&engine, &digest, EMPTY.as_bytes(), "empty")
            .unwrap();
        assert_eq!(status, CacheStatus::Compiled);
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        // Only root can give a directory away; as anyone else, skip.
        if rustix::process::geteuid().as_raw() != 0 {
            return;
        }
        let nobody = 65534;
        std::os::unix::fs::chown(&dir, Some(nobody), Some(nobody)).unwrap();
        let err = PrecompileCache::open(&dir, &engine()).unwrap_err();
        assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
    }
}
