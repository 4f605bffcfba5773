//! The optional HTTP sink (SPEC §6): each result is POSTed as JSON with the
//! shipment id as `Idempotency-Key`, so a retry after a lost answer cannot
//! make the receiver record a shipment twice. Only a 2xx answer acknowledges;
//! anything else is retried by the delivery loop.
//!
//! Plain `http://` over std's TcpStream, deliberately small: the station talks
//! to a receiver on the rig PC or the line's LAN. Reach an `https://` endpoint
//! through a local TLS-terminating forwarder; this client refuses `https://`
//! rather than send results in clear text to a URL that promised TLS.

use crate::shipment::ShipmentId;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;
use thiserror::Error;

/// Per-request connect and I/O deadline.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HttpSinkError {
    #[error("sink URL {0:?} is not http://HOST[:PORT]/PATH (https needs a local TLS forwarder)")]
    BadUrl(String),
    #[error("sink {url}: {reason}")]
    Io { url: String, reason: String },
    #[error("sink {url} answered {status}")]
    Status { url: String, status: u16 },
}

/// A parsed `http://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSink {
    url: String,
    host: String,
    port: u16,
    path: String,
}

impl HttpSink {
    pub fn parse(url: &str) -> Result<Self, HttpSinkError> {
        let bad = || HttpSinkError::BadUrl(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (authority, 80),
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(HttpSink {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs one result; `Ok` only for a 2xx answer. The id is a validated
    /// [`ShipmentId`] (SPEC §3 grammar), so it cannot end the header line.
    pub fn post(&self, shipment_id: &ShipmentId, json: &str) -> Result<(), HttpSinkError> {
        let io = |e: std::io::Error| HttpSinkError::Io {
            url: self.url.clone(),
            reason: e.to_string(),
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| HttpSinkError::Io {
                url: self.url.clone(),
                reason: "host has no address".into(),
            })?;
        let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let head = self.request_head(shipment_id, json.len());
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.write_all(json.as_bytes()).map_err(io)?;
        // The status line is all we need; read a bounded amount.
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = stream.read(&mut buf[got..]).map_err(io)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let line = std::str::from_utf8(&buf[..got]).unwrap_or("");
        let status: u16 = line
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| HttpSinkError::Io {
                url: self.url.clone(),
                reason: "answer is not HTTP/1.x".into(),
            })?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(HttpSinkError::Status {
                url: self.url.clone(),
                status,
            })
        }
    }
}

impl HttpSink {
    /// The request line and headers: every part is either from the validated
    /// configuration (path without whitespace, host, port), a validated id, or
    /// a number, so no CR/LF can reach it.
    fn request_head(&self, shipment_id: &ShipmentId, len: usize) -> String {
        format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nIdempotency-Key: {}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            self.port,
            shipment_id.as_str(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_parse_and_https_is_refused() {
        let s = HttpSink::parse("http://127.0.0.1:9000/fpr/results").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.path.as_str()),
            ("127.0.0.1", 9000, "/fpr/results")
        );
        assert_eq!(HttpSink::parse("http://sink").unwrap().path, "/");
        for bad in ["https://sink/x", "ftp://x", "http://:80/", "http://h:port/"] {
            assert!(HttpSink::parse(bad).is_err(), "{bad}");
        }
    }

    /// Reads one request: the head, then `Content-Length` bytes of body.
    fn read_request(c: &mut std::net::TcpStream) -> String {
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = c.read(&mut buf).unwrap();
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= len || n == 0 {
                    return text;
                }
            } else if n == 0 {
                return text;
            }
        }
    }

    #[test]
    fn posts_with_the_idempotency_key_and_reads_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for status in ["503 Service Unavailable", "201 Created"] {
                let (mut c, _) = listener.accept().unwrap();
                seen.push(read_request(&mut c));
                write!(c, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
            seen
        });
        let sink = HttpSink::parse(&format!("http://{addr}/in")).unwrap();
        let s1 = ShipmentId::parse("S1").unwrap();
        assert_eq!(
            sink.post(&s1, "{}"),
            Err(HttpSinkError::Status {
                url: sink.url().into(),
                status: 503
            })
        );
        sink.post(&s1, "{}").unwrap();
        let seen = server.join().unwrap();
        // The request head holds exactly these lines, in this order.
        let (head, body) = seen[1].split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(
            lines,
            [
                "POST /in HTTP/1.1".to_string(),
                format!("Host: {}:{}", addr.ip(), addr.port()),
                "Content-Type: application/json".into(),
                "Idempotency-Key: S1".into(),
                "Content-Length: 2".into(),
                "Connection: close".into(),
            ]
        );
        assert_eq!(body, "{}");
    }

    #[test]
    fn a_shipment_id_cannot_carry_a_header_or_a_second_request() {
        // The id that smuggled a header and a request before the grammar.
        let evil = "S1\r\nX-Evil: 1\r\n\r\nPOST /other HTTP/1.1";
        assert!(ShipmentId::parse(evil).is_err());
        let sink = HttpSink::parse("http://127.0.0.1:9/in").unwrap();
        let head = sink.request_head(&ShipmentId::parse("A-b_9").unwrap(), 7);
        assert_eq!(head.matches("\r\n").count(), 7);
        assert!(!head.contains('\n') || head.split("\r\n").all(|l| !l.contains('\n')));
    }
}
