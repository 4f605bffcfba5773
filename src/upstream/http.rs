//! The station's HTTP(S) client (SPEC §6 HTTP sink, SPEC §12 upstream API):
//! reqwest's blocking client on rustls with the ring provider.
//!
//! Why these crates: reqwest is the most used Rust HTTP client and rides on
//! hyper, which axum already brings into the tree; rustls is a memory-safe TLS
//! stack without OpenSSL, and the ring provider builds with a C compiler only
//! (aws-lc needs cmake). The blocking flavour fits the station's threads (the
//! delivery thread, the upstream poller): each call blocks only its own thread.
//!
//! Rules enforced here, once, for every caller:
//! - trust: only the certificates of the configured `ca` file (no bundled or
//!   system roots), TLS 1.2 or newer, the host name checked against the
//!   server certificate, validity periods checked (an expired certificate is
//!   refused by rustls/webpki);
//! - mutual TLS: the client certificate and key come from key custody
//!   (`keys_dir`, else `$CREDENTIALS_DIRECTORY`); the key file must not be
//!   readable or writable by group or others (the check of the station's JWK
//!   files, [`crate::jose::keys`]);
//! - plain `http://` only to a loopback host (127.0.0.0/8, ::1, `localhost`);
//! - no proxy from the environment, no redirects (a redirect could carry a
//!   result elsewhere), a deadline on every call, bounded answer bodies.

use crate::jose::keys::read_private;
use reqwest::blocking::Client;
use reqwest::{Method, Url};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use zeroize::Zeroizing;

/// Largest answer body read (a poll of 1000 shipments of a few KiB each fits).
pub const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;

/// The TLS files of one endpoint, as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file of the CA(s) that issue the server's certificate; the only trust anchors.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM), a name in key custody or an absolute path.
    pub client_cert: Option<String>,
    /// Client private key (PEM, PKCS#8 or SEC1), a name in key custody or an absolute path.
    pub client_key: Option<String>,
}

/// Why a client could not be made (a configuration problem: exit 2 at start-up).
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{0}")]
    Url(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Key(#[from] crate::jose::KeyError),
    #[error("no keys directory for {0}: set [station] keys_dir or run under systemd with LoadCredential= ($CREDENTIALS_DIRECTORY)")]
    NoKeysDir(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Why one call got no HTTP answer. The text names the URL and the cause (no
/// secret: the URL holds the base, a validated shipment id and the station id).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    /// TCP connect or TLS handshake failed (refused, unreachable, certificate refused).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No complete answer within the deadline.
    #[error("no answer in time: {0}")]
    Timeout(String),
    /// The connection broke, or the answer was not HTTP.
    #[error("transport failed: {0}")]
    Transport(String),
    /// The answer body was larger than [`MAX_ANSWER_BYTES`].
    #[error("answer larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

impl CallError {
    /// Metric label.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::Connect(_) => "connect_error",
            CallError::Timeout(_) => "timeout",
            CallError::Transport(_) | CallError::TooLarge => "transport_error",
        }
    }
}

/// An HTTP answer (any status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Checks a configured URL: `https://` with a `ca`, or `http://` to a loopback
/// host; no user info, query or fragment; client certificate and key named
/// together. Returns the parsed URL.
pub fn check_url(url: &str, tls: &TlsFiles) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are not accepted (the station authenticates by client certificate)".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{url:?}: a base URL takes no query or fragment"));
    }
    match parsed.scheme() {
        "https" => {
            if tls.ca.is_none() {
                return Err(
                    "https needs `ca`: the PEM file of the CA that issued the server's certificate (no other roots are trusted)"
                        .into(),
                );
            }
        }
        "http" => {
            if !is_loopback(&parsed) {
                return Err(format!(
                    "{url:?}: plain http:// is accepted only for a loopback host (127.0.0.0/8, ::1, localhost); use https://"
                ));
            }
        }
        other => return Err(format!("{url:?}: scheme {other} is neither https nor http")),
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(_), None) => Err("client_cert is set but client_key is not".into()),
        (None, Some(_)) => Err("client_key is set but client_cert is not".into()),
        _ => Ok(parsed),
    }
}

