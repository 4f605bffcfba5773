//! The station: a supervisor that owns the shared state, one worker thread per
//! slot ([`worker`]), a delivery thread ([`deliver`]: each result on its own,
//! with backoff), start-up directory checks ([`preflight`]), and start-up
//! recovery.
//!
//! Shared state is one `Arc<Shared>`: the store handle (itself a channel to
//! the store thread), the station keys (read-only), the status board (its own
//! lock), and a stop flag. Workers never share a key or a job; the store's
//! single writer thread is what serialises leases between them.

pub mod app;
pub mod deliver;
pub mod http_sink;
pub mod intake;
pub mod notify;
pub mod policy;
pub mod power;
pub mod preflight;
pub mod simslot;
pub mod source;
pub mod spool;
pub mod worker;

use crate::config::Config;
use crate::job::recipe::{KeyPolicy, Programmed};
use crate::jose::keys::StationKeys;
use crate::rig::serial::{SerialRig, SerialRigOptions};
use crate::rig::sim::{SimKeySlots, SimRig, SimRigOptions};
use crate::rig::{NoRig, Rig};
use crate::store::{Recovery, Store};
use crate::web::StatusBoard;
use crate::webauthn::TrustRoots;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StationError {
    #[error("slot {slot}: {reason}")]
    Slot { slot: String, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// A configuration section that cannot be put to work (TLS files, URLs).
    #[error("{section}: {reason}")]
    Section { section: String, reason: String },
}

/// The key source of a configured slot: a simulated slot, or a device.
fn open_source(
    spec: &crate::transport::DeviceSpec,
    slot_index: usize,
    seed: u64,
    sim_hook: Option<simslot::SimHook>,
    rig_slots: Option<&SimKeySlots>,
) -> Result<Box<dyn source::KeySource>, source::SourceError> {
    if let crate::transport::DeviceSpec::Sim(profile) = spec {
        return simslot::SimSource::new(profile, slot_index, seed).map(|s| {
            Box::new(s.with_hook(sim_hook).with_rig_slots(rig_slots.cloned()))
                as Box<dyn source::KeySource>
        });
    }
    source::open_device(spec)
        .ok_or_else(|| source::SourceError(format!("no source for device {spec:?}")))
}

/// State every worker shares.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub keys: StationKeys,
    pub roots: TrustRoots,
    pub policy: Box<dyn KeyPolicy>,
    pub board: StatusBoard,
    pub rig: Arc<dyn Rig>,
    /// `[sink] http_url`, when results go to an HTTP receiver instead of the outbox.
    pub http_sink: Option<http_sink::HttpSink>,
    /// `[upstream]` (SPEC §12): the client the poller pulls work with; results
    /// go back through `http_sink` (`PUT …/result`).
    pub upstream: Option<crate::upstream::UpstreamClient>,
    pub stop: AtomicBool,
    /// Keys programmed in this run (for `demo` and `run --once` summaries).
    pub programmed: Mutex<Vec<Programmed>>,
    delivery: Mutex<Option<mpsc::Sender<()>>>,
    /// Failed deliveries in this run, by shipment id: how many, and the last
    /// reason (for `run --once`, which must not wait on results that cannot
    /// be delivered). Written by the delivery thread only.
    delivery_failures: Mutex<HashMap<String, (u32, deliver::Failure)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("station", &self.config.station_id)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Wakes the delivery thread (a result was stored).
    pub fn kick_delivery(&self) {
        if let Some(tx) = self
            .delivery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(());
        }
    }
}

/// A result the station gave up waiting for in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undeliverable {
    /// As stored: untrusted text (escape it for output).
    pub shipment_id: String,
    /// Failed deliveries in this run.
    pub failures: u32,
    pub failure: deliver::Failure,
}

/// A running station.
#[derive(Debug)]
pub struct Station {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    delivery: Option<JoinHandle<()>>,
    /// The simulated rig on a pty (`[rig] simulated = true`); dropped after
    /// the workers have stopped.
    sim_rig: Option<SimRig>,
    pub recovery: Recovery,
}

/// What a station needs to start.
#[allow(missing_debug_implementations)]
pub struct Setup {
    pub config: Config,
    pub store: Store,
    pub keys: StationKeys,
    pub roots: TrustRoots,
    pub policy: Box<dyn KeyPolicy>,
    pub board: StatusBoard,
    pub rig: Option<Arc<dyn Rig>>,
    /// Seed for simulated slots (serials, keys); ignored by real devices.
    pub sim_seed: u64,
    /// Called with every simulated key a `sim:` slot inserts (tests: faults, handles).
    pub sim_hook: Option<simslot::SimHook>,
}

