//! Simulated-key costs, printed (not asserted): making a key (attestation
//! certificate included), and the in-process host stack against it —
//! getInfo, a protocol-2 PIN token, a resident makeCredential with packed
//! attestation. Tells how many simulated slots one core can keep busy.
//! Run: `cargo bench --bench sim`.

use prereg_station::ctap2::{
    Client, MakeCredential, MakeCredentialExtensions, Permissions, PubKeyCredParam, RpEntity,
    UserEntity,
};
use prereg_station::ctaphid::{HidChannel, Timeouts};
use prereg_station::pin::PinProtocol;
use prereg_station::secret::SecretString;
use prereg_station::sim::{SimConfig, SimKey};
use std::hint::black_box;
use std::time::Instant;

fn time(label: &str, n: u32, mut f: impl FnMut(u32)) {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{label:<44} {per:>10.1} µs/op  ({n} ops)");
}

fn main() {
    let cfg = SimConfig::builtin("yubikey-5.7", 1).expect("built-in profile");
    time("SimKey::new (CA leaf derivation)", 20, |i| {
        black_box(SimKey::new(cfg.clone().seed(i as u64)).expect("key"));
    });
    let key = SimKey::new(cfg).expect("key");
    let mut c = Client::new(HidChannel::open(key, Timeouts::default()).expect("INIT"));
    time("getInfo round trip", 200, |_| {
        black_box(c.get_info().expect("getInfo"));
    });
    let pin = SecretString::new("482913".to_string());
    c.set_pin(PinProtocol::Two, &pin).expect("setPIN");
    time("PIN token (protocol 2, mc)", 100, |_| {
        black_box(
            c.get_pin_uv_auth_token_using_pin_with_permissions(
                PinProtocol::Two,
                &pin,
                Permissions::MC,
                Some("example.com"),
            )
            .expect("token"),
        );
    });
    time("token + resident makeCredential (packed)", 90, |i| {
        let tok = c
            .get_pin_uv_auth_token_using_pin_with_permissions(
                PinProtocol::Two,
                &pin,
                Permissions::MC,
                Some("example.com"),
            )
            .expect("token");
        let req = MakeCredential {
            client_data_hash: [7; 32],
            rp: RpEntity {
                id: "example.com".into(),
                name: None,
            },
            user: UserEntity {
                id: i.to_be_bytes().to_vec(),
                name: None,
                display_name: None,
            },
            pub_key_cred_params: vec![PubKeyCredParam::es256()],
            exclude_list: vec![],
            extensions: MakeCredentialExtensions::default(),
            rk: true,
            enterprise_attestation: None,
        };
        black_box(
            c.make_credential(&req, Some(&tok), &mut |_| {})
                .expect("mc"),
        );
    });
}
