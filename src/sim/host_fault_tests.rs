//! Faults seen from the host: the project's own `ctap2::Client` over
//! `HidChannel` gets a typed error for each, never a hang or a panic.

use crate::ctap2::{
    Client, CtapError, MakeCredential, MakeCredentialExtensions, PubKeyCredParam, RpEntity,
    StatusCode, UserEntity,
};
use crate::ctaphid::{HidChannel, HidError, TimeoutKind, Timeouts};
use crate::pin::PinProtocol;
use crate::secret::SecretString;
use crate::sim::{FaultPlan, ManualClock, SimConfig, SimControl, SimKey, TouchMode};
use std::sync::Arc;
use std::time::Duration;

type Dev = Client<HidChannel<SimKey>>;

fn key(clock: &Arc<ManualClock>, touch: TouchMode) -> (Dev, SimControl) {
    let cfg = SimConfig::builtin("yubikey-5.7", 1).unwrap().touch(touch);
    let key = SimKey::with_clock(cfg, clock.clone()).unwrap();
    let control = key.control();
    let chan = HidChannel::open(key, Timeouts::short()).unwrap();
    (Client::new(chan), control)
}

fn faults(control: &SimControl, plan: FaultPlan) {
    control.set_faults(plan);
}

fn status(e: CtapError) -> StatusCode {
    e.status().unwrap_or_else(|| panic!("not a status: {e}"))
}

fn make_credential() -> MakeCredential {
    MakeCredential {
        client_data_hash: [2; 32],
        rp: RpEntity {
            id: "example.com".into(),
            name: None,
        },
        user: UserEntity {
            id: vec![1; 8],
            name: Some("u".into()),
            display_name: None,
        },
        pub_key_cred_params: vec![PubKeyCredParam::es256()],
        exclude_list: vec![],
        extensions: MakeCredentialExtensions::default(),
        rk: true,
        enterprise_attestation: None,
    }
}

#[test]
fn lost_packet_and_wrong_channel_are_hid_errors() {
    let clock = Arc::new(ManualClock::default());
    // A lost continuation packet of the getInfo reply (the INIT reply was packet 0).
    let (mut c, control) = key(&clock, TouchMode::Auto);
    faults(
        &control,
        FaultPlan {
            drop_packets: vec![2],
            ..FaultPlan::default()
        },
    );
    assert!(matches!(c.get_info().unwrap_err(), CtapError::Hid(_)));
    // The reply on a wrong channel: the host hears nothing on its own.
    let (mut c, control) = key(&clock, TouchMode::Auto);
    faults(
        &control,
        FaultPlan {
            wrong_channel_at_command: Some(1),
            ..FaultPlan::default()
        },
    );
    assert!(matches!(
        c.get_info().unwrap_err(),
        CtapError::Hid(HidError::Timeout {
            kind: TimeoutKind::Silent,
            ..
        })
    ));
    control.set_faults(FaultPlan::default());
    c.get_info().unwrap();
}

#[test]
fn flash_failure_refused_touch_and_unplug_are_typed() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, control) = key(&clock, TouchMode::Auto);
    faults(
        &control,
        FaultPlan {
            flash_write_failure: true,
            ..FaultPlan::default()
        },
    );
    let e = c
        .set_pin(PinProtocol::Two, &SecretString::new("482913".into()))
        .unwrap_err();
    assert_eq!(status(e), StatusCode::OTHER);
    assert!(!control.pin_status().pin_set);
    // Touch refused in rig mode: the key times out waiting for user presence.
    let (mut c, control) = key(&clock, TouchMode::Rig);
    faults(
        &control,
        FaultPlan {
            refuse_touch: true,
            ..FaultPlan::default()
        },
    );
    let (ctl, clk) = (control.clone(), clock.clone());
    let e = c
        .make_credential(&make_credential(), None, &mut |_| {
            ctl.touch();
            clk.advance(Duration::from_secs(31));
        })
        .unwrap_err();
    assert_eq!(status(e), StatusCode::USER_ACTION_TIMEOUT);
    // Unplugged in the middle of the getInfo reply (the INIT reply was packet 0).
    let (mut c, control) = key(&clock, TouchMode::Auto);
    faults(
        &control,
        FaultPlan {
            unplug_at_packet: Some(2),
            ..FaultPlan::default()
        },
    );
    let e = c.get_info().unwrap_err();
    assert!(matches!(e, CtapError::Hid(HidError::Transport(_))), "{e:?}");
}

#[test]
fn endless_keepalive_ends_at_the_host_deadline() {
    // Wall clock: keepalives flow every 100 ms until the host's 1 s deadline.
    let key = SimKey::new(SimConfig::builtin("yubikey-5.7", 1).unwrap()).unwrap();
    key.control().set_faults(FaultPlan {
        endless_keepalive: true,
        ..FaultPlan::default()
    });
    let mut c = Client::new(HidChannel::open(key, Timeouts::short()).unwrap());
    assert!(matches!(
        c.get_info().unwrap_err(),
        CtapError::Hid(HidError::Timeout {
            kind: TimeoutKind::Deadline,
            ..
        })
    ));
}
