//! The optional HTTP sink (SPEC §6): each result is POSTed as JSON with the
//! shipment id as `Idempotency-Key`, so a retry after a lost answer cannot
//! make the receiver record a shipment twice. Only a 2xx answer acknowledges;
//! anything else is retried by the delivery loop.
//!
//! Plain `http://` over std's TcpStream, deliberately small: the station talks
//! to a receiver on the rig PC or the line's LAN. Reach an `https://` endpoint
//! through a local TLS-terminating forwarder; this client refuses `https://`
//! rather than send results in clear text to a URL that promised TLS.

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

    /// POSTs one result; `Ok` only for a 2xx answer.
    pub fn post(&self, shipment_id: &str, json: &str) -> Result<(), HttpSinkError> {
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
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nIdempotency-Key: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            self.port,
            shipment_id,
            json.len()
        );
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

    #[test]
    fn posts_with_the_idempotency_key_and_reads_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for status in ["503 Service Unavailable", "201 Created"] {
                let (mut c, _) = listener.accept().unwrap();
                let mut req = vec![0u8; 4096];
                let n = c.read(&mut req).unwrap();
                seen.push(String::from_utf8_lossy(&req[..n]).to_string());
                write!(c, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
            seen
        });
        let sink = HttpSink::parse(&format!("http://{addr}/in")).unwrap();
        assert_eq!(
            sink.post("S1", "{}"),
            Err(HttpSinkError::Status {
                url: sink.url().into(),
                status: 503
            })
        );
        sink.post("S1", "{}").unwrap();
        let seen = server.join().unwrap();
        assert!(seen[1].starts_with("POST /in HTTP/1.1\r\n"));
        assert!(seen[1].contains("Idempotency-Key: S1\r\n"));
    }
}
