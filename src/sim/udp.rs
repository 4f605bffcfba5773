//! The UDP HID bridge (SPEC §10, the SoloKeys simulator convention): one
//! datagram = one raw 64-byte CTAPHID report, no report id, no length prefix.
//! Each reply goes to the address that last sent a report on its channel
//! (falling back to the last sender): two hosts on one key each hear their
//! own channel, as on USB, where every host reads the reports it is owed.
//!
//! One thread per key: it waits at most [`POLL`] for a datagram, feeds it to
//! the key, then sends whatever the key has queued (replies, keepalives).
//! The short wait is what drives keepalives and touch timeouts between
//! requests; a shared stop flag ends the thread within one poll.

use super::{SimError, SimKey};
use crate::transport::{Transport, REPORT_LEN};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Default device address (SPEC §10).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8111";
/// How long a server thread waits for a datagram before polling the key.
pub const POLL: Duration = Duration::from_millis(10);

/// A running bridge for one key.
#[derive(Debug)]
pub struct UdpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    /// Binds `addr` and serves `key` on a thread.
    pub fn spawn(addr: SocketAddr, key: SimKey) -> Result<Self, SimError> {
        let socket =
            UdpSocket::bind(addr).map_err(|e| SimError::Io(format!("bind {addr}: {e}")))?;
        socket
            .set_read_timeout(Some(POLL))
            .map_err(|e| SimError::Io(e.to_string()))?;
        let addr = socket
            .local_addr()
            .map_err(|e| SimError::Io(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sim-udp-{addr}"))
            .spawn(move || serve(socket, key, &flag))
            .map_err(|e| SimError::Io(e.to_string()))?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Channels whose host address is remembered; the simulated key keeps at most
/// 64 channels, so older entries are stale.
const MAX_ROUTES: usize = 256;

fn serve(socket: UdpSocket, mut key: SimKey, stop: &AtomicBool) {
    let mut peer: Option<SocketAddr> = None;
    // Channel id → the address that last sent on it. Without this a second host
    // that is told CHANNEL_BUSY (CTAP 2.1 §11.2.4) would capture the keepalives
    // and the reply owed to the first, and the first would time out.
    let mut routes: HashMap<u32, SocketAddr> = HashMap::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                // Anything but exactly one report is not a HID transfer: dropped, as a USB stack would.
                if n == REPORT_LEN {
                    let mut report = [0u8; REPORT_LEN];
                    report.copy_from_slice(&buf[..n]);
                    peer = Some(from);
                    if routes.len() >= MAX_ROUTES {
                        routes.clear();
                    }
                    routes.insert(cid_of(&report), from);
                    if key.send(&report).is_err() {
                        // Unplugged: the host hears nothing, like a pulled key.
                        continue;
                    }
                } else {
                    tracing::debug!(len = n, %from, "sim udp: ignoring datagram that is not one 64-byte report");
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                tracing::warn!(error = %e, "sim udp: receive failed");
                std::thread::sleep(POLL);
            }
        }
        while let Ok(Some(report)) = key.recv(Duration::ZERO) {
            if let Some(to) = routes.get(&cid_of(&report)).copied().or(peer) {
                if let Err(e) = socket.send_to(&report, to) {
                    tracing::warn!(error = %e, %to, "sim udp: send failed");
                }
            }
        }
    }
}

fn cid_of(report: &[u8; REPORT_LEN]) -> u32 {
    u32::from_be_bytes([report[0], report[1], report[2], report[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimConfig, TouchMode};

    fn client() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    fn packet(cid: u32, cmd: u8, payload: &[u8]) -> [u8; REPORT_LEN] {
        let mut r = [0u8; REPORT_LEN];
        r[..4].copy_from_slice(&cid.to_be_bytes());
        r[4] = 0x80 | cmd;
        r[5..7].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        r[7..7 + payload.len()].copy_from_slice(payload);
        r
    }

    fn recv(s: &UdpSocket) -> [u8; REPORT_LEN] {
        let mut buf = [0u8; REPORT_LEN];
        let (n, _) = s.recv_from(&mut buf).expect("a report before the timeout");
        assert_eq!(n, REPORT_LEN);
        buf
    }

    fn open(s: &UdpSocket, to: SocketAddr, nonce: u8) -> u32 {
        s.send_to(&packet(0xffff_ffff, 0x06, &[nonce; 8]), to)
            .unwrap();
        let r = recv(s);
        assert_eq!(&r[7..15], &[nonce; 8]);
        u32::from_be_bytes([r[15], r[16], r[17], r[18]])
    }

    /// Two hosts on one key (CTAP 2.1 §11.2.4): the second is told BUSY on its
    /// own socket, and the first keeps getting its keepalives and its reply —
    /// replies follow the channel, not whoever sent the last datagram.
    #[test]
    fn replies_go_to_the_host_of_their_channel() {
        let cfg = SimConfig::builtin("yubikey-5.7", 1)
            .unwrap()
            .touch(TouchMode::Rig);
        let key = SimKey::new(cfg).unwrap();
        let control = key.control();
        let server = UdpServer::spawn("127.0.0.1:0".parse().unwrap(), key).unwrap();
        let to = server.local_addr();
        let (a, b) = (client(), client());
        let cid_a = open(&a, to, 1);
        let cid_b = open(&b, to, 2);

        // authenticatorSelection on A waits for a touch (KEEPALIVE UPNEEDED).
        a.send_to(&packet(cid_a, 0x10, &[0x0b]), to).unwrap();
        assert_eq!(&recv(&a)[4..8], &[0xbb, 0, 1, 2]);
        b.send_to(&packet(cid_b, 0x01, b"x"), to).unwrap();
        let busy = recv(&b);
        assert_eq!(&busy[..4], &cid_b.to_be_bytes());
        assert_eq!(&busy[4..8], &[0xbf, 0, 1, 0x06]);

        // Keepalives keep reaching A after B spoke; then the touch and the reply.
        assert_eq!(&recv(&a)[4..8], &[0xbb, 0, 1, 2]);
        control.touch();
        let reply = loop {
            let r = recv(&a);
            if r[4] != 0xbb {
                break r;
            }
        };
        assert_eq!(&reply[..4], &cid_a.to_be_bytes());
        assert_eq!(&reply[4..8], &[0x90, 0, 1, 0]);
        server.stop();
    }
}
