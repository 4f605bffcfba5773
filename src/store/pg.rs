//! The fleet backend of the store: one PostgreSQL database shared by every
//! station of a line (SPEC §13).
//!
//! Same design as the SQLite backend: one connection owned by one thread,
//! callers send closures and wait. Every operation is one transaction with the
//! same states, audit events and refusal reasons as SQLite; what is added is
//! what a shared queue needs:
//!
//! - **Leases** are taken with `FOR UPDATE SKIP LOCKED` (two stations never
//!   wait on or take the same row), carry the taking station, an expiry on the
//!   *database's* clock (so station clocks may drift) and a fencing number
//!   (`lease_gen`, bumped on every lease). A heartbeat thread renews the
//!   station's unexpired leases; an expired lease is never renewed.
//! - **Fencing**: `begin_programming` and `store_result` check, in their own
//!   transaction, that the lease is still this station's, unexpired and of the
//!   generation it was taken with. A station that was paused or partitioned
//!   past its lease gets [`StoreError::LeaseLost`]: the recipe quarantines the
//!   key and nothing is stored, so nothing is delivered twice.
//! - **Reclaim**: any station (on lease and on heartbeat) requeues expired
//!   leases; a key that was mid-programming under such a lease (its
//!   `in_flight` row) is quarantined by serial, fleet-wide.
//! - **Delivery claims**: `due_deliveries` claims the results it returns for
//!   [`DELIVERY_CLAIM_MS`], so each result is offered to one station at a time.
//! - Quarantine and "ever programmed" are tables of the whole fleet.

use super::{
    AuditRow, DeliveryStatus, FleetStatus, Imported, JobRow, LeasedJob, PendingDelivery,
    QuarantineRow, Recovery, StationStatus, StoreError,
};
use crate::secret::SecretString;
use crate::shipment::{IntakeRefusal, Job, JobContent, ShipmentId};
use postgres::{Client, Row, Transaction};
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::Duration;

/// Versioned migrations of the fleet schema, applied in order; the table
/// `schema_migrations` records which ran.
pub(super) const MIGRATIONS: &[&str] = &[include_str!("migrations/pg/0001_fleet.sql")];

/// How long a claimed result is reserved for the claiming station's delivery
/// pass. Longer than a pass over a slow sink (every call has a timeout);
/// after it, another station may deliver (the sink's idempotency key is the
/// second line of defence).
pub const DELIVERY_CLAIM_MS: i64 = 120_000;

/// Unix milliseconds on the database's clock.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Connections per store handle (per station process).
const CONNECTIONS: usize = 4;

/// Key of the advisory lock that serialises migrations of concurrent start-ups.
const MIGRATION_LOCK: i64 = 0x7072_6572_6567; // "prereg"

/// Where and how to reach the fleet database.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// libpq-style URL; `sslmode` is `verify-full` (with `sslrootcert`), or
    /// `disable` for a loopback host or a Unix socket.
    pub url: String,
    pub password: Option<SecretString>,
}

/// One call on a pooled connection; `true` when it found the connection
/// lost, so the thread makes a new one before its next call.
type PgCall = Box<dyn FnOnce(&mut Client) -> bool + Send>;

#[derive(Debug)]
pub(super) struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<PgCall>,
    station: String,
    /// Fencing numbers of the leases this process holds, by shipment id.
    fences: Mutex<HashMap<String, i64>>,
    /// The lease length in milliseconds (heartbeat renewals extend by it).
    lease_ms: Mutex<i64>,
}

impl Clone for PgStore {
    fn clone(&self) -> Self {
        PgStore {
            inner: self.inner.clone(),
        }
    }
}

/// Splits `sslmode` / `sslrootcert` off the URL (tokio-postgres knows neither
/// `verify-full` nor root files) and builds the client configuration.
fn client_config(
    settings: &PgSettings,
) -> Result<(postgres::Config, Option<rustls::ClientConfig>), StoreError> {
    let bad = |m: String| StoreError::Config(m);
    let (base, query) = match settings.url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (settings.url.as_str(), ""),
    };
    let (mut sslmode, mut rootcert) = (None, None);
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => sslmode = Some(v.to_owned()),
            Some(("sslrootcert", v)) => rootcert = Some(v.to_owned()),
            Some(("password", _)) => {
                return Err(bad(
                    "[store] url must not hold a password: use password_file".into(),
                ))
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| bad(format!("[store] url does not parse: {e}")))?;
    if config.get_password().is_some() {
        return Err(bad(
            "[store] url must not hold a password: use password_file".into(),
        ));
    }
    if let Some(p) = &settings.password {
        config.password(p.expose().as_bytes());
    }
    let loopback = !config.get_hosts().is_empty()
        && config.get_hosts().iter().all(|h| match h {
            postgres::config::Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            postgres::config::Host::Unix(_) => true,
        });
    match sslmode.as_deref() {
        Some("verify-full") => {
            let Some(root) = rootcert else {
                return Err(bad(
                    "[store] url: sslmode=verify-full needs sslrootcert=FILE (the server's CA)"
                        .into(),
                ));
            };
            let pem = std::fs::read(&root)
                .map_err(|e| bad(format!("[store] sslrootcert {root}: {e}")))?;
            let mut roots = rustls::RootCertStore::empty();
            use rustls_pki_types::pem::PemObject;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| bad(format!("[store] sslrootcert {root}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("[store] sslrootcert {root}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad(format!(
                    "[store] sslrootcert {root}: no certificate in it"
                )));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(format!("TLS: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.ssl_mode(postgres::config::SslMode::Require);
            Ok((config, Some(tls)))
        }
        Some("disable") | None if loopback => {
            config.ssl_mode(postgres::config::SslMode::Disable);
            Ok((config, None))
        }
        Some(other) => Err(bad(format!(
            "[store] url: sslmode={other} is not accepted; use sslmode=verify-full \
             (sslmode=disable only for a loopback host)"
        ))),
        None => Err(bad(
            "[store] url: say sslmode=verify-full&sslrootcert=FILE (the database is not on this host)"
                .into(),
        )),
    }
}

/// Whether `e` ended the session: the connection is closed, or the server
/// sent a FATAL (or PANIC) error, after which PostgreSQL closes it
/// (`terminating connection due to administrator command` on a restart).
fn connection_lost(e: &postgres::Error) -> bool {
    e.is_closed()
        || e.as_db_error()
            .is_some_and(|d| matches!(d.severity(), "FATAL" | "PANIC"))
}

fn connect(settings: &PgSettings) -> Result<Client, StoreError> {
    let (config, tls) = client_config(settings)?;
    let client = match tls {
        Some(tls) => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))?,
        None => config.connect(postgres::NoTls)?,
    };
    Ok(client)
}

/// Applies the migrations not applied yet, under an advisory lock so stations
/// starting together do not race. A role without DDL rights passes when
/// nothing is pending (the runtime role of operations.md).
pub(super) fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .map_err(|e| {
            if e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                StoreError::Config(
                    "the fleet database has no schema yet and this role may not create it: \
                     run `prereg-station store migrate` with the owner's [store] first"
                        .into(),
                )
            } else {
                e.into()
            }
        })?;
    }
    let done: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )?
        .get(0);
    let mut applied = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
        if let Err(e) = tx.batch_execute(sql) {
            if e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                return Err(StoreError::Config(format!(
                    "the fleet database needs migration {} and this role may not change the \
                     schema: run `prereg-station store migrate` with the owner's [store] first",
                    i + 1
                )));
            }
            return Err(e.into());
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&(i as i64 + 1), &super::now_secs()],
        )?;
        applied += 1;
    }
    tx.commit()?;
    Ok(applied)
}

