//! The spool directory (`[station] spool_dir`, SPEC §3): job files dropped
//! there are imported and removed, on a thread of their own.
//!
//! The hand-over (docs/integration.md, "Hand over jobs"): a writer writes
//! `NAME.tmp` (not ending in `.json`, `.jsonl` or the station's own
//! `.importing` / `.rejected`), then renames it to
//! `NAME.json` or `NAME.jsonl`. Rename is atomic within a file system, so a
//! file with one of those endings is complete. Only those names are read.
//!
//! What the spool never does, whatever is dropped in it:
//! - block: it reads regular files only. It checks the entry type without
//!   following links, then opens with `O_NOFOLLOW | O_NONBLOCK` and checks
//!   again with `fstat` on the open file, so a FIFO, socket, device, symlink
//!   or directory is never read. Such entries are moved aside (`*.rejected`).
//! - read without bound: a file larger than [`MAX_FILE_BYTES`] is moved aside.
//! - import part of a file: a file is parsed whole first; if any line fails
//!   (a truncated last line included), nothing of it is imported and it is
//!   moved aside whole.
//! - overwrite: moving aside never replaces an existing file (`NAME.json.rejected`,
//!   else `NAME.json.1.rejected`, …).
//! - delete a file it has not read: a file is first *claimed* by renaming it
//!   to `NAME.json.N.importing`; only that claimed file is read and, once its
//!   shipments are stored, removed. A writer that renames a new `NAME.json`
//!   in meanwhile leaves a new entry for the next scan. A claimed file left by
//!   a crash or a store failure is imported on a later scan (re-importing is
//!   idempotent).
//!
//! Why a thread: a slow or hostile spool (a file system that hangs, a huge
//! directory) must never stall the main loop, which answers SIGTERM, pings the
//! systemd watchdog and keeps `/healthz` honest. The main loop only reads two
//! atomics and, on shutdown, waits a bounded time for the thread.

use crate::config::Config;
use crate::escape::Untrusted;
use crate::station::intake::{self, ImportCounts};
use crate::store::Store;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Largest job file the spool reads: 16 MiB. A shipment with a few
/// credential requests is a few KiB, so this is thousands of jobs per file;
/// larger files are moved aside unread (split them, or use `jobs import`).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Pause between two scans of the directory.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(200);

/// Suffix of a file being imported (claimed by the spool).
const CLAIMED: &str = ".importing";
/// Suffix of a file moved aside, with nothing imported.
const REJECTED: &str = ".rejected";

/// What one scan did with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every shipment stored (queued, duplicate or refused) and the file removed.
    Imported {
        name: OsString,
        counts: ImportCounts,
    },
    /// Moved aside unread or with nothing imported, as `to`.
    Rejected {
        name: OsString,
        why: String,
        to: OsString,
    },
    /// Left where it is (cannot open, store failed, cannot move aside); tried again later.
    Left { name: OsString, why: String },
}

/// Scans one directory; remembers what it already logged so a file it must
/// leave in place is reported once, not every scan.
#[derive(Debug)]
pub struct Scanner {
    store: Store,
    config: Config,
    dir: PathBuf,
    reported: HashSet<OsString>,
    dir_reported: bool,
}

impl Scanner {
    pub fn new(store: Store, config: Config, dir: PathBuf) -> Self {
        Scanner {
            store,
            config,
            dir,
            reported: HashSet::new(),
            dir_reported: false,
        }
    }

