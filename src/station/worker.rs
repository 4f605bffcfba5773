//! One slot worker: a blocking thread that owns its slot's key from insertion
//! to removal and runs the recipe on it.
//!
//! Why a thread and not a tokio task: every CTAP exchange is blocking I/O with
//! its own timeouts (hidapi is blocking), a slot does one thing at a time, and
//! a stuck key must never stall another slot or the web server. 32 slots are 32
//! mostly sleeping threads.

/// Pause before a job that met a key-custody fault is tried again.
const CUSTODY_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

use super::source::{KeyLink, KeySource};
use super::Shared;
use crate::ctap2::{Client, CtapDevice};
use crate::ctaphid::{HidChannel, Timeouts};
use crate::escape::Untrusted;
use crate::job::recipe::{self, Disposition, Identity, Programmed, SlotEvents, Step};
use crate::rig::RigHealth;
use crate::web::{Outcome, ResultRecord, SlotState, SlotView};
use crate::yubikey;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CTAP client over whatever link the slot's key is on.
type KeyClient = Client<Box<dyn CtapDevice>>;

/// How long the rig holds a key's touch sensor.
const TOUCH_PRESS: Duration = Duration::from_millis(300);

/// The audit event of a key turned away untouched (`jobs list`, `run --once`).
pub const TURNED_AWAY_EVENT: &str = "turned-away";
/// Reason code: jobs are queued, none for this key's product.
pub const TURNED_AWAY_WRONG_PRODUCT: &str = "key.wrong_product";
/// Reason code: no firmware profile knows this key.
pub const TURNED_AWAY_UNKNOWN_PRODUCT: &str = "key.unknown_product";

/// How often an empty or waiting slot looks again.
const POLL: Duration = Duration::from_millis(200);

/// A slot's loop; returns when the station shuts down (or, with `once`, when the queue is empty).
pub(super) fn run(index: usize, name: String, mut source: Box<dyn KeySource>, shared: Arc<Shared>) {
    let mut worker = Worker {
        index,
        name,
        shared,
        finished_serial: None,
        lamp: Cell::new(None),
        stuck: Stuck::Answering,
        views: Arc::default(),
        turned_away: None,
    };
    while !worker.shared.stop.load(Ordering::SeqCst) {
        if worker.shared.board.controls().paused() {
            std::thread::sleep(POLL);
            continue;
        }
        if !worker.one_key(source.as_mut()) {
            std::thread::sleep(POLL);
        }
    }
    worker.view(SlotView::new(SlotState::Idle));
}

/// Where a slot is with a key that does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stuck {
    /// Nothing tried (the last key answered, or the slot was empty).
    Answering,
    /// Power-cycled once; the next look identifies it again.
    Cycled,
    /// Still silent after the cycle: FAIL shown; nothing more until removed.
    GaveUp,
}

struct Worker {
    index: usize,
    name: String,
    shared: Arc<Shared>,
    /// The key this slot last finished with: ignored until it is taken out.
    finished_serial: Option<String>,
    /// The lamp last sent to the rig.
    lamp: Cell<Option<crate::rig::Lamp>>,
    /// Recovery of a key that does not answer; back to `Answering` when a
    /// key answers or the slot is empty, so each key gets one power cycle.
    stuck: Stuck,
    /// Counts board updates, so a late rig answer does not overwrite a newer view.
    views: Arc<AtomicU64>,
    /// The reason the key in the slot was last turned away: a key without a
    /// serial is looked at again every poll, and must not be recorded each time.
    turned_away: Option<String>,
}

impl Worker {
    /// Shows the slot on the status page and on its rig lamp (SPEC §9 `LED`,
    /// slots numbered from 0); the lamp is only sent when it changes.
    fn view(&self, view: SlotView) {
        self.views.fetch_add(1, Ordering::SeqCst);
        let lamp = view.state.lamp();
        if self.lamp.replace(Some(lamp)) != Some(lamp) {
            if let Err(e) = self.shared.rig.led(self.index as u8, lamp) {
                tracing::trace!(slot = %self.name, "lamp not set: {e}");
            }
        }
        self.shared.board.slot_update(self.index, view);
    }

