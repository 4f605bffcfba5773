//! Host side: APDU exchange with chaining and `61xx`, and CTAP over NFC / CCID
//! (CTAP 2.1 §11.3) on top of any [`CardChannel`].
//!
//! Layering: [`CardChannel`] moves one raw APDU (a PC/SC card via the `pcsc`
//! crate, or an in-process [`super::vcard::VirtualCard`] in tests);
//! [`ApduSession`] turns a logical command into a chain of short APDUs and
//! gathers `61xx` pieces; [`NfcCtap`] speaks NFCCTAP_MSG / NFCCTAP_GETRESPONSE.

use super::apdu::{self, Command, LengthMode, Response, StatusWord, SHORT_MAX_LC, SHORT_MAX_LE};
use super::PcscError;
// SW 9100 carries the same status byte as a CTAPHID KEEPALIVE (CTAP 2.1
// §11.3.9.2 refers to §11.2.9.1.5), so one open type serves both transports.
use crate::ctap2::{CtapDevice, CtapError};
use crate::ctaphid::KeepaliveStatus;
use crate::transport::TransportError;
use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

/// Upper bound on one reassembled response: a CTAP2 message is at most a few
/// kB (YubiKey maxMsgSize 1200/2048); anything far beyond is a faulty card.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// Most GET RESPONSE rounds for one response.
pub const MAX_PIECES: usize = 512;

/// Moves one APDU to a card and its response back.
pub trait CardChannel: Send {
    /// Sends one command APDU and returns the raw response (data ‖ SW1 SW2).
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, PcscError>;
    /// Reader name (or a test label) for logs and errors.
    fn describe(&self) -> String;
}

impl<C: CardChannel + ?Sized> CardChannel for Box<C> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, PcscError> {
        (**self).transmit(apdu)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// A card in a PC/SC reader, connected in shared mode.
pub struct PcscCard {
    // The context must outlive the card handle; both are released on drop.
    _ctx: pcsc::Context,
    card: pcsc::Card,
    reader: String,
    buf: Vec<u8>,
}

impl std::fmt::Debug for PcscCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscCard")
            .field("reader", &self.reader)
            .finish()
    }
}

impl PcscCard {
    /// Connects to the card in `reader` (T=0 or T=1, whichever the reader chose).
    pub fn connect(reader: &str) -> Result<Self, PcscError> {
        let ctx = super::establish()?;
        let name =
            CString::new(reader).map_err(|_| PcscError::ReaderNotFound(reader.to_owned()))?;
        let card = ctx
            .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
            .map_err(|e| match e {
                // Before we hold the card, "removed" just means "not there".
                pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard => {
                    PcscError::NoCard(reader.to_owned())
                }
                e => PcscError::from_pcsc(e, reader),
            })?;
        Ok(Self {
            _ctx: ctx,
            card,
            reader: reader.to_owned(),
            buf: vec![0; pcsc::MAX_BUFFER_SIZE_EXTENDED],
        })
    }

    /// The card's ATR as the reader reports it now.
    pub fn atr(&self) -> Result<Vec<u8>, PcscError> {
        let status = self
            .card
            .status2_owned()
            .map_err(|e| PcscError::from_pcsc(e, &self.reader))?;
        Ok(status.atr().to_vec())
    }

    pub fn reader(&self) -> &str {
        &self.reader
    }
}

