//! Integration tests of intake (issue #12, SPEC §3): the spool hands over only
//! complete regular files and never blocks, re-imports and replays are
//! refused with their codes, and untrusted strings reach the terminal escaped.

use prereg_station::cli::jobs::{import_file, open_store};
use prereg_station::config::Config;
use prereg_station::idp::{EnrollOptions, Idp};
use prereg_station::jose::keys::StationKeys;
use prereg_station::shipment::Shipment;
use prereg_station::station::spool::{Outcome, Scanner, MAX_FILE_BYTES};
use prereg_station::station::{app, Station};
use prereg_station::store::Store;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// A station configuration in `d` with a spool, a customization for product 1
/// and `slots` simulated 5.7 keys.
fn config_text(d: &Path, slots: usize) -> String {
    let mut text = format!(
        "[station]\nid = \"intake\"\nstate_dir = {:?}\nkeys_dir = {:?}\noutbox_dir = {:?}\nspool_dir = {:?}\nattestation_roots = [{:?}]\n\n[[customization]]\nid = \"C19881\"\nproducts = [1]\n",
        d.join("state"),
        d.join("keys"),
        d.join("outbox"),
        d.join("spool"),
        d.join("ca.pem"),
    );
    for _ in 0..slots {
        text.push_str("\n[[slot]]\ndevice = \"sim:yubikey-5.7\"\n");
    }
    text
}

/// Configuration, store and an empty spool directory (no keys: intake decrypts nothing).
fn intake_station() -> (tempfile::TempDir, Config, Store, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(&config_text(dir.path(), 0)).unwrap();
    let store = open_store(&config).unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    (dir, config, store, spool)
}

/// One shipment as a JSON line; `tag` makes its (opaque, never decrypted) requests unique.
fn shipment_line(id: &str, tag: &str) -> String {
    format!(
        r#"{{"shipment_id":"{id}","shipment_items":[{{"product_id":1,"inventory_product_id":106,"product_quantity":1,"customization_id":"C19881","product_customizations":[{{"fido_pin_request":"p.{tag}.x.y.z","fido_credential_requests":["c.{tag}.x.y.z"]}}]}}]}}"#
    )
}

fn scan(config: &Config, store: &Store, spool: &Path) -> Vec<Outcome> {
    Scanner::new(store.clone(), config.clone(), spool.to_path_buf()).scan(&AtomicBool::new(false))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn jobs(store: &Store) -> usize {
    store.list(1000).unwrap().len()
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn spool_moves_fifos_symlinks_and_directories_aside_unread() {
    let (dir, config, store, spool) = intake_station();
    mkfifo(&spool.join("fifo.json"));
    // Followed, this link would import a valid job from outside the spool.
    let outside = dir.path().join("outside.json");
    std::fs::write(&outside, shipment_line("OUT1", "o")).unwrap();
    std::os::unix::fs::symlink(&outside, spool.join("link.json")).unwrap();
    std::fs::create_dir(spool.join("dir.jsonl")).unwrap();

    let t = Instant::now();
    let outcomes = scan(&config, &store, &spool);
    assert!(t.elapsed() < Duration::from_secs(5), "scan blocked");
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Rejected { .. })),
        "{outcomes:?}"
    );
    assert_eq!(jobs(&store), 0, "nothing imported");
    assert_eq!(
        entries(&spool),
        [
            "dir.jsonl.rejected",
            "fifo.json.rejected",
            "link.json.rejected"
        ]
    );
    assert!(outside.exists(), "the link's target is untouched");
    // Moved aside once: the next scan has nothing to do.
    assert!(scan(&config, &store, &spool).is_empty());
}

