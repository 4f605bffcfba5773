//! Keys over PC/SC: CTAP over NFC / CCID (CTAP 2.1 §11.3) and device info
//! over the YubiKey management application.
//!
//! | file | job |
//! |---|---|
//! | [`apdu`] | pure ISO 7816-4 codec: short/extended Lc/Le, chaining, `61xx`, status words |
//! | [`transport`] | host side: [`CardChannel`], [`ApduSession`], [`NfcCtap`] (NFCCTAP_MSG + GETRESPONSE) |
//! | [`management`] | SELECT management AID, READ CONFIG pages → device info TLVs |
//! | [`vcard`] | a virtual contactless card (the simulator) for pcscd's vpcd driver |
//!
//! This module-level file holds the typed error and reader discovery
//! ([`list_readers`], [`Monitor`] for card and reader hot-plug).

pub mod apdu;
pub mod management;
pub mod simcard;
pub mod transport;
pub mod vcard;

pub use apdu::{LengthMode, StatusWord};
pub use management::ManagementInfo;
pub use transport::{ApduSession, CardChannel, NfcCtap, NfcTiming, PcscCard};

use std::ffi::CString;
use std::time::{Duration, Instant};
use thiserror::Error;

/// A PC/SC failure, classified by what the station should do about it.
#[derive(Debug, Error)]
pub enum PcscError {
    /// pcscd is not running or not reachable: an operator problem.
    #[error("PC/SC service unavailable ({0}); is pcscd running?")]
    NoService(pcsc::Error),
    #[error("no reader named {0:?}")]
    ReaderNotFound(String),
    /// The reader vanished (unplugged) after we found it.
    #[error("reader {0:?} went away")]
    ReaderGone(String),
    #[error("no card in reader {0:?}")]
    NoCard(String),
    /// The card left the field or lost power in the middle of an exchange.
    #[error("card removed from {0:?} mid-exchange")]
    CardRemoved(String),
    /// The card answered bytes that are not a response APDU.
    #[error("malformed APDU: {0}")]
    Malformed(apdu::ApduError),
    #[error("{command} failed: {sw}")]
    Status {
        command: &'static str,
        sw: StatusWord,
    },
    #[error("the {0} application is not on this card")]
    AppNotFound(&'static str),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("response longer than {0} bytes")]
    ResponseTooLong(usize),
    /// The card kept announcing more data (61xx) beyond any sane count.
    #[error("more than {0} GET RESPONSE rounds")]
    TooManyPieces(usize),
    #[error("empty CTAP response (no status byte)")]
    EmptyCtapResponse,
    /// The management application's answer does not follow `len ‖ TLVs`.
    #[error("malformed device info: {0}")]
    DeviceInfo(String),
    #[error("PC/SC error on {reader:?}: {source}")]
    Other { reader: String, source: pcsc::Error },
}

impl PcscError {
    /// Classifies a `pcsc` error on `reader`.
    pub fn from_pcsc(err: pcsc::Error, reader: &str) -> Self {
        use pcsc::Error as E;
        match err {
            E::NoService | E::ServiceStopped | E::NoReadersAvailable if reader.is_empty() => {
                Self::NoService(err)
            }
            E::NoService | E::ServiceStopped => Self::NoService(err),
            E::UnknownReader => Self::ReaderNotFound(reader.to_owned()),
            E::ReaderUnavailable | E::NoReadersAvailable => Self::ReaderGone(reader.to_owned()),
            E::NoSmartcard => Self::NoCard(reader.to_owned()),
            // The card went away under us: removed, reset by another party,
            // unpowered, or the reader gave up on the exchange.
            E::RemovedCard
            | E::ResetCard
            | E::UnpoweredCard
            | E::UnresponsiveCard
            | E::NotTransacted
            | E::CommError => Self::CardRemoved(reader.to_owned()),
            other => Self::Other {
                reader: reader.to_owned(),
                source: other,
            },
        }
    }
}

/// Device info (serial, form factor, firmware) of the key in `reader`, read
/// through the management application (`devices info --device pcsc:READER`).
pub fn device_info(reader: &str) -> Result<crate::yubikey::DeviceInfo, PcscError> {
    management::device_info(reader)?.parse()
}

/// A user-scope context to pcscd.
pub(crate) fn establish() -> Result<pcsc::Context, PcscError> {
    pcsc::Context::establish(pcsc::Scope::User).map_err(PcscError::NoService)
}

/// One reader and what is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInfo {
    pub name: String,
    /// A card is present (in the field / inserted).
    pub card_present: bool,
    /// Another application holds the card exclusively.
    pub exclusive: bool,
    /// The card's ATR, when present.
    pub atr: Option<Vec<u8>>,
}

