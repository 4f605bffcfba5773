//! The simulator's own attestation CA, derived from a seed: a P-384 root
//! clearly labelled as NOT a Yubico key, and one P-256 attestation
//! certificate per AAGUID carrying id-fido-gen-ce-aaguid (WebAuthn §8.2.1).
//! Deterministic: keys come from the seed, ECDSA signatures are RFC 6979 and
//! validity dates are fixed, so `sim ca --seed S` prints the root that the
//! keys of `sim serve --seed S` chain to.

use const_oid::{AssociatedOid, ObjectIdentifier};
use der::{Encode, EncodePem, EncodeValue, FixedTag, Length, Tag, Writer};
use sha2::{Digest, Sha256, Sha384};
use spki::SubjectPublicKeyInfoOwned;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// Common name of the simulator root.
pub const ROOT_CN: &str = "prereg-station SIMULATOR Attestation Root - NOT A YUBICO KEY";

/// id-fido-gen-ce-aaguid (1.3.6.1.4.1.45724.1.1.4).
pub const OID_FIDO_GEN_CE_AAGUID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");

/// Why the CA could not be built (only builder failures; not expected).
#[derive(Debug, thiserror::Error)]
#[error("simulator attestation CA: {0}")]
pub struct CaError(String);

fn err(e: impl std::fmt::Display) -> CaError {
    CaError(e.to_string())
}

/// The AAGUID extension value: an OCTET STRING of 16 bytes.
#[derive(Debug, Clone)]
struct AaguidExt([u8; 16]);

impl AssociatedOid for AaguidExt {
    const OID: ObjectIdentifier = OID_FIDO_GEN_CE_AAGUID;
}
impl FixedTag for AaguidExt {
    const TAG: Tag = Tag::OctetString;
}
impl EncodeValue for AaguidExt {
    fn value_len(&self) -> der::Result<Length> {
        Ok(Length::new(16))
    }
    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(&self.0)
    }
}
impl AsExtension for AaguidExt {
    fn critical(&self, _subject: &Name, _extensions: &[Extension]) -> bool {
        false // WebAuthn §8.2.1: MUST NOT be critical.
    }
}

fn validity() -> Result<Validity, CaError> {
    let t = |s: u64| Time::try_from(UNIX_EPOCH + Duration::from_secs(s)).map_err(err);
    Ok(Validity {
        not_before: t(1_704_067_200)?, // 2024-01-01
        not_after: t(2_524_521_600)?,  // 2049-12-31
    })
}

/// A scalar from a labelled hash of the seed; counter bumps past the (2^-128) invalid values.
fn derive<const N: usize>(label: &str, seed: u64, extra: &[u8], counter: u32) -> Vec<u8> {
    let data = [
        b"prereg-station simulator ".as_slice(),
        label.as_bytes(),
        &seed.to_be_bytes(),
        extra,
        &counter.to_be_bytes(),
    ]
    .concat();
    if N == 48 {
        Sha384::digest(&data).to_vec()
    } else {
        Sha256::digest(&data).to_vec()
    }
}

fn root_key(seed: u64) -> p384::ecdsa::SigningKey {
    (0..)
        .find_map(|c| p384::ecdsa::SigningKey::from_slice(&derive::<48>("root", seed, &[], c)).ok())
        .expect("a valid scalar within a few tries")
}

fn leaf_key(seed: u64, aaguid: &[u8; 16]) -> p256::ecdsa::SigningKey {
    (0..)
        .find_map(|c| {
            p256::ecdsa::SigningKey::from_slice(&derive::<32>("leaf", seed, aaguid, c)).ok()
        })
        .expect("a valid scalar within a few tries")
}

fn root_name() -> Result<Name, CaError> {
    Name::from_str(&format!(
        "CN={ROOT_CN},OU=Simulator,O=prereg-station SIMULATOR"
    ))
    .map_err(err)
}

