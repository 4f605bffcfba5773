//! The job store: SQLite in WAL mode (one station, the embedded default) or
//! PostgreSQL (a fleet of stations sharing one queue, SPEC §13; see [`pg`]),
//! each on its own thread. Callers see one type, [`Store`], whichever backend
//! it runs on: every operation keeps the same states, audit events and
//! refusal reasons on both.
//!
//! Why a thread: rusqlite connections are not `Sync`, slot workers run on
//! blocking threads and the web server on tokio; funnelling every call through
//! one owner thread serialises writers without SQLITE_BUSY retries and keeps
//! each operation a single transaction. Callers send a closure and wait for its
//! answer ([`Store::call`]); the store is cheap to clone.
//!
//! States (SPEC §6, issue "The station"): queued → leased → programmed →
//! (delivered, purged), or refused / failed with a named reason. What survives a
//! purge is an audit trail: shipment id, request digests, serial, firmware,
//! slot, timestamps, outcome — no PIN, no plaintext, no response JWE.

use crate::escape::Untrusted;
use crate::shipment::{IntakeRefusal, Job, JobContent, ShipmentId};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use thiserror::Error;

pub mod pg;
mod writer;
pub use pg::PgSettings;
pub use writer::WriterStats;
use writer::{Call, TxCall};

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_delivery.sql"),
    include_str!("migrations/0003_intake.sql"),
];

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path}: cannot make it private to the station's user ({source})")]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("fleet database: {0}")]
    Pg(#[from] postgres::Error),
    #[error("store configuration: {0}")]
    Config(String),
    /// The fence of SPEC §13: the lease was taken over or expired (the station
    /// was paused or partitioned); nothing may be stored under it.
    #[error("job {shipment_id}: this station's lease was lost (expired or taken over)")]
    LeaseLost { shipment_id: String },
    #[error("this operation needs the SQLite store")]
    NotSqlite,
    #[error("this station keeps its state in SQLite: there is no fleet (set [store] url)")]
    NotFleet,
    #[error("database row fails validation: {0}")]
    BadRow(String),
    #[error("the store thread has stopped")]
    Stopped,
    #[error("job {0} is not known")]
    UnknownJob(String),
    #[error("database: the transaction was not committed ({0}); nothing of it was stored")]
    NotCommitted(String),
    #[error("job {shipment_id} is {state}, not {expected}")]
    WrongState {
        shipment_id: String,
        state: String,
        expected: &'static str,
    },
}

/// The SQLite backend: the store thread's queue and counters.
#[derive(Clone, Debug)]
struct SqliteHandle {
    calls: mpsc::Sender<Call>,
    stats: Arc<WriterStats>,
}

/// Handle to the store thread.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

/// The two backends. An enum, not a trait object: the set is closed, callers
/// keep one concrete cheap-to-clone type, and each method says in one line
/// where the fleet backend differs (see docs/ARCHITECTURE.md, "Store backends").
#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqliteHandle),
    Postgres(pg::PgStore),
}

/// One station of a fleet (`fleet status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StationStatus {
    pub id: String,
    pub version: String,
    pub slots: u64,
    /// Unix milliseconds (database clock) of the last heartbeat.
    pub last_heartbeat_ms: i64,
    /// How long ago that was, on the database's clock.
    pub heartbeat_age_ms: i64,
    /// Keys being programmed now (between setPIN and the stored result).
    pub in_flight: u64,
    /// Jobs leased by the station.
    pub leased: u64,
}

/// The fleet: its stations and the shared queue's depth by state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FleetStatus {
    pub backend: &'static str,
    pub stations: Vec<StationStatus>,
    pub queue: Vec<(String, u64)>,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What an import did (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// A new job, queued.
    New,
    /// The shipment id was already known with the same content (re-import is idempotent).
    Duplicate,
    /// Refused, and recorded: a refused row for a new id, an audit event on
    /// the first job for a conflicting one.
    Refused(IntakeRefusal),
}

/// A job leased to a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedJob {
    pub job: Job,
    pub attempts: u32,
}

/// One row of `jobs list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobRow {
    pub shipment_id: String,
    pub product_id: u32,
    pub customization_id: String,
    pub state: String,
    pub reason: Option<String>,
    pub attempts: u32,
    pub lease_owner: Option<String>,
    pub updated_at: i64,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub at: i64,
    pub shipment_id: Option<String>,
    pub event: String,
    pub slot: Option<String>,
    pub serial: Option<String>,
    pub firmware: Option<String>,
    pub detail: Option<String>,
}

/// A quarantined key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuarantineRow {
    pub serial: String,
    pub shipment_id: Option<String>,
    pub step: String,
    pub reason: String,
    pub at: i64,
}

/// Where one pending result stands with the sink (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryStatus {
    /// As stored; delivery parses it again and refuses one that does not fit
    /// the grammar (`delivery.bad_id`), so treat it as untrusted text.
    pub shipment_id: String,
    /// Failed deliveries since the result was stored (the backoff streak).
    pub attempts: u32,
    /// Unix milliseconds before which it is not tried again (0: due now).
    pub next_attempt_ms: i64,
    /// Named reason of the last failure, e.g. `delivery.outbox_conflict`.
    pub reason: Option<String>,
    /// One line of detail for that failure.
    pub error: Option<String>,
    /// Unix seconds when the result was stored.
    pub created_at: i64,
}

/// A result waiting for the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    pub status: DeliveryStatus,
    /// The SPEC §6 result JSON (encrypted responses only).
    pub result_json: String,
}

/// What start-up recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Keys found mid-programming: quarantined, their jobs requeued.
    pub quarantined: Vec<String>,
    /// Jobs whose lease had no live owner: requeued.
    pub requeued: Vec<String>,
}

