//! `prereg-station idp serve` (SPEC §12): the reference fulfillment back end.
//! It offers the shipments the reference IdP enrolled (`STATE/offer/`), takes
//! acknowledgements and refusals, and keeps the results it receives
//! (`STATE/results/<id>.json`) for `idp activate`.
//!
//! Transport: HTTPS with mutual TLS on rustls (ring provider), the axum router
//! served by hyper over tokio-rustls. Every client must present a certificate
//! issued by the back end's CA ([`TlsMaterial`], made with rcgen in
//! `--tls-dir` on first start: CA, server certificate, station client
//! certificate); a connection without one never reaches a handler.
//!
//! State layout (all 0700 / 0600):
//! - `offer/<id>.json`: a §3 shipment, offered until acked or refused;
//! - `acks/<id>.json`: `{station_id, request_digests, acks}` (`acks` counts calls);
//! - `refusals/<id>.json`: the refusal body;
//! - `results/<id>.json`: the §6 result exactly as received. A second PUT with
//!   the same bytes is answered 200 (idempotent), with other bytes 409.

use super::{Idp, IdpError};
use crate::jose::keys::write_atomic;
use crate::shipment::{JobContent, Shipment, ShipmentId, ShipmentResult};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Sub-directories of the IdP state the back end uses.
const OFFER: &str = "offer";
const ACKS: &str = "acks";
const REFUSALS: &str = "refusals";
pub const RESULTS: &str = "results";

/// Most shipments one poll may ask for.
const MAX_LIMIT: usize = 1000;

/// File names in `--tls-dir`.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";
pub const CLIENT_CERT: &str = "station-client.pem";
pub const CLIENT_KEY: &str = "station-client.key";

impl Idp {
    /// Offers `shipments` to stations through `idp serve` (SPEC §12).
    pub fn offer(&self, shipments: &[Shipment]) -> Result<(), IdpError> {
        let dir = self.state_dir.join(OFFER);
        private_dir(&dir)?;
        for s in shipments {
            let text = serde_json::to_vec(s).map_err(|_| IdpError::Options("json"))?;
            write_atomic(&dir, &format!("{}.json", s.shipment_id), &text, 0o600)?;
        }
        Ok(())
    }
}

fn private_dir(dir: &Path) -> Result<(), IdpError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| IdpError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// The PEM files of the back end's TLS: its CA, its server certificate and
/// a client certificate for the station.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub dir: PathBuf,
}