    /// Handles whatever is in the slot now; `false` when there was nothing to do.
    fn one_key(&mut self, source: &mut dyn KeySource) -> bool {
        let Some(link) = source.connect() else {
            self.finished_serial = None;
            self.turned_away = None;
            self.stuck = Stuck::Answering;
            self.view(SlotView::new(SlotState::Idle));
            return false;
        };
        let Some((mut client, mut key)) = self.identify(link) else {
            return self.stuck_key(source);
        };
        self.stuck = Stuck::Answering;
        if self.finished_serial.as_deref() == Some(key.serial.as_str()) && key.serial != "unknown" {
            // Still the key we are done with: the operator has not taken it out yet.
            return false;
        }
        let started = Instant::now();
        let serial_num = key.device_info.serial;
        // A reset keeps the serial, so this holds for the key after a reset too.
        let key_serial = key.serial.clone();
        let done = |w: &mut Worker, source: &mut dyn KeySource| {
            w.finished_serial = Some(key_serial.clone());
            source.key_done();
        };
        let quarantined = key.serial != "unknown"
            && self
                .shared
                .store
                .is_quarantined(&key.serial)
                .unwrap_or(false);
        if quarantined {
            self.finish(
                serial_num,
                None,
                SlotState::Quarantine,
                "quarantined key: never ship it".into(),
                started,
            );
            done(self, source);
            return true;
        }
        if let Some(problem) = key.blank_problem() {
            // After the quarantine check: a reset never makes a quarantined key shippable.
            match self.reset_non_blank(source, &key, &problem) {
                Ok(fresh) => (client, key) = fresh,
                Err(reason) => {
                    self.finish(serial_num, None, SlotState::Fail, reason, started);
                    done(self, source);
                    return true;
                }
            }
        }
        let products = self.shared.policy.products_for(&key);
        if products.is_empty() {
            self.turn_away(
                &key,
                TURNED_AWAY_UNKNOWN_PRODUCT,
                "Unknown product: no firmware profile allows this key".into(),
                started,
            );
            done(self, source);
            return true;
        }
        // Jobs refused for their own faults leave the (untouched) key for the next job.
        loop {
            if self.shared.board.controls().draining() || self.shared.stop.load(Ordering::SeqCst) {
                self.view(SlotView {
                    instruction: Some("Draining: no new jobs".into()),
                    ..SlotView::new(SlotState::Waiting)
                });
                return false;
            }
            let leased =
                match self
                    .shared
                    .store
                    .lease(&self.name, &products, self.shared.config.lease)
                {
                    Ok(Some(l)) => l,
                    Ok(None) => {
                        if let Some(why) = self.wrong_product(&products) {
                            self.turn_away(&key, TURNED_AWAY_WRONG_PRODUCT, why, started);
                            done(self, source);
                            return true;
                        }
                        self.view(SlotView {
                            serial: serial_num,
                            firmware: Some(key.firmware.clone()),
                            ..SlotView::new(SlotState::Waiting)
                        });
                        return false;
                    }
                    Err(e) => {
                        tracing::error!(slot = %self.name, "lease failed: {e}");
                        return false;
                    }
                };
            let job = leased.job;
            let id = job.shipment_id.to_string();
            tracing::info!(slot = %self.name, serial = %Untrusted(&key.serial), job = %id, "programming");
            let events = Events {
                worker: self,
                source: Cell::new(Some(&mut *source)),
                serial: serial_num,
                firmware: key.firmware.clone(),
                job: id.clone(),
                started,
                current: std::cell::RefCell::new(None),
            };
            let customization = self.shared.config.customization(&job.customization_id);
            let st = recipe::Station {
                slot: &self.name,
                keys: &self.shared.keys,
                roots: &self.shared.roots,
                store: &self.shared.store,
                policy: self.shared.policy.as_ref(),
                customization,
                now: crate::store::now_secs(),
            };
            let outcome = recipe::program(&st, &mut client, &key, &job, &events);
            drop(events);
            let store = &self.shared.store;
            let max = self.shared.config.max_attempts;
            match outcome {
                Ok(p) => {
                    self.passed(&p, serial_num, started);
                    self.shared.kick_delivery();
                    done(self, source);
                    return true;
                }
                Err(Disposition::RefuseJob { reason }) => {
                    tracing::warn!(slot = %self.name, job = %id, "job refused: {}", Untrusted(&reason));
                    let _ = store.refuse(&id, &reason);
                    self.shared.board.record_result(ResultRecord {
                        slot: self.index,
                        outcome: Outcome::Failed,
                        serial: None,
                        job: Some(id.clone()),
                        step: Some("decrypt".into()),
                        error: Some(format!("job refused: {reason}")),
                        duration: started.elapsed(),
                    });
                    continue;
                }
                Err(Disposition::RejectKey { reason }) => {
                    tracing::warn!(slot = %self.name, serial = %Untrusted(&key.serial), job = %id, "key rejected: {}", Untrusted(&reason));
                    let _ = store.release(
                        &id,
                        &format!("key.rejected: key {} rejected: {reason}", key.serial),
                        false,
                        max,
                    );
                    self.finish(serial_num, Some(id), SlotState::Fail, reason, started);
                    done(self, source);
                    return true;
                }
                Err(Disposition::KeyGone { reason }) => {
                    tracing::warn!(slot = %self.name, job = %id, "key gone before programming: {}", Untrusted(&reason));
                    let _ = store.release(
                        &id,
                        &format!("key.removed: key removed before programming: {reason}"),
                        false,
                        max,
                    );
                    self.view(SlotView::new(SlotState::Idle));
                    return true;
                }
                Err(Disposition::StationFault { reason }) => {
                    // The key is blank and untouched: the job goes back
                    // without counting an attempt and the same key stays
                    // for the next try, after a pause so a token that is
                    // down is not hammered (SPEC §14).
                    tracing::error!(slot = %self.name, job = %id, "station key custody failed, job requeued: {}", Untrusted(&reason));
                    let _ = store.release(
                        &id,
                        &format!("station key custody failed: {reason}"),
                        false,
                        max,
                    );
                    self.shared.board.record_result(ResultRecord {
                        slot: self.index,
                        outcome: Outcome::Failed,
                        serial: None,
                        job: Some(id.clone()),
                        step: Some("decrypt".into()),
                        error: Some(format!("station key custody failed: {reason}")),
                        duration: started.elapsed(),
                    });
                    std::thread::sleep(CUSTODY_RETRY_PAUSE);
                    continue;
                }
                Err(Disposition::Quarantine { step, reason }) => {
                    tracing::error!(slot = %self.name, serial = %Untrusted(&key.serial), job = %id, %step, "quarantined: {}", Untrusted(&reason));
                    // A key without a serial is recorded under the slot and job; the
                    // operator bins it by its QUARANTINE lamp.
                    let record = if key.serial == "unknown" {
                        format!("unknown@{}/{}", self.name, id)
                    } else {
                        key.serial.clone()
                    };
                    let _ = store.quarantine(
                        &self.name,
                        &record,
                        Some(&id),
                        &step.to_string(),
                        &reason,
                    );
                    let _ = store.release(
                        &id,
                        &format!("key.quarantined: key {} quarantined at {step}", key.serial),
                        true,
                        max,
                    );
                    self.finish(
                        serial_num,
                        Some(id),
                        SlotState::Quarantine,
                        format!("{step}: {reason}"),
                        started,
                    );
                    done(self, source);
                    return true;
                }
            }
        }
    }

