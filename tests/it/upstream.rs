//! SPEC §12: the station pulls locked shipments from the fulfillment back end
//! and returns results there, over mutual TLS. Real certificates made with
//! rcgen, the reference back end (`idp serve`) on 127.0.0.1, the station as
//! the built binary; back-end faults from a scripted loopback server.

use crate::util::station_bin;
use prereg_station::config::Config;
use prereg_station::idp::serve::{self, TlsMaterial};
use prereg_station::idp::{EnrollOptions, Idp};
use prereg_station::jose::keys::StationKeys;
use prereg_station::shipment::{Shipment, ShipmentId};
use prereg_station::station::http_sink::{HttpSink, HttpSinkError};
use prereg_station::store::Store;
use prereg_station::upstream::client::UpstreamError;
use prereg_station::upstream::poller::{poll_once, PollError};
use prereg_station::upstream::{CallError, HttpClient, TlsFiles, UpstreamClient, UpstreamStats};
use prereg_station::webauthn::TrustRoots;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A back end (`idp serve` in-process) and a station directory wired to it.
struct Site {
    dir: tempfile::TempDir,
    idp: Idp,
    sign_jwks: prereg_station::jose::Jwks,
    shipments: Vec<Shipment>,
    server: Option<serve::ServeHandle>,
}

impl Site {
    fn idp_dir(&self) -> PathBuf {
        self.dir.path().join("idp")
    }
    fn tls(&self) -> PathBuf {
        self.dir.path().join("tls")
    }
    fn keys(&self) -> PathBuf {
        self.dir.path().join("keys")
    }
    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }
}

/// Station keys, `users` enrolled shipments offered, TLS material in
/// `tls/` (made by `idp serve`'s own code unless `pre_tls` wrote it), the
/// station's client certificate copied into key custody, and the back end listening.
fn site(users: usize, pre_tls: Option<&dyn Fn(&Path)>) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let keys = StationKeys::generate(&dir.path().join("keys")).unwrap();
    let idp = Idp::open(&dir.path().join("idp")).unwrap();
    let shipments = idp
        .enroll(
            &keys.transport_jwks(),
            &EnrollOptions {
                users,
                ..EnrollOptions::default()
            },
        )
        .unwrap();
    idp.offer(&shipments).unwrap();
    let tls = dir.path().join("tls");
    if let Some(make) = pre_tls {
        std::fs::create_dir_all(&tls).unwrap();
        make(&tls);
    }
    let material = TlsMaterial::load_or_make(&tls, &[]).unwrap();
    install_client_cert(&dir.path().join("keys"), &tls);
    let server = serve::spawn(
        &dir.path().join("idp"),
        "127.0.0.1:0".parse().unwrap(),
        material.server_config().unwrap(),
    )
    .unwrap();
    Site {
        sign_jwks: keys.signing_jwks(),
        dir,
        idp,
        shipments,
        server: Some(server),
    }
}