impl Station {
    /// Recovers the store, delivers what is pending, and starts the workers.
    pub fn start(setup: Setup) -> Result<Self, StationError> {
        let recovery = setup.store.recover()?;
        // A fleet station announces itself and keeps its leases alive (SPEC §13).
        setup
            .store
            .join_fleet(setup.config.slots.len(), setup.config.lease)?;
        setup
            .board
            .set_queue_fleet(setup.store.backend_name() == "postgresql");
        for serial in &recovery.quarantined {
            tracing::warn!(%serial, "key was mid-programming when the station stopped: quarantined");
        }
        if !recovery.requeued.is_empty() {
            tracing::info!(
                jobs = recovery.requeued.len(),
                "leased jobs returned to the queue"
            );
        }
        let mut rig = setup.rig;
        let (sim_rig, rig_slots) = if setup.config.rig_simulated {
            let (sim, slots, serial) = start_sim_rig(&setup.config, &setup.board)?;
            rig = Some(serial);
            (Some(sim), Some(slots))
        } else {
            (None, None)
        };
        let mut sources = Vec::new();
        for (i, slot) in setup.config.slots.iter().enumerate() {
            let source = open_source(
                &slot.device,
                i,
                setup.sim_seed,
                setup.sim_hook.clone(),
                rig_slots.as_ref(),
            )
            .map_err(|e| StationError::Slot {
                slot: slot.name.clone(),
                reason: e.to_string(),
            })?;
            sources.push((i, slot.name.clone(), source));
        }
        let (http_sink, upstream) = http_sinks(&setup.config)?;
        if let Some(client) = &upstream {
            setup.board.set_upstream(client.stats().clone());
        }
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            http_sink,
            upstream,
            config: setup.config,
            store: setup.store,
            keys: setup.keys,
            roots: setup.roots,
            policy: setup.policy,
            board: setup.board,
            rig: rig.unwrap_or_else(|| Arc::new(NoRig)),
            stop: AtomicBool::new(false),
            programmed: Mutex::new(Vec::new()),
            delivery: Mutex::new(Some(tx)),
            delivery_failures: Mutex::default(),
        });
        if shared.keys.token_stats().is_some() {
            // Weak: the board lives in `shared`, so a strong link would be a cycle.
            let weak = Arc::downgrade(&shared);
            shared.board.set_custody(Arc::new(move || {
                weak.upgrade().and_then(|s| s.keys.token_stats())
            }));
        }
        // After a restart every pending result is tried at once, and the
        // temp files a crash left in the outbox go first.
        shared.store.retry_deliveries_now()?;
        if shared.http_sink.is_none() {
            match deliver::remove_stale_temps(&shared.config.outbox_dir) {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, "removed delivery temp files left by a crash"),
                // Harmless: leftovers are hidden, not `*.json`, never reused.
                Err(e) => tracing::warn!("cannot clear delivery temp files: {e}"),
            }
        }
        let delivery = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("delivery".into())
                .spawn(move || delivery_loop(&shared, rx))
                .map_err(StationError::Thread)?
        };
        shared.kick_delivery();
        let mut workers = Vec::new();
        for (i, name, source) in sources {
            let shared = shared.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("slot-{name}"))
                    .spawn(move || worker::run(i, name, source, shared))
                    .map_err(StationError::Thread)?,
            );
        }
        Ok(Station {
            shared,
            workers,
            delivery: Some(delivery),
            sim_rig,
            recovery,
        })
    }

    /// The simulated rig, when the configuration asks for one (tests make it
    /// misbehave: garbage, silence, unplugging).
    pub fn sim_rig(&self) -> Option<&SimRig> {
        self.sim_rig.as_ref()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether every job is finished and delivered (nothing queued, leased or awaiting the sink).
    pub fn drained(&self) -> bool {
        self.shared.store.unfinished().is_ok_and(|n| n == 0)
    }

    /// Results that `run --once` stops waiting for: pending results that
    /// failed in this run for a reason only an operator can fix, or too often
    /// for a transient one ([`deliver::once_gives_up`]). Sorted by id.
    pub fn undeliverable(&self) -> Vec<Undeliverable> {
        let failures = self
            .shared
            .delivery_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Undeliverable> = failures
            .iter()
            .filter(|(_, (n, f))| deliver::once_gives_up(f.reason, *n))
            .map(|(id, (n, f))| Undeliverable {
                shipment_id: id.clone(),
                failures: *n,
                failure: f.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.shipment_id.cmp(&b.shipment_id));
        out
    }

    /// Whether the queue is drained except for results that cannot be
    /// delivered: no job queued or leased, and every result still pending is
    /// [`Station::undeliverable`]. Returns those results (empty when the
    /// station is not there yet, or fully drained).
    pub fn stuck_on_delivery(&self) -> Vec<Undeliverable> {
        let store = &self.shared.store;
        let idle = store.count("queued").is_ok_and(|n| n == 0)
            && store.count("leased").is_ok_and(|n| n == 0);
        let Ok(pending) = store.delivery_status() else {
            return Vec::new();
        };
        let stuck = self.undeliverable();
        let all_stuck = pending
            .iter()
            .all(|p| stuck.iter().any(|s| s.shipment_id == p.shipment_id));
        if idle && !pending.is_empty() && all_stuck {
            stuck
                .into_iter()
                .filter(|s| pending.iter().any(|p| p.shipment_id == s.shipment_id))
                .collect()
        } else {
            Vec::new()
        }
    }

    /// Asks every worker to stop after its current key, waits for them, and
    /// delivers what is left.
    pub fn shutdown(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // A network sink hands over nothing more once stopping: the call in
        // flight finishes within its deadline, the rest stays in the store
        // for the next start, so a back end that hangs cannot hold shutdown
        // for one deadline per pending result.
        if let Some(sink) = &self.shared.http_sink {
            sink.close();
        }
        self.shared
            .delivery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(d) = self.delivery.take() {
            let _ = d.join();
        }
    }
}

/// The HTTP clients `config` asks for: `[sink] http_url` (POST), or
/// `[upstream]` (SPEC §12, results PUT back to it). TLS files are read now
/// (client key mode-checked in key custody), so a wrong file stops start-up.
fn http_sinks(
    config: &Config,
) -> Result<
    (
        Option<http_sink::HttpSink>,
        Option<crate::upstream::UpstreamClient>,
    ),
    StationError,
> {
    let err = |section: &str, e: crate::upstream::http::SetupError| StationError::Section {
        section: section.into(),
        reason: e.to_string(),
    };
    if let Some(up) = &config.upstream {
        let http = crate::upstream::HttpClient::new(
            &up.url,
            &up.tls,
            config.keys_dir.as_deref(),
            up.timeout,
        )
        .map_err(|e| err("[upstream]", e))?;
        let stats = Arc::new(crate::upstream::UpstreamStats::new(http.base().as_str()));
        let client = crate::upstream::UpstreamClient::new(http, config.station_id.clone(), stats);
        return Ok((
            Some(http_sink::HttpSink::upstream(client.clone())),
            Some(client),
        ));
    }
    match &config.http_sink {
        Some(url) => Ok((
            Some(
                http_sink::HttpSink::new(url, &config.http_sink_tls, config.keys_dir.as_deref())
                    .map_err(|e| err("[sink]", e))?,
            ),
            None,
        )),
        None => Ok((None, None)),
    }
}

/// Starts the simulated rig (SPEC §10) on a pty linked at
/// `STATE_DIR/sim-rig.tty`, and the serial driver that talks to it the way it
/// talks to a real rig (SPEC §9), its health shown on the board.
fn start_sim_rig(
    config: &Config,
    board: &crate::web::StatusBoard,
) -> Result<(SimRig, SimKeySlots, Arc<dyn Rig>), StationError> {
    let rig_err = |reason: String| StationError::Slot {
        slot: "[rig] simulated".into(),
        reason,
    };
    let n = u8::try_from(config.slots.len()).map_err(|_| {
        rig_err(format!(
            "{} slots is more than a rig has (255)",
            config.slots.len()
        ))
    })?;
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| rig_err(format!("cannot create {}: {e}", config.state_dir.display())))?;
    let slots = SimKeySlots::new(config.slots.len());
    let link = config.state_dir.join("sim-rig.tty");
    let sim = SimRig::spawn(&link, Arc::new(slots.clone()), SimRigOptions::new(n))
        .map_err(|e| rig_err(format!("cannot open a pty for the simulated rig: {e}")))?;
    let serial = SerialRig::open(
        &link,
        115_200,
        SerialRigOptions {
            on_health: Some(board.rig_health_hook()),
            ..SerialRigOptions::default()
        },
    );
    tracing::info!(port = %link.display(), rig = %serial.health(), "simulated rig started");
    Ok((sim, slots, Arc::new(serial)))
}

