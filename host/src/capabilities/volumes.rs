//! Volumes: host directories mounted into the guest as preopened
//! directories. wasmtime-wasi reaches them through cap-std, so no path the
//! guest builds (`..`, an absolute path, a symlink) can leave the mount.

use std::path::PathBuf;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// One directory mounted into a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Mounted without write access.
    pub read_only: bool,
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
