//! CTAP status codes (CTAP 2.1 §8.2 "Status codes"): the first byte of every
//! CTAPHID_CBOR reply. Open: unknown codes survive and print as numbers.

use std::fmt;

/// A CTAP1/CTAP2 status byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(pub u8);

macro_rules! status_codes {
    ($($(#[$doc:meta])* $name:ident = $value:expr,)*) => {
        impl StatusCode {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// The spec name (CTAP 2.1 §8.2, python-fido2 `CtapError.ERR`), if known.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$name => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

status_codes! {
    SUCCESS = 0x00,
    INVALID_COMMAND = 0x01,
    INVALID_PARAMETER = 0x02,
    INVALID_LENGTH = 0x03,
    INVALID_SEQ = 0x04,
    TIMEOUT = 0x05,
    CHANNEL_BUSY = 0x06,
    LOCK_REQUIRED = 0x0a,
    INVALID_CHANNEL = 0x0b,
    CBOR_UNEXPECTED_TYPE = 0x11,
    INVALID_CBOR = 0x12,
    MISSING_PARAMETER = 0x14,
    LIMIT_EXCEEDED = 0x15,
    /// Removed in CTAP 2.1; kept so older firmware is named.
    UNSUPPORTED_EXTENSION = 0x16,
    FP_DATABASE_FULL = 0x17,
    LARGE_BLOB_STORAGE_FULL = 0x18,
    CREDENTIAL_EXCLUDED = 0x19,
    PROCESSING = 0x21,
    INVALID_CREDENTIAL = 0x22,
    USER_ACTION_PENDING = 0x23,
    OPERATION_PENDING = 0x24,
    NO_OPERATIONS = 0x25,
    UNSUPPORTED_ALGORITHM = 0x26,
    OPERATION_DENIED = 0x27,
    KEY_STORE_FULL = 0x28,
    /// Removed in CTAP 2.1 (2.0: NOT_BUSY).
    NOT_BUSY = 0x29,
    /// Removed in CTAP 2.1 (2.0: NO_OPERATION_PENDING).
    NO_OPERATION_PENDING = 0x2a,
    UNSUPPORTED_OPTION = 0x2b,
    INVALID_OPTION = 0x2c,
    KEEPALIVE_CANCEL = 0x2d,
    NO_CREDENTIALS = 0x2e,
    USER_ACTION_TIMEOUT = 0x2f,
    NOT_ALLOWED = 0x30,
    PIN_INVALID = 0x31,
    PIN_BLOCKED = 0x32,
    PIN_AUTH_INVALID = 0x33,
    PIN_AUTH_BLOCKED = 0x34,
    PIN_NOT_SET = 0x35,
    /// CTAP 2.0 name: PIN_REQUIRED.
    PUAT_REQUIRED = 0x36,
    PIN_POLICY_VIOLATION = 0x37,
    /// Reserved in 2.1 (2.0: PIN_TOKEN_EXPIRED).
    PIN_TOKEN_EXPIRED = 0x38,
    REQUEST_TOO_LARGE = 0x39,
    ACTION_TIMEOUT = 0x3a,
    UP_REQUIRED = 0x3b,
    UV_BLOCKED = 0x3c,
    INTEGRITY_FAILURE = 0x3d,
    INVALID_SUBCOMMAND = 0x3e,
    UV_INVALID = 0x3f,
    UNAUTHORIZED_PERMISSION = 0x40,
    OTHER = 0x7f,
    SPEC_LAST = 0xdf,
    EXTENSION_FIRST = 0xe0,
    EXTENSION_LAST = 0xef,
    VENDOR_FIRST = 0xf0,
    VENDOR_LAST = 0xff,
}

impl StatusCode {
    /// Extension-specific range 0xE0..=0xEF.
    pub fn is_extension(self) -> bool {
        (0xe0..=0xef).contains(&self.0)
    }

    /// Vendor-specific range 0xF0..=0xFF.
    pub fn is_vendor(self) -> bool {
        self.0 >= 0xf0
    }

    /// No touch came in time: 0x2F (OpenSK) and 0x3A (YubiKey) mean the same
    /// to the station (research §1.6).
    pub fn is_user_action_timeout(self) -> bool {
        self == Self::USER_ACTION_TIMEOUT || self == Self::ACTION_TIMEOUT
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} (0x{:02x})", self.0),
            None if self.is_extension() => write!(f, "extension error 0x{:02x}", self.0),
            None if self.is_vendor() => write!(f, "vendor error 0x{:02x}", self.0),
            None => write!(f, "unknown status 0x{:02x}", self.0),
        }
    }
}

impl fmt::Debug for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(StatusCode(0x37).to_string(), "PIN_POLICY_VIOLATION (0x37)");
        assert_eq!(StatusCode(0x28).name(), Some("KEY_STORE_FULL"));
        assert_eq!(StatusCode(0x36).name(), Some("PUAT_REQUIRED"));
        assert_eq!(StatusCode(0x1c).to_string(), "unknown status 0x1c");
        assert_eq!(StatusCode(0xe5).to_string(), "extension error 0xe5");
        assert_eq!(StatusCode(0xf3).to_string(), "vendor error 0xf3");
        assert!(StatusCode(0x3a).is_user_action_timeout());
        // Every code of research §2.7 has a name.
        for c in [
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0a, 0x0b, 0x11, 0x12, 0x14, 0x15, 0x16,
            0x17, 0x18, 0x19,
        ]
        .into_iter()
        .chain(0x21..=0x40)
        .chain([0x7f, 0xdf])
        {
            assert!(StatusCode(c).name().is_some(), "0x{c:02x}");
        }
    }
}
