//! Station crypto cost (figures, not a timed test): request decryption,
//! response sign+encrypt, attestation verification, and the whole crypto cost
//! of programming one key (1 PIN request + N credential requests), plus the
//! IdP's activation of one key. Run: `cargo bench --bench crypto`
//! (`--profile dev` gives comparable ratios without a release build).

use prereg_station::idp::wire::{ResultItem, ShipmentState};
use prereg_station::idp::{EnrollOptions, Idp, ProductData, ShipmentResult};
use prereg_station::jose::response::{
    seal_credential_response, seal_pin_response, DeviceIdentity, MadeCredential,
};
use prereg_station::jose::{decrypt_job, IdpSigners, RequestPolicy, StationKeys};
use prereg_station::secret::SecretString;
use prereg_station::webauthn::testkit::SoftCa;
use prereg_station::webauthn::{self, Expected, TrustRoots};
use std::hint::black_box;
use std::time::Instant;

#[path = "common/softhsm.rs"]
mod softhsm;

const AAGUID: [u8; 16] = [7; 16];

fn time_us(iters: u32, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / iters as f64
}

/// Decrypt, verify attestation, seal every response for one shipment.
fn program_one(
    keys: &StationKeys,
    ca: &SoftCa,
    roots: &TrustRoots,
    pin_jwe: &str,
    cred_jwes: &[String],
    now: i64,
) -> (String, Vec<String>) {
    let reqs =
        decrypt_job(keys, &RequestPolicy::default(), pin_jwe, cred_jwes, now).expect("valid job");
    let device = DeviceIdentity {
        serial_number: "12345678".into(),
        firmware_version: "5.7.1".into(),
    };
    let mut creds = Vec::new();
    for c in &reqs.credentials {
        let cdj = webauthn::client_data_json(c.challenge.expose(), &c.origin);
        let cdh = webauthn::client_data_hash(&cdj);
        // The authenticator's part (not station crypto) is made outside the
        // timed region in `bench_station`; here it is included only for the
        // end-to-end figure, reported separately.
        let (obj, cred_id) = ca.attest(&c.rp_id, &cdh, Some(3));
        let expected = Expected {
            rp_id: &c.rp_id,
            client_data_hash: &cdh,
            require_uv: true,
            cred_protect: Some(3),
            allow_none: false,
            now,
        };
        webauthn::verify_attestation_parts(&obj, &expected, roots).expect("genuine");
        let att = obj.encode();
        let made = MadeCredential {
            aaguid: AAGUID,
            credential_id: &cred_id,
            client_data_json: &cdj,
            attestation_object: &att,
            transports: &["nfc", "usb"],
        };
        creds.push(seal_credential_response(keys, c, &device, &made, now).expect("seal"));
    }
    let pin = SecretString::new("482913".into());
    let pin_resp = seal_pin_response(keys, &reqs.pin, &device, &pin, now).expect("seal");
    (pin_resp, creds)
}