impl Store {
    /// The fleet backend when this store runs on PostgreSQL.
    fn pg(&self) -> Option<&pg::PgStore> {
        match &self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite(_) => None,
        }
    }

    /// Connects to the fleet database as station `station`, applies pending
    /// migrations and starts the store thread (SPEC §13).
    pub fn open_postgres(settings: PgSettings, station: &str) -> Result<Self, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(pg::PgStore::open(settings, station)?),
        })
    }

    /// `store migrate`: applies pending migrations; returns how many ran
    /// (SQLite migrates at every open, so 0 there).
    pub fn migrate(&self) -> Result<usize, StoreError> {
        match self.pg() {
            Some(p) => p.migrate(),
            None => Ok(0),
        }
    }

    /// Which backend this store runs on: `sqlite` or `postgresql`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgresql",
        }
    }

    /// Registers the station in the fleet and starts its heartbeat, which
    /// renews its leases (of length `lease`). Nothing to do on SQLite, where
    /// start-up recovery is the only lease reclaim a single station needs.
    pub fn join_fleet(&self, slots: usize, lease: Duration) -> Result<(), StoreError> {
        match self.pg() {
            Some(p) => p.join_fleet(slots, lease),
            None => Ok(()),
        }
    }

    /// The fleet's stations and queue depth (`fleet status`).
    pub fn fleet_status(&self) -> Result<FleetStatus, StoreError> {
        match self.pg() {
            Some(p) => p.fleet_status(),
            None => Err(StoreError::NotFleet),
        }
    }

    /// The store `config` names: the fleet database of `[store]` (its password
    /// read from the key custody directory, owner-only like the keys), else
    /// SQLite in the state directory.
    pub fn open_config(config: &crate::config::Config) -> Result<Self, StoreError> {
        let Some(sc) = &config.store else {
            return Self::open(&config.db_path());
        };
        let password = match &sc.password_file {
            None => None,
            Some(name) => {
                let dir = match &config.keys_dir {
                    Some(d) => d.clone(),
                    None => std::env::var_os("CREDENTIALS_DIRECTORY")
                        .map(PathBuf::from)
                        .ok_or_else(|| {
                            StoreError::Config(
                                "[store] password_file: set [station] keys_dir or $CREDENTIALS_DIRECTORY"
                                    .into(),
                            )
                        })?,
                };
                let bytes = crate::jose::keys::read_private(&dir.join(name))
                    .map_err(|e| StoreError::Config(format!("[store] password_file: {e}")))?;
                // Borrowed from the zeroizing buffer: no unzeroized copy but the secret's own.
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| StoreError::Config("[store] password_file is not UTF-8".into()))?;
                Some(crate::secret::SecretString::new(
                    text.trim_end_matches(['\r', '\n']).to_owned(),
                ))
            }
        };
        Self::open_postgres(
            PgSettings {
                url: sc.url.clone(),
                password,
            },
            &config.station_id,
        )
    }

    /// Opens (creating if needed) the database at `path` and starts its thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        restrict_db_files(path).map_err(|source| StoreError::Permissions {
            path: path.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(path).map_err(open_err)?;
        Self::start(conn).map_err(|e| match e {
            StoreError::Sql(source) => open_err(source),
            other => other,
        })
    }

    /// A private in-memory store (tests, benchmarks).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::start(Connection::open_in_memory()?)
    }

    fn start(mut conn: Connection) -> Result<Self, StoreError> {
        // WAL: readers never block the writer; synchronous=FULL: a committed
        // result survives power loss, which is what "durably stored" means in
        // recipe step 11. secure_delete: purged rows are overwritten, not left
        // in free pages.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel::<Call>();
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("store".into())
            // Ends when every Store handle is dropped.
            .spawn(move || writer::serve(conn, rx, thread_stats))
            .map_err(|_| StoreError::Stopped)?;
        Ok(Store {
            backend: Backend::Sqlite(SqliteHandle { calls: tx, stats }),
        })
    }

    /// The SQLite store thread's counters (`None` on the fleet backend).
    pub fn writer_stats(&self) -> Option<&WriterStats> {
        match &self.backend {
            Backend::Sqlite(h) => Some(&h.stats),
            Backend::Postgres(_) => None,
        }
    }

    fn sqlite(&self) -> Result<&SqliteHandle, StoreError> {
        match &self.backend {
            Backend::Sqlite(h) => Ok(h),
            Backend::Postgres(_) => Err(StoreError::NotSqlite),
        }
    }

    /// Runs `f` on the SQLite store thread and returns its answer: the
    /// SQLite-only escape hatch for tests and benchmarks that plant rows no
    /// operation writes (legacy ids, bulk fills). [`StoreError::NotSqlite`]
    /// on the fleet backend.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.sqlite()?
            .calls
            .send(Call::Alone(Box::new(move |conn| {
                let _ = reply_tx.send(f(conn));
            })))
            .map_err(|_| StoreError::Stopped)?;
        reply_rx.recv().map_err(|_| StoreError::Stopped)?
    }

    /// Like [`Store::call`], as one transaction (`BEGIN IMMEDIATE`): all or
    /// nothing, answered once durably committed. Writes waiting together
    /// share one commit ([`writer`], group commit); `f` must not begin,
    /// commit or roll back a transaction itself.
    fn call_tx<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, reply_rx) = mpsc::sync_channel(1);
        self.sqlite()?
            .calls
            .send(Call::Grouped(Box::new(TxCall { body: f, reply })))
            .map_err(|_| StoreError::Stopped)?;
        reply_rx.recv().map_err(|_| StoreError::Stopped)?
    }

    /// Adds a job as queued (SPEC §3), in one transaction that also decides:
    /// - a known shipment id with the same [`JobContent`] is a duplicate
    ///   (idempotent re-import; nothing changes);
    /// - a known shipment id with different content is refused
    ///   (`intake.conflict`): an audit event on the first job, which stays as it was;
    /// - a request whose digest was seen before, in any job (also a purged one),
    ///   or twice in this one, is refused (`request.replayed`) and the job
    ///   recorded as refused.
    ///
    /// The digests of an accepted job are kept in `seen_requests` for good.
    pub fn import(&self, job: &Job) -> Result<Imported, StoreError> {
        if let Some(p) = self.pg() {
            return p.import(job);
        }
        let job = job.clone();
        let content = JobContent::from(&job);
        self.call_tx(move |conn| {
            if let Some(known) = known_content(conn, &job.shipment_id, &content)? {
                return Ok(known);
            }
            if let Some(refusal) = replayed(conn, &content.request_digests)? {
                insert_refused(conn, &job.shipment_id, &content, &refusal)?;
                return Ok(Imported::Refused(refusal));
            }
            let now = now_secs();
            conn.execute(
                "INSERT INTO jobs (shipment_id, product_id, inventory_product_id,
                   customization_id, pin_request, cred_requests, request_digests, state,
                   imported_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8)",
                params![
                    job.shipment_id.as_str(),
                    job.product_id,
                    job.inventory_product_id,
                    job.customization_id,
                    job.pin_request,
                    serde_json::to_string(&job.credential_requests).unwrap_or_default(),
                    serde_json::to_string(&content.request_digests).unwrap_or_default(),
                    now
                ],
            )?;
            for digest in &content.request_digests {
                conn.execute(
                    "INSERT INTO seen_requests (digest, shipment_id, seen_at) VALUES (?1, ?2, ?3)",
                    params![digest, job.shipment_id.as_str(), now],
                )?;
            }
            audit(
                conn,
                Some(&job.shipment_id),
                "imported",
                None,
                None,
                None,
                None,
            )?;
            Ok(Imported::New)
        })
    }

    /// Records a shipment refused at intake (so operators see it in `jobs
    /// list`). A known shipment id is left as it is: the same content is a
    /// duplicate, different content a conflict (as in [`Store::import`]). The
    /// digests are kept on the row (to recognise a re-import) but not counted
    /// as seen: nothing of a refused shipment was ever used.
    pub fn import_refused(
        &self,
        shipment_id: &ShipmentId,
        content: &JobContent,
        refusal: &IntakeRefusal,
    ) -> Result<Imported, StoreError> {
        if let Some(p) = self.pg() {
            return p.import_refused(shipment_id, content, refusal);
        }
        let (id, content, refusal) = (shipment_id.clone(), content.clone(), refusal.clone());
        self.call_tx(move |conn| {
            if let Some(known) = known_content(conn, &id, &content)? {
                return Ok(known);
            }
            insert_refused(conn, &id, &content, &refusal)?;
            Ok(Imported::Refused(refusal))
        })
    }

    /// Records, in the audit trail only, a shipment refused because its id
    /// breaks the grammar (`intake.shipment_id`): such an id never becomes a
    /// row key, a file name or a header. The refusal text holds it escaped.
    pub fn record_bad_shipment_id(&self, refusal: &IntakeRefusal) -> Result<(), StoreError> {
        if let Some(p) = self.pg() {
            return p.record_bad_shipment_id(refusal);
        }
        let detail = refusal.to_string();
        self.call_tx(move |conn| audit(conn, None, "refused", None, None, None, Some(&detail)))
    }

    /// Leases the oldest queued job for one of `products` to `owner`.
    pub fn lease(
        &self,
        owner: &str,
        products: &[u32],
        lease: Duration,
    ) -> Result<Option<LeasedJob>, StoreError> {
        if let Some(p) = self.pg() {
            return p.lease(owner, products, lease);
        }
        let owner = owner.to_owned();
        let products = serde_json::to_string(products).unwrap_or_default();
        self.call_tx(move |conn| {
            let now = now_secs();
            // A row whose id fails the SPEC §3 grammar (imported before intake
            // checked it) is refused here and the next one taken, in the same
            // transaction: one legacy row must not stop every slot.
            let leased = loop {
                let row = conn
                    .query_row(
                        "SELECT shipment_id, product_id, inventory_product_id, customization_id,
                                pin_request, cred_requests, attempts
                         FROM jobs
                         WHERE state = 'queued'
                           AND product_id IN (SELECT value FROM json_each(?1))
                         ORDER BY imported_at, rowid LIMIT 1",
                        params![products],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, u32>(1)?,
                                r.get::<_, u32>(2)?,
                                r.get::<_, String>(3)?,
                                r.get::<_, String>(4)?,
                                r.get::<_, String>(5)?,
                                r.get::<_, u32>(6)?,
                            ))
                        },
                    )
                    .optional()?;
                let Some((
                    id,
                    product_id,
                    inventory_product_id,
                    customization_id,
                    pin,
                    creds,
                    attempts,
                )) = row
                else {
                    break None;
                };
                let shipment_id = match ShipmentId::parse(&id) {
                    Ok(shipment_id) => shipment_id,
                    Err(refusal) => {
                        let reason = refusal.to_string();
                        conn.execute(
                            "UPDATE jobs SET state = 'refused', reason = ?2, updated_at = ?3
                             WHERE shipment_id = ?1",
                            params![id, reason, now],
                        )?;
                        audit(conn, Some(&id), "refused", None, None, None, Some(&reason))?;
                        continue;
                    }
                };
                conn.execute(
                    "UPDATE jobs SET state = 'leased', lease_owner = ?2, lease_expires = ?3,
                       updated_at = ?4 WHERE shipment_id = ?1",
                    params![id, owner, now + lease.as_secs() as i64, now],
                )?;
                audit(conn, Some(&id), "leased", Some(&owner), None, None, None)?;
                break Some(LeasedJob {
                    job: Job {
                        shipment_id,
                        product_id,
                        inventory_product_id,
                        customization_id,
                        pin_request: pin,
                        credential_requests: serde_json::from_str(&creds).unwrap_or_default(),
                    },
                    attempts,
                });
            };
            Ok(leased)
        })
    }

    /// Returns a leased job to the queue (no key was spoiled: `count_attempt` false),
    /// or after a failed key (`count_attempt` true; at `max_attempts` the job fails).
    pub fn release(
        &self,
        shipment_id: &str,
        reason: &str,
        count_attempt: bool,
        max_attempts: u32,
    ) -> Result<(), StoreError> {
        if let Some(p) = self.pg() {
            return p.release(shipment_id, reason, count_attempt, max_attempts);
        }
        let (id, reason) = (shipment_id.to_owned(), reason.to_owned());
        self.call_tx(move |conn| {
            let attempts: u32 = conn
                .query_row(
                    "SELECT attempts FROM jobs WHERE shipment_id = ?1 AND state = 'leased'",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| StoreError::UnknownJob(id.clone()))?;
            let attempts = attempts + u32::from(count_attempt);
            let state = if attempts >= max_attempts {
                "failed"
            } else {
                "queued"
            };
            conn.execute(
                "UPDATE jobs SET state = ?2, reason = ?3, attempts = ?4, lease_owner = NULL,
                   lease_expires = NULL, updated_at = ?5 WHERE shipment_id = ?1",
                params![id, state, reason, attempts, now_secs()],
            )?;
            let event = if state == "failed" {
                "failed"
            } else {
                "requeued"
            };
            audit(conn, Some(&id), event, None, None, None, Some(&reason))?;
            Ok(())
        })
    }

    /// Refuses a leased job for good (malformed, expired, mis-bound, …): nothing was programmed.
    pub fn refuse(&self, shipment_id: &str, reason: &str) -> Result<(), StoreError> {
        if let Some(p) = self.pg() {
            return p.refuse(shipment_id, reason);
        }
        let (id, reason) = (shipment_id.to_owned(), reason.to_owned());
        self.call_tx(move |conn| {
            let n = conn.execute(
                "UPDATE jobs SET state = 'refused', reason = ?2, lease_owner = NULL,
                   lease_expires = NULL, updated_at = ?3
                 WHERE shipment_id = ?1 AND state IN ('queued', 'leased')",
                params![id, reason, now_secs()],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownJob(id));
            }
            audit(conn, Some(&id), "refused", None, None, None, Some(&reason))
        })
    }

    /// Marks the start of irreversible programming of `serial` for a job (before setPIN).
    pub fn begin_programming(
        &self,
        slot: &str,
        shipment_id: &str,
        serial: &str,
    ) -> Result<(), StoreError> {
        if let Some(p) = self.pg() {
            return p.begin_programming(slot, shipment_id, serial);
        }
        let (slot, id, serial) = (slot.to_owned(), shipment_id.to_owned(), serial.to_owned());
        self.call_tx(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO in_flight (slot, shipment_id, serial, step, started_at)
                 VALUES (?1, ?2, ?3, 'setPIN', ?4)",
                params![slot, id, serial, now_secs()],
            )?;
            audit(
                conn,
                Some(&id),
                "programming",
                Some(&slot),
                Some(&serial),
                None,
                None,
            )
        })
    }

    /// Records the recipe step a slot is in (for quarantine records after a crash).
    pub fn step(&self, slot: &str, step: &str) -> Result<(), StoreError> {
        if let Some(p) = self.pg() {
            return p.step(slot, step);
        }
        let (slot, step) = (slot.to_owned(), step.to_owned());
        self.call(move |conn| {
            // Diagnostic only (recovery quarantines an in-flight key at any
            // step), so not worth a sync of its own: with WAL and
            // synchronous=NORMAL the row reaches disk with the next FULL commit.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            let updated = conn.execute(
                "UPDATE in_flight SET step = ?2 WHERE slot = ?1",
                params![slot, step],
            );
            conn.pragma_update(None, "synchronous", "FULL")?;
            updated?;
            Ok(())
        })
    }

    /// Records an event about a key that belongs to no job (a power cycle or
    /// reset by the station); `detail` is one line, no secrets.
    pub fn record_key_event(
        &self,
        event: &str,
        slot: &str,
        serial: Option<&str>,
        firmware: Option<&str>,
        detail: &str,
    ) -> Result<(), StoreError> {
        if let Some(p) = self.pg() {
            return p.record_key_event(event, slot, serial, firmware, detail);
        }
        let (event, slot, detail) = (event.to_owned(), slot.to_owned(), detail.to_owned());
        let (serial, firmware) = (serial.map(str::to_owned), firmware.map(str::to_owned));
        self.call_tx(move |conn| {
            audit(
                conn,
                None,
                &event,
                Some(&slot),
                serial.as_deref(),
                firmware.as_deref(),
                Some(&detail),
            )
        })
    }

    /// Every audit row of `event`, oldest first.
    pub fn events(&self, event: &str) -> Result<Vec<AuditRow>, StoreError> {
        if let Some(p) = self.pg() {
            return p.events(event);
        }
        let event = event.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT at, shipment_id, event, slot, serial, firmware, detail FROM audit
                 WHERE event = ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map(params![event], audit_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Whether this station ever stored a result for the key `serial`.
    pub fn ever_programmed(&self, serial: &str) -> Result<bool, StoreError> {
        if let Some(p) = self.pg() {
            return p.ever_programmed(serial);
        }
        let serial = serial.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT 1 FROM audit WHERE event = 'programmed' AND serial = ?1 LIMIT 1",
            )?;
            Ok(stmt.exists(params![serial])?)
        })
    }

    /// Durably stores a programmed key's encrypted responses (recipe step 11), in
    /// one transaction with the end of its in-flight record.
    pub fn store_result(
        &self,
        slot: &str,
        shipment_id: &str,
        serial: &str,
        firmware: &str,
        result_json: String,
    ) -> Result<(), StoreError> {
        if let Some(p) = self.pg() {
            return p.store_result(slot, shipment_id, serial, firmware, result_json);
        }
        let (slot, id, serial, firmware) = (
            slot.to_owned(),
            shipment_id.to_owned(),
            serial.to_owned(),
            firmware.to_owned(),
        );
        self.call_tx(move |conn| {
            let now = now_secs();
            let n = conn.execute(
                "UPDATE jobs SET state = 'programmed', reason = NULL, lease_owner = NULL,
                   lease_expires = NULL, updated_at = ?2 WHERE shipment_id = ?1 AND state = 'leased'",
                params![id, now],
            )?;
            if n == 0 {
                return Err(StoreError::WrongState {
                    shipment_id: id,
                    state: "not leased".into(),
                    expected: "leased",
                });
            }
            conn.execute(
                "INSERT INTO outbox (shipment_id, result_json, created_at) VALUES (?1, ?2, ?3)",
                params![id, result_json, now],
            )?;
            conn.execute("DELETE FROM in_flight WHERE slot = ?1", params![slot])?;
            audit(conn, Some(&id), "programmed", Some(&slot), Some(&serial), Some(&firmware), None)?;
            Ok(())
        })
    }

    /// Quarantines a key by serial and ends the slot's in-flight record.
    pub fn quarantine(
        &self,
        slot: &str,
        serial: &str,
        shipment_id: Option<&str>,
        step: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        if let Some(p) = self.pg() {
            return p.quarantine(slot, serial, shipment_id, step, reason);
        }
        let (slot, serial, id, step, reason) = (
            slot.to_owned(),
            serial.to_owned(),
            shipment_id.map(str::to_owned),
            step.to_owned(),
            reason.to_owned(),
        );
        self.call_tx(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO quarantine (serial, shipment_id, step, reason, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![serial, id, step, reason, now_secs()],
            )?;
            conn.execute("DELETE FROM in_flight WHERE slot = ?1", params![slot])?;
            audit(
                conn,
                id.as_deref(),
                "quarantined",
                Some(&slot),
                Some(&serial),
                None,
                Some(&format!("{step}: {reason}")),
            )?;
            Ok(())
        })
    }

    pub fn is_quarantined(&self, serial: &str) -> Result<bool, StoreError> {
        if let Some(p) = self.pg() {
            return p.is_quarantined(serial);
        }
        let serial = serial.to_owned();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM quarantine WHERE serial = ?1",
                    params![serial],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
    }

    pub fn quarantined(&self) -> Result<Vec<QuarantineRow>, StoreError> {
        if let Some(p) = self.pg() {
            return p.quarantined();
        }
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT serial, shipment_id, step, reason, at FROM quarantine ORDER BY at, serial",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(QuarantineRow {
                        serial: r.get(0)?,
                        shipment_id: r.get(1)?,
                        step: r.get(2)?,
                        reason: r.get(3)?,
                        at: r.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Every result waiting for the sink: results never tried (or never failed)
    /// first, then by age, so a failing result never goes before a fresh one.
    pub fn pending_deliveries(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        if let Some(p) = self.pg() {
            return p.pending_deliveries();
        }
        self.call(|conn| select_pending(conn, i64::MAX))
    }

    /// The results whose next attempt is due at `now_ms` (unix milliseconds),
    /// in the order of [`Store::pending_deliveries`].
    pub fn due_deliveries(&self, now_ms: i64) -> Result<Vec<PendingDelivery>, StoreError> {
        if let Some(p) = self.pg() {
            return p.due_deliveries(now_ms);
        }
        self.call(move |conn| select_pending(conn, now_ms))
    }

    /// The delivery state of every pending result, without the result itself
    /// (`jobs list`, the status board, `/metrics`).
    pub fn delivery_status(&self) -> Result<Vec<DeliveryStatus>, StoreError> {
        Ok(self
            .pending_deliveries()?
            .into_iter()
            .map(|p| p.status)
            .collect())
    }

    /// Records a failed delivery of one result: its attempt count goes up,
    /// it is not tried again before `next_attempt_ms`, and its named `reason`
    /// (plus one line of `detail`) shows in `jobs list`. The audit trail gets
    /// the first failure and every change of reason, not every retry.
    /// Returns the new attempt count.
    pub fn delivery_failed(
        &self,
        shipment_id: &str,
        reason: &str,
        detail: &str,
        next_attempt_ms: i64,
    ) -> Result<u32, StoreError> {
        if let Some(p) = self.pg() {
            return p.delivery_failed(shipment_id, reason, detail, next_attempt_ms);
        }
        let (id, reason, detail) = (shipment_id.to_owned(), reason.to_owned(), detail.to_owned());
        self.call_tx(move |conn| {
            let before: Option<String> = conn
                .query_row(
                    "SELECT reason FROM outbox WHERE shipment_id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| StoreError::UnknownJob(id.clone()))?;
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, reason = ?3,
                   error = ?4 WHERE shipment_id = ?1",
                params![id, next_attempt_ms, reason, detail],
            )?;
            let line = format!("{reason}: {detail}");
            conn.execute(
                "UPDATE jobs SET reason = ?2, updated_at = ?3 WHERE shipment_id = ?1",
                params![id, line, now_secs()],
            )?;
            if before.as_deref() != Some(reason.as_str()) {
                audit(
                    conn,
                    Some(&id),
                    "delivery_failed",
                    None,
                    None,
                    None,
                    Some(&line),
                )?;
            }
            Ok(conn.query_row(
                "SELECT attempts FROM outbox WHERE shipment_id = ?1",
                params![id],
                |r| r.get(0),
            )?)
        })
    }

    /// Makes every pending result due now (start-up: an operator who restarts
    /// the station after fixing a sink expects it to try at once). Attempt
    /// counts and reasons stay until the next success or failure.
    pub fn retry_deliveries_now(&self) -> Result<usize, StoreError> {
        if let Some(p) = self.pg() {
            return p.retry_deliveries_now();
        }
        self.call_tx(|conn| Ok(conn.execute("UPDATE outbox SET next_attempt_ms = 0", [])?))
    }

    /// After the sink acknowledged: the responses and requests are purged, the audit stays.
    pub fn delivered(&self, shipment_id: &str, sink: &str) -> Result<(), StoreError> {
        if let Some(p) = self.pg() {
            return p.delivered(shipment_id, sink);
        }
        let (id, sink) = (shipment_id.to_owned(), sink.to_owned());
        self.call_tx(move |conn| {
            conn.execute("DELETE FROM outbox WHERE shipment_id = ?1", params![id])?;
            // A delivery failure's reason ends with the delivery.
            let n = conn.execute(
                "UPDATE jobs SET state = 'purged', pin_request = '', cred_requests = '[]',
                   reason = NULL, updated_at = ?2 WHERE shipment_id = ?1 AND state = 'programmed'",
                params![id, now_secs()],
            )?;
            if n == 0 {
                return Err(StoreError::WrongState {
                    shipment_id: id,
                    state: "not programmed".into(),
                    expected: "programmed",
                });
            }
            audit(conn, Some(&id), "delivered", None, None, None, Some(&sink))?;
            audit(conn, Some(&id), "purged", None, None, None, None)?;
            Ok(())
        })
    }

    /// Start-up recovery (no worker is running yet): keys that stopped
    /// mid-programming are quarantined and every leased job goes back to the queue.
    pub fn recover(&self) -> Result<Recovery, StoreError> {
        if let Some(p) = self.pg() {
            return p.recover();
        }
        self.call_tx(|conn| {
            let mut report = Recovery::default();
            let in_flight: Vec<(String, String, String, String)> = {
                let mut stmt = conn.prepare("SELECT slot, shipment_id, serial, step FROM in_flight")?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<Result<_, _>>()?;
                rows
            };
            let now = now_secs();
            for (slot, id, serial, step) in in_flight {
                conn.execute(
                    "INSERT OR REPLACE INTO quarantine (serial, shipment_id, step, reason, at)
                     VALUES (?1, ?2, ?3, 'station stopped while programming', ?4)",
                    params![serial, id, step, now],
                )?;
                conn.execute(
                    "UPDATE jobs SET attempts = attempts + 1 WHERE shipment_id = ?1 AND state = 'leased'",
                    params![id],
                )?;
                audit(conn, Some(&id), "quarantined", Some(&slot), Some(&serial), None, Some("recovery: stopped mid-programming"))?;
                report.quarantined.push(serial);
            }
            conn.execute("DELETE FROM in_flight", [])?;
            let leased: Vec<String> = {
                let mut stmt = conn.prepare("SELECT shipment_id FROM jobs WHERE state = 'leased'")?;
                let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                rows
            };
            for id in leased {
                conn.execute(
                    "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires = NULL,
                       reason = 'recovered after restart', updated_at = ?2 WHERE shipment_id = ?1",
                    params![id, now],
                )?;
                audit(conn, Some(&id), "requeued", None, None, None, Some("recovery"))?;
                report.requeued.push(id);
            }
            Ok(report)
        })
    }

    /// Job counts by state.
    pub fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        if let Some(p) = self.pg() {
            return p.counts();
        }
        self.call(|conn| {
            let mut stmt =
                conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// The product ids of jobs queued or leased, ascending: what a key must
    /// be for a job to wait for it (a key fitting none is turned away).
    pub fn waiting_products(&self) -> Result<Vec<u32>, StoreError> {
        if let Some(p) = self.pg() {
            return p.waiting_products();
        }
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT DISTINCT product_id FROM jobs WHERE state IN ('queued', 'leased')
                 ORDER BY product_id",
            )?;
            let rows = stmt
                .query_map([], |r| r.get::<_, u32>(0))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Number of jobs in `state`.
    pub fn count(&self, state: &str) -> Result<u64, StoreError> {
        if let Some(p) = self.pg() {
            return p.count(state);
        }
        let state = state.to_owned();
        self.call(move |conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM jobs WHERE state = ?1",
                params![state],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    /// Jobs not finished yet (queued, leased, or programmed and awaiting the
    /// sink), counted in one query so a job moving between those states is
    /// never missed.
    pub fn unfinished(&self) -> Result<u64, StoreError> {
        if let Some(p) = self.pg() {
            return p.unfinished();
        }
        self.call(|conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'leased', 'programmed')",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    /// Jobs, newest first.
    pub fn list(&self, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        if let Some(p) = self.pg() {
            return p.list(limit);
        }
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT shipment_id, product_id, customization_id, state, reason, attempts,
                        lease_owner, updated_at
                 FROM jobs ORDER BY imported_at DESC, rowid DESC LIMIT ?1",
            )?;
            let rows = stmt
                .query_map(params![limit as i64], job_row)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// One job and its audit trail.
    pub fn show(&self, shipment_id: &str) -> Result<(JobRow, Vec<AuditRow>), StoreError> {
        if let Some(p) = self.pg() {
            return p.show(shipment_id);
        }
        let id = shipment_id.to_owned();
        self.call(move |conn| {
            let row = conn
                .query_row(
                    "SELECT shipment_id, product_id, customization_id, state, reason, attempts,
                            lease_owner, updated_at FROM jobs WHERE shipment_id = ?1",
                    params![id],
                    job_row,
                )
                .optional()?
                .ok_or_else(|| StoreError::UnknownJob(id.clone()))?;
            let mut stmt = conn.prepare(
                "SELECT at, shipment_id, event, slot, serial, firmware, detail
                 FROM audit WHERE shipment_id = ?1 ORDER BY id",
            )?;
            let audit = stmt
                .query_map(params![id], audit_row)?
                .collect::<Result<_, _>>()?;
            Ok((row, audit))
        })
    }
}

/// For a known shipment id: `Duplicate` when `content` is what it holds,
/// else a conflict, audited on the first job (which is left as it was).
/// `None` for a new id.
fn known_content(
    conn: &Connection,
    id: &ShipmentId,
    content: &JobContent,
) -> Result<Option<Imported>, StoreError> {
    let known = conn
        .query_row(
            "SELECT product_id, inventory_product_id, customization_id, request_digests
             FROM jobs WHERE shipment_id = ?1",
            params![id.as_str()],
            |r| {
                Ok(JobContent {
                    product_id: r.get(0)?,
                    inventory_product_id: r.get(1)?,
                    customization_id: r.get(2)?,
                    request_digests: serde_json::from_str(&r.get::<_, String>(3)?)
                        .unwrap_or_default(),
                })
            },
        )
        .optional()?;
    let Some(known) = known else {
        return Ok(None);
    };
    match reimport(known, content) {
        Ok(()) => Ok(Some(Imported::Duplicate)),
        Err(refusal) => {
            audit(
                conn,
                Some(id),
                "conflict",
                None,
                None,
                None,
                Some(&refusal.to_string()),
            )?;
            Ok(Some(Imported::Refused(refusal)))
        }
    }
}

/// The rule for a shipment id the store knows, on both backends: `Ok` when
/// `content` is what the first job holds (an idempotent re-import), else
/// the `intake.conflict` refusal naming what differs.
pub(crate) fn reimport(mut known: JobContent, content: &JobContent) -> Result<(), IntakeRefusal> {
    // Rows refused at intake before digests were kept on them have none: their
    // requests are unknown, so only the rest can be compared.
    if known.request_digests.is_empty() {
        known.request_digests = content.request_digests.clone();
    }
    match known.difference(content) {
        None => Ok(()),
        Some(what) => Err(IntakeRefusal::Conflict(what.to_owned())),
    }
}

/// The `request.replayed` refusal for the first digest in `digests` that was
/// seen before (SPEC §3), earlier in this shipment or, as `seen_in` answers
/// (the backend's `seen_requests` lookup), in an earlier job.
pub(crate) fn replayed_with(
    digests: &[String],
    mut seen_in: impl FnMut(&str) -> Result<Option<String>, StoreError>,
) -> Result<Option<IntakeRefusal>, StoreError> {
    let name = |i: usize| {
        if i == 0 {
            "the PIN request".to_owned()
        } else {
            format!("credential request {i}")
        }
    };
    for (i, digest) in digests.iter().enumerate() {
        if let Some(first) = digests[..i].iter().position(|d| d == digest) {
            return Ok(Some(IntakeRefusal::Replayed(format!(
                "{} repeats {} of the same shipment",
                name(i),
                name(first)
            ))));
        }
        if let Some(seen) = seen_in(digest)? {
            return Ok(Some(IntakeRefusal::Replayed(format!(
                "{} was already seen in shipment {}",
                name(i),
                Untrusted(&seen)
            ))));
        }
    }
    Ok(None)
}

/// [`replayed_with`] on the SQLite store.
fn replayed(conn: &Connection, digests: &[String]) -> Result<Option<IntakeRefusal>, StoreError> {
    replayed_with(digests, |digest| {
        Ok(conn
            .query_row(
                "SELECT shipment_id FROM seen_requests WHERE digest = ?1",
                params![digest],
                |r| r.get(0),
            )
            .optional()?)
    })
}

/// Inserts a job row refused at intake, with its digests (not as seen), and audits it.
fn insert_refused(
    conn: &Connection,
    id: &ShipmentId,
    content: &JobContent,
    refusal: &IntakeRefusal,
) -> Result<(), StoreError> {
    let reason = refusal.to_string();
    conn.execute(
        "INSERT INTO jobs (shipment_id, product_id, inventory_product_id,
           customization_id, pin_request, cred_requests, request_digests, state, reason,
           imported_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, '', '[]', ?5, 'refused', ?6, ?7, ?7)",
        params![
            id.as_str(),
            content.product_id,
            content.inventory_product_id,
            content.customization_id,
            serde_json::to_string(&content.request_digests).unwrap_or_default(),
            reason,
            now_secs()
        ],
    )?;
    audit(conn, Some(id), "refused", None, None, None, Some(&reason))
}

/// Pending results due by `due_ms`, in delivery order (never-failed first, then oldest).
fn select_pending(conn: &Connection, due_ms: i64) -> Result<Vec<PendingDelivery>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT shipment_id, result_json, attempts, next_attempt_ms, reason, error, created_at
         FROM outbox WHERE next_attempt_ms <= ?1
         ORDER BY attempts, created_at, rowid",
    )?;
    let rows = stmt
        .query_map(params![due_ms], |r| {
            Ok(PendingDelivery {
                result_json: r.get(1)?,
                status: DeliveryStatus {
                    shipment_id: r.get(0)?,
                    attempts: r.get(2)?,
                    next_attempt_ms: r.get(3)?,
                    reason: r.get(4)?,
                    error: r.get(5)?,
                    created_at: r.get(6)?,
                },
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        shipment_id: r.get(0)?,
        product_id: r.get(1)?,
        customization_id: r.get(2)?,
        state: r.get(3)?,
        reason: r.get(4)?,
        attempts: r.get(5)?,
        lease_owner: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

/// One `audit` row, selected as `at, shipment_id, event, slot, serial, firmware, detail`.
fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        at: r.get(0)?,
        shipment_id: r.get(1)?,
        event: r.get(2)?,
        slot: r.get(3)?,
        serial: r.get(4)?,
        firmware: r.get(5)?,
        detail: r.get(6)?,
    })
}

fn audit(
    conn: &Connection,
    shipment_id: Option<&str>,
    event: &str,
    slot: Option<&str>,
    serial: Option<&str>,
    firmware: Option<&str>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit (at, shipment_id, event, slot, serial, firmware, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            now_secs(),
            shipment_id,
            event,
            slot,
            serial,
            firmware,
            detail
        ],
    )?;
    Ok(())
}

/// The database and its `-wal` / `-shm` files hold encrypted requests and
/// responses: owner-only (0600) whatever the umask. The main file is created
/// 0600 before SQLite opens it (SQLite gives the WAL and shared-memory files the
/// main file's mode); files left by an older, looser install are tightened.
fn restrict_db_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let private = || std::fs::Permissions::from_mode(0o600);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?
        .set_permissions(private())?;
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::set_permissions(&name, private()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let done: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, product: u32) -> Job {
        Job {
            shipment_id: crate::shipment::ShipmentId::parse(id).unwrap(),
            product_id: product,
            inventory_product_id: 106,
            customization_id: "C19881".into(),
            // Distinct per id: the same request in two jobs is a replay.
            pin_request: format!("p.i.n.{id}.we"),
            credential_requests: vec![format!("c.r.e.{id}.1")],
        }
    }

    /// The stores every test runs on: SQLite in memory, and a fresh
    /// PostgreSQL database when the throw-away server runs (always in CI).
    fn backends() -> Vec<Store> {
        let mut v = vec![Store::open_in_memory().unwrap()];
        if let Some(admin) = pg::test_server_url() {
            v.push(pg_store(&pg::fresh_test_database(&admin).unwrap(), "st1"));
        }
        v
    }

    fn pg_store(url: &str, station: &str) -> Store {
        Store::open_postgres(
            PgSettings {
                url: url.to_owned(),
                password: None,
            },
            station,
        )
        .unwrap()
    }

    impl Store {
        /// One text value selected by `sql`, on either backend (test inspection).
        fn scalar_text(&self, sql: &'static str) -> String {
            match self.pg() {
                Some(p) => p.scalar_text(sql).unwrap(),
                None => self
                    .call(move |c| Ok(c.query_row(sql, [], |r| r.get(0))?))
                    .unwrap(),
            }
        }
    }

    impl Store {
        /// Runs one statement on either backend (tests plant legacy rows).
        fn execute_sql(&self, sql: &'static str) {
            match self.pg() {
                Some(p) => p.execute_sql(sql).unwrap(),
                None => self
                    .call(move |c| {
                        c.execute(sql, [])?;
                        Ok(())
                    })
                    .unwrap(),
            }
        }
    }

    fn refusal(imported: Imported) -> String {
        match imported {
            Imported::Refused(r) => r.code().to_owned(),
            other => panic!("not refused: {other:?}"),
        }
    }

    /// Every operation of `Store` reaches the fleet backend: one that ran the
    /// SQLite code on PostgreSQL would fail with `NotSqlite` at run time (as
    /// `waiting_products` did when it arrived without its dispatch).
    #[test]
    fn every_store_operation_dispatches_to_the_fleet_backend() {
        let src = include_str!("mod.rs");
        let body = &src[..src.find("#[cfg(test)]\nmod tests").unwrap()];
        let start = body.find("\nimpl Store {").unwrap();
        let end = start + body[start..].find("\n}\n").unwrap();
        let mut missing = Vec::new();
        for (i, _) in body[start..end].match_indices("\n    pub fn ") {
            let at = start + i + "\n    pub fn ".len();
            let name: String = body[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let open = at + body[at..].find("{\n").unwrap();
            let head = &body[open..(open + 400).min(end)];
            // Constructors and the SQLite escape hatch are backend-specific by
            // design; delivery_status is built on pending_deliveries.
            let exempt = [
                "open_postgres",
                "open_config",
                "open",
                "open_in_memory",
                "call",
                "delivery_status",
            ];
            if !exempt.contains(&name.as_str())
                && !head.contains("self.pg()")
                && !head.contains("self.backend")
            {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "no PostgreSQL dispatch in: {missing:?}");
    }

    #[test]
    fn import_is_idempotent_and_lease_is_fifo_by_product() {
        for s in backends() {
            assert_eq!(s.import(&job("A", 1)).unwrap(), Imported::New);
            assert_eq!(s.import(&job("A", 1)).unwrap(), Imported::Duplicate);
            s.import(&job("B", 29)).unwrap();
            s.import(&job("C", 1)).unwrap();
            assert_eq!(s.waiting_products().unwrap(), [1, 29]);
            let lease = Duration::from_secs(60);
            assert_eq!(
                s.lease("slot1", &[29], lease)
                    .unwrap()
                    .unwrap()
                    .job
                    .shipment_id,
                "B"
            );
            assert_eq!(
                s.lease("slot2", &[1, 29], lease)
                    .unwrap()
                    .unwrap()
                    .job
                    .shipment_id,
                "A"
            );
            assert_eq!(
                s.lease("slot3", &[1], lease).unwrap().unwrap().job,
                job("C", 1)
            );
            assert!(s.lease("slot4", &[1, 29], lease).unwrap().is_none());
            assert_eq!(s.count("leased").unwrap(), 3);
        }
    }

    #[test]
    fn a_full_life_leaves_only_an_audit_trail() {
        for s in backends() {
            s.import(&job("A", 1)).unwrap();
            s.lease("slot1", &[1], Duration::from_secs(60))
                .unwrap()
                .unwrap();
            s.begin_programming("slot1", "A", "12345678").unwrap();
            s.store_result("slot1", "A", "12345678", "5.7.1", "{\"r\":1}".into())
                .unwrap();
            assert_eq!(s.pending_deliveries().unwrap().len(), 1);
            s.delivered("A", "outbox").unwrap();
            assert!(s.pending_deliveries().unwrap().is_empty());
            let (row, audit) = s.show("A").unwrap();
            assert_eq!(row.state, "purged");
            let events: Vec<_> = audit.iter().map(|a| a.event.as_str()).collect();
            assert_eq!(
                events,
                [
                    "imported",
                    "leased",
                    "programming",
                    "programmed",
                    "delivered",
                    "purged"
                ]
            );
            let pin = s.scalar_text("SELECT pin_request FROM jobs");
            assert!(pin.is_empty());
        }
    }

    #[test]
    fn recovery_quarantines_half_programmed_keys_and_requeues() {
        for s in backends() {
            for id in ["A", "B"] {
                s.import(&job(id, 1)).unwrap();
                s.lease(id, &[1], Duration::from_secs(60)).unwrap();
            }
            s.begin_programming("slot1", "A", "111").unwrap();
            let r = s.recover().unwrap();
            assert_eq!(r.quarantined, vec!["111".to_string()]);
            assert_eq!(r.requeued.len(), 2);
            assert!(s.is_quarantined("111").unwrap());
            assert_eq!(s.count("queued").unwrap(), 2);
        }
    }

    /// A programmed result for `id` (imported, leased, stored).
    fn programmed(s: &Store, id: &str) {
        s.import(&job(id, 1)).unwrap();
        s.lease("slot1", &[1], Duration::from_secs(60))
            .unwrap()
            .unwrap();
        s.begin_programming("slot1", id, "1").unwrap();
        s.store_result("slot1", id, "1", "5.7.1", format!("{{\"r\":\"{id}\"}}"))
            .unwrap();
    }

    #[test]
    fn a_failed_delivery_waits_its_turn_behind_fresh_results() {
        for s in backends() {
            for id in ["A", "B", "C"] {
                programmed(&s, id);
            }
            assert_eq!(
                s.delivery_failed("A", "delivery.sink_refused", "422", 5_000)
                    .unwrap(),
                1
            );
            let ids = |v: Vec<PendingDelivery>| -> Vec<String> {
                v.into_iter().map(|p| p.status.shipment_id).collect()
            };
            // Not due before its time; after it, behind the results that never failed.
            assert_eq!(ids(s.due_deliveries(4_999).unwrap()), ["B", "C"]);
            assert_eq!(ids(s.due_deliveries(5_000).unwrap()), ["B", "C", "A"]);
            assert_eq!(
                s.delivery_failed("A", "delivery.sink_refused", "422", 9_000)
                    .unwrap(),
                2
            );
            let a = &s.delivery_status().unwrap()[2];
            assert_eq!(
                (
                    a.attempts,
                    a.next_attempt_ms,
                    a.reason.as_deref(),
                    a.error.as_deref()
                ),
                (2, 9_000, Some("delivery.sink_refused"), Some("422"))
            );
            assert_eq!(
                s.show("A").unwrap().0.reason.as_deref(),
                Some("delivery.sink_refused: 422")
            );
            // A restart makes it due at once; delivery clears the reason.
            s.retry_deliveries_now().unwrap();
            assert_eq!(s.due_deliveries(0).unwrap().len(), 3);
            s.delivered("A", "outbox").unwrap();
            assert_eq!(s.show("A").unwrap().0.reason, None);
            assert!(matches!(
                s.delivery_failed("A", "delivery.outbox_io", "x", 0),
                Err(StoreError::UnknownJob(_))
            ));
        }
    }

    #[test]
    fn database_files_are_owner_only_even_when_they_were_not() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("station.db");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        {
            let s = Store::open(&db).unwrap();
            s.import(&job("A", 1)).unwrap();
            assert_eq!(mode(&db), 0o600);
            for suffix in ["-wal", "-shm"] {
                let f = dir.path().join(format!("station.db{suffix}"));
                assert_eq!(mode(&f), 0o600, "{suffix}");
                // As an older install under umask 022 left them.
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
            std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
            let _again = Store::open(&db).unwrap();
            assert_eq!(mode(&db), 0o600);
            for suffix in ["-wal", "-shm"] {
                let f = dir.path().join(format!("station.db{suffix}"));
                assert_eq!(mode(&f), 0o600, "{suffix}");
            }
        }
    }

    #[test]
    fn attempts_end_in_failed() {
        for s in backends() {
            s.import(&job("A", 1)).unwrap();
            for _ in 0..2 {
                s.lease("x", &[1], Duration::from_secs(60))
                    .unwrap()
                    .unwrap();
                s.release("A", "key failed", true, 2).unwrap();
            }
            assert_eq!(s.show("A").unwrap().0.state, "failed");
        }
    }

    #[test]
    fn a_conflicting_reimport_is_refused_and_the_first_job_stays() {
        for s in backends() {
            s.import(&job("A", 1)).unwrap();
            let mut other = job("A", 1);
            other.credential_requests = vec!["c.r.e.X.1".into()];
            assert_eq!(refusal(s.import(&other).unwrap()), "intake.conflict");
            let mut other = job("A", 29);
            other.pin_request = job("A", 1).pin_request;
            assert_eq!(refusal(s.import(&other).unwrap()), "intake.conflict");
            // The first job is untouched and still leases as it was imported.
            let (row, audit) = s.show("A").unwrap();
            assert_eq!((row.state.as_str(), row.reason), ("queued", None));
            let conflicts: Vec<_> = audit.iter().filter(|a| a.event == "conflict").collect();
            assert_eq!(conflicts.len(), 2);
            assert!(conflicts[0].detail.as_deref().unwrap().contains("requests"));
            let leased = s
                .lease("x", &[1], Duration::from_secs(60))
                .unwrap()
                .unwrap();
            assert_eq!(leased.job, job("A", 1));
            // The same content again is still an idempotent duplicate.
            assert_eq!(s.import(&job("A", 1)).unwrap(), Imported::Duplicate);
        }
    }

    #[test]
    fn a_replayed_request_is_refused_even_after_the_purge() {
        for s in backends() {
            s.import(&job("A", 1)).unwrap();
            s.lease("slot1", &[1], Duration::from_secs(60)).unwrap();
            s.begin_programming("slot1", "A", "1").unwrap();
            s.store_result("slot1", "A", "1", "5.7.1", "{}".into())
                .unwrap();
            s.delivered("A", "outbox").unwrap();
            // The requests are gone, their digests are not.
            let mut replay = job("B", 1);
            replay.credential_requests = job("A", 1).credential_requests;
            assert_eq!(refusal(s.import(&replay).unwrap()), "request.replayed");
            let (row, _) = s.show("B").unwrap();
            assert_eq!(row.state, "refused");
            assert!(row
                .reason
                .unwrap()
                .contains("credential request 1 was already seen in shipment A"));
            let mut replay = job("C", 1);
            replay.pin_request = job("A", 1).pin_request;
            assert_eq!(refusal(s.import(&replay).unwrap()), "request.replayed");
            // A re-import of the purged job itself is a duplicate, not a replay.
            assert_eq!(s.import(&job("A", 1)).unwrap(), Imported::Duplicate);
            assert!(s
                .lease("slot1", &[1], Duration::from_secs(60))
                .unwrap()
                .is_none());
            let seen = s.scalar_text("SELECT CAST(COUNT(*) AS TEXT) FROM seen_requests");
            assert_eq!(seen, "2", "only the accepted job's digests are kept");
        }
    }

    #[test]
    fn a_request_repeated_inside_one_job_is_a_replay() {
        for s in backends() {
            let mut j = job("A", 1);
            j.credential_requests.push(j.credential_requests[0].clone());
            assert_eq!(refusal(s.import(&j).unwrap()), "request.replayed");
            let mut j = job("B", 1);
            j.credential_requests = vec![j.pin_request.clone()];
            assert_eq!(refusal(s.import(&j).unwrap()), "request.replayed");
        }
    }

    #[test]
    fn a_refused_shipment_reimported_is_a_duplicate_and_a_changed_one_a_conflict() {
        for s in backends() {
            let id = ShipmentId::parse("R").unwrap();
            let content = JobContent::from(&job("R", 1));
            let why = IntakeRefusal::Quantity(2);
            assert_eq!(
                s.import_refused(&id, &content, &why).unwrap(),
                Imported::Refused(why.clone())
            );
            assert_eq!(
                s.import_refused(&id, &content, &why).unwrap(),
                Imported::Duplicate
            );
            assert_eq!(refusal(s.import(&job("R", 29)).unwrap()), "intake.conflict");
            // Its requests were never used: they are not replays elsewhere.
            let mut j = job("S", 1);
            j.pin_request = job("R", 1).pin_request;
            assert_eq!(s.import(&j).unwrap(), Imported::New);
        }
    }

    #[test]
    fn a_legacy_row_with_a_bad_id_is_refused_at_lease_and_the_next_job_leased() {
        for s in backends() {
            s.execute_sql(
                "INSERT INTO jobs (shipment_id, product_id, inventory_product_id, customization_id,
                   pin_request, cred_requests, request_digests, state, imported_at, updated_at)
                 VALUES ('BAD.1\r\n', 1, 1, 'C19881', 'x', '[]', '[]', 'queued', 0, 0)",
            );
            s.import(&job("A", 1)).unwrap();
            let leased = s
                .lease("slot1", &[1], Duration::from_secs(60))
                .unwrap()
                .unwrap();
            assert_eq!(leased.job.shipment_id, "A");
            let (row, _) = s.show("BAD.1\r\n").unwrap();
            assert_eq!(row.state, "refused");
            assert!(row.reason.unwrap().starts_with("intake.shipment_id"));
        }
    }

    #[test]
    fn migration_keeps_the_digests_of_jobs_imported_before_it() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let digests = job("A", 1).request_digests();
        conn.execute(
            "INSERT INTO jobs (shipment_id, product_id, inventory_product_id, customization_id,
               pin_request, cred_requests, request_digests, state, imported_at, updated_at)
             VALUES ('A', 1, 106, 'C19881', '', '[]', ?1, 'purged', 0, 0)",
            params![serde_json::to_string(&digests).unwrap()],
        )
        .unwrap();
        let s = Store::start(conn).unwrap();
        let mut replay = job("B", 1);
        replay.pin_request = job("A", 1).pin_request;
        assert_eq!(refusal(s.import(&replay).unwrap()), "request.replayed");
        assert_eq!(s.import(&job("A", 1)).unwrap(), Imported::Duplicate);
    }
}
