//! A made-up facility CA (SPEC §14) for the demo and the tests: a P-384
//! root made on the spot that certifies a station's signing key from its
//! CSR, so the reference IdP can trust the facility (`idp activate
//! --sign-ca`) rather than pin each station's key. A real facility issues
//! from its own PKI; this one lives for one run and its key never leaves
//! memory (`p384::ecdsa::SigningKey` zeroizes on drop).

use p384::ecdsa::signature::Verifier;
use std::str::FromStr;
use std::time::Duration;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::pem::LineEnding;
use x509_cert::der::{DecodePem, Encode, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

/// The CA: its key, certificate and name.
pub struct FacilityCa {
    key: p384::ecdsa::SigningKey,
    pub cert: x509_cert::Certificate,
    name: Name,
}

impl std::fmt::Debug for FacilityCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FacilityCa")
            .field("name", &self.name.to_string())
            .finish_non_exhaustive()
    }
}

impl FacilityCa {
    /// A self-signed root `CN=<cn>, O=Facility`, valid for a day.
    pub fn new(cn: &str) -> Result<Self, String> {
        let key = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let name = Name::from_str(&format!("CN={cn},O=Facility"))
            .map_err(|e| format!("facility CA name {cn:?}: {e}"))?;
        let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key())
            .map_err(|e| format!("facility CA key: {e}"))?;
        let validity = Validity::from_now(Duration::from_secs(3600 * 24))
            .map_err(|e| format!("facility CA validity: {e}"))?;
        let cert = CertificateBuilder::new(
            Profile::Root,
            SerialNumber::from(1u32),
            validity,
            name.clone(),
            spki,
            &key,
        )
        .and_then(|b| b.build::<p384::ecdsa::DerSignature>())
        .map_err(|e| format!("facility CA certificate: {e}"))?;
        Ok(FacilityCa { key, cert, name })
    }

    /// The CA certificate, PEM (what `idp activate --sign-ca` reads).
    pub fn pem(&self) -> Result<String, String> {
        self.cert
            .to_pem(LineEnding::LF)
            .map_err(|e| format!("facility CA PEM: {e}"))
    }

    /// Checks the CSR's self-signature (the key custody made it) and issues
    /// a leaf for its key and subject, valid for an hour; returns the chain
    /// PEM, leaf first, as `keys import-cert --chain` takes it.
    pub fn issue(&self, csr_pem: &str) -> Result<String, String> {
        let req = x509_cert::request::CertReq::from_pem(csr_pem.as_bytes())
            .map_err(|e| format!("CSR: {e}"))?;
        let info = req.info.to_der().map_err(|e| format!("CSR: {e}"))?;
        let spki = req
            .info
            .public_key
            .to_der()
            .map_err(|e| format!("CSR: {e}"))?;
        let vk =
            <p384::ecdsa::VerifyingKey as p384::pkcs8::DecodePublicKey>::from_public_key_der(&spki)
                .map_err(|_| "CSR: the key is not P-384".to_string())?;
        let sig = p384::ecdsa::DerSignature::try_from(req.signature.raw_bytes())
            .map_err(|_| "CSR: the signature is not an ECDSA P-384 signature".to_string())?;
        vk.verify(&info, &sig)
            .map_err(|_| "CSR: not signed by the key it names".to_string())?;
        let validity = Validity::from_now(Duration::from_secs(3600))
            .map_err(|e| format!("leaf validity: {e}"))?;
        let leaf = CertificateBuilder::new(
            Profile::Leaf {
                issuer: self.name.clone(),
                enable_key_agreement: false,
                enable_key_encipherment: false,
            },
            SerialNumber::from(rand::random::<u32>() | 1),
            validity,
            req.info.subject.clone(),
            req.info.public_key.clone(),
            &self.key,
        )
        .and_then(|b| b.build::<p384::ecdsa::DerSignature>())
        .map_err(|e| format!("leaf certificate: {e}"))?;
        let leaf = leaf
            .to_pem(LineEnding::LF)
            .map_err(|e| format!("leaf PEM: {e}"))?;
        Ok(format!("{leaf}{}", self.pem()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::x5c::{certified_signers, csr_pem};
    use crate::jose::StationKeys;
    use crate::webauthn::TrustRoots;

    #[test]
    fn a_chain_it_issues_certifies_the_station_key_under_this_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = StationKeys::generate(&dir.path().join("keys")).unwrap();
        let ca = FacilityCa::new("Test Facility Signing CA").unwrap();
        let chain = ca.issue(&csr_pem(&keys, "Fulfillment").unwrap()).unwrap();
        keys.import_chain(Some(&dir.path().join("keys")), chain.as_bytes())
            .unwrap();
        let now = crate::idp::unix_now();
        let roots = TrustRoots::from_pem(ca.pem().unwrap().as_bytes()).unwrap();
        let (trusted, refused) = certified_signers(&keys.signing_jwks(), &roots, now);
        assert_eq!(trusted.keys.len(), 1, "{refused:?}");
        let other = FacilityCa::new("Test Facility Signing CA").unwrap();
        let roots = TrustRoots::from_pem(other.pem().unwrap().as_bytes()).unwrap();
        let (trusted, _) = certified_signers(&keys.signing_jwks(), &roots, now);
        assert!(trusted.keys.is_empty());
    }

    #[test]
    fn a_csr_not_signed_by_its_own_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = StationKeys::generate(&dir.path().join("keys")).unwrap();
        let csr = csr_pem(&keys, "Fulfillment").unwrap();
        // Another subject under the same signature: what a CSR altered on
        // its way to the CA looks like.
        let mut req = x509_cert::request::CertReq::from_pem(csr.as_bytes()).unwrap();
        req.info.subject = Name::from_str("CN=someone-else,O=Fulfillment").unwrap();
        let tampered = req.to_pem(LineEnding::LF).unwrap();
        let ca = FacilityCa::new("Test Facility Signing CA").unwrap();
        assert_eq!(
            ca.issue(&tampered).unwrap_err(),
            "CSR: not signed by the key it names"
        );
        assert!(ca.issue(&csr).is_ok());
    }
}