/// The root certificate of the simulator CA for `seed`.
pub fn root_certificate(seed: u64) -> Result<Certificate, CaError> {
    let key = root_key(seed);
    CertificateBuilder::new(
        Profile::Root,
        SerialNumber::from(seed.max(1)),
        validity()?,
        root_name()?,
        SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(err)?,
        &key,
    )
    .map_err(err)?
    .build::<p384::ecdsa::DerSignature>()
    .map_err(err)
}

/// The root as PEM (for `attestation_roots`).
pub fn root_pem(seed: u64) -> Result<String, CaError> {
    root_certificate(seed)?
        .to_pem(der::pem::LineEnding::LF)
        .map_err(err)
}

/// The attestation identity of one AAGUID: its signing key and certificate.
pub struct AttestationIdentity {
    key: p256::ecdsa::SigningKey,
    /// DER of the leaf certificate (x5c[0]).
    pub cert_der: Vec<u8>,
}

impl std::fmt::Debug for AttestationIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AttestationIdentity({} byte cert, <key>)",
            self.cert_der.len()
        )
    }
}

impl AttestationIdentity {
    /// The leaf for `aaguid` under the CA of `seed`. Its subject follows the
    /// packed-attestation certificate requirements (WebAuthn §8.2.1: C, O,
    /// OU "Authenticator Attestation", CN; not a CA; AAGUID extension).
    pub fn new(seed: u64, aaguid: &[u8; 16]) -> Result<Self, CaError> {
        let root = root_key(seed);
        let key = leaf_key(seed, aaguid);
        let subject = Name::from_str(&format!(
            "CN=prereg-station SIM Attestation {},OU=Authenticator Attestation,O=prereg-station SIMULATOR,C=SE",
            hex::encode(aaguid)
        ))
        .map_err(err)?;
        let serial = u64::from_be_bytes(aaguid[..8].try_into().map_err(err)?) >> 1;
        let mut builder = CertificateBuilder::new(
            Profile::Leaf {
                issuer: root_name()?,
                enable_key_agreement: false,
                enable_key_encipherment: false,
            },
            SerialNumber::from(serial.max(1)),
            validity()?,
            subject,
            SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(err)?,
            &root,
        )
        .map_err(err)?;
        builder.add_extension(&AaguidExt(*aaguid)).map_err(err)?;
        let cert = builder.build::<p384::ecdsa::DerSignature>().map_err(err)?;
        Ok(Self {
            key,
            cert_der: cert.to_der().map_err(err)?,
        })
    }

    /// ES256 signature (DER) over `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer;
        let sig: p256::ecdsa::DerSignature = self.key.sign(message);
        sig.as_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;

    #[test]
    fn deterministic_and_labelled() {
        let a = root_pem(7).unwrap();
        assert_eq!(a, root_pem(7).unwrap());
        assert_ne!(a, root_pem(8).unwrap());
        let root = root_certificate(7).unwrap();
        assert!(root
            .tbs_certificate
            .subject
            .to_string()
            .contains("NOT A YUBICO KEY"));
    }

    #[test]
    fn leaf_carries_aaguid_and_chains() {
        let aaguid = [0xa2; 16];
        let id = AttestationIdentity::new(7, &aaguid).unwrap();
        let leaf = Certificate::from_der(&id.cert_der).unwrap();
        let ext = leaf
            .tbs_certificate
            .extensions
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.extn_id == OID_FIDO_GEN_CE_AAGUID)
            .unwrap();
        assert!(!ext.critical);
        assert_eq!(
            ext.extn_value.as_bytes(),
            [[0x04, 16].as_slice(), &aaguid].concat()
        );
        // The root's key verifies the leaf's signature.
        use p384::ecdsa::signature::Verifier;
        let root = root_certificate(7).unwrap();
        let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(
            root.tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes(),
        )
        .unwrap();
        let sig = p384::ecdsa::DerSignature::from_bytes(leaf.signature.raw_bytes()).unwrap();
        let tbs = leaf.tbs_certificate.to_der().unwrap();
        // ecdsa-with-SHA384 over the TBS bytes.
        vk.verify(&tbs, &sig).unwrap();
    }
}
