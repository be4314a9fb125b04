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

/// Shoal's configuration directory on this machine: `$XDG_CONFIG_HOME/shoal`,
/// else `~/.config/shoal`, else `.shoal-config` in the current directory.
/// Keys live here, apart from the data they protect.
pub fn config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(dir).join("shoal");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".config/shoal");
    }
    PathBuf::from(".shoal-config")
}
