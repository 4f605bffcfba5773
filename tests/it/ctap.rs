//! Integration tests: the host CTAP stack (transport → ctaphid → ctap2 → pin,
//! yubikey) against scripted devices over the in-memory pair and UDP, and the
//! `devices info` command. Every hostile-device case must end in a typed error
//! within bounded time: each runs under a watchdog.

use prereg_station::cbor::{self, Value};
use prereg_station::ctap2::{
    Client, ConfigSubCommand, CtapError, GetInfo, MakeCredential, Permissions, PubKeyCredParam,
    RpEntity, SetMinPinLength, StatusCode, UserEntity,
};
use prereg_station::ctaphid::{
    fragment, Assembler, FrameError, HidChannel, HidCommand, HidError, InitInfo, KeepaliveStatus,
    Message, TimeoutKind, Timeouts, BROADCAST_CID,
};
use prereg_station::pin::{self, CoseKey, KeyAgreement, PinProtocol};
use prereg_station::secret::SecretString;
use prereg_station::transport::memory::{pair, MemoryTransport};
use prereg_station::transport::udp::UdpTransport;
use prereg_station::transport::{Report, Transport, TransportError};
use prereg_station::yubikey::{self, Capabilities, DeviceInfo, FormFactor, Version};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const CID: u32 = 0x2133_e1b9;

/// Runs `f` on a thread and fails the test if it does not finish in 30 s
/// (a liveness check: a hang is the bug we are testing for, not slowness).
fn watchdog<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the host stack hung instead of returning a typed error")
}

fn relaxed() -> Timeouts {
    Timeouts {
        reply: Duration::from_secs(3),
        transaction: Duration::from_secs(10),
        busy_retry: Duration::from_millis(10),
    }
}

/// A small authenticator built from the crate's own device-side pieces
/// (Assembler, fragment, pin::KeyAgreement, GetInfo/DeviceInfo encoders), the
/// way the simulator uses them. It checks every MAC it is sent.
struct MiniKey {
    ka: KeyAgreement,
    pin_hash: Option<Vec<u8>>,
    token: [u8; 32],
    protocol: PinProtocol,
    force_change: bool,
    min_pin_length: u64,
    keepalives: usize,
    made: Vec<Vec<u8>>,
}

impl MiniKey {
    fn new() -> Self {
        Self {
            ka: KeyAgreement::generate(),
            pin_hash: None,
            token: [0; 32],
            protocol: PinProtocol::Two,
            force_change: false,
            min_pin_length: 4,
            keepalives: 3,
            made: Vec::new(),
        }
    }

    fn get_info(&self) -> GetInfo {
        let mut options = BTreeMap::new();
        for (k, v) in [
            ("rk", true),
            ("up", true),
            ("plat", false),
            ("clientPin", self.pin_hash.is_some()),
            ("pinUvAuthToken", true),
            ("authnrCfg", true),
            ("setMinPINLength", true),
            ("credMgmt", true),
        ] {
            options.insert(k.to_owned(), v);
        }
        GetInfo {
            versions: vec!["FIDO_2_0".into(), "FIDO_2_1".into()],
            extensions: vec!["credProtect".into(), "minPinLength".into()],
            aaguid: [0xa2; 16],
            options,
            max_msg_size: Some(1200),
            pin_uv_auth_protocols: vec![2, 1],
            force_pin_change: self.force_change,
            min_pin_length: self.min_pin_length,
            firmware_version: Some(0x050701),
            remaining_discoverable_credentials: Some(100 - self.made.len() as u64),
            ..Default::default()
        }
    }

    fn device_info() -> DeviceInfo {
        DeviceInfo {
            serial: Some(31_415_926),
            form_factor: FormFactor::USB_C_KEYCHAIN,
            firmware: Some(Version::new(5, 7, 1)),
            usb_supported: Some(Capabilities(0x023f)),
            usb_enabled: Some(Capabilities(0x023f)),
            nfc_supported: Some(Capabilities(0x023f)),
            nfc_enabled: Some(Capabilities(0x023f)),
            pin_complexity: Some(false),
            ..Default::default()
        }
    }

    fn reply(body: Option<Value>) -> Vec<u8> {
        let mut r = vec![0];
        if let Some(b) = body {
            r.extend(cbor::encode(&b));
        }
        r
    }

