//! Where a node keeps its data by default. `shoald` uses it to choose its data directory and
//! `shoal` to find the local node's admin token, so both must agree; reading the environment
//! and `/proc` stays with them.

use std::path::{Path, PathBuf};

/// The admin token's file in a data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// `/var/lib/shoal` for root, else `$XDG_DATA_HOME/shoal`, else `~/.local/share/shoal`.
pub fn default_data_dir(is_root: bool, xdg_data_home: Option<&str>, home: Option<&str>) -> PathBuf {
    if is_root {
        return PathBuf::from("/var/lib/shoal");
    }
    match (
        xdg_data_home.filter(|s| !s.is_empty()),
        home.filter(|s| !s.is_empty()),
    ) {
        (Some(xdg), _) => Path::new(xdg).join("shoal"),
        (None, Some(home)) => Path::new(home).join(".local/share/shoal"),
        (None, None) => PathBuf::from("shoal-data"),
    }
}

/// Whether the text of `/proc/self/status` says the effective uid is 0. (Reading it avoids
/// `geteuid`, which would need `unsafe`.)
pub fn status_says_root(proc_self_status: &str) -> bool {
    proc_self_status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .is_some_and(|euid| euid == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_defaults() {
        assert_eq!(
            default_data_dir(true, Some("/x"), Some("/h")),
            PathBuf::from("/var/lib/shoal")
        );
        assert_eq!(
            default_data_dir(false, Some("/x"), Some("/h")),
            PathBuf::from("/x/shoal")
        );
        assert_eq!(
            default_data_dir(false, Some(""), Some("/h")),
            PathBuf::from("/h/.local/share/shoal")
        );
        assert_eq!(
            default_data_dir(false, None, None),
            PathBuf::from("shoal-data")
        );
    }

    #[test]
    fn root_from_proc_status() {
        assert!(status_says_root("Name:\tx\nUid:\t0\t0\t0\t0\n"));
        assert!(!status_says_root("Uid:\t1000\t1000\t1000\t1000\n"));
        // The effective uid is the second field.
        assert!(status_says_root("Uid:\t1000\t0\t0\t0\n"));
        assert!(!status_says_root("garbage"));
    }
}