/// Lists readers and their cards; no readers is an empty list, not an error.
pub fn list_readers() -> Result<Vec<ReaderInfo>, PcscError> {
    let ctx = establish()?;
    let names = reader_names(&ctx)?;
    let states = transport::snapshot(&ctx, &names)?;
    Ok(states
        .iter()
        .map(|s| {
            let present = s.event_state().contains(pcsc::State::PRESENT);
            ReaderInfo {
                name: transport::name_of(s.name()),
                card_present: present,
                exclusive: s.event_state().contains(pcsc::State::EXCLUSIVE),
                atr: present.then(|| s.atr().to_vec()),
            }
        })
        .collect())
}

fn reader_names(ctx: &pcsc::Context) -> Result<Vec<CString>, PcscError> {
    match ctx.list_readers_owned() {
        Ok(names) => Ok(names),
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(e) => Err(PcscError::from_pcsc(e, "")),
    }
}

/// Waits at most `timeout` for a card in `reader`; returns its ATR.
pub fn wait_for_card(reader: &str, timeout: Duration) -> Result<Vec<u8>, PcscError> {
    wait_for(reader, timeout, true)
}

/// Waits at most `timeout` until `reader` is empty (the key was taken away).
pub fn wait_for_removal(reader: &str, timeout: Duration) -> Result<(), PcscError> {
    wait_for(reader, timeout, false).map(drop)
}

/// Longest single `SCardGetStatusChange` wait. pcsc-lite 1.9 can miss a
/// change that lands between two calls, so every slice ends with a fresh
/// (UNAWARE) look instead of trusting the previous state.
const STATUS_SLICE: Duration = Duration::from_millis(250);

fn wait_for(reader: &str, timeout: Duration, present: bool) -> Result<Vec<u8>, PcscError> {
    let ctx = establish()?;
    let name = CString::new(reader).map_err(|_| PcscError::ReaderNotFound(reader.to_owned()))?;
    let mut states = [pcsc::ReaderState::new(name.clone(), pcsc::State::UNAWARE)];
    let deadline = Instant::now() + timeout;
    loop {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(STATUS_SLICE);
        match ctx.get_status_change(slice, &mut states) {
            Ok(()) => {}
            Err(pcsc::Error::Timeout) if Instant::now() < deadline => {
                states[0] = pcsc::ReaderState::new(name.clone(), pcsc::State::UNAWARE);
                continue;
            }
            Err(pcsc::Error::Timeout) => return Err(PcscError::Timeout(timeout)),
            Err(e) => return Err(PcscError::from_pcsc(e, reader)),
        }
        let state = states[0].event_state();
        if state.intersects(pcsc::State::UNKNOWN | pcsc::State::IGNORE) {
            return Err(PcscError::ReaderNotFound(reader.to_owned()));
        }
        let usable = state.contains(pcsc::State::PRESENT) && !state.contains(pcsc::State::MUTE);
        if present && usable {
            return Ok(states[0].atr().to_vec());
        }
        if !present && state.contains(pcsc::State::EMPTY) {
            return Ok(Vec::new());
        }
        states[0].sync_current_state();
    }
}

/// A change seen by [`Monitor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    ReaderAdded(String),
    ReaderRemoved(String),
    CardInserted { reader: String, atr: Vec<u8> },
    CardRemoved(String),
}

