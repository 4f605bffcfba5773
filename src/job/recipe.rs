//! The programming recipe of SPEC §7, in exactly that order.
//!
//! [`identify`] (steps 1–2) reads a key without changing it. [`program`]
//! (steps 3–11) takes an identified key and a leased job; until `begin_programming`
//! is durably recorded nothing on the key has changed, after it every failure
//! quarantines the key. What went wrong is classified once, into a
//! [`Disposition`], which the slot worker acts on.
//!
//! Secrets (the PIN, PIN tokens, decrypted requests) live only inside
//! [`program`]'s stack frame, in zeroizing types, and are dropped before it returns.

use crate::config::Customization;
use crate::ctap2::{
    Client, CtapDevice, CtapError, GetInfo, MakeCredential, MakeCredentialExtensions, Permissions,
    PinUvAuthToken, SetMinPinLength, StatusCode,
};
use crate::ctap2::{CredentialDescriptor, PubKeyCredParam, RpEntity, UserEntity};
use crate::ctaphid::KeepaliveStatus;
use crate::jose::keys::StationKeys;
use crate::jose::request::{
    decrypt_job, Attestation, DecryptedRequests, ValidatedCredentialRequest,
};
use crate::jose::response::{
    seal_credential_response, seal_pin_response, DeviceIdentity, MadeCredential,
};
use crate::pin::PinProtocol;
use crate::secret::SecretString;
use crate::shipment::{
    Job, ProductData, ResultItem, ShipmentResult, ShipmentState, STATE_PROGRAMMED,
};
use crate::store::Store;
use crate::webauthn::{self, AttestationObject, Expected, TrustRoots};
use crate::yubikey::DeviceInfo;
use sha2::{Digest, Sha256};
use std::fmt;

/// Recipe steps, for the status page, logs and quarantine records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Identify,
    Match,
    Decrypt,
    SetPin,
    MakeCredential(usize),
    VerifyCredentials,
    SetMinPinLength,
    FinalCheck,
    StoreResponses,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Identify => f.write_str("identify"),
            Step::Match => f.write_str("match"),
            Step::Decrypt => f.write_str("decrypt"),
            Step::SetPin => f.write_str("setPIN"),
            Step::MakeCredential(i) => write!(f, "makeCredential#{}", i + 1),
            Step::VerifyCredentials => f.write_str("verifyCredentials"),
            Step::SetMinPinLength => f.write_str("setMinPINLength"),
            Step::FinalCheck => f.write_str("finalGetInfo"),
            Step::StoreResponses => f.write_str("storeResponses"),
        }
    }
}

/// What to do after a failure — decided here, once (HOUSE_STYLE principle 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The job itself is bad (malformed, expired, mis-bound, tampered): refuse
    /// it for good. The key was not touched and may take the next job.
    RefuseJob { reason: String },
    /// The key does not fit this job or is unusable (not blank, wrong product,
    /// old firmware, quarantined…): the job goes back to the queue untouched;
    /// the operator removes the key.
    RejectKey { reason: String },
    /// The key went away before anything was written to it: the job goes back.
    KeyGone { reason: String },
    /// Programming began and stopped: quarantine the key by serial, requeue the job.
    Quarantine { step: Step, reason: String },
    /// The station's own key custody (HSM) failed before the key was
    /// touched: the job goes back (no attempt counted) and the key stays
    /// blank (SPEC §14).
    StationFault { reason: String },
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disposition::RefuseJob { reason } => write!(f, "job refused: {reason}"),
            Disposition::RejectKey { reason } => write!(f, "key rejected: {reason}"),
            Disposition::KeyGone { reason } => write!(f, "key gone: {reason}"),
            Disposition::StationFault { reason } => write!(f, "station fault: {reason}"),
            Disposition::Quarantine { step, reason } => {
                write!(f, "key quarantined at {step}: {reason}")
            }
        }
    }
}

/// A key as identified by steps 1–2.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Decimal serial, or `"unknown"` when the key does not report one.
    pub serial: String,
    pub firmware: String,
    pub device_info: DeviceInfo,
    pub info: GetInfo,
}

