//! The status board: what the station tells the operator, shared between
//! the station's threads (writers) and the web server (readers).
//!
//! Locking: one `std::sync::Mutex` around plain data. Writers are blocking
//! slot-worker threads and readers are short snapshot copies on the web
//! runtime; no critical section does I/O or `.await`s, so an async mutex
//! would buy nothing and a reader/writer lock would not pay for itself at a
//! few updates per second. Pause/drain flags are atomics so the station's
//! hot loop reads them without the lock. Every change bumps a
//! `tokio::sync::broadcast` channel of unit notifications: SSE clients then
//! take a fresh snapshot, so a slow client that lags just skips to the
//! latest state (coalescing for free) and `send` never blocks a worker.
//!
//! The board must never hold a secret: no PINs, tokens or payloads, only
//! serials, job ids, step names and error texts (which the station builds
//! from typed errors whose `Display` carries no secret).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::rig::{Lamp, RigHealth};

/// What a slot is doing, as the operator sees it. Our own decision: closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Empty and ready for a blank key.
    #[default]
    Idle,
    /// A key is in; waiting for a job, the queue or a resume.
    Waiting,
    /// Programming: hands off.
    Programming,
    /// The key needs a touch from the operator (no actuator, or rig down).
    Touch,
    /// Programmed and verified: ship it.
    Pass,
    /// Failed before any change to the key; it may be reused.
    Fail,
    /// Stopped mid-programming (SPEC §7 step 11): never ship it.
    Quarantine,
    /// Remove the key (wrong product, not blank, drained…).
    Remove,
    /// The slot cannot work (device unreachable, disabled).
    Offline,
}

impl SlotState {
    pub const ALL: [SlotState; 9] = [
        SlotState::Idle,
        SlotState::Waiting,
        SlotState::Programming,
        SlotState::Touch,
        SlotState::Pass,
        SlotState::Fail,
        SlotState::Quarantine,
        SlotState::Remove,
        SlotState::Offline,
    ];

    /// The metric / JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Idle => "idle",
            SlotState::Waiting => "waiting",
            SlotState::Programming => "programming",
            SlotState::Touch => "touch",
            SlotState::Pass => "pass",
            SlotState::Fail => "fail",
            SlotState::Quarantine => "quarantine",
            SlotState::Remove => "remove",
            SlotState::Offline => "offline",
        }
    }

    /// The slot lamp that matches this state (SPEC §9 `LED`), so the rig's
    /// lamps and the page always agree.
    pub fn lamp(self) -> Lamp {
        match self {
            SlotState::Idle | SlotState::Waiting | SlotState::Offline => Lamp::Off,
            SlotState::Programming => Lamp::Busy,
            SlotState::Touch | SlotState::Remove => Lamp::Attn,
            SlotState::Pass => Lamp::Pass,
            SlotState::Fail | SlotState::Quarantine => Lamp::Fail,
        }
    }

    /// What the operator should do now, unless the station says better.
    pub fn default_instruction(self) -> &'static str {
        match self {
            SlotState::Idle => "Insert a blank key",
            SlotState::Waiting => "Leave the key in: waiting for a job",
            SlotState::Programming => "Do not remove the key",
            SlotState::Touch => "Touch the key now",
            SlotState::Pass => "Remove the key: PASS tray",
            SlotState::Fail => "Remove the key: FAIL tray",
            SlotState::Quarantine => "Remove the key: QUARANTINE bin, never ship",
            SlotState::Remove => "Remove the key",
            SlotState::Offline => "Slot offline: call the line technician",
        }
    }
}

/// One slot as the station reports it (`StatusBoard::slot_update`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotView {
    pub state: SlotState,
    /// Key serial number (from READ_CONFIG), once known.
    pub serial: Option<u32>,
    /// Key firmware, e.g. "5.7.1".
    pub firmware: Option<String>,
    /// Job id being programmed.
    pub job: Option<String>,
    /// Current recipe step in words, e.g. "makeCredential 2/3".
    pub step: Option<String>,
    /// When work on this key started; the page shows the elapsed time.
    /// `None`: elapsed counts from the last state change.
    pub started: Option<Instant>,
    /// The last error on this slot, one line, no secrets.
    pub last_error: Option<String>,
    /// Overrides the state's default "what to do now".
    pub instruction: Option<String>,
}

impl SlotView {
    pub fn new(state: SlotState) -> Self {
        SlotView {
            state,
            ..SlotView::default()
        }
    }
}

