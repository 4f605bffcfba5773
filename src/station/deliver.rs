//! Delivery (SPEC §6): each pending result goes to the sink on its own.
//!
//! - **Independent results.** A pass tries every result that is due; a result
//!   that fails is recorded with a named [`Reason`] and an exponential backoff
//!   with jitter (capped at 5 min), and the pass goes on with the next one.
//!   Results that never failed are tried first, so a failing result never goes
//!   before a fresh one.
//! - **Outbox names one-to-one with ids.** `<shipment_id>.json`, from the
//!   validated [`ShipmentId`] (SPEC §3 grammar: no `/`, `.` or control
//!   character can reach a file name). An id in the store that does not parse
//!   stays pending (`delivery.bad_id`).
//! - **Never overwrite a different result.** A file already at the name with
//!   the same bytes is this result, delivered before a crash: acknowledged.
//!   Anything else there (other bytes, a link, a directory) stays untouched and
//!   the result stays pending (`delivery.outbox_conflict`).
//! - **Temp files that cannot be hijacked.** Created with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW` under an unpredictable name, mode 0600,
//!   fsynced, then published with `link(2)` — atomic like `rename(2)` but it
//!   fails instead of replacing an existing name, which closes the race between
//!   the conflict check and the publish — and the directory is fsynced.
//!
//! Acknowledgement (the link, or the HTTP sink's 2xx) is what lets the store
//! purge the responses ([`Store::delivered`]).

use super::http_sink::{HttpSink, HttpSinkError};
use crate::escape::Untrusted;
use crate::shipment::ShipmentId;
use crate::store::{PendingDelivery, Store, StoreError};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// First retry delay; doubles with every failure of the same result.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest wait between two attempts at one result (SPEC §6: 5 min).
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// `run --once` gives up on a result with a transient reason after this many
/// failures in the run (1 + 2 + 4 + 8 s of backoff at most).
pub const ONCE_GIVE_UP_AFTER: u32 = 5;

/// Why a result was not delivered. Our own decision: closed; the code is
/// what `jobs list`, the board and `/metrics` show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The id in the store does not fit the SPEC §3 grammar (a row from an
    /// older version): no file name or header can be made from it.
    BadId,
    /// Another result (or something that is not a regular file) holds
    /// `<shipment_id>.json`; it is never overwritten.
    OutboxConflict,
    /// The outbox could not be written (permissions, disk full, …).
    OutboxIo,
    /// The HTTP sink refused the result (4xx other than 408 / 429).
    SinkRefused,
    /// The HTTP sink answered 5xx, 408 or 429.
    SinkUnavailable,
    /// The HTTP sink could not be reached or answered garbage.
    SinkUnreachable,
    /// The sink took the result but the store could not record it.
    Store,
    /// The upstream back end holds a different result for this shipment
    /// (`409`, SPEC §12): ours is kept and never purged until reconciled.
    ResultConflict,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::BadId,
        Reason::OutboxConflict,
        Reason::OutboxIo,
        Reason::SinkRefused,
        Reason::SinkUnavailable,
        Reason::SinkUnreachable,
        Reason::Store,
        Reason::ResultConflict,
    ];

    /// The named reason.
    pub fn code(self) -> &'static str {
        match self {
            Reason::BadId => "delivery.bad_id",
            Reason::OutboxConflict => "delivery.outbox_conflict",
            Reason::OutboxIo => "delivery.outbox_io",
            Reason::SinkRefused => "delivery.sink_refused",
            Reason::SinkUnavailable => "delivery.sink_unavailable",
            Reason::SinkUnreachable => "delivery.sink_unreachable",
            Reason::Store => "delivery.store",
            Reason::ResultConflict => "delivery.result_conflict",
        }
    }

    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Whether retrying cannot help until someone acts (renames the file,
    /// fixes the receiver, migrates the id). The daemon still retries with
    /// backoff; `run --once` gives up after the first such failure.
    pub fn needs_operator(self) -> bool {
        matches!(
            self,
            Reason::BadId | Reason::OutboxConflict | Reason::SinkRefused | Reason::ResultConflict
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// One failed delivery: a reason and one line of detail (no secret: ids,
/// paths, status codes, OS error texts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub detail: String,
}

impl Failure {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Failure {
            reason,
            detail: detail.into(),
        }
    }
}

/// Whether `run --once` stops waiting for a result that failed
/// `failures_this_run` times, the last time for `reason`: at once when only an
/// operator can help, after [`ONCE_GIVE_UP_AFTER`] failures otherwise.
pub fn once_gives_up(reason: Reason, failures_this_run: u32) -> bool {
    failures_this_run >= 1 && (reason.needs_operator() || failures_this_run >= ONCE_GIVE_UP_AFTER)
}

/// Delay before the next attempt after `attempts` failures in a row:
/// `BACKOFF_BASE · 2^(attempts-1)`, capped at [`BACKOFF_CAP`], scaled by a
/// jitter factor in [0.5, 1) ("equal jitter": many results failing together
/// spread out, and each delay stays at least half the nominal one, so below
/// the cap the gaps between a result's attempts never shrink). `jitter` is
/// in [0, 1).
pub fn backoff(attempts: u32, jitter: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    let nominal = BACKOFF_BASE
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_CAP);
    nominal.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// Where results go.
#[derive(Debug, Clone, Copy)]
pub enum Sink<'a> {
    /// One file per shipment in this directory (the default sink).
    Outbox(&'a Path),
    /// POSTed to an HTTP receiver.
    Http(&'a HttpSink),
}

impl Sink<'_> {
    /// What the audit trail records as the sink.
    pub fn name(&self) -> &str {
        match self {
            Sink::Outbox(_) => "outbox",
            Sink::Http(h) => h.url(),
        }
    }
}

/// A failed result of one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub shipment_id: String,
    pub failure: Failure,
    /// Failures in a row, this one included.
    pub attempts: u32,
    pub next_attempt_ms: i64,
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub delivered: Vec<String>,
    pub failed: Vec<Failed>,
    /// The store could not record a delivery or a failure: the backoff of
    /// the results concerned was not saved, so the caller must pace itself.
    pub store_failed: bool,
}

