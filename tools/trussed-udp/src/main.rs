//! `trussed-udp`: a CTAP 2.1 authenticator that no one on prereg-station wrote
//! (Nitrokey/trussed `fido-authenticator` on trussed's virtual platform), reachable over the
//! SPEC §10 UDP HID bridge: one datagram = one raw 64-byte CTAPHID report, answers go to
//! the sender's address. Test-only; user presence is confirmed automatically.

mod authenticator;
mod ctaphid;

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use ctaphid::{Action, Device, PACKET_SIZE};

/// KEEPALIVE cadence while a request runs (CTAP 2.1 §11.2.9.2.1: "at least every 100 ms").
const KEEPALIVE_EVERY: Duration = Duration::from_millis(80);
/// Socket poll interval: bounds the latency of answers from the authenticator thread.
const POLL: Duration = Duration::from_millis(2);

const USAGE: &str = "\
usage: trussed-udp [--listen ADDR] [--up-delay-ms N] [--state-file PATH] [--max-rk N] [--verbose]

  --listen ADDR      UDP address to serve (default 127.0.0.1:8111; port 0 = any free port)
  --up-delay-ms N    wait N ms before the virtual user confirms presence (default 0)
  --state-file PATH  keep the authenticator's internal flash in PATH (default: RAM only)
  --max-rk N         resident-credential limit (default: what the 64 KiB flash holds)
  --verbose          log every report to stderr

Prints `trussed-udp listening on ADDR` on stdout once ready.";

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    up_delay: Duration,
    state_file: Option<PathBuf>,
    max_rk: Option<u32>,
    verbose: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8111)),
        up_delay: Duration::ZERO,
        state_file: None,
        max_rk: None,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                args.listen = v
                    .parse()
                    .map_err(|e| format!("--listen {v}: not an address ({e})"))?;
            }
            "--up-delay-ms" => {
                let v = value("--up-delay-ms")?;
                let ms: u64 = v.parse().map_err(|e| format!("--up-delay-ms {v}: {e}"))?;
                args.up_delay = Duration::from_millis(ms);
            }
            "--state-file" => args.state_file = Some(PathBuf::from(value("--state-file")?)),
            "--max-rk" => {
                let v = value("--max-rk")?;
                args.max_rk = Some(v.parse().map_err(|e| format!("--max-rk {v}: {e}"))?);
            }
            "--verbose" => args.verbose = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn os_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(seed)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("trussed-udp: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trussed-udp: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(args: Args) -> io::Result<()> {
    let socket = UdpSocket::bind(args.listen)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", args.listen)))?;
    socket.set_read_timeout(Some(POLL))?;
    let seed = os_seed().map_err(|e| io::Error::new(e.kind(), format!("/dev/urandom: {e}")))?;
    let auth = authenticator::spawn(authenticator::Options {
        up_delay: args.up_delay,
        state_file: args.state_file,
        max_resident_credentials: args.max_rk,
        seed,
    })?;

    {
        let mut out = io::stdout().lock();
        writeln!(out, "trussed-udp listening on {}", socket.local_addr()?)?;
        out.flush()?;
    }

    // Device version in INIT: fido-authenticator 0.4.0.
    let mut device: Device<SocketAddr> = Device::new([0, 4, 0]);
    let mut actions = Vec::new();
    let mut buf = [0u8; 2 * PACKET_SIZE];
    let mut last_keepalive = Instant::now();
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                if args.verbose {
                    eprintln!("<- {peer} {}", hex(&buf[..n]));
                }
                if n == PACKET_SIZE {
                    device.on_packet(peer, &buf[..n], Instant::now(), &mut actions);
                } else {
                    eprintln!("trussed-udp: ignored a {n}-byte datagram from {peer} (want 64)");
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // A previous send's ICMP "port unreachable" surfaces here on Linux; harmless.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        device.on_tick(now, &mut actions);
        loop {
            match auth.replies.try_recv() {
                Ok(reply) => device.on_response(reply, &mut actions),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    return Err(io::Error::other("the authenticator thread stopped"));
                }
            }
        }
        if let Some((peer, cid)) = device.busy_with() {
            if now.duration_since(last_keepalive) >= KEEPALIVE_EVERY {
                let status = if auth.shared.up_needed.load(Ordering::Relaxed) {
                    ctaphid::keepalive::UP_NEEDED
                } else {
                    ctaphid::keepalive::PROCESSING
                };
                actions.push(Action::Send(peer, ctaphid::keepalive_packet(cid, status)));
                last_keepalive = now;
            }
        } else {
            last_keepalive = now;
        }
        for action in actions.drain(..) {
            match action {
                Action::Send(peer, pkt) => {
                    if args.verbose {
                        eprintln!("-> {peer} {}", hex(&pkt));
                    }
                    if let Err(e) = socket.send_to(&pkt, peer) {
                        eprintln!("trussed-udp: send to {peer}: {e}");
                    }
                }
                Action::Dispatch(command, payload) => {
                    if auth
                        .jobs
                        .send(authenticator::Job { command, payload })
                        .is_err()
                    {
                        return Err(io::Error::other("the authenticator thread stopped"));
                    }
                }
                Action::Cancel => authenticator::cancel(),
            }
        }
        if auth.thread.is_finished() {
            return Err(io::Error::other("the authenticator thread stopped"));
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
