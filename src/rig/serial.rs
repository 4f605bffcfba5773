//! The rig port driver: SPEC §9 over a serial port (the `serialport` crate)
//! or any `Read` + `Write` pair (a pseudo-terminal, a socket pair).
//!
//! Threads and locks, and why:
//! - one **reader thread per connection** turns bytes into lines
//!   ([`LineSplitter`]) and sends them over a channel; a request then waits
//!   on `recv_timeout`, so its deadline holds whatever the reader does (a
//!   `Read` that blocks forever cannot hang a slot worker);
//! - one **keeper thread** reconnects with exponential backoff while the rig
//!   is down, notices a vanished device while idle, and probes an idle rig
//!   with `HELLO` so silence is seen before a worker needs a touch;
//! - one **mutex** around the connection serialises exchanges: the protocol
//!   has one request in flight and replies carry no id. Requests while the
//!   rig is down fail at once with [`RigError::Down`]; they never connect
//!   themselves, so no worker waits on a slow open.
//!
//! After a timeout or a garbled reply the next exchange is preceded by a
//! `HELLO` (whose reply is distinctive) so a late reply to an old request
//! cannot be taken for the answer to a new one.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::codec::{Frame, LineSplitter, Reply, Request, RequestKind};
use super::{CodecError, Lamp, Rig, RigError, RigHealth, RigInfo, SlotMask};

/// SPEC §9 default line settings: 115200 8N1.
pub const DEFAULT_BAUD: u32 = 115_200;

/// One open connection to a rig: a byte reader and writer, plus a name for
/// logs. The reader should return (data, `TimedOut`/`WouldBlock`, or an
/// error) now and then, so its thread can exit after a disconnect.
pub struct Link {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Write + Send>,
    pub describe: String,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("describe", &self.describe)
            .finish()
    }
}

impl Link {
    pub fn new(
        reader: impl Read + Send + 'static,
        writer: impl Write + Send + 'static,
        describe: impl Into<String>,
    ) -> Self {
        Link {
            reader: Box::new(reader),
            writer: Box::new(writer),
            describe: describe.into(),
        }
    }

    /// Opens a serial device (8N1, exclusive) at `baud`. Reads time out every
    /// 100 ms so the reader thread notices a closed connection.
    pub fn open_serial(path: &std::path::Path, baud: u32) -> io::Result<Link> {
        let port = serialport::new(path.to_string_lossy(), baud)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .timeout(Duration::from_millis(100))
            .open_native()
            .map_err(io::Error::from)?;
        let reader = port.try_clone_native().map_err(io::Error::from)?;
        Ok(Link::new(reader, port, path.display().to_string()))
    }
}

/// Makes a new [`Link`] each time the driver (re)connects.
pub type Connector = Box<dyn FnMut() -> io::Result<Link> + Send>;

/// Called on every health change (e.g. to update the status board).
pub type HealthHook = Arc<dyn Fn(&RigHealth) + Send + Sync>;

/// Timing of the driver. Defaults suit a USB-serial microcontroller.
#[derive(Clone)]
pub struct SerialRigOptions {
    /// Deadline for a reply (a `TOUCH` adds its press time).
    pub request_timeout: Duration,
    /// First reconnect delay; doubles per failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Probe an idle rig with `HELLO` this often (`None`: never).
    pub probe_interval: Option<Duration>,
    /// Called on every health change, in order, from the thread that saw
    /// it (a worker or the keeper), never under the driver's lock.
    pub on_health: Option<HealthHook>,
}

impl Default for SerialRigOptions {
    fn default() -> Self {
        SerialRigOptions {
            request_timeout: Duration::from_millis(500),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            probe_interval: Some(Duration::from_secs(2)),
            on_health: None,
        }
    }
}

impl std::fmt::Debug for SerialRigOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialRigOptions")
            .field("request_timeout", &self.request_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("probe_interval", &self.probe_interval)
            .field("on_health", &self.on_health.is_some())
            .finish()
    }
}

/// What the reader thread reports.
enum Event {
    Frame(Frame),
    Closed(String),
}

struct Connection {
    writer: Box<dyn Write + Send>,
    events: Receiver<Event>,
    stop_reader: Arc<AtomicBool>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop_reader.store(true, Ordering::Relaxed);
    }
}

struct ConnState {
    connector: Connector,
    conn: Option<Connection>,
    info: Option<RigInfo>,
    /// Resync with `HELLO` before the next request.
    needs_hello: bool,
    backoff: Duration,
    next_attempt: Instant,
    last_exchange: Instant,
}

