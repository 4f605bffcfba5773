//! A software attestation CA and packed attestation maker, for tests and
//! benchmarks only (the product's simulated keys use `sim`'s CA): a P-384
//! root, a P-256 intermediate and a P-256 leaf with the WebAuthn §8.2.1
//! profile and the id-fido-gen-ce-aaguid extension.

use super::{AttestationObject, OID_FIDO_AAGUID};
use crate::cbor::Value;
use const_oid::{AssociatedOid, ObjectIdentifier};
use der::{EncodeValue, FixedTag, Length, Tag, Writer};
use p256::ecdsa::signature::Signer;
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// The id-fido-gen-ce-aaguid extension value: an OCTET STRING of 16 bytes.
#[derive(Debug, Clone)]
pub struct AaguidExtension(pub [u8; 16]);

impl AssociatedOid for AaguidExtension {
    const OID: ObjectIdentifier = OID_FIDO_AAGUID;
}

impl FixedTag for AaguidExtension {
    const TAG: Tag = Tag::OctetString;
}

impl EncodeValue for AaguidExtension {
    fn value_len(&self) -> der::Result<Length> {
        Ok(Length::new(16))
    }
    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(&self.0)
    }
}

impl AsExtension for AaguidExtension {
    fn critical(&self, _subject: &Name, _extensions: &[Extension]) -> bool {
        false
    }
}

/// Options that let tests build broken certificates on purpose.
#[derive(Debug, Clone)]
pub struct CaOptions {
    pub aaguid: [u8; 16],
    /// AAGUID put in the leaf extension (`None` = omit the extension).
    pub cert_aaguid: Option<[u8; 16]>,
    pub leaf_ou: &'static str,
    /// Validity (Unix seconds) of all three certificates.
    pub not_before: u64,
    pub not_after: u64,
    /// An RSA-2048 root (PKCS#1 v1.5 SHA-256), as Yubico's roots are.
    pub rsa_root: bool,
}

impl CaOptions {
    pub fn new(aaguid: [u8; 16]) -> Self {
        CaOptions {
            aaguid,
            cert_aaguid: Some(aaguid),
            leaf_ou: "Authenticator Attestation",
            not_before: 1_577_836_800, // 2020-01-01
            not_after: 2_524_521_600,  // 2049-12-31
            rsa_root: false,
        }
    }
}

/// A three-level attestation CA and the leaf key that signs attestations.
#[derive(Debug)]
pub struct SoftCa {
    pub root: Certificate,
    pub intermediate: Certificate,
    pub leaf: Certificate,
    leaf_key: p256::ecdsa::SigningKey,
    pub aaguid: [u8; 16],
}

fn validity(o: &CaOptions) -> Validity {
    let t = |s: u64| Time::try_from(UNIX_EPOCH + Duration::from_secs(s)).expect("time in range");
    Validity {
        not_before: t(o.not_before),
        not_after: t(o.not_after),
    }
}

impl SoftCa {
    pub fn new(aaguid: [u8; 16]) -> Self {
        Self::with_options(&CaOptions::new(aaguid))
    }

