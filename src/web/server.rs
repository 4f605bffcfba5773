//! The operator web server (axum): status page, SSE, JSON, controls,
//! `/metrics`, `/healthz`.
//!
//! Access: loopback by default. On a non-loopback address a bearer token is
//! required ([`WebConfig::new`] refuses to build without one) and every
//! request must carry it, as `Authorization: Bearer …` (Prometheus, curl) or
//! as the `prereg_token` cookie the page sets after one visit to
//! `/?token=…` (a browser's `EventSource` cannot send headers). Without a
//! token, requests must name a loopback host (DNS-rebinding guard). State
//! changing requests are `POST` with the `X-Prereg-Operator` header, which a
//! cross-site form cannot send (CSRF guard).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::{broadcast, watch};

use super::board::{BoardSnapshot, StatusBoard};
use super::metrics;
use crate::secret::SecretString;

/// The page: one file, no build step.
const PAGE: &str = include_str!("page.html");
/// Where the page takes the board snapshot it paints first (issue #17: the
/// page was blank until the live feed's first event).
const FIRST_BOARD: &str = "@@FIRST_BOARD@@";
/// Default listen address (SPEC §11 example).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Shortest accepted token: 16 characters of the URL-safe alphabet.
pub const MIN_TOKEN_LEN: usize = 16;
/// Header a state-changing request must carry.
pub const OPERATOR_HEADER: &str = "x-prereg-operator";
const COOKIE: &str = "prereg_token";

/// Where and how the web server listens. Build with [`WebConfig::new`].
#[derive(Debug, Clone)]
pub struct WebConfig {
    listen: SocketAddr,
    token: Option<Arc<SecretString>>,
}

#[derive(Debug, Error)]
pub enum WebConfigError {
    #[error("[web] listen = {0:?} is not an address:port; use e.g. \"127.0.0.1:8080\"")]
    BadListen(String),
    #[error(
        "[web] listen = {0} is not loopback, so a bearer token is required; set [web] token_file = \"FILE\" (or token = \"…\")"
    )]
    TokenRequired(SocketAddr),
    #[error("web token must be at least {MIN_TOKEN_LEN} characters of A-Z a-z 0-9 . _ ~ -")]
    BadToken,
    #[error("cannot read web token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
}

impl WebConfig {
    /// Validates once: a non-loopback `listen` needs a `token`.
    pub fn new(listen: SocketAddr, token: Option<SecretString>) -> Result<Self, WebConfigError> {
        if let Some(t) = &token {
            let t = t.expose();
            let ok = t.len() >= MIN_TOKEN_LEN
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
            if !ok {
                return Err(WebConfigError::BadToken);
            }
        }
        if !listen.ip().is_loopback() && token.is_none() {
            return Err(WebConfigError::TokenRequired(listen));
        }
        Ok(WebConfig {
            listen,
            token: token.map(Arc::new),
        })
    }

    /// Parses `listen` as written in the config file.
    pub fn parse(listen: &str, token: Option<SecretString>) -> Result<Self, WebConfigError> {
        let addr = listen
            .parse()
            .map_err(|_| WebConfigError::BadListen(listen.to_owned()))?;
        WebConfig::new(addr, token)
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

/// Reads a token file (first line, trimmed), e.g. from
/// `$CREDENTIALS_DIRECTORY/web-token`.
pub fn read_token_file(path: &Path) -> Result<SecretString, WebConfigError> {
    let raw = std::fs::read_to_string(path).map_err(|source| WebConfigError::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    let raw = SecretString::new(raw);
    let line = raw.expose().lines().next().unwrap_or("").trim().to_owned();
    Ok(SecretString::new(line))
}

#[derive(Debug, Error)]
pub enum WebError {
    #[error("cannot listen on {addr}: {source}; is another station running?")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("web server failed: {0}")]
    Serve(std::io::Error),
}

#[derive(Clone)]
struct App {
    board: StatusBoard,
    /// SHA-256 of the token: compared digest to digest so timing reveals
    /// neither content nor length.
    token_digest: Option<[u8; 32]>,
    shutdown: watch::Receiver<bool>,
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A bound server; [`WebServer::run`] serves until `shutdown` resolves.
#[derive(Debug)]
pub struct WebServer {
    listener: tokio::net::TcpListener,
    config: WebConfig,
}

impl WebServer {
    pub async fn bind(config: WebConfig) -> Result<Self, WebError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| WebError::Bind {
                addr: config.listen,
                source,
            })?;
        Ok(WebServer { listener, config })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    pub async fn run(
        self,
        board: StatusBoard,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let app = App {
            board,
            token_digest: self
                .config
                .token
                .as_ref()
                .map(|t| digest(t.expose().as_bytes())),
            shutdown: stop_rx,
        };
        tracing::info!(addr = %self.local_addr(), token = self.config.has_token(), "status page listening");
        axum::serve(self.listener, router(app))
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Ends the SSE streams, which would otherwise keep the
                // graceful shutdown waiting forever.
                let _ = stop_tx.send(true);
            })
            .await
            .map_err(WebError::Serve)
    }
}

/// Binds and serves until `shutdown` resolves.
pub async fn serve(
    config: WebConfig,
    board: StatusBoard,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    WebServer::bind(config).await?.run(board, shutdown).await
}

/// The server on its own thread and runtime, for the (blocking) station.
#[derive(Debug)]
pub struct WebHandle {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), WebError>>>,
}

