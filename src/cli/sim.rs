//! `prereg-station sim …` (SPEC §11): simulated keys behind the UDP HID
//! bridge, and the simulator's attestation root.

use crate::error::{CliError, CliResult};
use crate::profile;
use crate::sim::udp::UdpServer;
use crate::sim::{self, SimConfig, SimControl, SimKey, TouchMode};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve N simulated keys on consecutive UDP ports (one datagram = one 64-byte HID report).
    Serve(ServeArgs),
    /// Write the simulator's attestation root certificate (PEM), for `attestation_roots`.
    Ca(CaArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Firmware profile name (built-in, or from --profiles).
    #[arg(long, default_value = "yubikey-5.7")]
    pub profile: String,
    /// Address of the first key; key i listens on port + i.
    #[arg(long, default_value = sim::udp::DEFAULT_ADDR)]
    pub udp: SocketAddr,
    /// Number of keys.
    #[arg(long, default_value_t = 1)]
    pub count: u16,
    /// Who touches the keys: auto (always present), rig (`touch I` lines on stdin), never.
    #[arg(long, value_enum, default_value_t = TouchMode::Auto)]
    pub touch: TouchMode,
    /// Seed: the same seed gives the same keys, serials and attestation CA.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// SPEC §3 product id (default: the profile's first product).
    #[arg(long)]
    pub product: Option<u32>,
    /// Serial of the first key (default derived from the seed).
    #[arg(long)]
    pub serial: Option<u32>,
    /// Directory of firmware profiles instead of the built-in set.
    #[arg(long, value_name = "DIR")]
    pub profiles: Option<PathBuf>,
    /// How long a key waits for a touch before USER_ACTION_TIMEOUT.
    #[arg(long, default_value_t = 30_000)]
    pub touch_timeout_ms: u64,
}

#[derive(Debug, clap::Args)]
pub struct CaArgs {
    /// Output file ("-" for stdout).
    #[arg(long)]
    pub out: PathBuf,
    /// The seed given to `sim serve`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(cmd: Command) -> CliResult {
    match cmd {
        Command::Serve(args) => serve(args),
        Command::Ca(args) => ca(args),
    }
}

/// The serial of key 0 for a seed when none is given: 8 digits, stable per seed.
pub fn default_serial(seed: u64) -> u32 {
    10_000_001 + (seed % 8_000) as u32 * 10_000
}

fn serve(args: ServeArgs) -> CliResult {
    let set = match &args.profiles {
        Some(dir) => profile::load_dir(dir).map_err(|e| {
            CliError::usage(format!(
                "{e}; point --profiles at a directory of *.toml profiles"
            ))
        })?,
        None => profile::builtin(),
    };
    let prof = set
        .get(&args.profile)
        .map_err(|e| CliError::usage(format!("{e}; known profiles: {}", set.names().join(", "))))?;
    let product = args
        .product
        .unwrap_or_else(|| SimConfig::default_product(prof));
    if args.count == 0 {
        return Err(CliError::usage("--count must be at least 1"));
    }
    let serial0 = args.serial.unwrap_or_else(|| default_serial(args.seed));
    let mut servers = Vec::new();
    let mut controls = Vec::new();
    for i in 0..args.count {
        let port = args
            .udp
            .port()
            .checked_add(i)
            .filter(|p| *p != 0 || args.count == 1);
        let Some(port) = port else {
            return Err(CliError::usage("--udp port + --count runs past 65535"));
        };
        let addr = SocketAddr::new(args.udp.ip(), port);
        let config = SimConfig::new(prof.clone(), product)
            .map_err(|e| CliError::usage(format!("{e}; pick a --product the profile lists")))?
            .serial(serial0.wrapping_add(i as u32))
            .seed(args.seed.wrapping_add(i as u64))
            .ca_seed(args.seed)
            .touch(args.touch)
            .touch_timeout(Duration::from_millis(args.touch_timeout_ms));
        let serial = config.serial;
        let key = SimKey::new(config).map_err(|e| CliError::failed(e.to_string()))?;
        let control = key.control();
        let server = UdpServer::spawn(addr, key)
            .map_err(|e| CliError::failed(format!("{e}; is another simulator using the port?")))?;
        outln!(
            "sim key {i}: profile {} product {product} serial {serial} udp {}",
            prof.name,
            server.local_addr()
        );
        controls.push(control);
        servers.push(server);
    }
    let _ = std::io::stdout().flush();
    // stdin is the bench's hand on the keys (touch, port power); serve until
    // the process is stopped (SIGINT/SIGTERM end it; nothing to save).
    let mut line = String::new();
    let stdin = std::io::stdin();
    while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
        outln!("{}", control_line(&controls, line.trim()));
        let _ = std::io::stdout().flush();
        line.clear();
    }
    loop {
        std::thread::park();
    }
}

/// One stdin control line: `touch I`, `power-cycle I`, `unplug I`, `plug I`,
/// `status I` (I = key index). Answers `ok …` or `err …`.
pub fn control_line(controls: &[SimControl], line: &str) -> String {
    let mut words = line.split_whitespace();
    let (Some(verb), Some(index), None) = (words.next(), words.next(), words.next()) else {
        return "err usage: touch|power-cycle|unplug|plug|status <key index>".into();
    };
    let Some(c) = index.parse::<usize>().ok().and_then(|i| controls.get(i)) else {
        return format!("err no key {index}");
    };
    match verb {
        "touch" => {
            let waiting = c.waiting_for_touch();
            c.touch();
            if waiting {
                "ok touched".into()
            } else {
                "ok nothing was waiting for a touch".into()
            }
        }
        "power-cycle" => {
            c.power_cycle();
            "ok".into()
        }
        "unplug" => {
            c.unplug();
            "ok".into()
        }
        "plug" => {
            c.plug();
            "ok".into()
        }
        "status" => {
            let p = c.pin_status();
            format!(
                "ok serial {} present {} pin_set {} retries {} force_pin_change {} credentials {} waiting_for_touch {}",
                c.serial(),
                c.is_present(),
                p.pin_set,
                p.retries,
                p.force_pin_change,
                c.credentials().len(),
                c.waiting_for_touch()
            )
        }
        _ => format!("err unknown command {verb:?}"),
    }
}

fn ca(args: CaArgs) -> CliResult {
    let pem = sim::ca_root_pem(args.seed).map_err(|e| CliError::failed(e.to_string()))?;
    if args.out.as_os_str() == "-" {
        out!("{pem}");
        return Ok(());
    }
    std::fs::write(&args.out, pem)
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", args.out.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines() {
        let key = SimKey::new(SimConfig::builtin("yubikey-5.7", 1).unwrap()).unwrap();
        let c = vec![key.control()];
        assert!(control_line(&c, "touch 0").starts_with("ok nothing"));
        assert_eq!(control_line(&c, "unplug 0"), "ok");
        assert!(!c[0].is_present());
        assert_eq!(control_line(&c, "plug 0"), "ok");
        assert!(control_line(&c, "status 0").contains("present true"));
        assert!(control_line(&c, "touch 1").starts_with("err"));
        assert!(control_line(&c, "dance 0").starts_with("err"));
        assert!(control_line(&c, "touch").starts_with("err usage"));
    }

    #[test]
    fn default_serials_are_eight_digits() {
        for seed in [0, 1, 7_999, u64::MAX] {
            assert_eq!(default_serial(seed).to_string().len(), 8);
        }
    }
}
