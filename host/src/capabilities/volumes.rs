//! Volumes: host directories mounted into the guest as preopened
//! directories. wasmtime-wasi reaches them through cap-std, so no path the
//! guest builds (`..`, an absolute path, a symlink) can leave the mount.
//!
//! Each writable volume has a size limit. Every way a guest writes file
//! data (`write-via-stream`, `append-via-stream`, `write`) passes through
//! this module, which reserves the bytes against the volume's
//! [`VolumeQuota`] first; a write that does not fit fails in the guest
//! with "no space left on device" and nothing reaches the disk. A guest
//! that mounts several writable volumes has each write checked against
//! all of them (the host cannot tell which mount a file descriptor came
//! from), so it may be refused a little early, never let past a limit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{ErrorCode, Host, HostDescriptor};
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use shoal_api::VolumeScope;
use shoal_api::wire::ReplicaId;

use super::{Capability, ForgetContext, GrantContext, HostContext};
use crate::layout::DataLayout;
use crate::state::InvocationState;

/// The interface whose write functions are metered.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// `ENOSPC` on Linux: what a guest sees when a volume is full.
const NO_SPACE: i32 = 28;

/// One directory mounted into a component.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Mounted without write access.
    pub read_only: bool,
    /// The volume's size limit, for writable mounts.
    pub quota: Option<Arc<VolumeQuota>>,
}

/// How full one volume directory is, shared by every replica using it.
#[derive(Debug)]
pub struct VolumeQuota {
    dir: PathBuf,
    limit: u64,
    used: Mutex<u64>,
}

impl VolumeQuota {
    /// The quota of `dir`, holding at most `limit` bytes.
    pub fn new(dir: &Path, limit: u64) -> Self {
        VolumeQuota {
            dir: dir.to_path_buf(),
            limit,
            used: Mutex::new(usage(dir)),
        }
    }

    /// Reserves room for `n` more bytes. Writes are counted as growth even
    /// when they overwrite; when that estimate says "full", the directory is
    /// measured again before refusing.
    fn reserve(&self, n: u64) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.saturating_add(n) > self.limit {
            *used = usage(&self.dir);
        }
        if used.saturating_add(n) > self.limit {
            return false;
        }
        *used += n;
        true
    }
}

/// Bytes held by the files under `dir`.
fn usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => usage(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Reserves `n` bytes in every quota.
fn reserve_all(quotas: &[Arc<VolumeQuota>], n: u64) -> bool {
    quotas.iter().all(|q| q.reserve(n))
}

fn no_space() -> std::io::Error {
    std::io::Error::from_raw_os_error(NO_SPACE)
}

/// Preopens every mount in `wasi`.
pub fn preopen(wasi: &mut WasiCtxBuilder, mounts: &[Mount]) -> wasmtime::Result<()> {
    for m in mounts {
        let perms = if m.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        wasi.preopened_dir(&m.host, &m.guest, perms)?;
    }
    Ok(())
}

/// The quotas of the writable mounts in `mounts`.
pub fn quotas(mounts: &[Mount]) -> Vec<Arc<VolumeQuota>> {
    mounts.iter().filter_map(|m| m.quota.clone()).collect()
}

/// A file output stream that reserves room before every write.
struct MeteredStream {
    inner: DynOutputStream,
    quotas: Vec<Arc<VolumeQuota>>,
}

#[async_trait::async_trait]
impl Pollable for MeteredStream {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

impl OutputStream for MeteredStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if !reserve_all(&self.quotas, bytes.len() as u64) {
            return Err(StreamError::LastOperationFailed(no_space().into()));
        }
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }
}

type StreamReturn = wasmtime::Result<(Result<Resource<DynOutputStream>, ErrorCode>,)>;

/// Wraps the stream a `*-via-stream` call returned in a metered one.
fn metered(
    store: &mut StoreContextMut<'_, InvocationState>,
    made: Result<Resource<DynOutputStream>, wasmtime_wasi::p2::FsError>,
) -> StreamReturn {
    let state = store.data_mut();
    let quotas = state.caps.volumes.clone();
    let mut view = state.filesystem();
    match made {
        Ok(stream) if quotas.is_empty() => Ok((Ok(stream),)),
        Ok(stream) => {
            let inner = view.table.delete(stream)?;
            let wrapped: DynOutputStream = Box::new(MeteredStream { inner, quotas });
            Ok((Ok(view.table.push(wrapped)?),))
        }
        Err(e) => Ok((Err(view.convert_error_code(e)?),)),
    }
}

