//! Simulator figures: in-process round trips through the host stack
//! (HidChannel + ctap2::Client over `SimKey`), and key creation (which
//! derives the attestation identity from the seed).

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

fn per_op(label: &str, n: u32, mut f: impl FnMut()) {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:<48} {us:>10.1} µs/op  (n = {n})");
}

fn config(seed: u64) -> SimConfig {
    SimConfig::builtin("yubikey-5.7", 1)
        .expect("built-in profile")
        .seed(seed)
}

fn main() {
    let mut seed = 0;
    per_op("SimKey::new (blank key, attestation identity)", 50, || {
        seed += 1;
        black_box(SimKey::new(config(seed)).expect("key"));
    });
    let key = SimKey::new(config(0)).expect("key");
    let mut c = Client::new(HidChannel::open(key, Timeouts::default()).expect("INIT"));
    per_op("getInfo round trip", 500, || {
        black_box(c.get_info().expect("getInfo"));
    });
    let pin = SecretString::new("482913".to_string());
    c.set_pin(PinProtocol::Two, &pin).expect("setPIN");
    per_op("getPinUvAuthToken (protocol 2)", 100, || {
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
    let mut user = 0u8;
    per_op("token + makeCredential rk (packed attestation)", 90, || {
        user = user.wrapping_add(1);
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
                id: vec![user; 8],
                name: Some("u".into()),
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
                .expect("makeCredential"),
        );
    });
}