impl PgStore {
    /// Connects (on the store thread: the sync client runs its own runtime,
    /// which must not nest in a caller's), migrates, and starts the thread.
    pub(super) fn open(settings: PgSettings, station: &str) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<PgCall>();
        let rx = Arc::new(Mutex::new(rx));
        // The first connection migrates before the store is handed out; the
        // others connect beside it. Each call runs on whichever connection is
        // free: a station's slots do not queue behind one another's commits.
        let (ready_tx, ready_rx) = mpsc::sync_channel(CONNECTIONS);
        for i in 0..CONNECTIONS {
            let (settings, rx, ready_tx) = (settings.clone(), rx.clone(), ready_tx.clone());
            std::thread::Builder::new()
                .name(format!("store-pg-{i}"))
                .spawn(move || {
                    let first = connect(&settings).and_then(|mut c| {
                        if i == 0 {
                            migrate(&mut c)?;
                        }
                        Ok(c)
                    });
                    let mut client = match first {
                        Ok(c) => {
                            let _ = ready_tx.send(Ok(()));
                            c
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    drop(ready_tx);
                    let mut lost = false;
                    loop {
                        let call = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        // Ends when every handle of the store is dropped.
                        let Ok(call) = call else { return };
                        // A dropped connection (server restart, network) is made
                        // again before the next call; the failed call reported it.
                        // The call's own error says so first: a session the server
                        // ended answers FATAL before the client sees it closed.
                        if lost || client.is_closed() {
                            // On failure the call meets the closed client, fails,
                            // and reports the connection lost again.
                            match connect(&settings) {
                                Ok(c) => client = c,
                                Err(e) => tracing::warn!("database reconnect failed: {e}"),
                            }
                        }
                        lost = call(&mut client);
                    }
                })
                .map_err(|_| StoreError::Stopped)?;
            // Migrations first, then the rest connect (they may need the schema).
            if i == 0 {
                ready_rx.recv().map_err(|_| StoreError::Stopped)??;
            }
        }
        drop(ready_tx);
        for _ in 1..CONNECTIONS {
            ready_rx.recv().map_err(|_| StoreError::Stopped)??;
        }
        Ok(PgStore {
            inner: Arc::new(Inner {
                tx,
                station: station.to_owned(),
                fences: Mutex::default(),
                lease_ms: Mutex::new(600_000),
            }),
        })
    }

    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.inner
            .tx
            .send(Box::new(move |c| {
                let r = f(c);
                let lost = matches!(&r, Err(StoreError::Pg(e)) if connection_lost(e));
                let _ = reply_tx.send(r);
                lost
            }))
            .map_err(|_| StoreError::Stopped)?;
        reply_rx.recv().map_err(|_| StoreError::Stopped)?
    }

