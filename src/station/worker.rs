//! One slot worker: a blocking thread that owns its slot's key from insertion
//! to removal and runs the recipe on it.
//!
//! Why a thread and not a tokio task: every CTAP exchange is blocking I/O with
//! its own timeouts (hidapi is blocking), a slot does one thing at a time, and
//! a stuck key must never stall another slot or the web server. 32 slots are 32
//! mostly sleeping threads.

use super::source::{KeyLink, KeySource};
use super::Shared;
use crate::ctap2::{Client, CtapDevice};
use crate::ctaphid::{HidChannel, Timeouts};
use crate::job::recipe::{self, Disposition, Identity, Programmed, SlotEvents, Step};
use crate::rig::RigHealth;
use crate::web::{Outcome, ResultRecord, SlotState, SlotView};
use crate::yubikey;
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CTAP client over whatever link the slot's key is on.
type KeyClient = Client<Box<dyn CtapDevice>>;

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

struct Worker {
    index: usize,
    name: String,
    shared: Arc<Shared>,
    /// The key this slot last finished with: ignored until it is taken out.
    finished_serial: Option<String>,
    /// The lamp last sent to the rig.
    lamp: Cell<Option<crate::rig::Lamp>>,
}

impl Worker {
    /// Shows the slot on the status page and on its rig lamp (SPEC §9 `LED`,
    /// slots numbered from 0); the lamp is only sent when it changes.
    fn view(&self, view: SlotView) {
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
            self.view(SlotView::new(SlotState::Idle));
            return false;
        };
        let Some((mut client, key)) = self.identify(link) else {
            self.finished_serial = None;
            self.view(SlotView::new(SlotState::Idle));
            return false;
        };
        if self.finished_serial.as_deref() == Some(key.serial.as_str()) && key.serial != "unknown" {
            // Still the key we are done with: the operator has not taken it out yet.
            return false;
        }
        let started = Instant::now();
        let serial_num = key.device_info.serial;
        let done = |w: &mut Worker, source: &mut dyn KeySource| {
            w.finished_serial = Some(key.serial.clone());
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
            self.finish(serial_num, None, SlotState::Fail, problem, started);
            done(self, source);
            return true;
        }
        let products = self.shared.policy.products_for(&key);
        if products.is_empty() {
            self.finish(
                serial_num,
                None,
                SlotState::Remove,
                "no configured product matches this key".into(),
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
            let id = job.shipment_id.clone();
            tracing::info!(slot = %self.name, serial = %key.serial, job = %id, "programming");
            let events = Events {
                worker: self,
                source: Cell::new(Some(&mut *source)),
                serial: serial_num,
                firmware: key.firmware.clone(),
                job: id.clone(),
                started,
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
                    tracing::warn!(slot = %self.name, job = %id, "job refused: {reason}");
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
                    tracing::warn!(slot = %self.name, serial = %key.serial, job = %id, "key rejected: {reason}");
                    let _ = store.release(
                        &id,
                        &format!("key {} rejected: {reason}", key.serial),
                        false,
                        max,
                    );
                    self.finish(serial_num, Some(id), SlotState::Fail, reason, started);
                    done(self, source);
                    return true;
                }
                Err(Disposition::KeyGone { reason }) => {
                    tracing::warn!(slot = %self.name, job = %id, "key gone before programming: {reason}");
                    let _ = store.release(
                        &id,
                        &format!("key removed before programming: {reason}"),
                        false,
                        max,
                    );
                    self.view(SlotView::new(SlotState::Idle));
                    return true;
                }
                Err(Disposition::Quarantine { step, reason }) => {
                    tracing::error!(slot = %self.name, serial = %key.serial, job = %id, %step, "quarantined: {reason}");
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
                        &format!("key {} quarantined at {step}", key.serial),
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
                tracing::debug!(slot = %self.name, "identify: {d}");
                None
            }
        }
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
}

impl Events<'_> {
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
        self.show(SlotState::Programming, step.to_string(), None);
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
        let rig = &self.worker.shared.rig;
        let slot = self.worker.index as u8;
        let instruction = match rig.health() {
            RigHealth::Up(_) => match rig.touch(slot, Duration::from_millis(300)) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(slot = %self.worker.name, "rig did not touch the key: {e}");
                    format!("Touch the key now: the rig could not ({e})")
                }
            },
            // SPEC §9: a rig that is down leaves touch to the operator.
            RigHealth::Down { reason } => {
                format!("Touch the key now: the rig is down ({reason})")
            }
            RigHealth::Absent => "Touch the key now".into(),
        };
        self.show(
            SlotState::Touch,
            "waiting for touch".into(),
            Some(instruction),
        );
    }
}