    /// One pass over the directory: first files claimed earlier (crash, store
    /// failure), then new `*.json` / `*.jsonl` files. Returns early when `stop` is set.
    pub fn scan(&mut self, stop: &AtomicBool) -> Vec<Outcome> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                self.dir_reported = false;
                entries
            }
            Err(e) => {
                if !std::mem::replace(&mut self.dir_reported, true) {
                    tracing::error!(dir = %Untrusted(&self.dir.to_string_lossy()), "spool directory unreadable: {e}");
                }
                return Vec::new();
            }
        };
        let mut claimed = Vec::new();
        let mut fresh = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if has_suffix(&name, CLAIMED) {
                claimed.push(entry);
            } else if has_suffix(&name, ".json") || has_suffix(&name, ".jsonl") {
                fresh.push(entry);
            }
        }
        // In name order: a batch split into numbered files is imported in order.
        claimed.sort_by_key(|e| e.file_name());
        fresh.sort_by_key(|e| e.file_name());
        let present: HashSet<OsString> = claimed
            .iter()
            .chain(&fresh)
            .map(|e| e.file_name())
            .collect();
        self.reported.retain(|n| present.contains(n));
        let mut out = Vec::new();
        for entry in claimed.into_iter().chain(fresh) {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let outcome = self.entry(&entry);
            self.log(&outcome);
            out.push(outcome);
        }
        out
    }

    fn entry(&mut self, entry: &std::fs::DirEntry) -> Outcome {
        let name = entry.file_name();
        // The entry's own type, links not followed.
        let kind = match entry.file_type() {
            Ok(t) => t,
            Err(e) => return left(name, format!("cannot stat: {e}")),
        };
        if !kind.is_file() {
            return self.reject(&name, format!("not a regular file ({})", describe(kind)));
        }
        let name = if has_suffix(&name, CLAIMED) {
            name
        } else {
            match move_aside(&self.dir, &name, CLAIMED) {
                Ok(claimed) => claimed,
                Err(e) => return left(name, format!("cannot claim for import: {e}")),
            }
        };
        let bytes = match read_regular(&self.dir.join(&name)) {
            Ok(bytes) => bytes,
            Err(ReadError::Refuse(why)) => return self.reject(&name, why),
            Err(ReadError::Io(e)) => return left(name, format!("cannot read: {e}")),
        };
        let shipments = match intake::parse(&bytes) {
            Ok(s) => s,
            Err(e) => return self.reject(&name, format!("{e}; nothing imported")),
        };
        match intake::import_shipments(&self.store, &self.config, shipments) {
            Ok(counts) => {
                if let Err(e) = std::fs::remove_file(self.dir.join(&name)) {
                    // Harmless: a later scan imports it again, all duplicates.
                    tracing::warn!(file = %show(&name), "imported but not removed: {e}");
                }
                Outcome::Imported { name, counts }
            }
            Err(e) => left(name, format!("store failed, will retry: {e}")),
        }
    }

    /// Moves `name` aside as `*.rejected`; if even that fails, leaves it.
    fn reject(&mut self, name: &OsStr, why: String) -> Outcome {
        let base = strip_suffix(name, CLAIMED);
        match move_aside_as(&self.dir, name, base, REJECTED) {
            Ok(to) => Outcome::Rejected {
                name: base.to_owned(),
                why,
                to,
            },
            Err(e) => left(name.to_owned(), format!("{why}; cannot move it aside: {e}")),
        }
    }

    fn log(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Imported { name, counts } => tracing::info!(
                file = %show(name),
                imported = counts.imported,
                duplicate = counts.duplicate,
                refused = counts.refused,
                "spool import"
            ),
            Outcome::Rejected { name, why, to } => tracing::error!(
                file = %show(name),
                moved_to = %show(to),
                "spool file rejected: {}",
                Untrusted(why)
            ),
            Outcome::Left { name, why } => {
                if self.reported.insert(name.clone()) {
                    tracing::error!(file = %show(name), "spool file left in place: {}", Untrusted(why));
                }
            }
        }
    }
}

fn left(name: OsString, why: String) -> Outcome {
    Outcome::Left { name, why }
}

/// A file name for a log line: lossy UTF-8, escaped.
fn show(name: &OsStr) -> String {
    crate::escape::untrusted(&name.to_string_lossy())
}

fn has_suffix(name: &OsStr, suffix: &str) -> bool {
    name.as_bytes().ends_with(suffix.as_bytes())
}

fn strip_suffix<'a>(name: &'a OsStr, suffix: &str) -> &'a OsStr {
    let b = name.as_bytes();
    match b.strip_suffix(suffix.as_bytes()) {
        Some(base) => OsStr::from_bytes(base),
        None => name,
    }
}

fn describe(t: std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "symbolic link"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "not a regular file"
    }
}

enum ReadError {
    /// The file must not be read (not regular after all, too large).
    Refuse(String),
    Io(std::io::Error),
}

/// Reads a regular file of at most [`MAX_FILE_BYTES`], never blocking and
/// never following a link: the entry may have been swapped since its type was
/// checked, so the open file is checked again.
fn read_regular(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => ReadError::Refuse("a symbolic link".into()),
            Some(libc::ENXIO) => ReadError::Refuse("not a regular file (socket)".into()),
            _ => ReadError::Io(e),
        })?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::Refuse(format!(
            "not a regular file ({})",
            describe(meta.file_type())
        )));
    }
    let too_large = || ReadError::Refuse(format!("larger than {MAX_FILE_BYTES} bytes"));
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    // The size may grow after fstat: read one byte past the cap to notice.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Renames `name` in `dir` to `name` + `suffix` (or `name.N` + `suffix`),
/// never replacing an existing entry.
fn move_aside(dir: &Path, name: &OsStr, suffix: &str) -> std::io::Result<OsString> {
    move_aside_as(dir, name, name, suffix)
}