fn main() {
    let iters: u32 = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let tmp = std::env::temp_dir().join(format!("prereg-bench-{}", std::process::id()));
    let keys = StationKeys::generate_ephemeral();
    let ca = SoftCa::new(AAGUID);
    let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).expect("root");
    let idp = Idp::open(&tmp).expect("idp state");
    let now = prereg_station::idp::unix_now();
    println!("prereg-station crypto benchmark ({iters} iterations each, µs per operation)");
    for creds in [1usize, 3] {
        let opts = EnrollOptions {
            credentials_per_user: creds,
            now,
            ..EnrollOptions::default()
        };
        let shipment = idp
            .enroll(&keys.transport_jwks(), &opts)
            .expect("enroll")
            .remove(0);
        let pc = &shipment.shipment_items[0].product_customizations[0];
        let (pin_jwe, cred_jwes) = (&pc.fido_pin_request, &pc.fido_credential_requests);

        let decrypt = time_us(iters, || {
            black_box(
                decrypt_job(&keys, &RequestPolicy::default(), pin_jwe, cred_jwes, now)
                    .expect("valid"),
            );
        });
        // The same job IdP-signed (SPEC §4): ES384 JWS inside each JWE.
        let signed = idp
            .enroll(
                &keys.transport_jwks(),
                &EnrollOptions { sign: true, ..opts },
            )
            .expect("enroll signed")
            .remove(0);
        let signers = IdpSigners::from_json(
            &std::fs::read_to_string(idp.signing_jwks_path()).expect("idp jwks"),
        )
        .expect("jwks");
        let signing = RequestPolicy {
            idp_signers: Some(&signers),
            ..RequestPolicy::default()
        };
        let spc = &signed.shipment_items[0].product_customizations[0];
        let decrypt_signed = time_us(iters, || {
            black_box(
                decrypt_job(
                    &keys,
                    &signing,
                    &spc.fido_pin_request,
                    &spc.fido_credential_requests,
                    now,
                )
                .expect("valid"),
            );
        });
        let reqs =
            decrypt_job(&keys, &RequestPolicy::default(), pin_jwe, cred_jwes, now).expect("valid");
        let c = &reqs.credentials[0];
        let cdj = webauthn::client_data_json(c.challenge.expose(), &c.origin);
        let cdh = webauthn::client_data_hash(&cdj);
        let (obj, cred_id) = ca.attest(&c.rp_id, &cdh, Some(3));
        let att = obj.encode();
        let device = DeviceIdentity {
            serial_number: "12345678".into(),
            firmware_version: "5.7.1".into(),
        };
        let made = MadeCredential {
            aaguid: AAGUID,
            credential_id: &cred_id,
            client_data_json: &cdj,
            attestation_object: &att,
            transports: &["nfc", "usb"],
        };
        let seal_cred = time_us(iters, || {
            black_box(seal_credential_response(&keys, c, &device, &made, now).expect("seal"));
        });
        let pin = SecretString::new("482913".into());
        let seal_pin = time_us(iters, || {
            black_box(seal_pin_response(&keys, &reqs.pin, &device, &pin, now).expect("seal"));
        });
        let expected = Expected {
            rp_id: &c.rp_id,
            client_data_hash: &cdh,
            require_uv: true,
            cred_protect: Some(3),
            allow_none: false,
            now,
        };
        let verify = time_us(iters, || {
            black_box(webauthn::verify_attestation(&att, &expected, &roots).expect("ok"));
        });
        let attest = time_us(iters, || {
            black_box(ca.attest(&c.rp_id, &cdh, Some(3)));
        });
        let whole = time_us(iters, || {
            black_box(program_one(&keys, &ca, &roots, pin_jwe, cred_jwes, now));
        });
        let station_crypto = whole - attest * creds as f64;
        let (pin_resp, cred_resps) = program_one(&keys, &ca, &roots, pin_jwe, cred_jwes, now);
        let result = vec![ShipmentResult {
            shipment_id: shipment.shipment_id.clone(),
            shipment_state: ShipmentState {
                shipment_state_id: 103,
            },
            shipment_items: vec![ResultItem {
                product_id: 1,
                product_data: vec![ProductData {
                    serial_number: "12345678".into(),
                    firmware_version: "5.7.1".into(),
                    fido_pin_response: pin_resp,
                    fido_credential_responses: cred_resps,
                }],
            }],
        }];
        let activate = time_us(iters, || {
            let r = idp.activate(&keys.signing_jwks(), &roots, &result, now);
            assert!(r[0].verified());
            black_box(r);
        });
        println!("-- 1 PIN request + {creds} credential request(s) per key");
        println!("  request decryption + validation (whole job)   {decrypt:>10.0} µs");
        println!("  the same, IdP-signed requests (+ ES384 each)  {decrypt_signed:>10.0} µs");
        println!("  credential response sign+encrypt (each)       {seal_cred:>10.0} µs");
        println!("  PIN response sign+encrypt                     {seal_pin:>10.0} µs");
        println!("  attestation verification, packed x5c (each)   {verify:>10.0} µs");
        println!("  station crypto per key (all of the above)     {station_crypto:>10.0} µs");
        println!("  IdP activate per key (open + verify all)      {activate:>10.0} µs");
    }
    let _ = std::fs::remove_dir_all(&tmp);
    hsm_section(iters, &idp_dir_for_hsm(), now);
}

fn idp_dir_for_hsm() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("prereg-bench-hsm-{}", std::process::id()))
}

