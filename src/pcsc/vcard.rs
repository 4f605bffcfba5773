//! A virtual contactless FIDO card, reachable through the real PC/SC stack via
//! vsmartcard's `vpcd` reader driver inside pcscd.
//!
//! Two layers:
//! - [`VirtualCard`]: pure card logic (APDU in, APDU out) — SELECT of the FIDO
//!   and management applications, NFCCTAP_MSG / NFCCTAP_GETRESPONSE (CTAP 2.1
//!   §11.3.9), ISO 7816-4 chaining and `61xx`, READ CONFIG. The authenticator
//!   behind it is a [`CardBackend`] (the simulator's CTAP2 core).
//! - [`serve`] / [`VpcdCard`]: the vpcd socket protocol. The card side connects
//!   by TCP to the driver (default `127.0.0.1:35963`, the port in
//!   `/etc/reader.conf.d/vpcd`); each frame is a 2-byte big-endian length and
//!   that many bytes. A 1-byte frame is a control message (0 power off, 1
//!   power on, 2 reset, 4 send ATR — only ATR is answered); anything longer is
//!   a command APDU, answered with one response frame. vpcd polls with ATR
//!   requests to see whether the card is present; closing the socket removes
//!   the card from the reader.

use super::apdu::{self, ChainAssembler, Chained, Command, Response, ResponseQueue, StatusWord};
use crate::ctaphid::KeepaliveStatus;
use crate::yubikey::DeviceInfo;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// vpcd's default port (reader "Virtual PCD 00 00"; the next slot listens on +1).
pub const VPCD_DEFAULT_PORT: u16 = 35963;

/// vpcd control messages (1-byte frames).
pub mod ctrl {
    pub const POWER_OFF: u8 = 0;
    pub const POWER_ON: u8 = 1;
    pub const RESET: u8 = 2;
    pub const GET_ATR: u8 = 4;
}

/// FIDO applet SELECT answer of a CTAP2-capable authenticator (CTAP 2.1 §11.3.4).
pub const FIDO_VERSION: &[u8] = b"FIDO_2_0";

/// Largest chained command the card accepts (YubiKey maxMsgSize is 1200–2048).
pub const MAX_COMMAND: usize = 8 * 1024;

/// ATR of a contactless card as a PC/SC part 3 reader builds it:
/// `3B 8n 80 01 <historical bytes> TCK`, with YubiKey NFC's historical bytes.
pub fn contactless_atr() -> Vec<u8> {
    let historical = b"\x80\x73\xC0\x21\xC0\x57\x59\x75\x62\x69\x4B\x65\x79";
    let mut atr = vec![0x3B, 0x80 | historical.len() as u8, 0x80, 0x01];
    atr.extend_from_slice(historical);
    // TCK: XOR of T0 through the last historical byte (ISO 7816-3 §8.2.5).
    let tck = atr[1..].iter().fold(0u8, |acc, b| acc ^ b);
    atr.push(tck);
    atr
}

/// The authenticator behind the card.
pub trait CardBackend: Send + 'static {
    /// One CTAP2 message (command byte ‖ CBOR) → response (status ‖ CBOR).
    /// May block (waiting for a touch), reporting progress to `keepalive`.
    fn ctap(&mut self, request: &[u8], keepalive: &mut dyn FnMut(KeepaliveStatus)) -> Vec<u8>;
    /// Management SELECT answer (firmware version text); `None`: no management app.
    fn management_version(&mut self) -> Option<String>;
    /// READ CONFIG page: `len ‖ TLVs`; `None` if the page does not exist.
    fn read_config(&mut self, page: u8) -> Option<Vec<u8>>;
    /// The field went away or the card was reset: drop volatile state.
    fn power_cycle(&mut self) {}
}

