//! The HTTP sinks (SPEC §6, §12), on the station's one HTTP(S) client
//! ([`crate::upstream::http`]: reqwest on rustls, mutual TLS from key custody,
//! plain `http://` to loopback only):
//!
//! - `[sink] http_url`: each result is POSTed as JSON with the shipment id as
//!   `Idempotency-Key`, so a retry after a lost answer cannot make the
//!   receiver record a shipment twice. Only a 2xx answer acknowledges.
//! - `[upstream]`: each result is PUT to `{base}/v1/shipments/{id}/result`
//!   with the same header; 2xx acknowledges, `409` means the back end holds a
//!   different result: ours is kept (never purged) and an alert raised.
//!
//! Anything else is retried by the delivery loop with its per-result backoff.
//! The id in the URL path and the header is a [`ShipmentId`] (SPEC §3
//! grammar), so it cannot add a segment, a query, or a header line.

use crate::shipment::ShipmentId;
use crate::upstream::http::{HttpClient, SetupError, TlsFiles};
use crate::upstream::{PutOutcome, UpstreamClient};
use reqwest::Method;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Per-request deadline of the POST sink (connect, TLS, request, answer).
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HttpSinkError {
    #[error("sink URL {0}")]
    BadUrl(String),
    #[error("sink {url}: {reason}")]
    Io { url: String, reason: String },
    #[error("sink {url} answered {status}")]
    Status { url: String, status: u16 },
    /// `409` from the upstream back end (SPEC §12).
    #[error("{url} holds a different result for this shipment (409): ours is kept, never purged; reconcile with the back end")]
    Conflict { url: String },
}

#[derive(Debug, Clone)]
enum Target {
    Post(HttpClient),
    Upstream(UpstreamClient),
}

/// Where results go over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpSink {
    url: String,
    target: Target,
    /// Set at shutdown: no new call starts ([`HttpSink::close`]).
    closing: Arc<AtomicBool>,
}

impl HttpSink {
    /// `[sink] http_url` with its TLS files (client key from key custody).
    pub fn new(url: &str, tls: &TlsFiles, keys_dir: Option<&Path>) -> Result<Self, SetupError> {
        Ok(HttpSink {
            url: url.to_owned(),
            target: Target::Post(HttpClient::new(url, tls, keys_dir, TIMEOUT)?),
            closing: Arc::default(),
        })
    }

    /// A plain `http://` loopback sink without TLS files.
    pub fn parse(url: &str) -> Result<Self, HttpSinkError> {
        Self::new(url, &TlsFiles::default(), None).map_err(|e| HttpSinkError::BadUrl(e.to_string()))
    }

    /// Results returned to the upstream back end (SPEC §12 `PUT …/result`).
    pub fn upstream(client: UpstreamClient) -> Self {
        HttpSink {
            url: client.base().to_owned(),
            target: Target::Upstream(client),
            closing: Arc::default(),
        }
    }

    /// The station is stopping: every later [`HttpSink::post`] fails at once
    /// (the result stays pending in the store and is sent after the restart).
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Hands one result over; `Ok` only when the receiver acknowledged it (2xx).
    pub fn post(&self, shipment_id: &ShipmentId, json: &str) -> Result<(), HttpSinkError> {
        let url = self.url.clone();
        if self.closing.load(Ordering::SeqCst) {
            return Err(HttpSinkError::Io {
                url,
                reason: "the station is stopping; sent after the restart".into(),
            });
        }
        match &self.target {
            Target::Post(http) => {
                let answer = http
                    .send(
                        Method::POST,
                        http.base().clone(),
                        &[("Idempotency-Key", shipment_id.as_str())],
                        Some(json.as_bytes().to_vec()),
                    )
                    .map_err(|e| HttpSinkError::Io {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
                if answer.is_success() {
                    Ok(())
                } else {
                    Err(HttpSinkError::Status {
                        url,
                        status: answer.status,
                    })
                }
            }
            Target::Upstream(client) => match client.put_result(shipment_id, json) {
                Ok(PutOutcome::Acknowledged) => Ok(()),
                Ok(PutOutcome::Conflict) => Err(HttpSinkError::Conflict { url }),
                Err(crate::upstream::client::UpstreamError::Status { status, .. }) => {
                    Err(HttpSinkError::Status { url, status })
                }
                Err(e) => Err(HttpSinkError::Io {
                    url,
                    reason: e.to_string(),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn urls_parse_and_plain_http_is_for_loopback_only() {
        HttpSink::parse("http://127.0.0.1:9000/fpr/results").unwrap();
        HttpSink::parse("http://localhost/").unwrap();
        for bad in [
            "http://sink.example/x",
            "http://10.1.2.3/x",
            "ftp://127.0.0.1/",
            "https://127.0.0.1/x", // https needs a `ca`
            "http://u:p@127.0.0.1/",
        ] {
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
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
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
                write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
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
        let (head, body) = seen[1].split_once("\r\n\r\n").unwrap();
        let lines: Vec<String> = head.split("\r\n").map(str::to_ascii_lowercase).collect();
        assert_eq!(lines[0], "post /in http/1.1");
        assert!(
            lines.contains(&"idempotency-key: s1".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"content-type: application/json".to_string()));
        assert_eq!(body, "{}");
    }

    #[test]
    fn a_closed_sink_starts_no_call() {
        // Nothing listens on port 9 of loopback in the test sandbox either
        // way; a closed sink must fail before trying.
        let sink = HttpSink::parse("http://127.0.0.1:9/in").unwrap();
        sink.close();
        match sink.post(&ShipmentId::parse("S1").unwrap(), "{}") {
            Err(HttpSinkError::Io { reason, .. }) => assert!(reason.contains("stopping")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_shipment_id_cannot_carry_a_header_or_a_second_request() {
        // The id that smuggled a header and a request before the grammar:
        // it can never become a ShipmentId, the only type `post` takes.
        let evil = "S1\r\nX-Evil: 1\r\n\r\nPOST /other HTTP/1.1";
        assert!(ShipmentId::parse(evil).is_err());
        assert!(ShipmentId::parse("../x").is_err());
        assert!(ShipmentId::parse("a?b=1").is_err());
    }
}