    /// Asks for a touch (KEEPALIVE UPNEEDED): through the rig when it is up,
    /// else from the operator (SPEC §9). Called from inside the CTAPHID
    /// receive loop, so the rig exchange runs on a short-lived thread: a slow
    /// or silent rig must not starve the key's channel of reads (it would
    /// time out and a key with a PIN would be quarantined). If the rig
    /// cannot touch, the slot shows `waiting` with an instruction.
    fn ask_for_touch(&self, waiting: SlotView) {
        let rig = &self.shared.rig;
        let operator = |why: String| SlotView {
            instruction: Some(format!("Touch the key now{why}")),
            ..waiting.clone()
        };
        let now = match rig.health() {
            RigHealth::Up(_) => None,
            // SPEC §9: a rig that is down leaves touch to the operator.
            RigHealth::Down { reason } => Some(operator(format!(": the rig is down ({reason})"))),
            RigHealth::Absent => Some(operator(String::new())),
        };
        if let Some(view) = now {
            // Board now; the lamp from a helper thread, since even a failing
            // rig call can wait behind other slots' exchanges.
            self.views.fetch_add(1, Ordering::SeqCst);
            self.lamp.set(None);
            let lamp = view.state.lamp();
            self.shared.board.slot_update(self.index, view);
            let (shared, index) = (self.shared.clone(), self.index);
            let _ = std::thread::Builder::new()
                .name(format!("lamp-{}", self.name))
                .spawn(move || {
                    let _ = shared.rig.led(index as u8, lamp);
                });
            return;
        }
        let shared = self.shared.clone();
        let views = self.views.clone();
        let seen = views.load(Ordering::SeqCst);
        let (index, name) = (self.index, self.name.clone());
        let failed = waiting.clone();
        // The helper may light the lamp itself: send the next one regardless.
        self.lamp.set(None);
        let spawned = std::thread::Builder::new()
            .name(format!("touch-{name}"))
            .spawn(move || {
                let Err(e) = shared.rig.touch(index as u8, TOUCH_PRESS) else {
                    return;
                };
                tracing::warn!(slot = %name, "rig did not touch the key: {e}");
                if views.load(Ordering::SeqCst) != seen {
                    return; // the slot moved on meanwhile
                }
                let _ = shared.rig.led(index as u8, failed.state.lamp());
                shared.board.slot_update(
                    index,
                    SlotView {
                        instruction: Some(format!("Touch the key now: the rig could not ({e})")),
                        ..failed
                    },
                );
            });
        if let Err(e) = spawned {
            self.view(operator(format!(": cannot start the rig's touch ({e})")));
        }
    }

