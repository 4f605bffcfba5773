//! Extensions of the simulated key beyond credProtect and minPinLength:
//! hmac-secret at getAssertion (CTAP 2.1 §12.5), credBlob (§12.2) and
//! largeBlobKey (§12.3).
//!
//! A child module of `authenticator` (declared there with `#[path]`), so it
//! reaches the key's private state (key agreement, wrap key, RNG) without
//! widening the authenticator's API.
//!
//! * CredRandom (§12.5): two 32-byte values per credential, one for assertions
//!   with UV and one without. They are derived, not stored:
//!   HMAC-SHA-256(wrap key, "CredRandom" ‖ uv ‖ credential id). The id holds a
//!   fresh random nonce, so each credential gets its own pair, non-resident
//!   credentials get theirs back from the id alone, and a reset (new wrap key)
//!   forgets them all.
//! * Whether a credential was made with hmac-secret rides in the top bit of the
//!   wrapped credProtect byte ([`HMAC_SECRET_BIT`]); a credential made without
//!   it gives no hmac-secret output (Yubico .NET SDK, GetAssertionParameters:
//!   "there will be an hmac-secret only if the credential was made with the
//!   hmac-secret extension").
//! * credBlob is kept for discoverable credentials only: a non-resident
//!   credential answers `credBlob: false` (§12.2 lets the authenticator decline
//!   to store it) and an empty blob at getAssertion.

use super::*;
use hmac::{Hmac, Mac};

/// Top bit of the wrapped credProtect byte: the credential was made with hmac-secret.
pub(super) const HMAC_SECRET_BIT: u8 = 0x80;

/// Salt lengths hmac-secret accepts after decryption (§12.5: one or two 32-byte salts).
const SALT_LEN: usize = 32;

/// credBlob and largeBlobKey inputs of a makeCredential.
pub(super) struct McExtensions {
    cred_blob: Option<Vec<u8>>,
    large_blob_key: bool,
}

/// What makeCredential stores with a new credential and answers.
pub(super) struct McExtensionResults {
    /// credBlob to store (empty when none).
    pub cred_blob: Vec<u8>,
    /// The largeBlobKey to store and return in response key 0x05.
    pub large_blob_key: Option<Secret<[u8; 32]>>,
}

/// A checked hmac-secret input: the platform's shared secret and the salts.
struct HmacSecretInput {
    shared: pin::SharedSecret,
    salts: SecretBytes,
}

/// Extension inputs of a getAssertion, kept for getNextAssertion.
#[derive(Default)]
pub(super) struct GaExtensions {
    hmac_secret: Option<HmacSecretInput>,
    cred_blob: bool,
    large_blob_key: bool,
}

/// What one asserted credential brings to the extensions.
pub(super) struct AssertedCredential<'a> {
    pub id: &'a [u8],
    pub hmac_secret: bool,
    /// The stored credBlob (discoverable credentials only).
    pub cred_blob: Option<&'a [u8]>,
    pub large_blob_key: Option<&'a Secret<[u8; 32]>>,
}

/// Extension outputs of one assertion.
pub(super) struct AssertionExtensions {
    /// authData extensions (ED flag when not empty).
    pub auth_data: Vec<(Value, Value)>,
    /// largeBlobKey, response key 0x07.
    pub large_blob_key: Option<Vec<u8>>,
}

impl Authenticator {
    fn supports_extension(&self, name: &str) -> bool {
        self.cfg.profile.extensions.iter().any(|e| e == name)
    }

    /// Checks the credBlob and largeBlobKey inputs of a makeCredential
    /// (side-effect free: runs again after the touch).
    pub(super) fn mc_extensions(&self, ext: Option<&Value>, rk: bool) -> R<McExtensions> {
        let get = |name: &str| ext.and_then(|e| e.get(name));
        let cred_blob = if self.supports_extension("credBlob") {
            bytes(get("credBlob"))?.map(<[u8]>::to_vec)
        } else {
            None
        };
        // §12.3: the input must be true, and only for a discoverable credential.
        let large_blob_key = if self.supports_extension("largeBlobKey") {
            match boolean(get("largeBlobKey"))? {
                Some(false) => return Err(S::INVALID_OPTION),
                Some(true) if !rk => return Err(S::INVALID_OPTION),
                Some(true) => true,
                None => false,
            }
        } else {
            false
        };
        Ok(McExtensions {
            cred_blob,
            large_blob_key,
        })
    }