/// How a key's programming ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Programmed,
    Failed,
    Quarantined,
}

/// One finished key (`StatusBoard::record_result`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRecord {
    pub slot: usize,
    pub outcome: Outcome,
    pub serial: Option<u32>,
    pub job: Option<String>,
    /// The step where it failed (failures only).
    pub step: Option<String>,
    /// Why it failed (failures only), one line, no secrets.
    pub error: Option<String>,
    /// From insertion (or job start) to the result.
    pub duration: Duration,
}

/// Histogram buckets (seconds) for step and job durations: a step takes
/// milliseconds (getInfo) to seconds (makeCredential with touch).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A Prometheus-style histogram (cumulative on output).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Per-bucket (non-cumulative) counts; last entry is +Inf.
    pub counts: [u64; DURATION_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += s;
        self.count += 1;
    }
}

const MAX_FAILURES: usize = 20;
const MAX_TEXT: usize = 200;
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct SlotEntry {
    view: SlotView,
    since: Instant,
}

#[derive(Debug)]
struct BoardState {
    slots: Vec<SlotEntry>,
    queue: BTreeMap<String, u64>,
    /// The queue is the fleet's (PostgreSQL store, SPEC §13), not this station's.
    queue_fleet: bool,
    rig: RigHealth,
    programmed: u64,
    failed: u64,
    quarantined: u64,
    /// Pass times within the last hour, oldest first.
    passes: VecDeque<Instant>,
    failures: VecDeque<FailureView>,
    steps: BTreeMap<String, Histogram>,
    jobs: Histogram,
    delivery: DeliverySnapshot,
    /// Keys turned away untouched, by reason code (for /metrics).
    turned_away: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Inner {
    station: String,
    started: Instant,
    state: Mutex<BoardState>,
    paused: AtomicBool,
    draining: AtomicBool,
    changes: broadcast::Sender<()>,
    /// `[upstream]` health (SPEC §12), when the station pulls from a back end.
    upstream: std::sync::OnceLock<Arc<crate::upstream::UpstreamStats>>,
    /// The key custody's token pool (SPEC §14), when the keys are in a token.
    custody: std::sync::OnceLock<CustodySource>,
}

/// [`CustodyStats`] with a `Debug` that says only that it is there.
struct CustodySource(CustodyStats);

impl std::fmt::Debug for CustodySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustodySource")
    }
}

/// Reads the token pool's statistics when asked (`/metrics`); `None` once
/// the station is gone.
pub type CustodyStats = Arc<dyn Fn() -> Option<crate::jose::pkcs11::PoolSnapshot> + Send + Sync>;

/// The shared status board. Cheap to clone (one `Arc`); `Send + Sync`.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    inner: Arc<Inner>,
}

/// Pause / drain flags the operator sets on the page and the station reads.
/// Pause: start no new key, finish those in progress. Drain: finish the
/// keys in progress, claim no new job, then stop (`run` returns).
#[derive(Debug, Clone)]
pub struct Controls {
    inner: Arc<Inner>,
}

impl Controls {
    pub fn paused(&self) -> bool {
        self.inner.paused.load(Ordering::Relaxed)
    }
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }
    pub fn set_paused(&self, on: bool) {
        if self.inner.paused.swap(on, Ordering::Relaxed) != on {
            tracing::info!(
                "operator {} the station",
                if on { "paused" } else { "resumed" }
            );
            let _ = self.inner.changes.send(());
        }
    }
    pub fn set_draining(&self, on: bool) {
        if self.inner.draining.swap(on, Ordering::Relaxed) != on {
            tracing::info!(
                "operator {} draining",
                if on { "started" } else { "cancelled" }
            );
            let _ = self.inner.changes.send(());
        }
    }
}