/// Whether the URL's host is a loopback address or `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Resolves a credential name: an absolute path as is, else inside
/// `keys_dir`, else inside `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
pub fn custody_path(name: &str, keys_dir: Option<&Path>) -> Result<PathBuf, SetupError> {
    let p = Path::new(name);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    if p.components().count() != 1 {
        return Err(SetupError::File {
            path: p.to_path_buf(),
            reason: "a credential name is a file name in key custody or an absolute path".into(),
        });
    }
    let dir = match keys_dir {
        Some(d) => d.to_path_buf(),
        None => std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(PathBuf::from)
            .ok_or_else(|| SetupError::NoKeysDir(name.to_owned()))?,
    };
    Ok(dir.join(p))
}

/// One configured HTTP(S) endpoint.
#[derive(Debug, Clone)]
pub struct HttpClient {
    base: Url,
    client: Client,
}

impl HttpClient {
    /// Makes the client for `url` with `tls` (see the module rules). Reads the
    /// CA, the client certificate and the mode-checked client key now, so a
    /// wrong file is a start-up error, not a failure at the first call.
    pub fn new(
        url: &str,
        tls: &TlsFiles,
        keys_dir: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, SetupError> {
        let base = check_url(url, tls).map_err(SetupError::Url)?;
        let mut builder = Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .min_tls_version(reqwest::tls::Version::TLS_1_2)
            .https_only(base.scheme() == "https")
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("prereg-station/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &tls.ca {
            let pem = std::fs::read(ca).map_err(|e| SetupError::File {
                path: ca.clone(),
                reason: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SetupError::File {
                    path: ca.clone(),
                    reason: format!("not PEM certificates ({e})"),
                })?;
            if certs.is_empty() {
                return Err(SetupError::File {
                    path: ca.clone(),
                    reason: "holds no PEM certificate".into(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
            let cert_path = custody_path(cert, keys_dir)?;
            let key_path = custody_path(key, keys_dir)?;
            // The key file gets the same mode check as the station's JWKs.
            let key_pem = read_private(&key_path)?;
            let cert_pem = std::fs::read(&cert_path).map_err(|e| SetupError::File {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
            let mut both = Zeroizing::new(Vec::with_capacity(cert_pem.len() + key_pem.len() + 1));
            both.extend_from_slice(&key_pem);
            both.push(b'\n');
            both.extend_from_slice(&cert_pem);
            let identity = reqwest::Identity::from_pem(&both).map_err(|_| SetupError::File {
                path: key_path.clone(),
                reason: format!(
                    "with {}: not a PEM private key (PKCS#8 or SEC1) and certificate",
                    cert_path.display()
                ),
            })?;
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(|e| SetupError::Tls(chain(&e)))?;
        Ok(HttpClient { base, client })
    }

    /// The configured base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The base with `segments` appended as path segments (each
    /// percent-encoded by the URL library; callers pass fixed words and
    /// validated shipment ids only).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends one request and reads the whole answer (bounded).
    pub fn send(
        &self,
        method: Method,
        url: Url,
        headers: &[(&'static str, &str)],
        json_body: Option<Vec<u8>>,
    ) -> Result<Answer, CallError> {
        let mut req = self.client.request(method, url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = json_body {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let resp = req.send().map_err(classify)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        resp.take(MAX_ANSWER_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    CallError::Timeout(e.to_string())
                } else {
                    CallError::Transport(e.to_string())
                }
            })?;
        if body.len() as u64 > MAX_ANSWER_BYTES {
            return Err(CallError::TooLarge);
        }
        Ok(Answer { status, body })
    }
}

fn classify(e: reqwest::Error) -> CallError {
    let text = chain(&e);
    if e.is_timeout() {
        CallError::Timeout(text)
    } else if e.is_connect() {
        CallError::Connect(text)
    } else {
        CallError::Transport(text)
    }
}

/// The error and its causes on one line (reqwest's own text hides the cause,
/// e.g. which certificate check failed).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_resolve_in_key_custody_and_cannot_leave_it() {
        let dir = Path::new("/etc/prereg-station/keys");
        assert_eq!(
            custody_path("upstream-client.key", Some(dir)).unwrap(),
            dir.join("upstream-client.key")
        );
        assert_eq!(
            custody_path("/srv/pki/client.key", Some(dir)).unwrap(),
            Path::new("/srv/pki/client.key")
        );
        for bad in ["../client.key", "sub/client.key", "./client.key"] {
            assert!(
                matches!(custody_path(bad, Some(dir)), Err(SetupError::File { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_nothing_into_new_segments() {
        let c = HttpClient::new(
            "http://127.0.0.1:9/api/",
            &TlsFiles::default(),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            c.url(&["v1", "shipments", "S-1", "ack"]).as_str(),
            "http://127.0.0.1:9/api/v1/shipments/S-1/ack"
        );
    }
}
