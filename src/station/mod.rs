//! The station: a supervisor that owns the shared state, one worker thread per
//! slot ([`worker`]), a delivery thread ([`deliver`]), and start-up recovery.
//!
//! Shared state is one `Arc<Shared>`: the store handle (itself a channel to
//! the store thread), the station keys (read-only), the status board (its own
//! lock), and a stop flag. Workers never share a key or a job; the store's
//! single writer thread is what serialises leases between them.

pub mod app;
pub mod deliver;
pub mod http_sink;
pub mod intake;
pub mod latency;
pub mod notify;
pub mod policy;
pub mod power;
pub mod simslot;
pub mod source;
pub mod spool;
mod worker;

use crate::config::Config;
use crate::job::recipe::{KeyPolicy, Programmed};
use crate::jose::keys::StationKeys;
use crate::rig::serial::{SerialRig, SerialRigOptions};
use crate::rig::sim::{SimKeySlots, SimRig, SimRigOptions};
use crate::rig::{NoRig, Rig};
use crate::store::{Recovery, Store};
use crate::web::StatusBoard;
use crate::webauthn::TrustRoots;
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
    pub stop: AtomicBool,
    /// Keys programmed in this run (for `demo` and `run --once` summaries).
    pub programmed: Mutex<Vec<Programmed>>,
    delivery: Mutex<Option<mpsc::Sender<()>>>,
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
            let source = source::open(
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
        let http_sink = match &setup.config.http_sink {
            Some(url) => Some(
                http_sink::HttpSink::parse(url).map_err(|e| StationError::Slot {
                    slot: "[sink]".into(),
                    reason: e.to_string(),
                })?,
            ),
            None => None,
        };
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            http_sink,
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
        });
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

    /// Asks every worker to stop after its current key, waits for them, and
    /// delivers what is left.
    pub fn shutdown(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.join();
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

/// Delivers pending results whenever a worker stores one (and every few
/// seconds, to retry after a sink error), until the station stops.
fn delivery_loop(shared: &Shared, rx: mpsc::Receiver<()>) {
    loop {
        let stop = match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(()) => false,
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => true,
        };
        match deliver::deliver_pending(
            &shared.store,
            &shared.config.outbox_dir,
            shared.http_sink.as_ref(),
        ) {
            Ok(0) => {}
            Ok(n) => tracing::info!(results = n, "delivered to the outbox"),
            Err(e) => tracing::error!("delivery failed (will retry): {e}"),
        }
        if let Ok(counts) = shared.store.counts() {
            shared.board.set_queue_counts(counts);
        }
        if stop {
            return;
        }
    }
}
