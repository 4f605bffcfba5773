//! The CTAP 2.1 client (CTAP 2.1 §6), one file per command.
//!
//! [`Client`] speaks to any [`CtapDevice`]: something that carries a CTAP2
//! request (command byte ‖ CBOR) and returns its reply (status byte ‖ CBOR).
//! [`HidChannel`] is one today; a PC/SC transport can be another. Requests are
//! encoded canonically (`cbor::encode`), replies decoded with the strict
//! decoder, checked for shape and size, and turned into typed values; every
//! failure is one [`CtapError`].
//!
//! | file | command |
//! |---|---|
//! | `get_info.rs` | authenticatorGetInfo 0x04 (§6.4) |
//! | `client_pin.rs` | authenticatorClientPIN 0x06 (§6.5) |
//! | `make_credential.rs` | authenticatorMakeCredential 0x01 (§6.1) |
//! | `get_assertion.rs` | authenticatorGetAssertion 0x02 / GetNextAssertion 0x08 (§6.2, §6.3) |
//! | `config.rs` | authenticatorConfig 0x0D (§6.11) |
//! | `cred_mgmt.rs` | authenticatorCredentialManagement 0x0A and preview 0x41 (§6.8) |
//! | `reset.rs` | authenticatorReset 0x07 (§6.6), authenticatorSelection 0x0B (§6.9) |

mod client_pin;
mod config;
mod cred_mgmt;
mod get_assertion;
mod get_info;
mod make_credential;
mod reset;
mod status;
mod types;

pub use client_pin::{
    client_pin_keys, ClientPinSubCommand, Permissions, PinRetries, PinUvAuthToken,
};
pub use config::{config_auth_message, ConfigSubCommand, SetMinPinLength};
pub use cred_mgmt::{CredMgmtSubCommand, CredentialInfo, CredsMetadata, RpInfo, MAX_ENUMERATION};
pub use get_assertion::{GetAssertion, GetAssertionResponse};
pub use get_info::GetInfo;
pub use make_credential::{
    AttestedCredential, AuthenticatorData, MakeCredential, MakeCredentialExtensions,
    MakeCredentialResponse,
};
pub use status::StatusCode;
pub use types::{
    format_uuid, CredentialDescriptor, PubKeyCredParam, RpEntity, UserEntity, MAX_USER_ID_LEN,
};

use crate::cbor::{self, CborError, Value};
use crate::ctaphid::{HidChannel, HidError, KeepaliveStatus, MAX_MESSAGE_LEN};
use crate::pin::PinError;
use crate::transport::{Transport, TransportError};
use std::fmt;
use thiserror::Error;

/// A CTAP2 command byte (§6, research §2.0). Open newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtapCommand(pub u8);

impl CtapCommand {
    pub const MAKE_CREDENTIAL: Self = Self(0x01);
    pub const GET_ASSERTION: Self = Self(0x02);
    pub const GET_INFO: Self = Self(0x04);
    pub const CLIENT_PIN: Self = Self(0x06);
    pub const RESET: Self = Self(0x07);
    pub const GET_NEXT_ASSERTION: Self = Self(0x08);
    pub const BIO_ENROLLMENT: Self = Self(0x09);
    pub const CREDENTIAL_MANAGEMENT: Self = Self(0x0a);
    pub const SELECTION: Self = Self(0x0b);
    pub const LARGE_BLOBS: Self = Self(0x0c);
    pub const CONFIG: Self = Self(0x0d);
    pub const BIO_ENROLLMENT_PREVIEW: Self = Self(0x40);
    /// FIDO_2_1_PRE credential management (YubiKey 5.2–5.6).
    pub const CREDENTIAL_MANAGEMENT_PREVIEW: Self = Self(0x41);

    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::MAKE_CREDENTIAL => "makeCredential",
            Self::GET_ASSERTION => "getAssertion",
            Self::GET_INFO => "getInfo",
            Self::CLIENT_PIN => "clientPIN",
            Self::RESET => "reset",
            Self::GET_NEXT_ASSERTION => "getNextAssertion",
            Self::BIO_ENROLLMENT => "bioEnrollment",
            Self::CREDENTIAL_MANAGEMENT => "credentialManagement",
            Self::SELECTION => "selection",
            Self::LARGE_BLOBS => "largeBlobs",
            Self::CONFIG => "authenticatorConfig",
            Self::BIO_ENROLLMENT_PREVIEW => "bioEnrollment(preview)",
            Self::CREDENTIAL_MANAGEMENT_PREVIEW => "credentialManagement(preview)",
            _ => return None,
        })
    }
}

impl fmt::Display for CtapCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "command 0x{:02x}", self.0),
        }
    }
}