    /// Applies the checked inputs to the new credential: appends `credBlob`
    /// to the authData extensions and makes the largeBlobKey.
    pub(super) fn mc_extension_results(
        &mut self,
        inputs: McExtensions,
        rk: bool,
        auth_data_ext: &mut Vec<(Value, Value)>,
    ) -> McExtensionResults {
        let max = self.cfg.profile.max_cred_blob_length.unwrap_or(0) as usize;
        let mut cred_blob = Vec::new();
        if let Some(blob) = inputs.cred_blob {
            let stored = rk && blob.len() <= max;
            if stored {
                cred_blob = blob;
            }
            auth_data_ext.push((Value::from("credBlob"), Value::from(stored)));
        }
        let large_blob_key = inputs.large_blob_key.then(|| {
            let mut k = [0u8; 32];
            self.rng.fill_bytes(&mut k);
            Secret::new(k)
        });
        McExtensionResults {
            cred_blob,
            large_blob_key,
        }
    }

    /// Checks the extension inputs of a getAssertion (§12.5 steps on
    /// hmac-secret; credBlob and largeBlobKey take `true`).
    pub(super) fn ga_extensions(&self, ext: Option<&Value>) -> R<GaExtensions> {
        let Some(ext) = ext else {
            return Ok(GaExtensions::default());
        };
        let hmac_secret = match ext.get("hmac-secret") {
            Some(input) if self.supports_extension("hmac-secret") => {
                Some(self.hmac_secret_input(input)?)
            }
            _ => None,
        };
        let cred_blob =
            self.supports_extension("credBlob") && boolean(ext.get("credBlob"))? == Some(true);
        let large_blob_key = if self.supports_extension("largeBlobKey") {
            match boolean(ext.get("largeBlobKey"))? {
                Some(false) => return Err(S::INVALID_OPTION),
                v => v == Some(true),
            }
        } else {
            false
        };
        Ok(GaExtensions {
            hmac_secret,
            cred_blob,
            large_blob_key,
        })
    }

    /// hmac-secret input {1: keyAgreement, 2: saltEnc, 3: saltAuth,
    /// 4: pinUvAuthProtocol (default 1)} (§12.5).
    fn hmac_secret_input(&self, input: &Value) -> R<HmacSecretInput> {
        let input = map(Some(input))?.ok_or(S::MISSING_PARAMETER)?;
        let key_agreement = map(input.get(1))?.ok_or(S::MISSING_PARAMETER)?;
        let salt_enc = bytes(input.get(2))?.ok_or(S::MISSING_PARAMETER)?;
        let salt_auth = bytes(input.get(3))?.ok_or(S::MISSING_PARAMETER)?;
        let number = uint(input.get(4))?.unwrap_or(1);
        if !self
            .cfg
            .profile
            .pin_uv_auth_protocols
            .iter()
            .any(|&p| u64::from(p) == number)
        {
            return Err(S::INVALID_PARAMETER);
        }
        let protocol = PinProtocol::from_number(number).ok_or(S::INVALID_PARAMETER)?;
        let peer = CoseKey::from_cbor(key_agreement).map_err(|_| S::INVALID_PARAMETER)?;
        let shared = self.key_agreement.shared_secret(protocol, &peer);
        if !shared.verify(salt_enc, salt_auth) {
            return Err(S::PIN_AUTH_INVALID);
        }
        let salts = shared.decrypt(salt_enc).map_err(|_| S::INVALID_LENGTH)?;
        if salts.expose().len() != SALT_LEN && salts.expose().len() != 2 * SALT_LEN {
            return Err(S::INVALID_LENGTH);
        }
        Ok(HmacSecretInput { shared, salts })
    }

