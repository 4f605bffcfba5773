//! PIN/UV auth protocols One and Two (CTAP 2.1 §6.5.6, §6.5.7), for both sides.
//!
//! * [`KeyAgreement`]: a P-256 ECDH key pair. The platform makes an ephemeral
//!   one per operation ([`encapsulate`]); the authenticator (simulator) keeps
//!   one and regenerates it when the spec says so.
//! * [`SharedSecret`]: the KDF output for a protocol, with `encrypt`,
//!   `decrypt`, `authenticate` and `verify` (§6.5.4 interface).
//! * [`authenticate`] / [`verify`] with a pinUvAuthToken as key.
//! * PIN helpers for clientPIN: [`pin_hash`] (LEFT(SHA-256(PIN), 16)) and the
//!   64-byte padding of setPIN/changePIN ([`pad_pin`], [`unpad_pin`]).
//!
//! Every secret lives in a [`crate::secret::Secret`]; nothing here logs.

mod key_agreement;
mod protocol;

pub use key_agreement::{encapsulate, CoseKey, KeyAgreement};
pub use protocol::{authenticate, verify, SharedSecret};

use crate::secret::{SecretBytes, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;
use thiserror::Error;

/// The PIN/UV auth protocol in use. Closed: this crate implements exactly these;
/// numbers a device lists that we do not know stay numbers in `GetInfo`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinProtocol {
    /// §6.5.6: SHA-256 KDF, zero IV, 16-byte MACs.
    One,
    /// §6.5.7: HKDF, random IV, 32-byte MACs.
    Two,
}

impl PinProtocol {
    /// The protocol with wire number `n` (pinUvAuthProtocol), if implemented.
    pub fn from_number(n: u64) -> Option<Self> {
        match n {
            1 => Some(Self::One),
            2 => Some(Self::Two),
            _ => None,
        }
    }

    /// The wire number.
    pub fn number(self) -> u8 {
        match self {
            Self::One => 1,
            Self::Two => 2,
        }
    }

    /// Length of a pinUvAuthParam (16 for One, 32 for Two).
    pub fn mac_len(self) -> usize {
        match self {
            Self::One => 16,
            Self::Two => 32,
        }
    }
}

impl fmt::Debug for PinProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinProtocol({})", self.number())
    }
}

impl fmt::Display for PinProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PIN/UV auth protocol {}", self.number())
    }
}

/// Why a PIN protocol operation failed. Never carries secret material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PinError {
    /// The peer's COSE key is malformed or not a P-256 point.
    #[error("invalid key-agreement key: {0}")]
    InvalidKey(&'static str),
    /// A ciphertext whose length the protocol cannot decrypt.
    #[error("ciphertext of {0} bytes has an invalid length")]
    CiphertextLength(usize),
    /// A plaintext that is not a whole number of AES blocks.
    #[error("plaintext of {0} bytes is not a multiple of 16")]
    PlaintextLength(usize),
    /// PIN outside 4..=63 UTF-8 bytes (§6.5.5.5 / libfido2 `pad64`).
    #[error("PIN must be 4 to 63 bytes long, got {0}")]
    PinLength(usize),
    /// A padded PIN that is not 64 bytes ending in zero, or not UTF-8.
    #[error("padded PIN is malformed")]
    PaddedPin,
    /// A key of a length the protocol does not accept.
    #[error("key of {0} bytes has an invalid length")]
    KeyLength(usize),
}

/// Shortest and longest PIN in UTF-8 bytes (§6.5.5.5).
pub const MIN_PIN_BYTES: usize = 4;
pub const MAX_PIN_BYTES: usize = 63;
/// Length of a padded PIN (newPin is padded with zeros to 64 bytes).
pub const PADDED_PIN_LEN: usize = 64;

/// LEFT(SHA-256(pin), 16): what pinHashEnc encrypts (§6.5.5.7).
pub fn pin_hash(pin: &SecretString) -> SecretBytes {
    let mut digest = Sha256::digest(pin.expose().as_bytes());
    let out = SecretBytes::from_slice(&digest[..16]);
    zeroize::Zeroize::zeroize(digest.as_mut_slice());
    out
}

/// The PIN's UTF-8 bytes zero-padded to 64 bytes (setPIN / changePIN newPinEnc).
pub fn pad_pin(pin: &SecretString) -> Result<SecretBytes, PinError> {
    let bytes = pin.expose().as_bytes();
    if !(MIN_PIN_BYTES..=MAX_PIN_BYTES).contains(&bytes.len()) {
        return Err(PinError::PinLength(bytes.len()));
    }
    let mut padded = SecretBytes::new(vec![0u8; PADDED_PIN_LEN]);
    padded.expose_mut()[..bytes.len()].copy_from_slice(bytes);
    Ok(padded)
}

/// The authenticator side of [`pad_pin`]: the PIN before the first zero byte.
/// A 64th byte that is not zero, or bytes that are not UTF-8, are refused.
/// The minimum length policy (in code points) is the caller's.
pub fn unpad_pin(padded: &[u8]) -> Result<SecretString, PinError> {
    if padded.len() != PADDED_PIN_LEN || padded[PADDED_PIN_LEN - 1] != 0 {
        return Err(PinError::PaddedPin);
    }
    let end = padded
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(PADDED_PIN_LEN);
    let pin = std::str::from_utf8(&padded[..end]).map_err(|_| PinError::PaddedPin)?;
    Ok(SecretString::new(pin.to_owned()))
}

#[cfg(test)]
mod tests;
