//! A fleet on one PostgreSQL database (SPEC §13, issue #13), with real
//! `prereg-station run` processes: stations share one queue, a station killed
//! mid-programming or paused past its lease loses nothing and ships nothing
//! twice. Runs against the throw-away server of `scripts/pg-throwaway.sh`
//! (CI: always; `PREREG_REQUIRE_PG` turns a missing server into a failure).

use prereg_station::idp::{EnrollOptions, Idp};
use prereg_station::jose::keys::StationKeys;
use prereg_station::store::{pg, PgSettings, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn station(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(crate::util::station_bin())
        .args(args)
        .output()
        .unwrap()
}

/// Station keys (shared by the fleet: jobs are encrypted to them) and the
/// simulator's attestation CA.
fn keys_and_ca(d: &Path) {
    for args in [
        vec![
            "keys".into(),
            "generate".into(),
            "--dir".into(),
            d.join("keys"),
        ],
        vec!["sim".into(), "ca".into(), "--out".into(), d.join("ca.pem")],
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a: &PathBuf| a.as_os_str()).collect();
        let out = station(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A fleet: a fresh database, shared keys, `n` jobs imported through `jobs import`.
struct Fleet {
    dir: tempfile::TempDir,
    url: String,
    store: Store,
}

/// A running `prereg-station run --once`, killed if the test fails first.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Fleet {
    fn new(jobs: usize) -> Option<Fleet> {
        let admin = pg::test_server_url()?;
        let url = pg::fresh_test_database(&admin).unwrap();
        let dir = tempfile::tempdir().unwrap();
        keys_and_ca(dir.path());
        let keys = StationKeys::load_dir(&dir.path().join("keys")).unwrap();
        let idp = Idp::open(&dir.path().join("idp")).unwrap();
        let shipments = idp
            .enroll(
                &keys.transport_jwks(),
                &EnrollOptions {
                    users: jobs,
                    product_id: 1,
                    ..EnrollOptions::default()
                },
            )
            .unwrap();
        let lines: Vec<String> = shipments
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        let file = dir.path().join("shipments.jsonl");
        std::fs::write(&file, lines.join("\n")).unwrap();
        let store = Store::open_postgres(
            PgSettings {
                url: url.clone(),
                password: None,
            },
            "test",
        )
        .unwrap();
        let fleet = Fleet { dir, url, store };
        let cfg = fleet.config("importer", 0, 1, 600);
        let out = station(&[
            "jobs".as_ref(),
            "import".as_ref(),
            file.as_os_str(),
            "--config".as_ref(),
            cfg.as_os_str(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fleet.store.count("queued").unwrap(), jobs as u64);
        Some(fleet)
    }

    /// Writes the configuration of station `id` (its own state and outbox,
    /// `slots` simulated keys whose serials follow from `seed`).
    fn config(&self, id: &str, slots: usize, seed: u64, lease_secs: u64) -> PathBuf {
        let d = self.dir.path();
        let mut text = format!(
            "[station]\nid = {id:?}\nstate_dir = {:?}\nkeys_dir = {:?}\noutbox_dir = {:?}\nattestation_roots = [{:?}]\nlease_secs = {lease_secs}\nsim_seed = {seed}\n\n[store]\nurl = {:?}\n\n[[customization]]\nid = \"C19881\"\nproducts = [1]\n",
            d.join(id).join("state"),
            d.join("keys"),
            d.join(id).join("outbox"),
            d.join("ca.pem"),
            self.url,
        );
        for _ in 0..slots {
            text.push_str("\n[[slot]]\ndevice = \"sim:yubikey-5.7\"\n");
        }
        let path = d.join(format!("{id}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn run(&self, id: &str, slots: usize, seed: u64, lease_secs: u64) -> Running {
        let cfg = self.config(id, slots, seed, lease_secs);
        let log = std::fs::File::create(self.dir.path().join(format!("{id}-{seed}.log"))).unwrap();
        Running(
            Command::new(crate::util::station_bin())
                .args(["run", "--once", "--config"])
                .arg(cfg)
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    fn sql(&self) -> postgres::Client {
        postgres::Client::connect(&self.url.replace("?sslmode=disable", ""), postgres::NoTls)
            .unwrap()
    }

    /// Waits until station `id` has a key between setPIN and its stored
    /// result; returns its (shipment, serial).
    fn wait_in_flight(&self, id: &str, within: Duration) -> Vec<(String, String)> {
        let mut c = self.sql();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let rows = c
                .query(
                    "SELECT shipment_id, serial FROM in_flight WHERE station = $1",
                    &[&id],
                )
                .unwrap();
            if !rows.is_empty() {
                return rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("station {id} never started programming");
    }

    fn wait_all(&self, mut running: Vec<Running>, within: Duration) {
        let deadline = Instant::now() + within;
        for r in running.iter_mut() {
            loop {
                if let Some(status) = r.0.try_wait().unwrap() {
                    assert!(
                        status.success(),
                        "a station failed: {status}; logs in {}",
                        self.logs()
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the fleet did not drain; {}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!(
                    "\n== {:?}\n{}",
                    e.file_name(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        }
        out
    }

    /// Every result file in every station's outbox, by shipment id.
    fn delivered(&self, stations: &[&str]) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for id in stations {
            let Ok(dir) = std::fs::read_dir(self.dir.path().join(id).join("outbox")) else {
                continue;
            };
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(ship) = name.strip_suffix(".json") {
                    *seen.entry(ship.to_owned()).or_default() += 1;
                }
            }
        }
        seen
    }

    /// The checks every fleet run must pass: each job delivered exactly once,
    /// no serial in two results, every key that began programming and has no
    /// stored result is quarantined.
    fn assert_exactly_once(&self, jobs: usize, stations: &[&str]) {
        let delivered = self.delivered(stations);
        assert_eq!(delivered.len(), jobs, "every job delivered");
        assert!(
            delivered.values().all(|&n| n == 1),
            "delivered twice: {delivered:?}"
        );
        assert_eq!(self.store.count("purged").unwrap(), jobs as u64);
        let programmed = self.store.events("programmed").unwrap();
        assert_eq!(programmed.len(), jobs, "one stored result per job");
        let serials: BTreeSet<_> = programmed.iter().map(|a| a.serial.clone()).collect();
        assert_eq!(serials.len(), jobs, "no serial in two results");
        let stored: BTreeSet<_> = programmed.iter().filter_map(|a| a.serial.clone()).collect();
        let quarantined: BTreeSet<_> = self
            .store
            .quarantined()
            .unwrap()
            .into_iter()
            .map(|q| q.serial)
            .collect();
        for began in self.store.events("programming").unwrap() {
            let serial = began.serial.unwrap();
            assert!(
                stored.contains(&serial) || quarantined.contains(&serial),
                "key {serial} began programming, was not stored and is not quarantined"
            );
        }
    }
}

/// Three stations drain 60 jobs; one is SIGKILLed mid-programming and
/// restarted (with new keys in its slots).
#[test]
fn three_stations_drain_sixty_jobs_and_a_killed_one_ships_nothing_twice() {
    let Some(fleet) = Fleet::new(60) else { return };
    let mut a = fleet.run("A", 2, 11, 600);
    let b = fleet.run("B", 2, 22, 600);
    let c = fleet.run("C", 2, 33, 600);
    let victims = fleet.wait_in_flight("A", Duration::from_secs(60));
    a.0.kill().unwrap(); // SIGKILL
    a.0.wait().unwrap();
    // What the kill left: keys mid-programming, their jobs still leased by A.
    let stranded: Vec<String> = fleet
        .sql()
        .query("SELECT serial FROM in_flight WHERE station = 'A'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!stranded.is_empty(), "killed mid-programming: {victims:?}");
    let a2 = fleet.run("A", 2, 44, 600);
    fleet.wait_all(vec![a2, b, c], Duration::from_secs(240));
    fleet.assert_exactly_once(60, &["A", "B", "C"]);
    for serial in &stranded {
        assert!(fleet.store.is_quarantined(serial).unwrap(), "{serial}");
    }
    // The fleet saw every station; all of them programmed.
    let status = fleet.store.fleet_status().unwrap();
    let ids: Vec<_> = status.stations.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["A", "B", "C"]);
    assert_eq!(status.queue, [("purged".to_string(), 60)]);
    // The operator's view of the same: `fleet status --json` on any station.
    let cfg = fleet.dir.path().join("B.toml");
    let out = station(&[
        "fleet".as_ref(),
        "status".as_ref(),
        "--json".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<_> = json["stations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["slots"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [("A".into(), 2), ("B".into(), 2), ("C".into(), 2)]);
    assert_eq!(json["queue"], serde_json::json!([["purged", 60]]));
}

/// On SQLite there is no fleet: `fleet status` says so, exit 2.
#[test]
fn fleet_status_on_a_sqlite_station_names_the_missing_store_section() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("station.toml");
    std::fs::write(
        &cfg,
        format!(
            "[station]\nid = \"solo\"\nstate_dir = {:?}\n",
            dir.path().join("state")
        ),
    )
    .unwrap();
    let out = station(&[
        "fleet".as_ref(),
        "status".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[store] url"));
}

/// A station paused (SIGSTOP) for longer than its lease, then resumed, must
/// not store its result: the job is delivered once, by the other station,
/// and the paused station's key is quarantined.
#[test]
fn a_station_paused_past_its_lease_stores_nothing_and_the_job_ships_once() {
    let Some(fleet) = Fleet::new(12) else { return };
    let a = fleet.run("A", 1, 55, 2);
    let b = fleet.run("B", 1, 66, 2);
    let pid = a.0.id().to_string();
    // kill(1): the crate denies unsafe code, in tests too.
    let signal = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, pid.as_str()])
            .status()
            .unwrap()
            .success())
    };
    let mut stopped = Vec::new();
    // Stop A while it has a key in flight (after the stop, the row is fixed).
    for _ in 0..50 {
        fleet.wait_in_flight("A", Duration::from_secs(60));
        signal("-STOP");
        stopped = fleet
            .sql()
            .query(
                "SELECT shipment_id, serial FROM in_flight WHERE station = 'A'",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        if !stopped.is_empty() {
            break;
        }
        signal("-CONT");
    }
    assert!(!stopped.is_empty());
    std::thread::sleep(Duration::from_secs(5)); // > lease_secs = 2
    signal("-CONT");
    fleet.wait_all(vec![a, b], Duration::from_secs(240));
    fleet.assert_exactly_once(12, &["A", "B"]);
    let mut c = fleet.sql();
    for (job, serial) in &stopped {
        assert!(fleet.store.is_quarantined(serial).unwrap(), "{serial}");
        let by: Vec<(String, String)> = c
            .query(
                "SELECT station, serial FROM audit WHERE event = 'programmed' AND shipment_id = $1",
                &[job],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(by.len(), 1, "{job}: {by:?}");
        assert_ne!(&by[0].1, serial, "the paused station's key was not shipped");
    }
}