    /// Runs `f` in one transaction, committed when it succeeds.
    fn tx<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>, &str) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let station = self.inner.station.clone();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let r = f(&mut tx, &station)?;
            tx.commit()?;
            Ok(r)
        })
    }

    fn fence(&self, shipment_id: &str) -> Option<i64> {
        self.inner
            .fences
            .lock()
            .ok()
            .and_then(|f| f.get(shipment_id).copied())
    }

    fn unfence(&self, shipment_id: &str) {
        if let Ok(mut f) = self.inner.fences.lock() {
            f.remove(shipment_id);
        }
    }

    #[cfg(test)]
    pub(super) fn scalar_text(&self, sql: &'static str) -> Result<String, StoreError> {
        self.call(move |c| Ok(c.query_one(sql, &[])?.get(0)))
    }

    #[cfg(test)]
    pub(super) fn execute_sql(&self, sql: &'static str) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(sql, &[])?;
            Ok(())
        })
    }

    pub(super) fn migrate(&self) -> Result<usize, StoreError> {
        self.call(migrate)
    }

    pub(super) fn import(&self, job: &Job) -> Result<Imported, StoreError> {
        let job = job.clone();
        let content = JobContent::from(&job);
        self.tx(move |tx, station| {
            // Concurrent imports of the same id on two stations: the second
            // waits on the first's row lock and then sees it.
            if let Some(known) = known_content(tx, station, &job.shipment_id, &content)? {
                return Ok(known);
            }
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&job.shipment_id.as_str()],
            )?;
            if let Some(known) = known_content(tx, station, &job.shipment_id, &content)? {
                return Ok(known);
            }
            for d in &content.request_digests {
                tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[d])?;
            }
            if let Some(refusal) = replayed(tx, &content.request_digests)? {
                insert_refused(tx, station, &job.shipment_id, &content, &refusal)?;
                return Ok(Imported::Refused(refusal));
            }
            let now = super::now_secs();
            tx.execute(
                "INSERT INTO jobs (shipment_id, product_id, inventory_product_id,
                   customization_id, pin_request, cred_requests, request_digests, state,
                   imported_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8)",
                &[
                    &job.shipment_id.as_str(),
                    &i64::from(job.product_id),
                    &i64::from(job.inventory_product_id),
                    &job.customization_id,
                    &job.pin_request,
                    &serde_json::to_string(&job.credential_requests).unwrap_or_default(),
                    &serde_json::to_string(&content.request_digests).unwrap_or_default(),
                    &now,
                ],
            )?;
            for digest in &content.request_digests {
                tx.execute(
                    "INSERT INTO seen_requests (digest, shipment_id, seen_at) VALUES ($1, $2, $3)",
                    &[digest, &job.shipment_id.as_str(), &now],
                )?;
            }
            audit(
                tx,
                station,
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

    pub(super) fn import_refused(
        &self,
        id: &ShipmentId,
        content: &JobContent,
        refusal: &IntakeRefusal,
    ) -> Result<Imported, StoreError> {
        let (id, content, refusal) = (id.clone(), content.clone(), refusal.clone());
        self.tx(move |tx, station| {
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&id.as_str()],
            )?;
            if let Some(known) = known_content(tx, station, &id, &content)? {
                return Ok(known);
            }
            insert_refused(tx, station, &id, &content, &refusal)?;
            Ok(Imported::Refused(refusal))
        })
    }

    pub(super) fn record_bad_shipment_id(&self, refusal: &IntakeRefusal) -> Result<(), StoreError> {
        let detail = refusal.to_string();
        self.tx(move |tx, station| {
            audit(
                tx,
                station,
                None,
                "refused",
                None,
                None,
                None,
                Some(&detail),
            )
        })
    }

    pub(super) fn lease(
        &self,
        owner: &str,
        products: &[u32],
        lease: Duration,
    ) -> Result<Option<LeasedJob>, StoreError> {
        let owner = owner.to_owned();
        let products: Vec<i64> = products.iter().map(|&p| i64::from(p)).collect();
        let lease_ms = lease.as_millis().min(i64::MAX as u128) as i64;
        if let Ok(mut l) = self.inner.lease_ms.lock() {
            *l = lease_ms;
        }
        let leased = self.tx(move |tx, station| {
            reclaim_expired(tx, station)?;
            let now = super::now_secs();
            loop {
                let row = tx.query_opt(
                    "SELECT shipment_id, product_id, inventory_product_id, customization_id,
                            pin_request, cred_requests, attempts
                     FROM jobs
                     WHERE state = 'queued' AND product_id = ANY($1)
                     ORDER BY imported_at, seq LIMIT 1
                     FOR UPDATE SKIP LOCKED",
                    &[&products],
                )?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let id: String = row.get(0);
                let shipment_id = match ShipmentId::parse(&id) {
                    Ok(s) => s,
                    Err(refusal) => {
                        let reason = refusal.to_string();
                        tx.execute(
                            "UPDATE jobs SET state = 'refused', reason = $2, updated_at = $3
                             WHERE shipment_id = $1",
                            &[&id, &reason, &now],
                        )?;
                        audit(
                            tx,
                            station,
                            Some(&id),
                            "refused",
                            None,
                            None,
                            None,
                            Some(&reason),
                        )?;
                        continue;
                    }
                };
                let fence: i64 = tx
                    .query_one(
                        &format!(
                            "UPDATE jobs SET state = 'leased', lease_owner = $2, lease_station = $3,
                               lease_expires_ms = {NOW_MS} + $4, lease_gen = lease_gen + 1,
                               updated_at = $5
                             WHERE shipment_id = $1 RETURNING lease_gen"
                        ),
                        &[&id, &owner, &station, &lease_ms, &now],
                    )?
                    .get(0);
                audit(
                    tx,
                    station,
                    Some(&id),
                    "leased",
                    Some(&owner),
                    None,
                    None,
                    None,
                )?;
                let product_id: i64 = row.get(1);
                let inventory_product_id: i64 = row.get(2);
                let creds: String = row.get(5);
                let attempts: i64 = row.get(6);
                return Ok(Some((
                    LeasedJob {
                        job: Job {
                            shipment_id,
                            product_id: u32_of(product_id)?,
                            inventory_product_id: u32_of(inventory_product_id)?,
                            customization_id: row.get(3),
                            pin_request: row.get(4),
                            credential_requests: serde_json::from_str(&creds).unwrap_or_default(),
                        },
                        attempts: u32_of(attempts)?,
                    },
                    fence,
                )));
            }
        })?;
        Ok(leased.map(|(l, fence)| {
            if let Ok(mut f) = self.inner.fences.lock() {
                f.insert(l.job.shipment_id.to_string(), fence);
            }
            l
        }))
    }

    pub(super) fn release(
        &self,
        shipment_id: &str,
        reason: &str,
        count_attempt: bool,
        max_attempts: u32,
    ) -> Result<(), StoreError> {
        let (id, reason) = (shipment_id.to_owned(), reason.to_owned());
        let fence = self.fence(&id);
        let r = self.tx(move |tx, station| {
            let attempts: i64 = tx
                .query_opt(
                    "SELECT attempts FROM jobs WHERE shipment_id = $1 AND state = 'leased'
                       AND lease_station = $2 AND ($3::bigint IS NULL OR lease_gen = $3)
                     FOR UPDATE",
                    &[&id, &station, &fence],
                )?
                .ok_or_else(|| StoreError::UnknownJob(id.clone()))?
                .get(0);
            let attempts = attempts + i64::from(count_attempt);
            let state = if attempts >= i64::from(max_attempts) {
                "failed"
            } else {
                "queued"
            };
            tx.execute(
                "UPDATE jobs SET state = $2, reason = $3, attempts = $4, lease_owner = NULL,
                   lease_station = NULL, lease_expires_ms = NULL, updated_at = $5
                 WHERE shipment_id = $1",
                &[&id, &state, &reason, &attempts, &super::now_secs()],
            )?;
            let event = if state == "failed" {
                "failed"
            } else {
                "requeued"
            };
            audit(
                tx,
                station,
                Some(&id),
                event,
                None,
                None,
                None,
                Some(&reason),
            )
        });
        self.unfence(shipment_id);
        r
    }

    pub(super) fn refuse(&self, shipment_id: &str, reason: &str) -> Result<(), StoreError> {
        let (id, reason) = (shipment_id.to_owned(), reason.to_owned());
        let fence = self.fence(&id);
        let r = self.tx(move |tx, station| {
            let n = tx.execute(
                "UPDATE jobs SET state = 'refused', reason = $2, lease_owner = NULL,
                   lease_station = NULL, lease_expires_ms = NULL, updated_at = $3
                 WHERE shipment_id = $1 AND (state = 'queued' OR (state = 'leased'
                   AND lease_station = $4 AND ($5::bigint IS NULL OR lease_gen = $5)))",
                &[&id, &reason, &super::now_secs(), &station, &fence],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownJob(id));
            }
            audit(
                tx,
                station,
                Some(&id),
                "refused",
                None,
                None,
                None,
                Some(&reason),
            )
        });
        self.unfence(shipment_id);
        r
    }

    pub(super) fn begin_programming(
        &self,
        slot: &str,
        shipment_id: &str,
        serial: &str,
    ) -> Result<(), StoreError> {
        let (slot, id, serial) = (slot.to_owned(), shipment_id.to_owned(), serial.to_owned());
        let fence = self.fence(&id);
        self.tx(move |tx, station| {
            // Nothing irreversible may start under a lease that is no longer ours.
            check_lease(tx, station, &id, fence)?;
            tx.execute(
                "INSERT INTO in_flight (station, slot, shipment_id, serial, step, started_at)
                 VALUES ($1, $2, $3, $4, 'setPIN', $5)
                 ON CONFLICT (station, slot) DO UPDATE SET shipment_id = EXCLUDED.shipment_id,
                   serial = EXCLUDED.serial, step = EXCLUDED.step, started_at = EXCLUDED.started_at",
                &[&station, &slot, &id, &serial, &super::now_secs()],
            )?;
            audit(tx, station, Some(&id), "programming", Some(&slot), Some(&serial), None, None)
        })
    }

    pub(super) fn step(&self, slot: &str, step: &str) -> Result<(), StoreError> {
        let (slot, step) = (slot.to_owned(), step.to_owned());
        self.tx(move |tx, station| {
            // Diagnostic only (a lease lost or a restart quarantines an
            // in-flight key at any step), so not worth a WAL flush of its own,
            // as `synchronous=NORMAL` on SQLite: it reaches disk with the next
            // durable commit.
            tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            tx.execute(
                "UPDATE in_flight SET step = $3 WHERE station = $1 AND slot = $2",
                &[&station, &slot, &step],
            )?;
            Ok(())
        })
    }

    pub(super) fn record_key_event(
        &self,
        event: &str,
        slot: &str,
        serial: Option<&str>,
        firmware: Option<&str>,
        detail: &str,
    ) -> Result<(), StoreError> {
        let (event, slot, detail) = (event.to_owned(), slot.to_owned(), detail.to_owned());
        let (serial, firmware) = (serial.map(str::to_owned), firmware.map(str::to_owned));
        self.tx(move |tx, station| {
            audit(
                tx,
                station,
                None,
                &event,
                Some(&slot),
                serial.as_deref(),
                firmware.as_deref(),
                Some(&detail),
            )
        })
    }

    pub(super) fn events(&self, event: &str) -> Result<Vec<AuditRow>, StoreError> {
        let event = event.to_owned();
        self.call(move |c| {
            Ok(c.query(
                "SELECT at, shipment_id, event, slot, serial, firmware, detail FROM audit
                 WHERE event = $1 ORDER BY id",
                &[&event],
            )?
            .iter()
            .map(audit_row)
            .collect())
        })
    }

    pub(super) fn ever_programmed(&self, serial: &str) -> Result<bool, StoreError> {
        let serial = serial.to_owned();
        self.call(move |c| {
            Ok(c.query_opt(
                "SELECT 1 FROM audit WHERE event = 'programmed' AND serial = $1 LIMIT 1",
                &[&serial],
            )?
            .is_some())
        })
    }

    pub(super) fn store_result(
        &self,
        slot: &str,
        shipment_id: &str,
        serial: &str,
        firmware: &str,
        result_json: String,
    ) -> Result<(), StoreError> {
        let (slot, id, serial, firmware) = (
            slot.to_owned(),
            shipment_id.to_owned(),
            serial.to_owned(),
            firmware.to_owned(),
        );
        let fence = self.fence(&id);
        let r = self.tx(move |tx, station| {
            // The fencing check and the write are one transaction: a lease
            // taken over in between cannot slip past (SPEC §13).
            check_lease(tx, station, &id, fence)?;
            let now = super::now_secs();
            tx.execute(
                "UPDATE jobs SET state = 'programmed', reason = NULL, lease_owner = NULL,
                   lease_station = NULL, lease_expires_ms = NULL, updated_at = $2
                 WHERE shipment_id = $1",
                &[&id, &now],
            )?;
            tx.execute(
                "INSERT INTO outbox (shipment_id, result_json, created_at) VALUES ($1, $2, $3)",
                &[&id, &result_json, &now],
            )?;
            tx.execute(
                "DELETE FROM in_flight WHERE station = $1 AND slot = $2",
                &[&station, &slot],
            )?;
            audit(
                tx,
                station,
                Some(&id),
                "programmed",
                Some(&slot),
                Some(&serial),
                Some(&firmware),
                None,
            )
        });
        if r.is_ok() {
            self.unfence(shipment_id);
        }
        r
    }

    pub(super) fn quarantine(
        &self,
        slot: &str,
        serial: &str,
        shipment_id: Option<&str>,
        step: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (slot, serial, id, step, reason) = (
            slot.to_owned(),
            serial.to_owned(),
            shipment_id.map(str::to_owned),
            step.to_owned(),
            reason.to_owned(),
        );
        self.tx(move |tx, station| {
            tx.execute(
                "INSERT INTO quarantine (serial, shipment_id, step, reason, at, station)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (serial) DO UPDATE SET shipment_id = EXCLUDED.shipment_id,
                   step = EXCLUDED.step, reason = EXCLUDED.reason, at = EXCLUDED.at,
                   station = EXCLUDED.station",
                &[&serial, &id, &step, &reason, &super::now_secs(), &station],
            )?;
            tx.execute(
                "DELETE FROM in_flight WHERE station = $1 AND slot = $2",
                &[&station, &slot],
            )?;
            audit(
                tx,
                station,
                id.as_deref(),
                "quarantined",
                Some(&slot),
                Some(&serial),
                None,
                Some(&format!("{step}: {reason}")),
            )
        })
    }

    pub(super) fn is_quarantined(&self, serial: &str) -> Result<bool, StoreError> {
        let serial = serial.to_owned();
        self.call(move |c| {
            Ok(
                c.query_opt("SELECT 1 FROM quarantine WHERE serial = $1", &[&serial])?
                    .is_some(),
            )
        })
    }

    pub(super) fn quarantined(&self) -> Result<Vec<QuarantineRow>, StoreError> {
        self.call(|c| {
            Ok(c.query(
                "SELECT serial, shipment_id, step, reason, at FROM quarantine ORDER BY at, serial",
                &[],
            )?
            .iter()
            .map(|r| QuarantineRow {
                serial: r.get(0),
                shipment_id: r.get(1),
                step: r.get(2),
                reason: r.get(3),
                at: r.get(4),
            })
            .collect())
        })
    }

    pub(super) fn pending_deliveries(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        self.call(|c| {
            c.query(
                "SELECT shipment_id, result_json, attempts, next_attempt_ms, reason, error, created_at
                 FROM outbox ORDER BY attempts, created_at, seq",
                &[],
            )?
            .iter()
            .map(pending_row)
            .collect()
        })
    }

    /// The due results not claimed by another station, claimed for this one.
    pub(super) fn due_deliveries(&self, now_ms: i64) -> Result<Vec<PendingDelivery>, StoreError> {
        self.tx(move |tx, station| {
            let rows = tx.query(
                &format!(
                    "WITH due AS (
                       SELECT shipment_id FROM outbox
                       WHERE next_attempt_ms <= $1
                         AND (claim_station IS NULL OR claim_station = $2
                              OR claim_expires_ms <= {NOW_MS})
                       ORDER BY attempts, created_at, seq
                       LIMIT 1000
                       FOR UPDATE SKIP LOCKED)
                     UPDATE outbox o SET claim_station = $2, claim_expires_ms = {NOW_MS} + $3
                     FROM due WHERE o.shipment_id = due.shipment_id
                     RETURNING o.shipment_id, o.result_json, o.attempts, o.next_attempt_ms,
                       o.reason, o.error, o.created_at, o.seq"
                ),
                &[&now_ms, &station, &DELIVERY_CLAIM_MS],
            )?;
            let mut due: Vec<(i64, PendingDelivery)> = rows
                .iter()
                .map(|r| Ok((r.get::<_, i64>(7), pending_row(r)?)))
                .collect::<Result<_, StoreError>>()?;
            // RETURNING has no order: the delivery order of SQLite, again.
            due.sort_by_key(|(seq, p)| (p.status.attempts, p.status.created_at, *seq));
            Ok(due.into_iter().map(|(_, p)| p).collect())
        })
    }

    pub(super) fn delivery_failed(
        &self,
        shipment_id: &str,
        reason: &str,
        detail: &str,
        next_attempt_ms: i64,
    ) -> Result<u32, StoreError> {
        let (id, reason, detail) = (shipment_id.to_owned(), reason.to_owned(), detail.to_owned());
        self.tx(move |tx, station| {
            let before: Option<String> = tx
                .query_opt(
                    "SELECT reason FROM outbox WHERE shipment_id = $1 FOR UPDATE",
                    &[&id],
                )?
                .ok_or_else(|| StoreError::UnknownJob(id.clone()))?
                .get(0);
            let attempts: i64 = tx
                .query_one(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = $2, reason = $3,
                       error = $4, claim_station = NULL, claim_expires_ms = NULL
                     WHERE shipment_id = $1 RETURNING attempts",
                    &[&id, &next_attempt_ms, &reason, &detail],
                )?
                .get(0);
            let line = format!("{reason}: {detail}");
            tx.execute(
                "UPDATE jobs SET reason = $2, updated_at = $3 WHERE shipment_id = $1",
                &[&id, &line, &super::now_secs()],
            )?;
            if before.as_deref() != Some(reason.as_str()) {
                audit(
                    tx,
                    station,
                    Some(&id),
                    "delivery_failed",
                    None,
                    None,
                    None,
                    Some(&line),
                )?;
            }
            u32_of(attempts)
        })
    }

    pub(super) fn retry_deliveries_now(&self) -> Result<usize, StoreError> {
        self.tx(|tx, station| {
            // This station's claims from before a restart end now too.
            tx.execute(
                "UPDATE outbox SET claim_station = NULL, claim_expires_ms = NULL
                 WHERE claim_station = $1",
                &[&station],
            )?;
            Ok(tx.execute("UPDATE outbox SET next_attempt_ms = 0", &[])? as usize)
        })
    }

    pub(super) fn delivered(&self, shipment_id: &str, sink: &str) -> Result<(), StoreError> {
        let (id, sink) = (shipment_id.to_owned(), sink.to_owned());
        self.tx(move |tx, station| {
            tx.execute("DELETE FROM outbox WHERE shipment_id = $1", &[&id])?;
            let n = tx.execute(
                "UPDATE jobs SET state = 'purged', pin_request = '', cred_requests = '[]',
                   reason = NULL, updated_at = $2 WHERE shipment_id = $1 AND state = 'programmed'",
                &[&id, &super::now_secs()],
            )?;
            if n == 0 {
                return Err(StoreError::WrongState {
                    shipment_id: id,
                    state: "not programmed".into(),
                    expected: "programmed",
                });
            }
            audit(
                tx,
                station,
                Some(&id),
                "delivered",
                None,
                None,
                None,
                Some(&sink),
            )?;
            audit(tx, station, Some(&id), "purged", None, None, None, None)
        })
    }

    /// Start-up recovery of *this* station: its keys found mid-programming are
    /// quarantined and its leases requeued. Other stations' leases are theirs
    /// until they expire.
    pub(super) fn recover(&self) -> Result<Recovery, StoreError> {
        if let Ok(mut f) = self.inner.fences.lock() {
            f.clear();
        }
        self.tx(|tx, station| {
            let mut report = Recovery::default();
            let now = super::now_secs();
            let in_flight = tx.query(
                "DELETE FROM in_flight WHERE station = $1 RETURNING slot, shipment_id, serial, step",
                &[&station],
            )?;
            for r in &in_flight {
                let (slot, id, serial, step): (String, String, String, String) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                quarantine_row(tx, station, &serial, &id, &step, "station stopped while programming")?;
                tx.execute(
                    "UPDATE jobs SET attempts = attempts + 1
                     WHERE shipment_id = $1 AND state = 'leased' AND lease_station = $2",
                    &[&id, &station],
                )?;
                audit(
                    tx,
                    station,
                    Some(&id),
                    "quarantined",
                    Some(&slot),
                    Some(&serial),
                    None,
                    Some("recovery: stopped mid-programming"),
                )?;
                report.quarantined.push(serial);
            }
            let leased = tx.query(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_station = NULL,
                   lease_expires_ms = NULL, reason = 'recovered after restart', updated_at = $2
                 WHERE state = 'leased' AND lease_station = $1 RETURNING shipment_id",
                &[&station, &now],
            )?;
            for r in &leased {
                let id: String = r.get(0);
                audit(tx, station, Some(&id), "requeued", None, None, None, Some("recovery"))?;
                report.requeued.push(id);
            }
            report.requeued.sort();
            Ok(report)
        })
    }

    pub(super) fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(|c| {
            Ok(c.query(
                "SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state",
                &[],
            )?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect())
        })
    }

    pub(super) fn waiting_products(&self) -> Result<Vec<u32>, StoreError> {
        self.call(|c| {
            c.query(
                "SELECT DISTINCT product_id FROM jobs WHERE state IN ('queued', 'leased')
                 ORDER BY product_id",
                &[],
            )?
            .iter()
            .map(|r| u32_of(r.get(0)))
            .collect()
        })
    }

    pub(super) fn count(&self, state: &str) -> Result<u64, StoreError> {
        let state = state.to_owned();
        self.call(move |c| {
            Ok(
                c.query_one("SELECT COUNT(*) FROM jobs WHERE state = $1", &[&state])?
                    .get::<_, i64>(0) as u64,
            )
        })
    }

    pub(super) fn unfinished(&self) -> Result<u64, StoreError> {
        self.call(|c| {
            Ok(c.query_one(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'leased', 'programmed')",
                &[],
            )?
            .get::<_, i64>(0) as u64)
        })
    }

    pub(super) fn list(&self, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |c| {
            c.query(
                &format!("{JOB_ROW} ORDER BY imported_at DESC, seq DESC LIMIT $1"),
                &[&limit],
            )?
            .iter()
            .map(job_row)
            .collect()
        })
    }

    pub(super) fn show(&self, shipment_id: &str) -> Result<(JobRow, Vec<AuditRow>), StoreError> {
        let id = shipment_id.to_owned();
        self.call(move |c| {
            let row = c
                .query_opt(&format!("{JOB_ROW} WHERE shipment_id = $1"), &[&id])?
                .ok_or_else(|| StoreError::UnknownJob(id.clone()))?;
            let audit = c
                .query(
                    "SELECT at, shipment_id, event, slot, serial, firmware, detail
                     FROM audit WHERE shipment_id = $1 ORDER BY id",
                    &[&id],
                )?
                .iter()
                .map(audit_row)
                .collect();
            Ok((job_row(&row)?, audit))
        })
    }

    /// Registers this station in the fleet and starts its heartbeat: every
    /// quarter lease it records itself alive, renews its unexpired leases and
    /// requeues expired ones (of any station). Ends when the last handle of
    /// the store is dropped.
    pub(super) fn join_fleet(&self, slots: usize, lease: Duration) -> Result<(), StoreError> {
        let lease_ms = lease.as_millis().min(i64::MAX as u128) as i64;
        if let Ok(mut l) = self.inner.lease_ms.lock() {
            *l = lease_ms;
        }
        let slots = slots as i64;
        self.heartbeat(slots)?;
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let period = (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        std::thread::Builder::new()
            .name("store-heartbeat".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                let Some(inner) = weak.upgrade() else { return };
                let store = PgStore { inner };
                if let Err(e) = store.heartbeat(slots) {
                    tracing::warn!("fleet heartbeat failed: {e}");
                }
            })
            .map_err(|_| StoreError::Stopped)?;
        Ok(())
    }

    fn heartbeat(&self, slots: i64) -> Result<(), StoreError> {
        let lease_ms = self.inner.lease_ms.lock().map(|l| *l).unwrap_or(600_000);
        self.tx(move |tx, station| {
            // A renewal lost in a database crash only shortens a lease (the
            // safe direction); requeues it makes are repeated by the next one.
            tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            tx.execute(
                &format!(
                    "INSERT INTO stations (id, version, slots, started_at_ms, last_heartbeat_ms)
                     VALUES ($1, $2, $3, {NOW_MS}, {NOW_MS})
                     ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version,
                       slots = EXCLUDED.slots, last_heartbeat_ms = EXCLUDED.last_heartbeat_ms"
                ),
                &[&station, &env!("CARGO_PKG_VERSION"), &slots],
            )?;
            // Only leases that have not expired: one lost during a pause stays lost.
            tx.execute(
                &format!(
                    "UPDATE jobs SET lease_expires_ms = {NOW_MS} + $2
                     WHERE state = 'leased' AND lease_station = $1 AND lease_expires_ms > {NOW_MS}"
                ),
                &[&station, &lease_ms],
            )?;
            reclaim_expired(tx, station)?;
            Ok(())
        })
    }

    pub(super) fn fleet_status(&self) -> Result<FleetStatus, StoreError> {
        self.call(|c| {
            let now_ms: i64 = c.query_one(&format!("SELECT {NOW_MS}"), &[])?.get(0);
            let stations = c
                .query(
                    "SELECT s.id, s.version, s.slots, s.last_heartbeat_ms,
                       (SELECT COUNT(*) FROM in_flight f WHERE f.station = s.id),
                       (SELECT COUNT(*) FROM jobs j WHERE j.state = 'leased' AND j.lease_station = s.id)
                     FROM stations s ORDER BY s.id",
                    &[],
                )?
                .iter()
                .map(|r| StationStatus {
                    id: r.get(0),
                    version: r.get(1),
                    slots: r.get::<_, i64>(2).max(0) as u64,
                    last_heartbeat_ms: r.get(3),
                    heartbeat_age_ms: now_ms - r.get::<_, i64>(3),
                    in_flight: r.get::<_, i64>(4) as u64,
                    leased: r.get::<_, i64>(5) as u64,
                })
                .collect();
            let queue = c
                .query("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state", &[])?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect();
            Ok(FleetStatus {
                backend: "postgresql",
                stations,
                queue,
            })
        })
    }
}