    /// The extension outputs of one assertion with `flags` (UV bit 0x04).
    pub(super) fn assertion_extensions(
        &mut self,
        inputs: &GaExtensions,
        cred: AssertedCredential<'_>,
        flags: u8,
    ) -> R<AssertionExtensions> {
        let mut auth_data = Vec::new();
        if let (Some(input), true) = (&inputs.hmac_secret, cred.hmac_secret) {
            let cred_random = self.cred_random(cred.id, flags & 0x04 != 0);
            let mut outputs = SecretBytes::new(Vec::with_capacity(input.salts.expose().len()));
            for salt in input.salts.expose().chunks(SALT_LEN) {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(cred_random.expose())
                    .map_err(|_| S::OTHER)?;
                mac.update(salt);
                outputs
                    .expose_mut()
                    .extend_from_slice(&mac.finalize().into_bytes());
            }
            let enc = match input.shared.protocol() {
                PinProtocol::One => input.shared.encrypt(outputs.expose()),
                PinProtocol::Two => {
                    let mut iv = [0u8; 16];
                    self.rng.fill_bytes(&mut iv);
                    input.shared.encrypt_with_iv(outputs.expose(), &iv)
                }
            }
            .map_err(|_| S::OTHER)?;
            auth_data.push((Value::from("hmac-secret"), Value::from(enc)));
        }
        if inputs.cred_blob {
            // §12.2: an empty byte string when the credential has no blob.
            let blob = cred.cred_blob.unwrap_or_default().to_vec();
            auth_data.push((Value::from("credBlob"), Value::from(blob)));
        }
        let large_blob_key = if inputs.large_blob_key {
            cred.large_blob_key.map(|k| k.expose().to_vec())
        } else {
            None
        };
        Ok(AssertionExtensions {
            auth_data,
            large_blob_key,
        })
    }

    /// CredRandomWithUV / CredRandomWithoutUV of credential `id` (see the module docs).
    fn cred_random(&self, id: &[u8], uv: bool) -> Secret<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.wrap_key.expose())
            .expect("HMAC takes any key length");
        mac.update(b"CredRandom");
        mac.update(&[u8::from(uv)]);
        mac.update(id);
        Secret::new(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::builtin;

    fn key(profile: &str) -> Authenticator {
        let profile = builtin().get(profile).unwrap().clone();
        let aaguid = crate::profile::parse_uuid(&profile.products[0].aaguids[0]).unwrap();
        Authenticator::new(
            AuthenticatorConfig {
                product_id: profile.products[0].product_id,
                profile,
                aaguid,
                seed: 3,
                ca_seed: 3,
            },
            Duration::ZERO,
        )
        .unwrap()
    }

    #[test]
    fn cred_random_differs_with_uv_and_per_credential_and_after_reset() {
        let mut a = key("yubikey-5.7");
        let r1 = *a.cred_random(b"id-1", false).expose();
        assert_eq!(r1, *a.cred_random(b"id-1", false).expose());
        assert_ne!(r1, *a.cred_random(b"id-1", true).expose());
        assert_ne!(r1, *a.cred_random(b"id-2", false).expose());
        let _ = a.process(&[cmd::RESET], Duration::ZERO, true);
        assert_ne!(r1, *a.cred_random(b"id-1", false).expose());
    }

    #[test]
    fn large_blob_key_false_or_without_rk_is_an_invalid_option() {
        let a = key("yubikey-5.7");
        let f = Value::map([(Value::from("largeBlobKey"), Value::from(false))]);
        let t = Value::map([(Value::from("largeBlobKey"), Value::from(true))]);
        assert_eq!(
            a.mc_extensions(Some(&f), true).err(),
            Some(S::INVALID_OPTION)
        );
        assert_eq!(
            a.mc_extensions(Some(&t), false).err(),
            Some(S::INVALID_OPTION)
        );
        assert!(a.mc_extensions(Some(&t), true).unwrap().large_blob_key);
        // Profiles that do not list the extension ignore it.
        let a = key("yubikey-5.4");
        assert!(!a.mc_extensions(Some(&t), false).unwrap().large_blob_key);
    }
}