/// Renames `from` in `dir` to `base` + `suffix`, else `base.1` + `suffix`, …,
/// never replacing an existing entry. Returns the new name.
fn move_aside_as(
    dir: &Path,
    from: &OsStr,
    base: &OsStr,
    suffix: &str,
) -> std::io::Result<OsString> {
    for n in 0..1000u32 {
        let mut to = base.to_owned();
        if n > 0 {
            to.push(format!(".{n}"));
        }
        to.push(suffix);
        match rename_noreplace(&dir.join(from), &dir.join(&to)) {
            Ok(()) => return Ok(to),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "1000 names taken",
    ))
}

/// `rename` that fails with `AlreadyExists` instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::CString;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: both are valid NUL-terminated paths that outlive the call.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        // Some file systems do not support the flag: fall back below.
        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
            return Err(e);
        }
    }
    // link(2) never replaces an existing name; then drop the old one.
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// The spool thread. Dropping it without [`SpoolThread::stop`] leaves the
/// thread running until the process ends.
#[derive(Debug)]
pub struct SpoolThread {
    stop: Arc<AtomicBool>,
    scans: Arc<AtomicU64>,
    idle: Arc<AtomicBool>,
    done: mpsc::Receiver<()>,
}

impl SpoolThread {
    /// Starts scanning `dir` every [`SCAN_INTERVAL`].
    pub fn spawn(store: Store, config: Config, dir: PathBuf) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let scans = Arc::new(AtomicU64::new(0));
        let idle = Arc::new(AtomicBool::new(false));
        // Dropped by the thread when it ends: `stop` waits on it with a timeout.
        let (done_tx, done) = mpsc::channel::<()>();
        let (t_stop, t_scans, t_idle) = (stop.clone(), scans.clone(), idle.clone());
        std::thread::Builder::new()
            .name("spool".into())
            .spawn(move || {
                let _done = done_tx;
                let mut scanner = Scanner::new(store, config, dir);
                while !t_stop.load(Ordering::SeqCst) {
                    let outcomes = scanner.scan(&t_stop);
                    let busy = outcomes
                        .iter()
                        .any(|o| matches!(o, Outcome::Imported { .. }));
                    t_idle.store(!busy, Ordering::SeqCst);
                    t_scans.fetch_add(1, Ordering::SeqCst);
                    let mut slept = Duration::ZERO;
                    while slept < SCAN_INTERVAL && !t_stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                        slept += Duration::from_millis(50);
                    }
                }
            })?;
        Ok(SpoolThread {
            stop,
            scans,
            idle,
            done,
        })
    }

    /// Whether a scan has completed and the last one imported no file
    /// (`run --once` may stop only then).
    pub fn idle(&self) -> bool {
        self.scans.load(Ordering::SeqCst) > 0 && self.idle.load(Ordering::SeqCst)
    }

    /// Scans completed so far.
    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::SeqCst)
    }

    /// Asks the thread to stop and waits at most `wait`; `false` if it is
    /// still busy (stuck in the file system): it is left behind, and whatever
    /// it was importing is finished or rolled back as one transaction per shipment.
    pub fn stop(self, wait: Duration) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        matches!(
            self.done.recv_timeout(wait),
            Err(mpsc::RecvTimeoutError::Disconnected)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    pub(crate) fn mkfifo(path: &Path) {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkfifo {}", path.display());
    }

    #[test]
    fn moving_aside_never_replaces_a_file() {
        let d = tempfile::tempdir().unwrap();
        for (name, body) in [("a.json", "new"), ("a.json.rejected", "old")] {
            std::fs::write(d.path().join(name), body).unwrap();
        }
        let to = move_aside(d.path(), OsStr::new("a.json"), REJECTED).unwrap();
        assert_eq!(to, "a.json.1.rejected");
        assert_eq!(
            std::fs::read_to_string(d.path().join("a.json.rejected")).unwrap(),
            "old"
        );
        assert_eq!(std::fs::read_to_string(d.path().join(&to)).unwrap(), "new");
        assert_eq!(names(d.path()), ["a.json.1.rejected", "a.json.rejected"]);
    }

    #[test]
    fn only_regular_files_are_read_and_never_past_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("ok"), b"{}").unwrap();
        assert_eq!(read_regular(&p.join("ok")).ok(), Some(b"{}".to_vec()));
        std::os::unix::fs::symlink(p.join("ok"), p.join("link")).unwrap();
        assert!(matches!(
            read_regular(&p.join("link")),
            Err(ReadError::Refuse(_))
        ));
        mkfifo(&p.join("fifo"));
        // Would block forever on a plain open: no writer.
        assert!(matches!(
            read_regular(&p.join("fifo")),
            Err(ReadError::Refuse(_))
        ));
        std::fs::create_dir(p.join("dir")).unwrap();
        assert!(matches!(
            read_regular(&p.join("dir")),
            Err(ReadError::Refuse(_))
        ));
        let big = std::fs::File::create(p.join("big")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        assert!(matches!(
            read_regular(&p.join("big")),
            Err(ReadError::Refuse(_))
        ));
    }
}
