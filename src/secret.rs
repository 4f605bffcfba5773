//! Secrets as a type (HOUSE_STYLE principle 6).
//!
//! A [`Secret`] zeroizes its contents on drop, never prints them (`Debug` says
//! `Secret(<redacted>)`), and hands them out only through methods named `expose*`,
//! so every place that touches a PIN, a PIN token, an ECDH secret, a decrypted
//! payload or a private key is visible in a grep for `expose`.

use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// A value that is zeroized on drop and redacted in `Debug`.
pub struct Secret<T: Zeroize>(Zeroizing<T>);

impl<T: Zeroize> Secret<T> {
    /// Wraps `value`; the caller should not keep other copies.
    pub fn new(value: T) -> Self {
        Self(Zeroizing::new(value))
    }

    /// Read access to the secret.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Write access to the secret (for in-place decryption, padding, …).
    pub fn expose_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Zeroize + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self::new(self.expose().clone())
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
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
}