const JOB_ROW: &str = "SELECT shipment_id, product_id, customization_id, state, reason, attempts,
    CASE WHEN lease_station IS NULL THEN lease_owner ELSE lease_station || '/' || lease_owner END,
    updated_at FROM jobs";

fn u32_of(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::BadRow(format!("{v} is not a 32-bit count")))
}

fn job_row(r: &Row) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        shipment_id: r.get(0),
        product_id: u32_of(r.get(1))?,
        customization_id: r.get(2),
        state: r.get(3),
        reason: r.get(4),
        attempts: u32_of(r.get(5))?,
        lease_owner: r.get(6),
        updated_at: r.get(7),
    })
}

fn audit_row(r: &Row) -> AuditRow {
    AuditRow {
        at: r.get(0),
        shipment_id: r.get(1),
        event: r.get(2),
        slot: r.get(3),
        serial: r.get(4),
        firmware: r.get(5),
        detail: r.get(6),
    }
}

fn pending_row(r: &Row) -> Result<PendingDelivery, StoreError> {
    Ok(PendingDelivery {
        result_json: r.get(1),
        status: DeliveryStatus {
            shipment_id: r.get(0),
            attempts: u32_of(r.get(2))?,
            next_attempt_ms: r.get(3),
            reason: r.get(4),
            error: r.get(5),
            created_at: r.get(6),
        },
    })
}