struct Shared {
    describe: String,
    opts: SerialRigOptions,
    state: Mutex<ConnState>,
    /// Read without I/O by `health()`; separate from `state` so the status
    /// page never waits behind a slow exchange.
    health: Mutex<RigHealth>,
    /// Health changes waiting for the hook (run outside the state lock).
    hook_queue: Mutex<Vec<RigHealth>>,
    hook_order: Mutex<()>,
    stop: AtomicBool,
}

/// A rig behind a serial port (or any [`Link`]). Cheap to share as
/// `Arc<dyn Rig>`; dropping it stops its keeper thread.
pub struct SerialRig {
    shared: Arc<Shared>,
    keeper: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SerialRig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialRig")
            .field("port", &self.shared.describe)
            .field("health", &self.health())
            .finish()
    }
}

impl SerialRig {
    /// Drives the rig at `path` (e.g. the udev link `/dev/prereg-rig`).
    /// Tries once to connect before returning; if that fails the rig is
    /// returned down and the keeper keeps trying with backoff.
    pub fn open(path: impl Into<PathBuf>, baud: u32, opts: SerialRigOptions) -> SerialRig {
        let path = path.into();
        let describe = path.display().to_string();
        SerialRig::with_connector(
            describe,
            Box::new(move || Link::open_serial(&path, baud)),
            opts,
        )
    }

    /// Drives a rig reached through `connector` (tests: a pty or socket pair).
    pub fn with_connector(
        describe: impl Into<String>,
        connector: Connector,
        opts: SerialRigOptions,
    ) -> SerialRig {
        let now = Instant::now();
        let shared = Arc::new(Shared {
            describe: describe.into(),
            state: Mutex::new(ConnState {
                connector,
                conn: None,
                info: None,
                needs_hello: true,
                backoff: opts.backoff_min,
                next_attempt: now,
                last_exchange: now,
            }),
            health: Mutex::new(RigHealth::down("not connected yet")),
            hook_queue: Mutex::new(Vec::new()),
            hook_order: Mutex::new(()),
            stop: AtomicBool::new(false),
            opts,
        });
        {
            let mut st = shared.lock_state();
            shared.try_connect(&mut st);
        }
        shared.flush_hooks();
        let keeper_shared = Arc::clone(&shared);
        let keeper = thread::Builder::new()
            .name("rig-keeper".into())
            .spawn(move || keeper_shared.keep())
            .map_err(|e| tracing::error!("rig: cannot start keeper thread, no reconnects: {e}"))
            .ok();
        SerialRig { shared, keeper }
    }

    fn exchange(&self, req: Request) -> Result<Reply, RigError> {
        let kind = req.kind();
        let reply = self.shared.request(&req)?;
        match reply {
            Reply::Err { code, text } => Err(RigError::Refused {
                request: kind,
                code,
                text,
            }),
            other => Ok(other),
        }
    }

    fn check_slot(&self, slot: u8) -> Result<(), RigError> {
        if let Some(info) = self.info() {
            if slot >= info.slots {
                return Err(RigError::NoSuchSlot {
                    slot,
                    slots: info.slots,
                });
            }
        }
        Ok(())
    }
}

impl Drop for SerialRig {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
    }
}

impl Rig for SerialRig {
    fn hello(&self) -> Result<RigInfo, RigError> {
        match self.exchange(Request::Hello)? {
            Reply::Hello(info) => Ok(info),
            _ => Err(protocol(
                RequestKind::Hello,
                CodecError::WrongReply(RequestKind::Hello),
            )),
        }
    }

    fn info(&self) -> Option<RigInfo> {
        self.shared.lock_state().info.clone()
    }

    fn touch(&self, slot: u8, press: Duration) -> Result<(), RigError> {
        let req = Request::touch(slot, press).map_err(RigError::Invalid)?;
        if !self.capabilities().touch && self.info().is_some() {
            return Err(RigError::NotSupported("touch keys"));
        }
        self.check_slot(slot)?;
        self.exchange(req).map(drop)
    }

    fn power(&self, slot: u8, on: bool) -> Result<(), RigError> {
        if !self.capabilities().power && self.info().is_some() {
            return Err(RigError::NotSupported("switch port power"));
        }
        self.check_slot(slot)?;
        self.exchange(Request::Power { slot, on }).map(drop)
    }

    fn led(&self, slot: u8, lamp: Lamp) -> Result<(), RigError> {
        if !self.capabilities().led && self.info().is_some() {
            return Err(RigError::NotSupported("light slot lamps"));
        }
        self.check_slot(slot)?;
        self.exchange(Request::Led { slot, lamp }).map(drop)
    }

    fn present(&self) -> Result<SlotMask, RigError> {
        match self.exchange(Request::Present)? {
            Reply::Present(mask) => Ok(mask),
            _ => Err(protocol(
                RequestKind::Present,
                CodecError::WrongReply(RequestKind::Present),
            )),
        }
    }