/// Watches readers and cards with `SCardGetStatusChange`, including reader
/// hot-plug through the `\\?PnP?\Notification` pseudo reader.
pub struct Monitor {
    ctx: pcsc::Context,
    // Index 0 is the PnP pseudo reader; the rest are real readers.
    states: Vec<pcsc::ReaderState>,
    // Card presence last reported per reader (index = states index - 1);
    // events are differences against it, so a missed notification is caught
    // at the next refresh instead of lost.
    present: Vec<bool>,
    pending: std::collections::VecDeque<ReaderEvent>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.states[1..]
            .iter()
            .map(|s| transport::name_of(s.name()))
            .collect();
        f.debug_struct("Monitor").field("readers", &names).finish()
    }
}

impl Monitor {
    /// Starts watching; the first [`Monitor::next`] reports what is there now.
    pub fn new() -> Result<Self, PcscError> {
        let ctx = establish()?;
        let mut monitor = Self {
            ctx,
            states: vec![pcsc::ReaderState::new(
                pcsc::PNP_NOTIFICATION(),
                pcsc::State::UNAWARE,
            )],
            present: Vec::new(),
            pending: Default::default(),
        };
        monitor.rescan()?;
        Ok(monitor)
    }

    fn rescan(&mut self) -> Result<(), PcscError> {
        let names = reader_names(&self.ctx)?;
        let mut i = 1;
        while i < self.states.len() {
            if names.iter().any(|n| n.as_c_str() == self.states[i].name()) {
                i += 1;
            } else {
                let gone = self.states.remove(i);
                self.present.remove(i - 1);
                self.pending
                    .push_back(ReaderEvent::ReaderRemoved(transport::name_of(gone.name())));
            }
        }
        for name in names {
            if !self.states[1..].iter().any(|s| s.name() == name.as_c_str()) {
                self.pending
                    .push_back(ReaderEvent::ReaderAdded(transport::name_of(&name)));
                self.states
                    .push(pcsc::ReaderState::new(name, pcsc::State::UNAWARE));
                self.present.push(false);
            }
        }
        Ok(())
    }

    /// Compares what pcscd reported with what we reported before.
    fn diff(&mut self) {
        for (s, was) in self.states[1..].iter_mut().zip(self.present.iter_mut()) {
            let now = s.event_state();
            let is = now.contains(pcsc::State::PRESENT) && !now.contains(pcsc::State::MUTE);
            let name = transport::name_of(s.name());
            if is && !*was {
                self.pending.push_back(ReaderEvent::CardInserted {
                    reader: name,
                    atr: s.atr().to_vec(),
                });
            } else if !is && *was {
                self.pending.push_back(ReaderEvent::CardRemoved(name));
            }
            *was = is;
            s.sync_current_state();
        }
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` on timeout.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<ReaderEvent>, PcscError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(Some(ev));
            }
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(STATUS_SLICE);
            let mut readers_changed = false;
            match self.ctx.get_status_change(slice, &mut self.states) {
                Ok(()) => {
                    readers_changed = self.states[0].event_state().contains(pcsc::State::CHANGED)
                        || self.states[1..].iter().any(|s| {
                            s.event_state()
                                .intersects(pcsc::State::UNKNOWN | pcsc::State::IGNORE)
                        });
                    self.states[0].sync_current_state();
                }
                Err(pcsc::Error::Timeout) => {
                    // Fresh look at every reader (see STATUS_SLICE).
                    for s in &mut self.states[1..] {
                        *s = pcsc::ReaderState::new(s.name().to_owned(), pcsc::State::UNAWARE);
                    }
                    match self
                        .ctx
                        .get_status_change(Duration::ZERO, &mut self.states[1..])
                    {
                        Ok(()) | Err(pcsc::Error::Timeout) => {}
                        Err(pcsc::Error::UnknownReader) => readers_changed = true,
                        Err(e) => return Err(PcscError::from_pcsc(e, "")),
                    }
                }
                Err(e) => return Err(PcscError::from_pcsc(e, "")),
            }
            if readers_changed {
                self.rescan()?;
            }
            self.diff();
            if self.pending.is_empty() && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}