impl<B: CardBackend + ?Sized> CardBackend for Box<B> {
    fn ctap(&mut self, request: &[u8], keepalive: &mut dyn FnMut(KeepaliveStatus)) -> Vec<u8> {
        (**self).ctap(request, keepalive)
    }
    fn management_version(&mut self) -> Option<String> {
        (**self).management_version()
    }
    fn read_config(&mut self, page: u8) -> Option<Vec<u8>> {
        (**self).read_config(page)
    }
    fn power_cycle(&mut self) {
        (**self).power_cycle()
    }
}

/// A simulated key as a card: any CTAP2 core (request → status ‖ CBOR) plus
/// the device info its management application reports. The simulator plugs
/// in here: `SimulatedKey::new(move |req, ka| core.process(req, ka), info)`.
pub struct SimulatedKey<F> {
    ctap: F,
    info: DeviceInfo,
}

impl<F> SimulatedKey<F>
where
    F: FnMut(&[u8], &mut dyn FnMut(KeepaliveStatus)) -> Vec<u8> + Send + 'static,
{
    pub fn new(ctap: F, info: DeviceInfo) -> Self {
        Self { ctap, info }
    }
}

impl<F> std::fmt::Debug for SimulatedKey<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedKey")
            .field("serial", &self.info.serial)
            .finish()
    }
}

impl<F> CardBackend for SimulatedKey<F>
where
    F: FnMut(&[u8], &mut dyn FnMut(KeepaliveStatus)) -> Vec<u8> + Send + 'static,
{
    fn ctap(&mut self, request: &[u8], keepalive: &mut dyn FnMut(KeepaliveStatus)) -> Vec<u8> {
        (self.ctap)(request, keepalive)
    }
    fn management_version(&mut self) -> Option<String> {
        // yubikit: the SELECT answer is the firmware version as text.
        Some(
            self.info
                .effective_firmware()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "0.0.0".into()),
        )
    }
    fn read_config(&mut self, page: u8) -> Option<Vec<u8>> {
        let pages = self.info.encode_pages(255);
        pages.into_iter().nth(usize::from(page))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum App {
    None,
    Fido,
    Management,
}

/// A CTAP message being processed on its own thread, so the card can answer
/// `9100` polls meanwhile instead of holding the reader.
#[derive(Debug)]
struct Pending {
    result: Receiver<Vec<u8>>,
    status: Arc<AtomicU8>,
}

/// Card logic: one APDU in, one APDU out.
pub struct VirtualCard<B> {
    // Shared with the worker thread of a pending CTAP message (a Mutex because
    // the worker holds it for the whole message; the card thread only takes it
    // between messages).
    backend: Arc<Mutex<B>>,
    app: App,
    chain: ChainAssembler,
    queue: ResponseQueue,
    pending: Option<Pending>,
    /// How long one APDU waits for a CTAP result before answering `9100`.
    inline_wait: Duration,
    /// A power cycle happened while the backend was busy.
    reset_owed: bool,
}

/// NFCCTAP_GETRESPONSE P1 asking to cancel the pending message (python-fido2).
const GETRESPONSE_CANCEL: u8 = 0x11;
/// CTAP 2.1 §8.2 status CTAP2_ERR_KEEPALIVE_CANCEL.
const CTAP2_ERR_KEEPALIVE_CANCEL: u8 = 0x2D;

/// Longest a card command waits for a busy backend before refusing.
const BACKEND_WAIT: Duration = Duration::from_secs(2);

impl<B> std::fmt::Debug for VirtualCard<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualCard")
            .field("app", &self.app)
            .field("pending", &self.pending.is_some())
            .finish()
    }
}

impl<B: CardBackend> VirtualCard<B> {
    pub fn new(backend: B) -> Self {
        Self {
            backend: Arc::new(Mutex::new(backend)),
            app: App::None,
            chain: ChainAssembler::new(MAX_COMMAND),
            queue: ResponseQueue::default(),
            pending: None,
            inline_wait: Duration::from_millis(20),
            reset_owed: false,
        }
    }

    /// The backend, e.g. to touch the simulated key from a test.
    pub fn backend(&self) -> Arc<Mutex<B>> {
        Arc::clone(&self.backend)
    }

