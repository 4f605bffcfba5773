//! The UDP HID bridge of SPEC §10, client side: one datagram = one raw 64-byte
//! CTAPHID report, no report-id byte, no length prefix (the SoloKeys simulator
//! convention that python-fido2 glue and libfido2 custom I/O speak).
//!
//! The socket is `connect`ed to the device, so the OS drops datagrams from any
//! other address and an ICMP "port unreachable" surfaces as a refused
//! connection, which we report as [`TransportError::Disconnected`].

use super::{Report, Transport, TransportError, REPORT_LEN};
use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// Default address of a bridge device (SPEC §10).
pub const DEFAULT_DEVICE_ADDR: &str = "127.0.0.1:8111";

/// A transport to one device behind a UDP HID bridge.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    peer: SocketAddr,
}

impl UdpTransport {
    /// Connects to `peer` (`HOST:PORT`), binding `local` or an ephemeral port
    /// on the matching unspecified address.
    pub fn connect(peer: &str, local: Option<SocketAddr>) -> Result<Self, TransportError> {
        let open_err = |reason: String| TransportError::Open {
            device: format!("udp:{peer}"),
            reason,
        };
        let peer_addr = peer
            .to_socket_addrs()
            .map_err(|e| open_err(format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| open_err("address resolves to nothing".into()))?;
        let local = local.unwrap_or_else(|| match peer_addr {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        });
        let socket =
            UdpSocket::bind(local).map_err(|e| open_err(format!("cannot bind {local}: {e}")))?;
        socket
            .connect(peer_addr)
            .map_err(|e| open_err(format!("cannot connect: {e}")))?;
        Ok(Self {
            socket,
            peer: peer_addr,
        })
    }

    /// The device's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Our bound address (for the bridge's logs and tests).
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.socket.local_addr().map_err(io)
    }
}

fn io(e: std::io::Error) -> TransportError {
    match e.kind() {
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => TransportError::Disconnected,
        _ => TransportError::Io(e.to_string()),
    }
}

impl Transport for UdpTransport {
    fn send(&mut self, report: &Report) -> Result<(), TransportError> {
        let n = self.socket.send(report).map_err(io)?;
        if n != REPORT_LEN {
            return Err(TransportError::Io(format!(
                "sent {n} of {REPORT_LEN} bytes"
            )));
        }
        Ok(())
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Report>, TransportError> {
        // std refuses a zero read timeout; zero means "poll" (Transport docs).
        if timeout.is_zero() {
            self.socket.set_nonblocking(true).map_err(io)?;
        } else {
            self.socket.set_nonblocking(false).map_err(io)?;
            self.socket.set_read_timeout(Some(timeout)).map_err(io)?;
        }
        // One byte more than a report, to notice datagrams that are too long.
        let mut buf = [0u8; REPORT_LEN + 1];
        match self.socket.recv(&mut buf) {
            Ok(REPORT_LEN) => {
                let mut report = [0u8; REPORT_LEN];
                report.copy_from_slice(&buf[..REPORT_LEN]);
                Ok(Some(report))
            }
            Ok(n) => Err(TransportError::Io(format!(
                "UDP datagram of {n} bytes from {} is not one {REPORT_LEN}-byte report",
                self.peer
            ))),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    fn describe(&self) -> String {
        format!("udp:{}", self.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_travel_as_single_datagrams() {
        let device = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = device.local_addr().unwrap().to_string();
        let mut t = UdpTransport::connect(&addr, Some("127.0.0.1:0".parse().unwrap())).unwrap();
        assert_eq!(t.describe(), format!("udp:{addr}"));
        t.send(&[5; 64]).unwrap();
        let mut buf = [0u8; 100];
        let (n, from) = device.recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (64, t.local_addr().unwrap()));
        assert_eq!(t.recv(Duration::ZERO).unwrap(), None);
        assert_eq!(t.recv(Duration::from_millis(5)).unwrap(), None);
        device.send_to(&[6; 64], from).unwrap();
        assert_eq!(t.recv(Duration::from_secs(1)).unwrap(), Some([6; 64]));
        device.send_to(&[7; 65], from).unwrap();
        assert!(matches!(
            t.recv(Duration::from_secs(1)),
            Err(TransportError::Io(_))
        ));
        // Datagrams from anyone but the device are dropped by the OS.
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        stranger.send_to(&[8; 64], from).unwrap();
        assert_eq!(t.recv(Duration::from_millis(20)).unwrap(), None);
    }

    #[test]
    fn unresolvable_peer_is_an_open_error() {
        assert!(matches!(
            UdpTransport::connect("no-such-host.invalid:1", None),
            Err(TransportError::Open { .. })
        ));
    }
}
