//! CTAP 2.1 §11.2.4: one transaction at a time. While one channel's request is
//! being received or processed, a request on another channel fails at once with
//! ERR_CHANNEL_BUSY, and the transaction in progress completes undisturbed.

use crate::sim::{ManualClock, SimConfig, SimControl, SimKey, TouchMode};
use crate::transport::{Report, Transport};
use std::sync::Arc;
use std::time::Duration;

const BROADCAST: u32 = 0xffff_ffff;
const PING: u8 = 0x01;
const INIT: u8 = 0x06;
const CBOR: u8 = 0x10;
const CANCEL: u8 = 0x11;
const ERROR: u8 = 0x3f;
const KEEPALIVE: u8 = 0x3b;
const ERR_CHANNEL_BUSY: u8 = 0x06;

fn init_packet(cid: u32, cmd: u8, len: usize, data: &[u8]) -> Report {
    let mut r = [0u8; 64];
    r[..4].copy_from_slice(&cid.to_be_bytes());
    r[4] = 0x80 | cmd;
    r[5..7].copy_from_slice(&(len as u16).to_be_bytes());
    r[7..7 + data.len()].copy_from_slice(data);
    r
}

fn cont_packet(cid: u32, seq: u8, data: &[u8]) -> Report {
    let mut r = [0u8; 64];
    r[..4].copy_from_slice(&cid.to_be_bytes());
    r[4] = seq;
    r[5..5 + data.len()].copy_from_slice(data);
    r
}

fn key(touch: TouchMode) -> (SimKey, SimControl, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    let cfg = SimConfig::builtin("yubikey-5.7", 1).unwrap().touch(touch);
    let key = SimKey::with_clock(cfg, clock.clone()).unwrap();
    let control = key.control();
    (key, control, clock)
}

fn next(key: &mut SimKey) -> Option<Report> {
    key.recv(Duration::ZERO).unwrap()
}

fn open_channel(key: &mut SimKey, nonce: u8) -> u32 {
    key.send(&init_packet(BROADCAST, INIT, 8, &[nonce; 8]))
        .unwrap();
    let r = next(key).expect("INIT reply");
    assert_eq!(r[4], 0x80 | INIT);
    u32::from_be_bytes([r[15], r[16], r[17], r[18]])
}

fn cid_of(r: &Report) -> u32 {
    u32::from_be_bytes([r[0], r[1], r[2], r[3]])
}

fn assert_busy(r: Option<Report>, cid: u32) {
    let r = r.expect("an answer at once");
    assert_eq!(cid_of(&r), cid, "answered on the requesting channel");
    assert_eq!(
        &r[4..8],
        &[0x80 | ERROR, 0, 1, ERR_CHANNEL_BUSY],
        "{r:02x?}"
    );
}

/// A 100-byte PING on `cid`: its two packets, and the payload.
fn long_ping(cid: u32) -> (Report, Report, Vec<u8>) {
    let payload: Vec<u8> = (0..100u8).collect();
    let first = init_packet(cid, PING, payload.len(), &payload[..57]);
    let second = cont_packet(cid, 0, &payload[57..]);
    (first, second, payload)
}

#[test]
fn another_channel_is_busy_while_a_message_is_half_received_and_the_first_completes() {
    let (mut key, _control, clock) = key(TouchMode::Auto);
    let one = open_channel(&mut key, 1);
    let two = open_channel(&mut key, 2);
    let (first, second, payload) = long_ping(one);

    key.send(&first).unwrap();
    assert!(next(&mut key).is_none(), "half a message: no answer yet");
    // Another channel's single-packet request: refused at once, not served.
    key.send(&init_packet(two, PING, 1, b"x")).unwrap();
    assert_busy(next(&mut key), two);
    assert!(next(&mut key).is_none());
    // Another channel's multi-packet request: refused at its first packet; its
    // continuation is dropped quietly (no INVALID_SEQ noise for the refused host).
    let (other_first, other_second, _) = long_ping(two);
    key.send(&other_first).unwrap();
    assert_busy(next(&mut key), two);
    key.send(&other_second).unwrap();
    assert!(next(&mut key).is_none());

    // Channel one's message completes normally, well inside the message timeout.
    clock.advance(Duration::from_millis(100));
    key.send(&second).unwrap();
    let a = next(&mut key).expect("PING reply, first packet");
    let b = next(&mut key).expect("PING reply, second packet");
    assert_eq!(cid_of(&a), one);
    assert_eq!(&a[4..7], &[0x80 | PING, 0, 100]);
    let mut echoed = a[7..].to_vec();
    echoed.extend_from_slice(&b[5..5 + 100 - 57]);
    assert_eq!(echoed, payload);
    clock.advance(Duration::from_secs(1));
    assert!(next(&mut key).is_none(), "no MSG_TIMEOUT afterwards");

    // The transaction is over: channel two is served again.
    key.send(&init_packet(two, PING, 1, b"y")).unwrap();
    let r = next(&mut key).unwrap();
    assert_eq!(
        (cid_of(&r), &r[4..8]),
        (two, &[0x80 | PING, 0, 1, b'y'][..])
    );
}

#[test]
fn init_and_cancel_on_other_channels_do_not_disturb_a_half_received_message() {
    let (mut key, _control, _clock) = key(TouchMode::Auto);
    let one = open_channel(&mut key, 1);
    let two = open_channel(&mut key, 2);
    let (first, second, _) = long_ping(one);
    key.send(&first).unwrap();
    // INIT allocates (or resyncs) a channel: not a transaction, answered as usual
    // (hosts open a device with it while another host may be mid-request).
    let three = open_channel(&mut key, 3);
    assert_ne!(three, one);
    key.send(&init_packet(two, INIT, 8, &[4; 8])).unwrap();
    assert_eq!(next(&mut key).unwrap()[4], 0x80 | INIT);
    // CANCEL on a non-active channel is ignored (§11.2.9.1.5).
    key.send(&init_packet(two, CANCEL, 0, &[])).unwrap();
    assert!(next(&mut key).is_none());
    key.send(&second).unwrap();
    let r = next(&mut key).unwrap();
    assert_eq!((cid_of(&r), &r[4..7]), (one, &[0x80 | PING, 0, 100][..]));
}

#[test]
fn a_multi_packet_request_during_a_touch_wait_is_refused_at_its_first_packet() {
    let (mut key, control, _clock) = key(TouchMode::Rig);
    let one = open_channel(&mut key, 1);
    let two = open_channel(&mut key, 2);
    // authenticatorSelection waits for a touch.
    key.send(&init_packet(one, CBOR, 1, &[0x0b])).unwrap();
    assert_eq!(&next(&mut key).unwrap()[4..8], &[0x80 | KEEPALIVE, 0, 1, 2]);
    let (first, second, _) = long_ping(two);
    key.send(&first).unwrap();
    assert_busy(next(&mut key), two);
    key.send(&second).unwrap();
    assert!(
        next(&mut key).is_none(),
        "the refused message's tail is dropped"
    );
    // The waiting request still completes on its own channel.
    control.touch();
    let r = next(&mut key).unwrap();
    assert_eq!((cid_of(&r), &r[4..8]), (one, &[0x80 | CBOR, 0, 1, 0][..]));
}