impl Identity {
    /// The key is blank: no PIN and no resident credentials (step 2).
    pub fn blank_problem(&self) -> Option<String> {
        if self.info.pin_set() == Some(true) {
            return Some("not blank: a PIN is set".into());
        }
        if self.info.force_pin_change {
            return Some("not blank: forcePINChange is set".into());
        }
        None
    }

    /// Whether `authenticatorConfig setMinPINLength` (and so forceChangePin) is available.
    pub fn can_force_pin_change(&self) -> bool {
        self.info.option("setMinPINLength") == Some(true)
            && self.info.option("authnrCfg") == Some(true)
    }

    /// The PIN protocol to use: 2 where offered, else 1 (step 6).
    pub fn pin_protocol(&self) -> Option<PinProtocol> {
        if self.info.pin_uv_auth_protocols.contains(&2) {
            Some(PinProtocol::Two)
        } else if self.info.pin_uv_auth_protocols.contains(&1)
            || self.info.pin_uv_auth_protocols.is_empty()
        {
            Some(PinProtocol::One)
        } else {
            None
        }
    }
}

/// Station-side knowledge the recipe asks about a key (firmware profiles +
/// configuration), kept behind a trait so the recipe is testable alone.
pub trait KeyPolicy: Send + Sync {
    /// Product ids this key can be shipped as (form factor, NFC, FIPS, AAGUID).
    fn products_for(&self, key: &Identity) -> Vec<u32>;
    /// Step 3: why this key cannot take `job` (product, firmware minimum, AAGUID), if so.
    fn mismatch(
        &self,
        key: &Identity,
        job: &Job,
        customization: Option<&Customization>,
    ) -> Option<String>;
    /// Trivial PINs of this key's firmware profile.
    fn pin_blocklist(&self, key: &Identity) -> Vec<String>;
    /// The key's firmware profile says it keeps its key-agreement key until
    /// power-up or a failed PIN check, so one shared secret may serve all of
    /// the recipe's PIN operations (issue #16). Off unless a profile says so.
    fn keeps_key_agreement(&self, _key: &Identity) -> bool {
        false
    }
    /// Keys like this one (same AAGUID and firmware) refused a combined
    /// `cm|acfg` token before, or their profile says they would.
    fn separate_tokens(&self, _key: &Identity) -> bool {
        false
    }
    /// Remember that keys like this one refuse a combined token (in memory).
    fn remember_separate_tokens(&self, _key: &Identity) {}
}

/// What a slot worker hears from the recipe while it runs.
pub trait SlotEvents {
    /// The recipe moved to `step`.
    fn step(&self, step: Step);
    /// The key waits for a touch (KEEPALIVE UPNEEDED): ask the rig or the operator.
    fn touch_needed(&self);
}

/// Everything the recipe needs from the station.
#[allow(missing_debug_implementations)] // holds trait objects and key material handles
pub struct Station<'a> {
    pub slot: &'a str,
    pub keys: &'a StationKeys,
    pub roots: &'a TrustRoots,
    pub store: &'a Store,
    pub policy: &'a dyn KeyPolicy,
    pub customization: Option<&'a Customization>,
    /// Unix seconds now (injectable for tests of expiry).
    pub now: i64,
}

/// A programmed key, as the operator and the audit see it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programmed {
    pub shipment_id: String,
    pub serial: String,
    pub firmware: String,
    pub credentials: usize,
}

/// Steps 1–2 on an open key: vendor device info (when the key has it) and getInfo.
pub fn identify<D: CtapDevice>(
    client: &mut Client<D>,
    device_info: Option<DeviceInfo>,
) -> Result<Identity, Disposition> {
    let info = client.get_info().map_err(|e| gone_or_reject(&e))?;
    let device_info = device_info.unwrap_or_default();
    let firmware = device_info
        .firmware
        .map(|v| v.to_string())
        .or_else(|| {
            info.firmware_version_triple()
                .map(|(a, b, c)| format!("{a}.{b}.{c}"))
        })
        .unwrap_or_else(|| "unknown".into());
    let serial = device_info
        .serial
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".into());
    Ok(Identity {
        serial,
        firmware,
        device_info,
        info,
    })
}

