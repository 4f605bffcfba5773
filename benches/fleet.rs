//! Fleet benchmark (prints figures; never a timed test). See docs/benchmarks.md, "Fleet".
//!
//! Needs the throw-away PostgreSQL of `scripts/pg-throwaway.sh`:
//! `scripts/pg-throwaway.sh -- cargo bench --bench fleet`.
//!
//! 1. Keys per hour: 4 stations × 16 simulated slots (latency model of
//!    `sim::latency`) on one PostgreSQL database, against 4 stations × 16
//!    slots each on its own SQLite database; all in this process.
//! 2. Store latency percentiles under the same concurrency (4 stores × 16
//!    threads): lease, and begin_programming + store_result (the fenced write).
//! 3. Lease cost (lease + release) with 1,000 and 100,000 jobs queued.
//!
//! `PREREG_BENCH_ROUNDS` (keys per slot, default 2).

use prereg_station::cli::jobs::{import_file, open_store};
use prereg_station::config::Config;
use prereg_station::idp::{EnrollOptions, Idp};
use prereg_station::jose::keys::StationKeys;
use prereg_station::shipment::{Job, ShipmentId};
use prereg_station::sim::latency::{self, LatencyModel};
use prereg_station::station::simslot::SIM_CA_SEED;
use prereg_station::station::{app, Station};
use prereg_station::store::{pg, PgSettings, Store};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROFILE: &str = "yubikey-5.7";
const STATIONS: usize = 4;
const SLOTS: usize = 16;