    /// One CTAP2 request → reply (status ‖ CBOR); `keepalive` sends a status.
    fn cbor(&mut self, req: &[u8], keepalive: &mut dyn FnMut(u8)) -> Vec<u8> {
        let Ok(p) = (if req.len() > 1 {
            cbor::decode(&req[1..]).map(Some)
        } else {
            Ok(None)
        }) else {
            return vec![StatusCode::INVALID_CBOR.0];
        };
        let get = |k: u64| p.as_ref().and_then(|p| p.get(k));
        match req[0] {
            0x04 => Self::reply(Some(self.get_info().to_cbor())),
            0x06 => {
                let sub = get(2).and_then(Value::as_u64).unwrap_or(0);
                if sub == 2 {
                    return Self::reply(Some(Value::map([(
                        Value::from(1),
                        self.ka.public_key().to_cbor(),
                    )])));
                }
                let Some(platform) = get(3).and_then(|k| CoseKey::from_cbor(k).ok()) else {
                    return vec![StatusCode::MISSING_PARAMETER.0];
                };
                let ss = self.ka.shared_secret(self.protocol, &platform);
                match sub {
                    3 => {
                        let enc = get(5).and_then(Value::as_bytes).unwrap_or_default();
                        let mac = get(4).and_then(Value::as_bytes).unwrap_or_default();
                        if self.pin_hash.is_some() || !ss.verify(enc, mac) {
                            return vec![StatusCode::PIN_AUTH_INVALID.0];
                        }
                        let Ok(padded) = ss.decrypt(enc) else {
                            return vec![StatusCode::PIN_AUTH_INVALID.0];
                        };
                        let Ok(pin) = pin::unpad_pin(padded.expose()) else {
                            return vec![StatusCode::PIN_POLICY_VIOLATION.0];
                        };
                        self.pin_hash = Some(pin::pin_hash(&pin).expose().clone());
                        Self::reply(None)
                    }
                    9 => {
                        let Ok(hash) =
                            ss.decrypt(get(6).and_then(Value::as_bytes).unwrap_or_default())
                        else {
                            return vec![StatusCode::PIN_INVALID.0];
                        };
                        if Some(hash.expose()) != self.pin_hash.as_ref() || self.force_change {
                            return vec![StatusCode::PIN_INVALID.0];
                        }
                        self.token = rand::random();
                        Self::reply(Some(Value::map([(2, ss.encrypt(&self.token).unwrap())])))
                    }
                    _ => vec![StatusCode::INVALID_SUBCOMMAND.0],
                }
            }
            0x01 => {
                let cdh = get(1)
                    .and_then(Value::as_bytes)
                    .unwrap_or_default()
                    .to_vec();
                let mac = get(8).and_then(Value::as_bytes).unwrap_or_default();
                if !pin::verify(self.protocol, &self.token, &cdh, mac) {
                    return vec![StatusCode::PIN_AUTH_INVALID.0];
                }
                if get(7).and_then(|o| o.get("uv")).is_some() {
                    return vec![StatusCode::INVALID_OPTION.0];
                }
                for _ in 0..self.keepalives {
                    keepalive(2);
                }
                let cred_id: [u8; 16] = rand::random();
                self.made.push(cred_id.to_vec());
                let mut ad = [0u8; 32].to_vec();
                ad.push(0x41);
                ad.extend(1u32.to_be_bytes());
                ad.extend([0xa2; 16]);
                ad.extend((cred_id.len() as u16).to_be_bytes());
                ad.extend(cred_id);
                ad.extend(cbor::encode(
                    &KeyAgreement::generate().public_key().to_cbor(),
                ));
                Self::reply(Some(Value::map([
                    (Value::from(1), Value::from("packed")),
                    (Value::from(2), Value::from(ad)),
                    (
                        Value::from(3),
                        Value::map([
                            (Value::from("alg"), Value::from(-7)),
                            (Value::from("sig"), Value::from(vec![0u8; 70])),
                        ]),
                    ),
                ])))
            }
            0x0d => {
                // §6.11: the MAC covers 32×0xff ‖ 0x0d ‖ sub ‖ the exact param bytes sent.
                let sub = get(1).and_then(Value::as_u64).unwrap_or(0) as u8;
                let params = get(2).map(cbor::encode).unwrap_or_default();
                let msg = [vec![0xff; 32], vec![0x0d, sub], params].concat();
                if !pin::verify(
                    self.protocol,
                    &self.token,
                    &msg,
                    get(4).and_then(Value::as_bytes).unwrap_or_default(),
                ) {
                    return vec![StatusCode::PIN_AUTH_INVALID.0];
                }
                if let Some(n) = get(2).and_then(|p| p.get(1u64)).and_then(Value::as_u64) {
                    if n < self.min_pin_length {
                        return vec![StatusCode::PIN_POLICY_VIOLATION.0];
                    }
                    self.min_pin_length = n;
                }
                if get(2).and_then(|p| p.get(3u64)).and_then(Value::as_bool) == Some(true) {
                    self.force_change = true;
                }
                Self::reply(None)
            }
            _ => vec![StatusCode::INVALID_COMMAND.0],
        }
    }
}