fn gone_or_reject(e: &CtapError) -> Disposition {
    match e.status() {
        Some(status) => Disposition::RejectKey {
            reason: format!("getInfo answered {status}"),
        },
        None => Disposition::KeyGone {
            reason: e.to_string(),
        },
    }
}

/// Steps 3–11 for one leased job on one identified, blank key.
pub fn program<D: CtapDevice>(
    st: &Station<'_>,
    client: &mut Client<D>,
    key: &Identity,
    job: &Job,
    events: &dyn SlotEvents,
) -> Result<Programmed, Disposition> {
    client.set_key_agreement_reuse(st.policy.keeps_key_agreement(key));
    let result = program_steps(st, client, key, job, events);
    // Drops a kept shared secret: no secret outlives the recipe.
    client.set_key_agreement_reuse(false);
    result
}

fn program_steps<D: CtapDevice>(
    st: &Station<'_>,
    client: &mut Client<D>,
    key: &Identity,
    job: &Job,
    events: &dyn SlotEvents,
) -> Result<Programmed, Disposition> {
    // Step 3: key ↔ job (nothing decrypted yet).
    events.step(Step::Match);
    let reject = |reason: String| Disposition::RejectKey { reason };
    if let Some(problem) = key.blank_problem() {
        return Err(reject(problem));
    }
    if st.customization.is_none() {
        return Err(Disposition::RefuseJob {
            reason: format!(
                "job.unknown_customization: customization {} is not configured on this station",
                job.customization_id
            ),
        });
    }
    if let Some(why) = st.policy.mismatch(key, job, st.customization) {
        return Err(reject(why));
    }
    let protocol = key.pin_protocol().ok_or_else(|| {
        reject("the key offers no PIN/UV auth protocol this station speaks".into())
    })?;

    // Step 4: decrypt and validate. Only now do secrets exist.
    events.step(Step::Decrypt);
    // The customization's rules (signed requests, lifetime; SPEC §4). It is
    // present: step 3 refused the job otherwise.
    let policy = st
        .customization
        .map(Customization::request_policy)
        .unwrap_or_default();
    let requests = decrypt_job(
        st.keys,
        &policy,
        &job.pin_request,
        &job.credential_requests,
        st.now,
    )
    .map_err(|e| {
        if e.is_custody() {
            Disposition::StationFault {
                reason: format!("{}: {e}", e.code()),
            }
        } else {
            Disposition::RefuseJob {
                reason: format!("{}: {e}", e.code()),
            }
        }
    })?;
    // The responses are signed at step 11: a custody that cannot sign now
    // must fail the job while the key is still blank.
    st.keys
        .check_signing()
        .map_err(|e| Disposition::StationFault {
            reason: format!("{}: {e}", e.code()),
        })?;
    refuse_overwrites(&requests).map_err(|reason| Disposition::RefuseJob { reason })?;
    check_capabilities(key, &requests).map_err(reject)?;

    // Steps 5–6: the PIN. Recorded as in-flight first, so a crash from here on
    // quarantines the key instead of shipping it half-programmed.
    st.store
        .begin_programming(st.slot, &job.shipment_id, &key.serial)
        .map_err(|e| Disposition::KeyGone {
            reason: format!("store unavailable, key left untouched: {e}"),
        })?;
    let quarantine = |step: Step| {
        move |e: CtapError| Disposition::Quarantine {
            step,
            reason: e.to_string(),
        }
    };
    events.step(Step::SetPin);
    let _ = st.store.step(st.slot, "setPIN");
    let blocklist = st.policy.pin_blocklist(key);
    let pin = set_random_pin(client, protocol, &blocklist).map_err(quarantine(Step::SetPin))?;

    // Step 7: credentials, each with a fresh mc token bound to its RP.
    let mut made = Vec::with_capacity(requests.credentials.len());
    for (i, req) in requests.credentials.iter().enumerate() {
        let step = Step::MakeCredential(i);
        events.step(step);
        let _ = st.store.step(st.slot, &step.to_string());
        let token = token(
            client,
            key,
            protocol,
            &pin,
            Permissions::MC,
            Some(&req.rp_id),
        )
        .map_err(quarantine(step))?;
        made.push(
            make_credential(st, client, key, req, &token, events)
                .map_err(|reason| Disposition::Quarantine { step, reason })?,
        );
    }

    // Step 8: the key holds exactly the requested credentials. When step 9
    // follows, one token carries both cm and acfg (CTAP 2.1 §6.5.5.7: the
    // permissions are a bit set; credential management collects no user
    // presence, so nothing clears them in between).
    let policy = &requests.pin;
    let wanted_min = policy.min_pin_length.map(u64::from);
    let configure =
        policy.force_change_pin || wanted_min.is_some_and(|m| m > key.info.min_pin_length);
    events.step(Step::VerifyCredentials);
    let _ = st.store.step(st.slot, "verifyCredentials");
    let verify_fail = |reason: String| Disposition::Quarantine {
        step: Step::VerifyCredentials,
        reason,
    };
    if key.info.credential_management_command().is_none() {
        return Err(verify_fail(
            "the key offers no credential management to verify with".into(),
        ));
    }
    let (cm, cm_has_acfg) = verification_token(st, client, key, protocol, &pin, configure)
        .map_err(|e| verify_fail(e.to_string()))?;
    verify_stored(client, key, &cm, &requests.credentials, &made).map_err(verify_fail)?;
    let mut acfg = cm_has_acfg.then_some(cm);

    // Step 9, last: forcePINChange (and minPINLength). No token can follow.
    if configure {
        events.step(Step::SetMinPinLength);
        let _ = st.store.step(st.slot, "setMinPINLength");
        let acfg = match acfg.take() {
            Some(t) => t,
            None => token(client, key, protocol, &pin, Permissions::ACFG, None)
                .map_err(quarantine(Step::SetMinPinLength))?,
        };
        let params = SetMinPinLength {
            new_min_pin_length: wanted_min.filter(|&m| m > key.info.min_pin_length),
            min_pin_length_rpids: None,
            force_change_pin: policy.force_change_pin,
        };
        client
            .set_min_pin_length(&params, Some(&acfg))
            .map_err(quarantine(Step::SetMinPinLength))?;
    }

    // Step 10: the key says what we asked.
    events.step(Step::FinalCheck);
    let _ = st.store.step(st.slot, "finalGetInfo");
    let after = client.get_info().map_err(quarantine(Step::FinalCheck))?;
    if policy.force_change_pin && !after.force_pin_change {
        return Err(Disposition::Quarantine {
            step: Step::FinalCheck,
            reason: "forcePINChange not reported after setMinPINLength".into(),
        });
    }
    if let Some(m) = wanted_min {
        if after.min_pin_length < m {
            return Err(Disposition::Quarantine {
                step: Step::FinalCheck,
                reason: format!(
                    "minPINLength is {} after asking for {m}",
                    after.min_pin_length
                ),
            });
        }
    }

    // Step 11: sign, encrypt, store durably; the caller reports PASS.
    // The key is fully programmed by now; a key-custody hiccup (an HSM that
    // restarts, a session pool briefly empty) is waited out for a bounded
    // time rather than wasting the key to quarantine.
    events.step(Step::StoreResponses);
    let _ = st.store.step(st.slot, "storeResponses");
    let device = DeviceIdentity {
        serial_number: key.serial.clone(),
        firmware_version: key.firmware.clone(),
    };
    let fail = |e: crate::jose::JoseError| Disposition::Quarantine {
        step: Step::StoreResponses,
        reason: e.to_string(),
    };
    let pin_response =
        ride_out_custody(|| seal_pin_response(st.keys, &requests.pin, &device, &pin, st.now))
            .map_err(fail)?;
    drop(pin);
    let transports: Vec<&str> = transports(key);
    let mut cred_responses = Vec::with_capacity(made.len());
    for (req, m) in requests.credentials.iter().zip(&made) {
        let delivered = match req.attestation {
            Attestation::None => AttestationObject::parse(&m.attestation_object)
                .map(|o| o.to_none().encode())
                .map_err(|e| Disposition::Quarantine {
                    step: Step::StoreResponses,
                    reason: e.to_string(),
                })?,
            _ => m.attestation_object.clone(),
        };
        let made = MadeCredential {
            aaguid: key.info.aaguid,
            credential_id: &m.credential_id,
            client_data_json: &m.client_data_json,
            attestation_object: &delivered,
            transports: &transports,
        };
        cred_responses.push(
            ride_out_custody(|| seal_credential_response(st.keys, req, &device, &made, st.now))
                .map_err(fail)?,
        );
    }
    let result = ShipmentResult {
        shipment_id: job.shipment_id.to_string(),
        shipment_state: ShipmentState {
            shipment_state_id: STATE_PROGRAMMED,
        },
        shipment_items: vec![ResultItem {
            product_id: job.product_id,
            product_data: vec![ProductData {
                serial_number: key.serial.clone(),
                firmware_version: key.firmware.clone(),
                fido_pin_response: pin_response,
                fido_credential_responses: cred_responses,
            }],
        }],
    };
    let json = serde_json::to_string(&result).map_err(|e| Disposition::Quarantine {
        step: Step::StoreResponses,
        reason: e.to_string(),
    })?;
    st.store
        .store_result(st.slot, &job.shipment_id, &key.serial, &key.firmware, json)
        .map_err(|e| Disposition::Quarantine {
            step: Step::StoreResponses,
            reason: format!("responses could not be stored: {e}"),
        })?;
    Ok(Programmed {
        shipment_id: job.shipment_id.to_string(),
        serial: key.serial.clone(),
        firmware: key.firmware.clone(),
        credentials: made.len(),
    })
}