/// Replaces the filesystem's write functions with metered ones. Call after
/// `wasmtime_wasi::p2::add_to_linker_async`.
fn add_metered_writes(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, InvocationState>,
         (fd, offset): (Resource<Descriptor>, u64)|
         -> StreamReturn {
            let made = store.data_mut().filesystem().write_via_stream(fd, offset);
            metered(&mut store, made)
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, InvocationState>,
         (fd,): (Resource<Descriptor>,)|
         -> StreamReturn {
            let made = store.data_mut().filesystem().append_via_stream(fd);
            metered(&mut store, made)
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, InvocationState>,
         (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                if !reserve_all(&state.caps.volumes, buf.len() as u64) {
                    return Ok((Err(ErrorCode::InsufficientSpace),));
                }
                let mut view = state.filesystem();
                match view.write(fd, buf, offset).await {
                    Ok(n) => Ok((Ok(n),)),
                    Err(e) => Ok((Err(view.convert_error_code(e)?),)),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The volumes capability: where each volume lives on this host, and the
/// size limit of each writable volume directory, shared by its users.
pub struct VolumesCapability {
    layout: Option<DataLayout>,
    quotas: Mutex<HashMap<PathBuf, Arc<VolumeQuota>>>,
}

impl Capability for VolumesCapability {
    const NAME: &'static str = "volumes";
    type Grant = Arc<Vec<Mount>>;
    type Provider = Vec<Arc<VolumeQuota>>;

    fn new(host: Option<&HostContext>) -> Self {
        VolumesCapability {
            layout: host.map(|h| h.layout.clone()),
            quotas: Mutex::default(),
        }
    }

    fn grant(&self, ctx: &GrantContext<'_>) -> Result<Self::Grant, String> {
        if ctx.spec.volumes.is_empty() {
            return Ok(Arc::default());
        }
        let (Some(layout), Some(id)) = (&self.layout, ctx.replica) else {
            return Err("volumes need a host's data dir: run the component in a cluster".into());
        };
        let mut mounts = Vec::new();
        for mount in &ctx.spec.volumes {
            let declared = ctx.volumes.get(&mount.name);
            let host = match declared.map(|v| v.scope).unwrap_or_default() {
                VolumeScope::App => layout.app_volume(&id.namespace, &id.app, &mount.name),
                VolumeScope::Pod => layout.pod_dir(id).join(mount.name.as_str()),
            };
            std::fs::create_dir_all(&host).map_err(|e| {
                format!(
                    "cannot create volume {} at {}: {e}",
                    mount.name,
                    host.display()
                )
            })?;
            let quota = (!mount.read_only).then(|| {
                let size = declared.map(|v| v.size.as_u64()).unwrap_or(u64::MAX);
                self.quotas
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(host.clone())
                    .or_insert_with(|| Arc::new(VolumeQuota::new(&host, size)))
                    .clone()
            });
            mounts.push(Mount {
                host,
                guest: mount.path.clone(),
                read_only: mount.read_only,
                quota,
            });
        }
        Ok(Arc::new(mounts))
    }

    fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
        add_metered_writes(linker)
    }

    fn bind(_call: &Arc<crate::trace::CallContext>, grant: &Self::Grant) -> Self::Provider {
        quotas(grant)
    }

    fn prepare_wasi(grant: &Self::Grant, wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
        preopen(wasi, grant)
    }

    /// Removes the deleted app's volumes from this host, but those it
    /// retains.
    fn forget(&self, app: &ForgetContext<'_>) -> Result<(), String> {
        let Some(layout) = &self.layout else {
            return Ok(());
        };
        let dir = layout.app_volumes(app.namespace, app.app);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if app.retain.iter().any(|r| r.as_str() == name) {
                continue;
            }
            std::fs::remove_dir_all(entry.path())
                .map_err(|e| format!("cannot remove volume {name}: {e}"))?;
            self.quotas
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&entry.path());
            tracing::info!(namespace = %app.namespace, app = %app.app, volume = name, "volume removed with its app");
        }
        Ok(())
    }

    /// Removes the pod's scratch volumes once its last copy is gone.
    fn release(&self, replica: &ReplicaId) -> Result<(), String> {
        let Some(layout) = &self.layout else {
            return Ok(());
        };
        let dir = layout.pod_dir(replica);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("cannot remove the pod's scratch volumes: {e}"))?;
        }
        Ok(())
    }
}