/// The fence: the lease on `id` is this station's, unexpired (database clock)
/// and, when this process took it, of the generation it was taken with.
/// Locks the row for the rest of the transaction.
fn check_lease(
    tx: &mut Transaction<'_>,
    station: &str,
    id: &str,
    fence: Option<i64>,
) -> Result<(), StoreError> {
    let ok = tx
        .query_opt(
            &format!(
                "SELECT 1 FROM jobs WHERE shipment_id = $1 AND state = 'leased'
                   AND lease_station = $2 AND lease_expires_ms > {NOW_MS}
                   AND ($3::bigint IS NULL OR lease_gen = $3)
                 FOR UPDATE"
            ),
            &[&id, &station, &fence],
        )?
        .is_some();
    if ok {
        Ok(())
    } else {
        Err(StoreError::LeaseLost {
            shipment_id: id.to_owned(),
        })
    }
}

/// Requeues every expired lease not locked by another transaction. A key
/// that was mid-programming under one is quarantined by serial: whatever the
/// stopped station did to it, it must never ship (SPEC §13).
fn reclaim_expired(tx: &mut Transaction<'_>, station: &str) -> Result<(), StoreError> {
    let expired = tx.query(
        &format!(
            "SELECT shipment_id, lease_station FROM jobs
             WHERE state = 'leased' AND lease_expires_ms <= {NOW_MS}
             ORDER BY lease_expires_ms LIMIT 100
             FOR UPDATE SKIP LOCKED"
        ),
        &[],
    )?;
    for r in &expired {
        let (id, holder): (String, Option<String>) = (r.get(0), r.get(1));
        let holder = holder.unwrap_or_default();
        let in_flight = tx.query(
            "DELETE FROM in_flight WHERE shipment_id = $1 RETURNING slot, serial, step, station",
            &[&id],
        )?;
        for f in &in_flight {
            let (slot, serial, step, at): (String, String, String, String) =
                (f.get(0), f.get(1), f.get(2), f.get(3));
            let reason = format!("lease lost by station {at} while programming");
            quarantine_row(tx, station, &serial, &id, &step, &reason)?;
            audit(
                tx,
                station,
                Some(&id),
                "quarantined",
                Some(&slot),
                Some(&serial),
                None,
                Some(&reason),
            )?;
        }
        let reason = format!("lease expired (station {holder})");
        tx.execute(
            "UPDATE jobs SET state = 'queued', attempts = attempts + $2, lease_owner = NULL,
               lease_station = NULL, lease_expires_ms = NULL, reason = $3, updated_at = $4
             WHERE shipment_id = $1",
            &[
                &id,
                &i64::from(!in_flight.is_empty()),
                &reason,
                &super::now_secs(),
            ],
        )?;
        audit(
            tx,
            station,
            Some(&id),
            "requeued",
            None,
            None,
            None,
            Some(&reason),
        )?;
    }
    Ok(())
}