    /// Whether the rig can switch this slot's power now.
    fn can_power(&self) -> bool {
        let rig = &self.shared.rig;
        rig.health().is_up() && rig.capabilities().power
    }

    /// A link opened but the key did not answer INIT/getInfo (or stopped
    /// answering and its job went back to the queue): power-cycle it once
    /// through the rig, then let the next look identify it again. Without
    /// rig power, or after one try, the slot asks the operator.
    fn stuck_key(&mut self, source: &mut dyn KeySource) -> bool {
        self.finished_serial = None;
        match self.stuck {
            Stuck::Cycled => {
                tracing::warn!(slot = %self.name, "key still does not answer after a power cycle");
                self.finish(
                    None,
                    None,
                    SlotState::Fail,
                    "key does not answer, even after a power cycle".into(),
                    Instant::now(),
                );
                // No second cycle for this key: wait until it is taken out.
                self.stuck = Stuck::GaveUp;
                source.key_done();
                return true;
            }
            Stuck::GaveUp => return false,
            Stuck::Answering if !self.can_power() => {
                self.view(SlotView::new(SlotState::Idle));
                return false;
            }
            Stuck::Answering => {}
        }
        let slot = self.index as u8;
        // SPEC §9 `PRESENT?`: only a key the rig senses is worth a power cycle.
        if let Ok(mask) = self.shared.rig.present() {
            if !mask.contains(slot) {
                self.view(SlotView::new(SlotState::Idle));
                return false;
            }
        }
        self.stuck = Stuck::Cycled;
        tracing::warn!(slot = %self.name, "key does not answer: power-cycling the slot");
        self.view(SlotView {
            step: Some("power-cycling a key that does not answer".into()),
            instruction: Some("Wait: the rig is power-cycling this key".into()),
            ..SlotView::new(SlotState::Programming)
        });
        let detail = match self
            .shared
            .rig
            .power_cycle(slot, super::power::POWER_OFF_FOR)
        {
            Ok(()) => "key did not answer: slot power-cycled".to_string(),
            Err(e) => {
                tracing::warn!(slot = %self.name, "power cycle failed: {e}");
                format!("key did not answer; power cycle failed: {e}")
            }
        };
        let _ = self.shared.store.record_key_event(
            super::power::POWER_CYCLE_EVENT,
            &self.name,
            None,
            None,
            &detail,
        );
        true
    }

