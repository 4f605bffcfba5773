//! The station's signing certificate (SPEC §14): a PKCS#10 request for the
//! active signing key, signed by whichever custody holds it; the chain a
//! facility CA issues, attached to `sign.jwks` as `x5c` (RFC 7517 §4.7:
//! standard base64 DER, leaf first); and the IdP's check that a signing key
//! is certified by its facility CA.

use super::jwk::{EcJwk, Jwks, KeyUse};
use super::jws::Es384Signer;
use super::keys::StationKeys;
use crate::webauthn::TrustRoots;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use p384::ecdsa::signature::{Keypair, Signer};
use p384::ecdsa::{DerSignature, Signature, VerifyingKey};
use p384::elliptic_curve::sec1::ToEncodedPoint;
use std::str::FromStr;
use x509_cert::builder::{Builder, RequestBuilder};
use x509_cert::der::{Decode, Encode, EncodePem};
use x509_cert::name::Name;
use x509_cert::spki::{AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier};
use x509_cert::Certificate;

/// The active signing key as an X.509 signer: ECDSA with SHA-384 made by the
/// custody (the token, for PKCS#11), DER-encoded for the CSR.
struct CustodySigner<'a> {
    keys: &'a StationKeys,
    public: VerifyingKey,
}

impl Keypair for CustodySigner<'_> {
    type VerifyingKey = VerifyingKey;
    fn verifying_key(&self) -> VerifyingKey {
        self.public
    }
}

impl DynSignatureAlgorithmIdentifier for CustodySigner<'_> {
    fn signature_algorithm_identifier(&self) -> x509_cert::spki::Result<AlgorithmIdentifierOwned> {
        // ecdsa-with-SHA384 (RFC 5758 §3.2), as p384's own keys name it.
        self.public.signature_algorithm_identifier()
    }
}

impl Signer<DerSignature> for CustodySigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<DerSignature, p384::ecdsa::Error> {
        // `sign_es384` hashes with SHA-384 and signs: ecdsa-with-SHA384.
        let raw = self
            .keys
            .sign_es384(msg)
            .map_err(|_| p384::ecdsa::Error::new())?;
        Ok(Signature::from_slice(&raw)?.to_der())
    }
}

/// The active signing key's public key.
fn active_public(keys: &StationKeys) -> Result<p384::PublicKey, String> {
    let jwks = keys.signing_jwks();
    jwks.find(keys.active_signing_kid())
        .and_then(|k| k.to_public_key_for(KeyUse::Sig).ok())
        .ok_or_else(|| "the active signing key has no public key".to_string())
}

/// `keys csr`: a PEM CSR (`CN=<kid>, O=<org>`) for the active signing key.
pub fn csr_pem(keys: &StationKeys, organization: &str) -> Result<String, String> {
    let public = VerifyingKey::from(&active_public(keys)?);
    let signer = CustodySigner { keys, public };
    let subject = Name::from_str(&format!(
        "CN={},O={}",
        keys.active_signing_kid(),
        organization.replace([',', '+', '=', '\\', '"', '<', '>', ';'], "_")
    ))
    .map_err(|e| format!("subject: {e}"))?;
    let req = RequestBuilder::new(subject, &signer)
        .map_err(|e| format!("CSR: {e}"))?
        .build::<DerSignature>()
        .map_err(|e| format!("CSR signature by the key custody failed: {e}"))?;
    req.to_pem(x509_cert::der::pem::LineEnding::LF)
        .map_err(|e| format!("CSR: {e}"))
}

/// Whether `cert`'s subject public key is `key`.
fn certifies(cert: &Certificate, key: &p384::PublicKey) -> bool {
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        == Some(key.to_encoded_point(false).as_bytes())
}

/// `keys import-cert`: parses a PEM chain (leaf first) and checks that the
/// leaf certifies the active signing key; returns the `x5c` values.
pub fn chain_for_active_key(keys: &StationKeys, pem: &[u8]) -> Result<Vec<String>, String> {
    let chain = Certificate::load_pem_chain(pem).map_err(|e| format!("not a PEM chain: {e}"))?;
    let leaf = chain.first().ok_or("the chain is empty")?;
    if !certifies(leaf, &active_public(keys)?) {
        return Err(format!(
            "the first certificate is not for the active signing key {}",
            keys.active_signing_kid()
        ));
    }
    chain
        .iter()
        .map(|c| c.to_der().map(|d| STANDARD.encode(d)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))
}

/// The IdP side (`idp activate --sign-ca`): the signing keys of `jwks` whose
/// `x5c` chains to `ca` (RFC 5280 path checks, validity at `now`) and whose
/// leaf certifies the JWK's own key. The others come back with the reason.
pub fn certified_signers(jwks: &Jwks, ca: &TrustRoots, now: i64) -> (Jwks, Vec<(String, String)>) {
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for k in &jwks.keys {
        match check_key(k, ca, now) {
            Ok(()) => kept.push(k.clone()),
            Err(why) => refused.push((k.kid.clone(), why)),
        }
    }
    (Jwks { keys: kept }, refused)
}

fn check_key(k: &EcJwk, ca: &TrustRoots, now: i64) -> Result<(), String> {
    let x5c = k.x5c.as_ref().ok_or("no x5c certificate chain")?;
    let chain = x5c
        .iter()
        .map(|b| {
            STANDARD
                .decode(b)
                .ok()
                .and_then(|d| Certificate::from_der(&d).ok())
        })
        .collect::<Option<Vec<_>>>()
        .ok_or("x5c is not base64 DER certificates")?;
    let key = k
        .to_public_key_for(KeyUse::Sig)
        .map_err(|_| "not a P-384 signing key")?;
    if !chain.first().is_some_and(|leaf| certifies(leaf, &key)) {
        return Err("the x5c leaf certifies another key".into());
    }
    crate::webauthn::verify_certificate_chain(&chain, ca, now)
        .map(drop)
        .map_err(|e| format!("x5c does not chain to the signing CA: {e}"))
}