/// How long delivery pauses after the store failed to record an outcome.
const STORE_TROUBLE_PAUSE: Duration = Duration::from_secs(2);

/// The delivery thread: a pass over every due result whenever a worker
/// stores one, and otherwise when the earliest backoff ends (at most
/// [`DELIVERY_IDLE`] apart, to keep the board current), until the station
/// stops; the last pass runs after the workers have stopped.
fn delivery_loop(shared: &Shared, rx: mpsc::Receiver<()>) {
    let mut wait = Duration::ZERO;
    loop {
        let stop = match rx.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => true,
        };
        let sink = match &shared.http_sink {
            Some(http) => deliver::Sink::Http(http),
            None => deliver::Sink::Outbox(&shared.config.outbox_dir),
        };
        let mut store_failed = false;
        match deliver::deliver_due(&shared.store, sink, &now_ms, &mut || rand::random::<f64>()) {
            Ok(pass) => {
                store_failed = pass.store_failed;
                record_pass(shared, &pass);
            }
            Err(e) => tracing::error!("delivery: cannot list pending results (will retry): {e}"),
        }
        let status = shared.store.delivery_status().unwrap_or_default();
        let now = now_ms();
        wait = status
            .iter()
            .map(|p| Duration::from_millis(p.next_attempt_ms.saturating_sub(now).max(0) as u64))
            .min()
            .unwrap_or(DELIVERY_IDLE)
            .clamp(Duration::from_millis(10), DELIVERY_IDLE);
        // A store that cannot save a failure's backoff (disk full) leaves the
        // result due at once: without this pause the loop would retry and log
        // it every 10 ms, filling the very disk that is full.
        if store_failed {
            wait = wait.max(STORE_TROUBLE_PAUSE);
        }
        shared.board.set_delivery(
            status.len() as u64,
            status
                .iter()
                .filter(|p| p.attempts > 0)
                .map(|p| crate::web::board::DeliveryFailureView {
                    shipment_id: crate::escape::untrusted(&p.shipment_id),
                    attempts: p.attempts,
                    reason: p.reason.clone().unwrap_or_default(),
                    error: p.error.clone().unwrap_or_default(),
                    next_attempt_ms: p.next_attempt_ms,
                })
                .collect(),
        );
        if let Ok(counts) = shared.store.counts() {
            shared.board.set_queue_counts(with_every_state(counts));
        }
        if stop {
            return;
        }
    }
}