/// Tries every result due when the pass starts, each on its own: a failure is
/// recorded with its reason and next attempt time (the time of that failure
/// plus [`backoff`] with `jitter()` in [0, 1)) and the pass goes on. `now_ms`
/// is the clock (unix milliseconds; tests pass a fixed one). Only a store that
/// cannot list the due results ends the pass early.
pub fn deliver_due(
    store: &Store,
    sink: Sink<'_>,
    now_ms: &dyn Fn() -> i64,
    jitter: &mut dyn FnMut() -> f64,
) -> Result<Pass, StoreError> {
    let mut pass = Pass::default();
    for pending in store.due_deliveries(now_ms())? {
        let id = pending.status.shipment_id.clone();
        let failure = match deliver_one(sink, &pending) {
            Ok(()) => match store.delivered(&id, sink.name()) {
                Ok(()) => {
                    pass.delivered.push(id);
                    continue;
                }
                Err(e) => {
                    pass.store_failed = true;
                    Failure::new(Reason::Store, format!("cannot record the delivery: {e}"))
                }
            },
            Err(f) => f,
        };
        let attempts = pending.status.attempts.saturating_add(1);
        let next = now_ms().saturating_add(backoff(attempts, jitter()).as_millis() as i64);
        let attempts = match store.delivery_failed(
            &id,
            failure.reason.code(),
            &failure.detail,
            next,
        ) {
            Ok(n) => n,
            Err(e) => {
                // The store is failing too: the result stays due and is tried
                // again next pass; nothing is lost, only the backoff.
                pass.store_failed = true;
                tracing::error!(shipment = %Untrusted(&id), "cannot record a delivery failure: {e}");
                attempts
            }
        };
        pass.failed.push(Failed {
            shipment_id: id,
            failure,
            attempts,
            next_attempt_ms: next,
        });
    }
    Ok(pass)
}

/// Hands one result to the sink; `Ok` once the sink has acknowledged it.
fn deliver_one(sink: Sink<'_>, pending: &PendingDelivery) -> Result<(), Failure> {
    let raw = &pending.status.shipment_id;
    let id = ShipmentId::parse(raw).map_err(|e| {
        Failure::new(
            Reason::BadId,
            format!("shipment id {} is not deliverable: {e}", Untrusted(raw)),
        )
    })?;
    let bytes = pending.result_json.as_bytes();
    match sink {
        Sink::Outbox(dir) => place_result(dir, &id, bytes).map(|_| ()),
        Sink::Http(http) => http.post(&id, &pending.result_json).map_err(http_failure),
    }
}

fn http_failure(e: HttpSinkError) -> Failure {
    let reason = match &e {
        HttpSinkError::Status { status, .. }
            if (400..500).contains(status) && !matches!(status, 408 | 429) =>
        {
            Reason::SinkRefused
        }
        HttpSinkError::Status { .. } => Reason::SinkUnavailable,
        HttpSinkError::Conflict { .. } => Reason::ResultConflict,
        HttpSinkError::Io { .. } | HttpSinkError::BadUrl(_) => Reason::SinkUnreachable,
    };
    Failure::new(reason, e.to_string())
}

