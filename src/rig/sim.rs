//! A simulated rig controller that speaks SPEC §9 on a pseudo-terminal, so
//! the station drives it through the same [`super::serial::SerialRig`] as a
//! real rig, and whose slot actions reach simulated keys through
//! [`SimRigSlots`] (the station implements it over the simulator's control
//! handles: `TOUCH` touches the key, `POWER OFF`/`ON` unplugs and replugs it).
//!
//! The pty comes from `serialport::TTYPort::pair` (posix_openpt, grantpt,
//! unlockpt under the hood), so this module needs no `unsafe` and no extra
//! crate. The rig publishes its slave device under a stable symlink, like the
//! udev rule `/dev/prereg-rig` does for a real one; [`SimRig::disappear`]
//! closes the pty and removes the link, [`SimRig::reappear`] opens a new pty
//! and points the link at it, so reconnecting is exercised for real.
//!
//! [`SimKeySlots`] is that implementation, ready-made.
//!
//! Fault modes ([`SimRigFault`]): answer garbage, answer over-long lines,
//! answer late, stop answering.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serialport::TTYPort;

use crate::sim::SimControl;

use super::codec::{Frame, LineSplitter, Reply, Request, MAX_LINE};
use super::{Capabilities, CodecError, ErrCode, Lamp, Rig, RigError, RigHealth, RigInfo, SlotMask};

/// What the simulated rig does to a slot. Implemented by the station over
/// the simulated keys' control handles; errors become `ERR 5` replies.
pub trait SimRigSlots: Send + Sync {
    /// Press the key's touch sensor for `press`.
    fn touch(&self, slot: u8, press: Duration) -> Result<(), String>;
    /// Switch the slot's port power (off = the key is unplugged).
    fn power(&self, slot: u8, on: bool) -> Result<(), String>;
    /// Whether a key sits in the slot (and is powered).
    fn present(&self, slot: u8) -> bool;
    /// The lamp changed (optional; the rig remembers lamps itself).
    fn led(&self, _slot: u8, _lamp: Lamp) {}
}

/// The rig's slots backed by simulated keys (`sim::SimControl` handles):
/// `TOUCH` presses the key's sensor, `POWER OFF` unplugs it, `POWER ON`
/// powers it up again (volatile state lost, reset window restarts), and
/// `PRESENT?` reports keys that are in and powered. The station inserts and
/// removes keys as its simulated operator swaps them. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SimKeySlots {
    keys: Arc<Mutex<Vec<Option<SimControl>>>>,
}

