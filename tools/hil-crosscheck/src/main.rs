//! `hil-crosscheck --device /dev/hidrawN`: reads a key programmed by
//! prereg-station back through ctap-hid-fido2, a second CTAP implementation,
//! so a bench run does not only trust the station's own client.
//!
//! stdin: two lines, the delivered PIN and a new PIN (never argv or the
//! environment, which other users can read). A key with forcePINChange hands
//! out no PIN token, so, like its user's first sign-in, this changes the PIN
//! before it enumerates credentials.
//!
//! stdout: one JSON object: forcePINChange and minPINLength (getInfo, read
//! before the change), pinRetries, and every resident credential (rpId,
//! credential id, user id, user name; ids in lowercase hex).

use ctap_hid_fido2::{FidoKeyHid, HidParam, LibCfg};
use serde_json::json;
use std::io::BufRead;
use std::process::ExitCode;
use zeroize::Zeroizing;

fn main() -> ExitCode {
    match run() {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hil-crosscheck: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn read_pin(lines: &mut impl BufRead, what: &str) -> Result<Zeroizing<String>, String> {
    let mut line = Zeroizing::new(String::new());
    lines
        .read_line(&mut line)
        .map_err(|e| format!("reading the {what} from stdin: {e}"))?;
    let pin = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    if pin.is_empty() {
        return Err(format!(
            "stdin: the {what} is missing (line 1: delivered PIN, line 2: new PIN)"
        ));
    }
    Ok(pin)
}

fn run() -> Result<serde_json::Value, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = match args.as_slice() {
        [flag, path] if flag == "--device" => path.clone(),
        _ => return Err("usage: hil-crosscheck --device /dev/hidrawN (PINs on stdin)".into()),
    };
    let mut stdin = std::io::stdin().lock();
    let delivered = read_pin(&mut stdin, "delivered PIN")?;
    let new_pin = read_pin(&mut stdin, "new PIN")?;

    let mut cfg = LibCfg::init();
    cfg.enable_keep_alive_msg = false;
    // CTAP 2.1 credentialManagement (0x0A), not the 2.1-PRE vendor command.
    cfg.use_pre_credential_management = false;
    let key = FidoKeyHid::new(&[HidParam::Path(device.clone())], &cfg)
        .map_err(|e| format!("cannot open {device}: {e}"))?;

    let info = key.get_info().map_err(|e| format!("getInfo: {e}"))?;
    let retries = key
        .get_pin_retries()
        .map_err(|e| format!("getPINRetries: {e}"))?;
    key.change_pin(&delivered, &new_pin)
        .map_err(|e| format!("changePIN with the delivered PIN: {e}"))?;

    let mut credentials = Vec::new();
    let rps = key
        .credential_management_enumerate_rps(Some(&new_pin))
        .map_err(|e| format!("enumerateRPs: {e}"))?;
    for rp in rps {
        let creds = key
            .credential_management_enumerate_credentials(Some(&new_pin), &rp.rpid_hash)
            .map_err(|e| format!("enumerateCredentials: {e}"))?;
        for c in creds {
            credentials.push(json!({
                "rp_id": rp.public_key_credential_rp_entity.id,
                "credential_id": hex(&c.public_key_credential_descriptor.id),
                "user_id": hex(&c.public_key_credential_user_entity.id),
                "user_name": c.public_key_credential_user_entity.name,
            }));
        }
    }
    Ok(json!({
        "device": device,
        "force_pin_change": info.force_pin_change,
        "min_pin_length": info.min_pin_length,
        "pin_retries": retries,
        "credentials": credentials,
    }))
}