    /// Builds the chain. Panics only on builder bugs (test-support code).
    pub fn with_options(o: &CaOptions) -> Self {
        let mut rng = rand_core::OsRng;
        let root_key = p384::ecdsa::SigningKey::random(&mut rng);
        let int_key = p256::ecdsa::SigningKey::random(&mut rng);
        let leaf_key = p256::ecdsa::SigningKey::random(&mut rng);
        let root_name = Name::from_str("CN=prereg test root,O=prereg test").expect("name");
        let int_name = Name::from_str("CN=prereg test intermediate,O=prereg test").expect("name");
        let leaf_name = Name::from_str(&format!(
            "CN=prereg test attestation,OU={},O=prereg test,C=SE",
            o.leaf_ou
        ))
        .expect("name");
        let spki = |k: &p256::ecdsa::SigningKey| {
            SubjectPublicKeyInfoOwned::from_key(*k.verifying_key()).expect("spki")
        };
        let int_profile = Profile::SubCA {
            issuer: root_name.clone(),
            path_len_constraint: Some(0),
        };
        let (root, intermediate) = if o.rsa_root {
            let rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa keygen");
            let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa_key);
            let root_spki = {
                use rsa::signature::Keypair;
                SubjectPublicKeyInfoOwned::from_key(signer.verifying_key()).expect("spki")
            };
            let root = CertificateBuilder::new(
                Profile::Root,
                SerialNumber::from(1u32),
                validity(o),
                root_name,
                root_spki,
                &signer,
            )
            .expect("root builder")
            .build::<rsa::pkcs1v15::Signature>()
            .expect("root");
            let intermediate = CertificateBuilder::new(
                int_profile,
                SerialNumber::from(2u32),
                validity(o),
                int_name.clone(),
                spki(&int_key),
                &signer,
            )
            .expect("intermediate builder")
            .build::<rsa::pkcs1v15::Signature>()
            .expect("intermediate");
            (root, intermediate)
        } else {
            let root = CertificateBuilder::new(
                Profile::Root,
                SerialNumber::from(1u32),
                validity(o),
                root_name,
                SubjectPublicKeyInfoOwned::from_key(*root_key.verifying_key()).expect("spki"),
                &root_key,
            )
            .expect("root builder")
            .build::<p384::ecdsa::DerSignature>()
            .expect("root");
            let intermediate = CertificateBuilder::new(
                int_profile,
                SerialNumber::from(2u32),
                validity(o),
                int_name.clone(),
                spki(&int_key),
                &root_key,
            )
            .expect("intermediate builder")
            .build::<p384::ecdsa::DerSignature>()
            .expect("intermediate");
            (root, intermediate)
        };
        let mut leaf_builder = CertificateBuilder::new(
            Profile::Leaf {
                issuer: int_name,
                enable_key_agreement: false,
                enable_key_encipherment: false,
            },
            SerialNumber::from(3u32),
            validity(o),
            leaf_name,
            spki(&leaf_key),
            &int_key,
        )
        .expect("leaf builder");
        if let Some(a) = o.cert_aaguid {
            leaf_builder
                .add_extension(&AaguidExtension(a))
                .expect("aaguid ext");
        }
        let leaf = leaf_builder
            .build::<p256::ecdsa::DerSignature>()
            .expect("leaf");
        SoftCa {
            root,
            intermediate,
            leaf,
            leaf_key,
            aaguid: o.aaguid,
        }
    }

    /// The root as PEM (what `attestation_roots` / `--roots` take).
    pub fn root_pem(&self) -> String {
        use der::EncodePem;
        self.root.to_pem(der::pem::LineEnding::LF).expect("pem")
    }

    /// A packed attestation for a fresh P-256 credential, as a YubiKey would
    /// return it, with `flags` (UP|UV|AT, plus ED when credProtect is given).
    pub fn attest(
        &self,
        rp_id: &str,
        client_data_hash: &[u8; 32],
        cred_protect: Option<u8>,
    ) -> (AttestationObject, Vec<u8>) {
        use der::Encode;
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let cred_key = p256::SecretKey::random(&mut rand_core::OsRng);
        let point = cred_key.public_key().to_encoded_point(false);
        let cose = crate::cbor::encode(&Value::map([
            (Value::from(1), Value::from(2)),
            (Value::from(3), Value::from(-7)),
            (Value::from(-1), Value::from(1)),
            (
                Value::from(-2),
                Value::Bytes(point.x().expect("x").to_vec()),
            ),
            (
                Value::from(-3),
                Value::Bytes(point.y().expect("y").to_vec()),
            ),
        ]));
        let mut cred_id = vec![0u8; 48];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut cred_id);
        let mut ad = Sha256::digest(rp_id.as_bytes()).to_vec();
        let mut fl = super::flags::UP | super::flags::UV | super::flags::AT;
        if cred_protect.is_some() {
            fl |= super::flags::ED;
        }
        ad.push(fl);
        ad.extend_from_slice(&0u32.to_be_bytes());
        ad.extend_from_slice(&self.aaguid);
        ad.extend_from_slice(&(cred_id.len() as u16).to_be_bytes());
        ad.extend_from_slice(&cred_id);
        ad.extend_from_slice(&cose);
        if let Some(level) = cred_protect {
            ad.extend_from_slice(&crate::cbor::encode(&Value::map([(
                Value::from("credProtect"),
                Value::from(level as i64),
            )])));
        }
        let mut signed = ad.clone();
        signed.extend_from_slice(client_data_hash);
        let sig: p256::ecdsa::DerSignature = self.leaf_key.sign(&signed);
        let att_stmt = Value::map([
            (Value::from("alg"), Value::from(-7)),
            (Value::from("sig"), Value::Bytes(sig.as_bytes().to_vec())),
            (
                Value::from("x5c"),
                Value::Array(vec![
                    Value::Bytes(self.leaf.to_der().expect("der")),
                    Value::Bytes(self.intermediate.to_der().expect("der")),
                ]),
            ),
        ]);
        (
            AttestationObject {
                fmt: "packed".into(),
                att_stmt,
                auth_data: ad,
            },
            cred_id,
        )
    }
}