#[test]
fn spool_refuses_a_file_over_the_size_cap() {
    let (_dir, config, store, spool) = intake_station();
    let big = std::fs::File::create(spool.join("big.json")).unwrap();
    big.set_len(MAX_FILE_BYTES + 1).unwrap();
    let outcomes = scan(&config, &store, &spool);
    match outcomes.as_slice() {
        [Outcome::Rejected { why, .. }] => assert!(why.contains("larger than"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(entries(&spool), ["big.json.rejected"]);
    assert_eq!(jobs(&store), 0);
}

#[test]
fn spool_half_written_jsonl_imports_nothing_and_is_moved_aside_whole() {
    let (_dir, config, store, spool) = intake_station();
    let third = shipment_line("H3", "h3");
    let text = format!(
        "{}\n{}\n{}",
        shipment_line("H1", "h1"),
        shipment_line("H2", "h2"),
        &third[..third.len() / 2]
    );
    std::fs::write(spool.join("half.jsonl"), &text).unwrap();
    let outcomes = scan(&config, &store, &spool);
    assert!(
        matches!(outcomes.as_slice(), [Outcome::Rejected { why, .. }] if why.contains("line 3")),
        "{outcomes:?}"
    );
    assert_eq!(jobs(&store), 0, "not even the complete first lines");
    assert_eq!(entries(&spool), ["half.jsonl.rejected"]);
    assert_eq!(
        std::fs::read_to_string(spool.join("half.jsonl.rejected")).unwrap(),
        text,
        "moved aside whole"
    );
    // A second rejected file of the same name never replaces the first.
    std::fs::write(spool.join("half.jsonl"), "{").unwrap();
    scan(&config, &store, &spool);
    assert_eq!(
        entries(&spool),
        ["half.jsonl.1.rejected", "half.jsonl.rejected"]
    );
}

#[test]
fn spool_ignores_a_tmp_file_until_it_is_renamed() {
    let (_dir, config, store, spool) = intake_station();
    let text = format!(
        "{}\n{}\n",
        shipment_line("T1", "t1"),
        shipment_line("T2", "t2")
    );
    std::fs::write(spool.join("batch.jsonl.tmp"), text).unwrap();
    assert!(scan(&config, &store, &spool).is_empty());
    assert_eq!(jobs(&store), 0);
    assert_eq!(entries(&spool), ["batch.jsonl.tmp"]);
    std::fs::rename(spool.join("batch.jsonl.tmp"), spool.join("batch.jsonl")).unwrap();
    match scan(&config, &store, &spool).as_slice() {
        [Outcome::Imported { counts, .. }] => assert_eq!(counts.imported, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.count("queued").unwrap(), 2);
    assert!(entries(&spool).is_empty(), "removed after import");
}

#[test]
fn spool_imports_a_file_claimed_before_a_crash() {
    let (_dir, config, store, spool) = intake_station();
    // What a station killed between claiming and removing a file leaves.
    std::fs::write(spool.join("late.json.importing"), shipment_line("L1", "l1")).unwrap();
    match scan(&config, &store, &spool).as_slice() {
        [Outcome::Imported { counts, .. }] => assert_eq!(counts.imported, 1),
        other => panic!("{other:?}"),
    }
    assert!(entries(&spool).is_empty());
}

/// Runs the built binary with `args`.
fn station(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(crate::util::station_bin())
        .args(args)
        .output()
        .unwrap()
}

/// Keys and an attestation root in `d`, made by the binary.
fn keys_and_ca(d: &Path) {
    let p = |s: &str| d.join(s).into_os_string();
    for args in [
        vec!["keys".into(), "generate".into(), "--dir".into(), p("keys")],
        vec!["sim".into(), "ca".into(), "--out".into(), p("ca.pem")],
    ] {
        let args: Vec<&std::ffi::OsStr> = args
            .iter()
            .map(|a: &std::ffi::OsString| a.as_os_str())
            .collect();
        let out = station(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_fifo_in_the_spool_neither_hangs_run_nor_stops_the_watchdog_or_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys_and_ca(d);
    std::fs::create_dir(d.join("spool")).unwrap();
    std::fs::write(d.join("station.toml"), config_text(d, 1)).unwrap();
    let notify = std::os::unix::net::UnixDatagram::bind(d.join("notify.sock")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = std::process::Command::new(crate::util::station_bin())
        .arg("run")
        .arg("--config")
        .arg(d.join("station.toml"))
        .env("NOTIFY_SOCKET", d.join("notify.sock"))
        .env("WATCHDOG_USEC", "400000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A FIFO named like a job file, with no writer: a blocking open never returns.
    let fifo = d.join("spool/jobs.json");
    mkfifo(&fifo);

    // The watchdog keeps being pinged after the spool has met the FIFO.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pings_after_fifo = 0;
    let mut buf = [0u8; 128];
    while pings_after_fifo < 3 && Instant::now() < deadline {
        if let Ok(n) = notify.recv(&mut buf) {
            if &buf[..n] == b"WATCHDOG=1" && d.join("spool/jobs.json.rejected").exists() {
                pings_after_fifo += 1;
            }
        }
    }
    assert_eq!(
        pings_after_fifo, 3,
        "watchdog pinged after the FIFO was met"
    );
    assert!(!fifo.exists(), "the FIFO was moved aside");

    // SIGTERM still stops the daemon promptly.
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("run ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("not a regular file (FIFO)"), "{stderr}");
}

#[test]
fn jobs_list_and_show_print_a_legacy_id_escaped() {
    let (dir, config, store, _spool) = intake_station();
    std::fs::write(dir.path().join("station.toml"), config_text(dir.path(), 0)).unwrap();
    // Intake refuses such an id now; a row from before that is still printed safely.
    let evil = "EVIL\r\nFAKE LINE\x1b[31m";
    store
        .call(move |c| {
            c.execute(
                "INSERT INTO jobs (shipment_id, product_id, inventory_product_id, customization_id,
                   pin_request, cred_requests, request_digests, state, reason, imported_at, updated_at)
                 VALUES (?1, 1, 106, 'C\x1b]0;x\x07', '', '[]', '[]', 'refused', 'bad\r\nreason', 0, 0)",
                [evil],
            )?;
            Ok(())
        })
        .unwrap();
    drop(store);
    let cfg = dir.path().join("station.toml");
    for args in [
        vec!["jobs", "list", "--config"],
        vec!["jobs", "show", evil, "--config"],
    ] {
        let mut cmd = std::process::Command::new(crate::util::station_bin());
        let out = cmd.args(&args).arg(&cfg).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.contains('\r') && !text.contains('\x1b') && !text.contains('\x07'),
            "{args:?}: {text:?}"
        );
        assert!(
            text.contains("EVIL\\u{d}\\u{a}FAKE LINE\\u{1b}[31m"),
            "{text}"
        );
        assert!(text.contains("bad\\u{d}\\u{a}reason"), "{text}");
        assert_eq!(
            text.lines().filter(|l| l.contains("FAKE LINE")).count(),
            1,
            "no forged line"
        );
    }
    let _ = config;
}

#[test]
fn jobs_import_reports_each_file_and_names_conflicts_and_replays() {
    let (dir, _config, _store, _spool) = intake_station();
    let d = dir.path();
    std::fs::write(d.join("station.toml"), config_text(d, 0)).unwrap();
    std::fs::write(
        d.join("first.jsonl"),
        format!(
            "{}\n{}\n",
            shipment_line("S1", "a"),
            shipment_line("S2", "b")
        ),
    )
    .unwrap();
    // S1 again, the same content with other whitespace: a duplicate. S2 with
    // other requests: a conflict. S3 with S1's requests: a replay. A bad id.
    let s1_spaced = shipment_line("S1", "a").replace(",", ", ");
    std::fs::write(
        d.join("second.jsonl"),
        format!(
            "{s1_spaced}\n{}\n{}\n{}\n",
            shipment_line("S2", "other"),
            shipment_line("S3", "a"),
            shipment_line("BAD\\u001b[2J", "z"),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(crate::util::station_bin())
        .args(["jobs", "import"])
        .arg(d.join("first.jsonl"))
        .arg(d.join("second.jsonl"))
        .arg("--config")
        .arg(d.join("station.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    // Refusals are reported and then exit 1 (issue #17 item 9).
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("first.jsonl: imported 2, already known 0, refused 0"),
        "{text}"
    );
    assert!(
        text.contains("second.jsonl: imported 0, already known 1, refused 3"),
        "{text}"
    );
    assert!(text.contains("refused S2: intake.conflict"), "{text}");
    assert!(text.contains("refused S3: request.replayed"), "{text}");
    assert!(text.contains("intake.shipment_id"), "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.contains("BAD\\u{1b}[2J"), "{text}");

    // The first S2 is as it was, and still queued.
    let store = open_store(&Config::parse(&config_text(d, 0)).unwrap()).unwrap();
    let (row, audit) = store.show("S2").unwrap();
    assert_eq!(row.state, "queued");
    assert!(audit.iter().any(|a| a.event == "conflict"));
    assert_eq!(store.show("S3").unwrap().0.state, "refused");
}

/// The issue's replay: the exact request JWEs of a delivered (and purged) job,
/// under a new shipment id, are refused at import and program no key.
#[test]
fn replayed_requests_of_a_delivered_job_are_refused_and_program_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys_and_ca(d);
    let config = Config::parse(&config_text(d, 1)).unwrap();
    let keys = StationKeys::load_dir(&d.join("keys")).unwrap();
    let idp = Idp::open(&d.join("idp")).unwrap();
    let shipments = idp
        .enroll(
            &keys.transport_jwks(),
            &EnrollOptions {
                users: 1,
                product_id: 1,
                ..EnrollOptions::default()
            },
        )
        .unwrap();
    let store = open_store(&config).unwrap();
    let import = |s: &Shipment, name: &str| {
        let path = d.join(name);
        std::fs::write(&path, serde_json::to_string(s).unwrap()).unwrap();
        import_file(&store, &config, &path).unwrap()
    };
    assert_eq!(import(&shipments[0], "first.json").imported, 1);
    let run = || {
        let station = Station::start(app::setup(config.clone(), store.clone()).unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !station.drained() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let programmed = station.shared().programmed.lock().unwrap().len();
        station.shutdown();
        programmed
    };
    assert_eq!(run(), 1);
    assert_eq!(store.count("purged").unwrap(), 1);

    let mut replay = shipments[0].clone();
    replay.shipment_id = "REPLAY1".into();
    let counts = import(&replay, "replay.json");
    assert_eq!((counts.imported, counts.refused), (0, 1));
    assert_eq!(counts.refusals[0].refusal.code(), "request.replayed");
    let (row, _) = store.show("REPLAY1").unwrap();
    assert_eq!(row.state, "refused");
    assert!(row.reason.unwrap().starts_with("request.replayed"));
    assert_eq!(run(), 0, "no key programmed for the replay");
    assert_eq!(store.events("programmed").unwrap().len(), 1);
}

/// `run --once` with jobs handed over only through the spool (write `.tmp`,
/// rename): the spool thread imports them and the station programs them.
/// (That `--once` waits for a first scan is a race this test rarely loses
/// either way: the thread scans at once, the main loop first sleeps.)
#[test]
fn run_once_programs_jobs_handed_over_through_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys_and_ca(d);
    std::fs::create_dir(d.join("spool")).unwrap();
    std::fs::write(d.join("station.toml"), config_text(d, 1)).unwrap();
    let keys = StationKeys::load_dir(&d.join("keys")).unwrap();
    let shipments = Idp::open(&d.join("idp"))
        .unwrap()
        .enroll(
            &keys.transport_jwks(),
            &EnrollOptions {
                users: 2,
                product_id: 1,
                ..EnrollOptions::default()
            },
        )
        .unwrap();
    let lines: Vec<String> = shipments
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    std::fs::write(d.join("spool/batch.jsonl.tmp"), lines.join("\n") + "\n").unwrap();
    std::fs::rename(d.join("spool/batch.jsonl.tmp"), d.join("spool/batch.jsonl")).unwrap();
    let out = std::process::Command::new(crate::util::station_bin())
        .args(["run", "--once", "--config"])
        .arg(d.join("station.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("programmed 2 key(s)"), "{stdout}");
    assert!(entries(&d.join("spool")).is_empty());
    assert_eq!(entries(&d.join("outbox")).len(), 2);
}
