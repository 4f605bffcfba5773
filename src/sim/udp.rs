//! The UDP HID bridge (SPEC §10, the SoloKeys simulator convention): one
//! datagram = one raw 64-byte CTAPHID report, no report id, no length prefix.
//! Replies go to the address the last request came from.
//!
//! One thread per key: it waits at most [`POLL`] for a datagram, feeds it to
//! the key, then sends whatever the key has queued (replies, keepalives).
//! The short wait is what drives keepalives and touch timeouts between
//! requests; a shared stop flag ends the thread within one poll.

use super::{SimError, SimKey};
use crate::transport::{Transport, REPORT_LEN};
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

fn serve(socket: UdpSocket, mut key: SimKey, stop: &AtomicBool) {
    let mut peer: Option<SocketAddr> = None;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                // Anything but exactly one report is not a HID transfer: dropped, as a USB stack would.
                if n == REPORT_LEN {
                    let mut report = [0u8; REPORT_LEN];
                    report.copy_from_slice(&buf[..n]);
                    peer = Some(from);
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
            if let Some(to) = peer {
                if let Err(e) = socket.send_to(&report, to) {
                    tracing::warn!(error = %e, %to, "sim udp: send failed");
                }
            }
        }
    }
}
