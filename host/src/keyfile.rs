//! Private key files: created once with mode 0600 in a 0700 directory,
//! read back on every start.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use shoal_api::SealingKey;

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("cannot use the key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others can read it.
    #[error(
        "the key file {path} can be read by other users (mode {mode:o}): run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// It holds something else.
    #[error("the key file {path} does not hold a key: {why}; move it away to make a new one")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// The text in `path`, created by `make` (and stored with mode 0600) when
/// the file does not exist yet. A file others may read is refused.
pub fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<String, String>,
) -> Result<String, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Exposed {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            std::fs::read_to_string(path).map_err(io)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io)?;
            }
            let text = make().map_err(|why| KeyFileError::Invalid {
                path: path.to_path_buf(),
                why,
            })?;
            // Written aside and linked into place, so a process starting at
            // the same moment reads either no key or the whole key.
            let aside = path.with_extension(format!("new.{}", std::process::id()));
            let _ = std::fs::remove_file(&aside);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&aside)
                .map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            let linked = std::fs::hard_link(&aside, path);
            let _ = std::fs::remove_file(&aside);
            match linked {
                Ok(()) => Ok(text),
                // Another process made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::fs::read_to_string(path).map_err(io)
                }
                Err(e) => Err(io(e)),
            }
        }
        Err(e) => Err(io(e)),
    }
}

/// The host's sealing key pair, kept in `path` (created on first start).
pub fn sealing_key(path: &Path) -> Result<SealingKey, KeyFileError> {
    let seed = read_or_create(path, || {
        SealingKey::generate().seed().map_err(|e| e.to_string())
    })?;
    SealingKey::from_seed(&seed).map_err(|e| KeyFileError::Invalid {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_privately_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/host.xkey");
        let first = sealing_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(sealing_key(&path).unwrap().public_key(), first.public_key());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            sealing_key(&path),
            Err(KeyFileError::Exposed { .. })
        ));
    }
}