impl PcscCard {
    /// Whether the card left the reader, watching for up to [`GONE_GRACE`]
    /// (the reader driver may notice only at its next presence poll).
    fn card_gone(&self) -> bool {
        let deadline = Instant::now() + GONE_GRACE;
        loop {
            match self.card.status2_owned() {
                Ok(st) if !st.status().contains(pcsc::Status::PRESENT) => return true,
                Ok(_) => {}
                Err(_) => return true,
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How long a short answer waits for the reader to notice a removal
/// (pcscd polls presence about every 0.4 s).
const GONE_GRACE: Duration = Duration::from_millis(1200);

impl CardChannel for PcscCard {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, PcscError> {
        match self.card.transmit(apdu, &mut self.buf) {
            Ok(rsp) if rsp.len() >= 2 => Ok(rsp.to_vec()),
            Ok(rsp) => {
                // Some drivers (vpcd among them) report a card that vanished
                // mid-exchange as an empty success. Tell that apart from a
                // card that really answered garbage before calling it malformed.
                let rsp = rsp.to_vec();
                if self.card_gone() {
                    Err(PcscError::CardRemoved(self.reader.clone()))
                } else {
                    Ok(rsp)
                }
            }
            // With a card handle in hand, a vanished service means the reader
            // under it went away (pcscd stopped, reader driver gone).
            Err(
                pcsc::Error::NoService | pcsc::Error::ServiceStopped | pcsc::Error::InvalidHandle,
            ) => Err(PcscError::ReaderGone(self.reader.clone())),
            Err(e) => Err(PcscError::from_pcsc(e, &self.reader)),
        }
    }
    fn describe(&self) -> String {
        format!("pcsc:{}", self.reader)
    }
}

/// Sends logical commands over a [`CardChannel`]: chaining on the way out,
/// `61xx` GET RESPONSE and `6Cxx` retry on the way back.
#[derive(Debug)]
pub struct ApduSession<C> {
    channel: C,
    mode: LengthMode,
}

impl<C: CardChannel> ApduSession<C> {
    pub fn new(channel: C, mode: LengthMode) -> Self {
        Self { channel, mode }
    }

    pub fn mode(&self) -> LengthMode {
        self.mode
    }

    pub fn channel(&self) -> &C {
        &self.channel
    }

    pub fn channel_mut(&mut self) -> &mut C {
        &mut self.channel
    }

    pub fn into_channel(self) -> C {
        self.channel
    }

    fn transmit(&mut self, cmd: &Command) -> Result<Response, PcscError> {
        let bytes = cmd.encode(self.mode).map_err(PcscError::Malformed)?;
        let raw = self.channel.transmit(&bytes)?;
        let rsp = Response::parse(&raw).map_err(PcscError::Malformed)?;
        tracing::trace!(command = ?cmd, response = ?rsp, "apdu");
        Ok(rsp)
    }

    /// Sends `cmd` (chained if its data is too long for one APDU) and returns
    /// the whole response. A link refused mid-chain returns that refusal.
    pub fn send(&mut self, cmd: &Command) -> Result<Response, PcscError> {
        let mut cmd = cmd.clone();
        if self.mode == LengthMode::Short {
            // A short Le cannot ask for more than 256; the rest comes via 61xx.
            cmd.le = cmd.le.map(|le| le.min(SHORT_MAX_LE));
        }
        let chunk = match self.mode {
            LengthMode::Short => SHORT_MAX_LC,
            LengthMode::Extended => apdu::EXTENDED_MAX_LC,
        };
        let links = cmd.chain(chunk);
        let last = links.len() - 1;
        for link in &links[..last] {
            let rsp = self.transmit(link)?;
            if !rsp.sw.is_success() {
                return Ok(rsp);
            }
        }
        let mut rsp = self.transmit(&links[last])?;
        if let Some(le) = rsp.sw.exact_length() {
            // 6Cxx: same command again with the Le the card wants (ISO 7816-3 §12.2.2).
            let mut retry = links[last].clone();
            retry.le = Some(le);
            rsp = self.transmit(&retry)?;
        }
        let mut data = std::mem::take(&mut rsp.data);
        let mut pieces = 0;
        while let Some(remaining) = rsp.sw.bytes_remaining() {
            if data.len() >= MAX_RESPONSE {
                return Err(PcscError::ResponseTooLong(MAX_RESPONSE));
            }
            // A card that keeps saying 61xx without sending data would loop
            // forever; 256-byte pieces reach MAX_RESPONSE in 256 rounds.
            pieces += 1;
            if pieces > MAX_PIECES {
                return Err(PcscError::TooManyPieces(MAX_PIECES));
            }
            rsp = self.transmit(&Command::get_response(remaining))?;
            data.extend_from_slice(&rsp.data);
        }
        if data.len() > MAX_RESPONSE {
            return Err(PcscError::ResponseTooLong(MAX_RESPONSE));
        }
        Ok(Response::new(data, rsp.sw))
    }

    /// SELECT by AID; the application's answer on `9000`.
    pub fn select(&mut self, aid: &[u8], name: &'static str) -> Result<Vec<u8>, PcscError> {
        let rsp = self.send(&Command::select(aid))?;
        match rsp.sw {
            StatusWord::SUCCESS => Ok(rsp.data),
            StatusWord::FILE_NOT_FOUND => Err(PcscError::AppNotFound(name)),
            sw => Err(PcscError::Status {
                command: "SELECT",
                sw,
            }),
        }
    }
}

/// Timing of one CTAP exchange over NFC.
#[derive(Debug, Clone, Copy)]
pub struct NfcTiming {
    /// Pause between NFCCTAP_GETRESPONSE polls.
    pub poll_interval: Duration,
    /// Give up on a message after this long (touch included).
    pub timeout: Duration,
}

impl Default for NfcTiming {
    fn default() -> Self {
        // YubiKeys wait up to 30 s for a touch; leave a margin.
        Self {
            poll_interval: Duration::from_millis(100),
            timeout: Duration::from_secs(35),
        }
    }
}

/// CTAP2 over the FIDO applet (CTAP 2.1 §11.3): SELECT, then NFCCTAP_MSG with
/// GETRESPONSE polling while the authenticator works or waits for a touch.
#[derive(Debug)]
pub struct NfcCtap<C> {
    session: ApduSession<C>,
    timing: NfcTiming,
    version: Option<Vec<u8>>,
}

impl NfcCtap<PcscCard> {
    /// Connects to the card in `reader` and selects the FIDO applet.
    pub fn open(reader: &str, mode: LengthMode) -> Result<Self, PcscError> {
        let mut dev = Self::new(PcscCard::connect(reader)?, mode);
        dev.select()?;
        Ok(dev)
    }
}

impl<C: CardChannel> NfcCtap<C> {
    pub fn new(channel: C, mode: LengthMode) -> Self {
        Self {
            session: ApduSession::new(channel, mode),
            timing: NfcTiming::default(),
            version: None,
        }
    }

    pub fn with_timing(mut self, timing: NfcTiming) -> Self {
        self.timing = timing;
        self
    }

    pub fn session_mut(&mut self) -> &mut ApduSession<C> {
        &mut self.session
    }

    pub fn describe(&self) -> String {
        self.session.channel().describe()
    }

    /// SELECT the FIDO applet; returns its version string ("FIDO_2_0" or "U2F_V2").
    pub fn select(&mut self) -> Result<String, PcscError> {
        let version = self.session.select(apdu::aid::FIDO, "FIDO")?;
        let text = String::from_utf8_lossy(&version).into_owned();
        self.version = Some(version);
        Ok(text)
    }

    /// Sends one CTAP2 message (command byte ‖ CBOR) and returns the
    /// authenticator's response (status byte ‖ CBOR). SW 9100 updates go to
    /// `keepalive`, so a rig can ask for a touch on UPNEEDED.
    pub fn cbor(
        &mut self,
        request: &[u8],
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, PcscError> {
        if self.version.is_none() {
            self.select()?;
        }
        let le = match self.session.mode() {
            LengthMode::Short => SHORT_MAX_LE,
            LengthMode::Extended => apdu::EXTENDED_MAX_LE,
        };
        // P1 0x80: we support NFCCTAP_GETRESPONSE (CTAP 2.1 §11.3.9.2).
        let msg = Command::new(0x80, apdu::ins::NFCCTAP_MSG, 0x80, 0x00)
            .with_data(request)
            .with_le(le);
        let started = Instant::now();
        let mut rsp = self.session.send(&msg)?;
        loop {
            match rsp.sw {
                StatusWord::SUCCESS => {
                    if rsp.data.is_empty() {
                        return Err(PcscError::EmptyCtapResponse);
                    }
                    return Ok(rsp.data);
                }
                StatusWord::FIDO_STATUS_UPDATE => {
                    let status = rsp
                        .data
                        .first()
                        .copied()
                        .map(KeepaliveStatus)
                        .unwrap_or(KeepaliveStatus::PROCESSING);
                    keepalive(status);
                    if started.elapsed() >= self.timing.timeout {
                        return Err(PcscError::Timeout(self.timing.timeout));
                    }
                    std::thread::sleep(self.timing.poll_interval);
                    let poll =
                        Command::new(0x80, apdu::ins::NFCCTAP_GETRESPONSE, 0x00, 0x00).with_le(le);
                    rsp = self.session.send(&poll)?;
                }
                sw => {
                    return Err(PcscError::Status {
                        command: "NFCCTAP_MSG",
                        sw,
                    })
                }
            }
        }
    }
}

/// The CTAP 2.1 client runs over PC/SC unchanged: `Client::new(NfcCtap::open(..)?)`.
impl<C: CardChannel> CtapDevice for NfcCtap<C> {
    fn cbor(
        &mut self,
        request: &[u8],
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, CtapError> {
        NfcCtap::cbor(self, request, keepalive).map_err(|e| CtapError::Transport(e.into()))
    }
}

impl From<PcscError> for TransportError {
    /// Folds into the link-neutral error the CTAP client carries: a key that
    /// left the reader is `Disconnected` like an unplugged HID key.
    fn from(e: PcscError) -> Self {
        match e {
            PcscError::CardRemoved(_) | PcscError::ReaderGone(_) => TransportError::Disconnected,
            PcscError::NoService(_)
            | PcscError::ReaderNotFound(_)
            | PcscError::NoCard(_)
            | PcscError::AppNotFound(_) => TransportError::Open {
                device: "pcsc".into(),
                reason: e.to_string(),
            },
            other => TransportError::Io(other.to_string()),
        }
    }
}

/// Reads the ATR-level state of every reader once, without blocking.
pub(super) fn snapshot(
    ctx: &pcsc::Context,
    names: &[CString],
) -> Result<Vec<pcsc::ReaderState>, PcscError> {
    let mut states: Vec<pcsc::ReaderState> = names
        .iter()
        .map(|n| pcsc::ReaderState::new(n.clone(), pcsc::State::UNAWARE))
        .collect();
    if states.is_empty() {
        return Ok(states);
    }
    ctx.get_status_change(Duration::ZERO, &mut states)
        .map_err(|e| PcscError::from_pcsc(e, ""))?;
    Ok(states)
}

/// Reader name as text (PC/SC names are ASCII in practice).
pub(super) fn name_of(name: &CStr) -> String {
    name.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card that answers every APDU with the same bytes.
    struct Stuck(Vec<u8>, usize);
    impl CardChannel for Stuck {
        fn transmit(&mut self, _: &[u8]) -> Result<Vec<u8>, PcscError> {
            self.1 += 1;
            Ok(self.0.clone())
        }
        fn describe(&self) -> String {
            "stuck".into()
        }
    }

    #[test]
    fn endless_61xx_is_bounded() {
        // 61 10 with no data, forever.
        let mut s = ApduSession::new(Stuck(vec![0x61, 0x10], 0), LengthMode::Short);
        let err = s.send(&Command::select(apdu::aid::FIDO)).unwrap_err();
        assert!(
            matches!(err, PcscError::TooManyPieces(MAX_PIECES)),
            "{err:?}"
        );
        assert_eq!(s.channel().1, MAX_PIECES + 1);
        // 61 00 with 256 bytes, forever: stops at the size cap.
        let mut big = vec![0xAA; 256];
        big.extend_from_slice(&[0x61, 0x00]);
        let mut s = ApduSession::new(Stuck(big, 0), LengthMode::Short);
        let err = s.send(&Command::select(apdu::aid::FIDO)).unwrap_err();
        assert!(
            matches!(err, PcscError::ResponseTooLong(MAX_RESPONSE)),
            "{err:?}"
        );
    }

    #[test]
    fn wrong_le_is_retried_once_with_the_cards_length() {
        struct SixC(Vec<Vec<u8>>);
        impl CardChannel for SixC {
            fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, PcscError> {
                self.0.push(apdu.to_vec());
                Ok(if self.0.len() == 1 {
                    vec![0x6C, 0x03]
                } else {
                    vec![1, 2, 3, 0x90, 0x00]
                })
            }
            fn describe(&self) -> String {
                "6c".into()
            }
        }
        let mut s = ApduSession::new(SixC(Vec::new()), LengthMode::Short);
        let rsp = s.send(&Command::get_response(256)).unwrap();
        assert_eq!(rsp.data, vec![1, 2, 3]);
        assert_eq!(s.channel().0[1], vec![0x00, 0xC0, 0x00, 0x00, 0x03]);
    }

    #[test]
    fn empty_ctap_answer_and_odd_status_are_typed() {
        let mut dev = NfcCtap::new(Stuck(vec![0x90, 0x00], 0), LengthMode::Short);
        assert!(matches!(
            dev.cbor(&[4], &mut |_| {}),
            Err(PcscError::EmptyCtapResponse)
        ));
        let mut dev = NfcCtap::new(Stuck(vec![0x6A, 0x82], 0), LengthMode::Short);
        assert!(matches!(
            dev.cbor(&[4], &mut |_| {}),
            Err(PcscError::AppNotFound("FIDO"))
        ));
    }
}