/// Path of a shipment's result file: one name per id, one id per name.
pub fn result_path(outbox: &Path, shipment_id: &ShipmentId) -> PathBuf {
    outbox.join(format!("{}.json", shipment_id.as_str()))
}

/// How a result reached the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Written now.
    Written,
    /// The same bytes were already there (delivered before a restart).
    AlreadyThere,
}

/// Puts `bytes` at `<outbox>/<id>.json` atomically and durably, never
/// replacing anything already at that name (see the module docs).
pub fn place_result(outbox: &Path, id: &ShipmentId, bytes: &[u8]) -> Result<Placed, Failure> {
    let path = result_path(outbox, id);
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Failure::new(Reason::OutboxIo, format!("{what} {}: {e}", p.display()))
    };
    private_dir(outbox).map_err(|e| io("cannot create", outbox, e))?;
    let check = |p: &Path| -> Result<Option<Placed>, Failure> {
        match existing(p, bytes).map_err(|e| io("cannot read", p, e))? {
            Existing::Absent => Ok(None),
            Existing::Same => Ok(Some(Placed::AlreadyThere)),
            Existing::Other(what) => Err(Failure::new(
                Reason::OutboxConflict,
                format!(
                    "{} already holds {what}; it is never overwritten (move it aside to deliver)",
                    p.display()
                ),
            )),
        }
    };
    if let Some(placed) = check(&path)? {
        return Ok(placed);
    }
    let tmp =
        write_temp(outbox, id, bytes).map_err(|e| io("cannot write a temp file in", outbox, e))?;
    let linked = fs::hard_link(&tmp, &path);
    if let Err(e) = fs::remove_file(&tmp) {
        // Harmless: the name is unique, hidden and not `*.json`, so no reader
        // takes it for a result and no later write reuses it.
        tracing::warn!(file = %tmp.display(), "cannot remove a delivery temp file: {e}");
    }
    match linked {
        Ok(()) => {}
        // Something took the name between the check and the link.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return check(&path)?.ok_or_else(|| io("cannot link", &path, e));
        }
        Err(e) => return Err(io("cannot link", &path, e)),
    }
    File::open(outbox)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", outbox, e))?;
    Ok(Placed::Written)
}

/// Removes the temp files a crash left in `outbox` (start-up, before any
/// delivery runs): hidden names of the form `.<shipment_id>.<16 hex>.tmp`
/// that only [`place_result`] makes. A leftover is either a result not yet
/// published (still pending in the store, so written again) or one already
/// linked to its `<id>.json` (the extra name only). Returns how many.
pub fn remove_stale_temps(outbox: &Path) -> std::io::Result<usize> {
    let entries = match fs::read_dir(outbox) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temp_name(name) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether `name` is one of [`write_temp`]'s names.
fn is_temp_name(name: &str) -> bool {
    let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    let Some((id, random)) = inner.rsplit_once('.') else {
        return false;
    };
    random.len() == 16
        && random.bytes().all(|b| b.is_ascii_hexdigit())
        && ShipmentId::parse(id).is_ok()
}

/// Creates `dir` (and missing parents) as 0700 whatever the umask; an
/// existing directory is left as the operator made it.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

enum Existing {
    Absent,
    Same,
    /// What is there instead, in words.
    Other(&'static str),
}

/// What is at `path` now, compared with `bytes`, without following a link
/// or blocking on a FIFO.
fn existing(path: &Path, bytes: &[u8]) -> std::io::Result<Existing> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Existing::Other("a symbolic link"))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Existing::Other("something that is not a regular file"));
    }
    if meta.len() != bytes.len() as u64 {
        return Ok(Existing::Other("a different result"));
    }
    let mut there = Vec::with_capacity(bytes.len());
    file.take(bytes.len() as u64 + 1).read_to_end(&mut there)?;
    Ok(if there == bytes {
        Existing::Same
    } else {
        Existing::Other("a different result")
    })
}