fn clip(s: &str) -> String {
    // One line, bounded: the page is not a log viewer.
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > MAX_TEXT {
        let mut t: String = one_line.chars().take(MAX_TEXT - 1).collect();
        t.push('…');
        t
    } else {
        one_line
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl StatusBoard {
    /// A board for `slots` slots, all idle; rig absent until told.
    pub fn new(station: impl Into<String>, slots: usize) -> Self {
        let now = Instant::now();
        // Capacity only bounds how far a client may lag before it skips to
        // the latest snapshot; notifications carry no data.
        let (changes, _) = broadcast::channel(64);
        StatusBoard {
            inner: Arc::new(Inner {
                station: station.into(),
                started: now,
                state: Mutex::new(BoardState {
                    slots: (0..slots)
                        .map(|_| SlotEntry {
                            view: SlotView::default(),
                            since: now,
                        })
                        .collect(),
                    queue: BTreeMap::new(),
                    queue_fleet: false,
                    rig: RigHealth::Absent,
                    programmed: 0,
                    failed: 0,
                    quarantined: 0,
                    passes: VecDeque::new(),
                    failures: VecDeque::new(),
                    steps: BTreeMap::new(),
                    jobs: Histogram::default(),
                    delivery: DeliverySnapshot::default(),
                    turned_away: BTreeMap::new(),
                }),
                paused: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                changes,
                upstream: std::sync::OnceLock::new(),
                custody: std::sync::OnceLock::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BoardState> {
        // Plain data: a panicked writer leaves nothing half-invariant.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        // No receivers is fine: nobody is watching the page.
        let _ = self.inner.changes.send(());
    }

    pub fn station(&self) -> &str {
        &self.inner.station
    }

    pub fn slot_count(&self) -> usize {
        self.lock().slots.len()
    }

    /// Replaces a slot's view. Out-of-range slots are ignored (logged).
    pub fn slot_update(&self, slot: usize, mut view: SlotView) {
        view.last_error = view.last_error.as_deref().map(clip);
        view.instruction = view.instruction.as_deref().map(clip);
        view.step = view.step.as_deref().map(clip);
        {
            let mut st = self.lock();
            let Some(entry) = st.slots.get_mut(slot) else {
                tracing::warn!(slot, "status board: no such slot");
                return;
            };
            if entry.view == view {
                return;
            }
            if entry.view.state != view.state {
                entry.since = Instant::now();
            }
            entry.view = view;
        }
        self.changed();
    }

    /// The view last set for `slot`.
    pub fn slot(&self, slot: usize) -> Option<SlotView> {
        self.lock().slots.get(slot).map(|e| e.view.clone())
    }

    /// Counts a finished key and, for failures, lists it on the page.
    pub fn record_result(&self, r: ResultRecord) {
        {
            let mut st = self.lock();
            let now = Instant::now();
            match r.outcome {
                Outcome::Programmed => {
                    st.programmed += 1;
                    st.passes.push_back(now);
                }
                Outcome::Failed => st.failed += 1,
                Outcome::Quarantined => st.quarantined += 1,
            }
            while st
                .passes
                .front()
                .is_some_and(|t| now.duration_since(*t) > HOUR)
            {
                st.passes.pop_front();
            }
            st.jobs.observe(r.duration);
            if r.outcome != Outcome::Programmed {
                if st.failures.len() == MAX_FAILURES {
                    st.failures.pop_back();
                }
                st.failures.push_front(FailureView {
                    at_ms: unix_ms(SystemTime::now()),
                    slot: r.slot,
                    outcome: r.outcome,
                    serial: r.serial,
                    job: r.job,
                    step: r.step.as_deref().map(clip),
                    error: r.error.as_deref().map(clip),
                });
            }
        }
        self.changed();
    }

    /// Adds one observation of a recipe step's duration (for /metrics).
    pub fn record_step(&self, step: &str, took: Duration) {
        self.lock()
            .steps
            .entry(clip(step))
            .or_default()
            .observe(took);
        // Metrics only: the page does not show per-step histograms.
    }

    /// Says that the queue counts are those of the whole fleet (SPEC §13).
    pub fn set_queue_fleet(&self, fleet: bool) {
        self.lock().queue_fleet = fleet;
        self.changed();
    }

    /// Replaces the job counts by state (e.g. "queued", "in_progress", …).
    pub fn set_queue_counts<S: Into<String>>(&self, counts: impl IntoIterator<Item = (S, u64)>) {
        let new: BTreeMap<String, u64> = counts.into_iter().map(|(k, v)| (k.into(), v)).collect();
        {
            let mut st = self.lock();
            if st.queue == new {
                return;
            }
            st.queue = new;
        }
        self.changed();
    }

    /// Replaces the delivery state (SPEC §6): how many results wait for the
    /// sink, and those whose last attempt failed (shown oldest first, at most
    /// [`MAX_FAILURES`]; ids already escaped by the caller).
    pub fn set_delivery(&self, pending: u64, mut failing: Vec<DeliveryFailureView>) {
        failing.truncate(MAX_FAILURES);
        for f in &mut failing {
            f.error = clip(&f.error);
            f.shipment_id = clip(&f.shipment_id);
        }
        {
            let mut st = self.lock();
            if st.delivery.pending == pending && st.delivery.failing == failing {
                return;
            }
            st.delivery.pending = pending;
            st.delivery.failing = failing;
        }
        self.changed();
    }

    /// Counts one failed delivery attempt by its named reason (for `/metrics`).
    pub fn record_delivery_failure(&self, reason: &str) {
        *self
            .lock()
            .delivery
            .failures_total
            .entry(clip(reason))
            .or_default() += 1;
        self.changed();
    }

    pub fn set_rig_health(&self, h: RigHealth) {
        {
            let mut st = self.lock();
            if st.rig == h {
                return;
            }
            st.rig = h;
        }
        self.changed();
    }

    /// A hook for `SerialRigOptions::on_health` that keeps the board's rig
    /// health current: `on_health: Some(board.rig_health_hook())`.
    pub fn rig_health_hook(&self) -> crate::rig::serial::HealthHook {
        let board = self.clone();
        Arc::new(move |h: &RigHealth| board.set_rig_health(h.clone()))
    }

    pub fn rig_health(&self) -> RigHealth {
        self.lock().rig.clone()
    }

    /// Pause / drain flags (set from the page, read by the station).
    pub fn controls(&self) -> Controls {
        Controls {
            inner: Arc::clone(&self.inner),
        }
    }

    /// A receiver woken on every change (for SSE).
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.inner.changes.subscribe()
    }

    /// How many live feeds (SSE clients) are watching.
    pub fn watchers(&self) -> usize {
        self.inner.changes.receiver_count()
    }

    /// Shows the upstream back end's health (SPEC §12) from these counters.
    pub fn set_upstream(&self, stats: Arc<crate::upstream::UpstreamStats>) {
        // A weak link back: the board owns the counters, not the reverse.
        let board = Arc::downgrade(&self.inner);
        stats.on_change(move || {
            if let Some(inner) = board.upgrade() {
                let _ = inner.changes.send(());
            }
        });
        let _ = self.inner.upstream.set(stats);
        self.changed();
    }

    /// Exports the token pool's statistics (`/metrics`) from `read`.
    pub fn set_custody(&self, read: CustodyStats) {
        let _ = self.inner.custody.set(CustodySource(read));
    }

    /// The token pool's statistics, when the keys are in a token.
    pub fn custody(&self) -> Option<crate::jose::pkcs11::PoolSnapshot> {
        self.inner.custody.get().and_then(|read| (read.0)())
    }

    /// The upstream counters, when the station has a back end.
    pub fn upstream(&self) -> Option<crate::upstream::stats::UpstreamSnapshot> {
        self.inner.upstream.get().map(|s| s.snapshot())
    }

    /// Everything the page shows, at this instant.
    pub fn snapshot(&self) -> BoardSnapshot {
        let now = Instant::now();
        let st = self.lock();
        let slots = st
            .slots
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let v = &e.view;
                let from = v.started.unwrap_or(e.since);
                SlotSnapshot {
                    index: i,
                    state: v.state,
                    label: v.state.as_str().to_ascii_uppercase(),
                    serial: v.serial,
                    firmware: v.firmware.clone(),
                    job: v.job.clone(),
                    step: v.step.clone(),
                    elapsed_ms: now.saturating_duration_since(from).as_millis() as u64,
                    last_error: v.last_error.clone(),
                    instruction: v
                        .instruction
                        .clone()
                        .unwrap_or_else(|| v.state.default_instruction().to_owned()),
                }
            })
            .collect();
        let keys_last_hour = st
            .passes
            .iter()
            .filter(|t| now.duration_since(**t) <= HOUR)
            .count() as u64;
        let (rig_state, rig_text) = match &st.rig {
            RigHealth::Up(_) => ("up", st.rig.to_string()),
            RigHealth::Down { .. } => ("down", st.rig.to_string()),
            RigHealth::Absent => ("absent", st.rig.to_string()),
        };
        BoardSnapshot {
            station: self.inner.station.clone(),
            now_ms: unix_ms(SystemTime::now()),
            uptime_s: now.duration_since(self.inner.started).as_secs(),
            paused: self.inner.paused.load(Ordering::Relaxed),
            draining: self.inner.draining.load(Ordering::Relaxed),
            rig: RigSnapshot {
                state: rig_state,
                text: rig_text,
            },
            slots,
            queue: st.queue.clone(),
            queue_fleet: st.queue_fleet,
            totals: Totals {
                programmed: st.programmed,
                failed: st.failed,
                quarantined: st.quarantined,
            },
            keys_last_hour,
            failures: st.failures.iter().cloned().collect(),
            delivery: st.delivery.clone(),
            upstream: self.upstream().map(|u| UpstreamView {
                state: if u.healthy() { "up" } else { "down" },
                url: clip(&u.url),
                last_poll_ok_ms: u.last_poll_ok_ms.max(0) as u64,
                last_error: u.last_error.as_deref().map(clip),
                conflicts: u.conflicts,
            }),
        }
    }

    /// Counts a key turned away untouched (wrong product, …) under its reason
    /// code, for `/metrics` (`prereg_keys_turned_away_total{reason}`).
    pub fn record_turned_away(&self, reason: &str) {
        *self.lock().turned_away.entry(clip(reason)).or_default() += 1;
    }

    /// Keys turned away since start, by reason code.
    pub fn turned_away(&self) -> BTreeMap<String, u64> {
        self.lock().turned_away.clone()
    }

    /// Step and job duration histograms, for /metrics.
    pub(crate) fn histograms(&self) -> (BTreeMap<String, Histogram>, Histogram) {
        let st = self.lock();
        (st.steps.clone(), st.jobs.clone())
    }
}

/// The page's view of the board (JSON on `/api/board` and SSE).
#[derive(Debug, Clone, Serialize)]
pub struct BoardSnapshot {
    pub station: String,
    pub now_ms: u64,
    pub uptime_s: u64,
    pub paused: bool,
    pub draining: bool,
    pub rig: RigSnapshot,
    pub slots: Vec<SlotSnapshot>,
    pub queue: BTreeMap<String, u64>,
    /// `queue` counts the jobs of the whole fleet (shared PostgreSQL store).
    pub queue_fleet: bool,
    pub totals: Totals,
    pub keys_last_hour: u64,
    pub failures: Vec<FailureView>,
    pub delivery: DeliverySnapshot,
    /// `[upstream]` health (SPEC §12); absent without a back end.
    pub upstream: Option<UpstreamView>,
}

/// The upstream back end as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamView {
    /// `up` after a good poll with no error since, else `down`.
    pub state: &'static str,
    pub url: String,
    /// Unix ms of the last good poll; 0 = never.
    pub last_poll_ok_ms: u64,
    pub last_error: Option<String>,
    /// Results the back end holds differently (409): kept, never purged.
    pub conflicts: u64,
}

/// Results waiting for the sink (SPEC §6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliverySnapshot {
    /// Results stored and not yet acknowledged by the sink.
    pub pending: u64,
    /// Those whose last delivery failed, with the named reason.
    pub failing: Vec<DeliveryFailureView>,
    /// Failed delivery attempts since start, by named reason.
    pub failures_total: BTreeMap<String, u64>,
}

/// A result whose last delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryFailureView {
    /// Escaped for display (it comes from the store as untrusted text).
    pub shipment_id: String,
    /// Failed attempts in a row.
    pub attempts: u32,
    /// Named reason, e.g. `delivery.outbox_conflict`.
    pub reason: String,
    /// One line of detail.
    pub error: String,
    /// Unix milliseconds of the next attempt.
    pub next_attempt_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RigSnapshot {
    /// "up", "down" or "absent".
    pub state: &'static str,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlotSnapshot {
    pub index: usize,
    pub state: SlotState,
    pub label: String,
    pub serial: Option<u32>,
    pub firmware: Option<String>,
    pub job: Option<String>,
    pub step: Option<String>,
    pub elapsed_ms: u64,
    pub last_error: Option<String>,
    pub instruction: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Totals {
    pub programmed: u64,
    pub failed: u64,
    pub quarantined: u64,
}

/// A recent failure, newest first on the page.
#[derive(Debug, Clone, Serialize)]
pub struct FailureView {
    pub at_ms: u64,
    pub slot: usize,
    pub outcome: Outcome,
    pub serial: Option<u32>,
    pub job: Option<String>,
    pub step: Option<String>,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_health_change_notifies_the_page() {
        let b = StatusBoard::new("s", 1);
        let stats = Arc::new(crate::upstream::UpstreamStats::new("https://b/"));
        b.set_upstream(stats.clone());
        let mut rx = b.subscribe();
        stats.error("poll: cannot connect".into());
        assert!(rx.try_recv().is_ok(), "viewers are told");
        assert_eq!(b.snapshot().upstream.unwrap().state, "down");
        stats.poll_ok();
        assert!(rx.try_recv().is_ok());
        assert_eq!(b.snapshot().upstream.unwrap().state, "up");
    }

    #[test]
    fn updates_notify_and_snapshot() {
        let b = StatusBoard::new("line1", 2);
        let mut rx = b.subscribe();
        b.slot_update(
            1,
            SlotView {
                state: SlotState::Programming,
                serial: Some(12345678),
                job: Some("job-1".into()),
                step: Some("setPIN".into()),
                ..SlotView::default()
            },
        );
        assert!(rx.try_recv().is_ok());
        // Same view again: no notification.
        b.slot_update(1, b.slot(1).unwrap());
        assert!(rx.try_recv().is_err());
        b.slot_update(9, SlotView::default()); // ignored, no panic
        let s = b.snapshot();
        assert_eq!(s.slots[1].label, "PROGRAMMING");
        assert_eq!(s.slots[1].instruction, "Do not remove the key");
        assert_eq!(s.slots[0].state, SlotState::Idle);
    }

    #[test]
    fn results_counts_and_failures() {
        let b = StatusBoard::new("s", 1);
        for outcome in [
            Outcome::Programmed,
            Outcome::Programmed,
            Outcome::Failed,
            Outcome::Quarantined,
        ] {
            b.record_result(ResultRecord {
                slot: 0,
                outcome,
                serial: Some(1),
                job: Some("j".into()),
                step: Some("makeCredential".into()),
                error: Some("line1\nline2".into()),
                duration: Duration::from_millis(1500),
            });
        }
        let s = b.snapshot();
        assert_eq!(
            (s.totals.programmed, s.totals.failed, s.totals.quarantined),
            (2, 1, 1)
        );
        assert_eq!(s.keys_last_hour, 2);
        assert_eq!(s.failures.len(), 2);
        assert_eq!(s.failures[0].outcome, Outcome::Quarantined);
        assert_eq!(s.failures[0].error.as_deref(), Some("line1 line2"));
        let (_, jobs) = b.histograms();
        assert_eq!(jobs.count, 4);
        assert_eq!(jobs.counts[6], 4); // 1.5 s ≤ 2.5 s bucket
    }

    #[test]
    fn controls_flip_and_notify() {
        let b = StatusBoard::new("s", 1);
        let mut rx = b.subscribe();
        let c = b.controls();
        c.set_paused(true);
        assert!(b.controls().paused());
        assert!(rx.try_recv().is_ok());
        c.set_paused(true);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_fleet_queue_is_labelled_as_the_fleets() {
        let b = StatusBoard::new("s", 1);
        assert!(!b.snapshot().queue_fleet);
        b.set_queue_fleet(true);
        b.set_queue_counts([("queued", 60)]);
        let snap = b.snapshot();
        assert!(snap.queue_fleet);
        assert_eq!(snap.queue.get("queued"), Some(&60));
    }

    #[test]
    fn delivery_state_and_failure_counts_reach_the_snapshot() {
        let b = StatusBoard::new("s", 1);
        let mut rx = b.subscribe();
        let view = DeliveryFailureView {
            shipment_id: "S1".into(),
            attempts: 3,
            reason: "delivery.outbox_conflict".into(),
            error: "outbox/S1.json already\nholds a different result".into(),
            next_attempt_ms: 42,
        };
        b.set_delivery(2, vec![view.clone()]);
        assert!(rx.try_recv().is_ok());
        b.set_delivery(2, vec![view]);
        assert!(rx.try_recv().is_err(), "no change, no notification");
        b.record_delivery_failure("delivery.outbox_conflict");
        b.record_delivery_failure("delivery.outbox_conflict");
        let d = b.snapshot().delivery;
        assert_eq!(d.pending, 2);
        assert_eq!(
            d.failing[0].error,
            "outbox/S1.json already holds a different result"
        );
        assert_eq!(d.failures_total["delivery.outbox_conflict"], 2);
    }

    #[test]
    fn long_text_is_clipped() {
        let b = StatusBoard::new("s", 1);
        b.slot_update(
            0,
            SlotView {
                state: SlotState::Fail,
                last_error: Some("x".repeat(1000)),
                ..SlotView::default()
            },
        );
        assert_eq!(
            b.slot(0).unwrap().last_error.unwrap().chars().count(),
            MAX_TEXT
        );
    }
}
