//! Where a host keeps its data: the one place its data dir's layout is
//! spelled.
//!
//! ```text
//! <data>/components/<sha256>.wasm             component bytes fetched from the store
//! <data>/cache/                               the precompile cache (0700)
//! <data>/keys/sealing.xkey                    the host's sealing key (0600)
//! <data>/volumes/<namespace>/<app>/<volume>/  app-scoped volumes
//! <data>/pods/<namespace>/<app>/<pod>-<i>/    pod-scoped (scratch) volumes
//! ```

use std::path::{Path, PathBuf};

use shoal_api::Digest;
use shoal_api::Name;
use shoal_api::wire::ReplicaId;

/// A host's data directory.
#[derive(Debug, Clone)]
pub struct DataLayout {
    root: PathBuf,
}

impl DataLayout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataLayout { root: root.into() }
    }

    /// The data dir itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where component bytes are kept.
    pub fn components(&self) -> PathBuf {
        self.root.join("components")
    }

    /// The file holding one component's bytes.
    pub fn component(&self, digest: &Digest) -> PathBuf {
        self.components().join(format!("{}.wasm", digest.to_hex()))
    }

    /// The precompile cache.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// The host's sealing key.
    pub fn sealing_key(&self) -> PathBuf {
        self.root.join("keys").join("sealing.xkey")
    }

    /// Every app-scoped volume of an app.
    pub fn app_volumes(&self, namespace: &Name, app: &Name) -> PathBuf {
        self.root
            .join("volumes")
            .join(namespace.as_str())
            .join(app.as_str())
    }

    /// One app-scoped volume.
    pub fn app_volume(&self, namespace: &Name, app: &Name, volume: &Name) -> PathBuf {
        self.app_volumes(namespace, app).join(volume.as_str())
    }

    /// A replica's pod-scoped volumes.
    pub fn pod_dir(&self, id: &ReplicaId) -> PathBuf {
        self.root
            .join("pods")
            .join(id.namespace.as_str())
            .join(id.app.as_str())
            .join(format!("{}-{}", id.pod, id.index))
    }
}