/// Two requests for the same RP and user handle would leave one credential on
/// the key (a discoverable credential replaces its twin, CTAP 2.1 §6.1.2 step 14):
/// no key could ever pass such a job, so it is refused, not retried.
fn refuse_overwrites(req: &DecryptedRequests) -> Result<(), String> {
    for (i, a) in req.credentials.iter().enumerate() {
        if let Some(j) = req.credentials[..i]
            .iter()
            .position(|b| b.rp_id == a.rp_id && b.user_handle == a.user_handle)
        {
            return Err(format!(
                "job.credential_overwrite: credential requests {j} and {i} share rp.id and user.id; the key would keep only one"
            ));
        }
    }
    Ok(())
}

/// Step 3 checks that need the decrypted PIN policy and credential requests.
fn check_capabilities(key: &Identity, req: &DecryptedRequests) -> Result<(), String> {
    if req.pin.force_change_pin && !key.can_force_pin_change() {
        return Err(
            "forceChangePin is asked but this key has no authenticatorConfig setMinPINLength"
                .into(),
        );
    }
    if let Some(m) = req.pin.min_pin_length {
        if u64::from(m) > key.info.min_pin_length && !key.can_force_pin_change() {
            return Err(format!(
                "minPinLength {m} is asked but this key has no authenticatorConfig setMinPINLength"
            ));
        }
    }
    if let Some(left) = key.info.remaining_discoverable_credentials {
        if (left as usize) < req.credentials.len() {
            return Err(format!(
                "{} credentials asked, the key has room for {left}",
                req.credentials.len()
            ));
        }
    }
    if req
        .credentials
        .iter()
        .any(|c| c.attestation == Attestation::Enterprise)
        && key.info.option("ep").is_none()
    {
        return Err(
            "enterprise attestation is asked but the key does not offer it (no ep option)".into(),
        );
    }
    if !key.info.algorithms.is_empty() && !key.info.algorithms.iter().any(|a| a.alg == -7) {
        return Err("the key does not offer ES256".into());
    }
    Ok(())
}