impl fmt::Debug for CtapCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a CTAP2 command failed. Never carries a PIN, token or shared secret.
#[derive(Debug, Error)]
pub enum CtapError {
    /// The authenticator answered with a non-zero status.
    #[error("{command} failed: {status}")]
    Status {
        command: CtapCommand,
        status: StatusCode,
    },
    /// CTAPHID failed (timeout, ERROR frame, bad packets, transport).
    #[error(transparent)]
    Hid(#[from] HidError),
    /// A non-HID link failed (PC/SC).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The reply body is not canonical CTAP2 CBOR.
    #[error("{command} reply is not canonical CBOR: {error}")]
    Cbor {
        command: CtapCommand,
        error: CborError,
    },
    /// The reply decodes but has the wrong shape.
    #[error("malformed {command} reply: {detail}")]
    Malformed {
        command: &'static str,
        detail: String,
    },
    /// The request is larger than the authenticator accepts (getInfo maxMsgSize).
    #[error("{command} request of {len} bytes exceeds the device's maxMsgSize {max}")]
    RequestTooLarge {
        command: CtapCommand,
        len: usize,
        max: usize,
    },
    /// The reply is larger than any CTAP message may be.
    #[error("{command} reply of {len} bytes exceeds {max}")]
    ReplyTooLarge {
        command: CtapCommand,
        len: usize,
        max: usize,
    },
    /// PIN protocol failure (bad key-agreement key, bad ciphertext, PIN length).
    #[error(transparent)]
    Pin(#[from] PinError),
    /// The caller asked for something invalid (checked before anything is sent).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The authenticator does not offer what the call needs.
    #[error("authenticator does not support {0}")]
    Unsupported(&'static str),
}

impl CtapError {
    /// The authenticator's status, if that is what failed.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            CtapError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A link that carries CTAP2 messages: CTAPHID_CBOR on HID/UDP, NFCCTAP_MSG on PC/SC.
pub trait CtapDevice {
    /// Sends `request` (command byte ‖ CBOR) and returns the reply (status ‖ CBOR),
    /// reporting KEEPALIVE status while the authenticator works.
    fn cbor(
        &mut self,
        request: &[u8],
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, CtapError>;
}

impl<T: Transport> CtapDevice for HidChannel<T> {
    fn cbor(
        &mut self,
        request: &[u8],
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, CtapError> {
        Ok(HidChannel::cbor(self, request, keepalive)?)
    }
}

impl<D: CtapDevice + ?Sized> CtapDevice for &mut D {
    fn cbor(
        &mut self,
        request: &[u8],
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, CtapError> {
        (**self).cbor(request, keepalive)
    }
}

impl<D: CtapDevice + ?Sized> CtapDevice for Box<D> {
    fn cbor(
        &mut self,
        request: &[u8],
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, CtapError> {
        (**self).cbor(request, keepalive)
    }
}

/// Default maxMsgSize when getInfo does not say (§6.4).
pub const DEFAULT_MAX_MSG_SIZE: usize = 1024;
/// Largest reply accepted: what CTAPHID can carry (57 + 128×59).
pub const MAX_REPLY_LEN: usize = MAX_MESSAGE_LEN;

/// A CTAP 2.1 client over one device.
#[derive(Debug)]
pub struct Client<D: CtapDevice> {
    device: D,
    max_msg_size: usize,
    /// Reuse one shared secret across PIN operations (issue #16); see
    /// [`Client::set_key_agreement_reuse`].
    reuse_key_agreement: bool,
    /// The shared secret kept for reuse (a secret type; dropped when reuse is switched off).
    kept_secret: Option<client_pin::KeptSecret>,
}

impl<D: CtapDevice> Client<D> {
    /// A client that assumes maxMsgSize 1024 until [`Client::get_info`] says more.
    pub fn new(device: D) -> Self {
        Self {
            device,
            max_msg_size: DEFAULT_MAX_MSG_SIZE,
            reuse_key_agreement: false,
            kept_secret: None,
        }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    pub fn into_device(self) -> D {
        self.device
    }

    /// The request size limit in force.
    pub fn max_msg_size(&self) -> usize {
        self.max_msg_size
    }

    /// Overrides the request size limit (normally taken from getInfo).
    pub fn set_max_msg_size(&mut self, max: usize) {
        self.max_msg_size = max.clamp(64, MAX_MESSAGE_LEN);
    }

    /// Sends `command` with an optional parameter map and returns the decoded
    /// reply map (`None` for an empty success reply).
    pub fn call(
        &mut self,
        command: CtapCommand,
        params: Option<&Value>,
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Option<Value>, CtapError> {
        let mut request = vec![command.0];
        if let Some(p) = params {
            cbor::encode_into(p, &mut request);
        }
        let reply = self.call_raw(command, &request, keepalive)?;
        if reply.is_empty() {
            return Ok(None);
        }
        let value = cbor::decode(&reply).map_err(|error| CtapError::Cbor { command, error })?;
        Ok(Some(value))
    }

    /// Sends a pre-encoded request and returns the reply body after a
    /// successful status byte (size limits checked both ways).
    pub fn call_raw(
        &mut self,
        command: CtapCommand,
        request: &[u8],
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, CtapError> {
        if request.len() > self.max_msg_size {
            return Err(CtapError::RequestTooLarge {
                command,
                len: request.len(),
                max: self.max_msg_size,
            });
        }
        let mut reply = self.device.cbor(request, keepalive)?;
        if reply.len() > MAX_REPLY_LEN {
            return Err(CtapError::ReplyTooLarge {
                command,
                len: reply.len(),
                max: MAX_REPLY_LEN,
            });
        }
        let Some(&status) = reply.first() else {
            return Err(CtapError::Malformed {
                command: command.name().unwrap_or("CTAP2"),
                detail: "empty reply (no status byte)".into(),
            });
        };
        if status != 0 {
            return Err(CtapError::Status {
                command,
                status: StatusCode(status),
            });
        }
        reply.remove(0);
        Ok(reply)
    }
}

/// Keepalive sink for commands that never wait for a touch.
pub(crate) fn no_keepalive(_: KeepaliveStatus) {}

#[cfg(test)]
pub(crate) mod test_device;