fn main() {
    let Some(admin) = pg::test_server_url() else {
        println!("fleet benchmark: no PostgreSQL; run it as scripts/pg-throwaway.sh -- cargo bench --bench fleet");
        return;
    };
    let rounds: usize = std::env::var("PREREG_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2usize)
        .max(1);
    println!("prereg-station fleet benchmark");
    println!(
        "machine: {} CPU(s); {STATIONS} stations x {SLOTS} slots, {rounds} key(s) per slot",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // --- 1: keys per hour --------------------------------------------------------
    latency::set_model(Some(LatencyModel::yubikey()));
    let keys = STATIONS * SLOTS * rounds;
    let sqlite = fleet_run(None, keys).expect("SQLite run");
    let url = pg::fresh_test_database(&admin).expect("database");
    let postgres = fleet_run(Some(&url), keys).expect("PostgreSQL run");
    latency::set_model(None);
    println!();
    println!(
        "{:<34} {:>6} {:>8} {:>9}",
        "run", "keys", "wall s", "keys/h"
    );
    for (name, wall) in [
        ("4 stations x 16 slots, 4 x SQLite", sqlite),
        ("4 stations x 16 slots, 1 PostgreSQL", postgres),
    ] {
        println!(
            "{name:<34} {keys:>6} {:>8.1} {:>9.0}",
            wall.as_secs_f64(),
            keys as f64 * 3600.0 / wall.as_secs_f64()
        );
    }
    println!(
        "PostgreSQL fleet / SQLite stations: {:.1} %",
        100.0 * sqlite.as_secs_f64() / postgres.as_secs_f64()
    );

    // --- 2: store latency under fleet concurrency ----------------------------------
    println!();
    println!("store latency, {STATIONS} stores x {SLOTS} threads, 8 jobs per thread (ms)");
    println!(
        "{:<12} {:<22} {:>7} {:>7} {:>7} {:>7}",
        "backend", "operation", "p50", "p95", "p99", "max"
    );
    let sqlite_dir = TempDir::new();
    let stores: Vec<Store> = (0..STATIONS)
        .map(|i| Store::open(&sqlite_dir.0.join(format!("s{i}.db"))).unwrap())
        .collect();
    latency_run("sqlite", &stores);
    let url = pg::fresh_test_database(&admin).expect("database");
    let stores: Vec<Store> = (0..STATIONS)
        .map(|i| pg_store(&url, &format!("bench{i}")))
        .collect();
    latency_run("postgresql", &stores);

    // --- 3: lease cost by queue depth --------------------------------------------------
    println!();
    println!("lease + release per job, by jobs queued (µs, mean of 200)");
    for depth in [1_000usize, 100_000] {
        let dir = TempDir::new();
        let s = Store::open(&dir.0.join("depth.db")).unwrap();
        fill_sqlite(&s, depth);
        let sq = lease_cost(&s);
        let url = pg::fresh_test_database(&admin).expect("database");
        let p = pg_store(&url, "depth");
        fill_pg(&url, depth);
        let pc = lease_cost(&p);
        println!(
            "{depth:>7} queued: sqlite {:>7.0}  postgresql {:>7.0}",
            sq.as_secs_f64() * 1e6,
            pc.as_secs_f64() * 1e6
        );
    }
}

fn pg_store(url: &str, station: &str) -> Store {
    Store::open_postgres(
        PgSettings {
            url: url.to_owned(),
            password: None,
        },
        station,
    )
    .expect("fleet store")
}

/// Four stations of 16 simulated slots drain `keys` jobs: on one PostgreSQL
/// database (`url`), or each on its own SQLite database with a quarter of
/// the jobs. Returns the wall time from start to every key programmed.
fn fleet_run(url: Option<&str>, keys: usize) -> Result<Duration, String> {
    let dir = TempDir::new();
    let d = dir.0.as_path();
    let keys_dir = d.join("keys");
    let station_keys = StationKeys::generate(&keys_dir).map_err(|e| e.to_string())?;
    let ca = d.join("ca.pem");
    std::fs::write(
        &ca,
        prereg_station::sim::attestation::root_pem(SIM_CA_SEED).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let profile = prereg_station::profile::builtin_profile(PROFILE).map_err(|e| e.to_string())?;
    let product = profile.products.first().ok_or("no product")?.product_id;
    let idp = Idp::open(&d.join("idp")).map_err(|e| e.to_string())?;
    let shipments = idp
        .enroll(
            &station_keys.transport_jwks(),
            &EnrollOptions {
                users: keys,
                product_id: product,
                credentials_per_user: 1,
                ..EnrollOptions::default()
            },
        )
        .map_err(|e| e.to_string())?;
    let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let mut setups = Vec::new();
    for i in 0..STATIONS {
        let sd = d.join(format!("st{i}"));
        let mut text = format!(
            "[station]\nid = \"st{i}\"\nstate_dir = {}\nkeys_dir = {}\noutbox_dir = {}\n\
             attestation_roots = [{}]\nsim_seed = {}\n\n[[customization]]\nid = \"C19881\"\n\
             min_firmware = \"{}\"\nproducts = [{product}]\n",
            q(&sd.join("state")),
            q(&keys_dir),
            q(&sd.join("outbox")),
            q(&ca),
            i + 1,
            profile.min_firmware
        );
        if let Some(url) = url {
            text.push_str(&format!("\n[store]\nurl = {url:?}\n"));
        }
        for s in 0..SLOTS {
            text.push_str(&format!(
                "\n[[slot]]\nname = \"S{}\"\ndevice = \"sim:{PROFILE}\"\n",
                s + 1
            ));
        }
        let config = Config::parse(&text).map_err(|e| e.to_string())?;
        let store = open_store(&config).map_err(|e| e.to_string())?;
        // One queue for the fleet; a quarter of the jobs for each SQLite station.
        let mine: Vec<String> = shipments
            .iter()
            .enumerate()
            .filter(|(k, _)| url.is_some_and(|_| i == 0) || (url.is_none() && k % STATIONS == i))
            .filter_map(|(_, s)| serde_json::to_string(s).ok())
            .collect();
        if !mine.is_empty() {
            let jobs = sd.join("jobs.jsonl");
            std::fs::create_dir_all(&sd).map_err(|e| e.to_string())?;
            std::fs::write(&jobs, mine.join("\n") + "\n").map_err(|e| e.to_string())?;
            import_file(&store, &config, &jobs).map_err(|e| e.to_string())?;
        }
        setups.push(app::setup(config, store).map_err(|e| e.to_string())?);
    }
    let t0 = Instant::now();
    let stations: Vec<Station> = setups
        .into_iter()
        .map(|s| Station::start(s).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let deadline = t0 + Duration::from_secs(600);
    let programmed = || -> usize {
        stations
            .iter()
            .map(|s| s.shared().programmed.lock().map_or(0, |p| p.len()))
            .sum()
    };
    while programmed() < keys && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let wall = t0.elapsed();
    let done = programmed();
    for s in stations {
        s.shutdown();
    }
    if done != keys {
        return Err(format!("programmed {done} of {keys}"));
    }
    Ok(wall)
}

fn job(id: &str) -> Job {
    Job {
        shipment_id: ShipmentId::parse(id).unwrap(),
        product_id: 1,
        inventory_product_id: 106,
        customization_id: "C19881".into(),
        pin_request: format!("{id}{}", "e".repeat(592)),
        credential_requests: vec![format!("{id}{}", "c".repeat(1492))],
    }
}

/// 16 threads per store lease, begin and store 8 jobs each; percentiles of
/// the lease and of the fenced result write.
fn latency_run(backend: &str, stores: &[Store]) {
    let per_thread = 8;
    for (i, s) in stores.iter().enumerate() {
        for k in 0..SLOTS * per_thread {
            s.import(&job(&format!("lat-{i}-{k}"))).unwrap();
        }
    }
    // On PostgreSQL every store sees the whole queue: that is the fleet.
    let lease_ms = Arc::new(Mutex::new(Vec::new()));
    let store_ms = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for (i, s) in stores.iter().enumerate() {
            for slot in 0..SLOTS {
                let (lease_ms, store_ms) = (lease_ms.clone(), store_ms.clone());
                scope.spawn(move || {
                    let name = format!("S{slot}");
                    for n in 0..per_thread {
                        let t = Instant::now();
                        let Some(l) = s.lease(&name, &[1], Duration::from_secs(600)).unwrap()
                        else {
                            return;
                        };
                        lease_ms.lock().unwrap().push(t.elapsed());
                        let id = l.job.shipment_id.to_string();
                        let serial = format!("{i}-{slot}-{n}");
                        let t = Instant::now();
                        s.begin_programming(&name, &id, &serial).unwrap();
                        s.store_result(&name, &id, &serial, "5.7.1", "{}".into())
                            .unwrap();
                        store_ms.lock().unwrap().push(t.elapsed());
                    }
                });
            }
        }
    });
    for (op, v) in [("lease", lease_ms), ("begin + store_result", store_ms)] {
        let mut v = v.lock().unwrap().clone();
        v.sort();
        let p = |q: f64| {
            v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "{backend:<12} {op:<22} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
            p(0.50),
            p(0.95),
            p(0.99),
            p(1.0)
        );
    }
}

/// Mean of 200 lease + release cycles.
fn lease_cost(s: &Store) -> Duration {
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        let l = s
            .lease("S1", &[1], Duration::from_secs(600))
            .unwrap()
            .unwrap();
        s.release(l.job.shipment_id.as_str(), "bench", false, 3)
            .unwrap();
    }
    t.elapsed() / n
}

/// `depth` queued jobs of real request sizes, in one transaction (the rows
/// `import` writes; the audit trail is not what a lease reads).
fn fill_sqlite(s: &Store, depth: usize) {
    s.call(move |c| {
        let tx = c.transaction()?;
        tx.execute(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?1)
             INSERT INTO jobs (shipment_id, product_id, inventory_product_id, customization_id,
               pin_request, cred_requests, request_digests, state, imported_at, updated_at)
             SELECT printf('fill-%08d', n), 1, 106, 'C19881', printf('%08d', n) || hex(zeroblob(296)),
               '[\"' || printf('%08d', n) || hex(zeroblob(746)) || '\"]', '[]', 'queued', 0, 0 FROM g",
            [depth as i64],
        )?;
        tx.commit()?;
        Ok(())
    })
    .unwrap();
}

fn fill_pg(url: &str, depth: usize) {
    let mut c =
        postgres::Client::connect(&url.replace("?sslmode=disable", ""), postgres::NoTls).unwrap();
    c.execute(
        "INSERT INTO jobs (shipment_id, product_id, inventory_product_id, customization_id,
           pin_request, cred_requests, request_digests, state, imported_at, updated_at)
         SELECT 'fill-' || lpad(g::text, 8, '0'), 1, 106, 'C19881',
           lpad(g::text, 8, '0') || repeat('e', 592),
           '[\"' || lpad(g::text, 8, '0') || repeat('c', 1492) || '\"]', '[]', 'queued', 0, 0
         FROM generate_series(1, $1::bigint) g",
        &[&(depth as i64)],
    )
    .unwrap();
    c.batch_execute("ANALYZE jobs").unwrap();
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p =
            std::env::temp_dir().join(format!("prereg-fleet-bench-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