/// Writes `bytes` to a new hidden file in `dir` that nobody could have
/// predicted or planted: `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600, fsynced.
fn write_temp(dir: &Path, id: &ShipmentId, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let mut last = None;
    for _ in 0..4 {
        let tmp = dir.join(format!(".{id}.{:016x}.tmp", rand::random::<u64>()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let written = (|| {
            // 0600 even under a umask that strips owner bits.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        return match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp); // best effort; the write error is what matters
                Err(e)
            }
        };
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(ErrorKind::AlreadyExists)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shipment::Job;
    use std::os::unix::fs::MetadataExt;

    fn id(s: &str) -> ShipmentId {
        ShipmentId::parse(s).unwrap()
    }

    /// A store holding programmed results `{"r":"<id>"}` for `ids`.
    fn store_with(ids: &[&str]) -> Store {
        let s = Store::open_in_memory().unwrap();
        for i in ids {
            seed(&s, i, &format!("{{\"r\":\"{i}\"}}"));
        }
        s
    }

    fn seed(s: &Store, i: &str, json: &str) {
        let job = Job {
            shipment_id: id(i),
            product_id: 1,
            inventory_product_id: 106,
            customization_id: "C1".into(),
            // Unique per id: intake refuses a request seen before (replay).
            pin_request: format!("p.i.n.{i}.we"),
            credential_requests: vec![],
        };
        s.import(&job).unwrap();
        s.lease("slot", &[1], Duration::from_secs(60))
            .unwrap()
            .unwrap();
        s.begin_programming("slot", i, "1").unwrap();
        s.store_result("slot", i, "1", "5.7.1", json.into())
            .unwrap();
    }

    fn no_jitter() -> impl FnMut() -> f64 {
        || 0.0
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps_at_five_minutes() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, 0.999_999).as_millis(), 999);
        assert_eq!(backoff(2, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(4, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(30, 0.999_999).as_secs(), 299);
        assert_eq!(backoff(u32::MAX, 0.0), BACKOFF_CAP / 2);
        // Below the cap the ranges of successive delays never overlap: a
        // result's gaps never shrink (1 + 2 + … + 128 s, then 150-300 s).
        for n in 1..9 {
            assert!(backoff(n, 0.999_999) <= backoff(n + 1, 0.0));
        }
    }

    /// Found when the disk filled up during a test run: a store that cannot
    /// save a failure left the result due at once, and the delivery thread
    /// retried and logged it every 10 ms. The pass now says so.
    #[test]
    fn a_store_that_cannot_record_a_failure_is_reported_by_the_pass() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        let s = store_with(&["A"]);
        private_dir(&outbox).unwrap();
        fs::write(outbox.join("A.json"), "other").unwrap();
        let pass = deliver_due(&s, Sink::Outbox(&outbox), &|| 1_000, &mut no_jitter()).unwrap();
        assert!(!pass.store_failed);
        // Any write to the outbox table now fails, as on a full disk.
        s.call(|c| {
            c.execute_batch(
                "CREATE TRIGGER full BEFORE UPDATE ON outbox
                 BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
            )?;
            Ok(())
        })
        .unwrap();
        let pass = deliver_due(&s, Sink::Outbox(&outbox), &|| 10_000, &mut no_jitter()).unwrap();
        assert!(pass.store_failed);
        assert_eq!(pass.failed.len(), 1);
        assert_eq!(fs::read(outbox.join("A.json")).unwrap(), b"other");
    }

    #[test]
    fn one_failing_result_never_delays_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        let s = store_with(&["A", "B", "C"]);
        private_dir(&outbox).unwrap();
        // "A" (the oldest) cannot be delivered: its name is taken.
        fs::write(outbox.join("A.json"), "other").unwrap();
        let t0 = 1_000_000;
        let pass = deliver_due(&s, Sink::Outbox(&outbox), &|| t0, &mut no_jitter()).unwrap();
        assert_eq!(pass.delivered, ["B", "C"]);
        assert_eq!(pass.failed.len(), 1);
        let f = &pass.failed[0];
        assert_eq!(
            (f.shipment_id.as_str(), f.failure.reason, f.attempts),
            ("A", Reason::OutboxConflict, 1)
        );
        assert_eq!(f.next_attempt_ms, t0 + 500);
        // Not due before its backoff; due after, and backs off further.
        assert!(s.due_deliveries(t0 + 499).unwrap().is_empty());
        let pass = deliver_due(&s, Sink::Outbox(&outbox), &|| t0 + 500, &mut no_jitter()).unwrap();
        assert_eq!(
            (pass.failed[0].attempts, pass.failed[0].next_attempt_ms),
            (2, t0 + 500 + 1000)
        );
        // The reason shows in `jobs list` and the status; the file is untouched.
        let (row, audit) = s.show("A").unwrap();
        assert_eq!(row.state, "programmed");
        assert!(row
            .reason
            .unwrap()
            .starts_with("delivery.outbox_conflict: "));
        let status = s.delivery_status().unwrap();
        assert_eq!(
            status[0].reason.as_deref(),
            Some("delivery.outbox_conflict")
        );
        assert_eq!(status[0].attempts, 2);
        // One audit row for the first failure, none for the same reason again.
        assert_eq!(
            audit
                .iter()
                .filter(|a| a.event == "delivery_failed")
                .count(),
            1
        );
        assert_eq!(fs::read(outbox.join("A.json")).unwrap(), b"other");
        // Moving the other file aside lets it through.
        fs::remove_file(outbox.join("A.json")).unwrap();
        let pass =
            deliver_due(&s, Sink::Outbox(&outbox), &|| t0 + 10_000, &mut no_jitter()).unwrap();
        assert_eq!(pass.delivered, ["A"]);
        assert_eq!(s.show("A").unwrap().0.reason, None);
    }

    #[test]
    fn a_result_already_in_the_outbox_with_the_same_bytes_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let s = store_with(&["A"]);
        private_dir(dir.path()).unwrap();
        fs::write(dir.path().join("A.json"), "{\"r\":\"A\"}").unwrap();
        let pass = deliver_due(&s, Sink::Outbox(dir.path()), &|| 0, &mut no_jitter()).unwrap();
        assert_eq!(pass.delivered, ["A"]);
        assert_eq!(s.show("A").unwrap().0.state, "purged");
    }

    #[test]
    fn an_id_that_does_not_parse_stays_pending_with_a_reason() {
        let s = store_with(&["A"]);
        // A row from before the id grammar (SPEC §3) was enforced.
        s.call(|c| {
            c.execute_batch(
                "PRAGMA foreign_keys = OFF;
                 UPDATE outbox SET shipment_id = 'COLL.1' WHERE shipment_id = 'A';
                 UPDATE jobs SET shipment_id = 'COLL.1' WHERE shipment_id = 'A';
                 PRAGMA foreign_keys = ON;",
            )?;
            Ok(())
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pass = deliver_due(&s, Sink::Outbox(dir.path()), &|| 0, &mut no_jitter()).unwrap();
        assert_eq!(pass.failed[0].failure.reason, Reason::BadId);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(s.show("COLL.1").unwrap().0.state, "programmed");
    }

    #[test]
    fn a_planted_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let outbox = dir.path().join("outbox");
        private_dir(&outbox).unwrap();
        std::os::unix::fs::symlink(&victim, outbox.join("A.json")).unwrap();
        let err = place_result(&outbox, &id("A"), b"result").unwrap_err();
        assert_eq!(err.reason, Reason::OutboxConflict);
        assert!(err.detail.contains("symbolic link"), "{}", err.detail);
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // The old predictable temp name is not used either.
        std::os::unix::fs::symlink(&victim, outbox.join(".B.json.tmp")).unwrap();
        assert_eq!(
            place_result(&outbox, &id("B"), b"result").unwrap(),
            Placed::Written
        );
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(outbox.join("B.json")).unwrap(), b"result");
    }

    #[test]
    fn outbox_and_result_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("new/outbox");
        place_result(&outbox, &id("A"), b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&outbox), 0o700);
        assert_eq!(mode(&outbox.join("A.json")), 0o600);
        // Only the result is left: no temp file.
        let names: Vec<_> = fs::read_dir(&outbox)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["A.json"]);
    }

    #[test]
    fn temp_files_left_by_a_crash_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let o = dir.path();
        for name in [
            ".A.0123456789abcdef.tmp",
            ".B-1.fedcba9876543210.tmp",
            "A.json",
            ".A.json.tmp",
            ".A.xyz.tmp",
            "notes.txt",
        ] {
            fs::write(o.join(name), "x").unwrap();
        }
        fs::create_dir(o.join(".C.0123456789abcdef.tmp")).unwrap();
        assert_eq!(remove_stale_temps(o).unwrap(), 2);
        let mut left: Vec<_> = fs::read_dir(o)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".A.json.tmp",
                ".A.xyz.tmp",
                ".C.0123456789abcdef.tmp",
                "A.json",
                "notes.txt"
            ]
        );
        assert_eq!(remove_stale_temps(&o.join("missing")).unwrap(), 0);
    }

    #[test]
    fn once_gives_up_at_once_only_when_an_operator_must_act() {
        assert!(!once_gives_up(Reason::OutboxConflict, 0));
        assert!(once_gives_up(Reason::OutboxConflict, 1));
        assert!(once_gives_up(Reason::SinkRefused, 1));
        assert!(!once_gives_up(
            Reason::SinkUnavailable,
            ONCE_GIVE_UP_AFTER - 1
        ));
        assert!(once_gives_up(Reason::SinkUnavailable, ONCE_GIVE_UP_AFTER));
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
    }
}