impl WebHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the thread.
    pub fn shutdown(mut self) -> Result<(), WebError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), WebError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(WebError::Serve(std::io::Error::other(
                "web thread panicked",
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for WebHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Binds (errors returned here) and serves on a dedicated thread with a
/// single-threaded runtime: the web load is a handful of clients, and the
/// station's worker threads stay free of async.
pub fn spawn(config: WebConfig, board: StatusBoard) -> Result<WebHandle, WebError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listen = config.listen;
    let thread = std::thread::Builder::new()
        .name("web".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(WebError::Serve)?;
            rt.block_on(async move {
                let server = match WebServer::bind(config).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = ready_tx.send(Ok(server.local_addr()));
                server
                    .run(board, async move {
                        let _ = stop_rx.await;
                    })
                    .await
            })
        })
        .map_err(WebError::Serve)?;
    match ready_rx.recv() {
        Ok(Ok(addr)) => Ok(WebHandle {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e),
            _ => Err(WebError::Bind {
                addr: listen,
                source: std::io::Error::other("web thread ended before binding"),
            }),
        },
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/events", get(events))
        .route("/api/board", get(board_json))
        .route("/api/pause", post(|s| control(s, Ctl::Pause)))
        .route("/api/resume", post(|s| control(s, Ctl::Resume)))
        .route("/api/drain", post(|s| control(s, Ctl::Drain)))
        .route("/api/undrain", post(|s| control(s, Ctl::Undrain)))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn query_token(req: &Request) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v.to_owned())
}

fn plain(status: StatusCode, msg: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], msg).into_response()
}

/// Authentication, host and CSRF checks for every route.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    match &app.token_digest {
        Some(want) => {
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            let presented = bearer.or_else(|| cookie_token(req.headers()));
            let ok = presented.is_some_and(|t| same(want, &digest(t.as_bytes())));
            if !ok {
                // First visit from a browser: `/?token=…` sets the cookie.
                if req.uri().path() == "/" && req.method() == Method::GET {
                    if let Some(t) = query_token(&req) {
                        if same(want, &digest(t.as_bytes())) {
                            let cookie = format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
                            return match HeaderValue::from_str(&cookie) {
                                Ok(c) => (
                                    StatusCode::SEE_OTHER,
                                    [
                                        (header::SET_COOKIE, c),
                                        (header::LOCATION, HeaderValue::from_static("/")),
                                    ],
                                )
                                    .into_response(),
                                Err(_) => plain(StatusCode::UNAUTHORIZED, "unauthorized\n"),
                            };
                        }
                    }
                }
                let mut r = plain(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: send Authorization: Bearer <token>, or open /?token=<token> once\n",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
        }
        None => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            if host.is_some_and(|h| !is_loopback_host(h)) {
                return plain(
                    StatusCode::FORBIDDEN,
                    "forbidden: use a loopback host name\n",
                );
            }
        }
    }
    if req.method() == Method::POST && !req.headers().contains_key(OPERATOR_HEADER) {
        return plain(
            StatusCode::FORBIDDEN,
            "forbidden: missing X-Prereg-Operator header\n",
        );
    }
    next.run(req).await
}

/// CSP with the hash of the page's one inline script, computed once.
static PAGE_CSP: LazyLock<String> = LazyLock::new(|| {
    let script = PAGE
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or("", |(s, _)| s);
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script.as_bytes()));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
});

/// The page with `board` inlined as its first paint. The JSON sits in a
/// `<script type="application/json">` data block; every `<` in it becomes
/// `\u003c` (the same string to `JSON.parse`), so no text from the station
/// (a job id, a key's error) can close the block or open markup.
fn render_page(board: &BoardSnapshot) -> String {
    let json = serde_json::to_string(board)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c");
    PAGE.replacen(FIRST_BOARD, &json, 1)
}

async fn page(State(app): State<App>) -> Response {
    let mut r = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        render_page(&app.board.snapshot()),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&PAGE_CSP) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

async fn board_json(State(app): State<App>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(app.board.snapshot()),
    )
        .into_response()
}