/// Serves `key` on `t` until the host goes away or is idle for 5 s.
fn serve<T: Transport>(mut t: T, mut key: MiniKey) {
    let mut asm = Assembler::default();
    let info = MiniKey::device_info();
    while let Ok(Some(r)) = t.recv(Duration::from_secs(5)) {
        let m: Message = match asm.push(&r) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                let cid = u32::from_be_bytes(r[..4].try_into().unwrap());
                send(&mut t, cid, HidCommand::ERROR, &[e.hid_error_code().0]);
                continue;
            }
        };
        match m.cmd {
            HidCommand::INIT => {
                let nonce: [u8; 8] = m.payload[..8].try_into().unwrap();
                let init = InitInfo {
                    cid: CID,
                    protocol_version: 2,
                    device_version: (5, 7, 1),
                    capabilities: prereg_station::ctaphid::Capabilities(0x05),
                };
                send(&mut t, m.cid, HidCommand::INIT, &init.encode(&nonce));
            }
            HidCommand::CBOR => {
                let mut kas = Vec::new();
                let reply = key.cbor(&m.payload, &mut |s| kas.push(s));
                for s in kas {
                    send(&mut t, m.cid, HidCommand::KEEPALIVE, &[s]);
                }
                send(&mut t, m.cid, HidCommand::CBOR, &reply);
            }
            c if c == yubikey::READ_CONFIG => send(
                &mut t,
                m.cid,
                c,
                &info.encode_page(m.payload.first().copied().unwrap_or(0)),
            ),
            _ => send(&mut t, m.cid, HidCommand::ERROR, &[0x01]),
        }
    }
}

fn send<T: Transport>(t: &mut T, cid: u32, cmd: HidCommand, payload: &[u8]) {
    for r in fragment(cid, cmd, payload, 7609).unwrap() {
        let _ = t.send(&r);
    }
}

fn make_credential_request(rp: &str) -> MakeCredential {
    MakeCredential {
        client_data_hash: [0x42; 32],
        rp: RpEntity {
            id: rp.into(),
            name: Some("RP".into()),
        },
        user: UserEntity {
            id: vec![1, 2, 3],
            name: Some("jan".into()),
            display_name: Some("Jan".into()),
        },
        pub_key_cred_params: vec![PubKeyCredParam::es256(), PubKeyCredParam::eddsa()],
        exclude_list: vec![],
        extensions: Default::default(),
        rk: true,
        enterprise_attestation: None,
    }
}