/// setPIN with a fresh random PIN, retried with another on PIN_POLICY_VIOLATION (at most 3 times).
fn set_random_pin<D: CtapDevice>(
    client: &mut Client<D>,
    protocol: PinProtocol,
    blocklist: &[String],
) -> Result<SecretString, CtapError> {
    let mut tries = 0;
    loop {
        let pin = super::pin::generate(blocklist);
        match client.set_pin(protocol, &pin) {
            Ok(()) => return Ok(pin),
            Err(e) if e.status() == Some(StatusCode::PIN_POLICY_VIOLATION) && tries < 3 => {
                tries += 1
            }
            Err(e) => return Err(e),
        }
    }
}

/// Step 8's credential-management token, which, when step 9 follows
/// (`configure`), also serves authenticatorConfig: one `cm|acfg` request. A key
/// that answers UNAUTHORIZED_PERMISSION gets one token per permission, and the
/// station remembers that for keys like it (same AAGUID and firmware). Returns
/// the cm token and whether it also carries acfg.
fn verification_token<D: CtapDevice>(
    st: &Station<'_>,
    client: &mut Client<D>,
    key: &Identity,
    protocol: PinProtocol,
    pin: &SecretString,
    configure: bool,
) -> Result<(PinUvAuthToken, bool), CtapError> {
    let combine = configure && key.info.supports_permissions() && !st.policy.separate_tokens(key);
    if combine {
        match token(
            client,
            key,
            protocol,
            pin,
            Permissions::CM | Permissions::ACFG,
            None,
        ) {
            Ok(t) => return Ok((t, true)),
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED_PERMISSION) => {
                tracing::info!(
                    firmware = %crate::escape::Untrusted(&key.firmware),
                    "the key refused a cm|acfg token: one token per permission for keys like it"
                );
                st.policy.remember_separate_tokens(key);
            }
            Err(e) => return Err(e),
        }
    }
    let cm = token(client, key, protocol, pin, Permissions::CM, None)?;
    Ok((cm, false))
}