fn board_event(board: &StatusBoard) -> Event {
    match serde_json::to_string(&board.snapshot()) {
        Ok(json) => Event::default().event("board").data(json),
        Err(e) => Event::default().event("error").data(e.to_string()),
    }
}

struct Feed {
    board: StatusBoard,
    changes: broadcast::Receiver<()>,
    shutdown: watch::Receiver<bool>,
    first: bool,
}

/// Open SSE streams allowed at once: a line has a few monitors; the cap
/// bounds what a misbehaving client can hold open.
pub const MAX_WATCHERS: usize = 64;

/// SSE: the whole board as a `board` event at once and after every change.
async fn events(State(app): State<App>) -> Response {
    if app.board.watchers() >= MAX_WATCHERS {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many open status pages\n",
        );
    }
    let feed = Feed {
        changes: app.board.subscribe(),
        board: app.board,
        shutdown: app.shutdown,
        first: true,
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        if *f.shutdown.borrow() {
            return None;
        }
        if !f.first {
            tokio::select! {
                r = f.changes.recv() => match r {
                    // Lagged: we skipped some notifications; the snapshot
                    // below is the latest state anyway.
                    Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = f.shutdown.changed() => return None,
            }
            // Coalesce a burst of updates into one snapshot.
            while f.changes.try_recv().is_ok() {}
        }
        f.first = false;
        let ev = board_event(&f.board);
        Some((Ok::<_, Infallible>(ev), f))
    });
    (
        [(header::CACHE_CONTROL, "no-store")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
        .into_response()
}

enum Ctl {
    Pause,
    Resume,
    Drain,
    Undrain,
}

async fn control(State(app): State<App>, what: Ctl) -> Response {
    let c = app.board.controls();
    match what {
        Ctl::Pause => c.set_paused(true),
        Ctl::Resume => c.set_paused(false),
        Ctl::Drain => c.set_draining(true),
        Ctl::Undrain => c.set_draining(false),
    }
    Json(serde_json::json!({ "paused": c.paused(), "draining": c.draining() })).into_response()
}

async fn metrics_text(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&app.board),
    )
        .into_response()
}

async fn healthz(State(app): State<App>) -> Response {
    let s = app.board.snapshot();
    Json(serde_json::json!({
        "status": "ok",
        "station": s.station,
        "rig": s.rig.state,
        "paused": s.paused,
        "draining": s.draining,
        "uptime_s": s.uptime_s,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_requires_token_off_loopback() {
        assert!(WebConfig::parse("127.0.0.1:8080", None).is_ok());
        assert!(WebConfig::parse("[::1]:8080", None).is_ok());
        assert!(matches!(
            WebConfig::parse("0.0.0.0:8080", None),
            Err(WebConfigError::TokenRequired(_))
        ));
        assert!(matches!(
            WebConfig::parse("0.0.0.0:8080", Some(SecretString::new("short".into()))),
            Err(WebConfigError::BadToken)
        ));
        assert!(matches!(
            WebConfig::parse(
                "10.0.0.1:80",
                Some(SecretString::new("has space in it 1234".into()))
            ),
            Err(WebConfigError::BadToken)
        ));
        assert!(WebConfig::parse(
            "10.0.0.1:80",
            Some(SecretString::new("abcdefghijklmnop".into()))
        )
        .is_ok());
        assert!(matches!(
            WebConfig::parse("localhost", None),
            Err(WebConfigError::BadListen(_))
        ));
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:8080",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example:8080",
            "10.0.0.1",
            "[fe80::1]:80",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn page_inlines_the_board_as_data_that_cannot_close_its_block() {
        let board = StatusBoard::new("line-1", 2);
        let hostile = "</script><script>alert(1)</script><!--";
        board.slot_update(
            1,
            crate::web::SlotView {
                job: Some(hostile.into()),
                ..crate::web::SlotView::new(crate::web::SlotState::Programming)
            },
        );
        let page = render_page(&board.snapshot());
        assert!(!page.contains(FIRST_BOARD));
        let (_, rest) = page
            .split_once(r#"<script type="application/json" id="first-board">"#)
            .unwrap();
        let (data, _) = rest.split_once("</script>").unwrap();
        assert!(!data.contains('<'), "{data}");
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["station"], "line-1");
        assert_eq!(v["slots"][1]["state"], "programming");
        assert_eq!(v["slots"][1]["job"], hostile);
        // The executable script, and so the CSP hash, is the same every time.
        let script = |p: &str| {
            p.split_once("<script>")
                .and_then(|(_, r)| r.split_once("</script>"))
                .map(|(s, _)| s.to_owned())
        };
        assert_eq!(script(&page), script(PAGE));
    }

    #[test]
    fn page_csp_hashes_the_inline_script() {
        assert!(PAGE.contains("<script>"));
        assert!(PAGE_CSP.contains("script-src 'sha256-"));
    }
}