fn install_client_cert(keys: &Path, tls: &Path) {
    for (from, to) in [
        (serve::CLIENT_CERT, "upstream-client.pem"),
        (serve::CLIENT_KEY, "upstream-client.key"),
    ] {
        std::fs::copy(tls.join(from), keys.join(to)).unwrap();
        std::fs::set_permissions(keys.join(to), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, each
/// valid or expired as asked, written in `idp serve`'s layout.
fn write_set(dir: &Path, server_expired: bool, client_expired: bool) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let expired = |p: &mut CertificateParams| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if server_expired {
        expired(&mut server);
    }
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if client_expired {
        expired(&mut client);
    }
    let client_cert = client.signed_by(&client_key, &issuer).unwrap();
    for (name, text) in [
        (serve::CA_KEY, ca_key_pem),
        (serve::SERVER_KEY, server_key.serialize_pem()),
        (serve::SERVER_CERT, server_cert.pem()),
        (serve::CLIENT_KEY, client_key.serialize_pem()),
        (serve::CLIENT_CERT, client_cert.pem()),
        (serve::CA_CERT, ca_cert.pem()),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn station_toml(site: &Site, url: &str, ca: &Path) -> PathBuf {
    let root = site.dir.path().join("sim-root.pem");
    std::fs::write(
        &root,
        prereg_station::sim::attestation::root_pem(0).unwrap(),
    )
    .unwrap();
    let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let text = format!(
        "[station]\nid = \"line1\"\nstate_dir = {}\nkeys_dir = {}\nattestation_roots = [{}]\n\n\
         [[customization]]\nid = \"C19881\"\n\n[[slot]]\ndevice = \"sim:yubikey-5.7\"\n\n[[slot]]\ndevice = \"sim:yubikey-5.7\"\n\n\
         [upstream]\nurl = \"{url}\"\nca = {}\nclient_cert = \"upstream-client.pem\"\nclient_key = \"upstream-client.key\"\npoll_secs = 1\ntimeout_secs = 5\n",
        q(&site.dir.path().join("state")),
        q(&site.keys()),
        q(&root),
        q(ca),
    );
    let path = site.dir.path().join("station.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_once(config: &Path) -> std::process::Output {
    Command::new(station_bin())
        .args(["run", "--once", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

fn client_for(site: &Site, ca: &Path, timeout: Duration) -> UpstreamClient {
    let tls = TlsFiles {
        ca: Some(ca.to_path_buf()),
        client_cert: Some("upstream-client.pem".into()),
        client_key: Some("upstream-client.key".into()),
    };
    let url = format!("https://127.0.0.1:{}", site.addr().port());
    let http = HttpClient::new(&url, &tls, Some(&site.keys()), timeout).unwrap();
    UpstreamClient::new(http, "line1", Arc::new(UpstreamStats::new(url)))
}

fn acks(site: &Site, id: &str) -> u64 {
    let text = std::fs::read(site.idp_dir().join("acks").join(format!("{id}.json"))).unwrap();
    serde_json::from_slice::<serde_json::Value>(&text).unwrap()["acks"]
        .as_u64()
        .unwrap()
}

#[test]
fn station_and_idp_serve_over_mtls_pull_ack_once_return_results_and_activate() {
    let site = site(3, None);
    let config = station_toml(
        &site,
        &format!("https://127.0.0.1:{}", site.addr().port()),
        &site.tls().join(serve::CA_CERT),
    );
    let out = run_once(&config);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    for s in &site.shipments {
        assert_eq!(acks(&site, &s.shipment_id), 1, "acked once: {log}");
    }
    let results =
        prereg_station::idp::read_results(&[site.idp_dir().join(serve::RESULTS)]).unwrap();
    assert_eq!(results.len(), 3);
    let roots = TrustRoots::from_files(&[site.dir.path().join("sim-root.pem")]).unwrap();
    let reports = site.idp.activate(
        &site.sign_jwks,
        &roots,
        &results,
        prereg_station::idp::unix_now(),
    );
    assert!(reports.iter().all(|r| r.verified()), "{reports:?}");
    // Purged only after the back end's 2xx: nothing pending, all purged.
    let store = Store::open(&site.dir.path().join("state/station.db")).unwrap();
    assert_eq!(store.count("purged").unwrap(), 3);
    // A second run finds nothing offered and imports nothing twice.
    let out = run_once(&config);
    assert!(out.status.success());
    assert_eq!(store.count("purged").unwrap(), 3);
    assert_eq!(store.unfinished().unwrap(), 0);
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_by_the_back_end() {
    let site = site(1, None);
    // The station presents a certificate of a CA the back end does not trust.
    let other = tempfile::tempdir().unwrap();
    write_set(other.path(), false, false);
    install_client_cert(&site.keys(), other.path());
    let client = client_for(
        &site,
        &site.tls().join(serve::CA_CERT),
        Duration::from_secs(5),
    );
    let err = client.locked_shipments(10).unwrap_err();
    assert!(matches!(err, UpstreamError::Call { .. }), "{err}");
    assert!(!site.idp_dir().join("acks").exists());
}

#[test]
fn a_server_certificate_not_from_the_configured_ca_is_refused_by_the_station() {
    let site = site(1, None);
    let other = tempfile::tempdir().unwrap();
    write_set(other.path(), false, false);
    let client = client_for(
        &site,
        &other.path().join(serve::CA_CERT),
        Duration::from_secs(5),
    );
    match client.locked_shipments(10) {
        Err(UpstreamError::Call {
            source: CallError::Connect(text),
            ..
        }) => assert!(text.to_lowercase().contains("certificate"), "{text}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_expired_server_certificate_is_refused_by_the_station() {
    let site = site(1, Some(&|d: &Path| write_set(d, true, false)));
    let client = client_for(
        &site,
        &site.tls().join(serve::CA_CERT),
        Duration::from_secs(5),
    );
    match client.locked_shipments(10) {
        Err(UpstreamError::Call {
            source: CallError::Connect(text),
            ..
        }) => assert!(text.to_lowercase().contains("expired"), "{text}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_expired_client_certificate_is_refused_by_the_back_end() {
    let site = site(1, Some(&|d: &Path| write_set(d, false, true)));
    let client = client_for(
        &site,
        &site.tls().join(serve::CA_CERT),
        Duration::from_secs(5),
    );
    assert!(matches!(
        client.locked_shipments(10),
        Err(UpstreamError::Call { .. })
    ));
    assert!(!site.idp_dir().join("acks").exists());
}

#[test]
fn plain_http_to_a_non_loopback_address_is_a_configuration_error_exit_2() {
    let site = site(1, None);
    // TEST-NET-1: never contacted, the configuration is refused first.
    let config = station_toml(
        &site,
        "http://192.0.2.10:8080/api",
        &site.tls().join(serve::CA_CERT),
    );
    let out = run_once(&config);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn a_client_key_readable_by_others_is_refused_at_start() {
    let site = site(1, None);
    std::fs::set_permissions(
        site.keys().join("upstream-client.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let config = station_toml(
        &site,
        &format!("https://127.0.0.1:{}", site.addr().port()),
        &site.tls().join(serve::CA_CERT),
    );
    let out = run_once(&config);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[test]
fn a_409_on_a_result_keeps_it_alerts_and_never_purges() {
    let site = site(1, None);
    let id = site.shipments[0].shipment_id.clone();
    // The back end already holds a different result for this shipment.
    let held = site.idp_dir().join(serve::RESULTS);
    std::fs::create_dir_all(&held).unwrap();
    let other = format!("{{\"shipment_id\":\"{id}\",\"shipment_state\":{{\"shipment_state_id\":103}},\"shipment_items\":[]}}");
    std::fs::write(held.join(format!("{id}.json")), &other).unwrap();
    let config = station_toml(
        &site,
        &format!("https://127.0.0.1:{}", site.addr().port()),
        &site.tls().join(serve::CA_CERT),
    );
    let out = run_once(&config);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--once must not report success: {log}"
    );
    assert!(log.contains("delivery.result_conflict"), "{log}");
    let store = Store::open(&site.dir.path().join("state/station.db")).unwrap();
    assert_eq!(store.count("programmed").unwrap(), 1, "kept, not purged");
    assert_eq!(store.count("purged").unwrap(), 0);
    assert_eq!(
        std::fs::read_to_string(held.join(format!("{id}.json"))).unwrap(),
        other
    );
}

// ---- back-end faults, from a scripted loopback server (plain http) ----

enum Act {
    Reply(u16, String),
    /// Answer after this long (past the client's deadline).
    Slow(Duration, u16, String),
    /// Read the whole request, then close without answering.
    Drop,
}

/// Serves one connection per act, in order; returns the requests seen.
fn scripted(acts: Vec<Act>) -> (SocketAddr, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for act in acts {
            let (mut c, _) = listener.accept().unwrap();
            seen.push(read_request(&mut c));
            let (status, body) = match act {
                Act::Reply(s, b) => (s, b),
                Act::Slow(d, s, b) => {
                    std::thread::sleep(d);
                    (s, b)
                }
                Act::Drop => continue,
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        seen
    });
    (addr, handle)
}

fn read_request(c: &mut std::net::TcpStream) -> String {
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = c.read(&mut buf).unwrap_or(0);
        req.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&req).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        if n == 0 {
            return text;
        }
    }
}

fn plain_client(addr: SocketAddr, timeout: Duration) -> UpstreamClient {
    let url = format!("http://{addr}/api");
    let http = HttpClient::new(&url, &TlsFiles::default(), None, timeout).unwrap();
    UpstreamClient::new(http, "line1", Arc::new(UpstreamStats::new(url)))
}

fn offered(n: usize) -> (Vec<Shipment>, String) {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::open(dir.path()).unwrap();
    let keys = StationKeys::generate_ephemeral();
    let shipments = idp
        .enroll(
            &keys.transport_jwks(),
            &EnrollOptions {
                users: n,
                ..EnrollOptions::default()
            },
        )
        .unwrap();
    let body = serde_json::json!({ "shipments": shipments }).to_string();
    (shipments, body)
}

fn config() -> Config {
    Config::parse(
        "[station]\nid = \"line1\"\nstate_dir = \"/nonexistent\"\n\n[[customization]]\nid = \"C19881\"\n",
    )
    .unwrap()
}

#[test]
fn connection_refused_imports_nothing_and_is_a_transport_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The listener is dropped: nothing listens on that port now.
    let client = plain_client(port, Duration::from_secs(2));
    let store = Store::open_in_memory().unwrap();
    let err = poll_once(&client, &store, &config(), 8, &AtomicBool::new(false)).unwrap_err();
    assert!(
        matches!(
            err,
            PollError::Upstream(UpstreamError::Call {
                source: CallError::Connect(_),
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(store.unfinished().unwrap(), 0);
    assert!(client
        .stats()
        .snapshot()
        .calls
        .contains_key(&("poll".into(), "connect_error".into())));
}

#[test]
fn a_500_on_ack_leaves_the_job_offered_and_the_retry_imports_it_once() {
    let (shipments, body) = offered(1);
    let (addr, server) = scripted(vec![
        Act::Reply(500, "{}".into()),  // poll
        Act::Reply(200, body.clone()), // poll
        Act::Reply(500, "{}".into()),  // ack
        Act::Reply(200, body),         // poll again: still offered
        Act::Reply(200, "{}".into()),  // ack
    ]);
    let client = plain_client(addr, Duration::from_secs(5));
    let store = Store::open_in_memory().unwrap();
    let stop = AtomicBool::new(false);
    assert!(matches!(
        poll_once(&client, &store, &config(), 8, &stop),
        Err(PollError::Upstream(UpstreamError::Status {
            status: 500,
            ..
        }))
    ));
    let first = poll_once(&client, &store, &config(), 8, &stop).unwrap();
    assert_eq!((first.imported, first.acked, first.unanswered), (1, 0, 1));
    let second = poll_once(&client, &store, &config(), 8, &stop).unwrap();
    assert_eq!((second.imported, second.duplicate, second.acked), (0, 1, 1));
    assert_eq!(store.count("queued").unwrap(), 1, "one job, imported once");
    let seen = server.join().unwrap();
    let id = &shipments[0].shipment_id;
    assert!(
        seen[1].starts_with("GET /api/v1/shipments?state=locked&station=line1&limit=8 "),
        "{}",
        seen[1]
    );
    assert!(seen[2].starts_with(&format!("POST /api/v1/shipments/{id}/ack ")));
    let ack: serde_json::Value =
        serde_json::from_str(seen[4].split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(ack["station_id"], "line1");
    assert_eq!(ack["request_digests"].as_array().unwrap().len(), 2);
}

#[test]
fn a_connection_dropped_after_the_ack_was_received_is_retried_as_a_duplicate() {
    let (_, body) = offered(2);
    let (addr, server) = scripted(vec![
        Act::Reply(200, body.clone()),
        Act::Drop, // first ack: received, never answered; the batch ends
        Act::Reply(200, body),
        Act::Reply(200, "{}".into()),
        Act::Reply(200, "{}".into()),
    ]);
    let client = plain_client(addr, Duration::from_secs(5));
    let store = Store::open_in_memory().unwrap();
    let stop = AtomicBool::new(false);
    let err = poll_once(&client, &store, &config(), 8, &stop).unwrap_err();
    assert!(
        matches!(
            err,
            PollError::Upstream(UpstreamError::Call { call: "ack", .. })
        ),
        "{err}"
    );
    // The first shipment is stored (durable before the ack), the second not yet.
    assert_eq!(store.count("queued").unwrap(), 1);
    let again = poll_once(&client, &store, &config(), 8, &stop).unwrap();
    assert_eq!((again.imported, again.duplicate, again.acked), (1, 1, 2));
    assert_eq!(store.count("queued").unwrap(), 2);
    server.join().unwrap();
}

#[test]
fn a_slow_answer_past_the_deadline_fails_the_call_in_time() {
    let (_, body) = offered(1);
    let (addr, _server) = scripted(vec![Act::Slow(Duration::from_secs(4), 200, body)]);
    let client = plain_client(addr, Duration::from_secs(1));
    let store = Store::open_in_memory().unwrap();
    let t0 = Instant::now();
    let err = poll_once(&client, &store, &config(), 8, &AtomicBool::new(false)).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(
        matches!(
            err,
            PollError::Upstream(UpstreamError::Call {
                source: CallError::Timeout(_),
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(store.unfinished().unwrap(), 0);
}

#[test]
fn result_put_carries_the_idempotency_key_and_only_2xx_acknowledges() {
    let (addr, server) = scripted(vec![
        Act::Drop,
        Act::Reply(500, "{}".into()),
        Act::Reply(409, "{}".into()),
        Act::Reply(201, "{}".into()),
    ]);
    let sink = HttpSink::upstream(plain_client(addr, Duration::from_secs(5)));
    let id = ShipmentId::parse("S-1_a").unwrap();
    assert!(matches!(
        sink.post(&id, "{}"),
        Err(HttpSinkError::Io { .. })
    ));
    assert!(matches!(
        sink.post(&id, "{}"),
        Err(HttpSinkError::Status { status: 500, .. })
    ));
    assert!(matches!(
        sink.post(&id, "{}"),
        Err(HttpSinkError::Conflict { .. })
    ));
    sink.post(&id, "{}").unwrap();
    let seen = server.join().unwrap();
    for req in &seen {
        assert!(
            req.starts_with("PUT /api/v1/shipments/S-1_a/result "),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase()
                .contains("\r\nidempotency-key: s-1_a\r\n"),
            "{req}"
        );
    }
}

#[test]
fn an_offered_shipment_with_an_id_outside_the_grammar_never_reaches_a_url() {
    let (mut shipments, _) = offered(1);
    shipments[0].shipment_id = "../../x?y=1\r\nX-Evil: 1".into();
    let body = serde_json::json!({ "shipments": shipments }).to_string();
    let (addr, server) = scripted(vec![Act::Reply(200, body)]);
    let client = plain_client(addr, Duration::from_secs(5));
    let store = Store::open_in_memory().unwrap();
    let report = poll_once(&client, &store, &config(), 8, &AtomicBool::new(false)).unwrap();
    assert_eq!((report.refused, report.acked), (1, 0));
    // Only the poll reached the server: no ack or refusal call was made.
    assert_eq!(server.join().unwrap().len(), 1);
}

#[test]
fn demo_upstream_runs_the_whole_demo_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(station_bin())
        .args(["demo", "--upstream", "--keys", "3", "--slots", "2", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("over mutual TLS"), "{text}");
    assert!(text.contains("3/3 keys programmed and verified"), "{text}");
    // The results are the back end's, not the outbox's.
    assert_eq!(
        std::fs::read_dir(dir.path().join("idp/results"))
            .unwrap()
            .count(),
        3
    );
    assert!(
        !dir.path().join("outbox").exists()
            || std::fs::read_dir(dir.path().join("outbox"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
fn a_back_end_that_hangs_stalls_neither_programming_nor_shutdown_and_no_result_is_purged() {
    let site = site(2, None);
    // A back end that accepts connections (kernel backlog) and never answers.
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api", hang.local_addr().unwrap());
    let config = station_toml(&site, &url, &site.tls().join(serve::CA_CERT));
    // Work arrives through a file meanwhile.
    let jobs = site.dir.path().join("jobs.jsonl");
    let lines: Vec<String> = site
        .shipments
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    std::fs::write(&jobs, lines.join("\n") + "\n").unwrap();
    let out = Command::new(station_bin())
        .args(["jobs", "import", "--config"])
        .arg(&config)
        .arg(&jobs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = Command::new(station_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let db = site.dir.path().join("state/station.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let programmed = Store::open(&db)
            .and_then(|s| s.count("programmed"))
            .unwrap_or(0);
        if programmed == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keys not programmed while the back end hangs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let t0 = Instant::now();
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        t0.elapsed()
    );
    assert!(status.success(), "{status:?}");
    let store = Store::open(&db).unwrap();
    assert_eq!(store.count("programmed").unwrap(), 2, "kept until a 2xx");
    assert_eq!(store.count("purged").unwrap(), 0);
    drop(hang);
}

#[test]
fn a_job_refused_at_intake_is_reported_with_its_code_and_no_longer_offered() {
    let mut site = site(1, None);
    // A second shipment for a customization this station does not program.
    let keys = StationKeys::load(Some(&site.keys())).unwrap();
    let foreign = site
        .idp
        .enroll(
            &keys.transport_jwks(),
            &EnrollOptions {
                customization_id: "C00000".into(),
                ..EnrollOptions::default()
            },
        )
        .unwrap();
    site.idp.offer(&foreign).unwrap();
    let config = station_toml(
        &site,
        &format!("https://127.0.0.1:{}", site.addr().port()),
        &site.tls().join(serve::CA_CERT),
    );
    let out = run_once(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = &foreign[0].shipment_id;
    let refusal: serde_json::Value = serde_json::from_slice(
        &std::fs::read(site.idp_dir().join("refusals").join(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(refusal["code"], "intake.unknown_customization");
    assert_eq!(refusal["station_id"], "line1");
    assert!(!site
        .idp_dir()
        .join("acks")
        .join(format!("{id}.json"))
        .exists());
    // The accepted one went the whole way.
    assert_eq!(acks(&site, &site.shipments[0].shipment_id), 1);
    let client = client_for(
        &site,
        &site.tls().join(serve::CA_CERT),
        Duration::from_secs(5),
    );
    assert!(client.locked_shipments(10).unwrap().is_empty());
    site.server.take().unwrap().shutdown();
}

#[test]
fn idp_serve_command_makes_its_certificates_and_serves_only_clients_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("idp");
    let mut child = Command::new(station_bin())
        .args(["idp", "serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(&state)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
    let addr = first
        .split("https://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let tls = state.join("tls");
    for f in [serve::CA_CERT, serve::SERVER_CERT, serve::CLIENT_CERT] {
        assert!(tls.join(f).exists(), "{f}");
    }
    for f in [serve::CA_KEY, serve::SERVER_KEY, serve::CLIENT_KEY] {
        let mode = std::fs::metadata(tls.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    install_client_cert(&keys, &tls);
    let url = format!("https://{addr}");
    let with_cert = TlsFiles {
        ca: Some(tls.join(serve::CA_CERT)),
        client_cert: Some("upstream-client.pem".into()),
        client_key: Some("upstream-client.key".into()),
    };
    let http = HttpClient::new(&url, &with_cert, Some(&keys), Duration::from_secs(5)).unwrap();
    let client = UpstreamClient::new(http, "line1", Arc::new(UpstreamStats::new(&url)));
    assert!(client.locked_shipments(5).unwrap().is_empty());
    let without = TlsFiles {
        ca: Some(tls.join(serve::CA_CERT)),
        ..TlsFiles::default()
    };
    let http = HttpClient::new(&url, &without, None, Duration::from_secs(5)).unwrap();
    let anonymous = UpstreamClient::new(http, "line1", Arc::new(UpstreamStats::new(&url)));
    assert!(matches!(
        anonymous.locked_shipments(5),
        Err(UpstreamError::Call { .. })
    ));
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_refusal_whose_report_was_lost_is_reported_again_never_acked() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::open(dir.path()).unwrap();
    let foreign = idp
        .enroll(
            &StationKeys::generate_ephemeral().transport_jwks(),
            &EnrollOptions {
                customization_id: "C00000".into(),
                ..EnrollOptions::default()
            },
        )
        .unwrap();
    let body = serde_json::json!({ "shipments": foreign }).to_string();
    let (addr, server) = scripted(vec![
        Act::Reply(200, body.clone()),
        Act::Reply(503, "{}".into()), // the refusal report is lost
        Act::Reply(200, body),
        Act::Reply(200, "{}".into()),
    ]);
    let client = plain_client(addr, Duration::from_secs(5));
    let store = Store::open_in_memory().unwrap();
    let stop = AtomicBool::new(false);
    let first = poll_once(&client, &store, &config(), 8, &stop).unwrap();
    assert_eq!((first.refused, first.unanswered), (1, 1));
    let second = poll_once(&client, &store, &config(), 8, &stop).unwrap();
    assert_eq!(
        (second.duplicate, second.acked, second.unanswered),
        (1, 0, 0)
    );
    let seen = server.join().unwrap();
    let id = &foreign[0].shipment_id;
    for i in [1, 3] {
        assert!(
            seen[i].starts_with(&format!("POST /api/v1/shipments/{id}/refusal ")),
            "{}",
            seen[i]
        );
        let body: serde_json::Value =
            serde_json::from_str(seen[i].split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["code"], "intake.unknown_customization");
    }
}