fn quarantine_row(
    tx: &mut Transaction<'_>,
    station: &str,
    serial: &str,
    id: &str,
    step: &str,
    reason: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO quarantine (serial, shipment_id, step, reason, at, station)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (serial) DO UPDATE SET shipment_id = EXCLUDED.shipment_id,
           step = EXCLUDED.step, reason = EXCLUDED.reason, at = EXCLUDED.at,
           station = EXCLUDED.station",
        &[&serial, &id, &step, &reason, &super::now_secs(), &station],
    )?;
    Ok(())
}

/// As the SQLite backend's `known_content`: [`super::reimport`] decides.
fn known_content(
    tx: &mut Transaction<'_>,
    station: &str,
    id: &ShipmentId,
    content: &JobContent,
) -> Result<Option<Imported>, StoreError> {
    let Some(r) = tx.query_opt(
        "SELECT product_id, inventory_product_id, customization_id, request_digests
         FROM jobs WHERE shipment_id = $1",
        &[&id.as_str()],
    )?
    else {
        return Ok(None);
    };
    let known = JobContent {
        product_id: u32_of(r.get(0))?,
        inventory_product_id: u32_of(r.get(1))?,
        customization_id: r.get(2),
        request_digests: serde_json::from_str(&r.get::<_, String>(3)).unwrap_or_default(),
    };
    match super::reimport(known, content) {
        Ok(()) => Ok(Some(Imported::Duplicate)),
        Err(refusal) => {
            audit(
                tx,
                station,
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

/// [`super::replayed_with`] on the PostgreSQL store.
fn replayed(
    tx: &mut Transaction<'_>,
    digests: &[String],
) -> Result<Option<IntakeRefusal>, StoreError> {
    super::replayed_with(digests, |digest| {
        Ok(tx
            .query_opt(
                "SELECT shipment_id FROM seen_requests WHERE digest = $1",
                &[&digest],
            )?
            .map(|r| r.get(0)))
    })
}

fn insert_refused(
    tx: &mut Transaction<'_>,
    station: &str,
    id: &ShipmentId,
    content: &JobContent,
    refusal: &IntakeRefusal,
) -> Result<(), StoreError> {
    let reason = refusal.to_string();
    let now = super::now_secs();
    tx.execute(
        "INSERT INTO jobs (shipment_id, product_id, inventory_product_id,
           customization_id, pin_request, cred_requests, request_digests, state, reason,
           imported_at, updated_at)
         VALUES ($1, $2, $3, $4, '', '[]', $5, 'refused', $6, $7, $7)",
        &[
            &id.as_str(),
            &i64::from(content.product_id),
            &i64::from(content.inventory_product_id),
            &content.customization_id,
            &serde_json::to_string(&content.request_digests).unwrap_or_default(),
            &reason,
            &now,
        ],
    )?;
    audit(
        tx,
        station,
        Some(id),
        "refused",
        None,
        None,
        None,
        Some(&reason),
    )
}

#[allow(clippy::too_many_arguments)]
fn audit(
    tx: &mut Transaction<'_>,
    station: &str,
    shipment_id: Option<&str>,
    event: &str,
    slot: Option<&str>,
    serial: Option<&str>,
    firmware: Option<&str>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (at, station, shipment_id, event, slot, serial, firmware, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &super::now_secs(),
            &station,
            &shipment_id,
            &event,
            &slot,
            &serial,
            &firmware,
            &detail,
        ],
    )?;
    Ok(())
}

/// Test support: a fresh, empty database on the server of `admin_url` (a
/// superuser URL such as `$PREREG_TEST_PG_URL` of `scripts/pg-throwaway.sh`),
/// returned as a URL. Each test gets its own database, so tests run in parallel.
#[doc(hidden)]
pub fn fresh_test_database(admin_url: &str) -> Result<String, StoreError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    let settings = PgSettings {
        url: admin_url.to_owned(),
        password: None,
    };
    let (config, _) = client_config(&settings)?;
    let mut admin = config.connect(postgres::NoTls)?;
    admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let server = base.rsplit_once('/').map(|(s, _)| s).unwrap_or(base);
    Ok(if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    })
}

