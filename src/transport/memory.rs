//! An in-memory pair of transports (tests, benchmarks, in-process peers).
//!
//! Each end owns an `mpsc` sender to the other and a receiver of its own, so
//! the two ends can live on different threads (a scripted device on one, the
//! host stack on the other) without a shared lock. Dropping one end makes the
//! other see [`TransportError::Disconnected`].

use super::{Report, Transport, TransportError};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// One end of an in-memory report pipe.
#[derive(Debug)]
pub struct MemoryTransport {
    name: String,
    tx: Sender<Report>,
    rx: Receiver<Report>,
}

/// Two connected ends: what one sends, the other receives.
pub fn pair(name: &str) -> (MemoryTransport, MemoryTransport) {
    let (tx_a, rx_b) = channel();
    let (tx_b, rx_a) = channel();
    (
        MemoryTransport {
            name: format!("mem:{name}/host"),
            tx: tx_a,
            rx: rx_a,
        },
        MemoryTransport {
            name: format!("mem:{name}/device"),
            tx: tx_b,
            rx: rx_b,
        },
    )
}

impl MemoryTransport {
    /// A report already waiting, without blocking.
    pub fn try_recv(&mut self) -> Result<Option<Report>, TransportError> {
        match self.rx.try_recv() {
            Ok(r) => Ok(Some(r)),
            Err(std::sync::mpsc::TryRecvError::Empty) => Ok(None),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(TransportError::Disconnected),
        }
    }
}

impl Transport for MemoryTransport {
    fn send(&mut self, report: &Report) -> Result<(), TransportError> {
        self.tx
            .send(*report)
            .map_err(|_| TransportError::Disconnected)
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Report>, TransportError> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => Ok(Some(r)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(TransportError::Disconnected),
        }
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_cross_and_disconnect_is_seen() {
        let (mut a, mut b) = pair("t");
        a.send(&[7; 64]).unwrap();
        assert_eq!(b.recv(Duration::from_millis(10)).unwrap(), Some([7; 64]));
        assert_eq!(b.recv(Duration::from_millis(1)).unwrap(), None);
        assert_eq!(b.try_recv().unwrap(), None);
        drop(a);
        assert!(matches!(
            b.recv(Duration::from_millis(1)),
            Err(TransportError::Disconnected)
        ));
        assert!(matches!(
            b.send(&[0; 64]),
            Err(TransportError::Disconnected)
        ));
    }
}