    fn health(&self) -> RigHealth {
        self.shared
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn protocol(request: RequestKind, source: CodecError) -> RigError {
    RigError::Protocol { request, source }
}

fn spawn_reader(mut reader: Box<dyn Read + Send>, tx: Sender<Event>, stop: Arc<AtomicBool>) {
    let spawned = thread::Builder::new()
        .name("rig-reader".into())
        .spawn(move || {
            let mut splitter = LineSplitter::new();
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                match reader.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.send(Event::Closed("end of stream".into()));
                        return;
                    }
                    Ok(n) => {
                        for frame in splitter.push(&buf[..n]) {
                            if tx.send(Event::Frame(frame)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::TimedOut
                                | io::ErrorKind::WouldBlock
                                | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        let _ = tx.send(Event::Closed(format!("read failed: {e}")));
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("rig: cannot start reader thread: {e}");
    }
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, ConnState> {
        // A panic while holding the lock leaves only plain data behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_health(&self, h: RigHealth) {
        let mut cur = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if *cur != h {
            match &h {
                RigHealth::Up(info) => {
                    tracing::info!(port = %self.describe, "rig up: {}", info.name)
                }
                other => tracing::warn!(port = %self.describe, "rig {other}"),
            }
            *cur = h.clone();
            drop(cur);
            if self.opts.on_health.is_some() {
                self.hook_queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(h);
            }
        }
    }

    /// Runs the health hook for queued changes, in order. Called only after
    /// the connection lock is released, so a hook may call back into the rig.
    fn flush_hooks(&self) {
        let Some(hook) = &self.opts.on_health else {
            return;
        };
        // Held while calling: keeps changes in order across threads.
        let _order = self.hook_order.lock().unwrap_or_else(|p| p.into_inner());
        let queued: Vec<RigHealth> =
            std::mem::take(&mut *self.hook_queue.lock().unwrap_or_else(|p| p.into_inner()));
        for h in &queued {
            hook(h);
        }
    }

    fn drop_connection(&self, st: &mut ConnState, reason: String) {
        st.conn = None;
        st.needs_hello = true;
        st.next_attempt = Instant::now() + st.backoff;
        self.set_health(RigHealth::down(reason));
    }

    /// Opens a link and says `HELLO`. Failure schedules the next attempt.
    fn try_connect(&self, st: &mut ConnState) {
        match (st.connector)() {
            Ok(link) => {
                let (tx, rx) = mpsc::channel();
                let stop = Arc::new(AtomicBool::new(false));
                spawn_reader(link.reader, tx, Arc::clone(&stop));
                st.conn = Some(Connection {
                    writer: link.writer,
                    events: rx,
                    stop_reader: stop,
                });
                st.needs_hello = true;
                match self.raw_exchange(st, &Request::Hello) {
                    Ok(_) => st.backoff = self.opts.backoff_min,
                    Err(e) => {
                        st.conn = None;
                        self.schedule_retry(st, format!("{} answers no HELLO: {e}", self.describe));
                    }
                }
            }
            Err(e) => self.schedule_retry(st, format!("cannot open {}: {e}", self.describe)),
        }
    }

    fn schedule_retry(&self, st: &mut ConnState, reason: String) {
        st.next_attempt = Instant::now() + st.backoff;
        st.backoff = (st.backoff * 2).min(self.opts.backoff_max);
        self.set_health(RigHealth::down(reason));
    }

    fn request(&self, req: &Request) -> Result<Reply, RigError> {
        let r = self.request_locked(req);
        self.flush_hooks();
        r
    }

    fn request_locked(&self, req: &Request) -> Result<Reply, RigError> {
        let mut st = self.lock_state();
        if st.conn.is_none() {
            let reason = match &*self.health.lock().unwrap_or_else(|p| p.into_inner()) {
                RigHealth::Down { reason } => reason.clone(),
                _ => "not connected".into(),
            };
            return Err(RigError::Down { reason });
        }
        if st.needs_hello && *req != Request::Hello {
            self.raw_exchange(&mut st, &Request::Hello)?;
        }
        self.raw_exchange(&mut st, req)
    }

    /// One request, one reply, on the current connection, within the
    /// deadline. Updates health and the resync flag.
    fn raw_exchange(&self, st: &mut ConnState, req: &Request) -> Result<Reply, RigError> {
        let kind = req.kind();
        let timeout = match req {
            Request::Touch { ms, .. } => {
                self.opts.request_timeout + Duration::from_millis(u64::from(*ms))
            }
            _ => self.opts.request_timeout,
        };
        let Some(conn) = st.conn.as_mut() else {
            return Err(RigError::Down {
                reason: "not connected".into(),
            });
        };
        // Anything already queued is stale (a late reply or line noise).
        loop {
            match conn.events.try_recv() {
                Ok(Event::Frame(_)) => continue,
                Ok(Event::Closed(why)) => {
                    self.drop_connection(st, format!("{} disappeared: {why}", self.describe));
                    return Err(self.down_error());
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.drop_connection(st, format!("{} reader stopped", self.describe));
                    return Err(self.down_error());
                }
            }
        }
        let line = req.encode();
        if let Err(e) = conn
            .writer
            .write_all(line.as_bytes())
            .and_then(|()| conn.writer.flush())
        {
            self.drop_connection(st, format!("write to {} failed: {e}", self.describe));
            return Err(self.down_error());
        }
        let deadline = Instant::now() + timeout;
        st.last_exchange = Instant::now();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let conn = st.conn.as_mut().ok_or_else(|| self.down_error())?;
            match conn.events.recv_timeout(left) {
                Ok(Event::Frame(Frame::Line(bytes))) => {
                    let parsed = Reply::parse(&bytes).and_then(|r| r.fits(kind));
                    match parsed {
                        Ok(reply) => {
                            if let Reply::Hello(info) = &reply {
                                st.info = Some(info.clone());
                                self.set_health(RigHealth::Up(info.clone()));
                            }
                            st.needs_hello = false;
                            return Ok(reply);
                        }
                        // Resyncing: a late `OK` to an old request may
                        // precede the distinctive HELLO reply; skip it.
                        Err(CodecError::WrongReply(_)) if kind == RequestKind::Hello => continue,
                        Err(e) => {
                            st.needs_hello = true;
                            self.set_health(RigHealth::down(format!("bad reply to {kind}: {e}")));
                            return Err(protocol(kind, e));
                        }
                    }
                }
                Ok(Event::Frame(Frame::TooLong)) => {
                    st.needs_hello = true;
                    self.set_health(RigHealth::down(format!(
                        "bad reply to {kind}: line too long"
                    )));
                    return Err(protocol(kind, CodecError::TooLong));
                }
                Ok(Event::Closed(why)) => {
                    self.drop_connection(st, format!("{} disappeared: {why}", self.describe));
                    return Err(self.down_error());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.drop_connection(st, format!("{} reader stopped", self.describe));
                    return Err(self.down_error());
                }
                Err(RecvTimeoutError::Timeout) => {
                    st.needs_hello = true;
                    self.set_health(RigHealth::down(format!(
                        "no reply to {kind} within {} ms",
                        timeout.as_millis()
                    )));
                    return Err(RigError::Timeout {
                        request: kind,
                        after: timeout,
                    });
                }
            }
        }
    }

    fn down_error(&self) -> RigError {
        let reason = match &*self.health.lock().unwrap_or_else(|p| p.into_inner()) {
            RigHealth::Down { reason } => reason.clone(),
            _ => "not connected".into(),
        };
        RigError::Down { reason }
    }

    /// The keeper: reconnect when due, notice a vanished device, probe idle.
    fn keep(&self) {
        const TICK: Duration = Duration::from_millis(50);
        while !self.stop.load(Ordering::Relaxed) {
            thread::sleep(TICK);
            self.keep_once();
            self.flush_hooks();
        }
    }

    fn keep_once(&self) {
        {
            let mut st = self.lock_state();
            let now = Instant::now();
            if st.conn.is_none() {
                if now >= st.next_attempt {
                    self.try_connect(&mut st);
                }
                return;
            }
            // Idle: anything queued is unsolicited; a close means gone.
            if let Some(conn) = st.conn.as_mut() {
                let mut closed = None;
                loop {
                    match conn.events.try_recv() {
                        Ok(Event::Frame(_)) => continue,
                        Ok(Event::Closed(why)) => closed = Some(why),
                        Err(TryRecvError::Disconnected) => closed = Some("reader stopped".into()),
                        Err(TryRecvError::Empty) => {}
                    }
                    break;
                }
                if let Some(why) = closed {
                    self.drop_connection(&mut st, format!("{} disappeared: {why}", self.describe));
                    return;
                }
            }
            let probe_due = self
                .opts
                .probe_interval
                .is_some_and(|p| now.duration_since(st.last_exchange) >= p);
            // After a fault, resync on the backoff schedule so a silent rig
            // does not keep the lock (and the workers) busy with HELLOs.
            let resync_due = st.needs_hello && now >= st.next_attempt;
            if resync_due || (!st.needs_hello && probe_due) {
                // Errors update health; only the schedule is left to do.
                match self.raw_exchange(&mut st, &Request::Hello) {
                    Ok(_) => st.backoff = self.opts.backoff_min,
                    Err(_) if st.conn.is_some() => {
                        st.next_attempt = Instant::now() + st.backoff;
                        st.backoff = (st.backoff * 2).min(self.opts.backoff_max);
                    }
                    Err(_) => {}
                }
            }
        }
    }
}