impl TlsMaterial {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Loads `dir`, or makes it on first use: a CA, a server certificate for
    /// `localhost`, 127.0.0.1, ::1 and `extra_hosts`, and a station client
    /// certificate (keys 0600, PKCS#8 P-256).
    pub fn load_or_make(dir: &Path, extra_hosts: &[String]) -> Result<Self, String> {
        let material = TlsMaterial {
            dir: dir.to_path_buf(),
        };
        if material.path(CA_CERT).exists() {
            return Ok(material);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        hosts.extend(extra_hosts.iter().cloned());
        let issued = issue_set(&hosts).map_err(|e| format!("rcgen: {e}"))?;
        let write = |name: &str, text: &str, mode: u32| {
            write_atomic(dir, name, text.as_bytes(), mode).map_err(|e| e.to_string())
        };
        write(CA_KEY, &issued.ca_key, 0o600)?;
        write(SERVER_KEY, &issued.server_key, 0o600)?;
        write(CLIENT_KEY, &issued.client_key, 0o600)?;
        write(SERVER_CERT, &issued.server_cert, 0o644)?;
        write(CLIENT_CERT, &issued.client_cert, 0o644)?;
        // The CA certificate last: its presence means the set is complete.
        write(CA_CERT, &issued.ca_cert, 0o644)?;
        Ok(material)
    }

    /// The rustls server configuration: this server certificate, TLS 1.2+,
    /// and a client certificate issued by this CA required.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        let read = |name: &str| {
            std::fs::read(self.path(name))
                .map_err(|e| format!("{}: {e}", self.path(name).display()))
        };
        let certs = CertificateDer::pem_slice_iter(&read(SERVER_CERT)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{SERVER_CERT}: {e}"))?;
        let key_pem = zeroize::Zeroizing::new(read(SERVER_KEY)?);
        let key =
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("{SERVER_KEY}: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&read(CA_CERT)?) {
            let ca = ca.map_err(|e| format!("{CA_CERT}: {e}"))?;
            roots.add(ca).map_err(|e| format!("{CA_CERT}: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| format!("server certificate: {e}"))
    }
}

/// A freshly issued set (PEM texts).
#[derive(Debug)]
pub struct IssuedSet {
    pub ca_cert: String,
    pub ca_key: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

/// The current year, for validity periods (one year back, two ahead).
fn this_year() -> i32 {
    1970 + (crate::idp::unix_now() / 31_556_952) as i32
}

/// Issues a CA, a server certificate for `hosts` and a client certificate.
pub fn issue_set(hosts: &[String]) -> Result<IssuedSet, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let year = this_year();
    let validity = |p: &mut CertificateParams| {
        p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        p.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "prereg-station reference back end CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(hosts.to_vec())?;
    server
        .distinguished_name
        .push(DnType::CommonName, "prereg-station reference back end");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut server);
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client
        .distinguished_name
        .push(DnType::CommonName, "prereg-station");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut client);
    let client_cert = client.signed_by(&client_key, &issuer)?;
    Ok(IssuedSet {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key_pem,
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    })
}

/// The back end's shared state.
#[derive(Debug)]
struct Backend {
    state: PathBuf,
    /// One writer at a time: check-then-write of results and acks is atomic.
    lock: Mutex<()>,
}

impl Backend {
    fn file(&self, sub: &str, id: &ShipmentId) -> PathBuf {
        self.state.join(sub).join(format!("{id}.json"))
    }

    fn write(&self, sub: &str, id: &ShipmentId, bytes: &[u8]) -> Result<(), StatusCode> {
        let dir = self.state.join(sub);
        private_dir(&dir).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        write_atomic(&dir, &format!("{id}.json"), bytes, 0o600)
            .map(drop)
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn offered(&self, id: &ShipmentId) -> Result<Shipment, StatusCode> {
        let bytes = std::fs::read(self.file(OFFER, id)).map_err(|_| StatusCode::NOT_FOUND)?;
        serde_json::from_slice(&bytes).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
    }
}

type Answer = (StatusCode, Json<serde_json::Value>);

fn answer(status: StatusCode, message: &str) -> Answer {
    (status, Json(serde_json::json!({ "message": message })))
}

fn parse_id(raw: &str) -> Result<ShipmentId, Answer> {
    ShipmentId::parse(raw).map_err(|_| {
        answer(
            StatusCode::BAD_REQUEST,
            "shipment id is not in the SPEC §3 grammar",
        )
    })
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    station: Option<String>,
    limit: Option<usize>,
}

async fn list(State(b): State<Arc<Backend>>, Query(q): Query<ListQuery>) -> Answer {
    if q.state.as_deref() != Some("locked") {
        return answer(
            StatusCode::BAD_REQUEST,
            "state=locked is the only state offered",
        );
    }
    if q.station.as_deref().is_none_or(str::is_empty) {
        return answer(StatusCode::BAD_REQUEST, "station= is required");
    }
    let limit = q.limit.unwrap_or(32).clamp(1, MAX_LIMIT);
    let _guard = b.lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<String> = std::fs::read_dir(b.state.join(OFFER))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut shipments = Vec::new();
    for name in names {
        let Some(id) = name
            .strip_suffix(".json")
            .and_then(|i| ShipmentId::parse(i).ok())
        else {
            continue;
        };
        // Acknowledged or refused: no longer offered (SPEC §12).
        let done = [ACKS, REFUSALS].iter().any(|sub| b.file(sub, &id).exists());
        if done {
            continue;
        }
        if let Ok(bytes) = std::fs::read(b.file(OFFER, &id)) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                shipments.push(v);
            }
        }
        if shipments.len() >= limit {
            break;
        }
    }
    (
        StatusCode::OK,
        Json(serde_json::json!({ "shipments": shipments })),
    )
}

#[derive(Deserialize)]
struct AckBody {
    station_id: String,
    request_digests: Vec<String>,
}

async fn ack(
    State(b): State<Arc<Backend>>,
    UrlPath(raw): UrlPath<String>,
    body: Result<Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    let id = match parse_id(&raw) {
        Ok(id) => id,
        Err(a) => return a,
    };
    let Ok(Json(body)) = body else {
        return answer(
            StatusCode::BAD_REQUEST,
            "body is not {station_id, request_digests}",
        );
    };
    let _guard = b.lock.lock().unwrap_or_else(|e| e.into_inner());
    let shipment = match b.offered(&id) {
        Ok(s) => s,
        Err(s) => return answer(s, "no such shipment"),
    };
    if JobContent::from(&shipment).request_digests != body.request_digests {
        return answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request_digests do not match the shipment offered",
        );
    }
    let acks = std::fs::read(b.file(ACKS, &id))
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .and_then(|v| v["acks"].as_u64())
        .unwrap_or(0)
        + 1;
    let record = serde_json::json!({
        "station_id": body.station_id,
        "request_digests": body.request_digests,
        "acks": acks,
    });
    match b.write(ACKS, &id, record.to_string().as_bytes()) {
        Ok(()) => answer(StatusCode::OK, "acknowledged"),
        Err(s) => answer(s, "cannot record the ack"),
    }
}

