//! CTAP host-stack costs, printed (not asserted): what one makeCredential and
//! one protocol-2 PIN token exchange cost in encode + CTAPHID framing +
//! reassembly + strict decode + crypto, both sides in-process, no I/O.
//! Run: `cargo bench --bench ctap`.

use prereg_station::cbor::{self, Value};
use prereg_station::ctap2::{
    Client, CtapDevice, CtapError, MakeCredential, Permissions, PubKeyCredParam, RpEntity,
    UserEntity,
};
use prereg_station::ctaphid::{fragment, Assembler, HidCommand, KeepaliveStatus};
use prereg_station::pin::{CoseKey, KeyAgreement, PinProtocol};
use prereg_station::secret::SecretString;
use std::hint::black_box;
use std::time::Instant;

/// An in-process authenticator behind real CTAPHID framing in both directions.
struct Loopback {
    ka: KeyAgreement,
    token: [u8; 32],
    make_credential_reply: Vec<u8>,
}

fn through_ctaphid(payload: &[u8]) -> Vec<u8> {
    let mut asm = Assembler::default();
    let mut out = None;
    for r in fragment(0x0102_0304, HidCommand::CBOR, payload, 7609).unwrap() {
        out = asm.push(&r).unwrap();
    }
    out.unwrap().payload
}

impl CtapDevice for Loopback {
    fn cbor(
        &mut self,
        request: &[u8],
        _k: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, CtapError> {
        let req = through_ctaphid(request);
        let params = cbor::decode(&req[1..]).unwrap();
        let reply = match (req[0], params.get(2u64).and_then(Value::as_u64)) {
            (0x06, Some(2)) => {
                let mut r = vec![0];
                r.extend(cbor::encode(&Value::map([(
                    Value::from(1),
                    self.ka.public_key().to_cbor(),
                )])));
                r
            }
            (0x06, Some(9)) => {
                let platform = CoseKey::from_cbor(params.get(3u64).unwrap()).unwrap();
                let ss = self.ka.shared_secret(PinProtocol::Two, &platform);
                let hash = ss
                    .decrypt(params.get(6u64).unwrap().as_bytes().unwrap())
                    .unwrap();
                black_box(hash);
                let mut r = vec![0];
                r.extend(cbor::encode(&Value::map([(
                    2,
                    ss.encrypt(&self.token).unwrap(),
                )])));
                r
            }
            _ => self.make_credential_reply.clone(),
        };
        Ok(through_ctaphid(&reply))
    }
}

fn make_credential_reply() -> Vec<u8> {
    let mut ad = vec![0u8; 32];
    ad.push(0x41);
    ad.extend(7u32.to_be_bytes());
    ad.extend([0xaa; 16]);
    ad.extend(64u16.to_be_bytes());
    ad.extend([0x55; 64]);
    ad.extend(cbor::encode(
        &KeyAgreement::generate().public_key().to_cbor(),
    ));
    let att_stmt = Value::map([
        (Value::from("alg"), Value::from(-7)),
        (Value::from("sig"), Value::from(vec![0x30; 71])),
        (
            Value::from("x5c"),
            Value::Array(vec![Value::from(vec![0x30; 700])]),
        ),
    ]);
    let mut r = vec![0];
    r.extend(cbor::encode(&Value::map([
        (Value::from(1), Value::from("packed")),
        (Value::from(2), Value::from(ad)),
        (Value::from(3), att_stmt),
    ])));
    r
}

fn bench(name: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    println!("{name:<60} {per:>10.1} µs/op  ({iterations} iterations)");
}

fn main() {
    let device = Loopback {
        ka: KeyAgreement::generate(),
        token: [0x11; 32],
        make_credential_reply: make_credential_reply(),
    };
    let mut client = Client::new(device);
    client.set_max_msg_size(1200);
    let pin = SecretString::new("482913".into());
    let token = client
        .get_pin_uv_auth_token_using_pin_with_permissions(
            PinProtocol::Two,
            &pin,
            Permissions::MC,
            Some("example.com"),
        )
        .unwrap();
    let request = MakeCredential {
        client_data_hash: [0x42; 32],
        rp: RpEntity {
            id: "example.com".into(),
            name: Some("Example".into()),
        },
        user: UserEntity {
            id: vec![7; 32],
            name: Some("jan@example.com".into()),
            display_name: Some("Jan Lindberg".into()),
        },
        pub_key_cred_params: vec![PubKeyCredParam::es256(), PubKeyCredParam::eddsa()],
        exclude_list: vec![],
        extensions: Default::default(),
        rk: true,
        enterprise_attestation: None,
    };
    println!("prereg-station ctap benchmarks (both sides in-process, no I/O)");
    bench(
        "makeCredential exchange (encode, frame, reassemble, decode, parse)",
        20_000,
        || {
            black_box(
                client
                    .make_credential(&request, Some(&token), &mut |_| {})
                    .unwrap(),
            );
        },
    );
    bench(
        "PIN protocol 2 token exchange (2 round trips; keygen+ECDH host, ECDH device)",
        500,
        || {
            black_box(
                client
                    .get_pin_uv_auth_token_using_pin_with_permissions(
                        PinProtocol::Two,
                        &pin,
                        Permissions::MC,
                        Some("example.com"),
                    )
                    .unwrap(),
            );
        },
    );
    let reply = make_credential_reply();
    bench(
        "CTAPHID fragment + reassemble of a 1 kB reply",
        50_000,
        || {
            black_box(through_ctaphid(&reply));
        },
    );
}