impl SimKeySlots {
    /// `n` empty slots.
    pub fn new(n: usize) -> Self {
        SimKeySlots {
            keys: Arc::new(Mutex::new(vec![None; n])),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<SimControl>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a key in `slot` (ignored if there is no such slot).
    pub fn insert(&self, slot: usize, key: SimControl) {
        if let Some(s) = self.lock().get_mut(slot) {
            *s = Some(key);
        }
    }

    /// Takes the key out of `slot`.
    pub fn remove(&self, slot: usize) -> Option<SimControl> {
        self.lock().get_mut(slot).and_then(Option::take)
    }

    fn key(&self, slot: u8) -> Option<SimControl> {
        self.lock().get(usize::from(slot)).cloned().flatten()
    }
}

impl SimRigSlots for SimKeySlots {
    /// Holds the press for `press`: a key that starts waiting for user
    /// presence during the press sees it, as with a solenoid.
    fn touch(&self, slot: u8, press: Duration) -> Result<(), String> {
        let key = self
            .key(slot)
            .ok_or_else(|| format!("no key in slot {slot}"))?;
        let until = Instant::now() + press;
        loop {
            if key.waiting_for_touch() {
                key.touch();
                return Ok(());
            }
            if Instant::now() >= until {
                return Ok(()); // pressed with nothing waiting: lost, as on a real key
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn power(&self, slot: u8, on: bool) -> Result<(), String> {
        if let Some(key) = self.key(slot) {
            if on {
                key.plug();
            } else {
                // Powered down but still in the slot: not an operator removal.
                key.power_off();
            }
        }
        Ok(())
    }

    fn present(&self, slot: u8) -> bool {
        self.key(slot).is_some_and(|k| k.is_present())
    }
}

/// How the simulated rig misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimRigFault {
    /// Answers correctly.
    #[default]
    None,
    /// Answers every request with a line of binary junk.
    Garbage,
    /// Answers every request with a line longer than the protocol allows.
    Overlong,
    /// Reads requests and never answers.
    Silent,
    /// Answers correctly, but only after this delay (late replies).
    Slow(Duration),
}

/// Identity and abilities of the simulated rig.
#[derive(Debug, Clone)]
pub struct SimRigOptions {
    pub name: String,
    pub slots: u8,
    pub caps: Capabilities,
    /// Hold the `OK` of a `TOUCH` until the press is over (as a solenoid
    /// rig does); otherwise answer at once.
    pub hold_touch: bool,
}

impl SimRigOptions {
    pub fn new(slots: u8) -> Self {
        SimRigOptions {
            name: "sim-rig".into(),
            slots,
            caps: Capabilities::all(),
            hold_touch: true,
        }
    }
}

/// The rig's behaviour, one line in, at most one line out: shared by the
/// pty server and [`InProcessRig`].
pub struct SimRigEngine {
    opts: SimRigOptions,
    slots: Arc<dyn SimRigSlots>,
    lamps: Mutex<Vec<Lamp>>,
    fault: Mutex<SimRigFault>,
    requests: AtomicU64,
}

impl std::fmt::Debug for SimRigEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRigEngine")
            .field("opts", &self.opts)
            .field("fault", &self.fault())
            .finish()
    }
}

impl SimRigEngine {
    pub fn new(slots: Arc<dyn SimRigSlots>, opts: SimRigOptions) -> Self {
        let n = usize::from(opts.slots);
        SimRigEngine {
            opts,
            slots,
            lamps: Mutex::new(vec![Lamp::Off; n]),
            fault: Mutex::new(SimRigFault::None),
            requests: AtomicU64::new(0),
        }
    }

    pub fn set_fault(&self, fault: SimRigFault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    pub fn fault(&self) -> SimRigFault {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lamp last set on `slot` (OFF if never, or no such slot).
    pub fn lamp(&self, slot: u8) -> Lamp {
        let lamps = self.lamps.lock().unwrap_or_else(|p| p.into_inner());
        lamps.get(usize::from(slot)).copied().unwrap_or(Lamp::Off)
    }

    /// Lines received so far (including garbage).
    pub fn requests_seen(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Answers one line (without its `\n`); `None` = say nothing.
    pub fn handle_frame(&self, frame: &Frame) -> Option<Vec<u8>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self.fault() {
            SimRigFault::None => {}
            SimRigFault::Slow(d) => thread::sleep(d),
            SimRigFault::Silent => return None,
            SimRigFault::Garbage => return Some(b"\x00\x9bOK\x07\xff?\n".to_vec()),
            SimRigFault::Overlong => {
                let mut l = vec![b'Z'; MAX_LINE * 3];
                l.push(b'\n');
                return Some(l);
            }
        }
        let reply = match frame {
            Frame::TooLong => err(ErrCode::BAD_ARGUMENT, "line too long"),
            Frame::Line(line) => match Request::parse(line) {
                Ok(req) => self.act(req),
                Err(CodecError::UnknownVerb) => err(ErrCode::UNKNOWN_COMMAND, "unknown command"),
                Err(CodecError::OutOfRange("slot")) => err(ErrCode::BAD_SLOT, "no such slot"),
                Err(e) => err(ErrCode::BAD_ARGUMENT, &e.to_string()),
            },
        };
        Some(reply.encode().into_bytes())
    }

    fn act(&self, req: Request) -> Reply {
        let slot_ok = |slot: u8| slot < self.opts.slots;
        match req {
            Request::Hello => Reply::Hello(RigInfo {
                name: self.opts.name.clone(),
                slots: self.opts.slots,
                caps: self.opts.caps.clone(),
            }),
            Request::Present => {
                let mask = (0..self.opts.slots)
                    .filter(|s| self.slots.present(*s))
                    .fold(SlotMask::default(), SlotMask::with);
                Reply::Present(mask)
            }
            Request::Touch { slot, .. }
            | Request::Power { slot, .. }
            | Request::Led { slot, .. }
                if !slot_ok(slot) =>
            {
                err(ErrCode::BAD_SLOT, "no such slot")
            }
            Request::Touch { .. } if !self.opts.caps.touch => {
                err(ErrCode::NOT_SUPPORTED, "no touch actuator")
            }
            Request::Power { .. } if !self.opts.caps.power => {
                err(ErrCode::NOT_SUPPORTED, "no port power switch")
            }
            Request::Led { .. } if !self.opts.caps.led => err(ErrCode::NOT_SUPPORTED, "no lamps"),
            Request::Touch { slot, ms } => {
                let press = Duration::from_millis(u64::from(ms));
                let start = Instant::now();
                match self.slots.touch(slot, press) {
                    Ok(()) => {
                        if self.opts.hold_touch {
                            // The slots may have held part of the press.
                            thread::sleep(press.saturating_sub(start.elapsed()));
                        }
                        Reply::Ok
                    }
                    Err(e) => err(ErrCode::HARDWARE, &e),
                }
            }
            Request::Power { slot, on } => match self.slots.power(slot, on) {
                Ok(()) => Reply::Ok,
                Err(e) => err(ErrCode::HARDWARE, &e),
            },
            Request::Led { slot, lamp } => {
                let mut lamps = self.lamps.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(l) = lamps.get_mut(usize::from(slot)) {
                    *l = lamp;
                }
                drop(lamps);
                self.slots.led(slot, lamp);
                Reply::Ok
            }
        }
    }

    /// Serves one connection until `stop` is set or the peer goes away.
    /// The reader should time out now and then so `stop` is seen.
    pub fn serve(
        &self,
        mut reader: impl Read,
        mut writer: impl Write,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        let mut splitter = LineSplitter::new();
        let mut buf = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            for frame in splitter.push(&buf[..n]) {
                if let Some(reply) = self.handle_frame(&frame) {
                    writer.write_all(&reply)?;
                    writer.flush()?;
                }
            }
        }
        Ok(())
    }
}

fn err(code: ErrCode, text: &str) -> Reply {
    Reply::Err {
        code,
        text: text.to_owned(),
    }
}

/// Shared between the [`SimRig`] handle and its pty thread.
struct PtyShared {
    engine: Arc<SimRigEngine>,
    link: PathBuf,
    /// Desired: the device is plugged in.
    want_present: AtomicBool,
    /// Actual, as the pty thread last left it.
    is_present: AtomicBool,
    stop: AtomicBool,
}

/// A simulated rig on a pseudo-terminal, reachable at [`SimRig::path`].
/// Dropping it closes the pty and removes the link.
pub struct SimRig {
    shared: Arc<PtyShared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimRig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRig")
            .field("link", &self.shared.link)
            .field("present", &self.shared.is_present.load(Ordering::Relaxed))
            .finish()
    }
}

impl SimRig {
    /// Opens a pty, links its device at `link` (replacing what is there),
    /// and starts answering. `link`'s directory must exist.
    pub fn spawn(
        link: impl Into<PathBuf>,
        slots: Arc<dyn SimRigSlots>,
        opts: SimRigOptions,
    ) -> io::Result<SimRig> {
        let shared = Arc::new(PtyShared {
            engine: Arc::new(SimRigEngine::new(slots, opts)),
            link: link.into(),
            want_present: AtomicBool::new(true),
            is_present: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        // Open the first pty here so errors reach the caller.
        let master = open_pty(&shared.link)?;
        shared.is_present.store(true, Ordering::Relaxed);
        let t_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("sim-rig".into())
            .spawn(move || pty_loop(&t_shared, Some(master)))?;
        Ok(SimRig {
            shared,
            thread: Some(thread),
        })
    }

    /// Where the station opens the rig (a symlink to the current pty).
    pub fn path(&self) -> &Path {
        &self.shared.link
    }

    pub fn engine(&self) -> &Arc<SimRigEngine> {
        &self.shared.engine
    }

    pub fn set_fault(&self, fault: SimRigFault) {
        self.shared.engine.set_fault(fault);
    }

    pub fn lamp(&self, slot: u8) -> Lamp {
        self.shared.engine.lamp(slot)
    }

    /// Unplugs the rig: closes the pty (the driver sees a hangup) and removes
    /// the link. Returns once done (bounded: 2 s).
    pub fn disappear(&self) {
        self.shared.want_present.store(false, Ordering::Relaxed);
        self.wait_present(false);
    }

    /// Plugs the rig back in on a new pty behind the same link.
    pub fn reappear(&self) {
        self.shared.want_present.store(true, Ordering::Relaxed);
        self.wait_present(true);
    }

    pub fn is_present(&self) -> bool {
        self.shared.is_present.load(Ordering::Relaxed)
    }

    fn wait_present(&self, want: bool) {
        let until = Instant::now() + Duration::from_secs(2);
        while self.shared.is_present.load(Ordering::Relaxed) != want && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for SimRig {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.shared.link);
    }
}

/// Opens a pty pair, keeps the master, links the slave's device path.
fn open_pty(link: &Path) -> io::Result<TTYPort> {
    let (mut master, slave) = TTYPort::pair().map_err(io::Error::from)?;
    let name = serialport::SerialPort::name(&slave)
        .ok_or_else(|| io::Error::other("pty has no device name"))?;
    // The slave is reopened by the driver by path; this handle must go so
    // the driver's exclusive open succeeds.
    drop(slave);
    serialport::SerialPort::set_timeout(&mut master, Duration::from_millis(50))
        .map_err(io::Error::from)?;
    // Replace the link atomically: a new symlink renamed over the old one.
    let tmp = link.with_extension("tmp-link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&name, &tmp)?;
    std::fs::rename(&tmp, link)?;
    Ok(master)
}

fn pty_loop(shared: &PtyShared, mut master: Option<TTYPort>) {
    let mut splitter = LineSplitter::new();
    let mut buf = [0u8; 256];
    while !shared.stop.load(Ordering::Relaxed) {
        let want = shared.want_present.load(Ordering::Relaxed);
        match (&mut master, want) {
            (Some(_), false) => {
                master = None;
                let _ = std::fs::remove_file(&shared.link);
                splitter.reset();
                shared.is_present.store(false, Ordering::Relaxed);
                continue;
            }
            (None, true) => {
                match open_pty(&shared.link) {
                    Ok(m) => {
                        master = Some(m);
                        shared.is_present.store(true, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!("sim rig: cannot open a pty: {e}");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
                continue;
            }
            (None, false) => {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            (Some(_), true) => {}
        }
        let Some(m) = master.as_mut() else { continue };
        match m.read(&mut buf) {
            Ok(0) => thread::sleep(Duration::from_millis(20)),
            Ok(n) => {
                for frame in splitter.push(&buf[..n]) {
                    if let Some(reply) = shared.engine.handle_frame(&frame) {
                        if let Err(e) = m.write_all(&reply) {
                            tracing::debug!("sim rig: write failed: {e}");
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            // No one has the slave open (between driver connections): the
            // master reports a hangup until someone does.
            Err(_) => {
                splitter.reset();
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The simulated rig without a pty: requests go through the codec and the
/// [`SimRigEngine`] in-process. For station tests that do not need the
/// serial path; the pty [`SimRig`] + [`super::serial::SerialRig`] is the
/// production-shaped path.
#[derive(Debug)]
pub struct InProcessRig {
    engine: Arc<SimRigEngine>,
}

impl InProcessRig {
    pub fn new(slots: Arc<dyn SimRigSlots>, opts: SimRigOptions) -> Self {
        InProcessRig {
            engine: Arc::new(SimRigEngine::new(slots, opts)),
        }
    }

    pub fn engine(&self) -> &Arc<SimRigEngine> {
        &self.engine
    }

    fn exchange(&self, req: Request) -> Result<Reply, RigError> {
        let kind = req.kind();
        let line = req.encode();
        let frame = Frame::Line(line.trim_end_matches('\n').as_bytes().to_vec());
        let Some(bytes) = self.engine.handle_frame(&frame) else {
            return Err(RigError::Timeout {
                request: kind,
                after: Duration::ZERO,
            });
        };
        let mut frames = LineSplitter::new().push(&bytes);
        let reply = match frames.pop() {
            Some(Frame::Line(l)) => Reply::parse(&l).and_then(|r| r.fits(kind)),
            _ => Err(CodecError::TooLong),
        }
        .map_err(|source| RigError::Protocol {
            request: kind,
            source,
        })?;
        match reply {
            Reply::Err { code, text } => Err(RigError::Refused {
                request: kind,
                code,
                text,
            }),
            r => Ok(r),
        }
    }
}

impl Rig for InProcessRig {
    fn hello(&self) -> Result<RigInfo, RigError> {
        match self.exchange(Request::Hello)? {
            Reply::Hello(i) => Ok(i),
            _ => Err(RigError::Protocol {
                request: super::RequestKind::Hello,
                source: CodecError::WrongReply(super::RequestKind::Hello),
            }),
        }
    }
    fn info(&self) -> Option<RigInfo> {
        Some(RigInfo {
            name: self.engine.opts.name.clone(),
            slots: self.engine.opts.slots,
            caps: self.engine.opts.caps.clone(),
        })
    }
    fn touch(&self, slot: u8, press: Duration) -> Result<(), RigError> {
        let req = Request::touch(slot, press).map_err(RigError::Invalid)?;
        self.exchange(req).map(drop)
    }
    fn power(&self, slot: u8, on: bool) -> Result<(), RigError> {
        self.exchange(Request::Power { slot, on }).map(drop)
    }
    fn led(&self, slot: u8, lamp: Lamp) -> Result<(), RigError> {
        self.exchange(Request::Led { slot, lamp }).map(drop)
    }
    fn present(&self) -> Result<SlotMask, RigError> {
        match self.exchange(Request::Present)? {
            Reply::Present(m) => Ok(m),
            _ => Err(RigError::Protocol {
                request: super::RequestKind::Present,
                source: CodecError::WrongReply(super::RequestKind::Present),
            }),
        }
    }
    fn health(&self) -> RigHealth {
        match self.engine.fault() {
            SimRigFault::None => RigHealth::Up(self.info().unwrap_or_else(|| RigInfo {
                name: String::new(),
                slots: 0,
                caps: Capabilities::none(),
            })),
            f => RigHealth::down(format!("simulated fault {f:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Slots {
        log: Mutex<Vec<String>>,
        present: Mutex<SlotMask>,
    }

    impl SimRigSlots for Slots {
        fn touch(&self, slot: u8, press: Duration) -> Result<(), String> {
            self.log
                .lock()
                .unwrap()
                .push(format!("touch {slot} {}", press.as_millis()));
            Ok(())
        }
        fn power(&self, slot: u8, on: bool) -> Result<(), String> {
            if slot == 2 {
                return Err("relay stuck".into());
            }
            self.log.lock().unwrap().push(format!("power {slot} {on}"));
            Ok(())
        }
        fn present(&self, slot: u8) -> bool {
            self.present.lock().unwrap().contains(slot)
        }
    }

    fn engine(caps: Capabilities) -> (Arc<Slots>, SimRigEngine) {
        let slots = Arc::new(Slots::default());
        let mut opts = SimRigOptions::new(4);
        opts.caps = caps;
        opts.hold_touch = false;
        (slots.clone(), SimRigEngine::new(slots, opts))
    }

    fn ask(e: &SimRigEngine, line: &[u8]) -> String {
        let out = e.handle_frame(&Frame::Line(line.to_vec())).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn engine_answers_the_protocol() {
        let (slots, e) = engine(Capabilities::all());
        *slots.present.lock().unwrap() = SlotMask(0b1010);
        assert_eq!(
            ask(&e, b"HELLO"),
            "OK RIG sim-rig SLOTS 4 CAPS touch,power,led\n"
        );
        assert_eq!(ask(&e, b"PRESENT?"), "OK a\n");
        assert_eq!(ask(&e, b"TOUCH 1 200"), "OK\n");
        assert_eq!(ask(&e, b"POWER 3 OFF"), "OK\n");
        assert_eq!(ask(&e, b"POWER 2 ON"), "ERR 5 relay stuck\n");
        assert_eq!(ask(&e, b"LED 0 PASS"), "OK\n");
        assert_eq!(e.lamp(0), Lamp::Pass);
        assert_eq!(ask(&e, b"LED 4 PASS"), "ERR 3 no such slot\n");
        assert_eq!(ask(&e, b"LED 99 PASS"), "ERR 3 no such slot\n");
        assert_eq!(ask(&e, b"FLY"), "ERR 1 unknown command\n");
        assert!(ask(&e, b"TOUCH 1").starts_with("ERR 2 "));
        assert_eq!(
            *slots.log.lock().unwrap(),
            vec!["touch 1 200".to_owned(), "power 3 false".to_owned()]
        );
    }

    #[test]
    fn engine_honours_capabilities_and_faults() {
        let (_, e) = engine(Capabilities {
            led: true,
            ..Capabilities::none()
        });
        assert_eq!(ask(&e, b"TOUCH 0 100"), "ERR 4 no touch actuator\n");
        e.set_fault(SimRigFault::Silent);
        assert!(e.handle_frame(&Frame::Line(b"HELLO".to_vec())).is_none());
        e.set_fault(SimRigFault::Garbage);
        let g = e.handle_frame(&Frame::Line(b"HELLO".to_vec())).unwrap();
        assert!(Reply::parse(g.strip_suffix(b"\n").unwrap()).is_err());
    }

    #[test]
    fn in_process_rig_round_trips() {
        let slots = Arc::new(Slots::default());
        let rig = InProcessRig::new(slots.clone(), SimRigOptions::new(2));
        assert_eq!(rig.hello().unwrap().slots, 2);
        *slots.present.lock().unwrap() = SlotMask(1);
        assert_eq!(rig.present().unwrap(), SlotMask(1));
        rig.led(1, Lamp::Attn).unwrap();
        assert_eq!(rig.engine().lamp(1), Lamp::Attn);
        assert!(matches!(
            rig.led(5, Lamp::Attn),
            Err(RigError::Refused {
                code: ErrCode::BAD_SLOT,
                ..
            })
        ));
        rig.engine().set_fault(SimRigFault::Garbage);
        assert!(matches!(rig.present(), Err(RigError::Protocol { .. })));
        assert!(!rig.health().is_up());
    }
}
