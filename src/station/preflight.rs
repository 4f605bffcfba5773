//! Start-up checks of the directories the station writes (issue #12): each
//! configured directory exists or can be created (0700), is a directory, and
//! is writable by this user. They run before any station key is loaded and
//! before any slot is opened, so a misconfigured outbox is found at start-up
//! instead of after a key was programmed (its result would then wait forever).

use crate::config::Config;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// One directory that cannot be used, with the fix, in one line.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PreflightError {
    #[error("{key} {path} is not a directory: remove or rename it, or point {key} elsewhere")]
    NotADirectory { key: &'static str, path: PathBuf },
    #[error("{key} {path} cannot be created ({reason}): create it (mode 0700) as the station's user, or point {key} elsewhere")]
    CannotCreate {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{key} {path} is not writable ({reason}): give the station's user write access (mode 0700, owned by it), or point {key} elsewhere")]
    NotWritable {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// The directories `config` makes the station write, with their setting names:
/// the state directory, the outbox when it is the sink, the spool when set.
pub fn directories(config: &Config) -> Vec<(&'static str, &Path)> {
    let mut dirs = vec![("state_dir", config.state_dir.as_path())];
    if config.http_sink.is_none() {
        dirs.push(("outbox_dir", config.outbox_dir.as_path()));
    }
    if let Some(spool) = &config.spool_dir {
        dirs.push(("spool_dir", spool.as_path()));
    }
    dirs
}

/// Checks (creating when missing) every directory of [`directories`]; the
/// first that fails is the error.
pub fn check(config: &Config) -> Result<(), PreflightError> {
    directories(config)
        .into_iter()
        .try_for_each(|(key, path)| check_dir(key, path))
}

/// Checks one directory: made 0700 when missing (whatever the umask), then a
/// probe file created exclusively (never through a link) and removed.
pub fn check_dir(key: &'static str, path: &Path) -> Result<(), PreflightError> {
    let owned = || path.to_path_buf();
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(PreflightError::NotADirectory { key, path: owned() }),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let cannot = |e: std::io::Error| PreflightError::CannotCreate {
                key,
                path: owned(),
                reason: e.to_string(),
            };
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(cannot)?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(cannot)?;
        }
        // A parent that is a file, or no search permission on a parent.
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(PreflightError::NotADirectory { key, path: owned() })
        }
        Err(e) => {
            return Err(PreflightError::NotWritable {
                key,
                path: owned(),
                reason: e.to_string(),
            })
        }
    }
    let probe = path.join(format!(".prereg-probe-{:016x}", rand::random::<u64>()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|e| PreflightError::NotWritable {
            key,
            path: owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_missing_directory_is_created_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        check_dir("outbox_dir", &p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
        assert_eq!(fs::read_dir(&p).unwrap().count(), 0, "the probe is removed");
    }

    #[test]
    fn a_file_where_a_directory_belongs_is_named_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outbox");
        fs::write(&p, "").unwrap();
        let e = check_dir("outbox_dir", &p).unwrap_err();
        assert_eq!(
            e,
            PreflightError::NotADirectory {
                key: "outbox_dir",
                path: p.clone()
            }
        );
        let line = e.to_string();
        assert!(!line.contains('\n') && line.contains("point outbox_dir elsewhere"));
        // Under a file, too.
        assert!(matches!(
            check_dir("spool_dir", &p.join("x")),
            Err(PreflightError::NotADirectory { .. })
        ));
    }

    #[test]
    fn a_read_only_directory_is_not_writable() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ro");
        fs::create_dir(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o500)).unwrap();
        let r = check_dir("state_dir", &p);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
        // root may write anyway; everyone else must be refused.
        if !nix_is_root() {
            assert!(
                matches!(r, Err(PreflightError::NotWritable { .. })),
                "{r:?}"
            );
        }
    }

    fn nix_is_root() -> bool {
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }
}