#[test]
fn full_programming_flow_over_the_memory_pair() {
    watchdog(|| {
        let (host, dev) = pair("flow");
        thread::spawn(move || serve(dev, MiniKey::new()));
        let mut ch = HidChannel::open(host, relaxed()).unwrap();
        assert_eq!(ch.info().device_version, (5, 7, 1));
        let di = yubikey::read_device_info(&mut ch).unwrap();
        assert_eq!(di.serial, Some(31_415_926));
        assert!(di.has_nfc());
        let mut client = Client::new(ch);
        let info = client.get_info().unwrap();
        assert_eq!(info.pin_set(), Some(false));
        let protocol = info.preferred_pin_protocol().unwrap();
        let pin = SecretString::new("482913".into());
        client.set_pin(protocol, &pin).unwrap();
        for rp in ["a.example", "b.example"] {
            let token = client
                .get_pin_uv_auth_token_using_pin_with_permissions(
                    protocol,
                    &pin,
                    Permissions::MC,
                    Some(rp),
                )
                .unwrap();
            let mut seen = Vec::new();
            let resp = client
                .make_credential(&make_credential_request(rp), Some(&token), &mut |s| {
                    seen.push(s)
                })
                .unwrap();
            assert_eq!(seen, vec![KeepaliveStatus::UPNEEDED; 3]);
            let ad = resp.authenticator_data().unwrap();
            assert_eq!(ad.attested.unwrap().aaguid, [0xa2; 16]);
        }
        let token = client
            .get_pin_uv_auth_token_using_pin_with_permissions(
                protocol,
                &pin,
                Permissions::ACFG,
                None,
            )
            .unwrap();
        let lower = SetMinPinLength {
            new_min_pin_length: Some(3),
            ..Default::default()
        };
        assert_eq!(
            client
                .set_min_pin_length(&lower, Some(&token))
                .unwrap_err()
                .status(),
            Some(StatusCode::PIN_POLICY_VIOLATION)
        );
        let params = SetMinPinLength {
            new_min_pin_length: Some(6),
            min_pin_length_rpids: Some(vec!["a.example".into()]),
            force_change_pin: true,
        };
        client.set_min_pin_length(&params, Some(&token)).unwrap();
        let after = client.get_info().unwrap();
        assert!(after.force_pin_change);
        assert_eq!(after.min_pin_length, 6);
        assert_eq!(after.remaining_discoverable_credentials, Some(98));
        // forcePINChange: no more tokens with this PIN.
        let e = client
            .get_pin_uv_auth_token_using_pin_with_permissions(protocol, &pin, Permissions::MC, None)
            .unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::PIN_INVALID));
        // A config MAC over different bytes than sent is refused by the key.
        assert!(client
            .config(ConfigSubCommand::TOGGLE_ALWAYS_UV, None, None)
            .is_err());
    });
}

/// A device that answers INIT and then plays `script` for the next request.
fn scripted(
    script: impl FnOnce(&mut MemoryTransport, u32) + Send + 'static,
) -> HidChannel<MemoryTransport> {
    let (host, mut dev) = pair("scripted");
    thread::spawn(move || {
        let r = dev.recv(Duration::from_secs(10)).unwrap().unwrap();
        let nonce: [u8; 8] = r[7..15].try_into().unwrap();
        let init = InitInfo {
            cid: CID,
            protocol_version: 2,
            device_version: (5, 4, 3),
            capabilities: prereg_station::ctaphid::Capabilities(0x05),
        };
        send(
            &mut dev,
            BROADCAST_CID,
            HidCommand::INIT,
            &init.encode(&nonce),
        );
        let _request = dev.recv(Duration::from_secs(10));
        script(&mut dev, CID);
        // Keep the pipe open so the host sees silence, not a disconnect.
        thread::sleep(Duration::from_secs(5));
    });
    HidChannel::open(host, relaxed()).unwrap()
}

fn raw(cid: u32, bytes: &[u8]) -> Report {
    let mut r = [0u8; 64];
    r[..4].copy_from_slice(&cid.to_be_bytes());
    r[4..4 + bytes.len()].copy_from_slice(bytes);
    r
}

fn short_reply(mut ch: HidChannel<MemoryTransport>, reply_ms: u64) -> HidChannel<MemoryTransport> {
    ch.set_timeouts(Timeouts {
        reply: Duration::from_millis(reply_ms),
        ..relaxed()
    });
    ch
}

