//! The shared secret and its operations (CTAP 2.1 §6.5.6, §6.5.7).

use super::{PinError, PinProtocol};
use crate::secret::SecretBytes;
use aes::Aes256;
use cbc::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;
const BLOCK: usize = 16;

/// The key both sides derive from the ECDH output Z.
///
/// Protocol One: SHA-256(Z), 32 bytes, used for both AES and HMAC.
/// Protocol Two: HKDF-SHA-256(salt 32×0, Z, "CTAP2 HMAC key") ‖
/// HKDF-SHA-256(salt 32×0, Z, "CTAP2 AES key"), 64 bytes.
#[derive(Debug)]
pub struct SharedSecret {
    protocol: PinProtocol,
    key: SecretBytes,
}

impl SharedSecret {
    /// The KDF of §6.5.6 / §6.5.7 over Z (the x-coordinate of the ECDH point).
    pub fn from_z(protocol: PinProtocol, z: &[u8]) -> Self {
        let key = match protocol {
            PinProtocol::One => SecretBytes::from_slice(&Sha256::digest(z)),
            PinProtocol::Two => {
                let hk = Hkdf::<Sha256>::new(Some(&[0u8; 32]), z);
                let mut key = SecretBytes::new(vec![0u8; 64]);
                let (hmac_key, aes_key) = key.expose_mut().split_at_mut(32);
                // 32 bytes is far below HKDF's 255×32 limit, so expand cannot fail.
                hk.expand(b"CTAP2 HMAC key", hmac_key)
                    .expect("32-byte HKDF output");
                hk.expand(b"CTAP2 AES key", aes_key)
                    .expect("32-byte HKDF output");
                key
            }
        };
        Self { protocol, key }
    }

    /// A shared secret from its raw bytes (32 for One, 64 for Two).
    pub fn from_bytes(protocol: PinProtocol, key: SecretBytes) -> Result<Self, PinError> {
        let want = match protocol {
            PinProtocol::One => 32,
            PinProtocol::Two => 64,
        };
        if key.expose().len() != want {
            return Err(PinError::KeyLength(key.expose().len()));
        }
        Ok(Self { protocol, key })
    }

    pub fn protocol(&self) -> PinProtocol {
        self.protocol
    }

    /// The raw key bytes (for known-answer tests and the simulator's checks).
    pub fn expose_bytes(&self) -> &[u8] {
        self.key.expose()
    }

    fn hmac_key(&self) -> &[u8] {
        &self.key.expose()[..32]
    }

    fn aes_key(&self) -> &[u8] {
        match self.protocol {
            PinProtocol::One => self.key.expose(),
            PinProtocol::Two => &self.key.expose()[32..],
        }
    }

    /// encrypt(key, plaintext): AES-256-CBC without padding; zero IV for One,
    /// a random IV prepended for Two.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, PinError> {
        let iv: [u8; BLOCK] = match self.protocol {
            PinProtocol::One => [0; BLOCK],
            PinProtocol::Two => rand::random(),
        };
        self.encrypt_with_iv(plaintext, &iv)
    }

    /// [`Self::encrypt`] with a chosen IV (ignored by protocol One, which always
    /// uses zeros). For known-answer tests; real use wants a random IV.
    pub fn encrypt_with_iv(&self, plaintext: &[u8], iv: &[u8; BLOCK]) -> Result<Vec<u8>, PinError> {
        if plaintext.len() % BLOCK != 0 {
            return Err(PinError::PlaintextLength(plaintext.len()));
        }
        let (iv, prefix) = match self.protocol {
            PinProtocol::One => (&[0u8; BLOCK], false),
            PinProtocol::Two => (iv, true),
        };
        let enc = cbc::Encryptor::<Aes256>::new(self.aes_key().into(), iv.into());
        let ct = enc.encrypt_padded_vec_mut::<NoPadding>(plaintext);
        Ok(if prefix {
            [iv.as_slice(), &ct].concat()
        } else {
            ct
        })
    }

    /// decrypt(key, ciphertext): the inverse of [`Self::encrypt`]. The result
    /// is secret (a PIN hash, a padded PIN or a token).
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<SecretBytes, PinError> {
        let (iv, body) = match self.protocol {
            PinProtocol::One => ([0u8; BLOCK], ciphertext),
            PinProtocol::Two => {
                if ciphertext.len() < BLOCK {
                    return Err(PinError::CiphertextLength(ciphertext.len()));
                }
                let (iv, body) = ciphertext.split_at(BLOCK);
                (iv.try_into().expect("16 bytes"), body)
            }
        };
        if body.len() % BLOCK != 0 {
            return Err(PinError::CiphertextLength(ciphertext.len()));
        }
        let dec = cbc::Decryptor::<Aes256>::new(self.aes_key().into(), (&iv).into());
        let pt = dec
            .decrypt_padded_vec_mut::<NoPadding>(body)
            .map_err(|_| PinError::CiphertextLength(ciphertext.len()))?;
        Ok(SecretBytes::new(pt))
    }

    /// authenticate(key, message) with the shared secret's HMAC key.
    pub fn authenticate(&self, message: &[u8]) -> Vec<u8> {
        authenticate(self.protocol, self.hmac_key(), message)
    }

    /// verify(key, message, signature) with the shared secret's HMAC key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        verify(self.protocol, self.hmac_key(), message, signature)
    }
}

/// authenticate(key, message): HMAC-SHA-256, the first 16 bytes for One and
/// all 32 for Two (§6.5.7: never truncated, YubiKey 5.7.4+ checks all 32).
/// `key` is a pinUvAuthToken (16 or 32 bytes) or an HMAC key; Two uses its
/// first 32 bytes.
pub fn authenticate(protocol: PinProtocol, key: &[u8], message: &[u8]) -> Vec<u8> {
    let key = match protocol {
        PinProtocol::One => key,
        PinProtocol::Two => &key[..key.len().min(32)],
    };
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    let tag = mac.finalize().into_bytes();
    tag[..protocol.mac_len()].to_vec()
}

/// verify(key, message, signature) in constant time; a signature of the wrong
/// length for the protocol is refused.
pub fn verify(protocol: PinProtocol, key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    if signature.len() != protocol.mac_len() {
        return false;
    }
    let key = match protocol {
        PinProtocol::One => key,
        PinProtocol::Two => &key[..key.len().min(32)],
    };
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.verify_truncated_left(signature).is_ok()
}