#[derive(Deserialize, serde::Serialize)]
struct RefusalBody {
    station_id: String,
    code: String,
    message: String,
}

async fn refusal(
    State(b): State<Arc<Backend>>,
    UrlPath(raw): UrlPath<String>,
    body: Result<Json<RefusalBody>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    let id = match parse_id(&raw) {
        Ok(id) => id,
        Err(a) => return a,
    };
    let Ok(Json(body)) = body else {
        return answer(
            StatusCode::BAD_REQUEST,
            "body is not {station_id, code, message}",
        );
    };
    let _guard = b.lock.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(s) = b.offered(&id) {
        return answer(s, "no such shipment");
    }
    let text = serde_json::to_vec(&body).unwrap_or_default();
    match b.write(REFUSALS, &id, &text) {
        Ok(()) => answer(StatusCode::OK, "refusal recorded"),
        Err(s) => answer(s, "cannot record the refusal"),
    }
}

async fn result(
    State(b): State<Arc<Backend>>,
    UrlPath(raw): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let id = match parse_id(&raw) {
        Ok(id) => id,
        Err(a) => return a,
    };
    if headers.get("idempotency-key").and_then(|v| v.to_str().ok()) != Some(id.as_str()) {
        return answer(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be the shipment id",
        );
    }
    match serde_json::from_slice::<ShipmentResult>(&body) {
        Ok(r) if r.shipment_id == id.as_str() => {}
        Ok(_) => {
            return answer(
                StatusCode::BAD_REQUEST,
                "the result is for another shipment",
            )
        }
        Err(_) => return answer(StatusCode::BAD_REQUEST, "not a SPEC §6 result"),
    }
    let _guard = b.lock.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(s) = b.offered(&id) {
        return answer(s, "no such shipment");
    }
    match std::fs::read(b.file(RESULTS, &id)) {
        Ok(held) if held == body.as_ref() => return answer(StatusCode::OK, "already held"),
        Ok(_) => {
            return answer(
                StatusCode::CONFLICT,
                "a different result is held for this shipment",
            )
        }
        Err(_) => {}
    }
    match b.write(RESULTS, &id, &body) {
        Ok(()) => answer(StatusCode::CREATED, "result stored"),
        Err(s) => answer(s, "cannot store the result"),
    }
}

/// The SPEC §12 routes over `state`.
pub fn router(state: &Path) -> Router {
    let backend = Arc::new(Backend {
        state: state.to_path_buf(),
        lock: Mutex::new(()),
    });
    Router::new()
        .route("/v1/shipments", get(list))
        .route("/v1/shipments/{id}/ack", post(ack))
        .route("/v1/shipments/{id}/refusal", post(refusal))
        .route("/v1/shipments/{id}/result", put(result))
        .with_state(backend)
}

/// A running back end.
#[derive(Debug)]
pub struct ServeHandle {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServeHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the server thread.
    pub fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `state` over mutual TLS on `listen` (port 0: any free port) on a
/// thread with its own tokio runtime.
pub fn spawn(
    state: &Path,
    listen: SocketAddr,
    tls: rustls::ServerConfig,
) -> std::io::Result<ServeHandle> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(listen))?;
    let addr = listener.local_addr()?;
    let app = router(state);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("idp-serve".into())
        .spawn(move || rt.block_on(accept_loop(listener, tls, app, rx)))?;
    Ok(ServeHandle {
        addr,
        stop: Some(tx),
        thread: Some(thread),
    })
}

/// Accepts connections until `stop`: each gets its TLS handshake (bounded
/// in time) and HTTP/1.1 on its own task.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("idp serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, "idp serve: TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
