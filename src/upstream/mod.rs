//! The upstream fulfillment API (SPEC §12): the station pulls locked shipments
//! from the back end, imports them durably, acknowledges them, reports intake
//! refusals, and returns results — all over HTTPS with mutual TLS.
//!
//! - [`http`]: the one HTTP(S) client of the station (reqwest on rustls with
//!   the ring provider; also behind `[sink] http_url`), with its TLS material
//!   taken from key custody and its URL rules (plain `http://` to loopback only).
//! - [`client`]: the four calls of SPEC §12, each timed and counted.
//! - [`poller`]: the thread that polls for work, with backoff and jitter, so a
//!   back end that is down delays nothing but its own calls.
//! - [`stats`]: call counts, latencies and the last good poll, for the status
//!   page and `/metrics`.

pub mod client;
pub mod http;
pub mod poller;
pub mod stats;

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

pub use client::{PutOutcome, UpstreamClient};
pub use http::{CallError, HttpClient, TlsFiles};
pub use poller::UpstreamThread;
pub use stats::UpstreamStats;

/// Default pause between two polls when the last one found nothing.
pub const DEFAULT_POLL_SECS: u64 = 5;
/// Default number of shipments asked for per poll.
pub const DEFAULT_BATCH: u32 = 32;
/// Deadline of every call (connect, TLS handshake, request and answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[upstream]` as written in the station configuration (SPEC §12).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub poll_secs: Option<u64>,
    pub batch: Option<u32>,
    pub timeout_secs: Option<u64>,
}

/// The validated `[upstream]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `{base}` of SPEC §12.
    pub url: String,
    pub tls: TlsFiles,
    pub poll: Duration,
    pub batch: u32,
    pub timeout: Duration,
}

impl UpstreamConfig {
    /// Validates `[upstream]`: the URL rules of [`http::check_url`], the
    /// certificate pair named together, sane numbers. Errors name the key.
    pub fn from_raw(raw: RawUpstream) -> Result<Self, String> {
        let tls = TlsFiles {
            ca: raw.ca,
            client_cert: raw.client_cert,
            client_key: raw.client_key,
        };
        http::check_url(&raw.url, &tls).map_err(|e| format!("[upstream] url: {e}"))?;
        if tls.client_cert.is_none() && url_is_https(&raw.url) {
            return Err(
                "[upstream] needs client_cert and client_key: the back end authenticates the station by mutual TLS (SPEC §12)"
                    .into(),
            );
        }
        let batch = raw.batch.unwrap_or(DEFAULT_BATCH);
        if !(1..=1000).contains(&batch) {
            return Err(format!("[upstream] batch {batch} is not 1..=1000"));
        }
        let poll = raw.poll_secs.unwrap_or(DEFAULT_POLL_SECS);
        if !(1..=3600).contains(&poll) {
            return Err(format!("[upstream] poll_secs {poll} is not 1..=3600"));
        }
        let timeout = raw
            .timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() || timeout > Duration::from_secs(300) {
            return Err("[upstream] timeout_secs must be 1..=300".into());
        }
        Ok(UpstreamConfig {
            url: raw.url,
            tls,
            poll: Duration::from_secs(poll),
            batch,
            timeout,
        })
    }
}

fn url_is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawUpstream {
        RawUpstream {
            url: url.into(),
            ca: Some("/etc/ca.pem".into()),
            client_cert: Some("c.pem".into()),
            client_key: Some("c.key".into()),
            poll_secs: None,
            batch: None,
            timeout_secs: None,
        }
    }

    #[test]
    fn https_with_a_client_certificate_is_accepted_with_defaults() {
        let c = UpstreamConfig::from_raw(raw("https://fulfillment.example/api")).unwrap();
        assert_eq!(c.poll, Duration::from_secs(5));
        assert_eq!(c.batch, 32);
    }

    #[test]
    fn plain_http_is_refused_unless_the_host_is_loopback() {
        for ok in [
            "http://127.0.0.1:8443/api",
            "http://127.9.9.9/",
            "http://[::1]:80/x",
            "http://localhost:1/",
        ] {
            UpstreamConfig::from_raw(raw(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://10.0.0.1/api",
            "http://fulfillment.example/api",
            "http://localhost.evil.example/",
            "http://128.0.0.1/",
            "ftp://127.0.0.1/",
            "not a url",
        ] {
            let e = UpstreamConfig::from_raw(raw(bad)).unwrap_err();
            assert!(e.contains("[upstream] url"), "{bad}: {e}");
        }
    }

    #[test]
    fn https_needs_a_ca_and_both_halves_of_the_client_certificate() {
        let mut r = raw("https://b.example/");
        r.ca = None;
        assert!(UpstreamConfig::from_raw(r).unwrap_err().contains("ca"));
        let mut r = raw("https://b.example/");
        r.client_key = None;
        assert!(UpstreamConfig::from_raw(r)
            .unwrap_err()
            .contains("client_key"));
        let mut r = raw("https://b.example/");
        r.client_cert = None;
        r.client_key = None;
        assert!(UpstreamConfig::from_raw(r)
            .unwrap_err()
            .contains("mutual TLS"));
    }
}
