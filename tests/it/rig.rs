//! Integration tests: rig (serial driver over a real pseudo-terminal against
//! the simulated rig, fault handling) and the operator web (status page,
//! SSE, metrics, token).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prereg_station::rig::serial::{Link, SerialRig, SerialRigOptions, DEFAULT_BAUD};
use prereg_station::rig::sim::{SimRig, SimRigFault, SimRigOptions, SimRigSlots};
use prereg_station::rig::{CodecError, ErrCode, Lamp, Rig, RigError, RigHealth, SlotMask};

/// Slots standing in for simulated keys: records what the rig did to them.
#[derive(Default)]
struct Keys {
    log: Mutex<Vec<String>>,
    present: Mutex<SlotMask>,
    /// A slot whose power relay fails (the rig answers `ERR 5`).
    broken_relay: Mutex<Option<u8>>,
}

impl SimRigSlots for Keys {
    fn touch(&self, slot: u8, press: Duration) -> Result<(), String> {
        self.log
            .lock()
            .unwrap()
            .push(format!("touch {slot} {}ms", press.as_millis()));
        Ok(())
    }
    fn power(&self, slot: u8, on: bool) -> Result<(), String> {
        if *self.broken_relay.lock().unwrap() == Some(slot) {
            return Err("relay stuck".into());
        }
        let mut p = self.present.lock().unwrap();
        *p = if on {
            p.with(slot)
        } else {
            SlotMask(p.0 & !(1 << slot))
        };
        self.log.lock().unwrap().push(format!("power {slot} {on}"));
        Ok(())
    }
    fn present(&self, slot: u8) -> bool {
        self.present.lock().unwrap().contains(slot)
    }
}

fn fast_opts() -> SerialRigOptions {
    SerialRigOptions {
        request_timeout: Duration::from_millis(300),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        probe_interval: Some(Duration::from_millis(200)),
        on_health: None,
    }
}

fn sim_rig(dir: &tempfile::TempDir, slots: u8) -> (Arc<Keys>, SimRig) {
    let keys = Arc::new(Keys::default());
    let mut opts = SimRigOptions::new(slots);
    opts.name = "test-rig".into();
    let rig = SimRig::spawn(dir.path().join("rig"), keys.clone(), opts).unwrap();
    (keys, rig)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serial_driver_round_trips_over_a_pty() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, sim) = sim_rig(&dir, 4);
    let seen: Arc<Mutex<Vec<RigHealth>>> = Arc::default();
    let mut opts = fast_opts();
    let s = seen.clone();
    opts.on_health = Some(Arc::new(move |h: &RigHealth| {
        s.lock().unwrap().push(h.clone())
    }));
    let rig = SerialRig::open(sim.path(), DEFAULT_BAUD, opts);

    let info = rig.info().expect("connected at open");
    assert_eq!((info.name.as_str(), info.slots), ("test-rig", 4));
    assert!(info.caps.touch && info.caps.power && info.caps.led);
    assert!(rig.health().is_up());
    assert!(seen.lock().unwrap().last().unwrap().is_up());

    rig.touch(2, Duration::from_millis(30)).unwrap();
    rig.power(1, true).unwrap();
    rig.power(3, true).unwrap();
    assert_eq!(rig.present().unwrap(), SlotMask(0b1010));
    rig.power_cycle(3, Duration::from_millis(5)).unwrap();
    rig.led(0, Lamp::Pass).unwrap();
    rig.led(3, Lamp::Attn).unwrap();
    assert_eq!(sim.lamp(0), Lamp::Pass);
    assert_eq!(sim.lamp(3), Lamp::Attn);
    assert_eq!(
        *keys.log.lock().unwrap(),
        [
            "touch 2 30ms",
            "power 1 true",
            "power 3 true",
            "power 3 false",
            "power 3 true"
        ]
    );
    // Out-of-range slots are refused before the wire; bad durations too.
    assert_eq!(
        rig.led(4, Lamp::Off),
        Err(RigError::NoSuchSlot { slot: 4, slots: 4 })
    );
    assert!(matches!(
        rig.touch(0, Duration::ZERO),
        Err(RigError::Invalid(_))
    ));
}

#[test]
fn rig_err_reply_is_a_typed_refusal_and_capabilities_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(Keys::default());
    *keys.broken_relay.lock().unwrap() = Some(1);
    let mut o = SimRigOptions::new(2);
    o.caps.touch = false;
    let sim = SimRig::spawn(dir.path().join("rig"), keys, o).unwrap();
    let rig = SerialRig::open(sim.path(), DEFAULT_BAUD, fast_opts());
    // The driver knows from HELLO there is no actuator.
    assert_eq!(
        rig.touch(0, Duration::from_millis(10)),
        Err(RigError::NotSupported("touch keys"))
    );
    match rig.power(1, false) {
        Err(RigError::Refused { code, text, .. }) => {
            assert_eq!(code, ErrCode::HARDWARE);
            assert_eq!(text, "relay stuck");
        }
        other => panic!("{other:?}"),
    }
    // A refusal is an answer: the rig stays up.
    assert!(rig.health().is_up());
    rig.power(0, false).unwrap();
}