/// A PIN token for `permissions` (or the legacy getPinToken on keys without `pinUvAuthToken`).
fn token<D: CtapDevice>(
    client: &mut Client<D>,
    key: &Identity,
    protocol: PinProtocol,
    pin: &SecretString,
    permissions: Permissions,
    rp_id: Option<&str>,
) -> Result<PinUvAuthToken, CtapError> {
    if key.info.supports_permissions() {
        client.get_pin_uv_auth_token_using_pin_with_permissions(protocol, pin, permissions, rp_id)
    } else {
        client.get_pin_token(protocol, pin)
    }
}

/// What step 7 keeps of one credential (public data only).
struct Made {
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    rp_id: String,
    client_data_json: Vec<u8>,
    attestation_object: Vec<u8>,
}

fn make_credential<D: CtapDevice>(
    st: &Station<'_>,
    client: &mut Client<D>,
    key: &Identity,
    req: &ValidatedCredentialRequest,
    token: &PinUvAuthToken,
    events: &dyn SlotEvents,
) -> Result<Made, String> {
    let client_data_json = webauthn::client_data_json(req.challenge.expose(), &req.origin);
    let client_data_hash: [u8; 32] = Sha256::digest(&client_data_json).into();
    let request = MakeCredential {
        client_data_hash,
        rp: RpEntity {
            id: req.rp_id.clone(),
            name: Some(req.rp_name.clone()),
        },
        user: UserEntity {
            id: req.user_handle.clone(),
            name: Some(req.user_name.clone()),
            display_name: Some(req.user_display_name.clone()),
        },
        pub_key_cred_params: req
            .algorithms
            .iter()
            .map(|&alg| PubKeyCredParam {
                alg,
                kind: "public-key".into(),
            })
            .collect(),
        exclude_list: req
            .exclude_credentials
            .iter()
            .map(|id| CredentialDescriptor::public_key(id.clone()))
            .collect(),
        extensions: MakeCredentialExtensions {
            cred_protect: req.cred_protect.map(|c| c.value()),
            min_pin_length: req.min_pin_length_ext && key.info.has_extension("minPinLength"),
            hmac_secret: false,
        },
        rk: true,
        enterprise_attestation: (req.attestation == Attestation::Enterprise).then_some(2),
    };
    // One touch request per UPNEEDED episode, not per keepalive packet.
    let mut asked = false;
    let mut keepalive = |s: KeepaliveStatus| {
        if s == KeepaliveStatus::UPNEEDED && !asked {
            asked = true;
            events.touch_needed();
        }
    };
    let response = client
        .make_credential(&request, Some(token), &mut keepalive)
        .map_err(|e| e.to_string())?;
    let attestation_object = response.attestation_object();
    // Genuineness, on the spot: packed signature, x5c chain, AAGUID extension.
    let verified = webauthn::verify_attestation(
        &attestation_object,
        &Expected {
            rp_id: &req.rp_id,
            client_data_hash: &client_data_hash,
            require_uv: true,
            cred_protect: req.cred_protect.map(|c| c.value()),
            allow_none: false,
            now: st.now,
        },
        st.roots,
    )
    .map_err(|e| format!("attestation not accepted ({}): {e}", e.code()))?;
    if verified.aaguid != key.info.aaguid {
        return Err("attested AAGUID differs from getInfo's".into());
    }
    Ok(Made {
        credential_id: verified.credential_id,
        user_handle: req.user_handle.clone(),
        rp_id: req.rp_id.clone(),
        client_data_json,
        attestation_object,
    })
}