    /// A non-blank key (SPEC §7 step 2): rejected, unless `[station]
    /// reset_non_blank` is on and the rig can power the slot, in which case
    /// it is power-cycled, reset within the 10-s window (touch through the
    /// rig, or the operator), and identified again. Keys this station
    /// programmed are never reset. `Err` is the reason shown and recorded.
    fn reset_non_blank(
        &mut self,
        source: &mut dyn KeySource,
        key: &Identity,
        problem: &str,
    ) -> Result<(KeyClient, Identity), String> {
        if !self.shared.config.reset_non_blank {
            return Err(format!(
                "{problem}; set [station] reset_non_blank = true to reset such keys on a rig with port power"
            ));
        }
        if !self.can_power() {
            return Err(format!(
                "{problem}; reset_non_blank is on but the rig cannot switch this slot's power now ({})",
                self.shared.rig.health()
            ));
        }
        if key.serial == "unknown" {
            return Err(format!(
                "{problem}; not reset: the key has no readable serial"
            ));
        }
        // A key this station stored a result for is someone's: never reset it.
        match self.shared.store.ever_programmed(&key.serial) {
            Ok(false) => {}
            Ok(true) => {
                return Err(format!(
                    "{problem}; not reset: this station programmed key {} (remove it)",
                    key.serial
                ))
            }
            Err(e) => return Err(format!("{problem}; not reset: store error {e}")),
        }
        let serial = key.serial.as_str();
        let slot = self.index as u8;
        tracing::warn!(slot = %self.name, %serial, "{problem}: power-cycling and resetting (reset_non_blank)");
        let view = |instruction: Option<String>| SlotView {
            serial: key.device_info.serial,
            firmware: Some(key.firmware.clone()),
            step: Some("power-cycle and reset (not blank)".into()),
            instruction,
            ..SlotView::new(SlotState::Programming)
        };
        self.view(view(None));
        self.shared
            .rig
            .power_cycle(slot, super::power::POWER_OFF_FOR)
            .map_err(|e| format!("{problem}; power cycle for reset failed: {e}"))?;
        // The reset window (10 s from power-up) is running from here.
        let link = (0..25)
            .find_map(|_| {
                source.connect().or_else(|| {
                    std::thread::sleep(POLL);
                    None
                })
            })
            .ok_or_else(|| format!("{problem}; the key did not come back after power-up"))?;
        let (mut client, again) = self
            .identify(link)
            .ok_or_else(|| format!("{problem}; the key did not answer after power-up"))?;
        if again.serial != key.serial {
            return Err(format!(
                "{problem}; a different key ({}) answered after power-up: not reset",
                again.serial
            ));
        }
        let mut asked = false;
        let result = client.reset(&mut |status| {
            if status == crate::ctaphid::KeepaliveStatus::UPNEEDED && !asked {
                asked = true;
                self.ask_for_touch(SlotView {
                    state: SlotState::Touch,
                    step: Some("reset: waiting for touch".into()),
                    ..view(None)
                });
            }
        });
        let outcome = match &result {
            Ok(()) => "reset after power-up".to_string(),
            Err(e) => format!("reset failed: {e}"),
        };
        let _ = self.shared.store.record_key_event(
            super::power::RESET_EVENT,
            &self.name,
            Some(serial),
            Some(&key.firmware),
            &format!("{problem}; {outcome}"),
        );
        if let Err(e) = result {
            return Err(format!(
                "{problem}; reset within the power-up window failed: {e}"
            ));
        }
        tracing::info!(slot = %self.name, %serial, "key reset (reset_non_blank)");
        // Step 2 again: getInfo after the reset must show a blank key.
        let fresh = recipe::identify(&mut client, Some(again.device_info.clone()))
            .map_err(|d| format!("{problem}; the key did not answer after reset: {d}"))?;
        match fresh.blank_problem() {
            None => Ok((client, fresh)),
            Some(still) => Err(format!("{problem}; still not blank after reset: {still}")),
        }
    }