/// SPEC §14: the same station crypto with the keys in SoftHSM2 (a throw-away
/// token in a temp dir), against file custody; and decrypt+sign throughput
/// with several threads sharing the session pool.
fn hsm_section(iters: u32, dir: &std::path::Path, now: i64) {
    use prereg_station::jose::pkcs11::{HsmConfig, DEFAULT_SESSIONS};
    let keys_dir = match softhsm::throwaway_token(dir, softhsm::MODULE) {
        Ok(keys_dir) => keys_dir,
        Err(why) => {
            println!("-- HSM custody: skipped ({why})");
            return;
        }
    };
    for sessions in [1usize, DEFAULT_SESSIONS] {
        let cfg = HsmConfig {
            module: softhsm::MODULE.into(),
            token_label: softhsm::LABEL.into(),
            pin_file: "hsm-pin".into(),
            sessions,
        };
        let hsm = if sessions == 1 {
            StationKeys::generate_in_token(Some(&keys_dir), &cfg).expect("keys in token")
        } else {
            StationKeys::open(Some(&keys_dir), Some(&cfg)).expect("open token")
        };
        let files = StationKeys::generate_ephemeral();
        let idp = Idp::open(&dir.join(format!("idp-{sessions}"))).expect("idp");
        if sessions == 1 {
            println!(
                "-- HSM custody (SoftHSM2) against file custody, 1 PIN + 1 credential request"
            );
            for (name, keys) in [("files", &files), ("softhsm2", &hsm)] {
                let shipment = idp
                    .enroll(
                        &keys.transport_jwks(),
                        &EnrollOptions {
                            now,
                            ..EnrollOptions::default()
                        },
                    )
                    .expect("enroll")
                    .remove(0);
                let pc = &shipment.shipment_items[0].product_customizations[0];
                let decrypt = time_us(iters, || {
                    black_box(
                        decrypt_job(
                            keys,
                            &RequestPolicy::default(),
                            &pc.fido_pin_request,
                            &pc.fido_credential_requests,
                            now,
                        )
                        .expect("valid"),
                    );
                });
                let reqs = decrypt_job(
                    keys,
                    &RequestPolicy::default(),
                    &pc.fido_pin_request,
                    &pc.fido_credential_requests,
                    now,
                )
                .expect("valid");
                let device = DeviceIdentity {
                    serial_number: "12345678".into(),
                    firmware_version: "5.7.1".into(),
                };
                let pin = SecretString::new("482913".into());
                let seal = time_us(iters, || {
                    black_box(
                        seal_pin_response(keys, &reqs.pin, &device, &pin, now).expect("seal"),
                    );
                });
                println!("  {name:<9} decrypt job (2 ECDH) {decrypt:>8.0} µs   PIN response sign+encrypt {seal:>8.0} µs");
            }
        }
        // Throughput: T threads each decrypting a 2-request job and sealing
        // a PIN response, sharing the token's session pool.
        let shipment = idp
            .enroll(
                &hsm.transport_jwks(),
                &EnrollOptions {
                    now,
                    ..EnrollOptions::default()
                },
            )
            .expect("enroll")
            .remove(0);
        let pc = &shipment.shipment_items[0].product_customizations[0];
        for threads in [1usize, 4, 8] {
            let per = (iters as usize).max(8);
            let t = Instant::now();
            std::thread::scope(|sc| {
                for _ in 0..threads {
                    sc.spawn(|| {
                        let device = DeviceIdentity {
                            serial_number: "12345678".into(),
                            firmware_version: "5.7.1".into(),
                        };
                        let pin = SecretString::new("482913".into());
                        for _ in 0..per {
                            let reqs = decrypt_job(
                                &hsm,
                                &RequestPolicy::default(),
                                &pc.fido_pin_request,
                                &pc.fido_credential_requests,
                                now,
                            )
                            .expect("valid");
                            black_box(
                                seal_pin_response(&hsm, &reqs.pin, &device, &pin, now)
                                    .expect("seal"),
                            );
                        }
                    });
                }
            });
            let rate = (threads * per) as f64 / t.elapsed().as_secs_f64();
            println!("  softhsm2, {sessions} session(s), {threads} thread(s): {rate:>8.0} jobs/s (decrypt 2 requests + seal 1 response)");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