/// Every job state (the `jobs.state` CHECK of migration 0001).
pub const JOB_STATES: [&str; 7] = [
    "queued",
    "leased",
    "programmed",
    "delivered",
    "purged",
    "refused",
    "failed",
];

/// `counts` with a 0 for every state it lacks: the queue gauges of
/// `/metrics` drop to 0 when the last job leaves a state instead of
/// vanishing (a vanished series keeps its last value on a Prometheus graph).
fn with_every_state(counts: Vec<(String, u64)>) -> Vec<(String, u64)> {
    let mut all: std::collections::BTreeMap<String, u64> =
        JOB_STATES.iter().map(|s| (s.to_string(), 0)).collect();
    all.extend(counts);
    all.into_iter().collect()
}

/// Longest sleep of the delivery thread with nothing due.
const DELIVERY_IDLE: Duration = Duration::from_secs(2);

/// Logs a pass, counts its failures (board, `/metrics`, `run --once`).
fn record_pass(shared: &Shared, pass: &deliver::Pass) {
    let mut failures = shared
        .delivery_failures
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !pass.delivered.is_empty() {
        tracing::info!(results = pass.delivered.len(), sink = %shared.http_sink.as_ref().map_or("outbox", |h| h.url()), "delivered");
    }
    for id in &pass.delivered {
        failures.remove(id);
    }
    for f in &pass.failed {
        let retry_in_ms = f.next_attempt_ms.saturating_sub(now_ms()).max(0);
        tracing::warn!(
            shipment = %crate::escape::Untrusted(&f.shipment_id),
            reason = f.failure.reason.code(),
            attempts = f.attempts,
            retry_in_ms,
            "delivery failed: {}",
            f.failure.detail
        );
        shared
            .board
            .record_delivery_failure(f.failure.reason.code());
        let entry = failures
            .entry(f.shipment_id.clone())
            .or_insert_with(|| (0, f.failure.clone()));
        entry.0 += 1;
        entry.1 = f.failure.clone();
    }
}

/// Unix milliseconds now (the delivery schedule's clock).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