/// Test support: the throw-away server's URL, or `None` when there is none
/// and `PREREG_REQUIRE_PG` is unset. With it set, a missing server fails the
/// test: CI never skips the PostgreSQL tests.
#[doc(hidden)]
pub fn test_server_url() -> Option<String> {
    match std::env::var("PREREG_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("PREREG_REQUIRE_PG").is_some() => {
            panic!("PREREG_REQUIRE_PG is set but PREREG_TEST_PG_URL is not: run under scripts/pg-throwaway.sh")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;

    fn job(id: &str) -> Job {
        Job {
            shipment_id: ShipmentId::parse(id).unwrap(),
            product_id: 1,
            inventory_product_id: 106,
            customization_id: "C19881".into(),
            pin_request: format!("p.i.n.{id}.we"),
            credential_requests: vec![format!("c.r.e.{id}.1")],
        }
    }

    /// Two stations on one fresh database (`None` without a server, unless
    /// `PREREG_REQUIRE_PG` makes that a failure).
    fn fleet() -> Option<(Store, Store, String)> {
        let url = fresh_test_database(&test_server_url()?).unwrap();
        let open = |station: &str| {
            Store::open_postgres(
                PgSettings {
                    url: url.clone(),
                    password: None,
                },
                station,
            )
            .unwrap()
        };
        Some((open("st-a"), open("st-b"), url))
    }

    const LONG: Duration = Duration::from_secs(60);

    /// A dropped connection (a server restart, the network) costs the call
    /// that meets it and no more: each pooled connection is made again
    /// before its next call, and the station's work goes on.
    #[test]
    fn connections_the_server_dropped_are_made_again_before_the_next_call() {
        let Some((a, _b, url)) = fleet() else { return };
        a.import(&job("J1")).unwrap();
        let (config, _) = client_config(&PgSettings {
            url: url.clone(),
            password: None,
        })
        .unwrap();
        let mut admin = config.connect(postgres::NoTls).unwrap();
        // What a restart does to every session of the stations.
        let ended: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(ended >= CONNECTIONS as i64, "ended {ended} sessions");
        // Each of the station's connections fails the one call that meets
        // it (which connection takes a call is the pool's choice, so keep
        // calling until all have been met) and no more.
        let (mut failures, mut calls) = (0, 0);
        while failures < CONNECTIONS && calls < 1000 {
            calls += 1;
            if a.counts().is_err() {
                failures += 1;
            }
        }
        assert_eq!(failures, CONNECTIONS, "after {calls} calls");
        for _ in 0..CONNECTIONS * 4 {
            a.counts().expect("every connection was made again");
        }
        // Writes too, on whichever connection takes them.
        assert!(a.lease("s1", &[1], LONG).unwrap().is_some());
    }

    #[test]
    fn a_job_is_leased_by_one_station_only() {
        let Some((a, b, _)) = fleet() else { return };
        a.import(&job("J1")).unwrap();
        // The same shipment offered to both stations' intake: one job.
        assert_eq!(b.import(&job("J1")).unwrap(), Imported::Duplicate);
        assert!(a.lease("s1", &[1], LONG).unwrap().is_some());
        assert!(b.lease("s1", &[1], LONG).unwrap().is_none());
        assert_eq!(
            b.show("J1").unwrap().0.lease_owner.as_deref(),
            Some("st-a/s1")
        );
    }

    #[test]
    fn a_station_that_lost_its_lease_cannot_store_and_its_key_is_quarantined() {
        let Some((a, b, _)) = fleet() else { return };
        a.import(&job("J1")).unwrap();
        a.lease("s1", &[1], Duration::from_millis(300))
            .unwrap()
            .unwrap();
        a.begin_programming("s1", "J1", "1111").unwrap();
        // Station A is paused past its lease (no heartbeat): B reclaims the job.
        std::thread::sleep(Duration::from_millis(600));
        let leased = b.lease("s9", &[1], LONG).unwrap().unwrap();
        assert_eq!(leased.job.shipment_id, "J1");
        assert_eq!(leased.attempts, 1, "a key was spoiled under the lost lease");
        assert!(b.is_quarantined("1111").unwrap(), "fleet-wide, by serial");
        // A resumes: the fence refuses its result, and its release cannot
        // take B's job back.
        assert!(matches!(
            a.store_result("s1", "J1", "1111", "5.7.1", "{\"a\":1}".into()),
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(a.release("J1", "x", true, 3).is_err());
        assert!(a.refuse("J1", "x").is_err());
        b.begin_programming("s9", "J1", "2222").unwrap();
        b.store_result("s9", "J1", "2222", "5.7.1", "{\"b\":1}".into())
            .unwrap();
        let due = a.due_deliveries(i64::MAX).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].result_json, "{\"b\":1}");
        assert!(!a.ever_programmed("1111").unwrap());
        assert!(a.ever_programmed("2222").unwrap(), "fleet-wide, by serial");
    }

    #[test]
    fn an_expired_lease_is_lost_even_when_nobody_took_it() {
        let Some((a, _b, _)) = fleet() else { return };
        a.import(&job("J1")).unwrap();
        a.lease("s1", &[1], Duration::from_millis(200))
            .unwrap()
            .unwrap();
        a.begin_programming("s1", "J1", "1111").unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert!(matches!(
            a.store_result("s1", "J1", "1111", "5.7.1", "{}".into()),
            Err(StoreError::LeaseLost { .. })
        ));
        assert_eq!(a.count("programmed").unwrap(), 0);
    }

    #[test]
    fn the_heartbeat_keeps_a_live_stations_lease() {
        let Some((a, b, _)) = fleet() else { return };
        let lease = Duration::from_millis(600);
        a.join_fleet(2, lease).unwrap();
        a.import(&job("J1")).unwrap();
        a.lease("s1", &[1], lease).unwrap().unwrap();
        a.begin_programming("s1", "J1", "1111").unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(b.lease("s1", &[1], lease).unwrap().is_none());
        a.store_result("s1", "J1", "1111", "5.7.1", "{}".into())
            .unwrap();
        let status = b.fleet_status().unwrap();
        let st = status.stations.iter().find(|s| s.id == "st-a").unwrap();
        assert_eq!(st.slots, 2);
        assert!(st.heartbeat_age_ms < 1000, "{st:?}");
        assert!(status.queue.contains(&("programmed".into(), 1)));
    }

    #[test]
    fn each_result_is_claimed_for_delivery_by_one_station() {
        let Some((a, b, _)) = fleet() else { return };
        for id in ["J1", "J2"] {
            a.import(&job(id)).unwrap();
            a.lease("s1", &[1], LONG).unwrap().unwrap();
            a.begin_programming("s1", id, id).unwrap();
            a.store_result("s1", id, id, "5.7.1", "{}".into()).unwrap();
        }
        assert_eq!(a.due_deliveries(0).unwrap().len(), 2);
        assert!(b.due_deliveries(0).unwrap().is_empty(), "claimed by A");
        // A failure gives the claim back: any station may retry it when due.
        a.delivery_failed("J1", "delivery.sink_down", "503", 0)
            .unwrap();
        let ids: Vec<_> = b
            .due_deliveries(0)
            .unwrap()
            .into_iter()
            .map(|p| p.status.shipment_id)
            .collect();
        assert_eq!(ids, ["J1"]);
        b.delivered("J1", "outbox").unwrap();
        a.delivered("J2", "outbox").unwrap();
        assert!(matches!(
            a.delivered("J1", "outbox"),
            Err(StoreError::WrongState { .. })
        ));
        // The pending list (no claim) is what `jobs list` shows on every station.
        assert!(b.pending_deliveries().unwrap().is_empty());
    }

    #[test]
    fn recovery_touches_only_the_restarted_stations_leases() {
        let Some((a, b, _)) = fleet() else { return };
        for id in ["J1", "J2"] {
            a.import(&job(id)).unwrap();
        }
        a.lease("s1", &[1], LONG).unwrap().unwrap();
        b.lease("s1", &[1], LONG).unwrap().unwrap();
        b.begin_programming("s1", "J2", "2222").unwrap();
        let r = a.recover().unwrap();
        assert_eq!(r.requeued, ["J1"]);
        let r = b.recover().unwrap();
        assert_eq!(r.quarantined, ["2222"]);
        assert_eq!(r.requeued, ["J2"]);
        assert!(a.is_quarantined("2222").unwrap());
    }

    #[test]
    fn migrations_are_versioned_and_run_once() {
        let Some((a, _b, url)) = fleet() else { return };
        assert_eq!(a.migrate().unwrap(), 0);
        let mut c =
            postgres::Client::connect(&url.replace("?sslmode=disable", ""), postgres::NoTls)
                .unwrap();
        let v: i64 = c
            .query_one("SELECT MAX(version) FROM schema_migrations", &[])
            .unwrap()
            .get(0);
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    #[test]
    fn the_url_must_verify_the_server_or_stay_on_loopback() {
        let refused = |url: &str| {
            client_config(&PgSettings {
                url: url.into(),
                password: None,
            })
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        assert!(refused("postgresql://u@db.line1/p?sslmode=require").contains("verify-full"));
        assert!(refused("postgresql://u@db.line1/p").contains("verify-full"));
        assert!(refused("postgresql://u@db.line1/p?sslmode=verify-full").contains("sslrootcert"));
        assert!(refused("postgresql://u:pw@127.0.0.1/p").contains("password"));
        assert!(refused("postgresql://u@127.0.0.1/p?sslmode=disable").is_empty());
    }

    #[test]
    fn tls_with_verify_full_reaches_the_server() {
        if test_server_url().is_none() {
            return;
        }
        let Ok(tls_url) = std::env::var("PREREG_TEST_PG_TLS_URL") else {
            panic!("scripts/pg-throwaway.sh exports PREREG_TEST_PG_TLS_URL");
        };
        let mut c = connect(&PgSettings {
            url: tls_url.clone(),
            password: None,
        })
        .unwrap();
        let ssl: bool = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(ssl);
        // The server's name is checked: 127.0.0.1 is not in its certificate.
        let wrong_name = tls_url.replace("@localhost:", "@127.0.0.1:");
        assert!(connect(&PgSettings {
            url: wrong_name,
            password: None,
        })
        .is_err());
    }

    #[test]
    fn the_password_file_must_be_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let Some(admin) = test_server_url() else {
            return;
        };
        let url = fresh_test_database(&admin).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        let secret = keys.join("pg-password");
        std::fs::write(&secret, "s3cret-pw\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let config = crate::config::Config::parse(&format!(
            "[station]\nid = \"a\"\nstate_dir = {:?}\nkeys_dir = {keys:?}\n\n[store]\nurl = {url:?}\npassword_file = \"pg-password\"\n",
            dir.path()
        ))
        .unwrap();
        let err = Store::open_config(&config).unwrap_err().to_string();
        assert!(err.contains("password_file"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let store = Store::open_config(&config).unwrap();
        assert_eq!(store.backend_name(), "postgresql");
    }

    /// The grants of docs/fleet-grants.sql are enough for a station's whole
    /// life, and nothing more is needed (no DDL, no DELETE on jobs or audit).
    #[test]
    fn the_documented_least_privilege_grants_run_a_station() {
        let Some(admin) = test_server_url() else {
            return;
        };
        let url = fresh_test_database(&admin).unwrap();
        let owner = Store::open_postgres(
            PgSettings {
                url: url.clone(),
                password: None,
            },
            "owner",
        )
        .unwrap();
        drop(owner);
        let db = url
            .split('/')
            .nth(3)
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        let mut c =
            postgres::Client::connect(&url.replace("?sslmode=disable", ""), postgres::NoTls)
                .unwrap();
        c.batch_execute(
            "DO $$ BEGIN CREATE ROLE prereg_station LOGIN;
             EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
        .unwrap();
        let grants = include_str!("../../docs/fleet-grants.sql")
            .replace("DATABASE prereg ", &format!("DATABASE {db} "));
        c.batch_execute(&grants).unwrap();
        let runtime = url.replace("postgres@", "prereg_station@");
        let s = Store::open_postgres(
            PgSettings {
                url: runtime.clone(),
                password: None,
            },
            "rt",
        )
        .unwrap();
        s.join_fleet(1, Duration::from_secs(60)).unwrap();
        s.recover().unwrap();
        s.import(&job("J1")).unwrap();
        s.import(&job("J2")).unwrap();
        s.lease("s1", &[1], LONG).unwrap().unwrap();
        s.begin_programming("s1", "J1", "1").unwrap();
        s.step("s1", "makeCredential#1").unwrap();
        s.store_result("s1", "J1", "1", "5.7.1", "{}".into())
            .unwrap();
        assert_eq!(s.due_deliveries(0).unwrap().len(), 1);
        s.delivery_failed("J1", "delivery.sink_down", "503", 0)
            .unwrap();
        s.delivered("J1", "outbox").unwrap();
        s.lease("s1", &[1], LONG).unwrap().unwrap();
        s.begin_programming("s1", "J2", "2").unwrap();
        s.quarantine("s1", "2", Some("J2"), "setPIN", "x").unwrap();
        s.release("J2", "key quarantined", true, 3).unwrap();
        s.retry_deliveries_now().unwrap();
        assert_eq!(s.fleet_status().unwrap().stations.len(), 1);
        // A runtime role on a database without the schema is told what to do.
        let empty = fresh_test_database(&admin).unwrap();
        let mut c2 =
            postgres::Client::connect(&empty.replace("?sslmode=disable", ""), postgres::NoTls)
                .unwrap();
        c2.batch_execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            .unwrap();
        let err = Store::open_postgres(
            PgSettings {
                url: empty.replace("postgres@", "prereg_station@"),
                password: None,
            },
            "rt",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("store migrate"), "{err}");
        // And no more than that: the runtime role cannot change the schema
        // or erase history.
        let mut rt =
            postgres::Client::connect(&runtime.replace("?sslmode=disable", ""), postgres::NoTls)
                .unwrap();
        assert!(rt.batch_execute("DELETE FROM audit").is_err());
        assert!(rt.batch_execute("DELETE FROM jobs").is_err());
        assert!(rt.batch_execute("DROP TABLE quarantine").is_err());
        assert!(rt.batch_execute("CREATE TABLE x (y INT)").is_err());
    }
}