#[test]
fn hostile_devices_give_typed_errors() {
    type Case = (
        &'static str,
        Box<dyn FnOnce(&mut MemoryTransport, u32) + Send>,
        fn(&CtapError) -> bool,
    );
    let cases: Vec<Case> = vec![
        ("silent", Box::new(|_, _| {}), |e| {
            matches!(
                e,
                CtapError::Hid(HidError::Timeout {
                    kind: TimeoutKind::Silent,
                    ..
                })
            )
        }),
        (
            "truncated: init promises 100 bytes, nothing follows",
            Box::new(|d, cid| d.send(&raw(cid, &[0x90, 0, 100, 0])).unwrap()),
            |e| {
                matches!(
                    e,
                    CtapError::Hid(HidError::Timeout {
                        kind: TimeoutKind::Silent,
                        ..
                    })
                )
            },
        ),
        (
            "out of sequence",
            Box::new(|d, cid| {
                d.send(&raw(cid, &[0x90, 0, 100, 0])).unwrap();
                d.send(&raw(cid, &[0x01])).unwrap();
            }),
            |e| {
                matches!(
                    e,
                    CtapError::Hid(HidError::Frame(FrameError::BadSequence {
                        expected: 0,
                        got: 1,
                        ..
                    }))
                )
            },
        ),
        (
            "oversized declared length",
            Box::new(|d, cid| d.send(&raw(cid, &[0x90, 0xff, 0xff, 0])).unwrap()),
            |e| {
                matches!(
                    e,
                    CtapError::Hid(HidError::Frame(FrameError::TooLong { len: 65535, .. }))
                )
            },
        ),
        (
            "only wrong-channel replies",
            Box::new(|d, cid| send(d, cid ^ 1, HidCommand::CBOR, &[0, 0xa0])),
            |e| matches!(e, CtapError::Hid(HidError::Timeout { .. })),
        ),
        (
            "ERROR frame",
            Box::new(|d, cid| send(d, cid, HidCommand::ERROR, &[0x0b])),
            |e| e.to_string().contains("INVALID_CHANNEL"),
        ),
        (
            "non-canonical CBOR (unsorted keys)",
            Box::new(|d, cid| {
                send(
                    d,
                    cid,
                    HidCommand::CBOR,
                    &[0x00, 0xa2, 0x03, 0x00, 0x01, 0x00],
                )
            }),
            |e| matches!(e, CtapError::Cbor { .. }),
        ),
        (
            "CBOR with trailing garbage",
            Box::new(|d, cid| send(d, cid, HidCommand::CBOR, &[0x00, 0xa0, 0xff])),
            |e| matches!(e, CtapError::Cbor { .. }),
        ),
        (
            "CBOR array length larger than the reply",
            Box::new(|d, cid| {
                send(
                    d,
                    cid,
                    HidCommand::CBOR,
                    &[0x00, 0x9a, 0xff, 0xff, 0xff, 0xff],
                )
            }),
            |e| matches!(e, CtapError::Cbor { .. }),
        ),
        (
            "reply of the wrong shape",
            Box::new(|d, cid| send(d, cid, HidCommand::CBOR, &cbor_reply(Value::Array(vec![])))),
            |e| matches!(e, CtapError::Malformed { .. }),
        ),
        (
            "empty reply",
            Box::new(|d, cid| send(d, cid, HidCommand::CBOR, &[])),
            |e| matches!(e, CtapError::Malformed { .. }),
        ),
        (
            "unknown status is kept as a number",
            Box::new(|d, cid| send(d, cid, HidCommand::CBOR, &[0x1c])),
            |e| e.status() == Some(StatusCode(0x1c)) && e.to_string().contains("0x1c"),
        ),
        (
            "garbage report",
            Box::new(|d, cid| d.send(&raw(cid, &[0x00; 60])).unwrap()),
            |e| {
                matches!(
                    e,
                    CtapError::Hid(HidError::Frame(FrameError::UnexpectedContinuation { .. }))
                )
            },
        ),
    ];
    for (name, script, check) in cases {
        let result = watchdog(move || {
            let ch = short_reply(scripted(script), 400);
            Client::new(ch).get_info().map(|_| ())
        });
        let err = result.expect_err(name);
        assert!(check(&err), "{name}: {err:?}");
    }
}

fn cbor_reply(v: Value) -> Vec<u8> {
    let mut r = vec![0];
    r.extend(cbor::encode(&v));
    r
}