    /// How long an APDU may wait for a CTAP result before `9100` is answered.
    pub fn set_inline_wait(&mut self, wait: Duration) {
        self.inline_wait = wait;
    }

    /// Power off / reset: applications deselected, buffers dropped.
    pub fn power_cycle(&mut self) {
        self.app = App::None;
        self.chain.reset();
        self.queue.clear();
        // A worker still running finishes on its own; its result is dropped.
        self.pending = None;
        // Never block the vpcd thread on a backend that is busy (e.g. waiting
        // for a touch that will not come now): reset it when it is free.
        match self.backend.try_lock() {
            Ok(mut b) => b.power_cycle(),
            Err(_) => self.reset_owed = true,
        }
    }

    /// Runs `f` on the backend, waiting at most [`BACKEND_WAIT`] for a worker
    /// to release it; `None` if it stays busy.
    fn with_backend<R>(&mut self, f: impl FnOnce(&mut B) -> R) -> Option<R> {
        let deadline = Instant::now() + BACKEND_WAIT;
        loop {
            match self.backend.try_lock() {
                Ok(mut b) => {
                    if std::mem::take(&mut self.reset_owed) {
                        b.power_cycle();
                    }
                    return Some(f(&mut b));
                }
                Err(std::sync::TryLockError::Poisoned(_)) => return None,
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        }
    }

    /// Answers one raw command APDU.
    pub fn process(&mut self, raw: &[u8]) -> Vec<u8> {
        // An extended APDU without Le (python-fido2 sends these) may get the
        // whole answer at once; a short one gets 256 bytes and 61xx for more.
        let extended = raw.len() >= 7 && raw[4] == 0;
        let default_le = if extended {
            apdu::EXTENDED_MAX_LE
        } else {
            apdu::SHORT_MAX_LE
        };
        let rsp = match Command::decode(raw) {
            Ok(cmd) => self.command(cmd, default_le),
            Err(_) => Response::status(StatusWord::WRONG_LENGTH),
        };
        rsp.to_bytes()
    }

    fn command(&mut self, cmd: Command, default_le: usize) -> Response {
        if cmd.ins == apdu::ins::GET_RESPONSE && cmd.cla & 0x80 == 0 {
            return self.queue.next(cmd.le.unwrap_or(apdu::SHORT_MAX_LE));
        }
        // Any other command abandons a half-read response (ISO 7816-4 §5.3.4).
        self.queue.clear();
        let cmd = match self.chain.push(cmd) {
            Ok(Chained::Partial) => return Response::status(StatusWord::SUCCESS),
            Ok(Chained::Complete(cmd)) => cmd,
            Err(sw) => {
                self.chain.reset();
                return Response::status(sw);
            }
        };
        let le = cmd.le.unwrap_or(default_le);
        let full = match (cmd.cla, cmd.ins) {
            (0x00, apdu::ins::SELECT) if cmd.p1 == 0x04 => self.select(&cmd.data),
            (0x80, apdu::ins::NFCCTAP_MSG) if self.app == App::Fido => self.ctap_msg(&cmd),
            (0x80, apdu::ins::NFCCTAP_GETRESPONSE) if self.app == App::Fido => {
                self.ctap_poll(cmd.p1)
            }
            (0x00, apdu::ins::READ_CONFIG) if self.app == App::Management => {
                self.read_config(cmd.p1)
            }
            (0x00 | 0x80, _) => Response::status(StatusWord::INS_NOT_SUPPORTED),
            _ => Response::status(StatusWord::CLA_NOT_SUPPORTED),
        };
        self.queue.start(full, le)
    }

    fn select(&mut self, aid: &[u8]) -> Response {
        self.pending = None;
        if aid == apdu::aid::FIDO {
            self.app = App::Fido;
            return Response::new(FIDO_VERSION, StatusWord::SUCCESS);
        }
        if aid == apdu::aid::MANAGEMENT {
            let version = self.with_backend(|b| b.management_version()).flatten();
            if let Some(version) = version {
                self.app = App::Management;
                return Response::new(version.into_bytes(), StatusWord::SUCCESS);
            }
        }
        self.app = App::None;
        Response::status(StatusWord::FILE_NOT_FOUND)
    }

    fn read_config(&mut self, page: u8) -> Response {
        match self.with_backend(|b| b.read_config(page)).flatten() {
            Some(data) => Response::new(data, StatusWord::SUCCESS),
            None => Response::status(StatusWord::INCORRECT_P1P2),
        }
    }

    fn ctap_msg(&mut self, cmd: &Command) -> Response {
        if self.pending.is_some() {
            return Response::status(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        // Settle an owed reset first; a backend still busy with an abandoned
        // message cannot take a new one.
        if self.with_backend(|_| ()).is_none() {
            return Response::status(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        let (tx, rx) = mpsc::channel();
        let status = Arc::new(AtomicU8::new(KeepaliveStatus::PROCESSING.0));
        let backend = Arc::clone(&self.backend);
        let request = cmd.data.clone();
        let shared = Arc::clone(&status);
        // One short-lived thread per message: the backend may block for a
        // touch while this card keeps answering GETRESPONSE polls.
        std::thread::spawn(move || {
            let mut keepalive = |s: KeepaliveStatus| shared.store(s.0, Ordering::Relaxed);
            let rsp = match backend.lock() {
                Ok(mut b) => b.ctap(&request, &mut keepalive),
                // A backend that panicked earlier: CTAP2_ERR_OTHER.
                Err(_) => vec![0x7F],
            };
            let _ = tx.send(rsp);
        });
        self.pending = Some(Pending { result: rx, status });
        // Without P1 bit 0x80 the host cannot poll: wait for the result.
        let wait = if cmd.p1 & 0x80 != 0 {
            self.inline_wait
        } else {
            Duration::from_secs(120)
        };
        self.collect(wait)
    }

    fn ctap_poll(&mut self, p1: u8) -> Response {
        if self.pending.is_none() {
            return Response::status(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        if p1 == GETRESPONSE_CANCEL {
            // The host gave up (python-fido2 sends P1 0x11 on cancel). The
            // backend cannot be interrupted from here; its late result is
            // dropped and the host gets CTAP2_ERR_KEEPALIVE_CANCEL now.
            self.pending = None;
            return Response::new(vec![CTAP2_ERR_KEEPALIVE_CANCEL], StatusWord::SUCCESS);
        }
        self.collect(self.inline_wait)
    }

    fn collect(&mut self, wait: Duration) -> Response {
        let Some(p) = &self.pending else {
            return Response::status(StatusWord::CONDITIONS_NOT_SATISFIED);
        };
        match p.result.recv_timeout(wait) {
            Ok(data) => {
                self.pending = None;
                Response::new(data, StatusWord::SUCCESS)
            }
            Err(RecvTimeoutError::Timeout) => Response::new(
                vec![p.status.load(Ordering::Relaxed)],
                StatusWord::FIDO_STATUS_UPDATE,
            ),
            Err(RecvTimeoutError::Disconnected) => {
                self.pending = None;
                Response::status(StatusWord::NO_PRECISE_DIAGNOSIS)
            }
        }
    }
}

/// A scripted misbehaviour of the card as seen through vpcd (tests, demos).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// On the next command APDU, drop the connection without answering: the
    /// card leaves the field mid-exchange. It stays out until [`VpcdCard::insert`].
    RemoveOnNextApdu,
    /// Answer the next command APDU with these raw bytes instead.
    RawAnswer(Vec<u8>),
}

#[derive(Debug, Default)]
struct Control {
    stop: AtomicBool,
    /// Whether the card is "in the field" (connected to vpcd).
    present: AtomicBool,
    faults: Mutex<std::collections::VecDeque<Fault>>,
    connected: AtomicBool,
}

/// A [`VirtualCard`] served to vpcd on its own thread.
#[derive(Debug)]
pub struct VpcdCard {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

/// Puts `card` in the vpcd reader at `addr` (connecting, and reconnecting
/// after pcscd restarts, until stopped). Returns at once.
pub fn serve<B: CardBackend>(addr: SocketAddr, card: VirtualCard<B>) -> VpcdCard {
    let control = Arc::new(Control {
        present: AtomicBool::new(true),
        ..Default::default()
    });
    let ctl = Arc::clone(&control);
    // The card owns its socket on one thread: vpcd speaks strictly
    // request/response, so there is nothing to multiplex.
    let thread = std::thread::spawn(move || run(addr, card, &ctl));
    VpcdCard {
        control,
        thread: Some(thread),
        addr,
    }
}

impl VpcdCard {
    /// Takes the card out of the field (closes the connection).
    pub fn remove(&self) {
        self.control.present.store(false, Ordering::SeqCst);
    }
    /// Puts the card back.
    pub fn insert(&self) {
        self.control.present.store(true, Ordering::SeqCst);
    }
    /// Queues a fault for the next command APDU.
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut q) = self.control.faults.lock() {
            q.push_back(fault);
        }
    }
    /// Whether the card is connected to vpcd right now.
    pub fn is_connected(&self) -> bool {
        self.control.connected.load(Ordering::SeqCst)
    }
    /// Waits until connected, at most `timeout`.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_connected() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.is_connected()
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Disconnects and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }
    fn shutdown(&mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for VpcdCard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Poll period for control flags while idle on the socket.
const TICK: Duration = Duration::from_millis(50);

/// How long a card stays out of the field before it (or another card) may
/// enter the same reader again. vpcd learns of presence only by polling (about
/// every 0.4 s); a card that leaves and a new one that arrives between two
/// polls look like one card to pcscd, which then reports no insertion.
pub const MIN_ABSENCE: Duration = Duration::from_millis(1000);

/// When a card last left each vpcd address, process-wide, so a fresh
/// [`serve`] on the same reader honours [`MIN_ABSENCE`] too.
static LAST_LEFT: Mutex<Vec<(SocketAddr, Instant)>> = Mutex::new(Vec::new());

fn mark_left(addr: SocketAddr) {
    if let Ok(mut v) = LAST_LEFT.lock() {
        v.retain(|(a, _)| *a != addr);
        v.push((addr, Instant::now()));
    }
}

fn absent_long_enough(addr: SocketAddr) -> bool {
    LAST_LEFT
        .lock()
        .map(|v| {
            v.iter()
                .all(|(a, t)| *a != addr || t.elapsed() >= MIN_ABSENCE)
        })
        .unwrap_or(true)
}

fn run<B: CardBackend>(addr: SocketAddr, mut card: VirtualCard<B>, ctl: &Control) {
    while !ctl.stop.load(Ordering::SeqCst) {
        if !ctl.present.load(Ordering::SeqCst) || !absent_long_enough(addr) {
            std::thread::sleep(TICK);
            continue;
        }
        let stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "vpcd not reachable yet");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        ctl.connected.store(true, Ordering::SeqCst);
        tracing::info!(%addr, "virtual card in the vpcd reader");
        if let Err(e) = session(stream, &mut card, ctl) {
            tracing::info!(%addr, error = %e, "vpcd connection ended");
        }
        ctl.connected.store(false, Ordering::SeqCst);
        mark_left(addr);
        card.power_cycle();
    }
}

/// Why a vpcd session ended (all of them just mean "reconnect if present").
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("stopped")]
    Stopped,
    #[error("card removed")]
    Removed,
    #[error("vpcd closed the connection")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

fn session<B: CardBackend>(
    mut stream: TcpStream,
    card: &mut VirtualCard<B>,
    ctl: &Control,
) -> Result<(), SessionEnd> {
    stream.set_read_timeout(Some(TICK))?;
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Frames already buffered first.
        while let Some(frame) = take_frame(&mut buf) {
            answer(&mut stream, card, ctl, &frame)?;
        }
        if ctl.stop.load(Ordering::SeqCst) {
            return Err(SessionEnd::Stopped);
        }
        if !ctl.present.load(Ordering::SeqCst) {
            return Err(SessionEnd::Removed);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(SessionEnd::Closed),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                quickack(&stream);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// vpcd writes the length and the APDU in two sends; with Nagle on its side
/// and delayed ACKs on ours every APDU would stall ~40 ms. Quick ACK mode is
/// not sticky, so it is re-armed after every read.
fn quickack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// Splits one `len ‖ data` frame off the front of `buf`, if complete.
fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    if buf.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    if buf.len() < 2 + len {
        return None;
    }
    let frame = buf[2..2 + len].to_vec();
    buf.drain(..2 + len);
    Some(frame)
}

fn send_frame(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    // A response never exceeds 64 KiB: the queue hands out at most Le bytes.
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + data.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&data[..usize::from(len)]);
    stream.write_all(&out)
}

fn answer<B: CardBackend>(
    stream: &mut TcpStream,
    card: &mut VirtualCard<B>,
    ctl: &Control,
    frame: &[u8],
) -> Result<(), SessionEnd> {
    match frame {
        [] => Ok(()),
        [ctrl::POWER_OFF] | [ctrl::RESET] | [ctrl::POWER_ON] => {
            if frame[0] != ctrl::POWER_ON {
                card.power_cycle();
            }
            Ok(())
        }
        [ctrl::GET_ATR] => Ok(send_frame(stream, &contactless_atr())?),
        [other] => {
            tracing::warn!(control = other, "unknown vpcd control message");
            Ok(())
        }
        apdu => {
            let fault = ctl.faults.lock().ok().and_then(|mut q| q.pop_front());
            match fault {
                Some(Fault::RemoveOnNextApdu) => {
                    ctl.present.store(false, Ordering::SeqCst);
                    Err(SessionEnd::Removed)
                }
                Some(Fault::RawAnswer(raw)) => Ok(send_frame(stream, &raw)?),
                None => Ok(send_frame(stream, &card.process(apdu))?),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcsc::transport::{CardChannel, NfcCtap};
    use crate::pcsc::{LengthMode, PcscError};

    /// Echo authenticator: status 0x00 then the request reversed; waits for
    /// "touch" (reporting UPNEEDED) when the request starts with 0xFF.
    struct Echo {
        touches: Arc<AtomicBool>,
    }

    impl CardBackend for Echo {
        fn ctap(&mut self, request: &[u8], keepalive: &mut dyn FnMut(KeepaliveStatus)) -> Vec<u8> {
            if request.first() == Some(&0xFF) {
                keepalive(KeepaliveStatus::UPNEEDED);
                while !self.touches.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let mut out = vec![0x00];
            out.extend(request.iter().rev());
            out
        }
        fn management_version(&mut self) -> Option<String> {
            Some("5.7.1".into())
        }
        fn read_config(&mut self, page: u8) -> Option<Vec<u8>> {
            match page {
                0 => Some(vec![9, 0x02, 0x04, 0, 0xB5, 0xFE, 0x55, 0x10, 0x01, 0x01]),
                1 => Some(vec![5, 0x05, 0x03, 5, 7, 1]),
                _ => None,
            }
        }
    }

    /// The card called in-process, so the host logic runs without pcscd.
    struct Direct(VirtualCard<Echo>);
    impl CardChannel for Direct {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, PcscError> {
            Ok(self.0.process(apdu))
        }
        fn describe(&self) -> String {
            "direct".into()
        }
    }

    fn echo() -> (Direct, Arc<AtomicBool>) {
        let touches = Arc::new(AtomicBool::new(false));
        (
            Direct(VirtualCard::new(Echo {
                touches: Arc::clone(&touches),
            })),
            touches,
        )
    }

    #[test]
    fn atr_has_valid_checksum() {
        let atr = contactless_atr();
        assert_eq!(&atr[..4], &[0x3B, 0x8D, 0x80, 0x01]);
        assert_eq!(atr[1..].iter().fold(0, |a, b| a ^ b), 0);
    }

    #[test]
    fn long_ctap_messages_chain_and_come_back_in_61xx_pieces() {
        for mode in [LengthMode::Short, LengthMode::Extended] {
            let (card, _) = echo();
            let mut dev = NfcCtap::new(card, mode);
            assert_eq!(dev.select().unwrap(), "FIDO_2_0");
            let request: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
            let rsp = dev.cbor(&request, &mut |_| {}).unwrap();
            assert_eq!(rsp[0], 0);
            assert_eq!(&rsp[1..], request.iter().rev().copied().collect::<Vec<_>>());
        }
    }

    #[test]
    fn upneeded_reaches_the_keepalive_callback_until_touched() {
        let (card, touches) = echo();
        let mut dev = NfcCtap::new(card, LengthMode::Short).with_timing(crate::pcsc::NfcTiming {
            poll_interval: Duration::from_millis(5),
            timeout: Duration::from_secs(10),
        });
        let mut seen = Vec::new();
        let rsp = dev
            .cbor(&[0xFF, 1, 2], &mut |s| {
                seen.push(s);
                if seen.len() == 3 {
                    touches.store(true, Ordering::SeqCst);
                }
            })
            .unwrap();
        assert_eq!(rsp, vec![0, 2, 1, 0xFF]);
        assert!(
            seen.len() >= 3 && seen.iter().all(|s| *s == KeepaliveStatus::UPNEEDED),
            "{seen:?}"
        );
    }

    #[test]
    fn untouched_key_times_out_with_typed_error() {
        let (card, _) = echo();
        let mut dev = NfcCtap::new(card, LengthMode::Short).with_timing(crate::pcsc::NfcTiming {
            poll_interval: Duration::from_millis(5),
            timeout: Duration::from_millis(100),
        });
        assert!(matches!(
            dev.cbor(&[0xFF], &mut |_| {}),
            Err(PcscError::Timeout(_))
        ));
    }

    #[test]
    fn management_pages_merge() {
        let (card, _) = echo();
        let mut session = crate::pcsc::ApduSession::new(card, LengthMode::Short);
        let info = crate::pcsc::management::read(&mut session).unwrap();
        assert_eq!(info.version, "5.7.1");
        assert_eq!(info.tlv(0x02), Some(&[0, 0xB5, 0xFE, 0x55][..]));
        assert_eq!(info.tlv(0x05), Some(&[5, 7, 1][..]));
        assert_eq!(info.tlv(0x10), None);
    }

    #[test]
    fn ctap_before_select_and_unknown_aid_are_refused() {
        let (mut card, _) = echo();
        let rsp = Response::parse(&card.0.process(&hex::decode("801080000104").unwrap())).unwrap();
        assert_eq!(rsp.sw, StatusWord::INS_NOT_SUPPORTED);
        let rsp =
            Response::parse(&card.0.process(&hex::decode("00A4040003A0000000").unwrap())).unwrap();
        assert_eq!(rsp.sw, StatusWord::FILE_NOT_FOUND);
        let rsp = Response::parse(&card.0.process(&[0x00, 0xA4])).unwrap();
        assert_eq!(rsp.sw, StatusWord::WRONG_LENGTH);
    }

    #[test]
    fn frames_split_across_reads() {
        let mut buf = vec![0x00, 0x01, 0x04, 0x00, 0x05, 1, 2];
        assert_eq!(take_frame(&mut buf), Some(vec![4]));
        assert_eq!(take_frame(&mut buf), None);
        buf.extend_from_slice(&[3, 4, 5]);
        assert_eq!(take_frame(&mut buf), Some(vec![1, 2, 3, 4, 5]));
        assert!(buf.is_empty());
    }
}