    /// INIT (HID links), device info, getInfo; `None` when no key answers.
    fn identify(&self, link: KeyLink) -> Option<(KeyClient, Identity)> {
        let (device, device_info): (Box<dyn CtapDevice>, _) = match link {
            KeyLink::Hid(transport) => {
                let timeouts = Timeouts {
                    transaction: self.shared.config.touch_timeout + Duration::from_secs(10),
                    ..Timeouts::default()
                };
                let mut channel = HidChannel::open(transport, timeouts).ok()?;
                let device_info = yubikey::read_device_info(&mut channel).ok();
                (Box::new(channel), device_info)
            }
            KeyLink::Ctap {
                device,
                device_info,
            } => (device, device_info),
        };
        let mut client = Client::new(device);
        match recipe::identify(&mut client, device_info) {
            Ok(key) => Some((client, key)),
            Err(d) => {
                tracing::debug!(slot = %self.name, "identify: {}", Untrusted(&d.to_string()));
                None
            }
        }
    }

    /// Why no waiting job fits a key whose products are `products`: `None`
    /// while the queue is empty (more jobs may come) or a queued or leased job
    /// is for one of them (a lease may come back); otherwise the reason, naming
    /// what the jobs want and what the key is.
    fn wrong_product(&self, products: &[u32]) -> Option<String> {
        let waiting = self.shared.store.waiting_products().ok()?;
        if waiting.is_empty() || waiting.iter().any(|p| products.contains(p)) {
            return None;
        }
        let name = |id: &u32| {
            crate::profile::product(*id).map_or_else(
                || format!("product {id}"),
                |p| format!("{} (product {id})", p.name),
            )
        };
        let want: Vec<String> = waiting.iter().map(name).collect();
        let is: Vec<String> = products.iter().map(name).collect();
        Some(format!(
            "Wrong product: the queued jobs need {}; this key is {}",
            want.join(" or "),
            is.join(" / ")
        ))
    }

    /// Turns a key away untouched (SPEC §7 step 3): REMOVE with the reason on
    /// the tile and lamp, a warning in the log, a `turned-away` audit event
    /// (`jobs list` and `run --once` show it) and a count by reason code for
    /// `/metrics`.
    fn turn_away(&mut self, key: &Identity, code: &str, why: String, started: Instant) {
        let detail = format!("{code}: {why}");
        if self.turned_away.as_deref() == Some(detail.as_str()) {
            return; // the same key, still in the slot, already recorded
        }
        self.turned_away = Some(detail.clone());
        tracing::warn!(slot = %self.name, serial = %Untrusted(&key.serial), reason = code, "key turned away: {why}");
        let _ = self.shared.store.record_key_event(
            TURNED_AWAY_EVENT,
            &self.name,
            Some(&key.serial),
            Some(&key.firmware),
            &detail,
        );
        self.shared.board.record_turned_away(code);
        self.view(SlotView {
            serial: key.device_info.serial,
            firmware: Some(key.firmware.clone()),
            last_error: Some(why.clone()),
            instruction: Some(format!("Remove the key. {why}")),
            started: Some(started),
            ..SlotView::new(SlotState::Remove)
        });
        self.shared.board.record_result(ResultRecord {
            slot: self.index,
            outcome: Outcome::Failed,
            serial: key.device_info.serial,
            job: None,
            step: Some("match".into()),
            error: Some(why),
            duration: started.elapsed(),
        });
    }