#[test]
fn endless_keepalive_ends_at_the_deadline_and_the_request_is_cancelled() {
    let (tx, rx) = mpsc::channel();
    let err = watchdog(move || {
        let mut ch = scripted(move |d, cid| {
            // UPNEEDED forever (well: for 3 s), then report what the host sent.
            for _ in 0..300 {
                send(d, cid, HidCommand::KEEPALIVE, &[2]);
                thread::sleep(Duration::from_millis(10));
                while let Ok(Some(r)) = d.try_recv() {
                    let _ = tx.send(r);
                }
            }
        });
        ch.set_timeouts(Timeouts {
            reply: Duration::from_secs(2),
            transaction: Duration::from_millis(500),
            ..relaxed()
        });
        let mut n = 0;
        let err = ch.cbor(&[0x01, 0xa0], &mut |s| {
            assert_eq!(s, KeepaliveStatus::UPNEEDED);
            n += 1;
        });
        assert!(n > 0);
        err.unwrap_err()
    });
    assert!(
        matches!(
            err,
            HidError::Timeout {
                kind: TimeoutKind::Deadline,
                ..
            }
        ),
        "{err:?}"
    );
    let cancel = rx.recv_timeout(Duration::from_secs(5)).expect("a CANCEL");
    assert_eq!(cancel[4], HidCommand::CANCEL.wire());
}

/// The device end of a UDP bridge: replies to whoever spoke last.
struct UdpDevice {
    socket: UdpSocket,
    peer: Option<SocketAddr>,
}

impl Transport for UdpDevice {
    fn send(&mut self, report: &Report) -> Result<(), TransportError> {
        let peer = self.peer.ok_or(TransportError::Disconnected)?;
        self.socket
            .send_to(report, peer)
            .map(drop)
            .map_err(|e| TransportError::Io(e.to_string()))
    }
    fn recv(&mut self, timeout: Duration) -> Result<Option<Report>, TransportError> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 64];
        match self.socket.recv_from(&mut buf) {
            Ok((64, from)) => {
                self.peer = Some(from);
                Ok(Some(buf))
            }
            Ok(_) => Ok(None),
            Err(_) => Ok(None),
        }
    }
    fn describe(&self) -> String {
        "udp-device".into()
    }
}

fn udp_key() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || serve(UdpDevice { socket, peer: None }, MiniKey::new()));
    addr
}

#[test]
fn udp_bridge_transport_carries_the_stack() {
    let addr = udp_key();
    watchdog(move || {
        let t = UdpTransport::connect(&addr.to_string(), None).unwrap();
        let mut ch = HidChannel::open(t, relaxed()).unwrap();
        assert_eq!(
            yubikey::read_device_info(&mut ch).unwrap().firmware,
            Some(Version::new(5, 7, 1))
        );
        let mut c = Client::new(ch);
        assert_eq!(c.get_info().unwrap().aaguid, [0xa2; 16]);
        assert_eq!(c.max_msg_size(), 1200);
    });
}

#[test]
fn devices_info_reads_a_key_behind_the_udp_bridge() {
    let addr = udp_key();
    let out = std::process::Command::new(crate::util::station_bin())
        .args([
            "devices",
            "info",
            "--json",
            "--device",
            &format!("udp:{addr}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["device_info"]["serial"], 31_415_926);
    assert_eq!(v["device_info"]["firmware"], "5.7.1");
    assert_eq!(v["device_info"]["nfc"], true);
    assert_eq!(v["ctap"]["aaguid"], "a2a2a2a2-a2a2-a2a2-a2a2-a2a2a2a2a2a2");
    assert_eq!(v["ctap"]["options"]["clientPin"], false);
    assert_eq!(v["pin"]["set"], false);
    assert_eq!(v["ctaphid"]["device_version"], "5.7.1");

    let addr = udp_key();
    let text = std::process::Command::new(crate::util::station_bin())
        .args(["devices", "info", "--device", &format!("udp:{addr}")])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("Serial number:") && text.contains("31415926"),
        "{text}"
    );
    assert!(text.contains("Keychain (USB-C)"), "{text}");
}

#[test]
fn devices_info_usage_errors() {
    for (dev, code) in [("udp:nohostport", 2), ("sim:no-such-profile", 2)] {
        let out = std::process::Command::new(crate::util::station_bin())
            .args(["devices", "info", "--device", dev])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{dev}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).lines().count(),
            1,
            "{dev}: one line"
        );
    }
}