/// Step 8: enumerate with credential management and compare with what was made.
fn verify_stored<D: CtapDevice>(
    client: &mut Client<D>,
    key: &Identity,
    cm: &PinUvAuthToken,
    requests: &[ValidatedCredentialRequest],
    made: &[Made],
) -> Result<(), String> {
    let Some(command) = key.info.credential_management_command() else {
        return Err("the key offers no credential management to verify with".into());
    };
    let rps = client
        .enumerate_rps(command, cm)
        .map_err(|e| e.to_string())?;
    let mut found: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    for rp in &rps {
        let creds = client
            .enumerate_credentials(command, &rp.rp_id_hash, cm)
            .map_err(|e| e.to_string())?;
        for c in creds {
            found.push((
                rp.rp.id.clone(),
                c.user.id.clone(),
                c.credential_id.id.clone(),
            ));
        }
    }
    if found.len() != requests.len() {
        return Err(format!(
            "the key holds {} credentials, {} were made",
            found.len(),
            requests.len()
        ));
    }
    for m in made {
        let want = (
            m.rp_id.clone(),
            m.user_handle.clone(),
            m.credential_id.clone(),
        );
        if !found.contains(&want) {
            return Err(format!("credential for {} is missing or differs", m.rp_id));
        }
    }
    Ok(())
}

/// WebAuthn transports of the key: USB always, NFC when the key has it.
fn transports(key: &Identity) -> Vec<&'static str> {
    if key.device_info.has_nfc() || key.info.transports.iter().any(|t| t == "nfc") {
        vec!["nfc", "usb"]
    } else {
        vec!["usb"]
    }
}

/// How long step 11 keeps retrying a signature that fails in the key custody
/// (SPEC §14: an HSM restarting, a session pool briefly exhausted) before the
/// key is quarantined.
const CUSTODY_RIDE_OUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Runs `seal`, retrying every 250 ms while it fails for a key-custody reason,
/// for at most [`CUSTODY_RIDE_OUT`]; any other error, or the last custody
/// error, is returned as it is.
fn ride_out_custody<T>(
    mut seal: impl FnMut() -> Result<T, crate::jose::JoseError>,
) -> Result<T, crate::jose::JoseError> {
    let deadline = std::time::Instant::now() + CUSTODY_RIDE_OUT;
    loop {
        match seal() {
            Err(e) if e.is_custody() && std::time::Instant::now() < deadline => {
                tracing::warn!("key custody cannot sign (retrying): {e}");
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::JoseError;

    /// Found when a token outage during step 11 quarantined a key that was
    /// fully programmed: the signature is retried while the custody recovers.
    #[test]
    fn a_custody_failure_at_step_11_is_retried_and_other_errors_are_not() {
        let mut calls = 0;
        let r = ride_out_custody(|| {
            calls += 1;
            if calls < 3 {
                Err(JoseError::Custody)
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.unwrap(), 3);
        let mut calls = 0;
        let r: Result<(), _> = ride_out_custody(|| {
            calls += 1;
            Err(JoseError::Malformed)
        });
        assert!(matches!(r, Err(JoseError::Malformed)));
        assert_eq!(calls, 1);
    }
}