    fn passed(&self, p: &Programmed, serial: Option<u32>, started: Instant) {
        tracing::info!(slot = %self.name, serial = %p.serial, job = %p.shipment_id, credentials = p.credentials, "PASS");
        self.view(SlotView {
            serial,
            firmware: Some(p.firmware.clone()),
            job: Some(p.shipment_id.clone()),
            step: Some(format!("{} credential(s) verified", p.credentials)),
            started: Some(started),
            ..SlotView::new(SlotState::Pass)
        });
        self.shared.board.record_result(ResultRecord {
            slot: self.index,
            outcome: Outcome::Programmed,
            serial,
            job: Some(p.shipment_id.clone()),
            step: None,
            error: None,
            duration: started.elapsed(),
        });
        self.shared
            .programmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p.clone());
    }

    fn finish(
        &self,
        serial: Option<u32>,
        job: Option<String>,
        state: SlotState,
        reason: String,
        started: Instant,
    ) {
        self.view(SlotView {
            serial,
            job: job.clone(),
            last_error: Some(reason.clone()),
            started: Some(started),
            ..SlotView::new(state)
        });
        self.shared.board.record_result(ResultRecord {
            slot: self.index,
            outcome: if state == SlotState::Quarantine {
                Outcome::Quarantined
            } else {
                Outcome::Failed
            },
            serial,
            job,
            step: None,
            error: Some(reason),
            duration: started.elapsed(),
        });
    }
}

/// The recipe's events, shown on the board; touch goes to the simulator's
/// actuator, the rig, or the operator, in that order.
struct Events<'a> {
    worker: &'a Worker,
    source: Cell<Option<&'a mut dyn KeySource>>,
    serial: Option<u32>,
    firmware: String,
    job: String,
    started: Instant,
    /// The step under way and when it began, for `prereg_step_duration_seconds`.
    current: std::cell::RefCell<Option<(String, Instant)>>,
}

impl Events<'_> {
    /// Observes the step under way (if any) on the board's histogram. The
    /// label drops a credential's index (`makeCredential#2` → `makeCredential`)
    /// so the metric has one series per kind of step.
    fn end_step(&self) {
        if let Some((step, began)) = self.current.borrow_mut().take() {
            let label = step.split('#').next().unwrap_or(&step);
            self.worker.shared.board.record_step(label, began.elapsed());
        }
    }

    fn show(&self, state: SlotState, step: String, instruction: Option<String>) {
        self.worker.view(SlotView {
            serial: self.serial,
            firmware: Some(self.firmware.clone()),
            job: Some(self.job.clone()),
            step: Some(step),
            started: Some(self.started),
            instruction,
            ..SlotView::new(state)
        });
    }
}

impl SlotEvents for Events<'_> {
    fn step(&self, step: Step) {
        self.end_step();
        let name = step.to_string();
        *self.current.borrow_mut() = Some((name.clone(), Instant::now()));
        self.show(SlotState::Programming, name, None);
    }

    fn touch_needed(&self) {
        let source = self.source.take();
        let touched = match source {
            Some(s) => {
                let t = s.touch();
                self.source.set(Some(s));
                t
            }
            None => false,
        };
        if touched {
            return;
        }
        self.worker.ask_for_touch(SlotView {
            serial: self.serial,
            firmware: Some(self.firmware.clone()),
            job: Some(self.job.clone()),
            step: Some("waiting for touch".into()),
            started: Some(self.started),
            ..SlotView::new(SlotState::Touch)
        });
    }
}

impl Drop for Events<'_> {
    /// The recipe's last step ends when it returns.
    fn drop(&mut self) {
        self.end_step();
    }
}
