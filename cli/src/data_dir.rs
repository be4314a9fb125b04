//! Where Shoal keeps its state on this machine.

use std::path::PathBuf;

/// `--data-dir`, else `$SHOAL_DATA_DIR`, else `$XDG_DATA_HOME/shoal`, else
/// `~/.local/share/shoal`, else `.shoal` in the current directory.
pub fn resolve(flag: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = flag {
        return dir;
    }
    if let Some(dir) = std::env::var_os("SHOAL_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("shoal");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/shoal");
    }
    PathBuf::from(".shoal")
}
