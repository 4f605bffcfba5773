//! Secrets as a type (HOUSE_STYLE principle 6).
//!
//! A [`Secret`] zeroizes its contents on drop, never prints them (`Debug` says
//! `Secret(<redacted>)`), and hands them out only through methods named `expose*`,
//! so every place that touches a PIN, a PIN token, an ECDH secret, a decrypted
//! payload or a private key is visible in a grep for `expose`.
//!
//! The value lives in a `Box`, so moving a `Secret` moves a pointer and leaves
//! no stale copy of the bytes behind, and its pages (and a `Vec`'s or
//! `String`'s buffer) are locked in memory while it lives ([`crate::memlock`],
//! best effort, within `RLIMIT_MEMLOCK`).

use crate::memlock::Locked;
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// What a [`Secret`] can hold: zeroizable, and able to name the heap buffer it
/// owns (if any) so that buffer can be locked too.
pub trait SecretStorage: Zeroize {
    /// `(address, length)` of the owned heap buffer; `None` for inline values.
    fn heap_region(&self) -> Option<(usize, usize)> {
        None
    }
}

impl SecretStorage for Vec<u8> {
    fn heap_region(&self) -> Option<(usize, usize)> {
        (self.capacity() > 0).then(|| (self.as_ptr() as usize, self.capacity()))
    }
}

impl SecretStorage for String {
    fn heap_region(&self) -> Option<(usize, usize)> {
        (self.capacity() > 0).then(|| (self.as_ptr() as usize, self.capacity()))
    }
}

impl<const N: usize> SecretStorage for [u8; N] {}

/// A value that is zeroized on drop, redacted in `Debug`, and kept in locked
/// memory where the OS allows.
pub struct Secret<T: SecretStorage> {
    // Field order is drop order: zeroize and free first, then unlock.
    value: Box<Zeroizing<T>>,
    _locked: (Locked, Locked),
}

impl<T: SecretStorage> Secret<T> {
    /// Wraps `value`; the caller should not keep other copies.
    ///
    /// A buffer that grows through [`Secret::expose_mut`] after this is still
    /// zeroized on drop, but its new pages are not locked (and the old buffer
    /// is freed unzeroized): reserve the capacity up front.
    pub fn new(value: T) -> Self {
        let value = Box::new(Zeroizing::new(value));
        let heap = match value.heap_region() {
            Some((addr, len)) => Locked::region(addr, len),
            None => Locked::region(0, 0),
        };
        let inline = Locked::value::<Zeroizing<T>>(&value);
        Self {
            value,
            _locked: (inline, heap),
        }
    }

    /// Read access to the secret.
    pub fn expose(&self) -> &T {
        &self.value
    }

    /// Write access to the secret (for in-place decryption, padding, …).
    pub fn expose_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: SecretStorage + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self::new(self.expose().clone())
    }
}

impl<T: SecretStorage> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<T: SecretStorage> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

/// Secret bytes: PIN tokens, shared secrets, decrypted JWE plaintexts, private scalars.
pub type SecretBytes = Secret<Vec<u8>>;

/// Secret text: PINs.
pub type SecretString = Secret<String>;

impl SecretBytes {
    /// Copies `bytes` into a new secret.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let pin = SecretString::new("482913".to_string());
        let shown = format!("{pin:?} {:?}", SecretBytes::from_slice(b"token"));
        assert!(!shown.contains("482913"));
        assert!(!shown.contains("token"));
        assert_eq!(shown, "Secret(<redacted>) Secret(<redacted>)");
    }

    #[test]
    fn expose_gives_the_value() {
        let mut s = SecretBytes::from_slice(&[1, 2, 3]);
        s.expose_mut().push(4);
        assert_eq!(s.expose(), &vec![1, 2, 3, 4]);
    }

    #[test]
    fn value_and_buffer_pages_are_locked_while_the_secret_lives() {
        let failures_before = crate::memlock::stats().failures;
        let pin = SecretString::new(String::from("482913"));
        let token = Secret::new([7u8; 32]);
        let failures_after = crate::memlock::stats().failures;
        if failures_after > failures_before {
            return; // RLIMIT_MEMLOCK exhausted or not permitted here: best effort
        }
        for addr in [
            pin.expose().as_ptr() as usize,
            &*pin.value as *const _ as usize,
            token.expose().as_ptr() as usize,
        ] {
            assert_eq!(crate::memlock::is_locked(addr), Some(true), "{addr:#x}");
        }
    }
}