#[test]
fn garbage_and_overlong_replies_give_typed_errors_then_recover() {
    let dir = tempfile::tempdir().unwrap();
    let (_keys, sim) = sim_rig(&dir, 2);
    let mut opts = fast_opts();
    opts.probe_interval = None;
    let rig = SerialRig::open(sim.path(), DEFAULT_BAUD, opts);
    assert!(rig.health().is_up());

    sim.set_fault(SimRigFault::Garbage);
    let t = Instant::now();
    let e = rig.led(0, Lamp::Busy).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(
            e,
            RigError::Protocol {
                source: CodecError::Garbage,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!rig.health().is_up(), "garbage marks the rig down");

    sim.set_fault(SimRigFault::Overlong);
    let e = rig.present().unwrap_err();
    assert!(
        matches!(
            e,
            RigError::Protocol {
                source: CodecError::TooLong,
                ..
            }
        ),
        "{e:?}"
    );

    sim.set_fault(SimRigFault::None);
    // Resync (HELLO first) then the request itself.
    rig.led(0, Lamp::Busy).unwrap();
    assert!(rig.health().is_up());
}

#[test]
fn silent_rig_times_out_within_bound_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (_keys, sim) = sim_rig(&dir, 2);
    let rig = SerialRig::open(sim.path(), DEFAULT_BAUD, fast_opts());
    sim.set_fault(SimRigFault::Silent);
    let t = Instant::now();
    let e = rig.touch(1, Duration::from_millis(50)).unwrap_err();
    let took = t.elapsed();
    assert!(matches!(e, RigError::Timeout { .. }), "{e:?}");
    // Bounded: deadline 300 ms + the press, plus waiting at most one keeper
    // probe (300 ms) for the lock; far below 3 s.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(matches!(rig.health(), RigHealth::Down { .. }));
    let e = rig.present().unwrap_err();
    assert!(matches!(e, RigError::Timeout { .. }), "{e:?}");

    sim.set_fault(SimRigFault::None);
    // The keeper's resync brings it back without any request.
    wait_for("rig up again", Duration::from_secs(5), || {
        rig.health().is_up()
    });
    rig.present().unwrap();
}

#[test]
fn vanished_rig_is_down_fast_and_reconnects_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_keys, sim) = sim_rig(&dir, 3);
    let rig = SerialRig::open(sim.path(), DEFAULT_BAUD, fast_opts());
    assert!(rig.health().is_up());

    sim.disappear();
    wait_for("rig down", Duration::from_secs(3), || !rig.health().is_up());
    let t = Instant::now();
    let e = rig.touch(0, Duration::from_millis(100)).unwrap_err();
    assert!(matches!(e, RigError::Down { .. }), "{e:?}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "down rigs fail fast"
    );
    assert!(e.to_string().contains("reconnecting"), "{e}");

    // Stays down while the device is missing (backoff keeps trying).
    std::thread::sleep(Duration::from_millis(600));
    assert!(!rig.health().is_up());

    sim.reappear();
    wait_for("rig reconnected", Duration::from_secs(5), || {
        rig.health().is_up()
    });
    rig.led(2, Lamp::Fail).unwrap();
    assert_eq!(sim.lamp(2), Lamp::Fail);
}

#[test]
fn absent_device_at_start_connects_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rig");
    let rig = SerialRig::open(&path, DEFAULT_BAUD, fast_opts());
    match rig.health() {
        RigHealth::Down { reason } => assert!(reason.contains("cannot open"), "{reason}"),
        h => panic!("{h:?}"),
    }
    assert!(matches!(rig.present(), Err(RigError::Down { .. })));
    let keys = Arc::new(Keys::default());
    let _sim = SimRig::spawn(&path, keys, SimRigOptions::new(1)).unwrap();
    wait_for("rig up", Duration::from_secs(5), || rig.health().is_up());
    assert_eq!(rig.info().unwrap().slots, 1);
}

#[test]
fn driver_works_over_a_socket_pair() {
    use prereg_station::rig::sim::SimRigEngine;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::AtomicBool;

    let (ours, theirs) = UnixStream::pair().unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    ours.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let keys = Arc::new(Keys::default());
    let engine = Arc::new(SimRigEngine::new(keys.clone(), SimRigOptions::new(8)));
    let stop = Arc::new(AtomicBool::new(false));
    let (e2, s2) = (engine.clone(), stop.clone());
    let server = std::thread::spawn(move || {
        let w = theirs.try_clone().unwrap();
        e2.serve(theirs, w, &s2)
    });
    let mut link = Some(Link::new(ours.try_clone().unwrap(), ours, "socketpair"));
    let rig = SerialRig::with_connector(
        "socketpair",
        Box::new(move || {
            link.take()
                .ok_or_else(|| std::io::Error::other("only one socket pair"))
        }),
        fast_opts(),
    );
    assert_eq!(rig.info().unwrap().slots, 8);
    rig.touch(7, Duration::from_millis(5)).unwrap();
    rig.power(7, true).unwrap();
    assert_eq!(rig.present().unwrap(), SlotMask(0x80));
    assert_eq!(*keys.log.lock().unwrap(), ["touch 7 5ms", "power 7 true"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(rig);
    server.join().unwrap().unwrap();
}
