//! Station benchmark (prints figures; never a timed test). See docs/benchmarks.md.
//!
//! 1. Keys per hour with 1, 8, 32 and 64 simulated slots under the assumed
//!    YubiKey latency model of `sim::latency`; per key, the device messages by
//!    command, the modelled device time, and both against the shortest command
//!    sequence of the job (issue #16, docs/benchmarks.md), with no saving, the
//!    cm|acfg token merge (the shipped default), and every saving on.
//! 2. The station's own CPU per key (process CPU minus the simulator's, which is
//!    metered inside the latency wrapper) as a share of the key's modelled time,
//!    and 32-slot scaling against 32 × the one-slot rate.
//! 3. Store import and lease+release cost per job with 1,000 vs 100,000 queued.
//! 4. Keys per hour at 32 slots with the station keys in a SoftHSM2 token
//!    (SPEC §14, issue #18) against key files, interleaved run by run, with
//!    the token's session pool at its default size and at one session; per
//!    token call (ECDH derive, ES384 sign) how long slots waited for a pooled
//!    session and how long they held it; then a saturation probe (threads
//!    calling only ECDH derive, one session against the pool) that shows
//!    whether the pool or the token serialises. Skipped, saying why, without
//!    SoftHSM2.
//!
//! `PREREG_BENCH_ROUNDS` (keys per slot, default 4; the one-slot run does twice as many) and `PREREG_BENCH_BIG=1`
//! (also 1,000,000 queued jobs) make it run longer. `PREREG_BENCH_ONLY` =
//! `throughput` | `store` | `hsm` runs one section (sections 1–2, 3, 4);
//! `PREREG_BENCH_HSM_REPEAT` (default 2) is how many times section 4 repeats
//! its interleaved files / token runs; `PREREG_BENCH_SOFTHSM2_MODULE` names
//! the SoftHSM2 module when it is not at Debian's path.

use prereg_station::cli::jobs::{import_file, open_store};
use prereg_station::config::Config;
use prereg_station::idp::{EnrollOptions, Idp};
use prereg_station::jose::keys::StationKeys;
use prereg_station::jose::pkcs11::{HsmConfig, LatencySnapshot, PoolSnapshot, DEFAULT_SESSIONS};
use prereg_station::profile::{FirmwareProfile, ProfileSet};
use prereg_station::shipment::Job;
use prereg_station::sim::latency::{self, CommandClass, LatencyModel};
use prereg_station::station::policy::ProfilePolicy;
use prereg_station::station::simslot::{SimSource, SIM_CA_SEED};
use prereg_station::station::source::KeySource;
use prereg_station::station::{app, Station};
use prereg_station::store::Store;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "common/softhsm.rs"]
mod softhsm;

const PROFILE: &str = "yubikey-5.7";

/// Which of issue #16's savings the station uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Savings {
    /// One token per permission, a getKeyAgreement per PIN operation (before #16).
    None,
    /// One cm|acfg token (the shipped default: every built-in profile).
    Merge,
    /// The merge and key-agreement reuse (a profile flag, off in every
    /// built-in profile until a real key confirms it).
    All,
}

impl Savings {
    fn name(self) -> &'static str {
        match self {
            Savings::None => "none",
            Savings::Merge => "merge",
            Savings::All => "all",
        }
    }

    /// The built-in profiles with this choice of savings.
    fn policy(self) -> ProfilePolicy {
        let profiles: Vec<FirmwareProfile> = prereg_station::profile::builtin()
            .iter()
            .cloned()
            .map(|mut p| {
                p.pin_session.combined_token_permissions = self != Savings::None;
                p.pin_session.keeps_key_agreement = self == Savings::All;
                p
            })
            .collect();
        ProfilePolicy::new(ProfileSet::from_profiles(profiles).expect("built-in names are unique"))
    }
}

/// The shortest command sequence for a one-credential job with forceChangePin
/// and minPINLength (SPEC §7; reasoning in docs/benchmarks.md), plus one touch.
const SHORTEST: &[(CommandClass, u32)] = &[
    (CommandClass::Init, 1),
    (CommandClass::ReadConfig, 1),
    (CommandClass::GetInfo, 2),
    (CommandClass::KeyAgreement, 1),
    (CommandClass::SetPin, 1),
    (CommandClass::PinToken, 2),
    (CommandClass::MakeCredential, 1),
    (CommandClass::CredMgmt, 2),
    (CommandClass::SetMinPinLength, 1),
];

fn shortest(model: &LatencyModel) -> (u32, Duration) {
    let n = SHORTEST.iter().map(|(_, n)| n).sum();
    let t = SHORTEST
        .iter()
        .map(|&(c, n)| model.delay(c) * n)
        .sum::<Duration>()
        + model.touch;
    (n, t)
}

fn main() {
    let rounds: usize = env_num("PREREG_BENCH_ROUNDS", 4).max(1);
    let big = std::env::var("PREREG_BENCH_BIG").is_ok_and(|v| v == "1");
    println!("prereg-station station benchmark");
    println!(
        "machine: {} CPU(s) ({}), profile {PROFILE}, {rounds} key(s) per slot per run",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    let t0 = Instant::now();
    let only = std::env::var("PREREG_BENCH_ONLY").ok();
    let section = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if let Some(o) = &only {
        if !["throughput", "store", "hsm"].contains(&o.as_str()) {
            println!("PREREG_BENCH_ONLY={o:?}: not a section (throughput, store, hsm)");
            return;
        }
        println!("only section {o:?} (PREREG_BENCH_ONLY)");
    }
    let shm = Path::new("/dev/shm");
    if section("throughput") {
        throughput_section(rounds, shm);
    }
    if section("store") {
        store_section(big, shm);
    }
    if section("hsm") {
        hsm_section(rounds);
    }
    println!();
    println!("total bench time {:.0} s", t0.elapsed().as_secs_f64());
}

/// Sections 1 and 2: keys/h, device messages and station CPU by slot count.
fn throughput_section(rounds: usize, shm: &Path) {
    // --- 1 + 2: throughput and CPU with the latency model -----------------------
    let model = LatencyModel::yubikey();
    latency::set_model(Some(model));
    latency::set_metering(true);
    let read_cost = schedstat_read_cost();
    let insert_cost = sim_key_insert_cost();
    println!(
        "calibration: one schedstat read {:.1} µs; inserting a blank simulated key {:.2} ms CPU",
        micros(read_cost),
        millis(insert_cost)
    );
    let (short_n, short_t) = shortest(&model);
    println!(
        "shortest sequence: {short_n} messages, {:.0} ms of modelled device time per key",
        millis(short_t)
    );
    println!();
    println!("keys/h: steady state (keys after the first round / their time, with the drain at");
    println!("the end); busy k/h: the same while every slot has a job (no drain); per key:");
    println!("model = modelled device time (jittered), xmin = model / shortest sequence, wall =");
    println!("slot time per key, sim/station/meter = CPU of simulator / station / CPU meter");
    println!(
        "{:>5} {:>5} {:>5} {:>5} {:>7} {:>8} {:>9} {:>9} {:>5} {:>6} {:>9} {:>7} {:>8} {:>6} {:>8}",
        "slots",
        "save",
        "state",
        "keys",
        "wall s",
        "keys/h",
        "busy k/h",
        "model ms",
        "xmin",
        "wall",
        "sim ms",
        "station",
        "meter ms",
        "%key",
        "cpu busy"
    );
    let mut rates = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut hook_missing = false;
    let mut runs = vec![
        (1usize, false, Savings::None),
        (1, false, Savings::Merge),
        (1, false, Savings::All),
        (8, false, Savings::Merge),
        (32, false, Savings::Merge),
        (64, false, Savings::Merge),
    ];
    if shm.is_dir() {
        // The same with the SQLite state on tmpfs: fsync costs nothing there,
        // which shows how much of the many-slot figures the store's fsyncs cost.
        runs.push((1, true, Savings::Merge));
        runs.push((32, true, Savings::Merge));
        runs.push((64, true, Savings::Merge));
    }
    for (slots, on_shm, savings) in runs {
        let keys = if slots == 1 {
            2 * rounds
        } else {
            slots * rounds
        };
        let state = if on_shm { "tmpfs" } else { "disk" };
        match run_station(slots, keys, on_shm.then_some(shm), savings, &Custody::Files) {
            Ok(r) => {
                hook_missing |= r.wrapped == 0;
                // Metering reads: ~1 read inside each bracket (charged to the
                // simulator), ~1 outside (charged to the process).
                let meter = read_cost * r.metered_calls as u32;
                let sim = r.sim_cpu.saturating_sub(meter) + insert_cost * keys as u32;
                let station = r.process_cpu.saturating_sub(sim + meter * 2);
                let per_key = |d: Duration| millis(d) / keys as f64;
                let model_per_key = per_key(r.modelled);
                let rate = r
                    .steady
                    .unwrap_or(keys as f64 * 3600.0 / r.wall.as_secs_f64());
                let busy = r.busy.unwrap_or(rate);
                if savings == Savings::Merge {
                    rates.push((slots, state, rate, busy));
                }
                println!(
                    "{:>5} {:>5} {:>5} {:>5} {:>7.1} {:>8.0} {:>9.0} {:>9.0} {:>5.2} {:>6.0} {:>9.1} {:>7.1} {:>8.1} {:>5.2}% {:>7.0}%",
                    slots,
                    savings.name(),
                    state,
                    keys,
                    r.wall.as_secs_f64(),
                    rate,
                    busy,
                    model_per_key,
                    model_per_key / millis(short_t),
                    millis(r.wall) * slots as f64 / keys as f64,
                    per_key(sim),
                    per_key(station),
                    per_key(meter * 2),
                    100.0 * per_key(station) / model_per_key.max(f64::MIN_POSITIVE),
                    100.0 * r.process_cpu.as_secs_f64() / (r.cpu_wall.as_secs_f64() * cores)
                );
                let total: u64 = r.messages.iter().map(|(_, n)| n).sum();
                let mix: Vec<String> = r
                    .messages
                    .iter()
                    .map(|(c, n)| format!("{} {:.1}", c.name(), *n as f64 / keys as f64))
                    .collect();
                let commits = r.commits.map_or(String::new(), |c| {
                    format!("; store commits per key {:.2}", c as f64 / keys as f64)
                });
                println!(
                    "      round trips per key: {:.1} ({:.2} × the shortest {short_n}): {}{commits}",
                    total as f64 / keys as f64,
                    total as f64 / keys as f64 / f64::from(short_n),
                    mix.join(", ")
                );
            }
            Err(e) => println!(
                "{slots:>5} {:>5} {state:>5} {keys:>5}  FAILED: {e}",
                savings.name()
            ),
        }
    }
    if hook_missing {
        println!(
            "WARNING: no transport was wrapped: the latency hook is not in simslot.rs \
             connect(); figures above are WITHOUT the latency model"
        );
    }
    for state in ["disk", "tmpfs"] {
        let Some((_, _, one, one_busy)) = rates.iter().find(|(s, st, ..)| *s == 1 && *st == state)
        else {
            continue;
        };
        for many in [8usize, 32, 64] {
            if let Some((_, _, rate, busy)) =
                rates.iter().find(|(s, st, ..)| *s == many && *st == state)
            {
                let m = many as f64;
                println!(
                    "scaling ({state}): {many} slots = {rate:.0} keys/h vs {many} × 1 slot = {:.0}: {:.1}% of linear; \
                     every slot busy: {busy:.0} vs {:.0}: {:.1}%",
                    m * one,
                    100.0 * rate / (m * one),
                    m * one_busy,
                    100.0 * busy / (m * one_busy)
                );
            }
        }
    }
    latency::set_metering(false);
    latency::set_model(None);
}

/// Section 3: store import and lease cost vs queue depth.
fn store_section(big: bool, shm: &Path) {
    println!();
    println!(
        "{:>6} {:>9} {:>6} {:>12} {:>12} {:>12}",
        "state", "queued", "ops", "import µs", "lease µs", "release µs"
    );
    let mut depths = vec![1_000usize, 100_000];
    if big {
        depths.push(1_000_000);
    }
    let mut places = vec![None];
    if shm.is_dir() {
        places.push(Some(shm));
    }
    for place in places {
        for &depth in &depths {
            let name = if place.is_some() { "tmpfs" } else { "disk" };
            match store_costs(depth, 500, place) {
                Ok((k, import, lease, release)) => println!(
                    "{:>6} {:>9} {:>6} {:>12.1} {:>12.1} {:>12.1}",
                    name,
                    depth,
                    k,
                    micros(import),
                    micros(lease),
                    micros(release)
                ),
                Err(e) => println!("{name:>6} {depth:>9}  FAILED: {e}"),
            }
        }
    }
}

struct RunResult {
    /// Start to the last key programmed.
    wall: Duration,
    /// Keys per hour after the first round.
    steady: Option<f64>,
    /// Keys per hour while every slot had a job (no drain at the end).
    busy: Option<f64>,
    /// SQLite commits (WAL fsyncs) of the whole run; `None` on PostgreSQL.
    commits: Option<u64>,
    /// Start to everything delivered (the span `process_cpu` covers).
    cpu_wall: Duration,
    process_cpu: Duration,
    sim_cpu: Duration,
    metered_calls: u64,
    modelled: Duration,
    wrapped: u64,
    messages: Vec<(latency::CommandClass, u64)>,
    /// The token's session pool over the run (HSM custody only).
    token: Option<PoolSnapshot>,
}

/// Where the station keeps its keys for a run.
enum Custody {
    /// Fresh JWK files in the run's directory (the default custody).
    Files,
    /// The keys already generated in a token (SPEC §14); `keys_dir` holds
    /// its PIN file and manifest.
    Token { keys_dir: PathBuf, hsm: HsmConfig },
}

/// One station with `slots` simulated slots programming `keys` jobs.
fn run_station(
    slots: usize,
    keys: usize,
    base: Option<&Path>,
    savings: Savings,
    custody: &Custody,
) -> Result<RunResult, String> {
    let dir = TempDir::new(base)?;
    let d = dir.0.as_path();
    let (keys_dir, station_keys) = match custody {
        Custody::Files => {
            let keys_dir = d.join("keys");
            let keys = StationKeys::generate(&keys_dir).map_err(|e| e.to_string())?;
            (keys_dir, keys)
        }
        Custody::Token { keys_dir, hsm } => (
            keys_dir.clone(),
            StationKeys::open(Some(keys_dir), Some(hsm)).map_err(|e| e.to_string())?,
        ),
    };
    let ca = d.join("ca.pem");
    let pem = prereg_station::sim::attestation::root_pem(SIM_CA_SEED).map_err(|e| e.to_string())?;
    std::fs::write(&ca, pem).map_err(|e| e.to_string())?;
    let profile = prereg_station::profile::builtin_profile(PROFILE).map_err(|e| e.to_string())?;
    let product = profile.products.first().ok_or("no product")?.product_id;
    let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let mut text = format!(
        "[station]\nid = \"bench\"\nstate_dir = {}\nkeys_dir = {}\noutbox_dir = {}\n\
         attestation_roots = [{}]\nsim_seed = 7\n\n[[customization]]\nid = \"C19881\"\n\
         min_firmware = \"{}\"\nproducts = [{product}]\n",
        q(&d.join("state")),
        q(&keys_dir),
        q(&d.join("outbox")),
        q(&ca),
        profile.min_firmware
    );
    if let Custody::Token { hsm, .. } = custody {
        text.push_str(&format!(
            "\n[keys]\npkcs11_module = {}\ntoken_label = {}\npin_file = {}\nsessions = {}\n",
            q(&hsm.module),
            toml::Value::String(hsm.token_label.clone()),
            q(&hsm.pin_file),
            hsm.sessions
        ));
    }
    for i in 0..slots {
        text.push_str(&format!(
            "\n[[slot]]\nname = \"S{}\"\ndevice = \"sim:{PROFILE}\"\n",
            i + 1
        ));
    }
    let config = Config::parse(&text).map_err(|e| e.to_string())?;
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
    let lines: Vec<String> = shipments
        .iter()
        .filter_map(|s| serde_json::to_string(s).ok())
        .collect();
    let jobs = d.join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n") + "\n").map_err(|e| e.to_string())?;
    let store = open_store(&config).map_err(|e| e.to_string())?;
    let imported = import_file(&store, &config, &jobs).map_err(|e| e.to_string())?;
    if imported.imported != keys {
        return Err(format!("imported {} of {keys} jobs", imported.imported));
    }
    drop(station_keys);
    let mut setup = app::setup(config, store).map_err(|e| e.to_string())?;
    setup.policy = Box::new(savings.policy());

    latency::reset_stats();
    let cpu0 = process_cpu()?;
    let t0 = Instant::now();
    let station = Station::start(setup).map_err(|e| e.to_string())?;
    let deadline = t0 + Duration::from_secs(180 + keys as u64 * 10);
    // The programmed list is a cheap mutex; drained() is three store queries,
    // so it is polled only once every key is programmed.
    let programmed_now = || station.shared().programmed.lock().map_or(0, |p| p.len());
    let mut first_round = None;
    // The last moment every slot is still sure to be busy: when no more than
    // `slots` jobs are left, slots that finish start to find the queue empty.
    let mut last_full = None;
    loop {
        let n = programmed_now();
        if n >= slots && first_round.is_none() {
            first_round = Some((n, t0.elapsed()));
        }
        if n + slots >= keys && last_full.is_none() {
            last_full = Some((n, t0.elapsed()));
        }
        if n >= keys || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = t0.elapsed();
    // Steady state: keys finished after the first round over the time they took
    // (start-up and the first identify are not in it).
    let steady = first_round
        .filter(|(n, _)| *n < keys)
        .map(|(n, t)| (keys - n) as f64 * 3600.0 / (wall - t).as_secs_f64());
    // Busy: the same, but only while every slot has a job (from the end of
    // the first round until `slots` jobs are left), so the drain at the end —
    // slots idle while the last keys finish, which a line fed continuously
    // never sees — is not in it. Needs at least three rounds.
    let busy = match (first_round, last_full) {
        (Some((a, ta)), Some((b, tb))) if b > a && tb > ta => {
            Some((b - a) as f64 * 3600.0 / (tb - ta).as_secs_f64())
        }
        _ => None,
    };
    while !station.drained() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu_wall = t0.elapsed();
    let cpu = process_cpu()?.saturating_sub(cpu0);
    let stats = latency::stats();
    let token = station.shared().keys.token_stats();
    let commits = station
        .shared()
        .store
        .writer_stats()
        .map(|w| w.commits.load(std::sync::atomic::Ordering::Relaxed));
    let drained = station.drained();
    let programmed = station.shared().programmed.lock().map_or(0, |p| p.len());
    station.shutdown();
    if !drained || programmed != keys {
        return Err(format!(
            "programmed {programmed} of {keys} keys (drained: {drained})"
        ));
    }
    Ok(RunResult {
        wall,
        steady,
        busy,
        commits,
        cpu_wall,
        process_cpu: cpu,
        sim_cpu: stats.sim_cpu,
        metered_calls: stats.metered_calls,
        modelled: stats.modelled,
        wrapped: stats.wrapped,
        messages: stats.messages,
        token,
    })
}

/// Section 4 (SPEC §14, issue #18): keys/h at 32 slots with the station keys
/// in a throw-away SoftHSM2 token (its own `SOFTHSM2_CONF` in a temp dir, as
/// `benches/crypto.rs` makes one) against key files; files, token with the
/// default pool and token with one session take turns, so each ratio compares
/// runs made under the same load. Same latency model, recipe (`merge`) and
/// state on disk as the 32-slot run of section 1.
fn hsm_section(rounds: usize) {
    println!();
    println!("-- keys/h at 32 slots: station keys in SoftHSM2 against key files (SPEC §14)");
    let module = std::env::var("PREREG_BENCH_SOFTHSM2_MODULE")
        .unwrap_or_else(|_| softhsm::MODULE.to_string());
    let Ok(dir) = TempDir::new(None) else {
        println!("skipped: cannot make a temporary directory");
        return;
    };
    let keys_dir = match softhsm::throwaway_token(&dir.0, &module) {
        Ok(keys_dir) => keys_dir,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let hsm = |sessions: usize| HsmConfig {
        module: module.clone().into(),
        token_label: softhsm::LABEL.into(),
        pin_file: "hsm-pin".into(),
        sessions,
    };
    if let Err(e) = StationKeys::generate_in_token(Some(&keys_dir), &hsm(DEFAULT_SESSIONS)) {
        println!("skipped: cannot generate the station keys in the token: {e}");
        return;
    }
    println!(
        "module {module} ({}), one token, keys generated in it once; {} key(s) per slot per run",
        softhsm_version(),
        rounds
    );

    let model = LatencyModel::yubikey();
    latency::set_model(Some(model));
    latency::set_metering(true);
    let read_cost = schedstat_read_cost();
    let insert_cost = sim_key_insert_cost();
    let repeat = env_num("PREREG_BENCH_HSM_REPEAT", 2).max(1);
    let slots = 32;
    let keys = slots * rounds;
    let custodies = [
        ("files".to_string(), Custody::Files),
        (
            format!("softhsm2, {DEFAULT_SESSIONS} sessions"),
            Custody::Token {
                keys_dir: keys_dir.clone(),
                hsm: hsm(DEFAULT_SESSIONS),
            },
        ),
        (
            "softhsm2, 1 session".to_string(),
            Custody::Token {
                keys_dir: keys_dir.clone(),
                hsm: hsm(1),
            },
        ),
    ];
    println!("keys/h: steady state as in section 1; ratio = keys/h / the files run of the same");
    println!("round; station ms = process CPU per key minus the simulator's (SoftHSM2 runs in");
    println!("the process, so its CPU is in it); load = 1-min load average before → after;");
    println!("run = its place in the round (each round starts with the next custody).");
    println!("Per token call: wait = asking the pool for a session until holding one (opening");
    println!("a new one included), hold = the token call on it; ms, p50/p99 read from the");
    println!("pool's histograms (at most 1/8 above the true value), max exact; blocked = calls");
    println!("that found every session busy; Σwait/key = all waits / keys; busy = sum of holds");
    println!("/ (wall × sessions).");
    println!(
        "{:>5} {:<22} {:>5} {:>7} {:>8} {:>6} {:>8} {:>11} {:>3}",
        "slots", "custody", "keys", "wall s", "keys/h", "ratio", "station", "load", "run"
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); custodies.len()];
    for round in 0..repeat {
        // Each round starts with a different custody, so a load that drifts
        // during a round does not always favour the same one.
        let n = custodies.len();
        let mut done: Vec<Option<Turn>> = (0..n).map(|_| None).collect();
        for k in 0..n {
            let i = (round + k) % n;
            let load0 = loadavg();
            let run = run_station(slots, keys, None, Savings::Merge, &custodies[i].1);
            done[i] = Some((k + 1, run, load0, loadavg()));
        }
        let rate_of = |r: &RunResult| {
            r.steady
                .unwrap_or(keys as f64 * 3600.0 / r.wall.as_secs_f64())
        };
        let files_rate = match &done[0] {
            Some((_, Ok(r), _, _)) => Some(rate_of(r)),
            _ => None,
        };
        println!("round {}:", round + 1);
        for (i, entry) in done.iter().enumerate() {
            let name = &custodies[i].0;
            let Some((order, run, load0, load1)) = entry else {
                continue;
            };
            let r = match run {
                Ok(r) => r,
                Err(e) => {
                    println!("{slots:>5} {name:<22} {keys:>5}  FAILED: {e}");
                    continue;
                }
            };
            let rate = rate_of(r);
            rates[i].push(rate);
            let meter = read_cost * r.metered_calls as u32;
            let sim = r.sim_cpu.saturating_sub(meter) + insert_cost * keys as u32;
            let station = r.process_cpu.saturating_sub(sim + meter * 2);
            println!(
                "{:>5} {:<22} {:>5} {:>7.1} {:>8.0} {:>6} {:>6.1}ms {:>5.2}→{:<5.2} {:>3}",
                slots,
                name,
                keys,
                r.wall.as_secs_f64(),
                rate,
                files_rate.map_or("-".into(), |f| format!("{:.3}", rate / f)),
                millis(station) / keys as f64,
                load0,
                load1,
                order
            );
            if let Some(t) = &r.token {
                for (call, op) in [("ECDH derive", &t.derive), ("ES384 sign", &t.sign)] {
                    println!(
                        "      {call:<11} {:>4} calls  wait {}  Σwait/key {:>5.2}  hold {}  blocked {:>3}  busy {:>4.1}%{}",
                        op.hold.count,
                        pmm(&op.wait),
                        millis(op.wait.sum) / keys as f64,
                        pmm(&op.hold),
                        op.blocked,
                        100.0 * op.hold.sum.as_secs_f64()
                            / (r.cpu_wall.as_secs_f64() * t.max_sessions as f64),
                        if op.no_session > 0 {
                            format!("  NO SESSION {}", op.no_session)
                        } else {
                            String::new()
                        }
                    );
                }
                println!(
                    "      sessions: at most {}, opened {}",
                    t.max_sessions, t.opened
                );
            }
        }
    }
    latency::set_metering(false);
    latency::set_model(None);
    token_saturation(&keys_dir, &hsm);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let files = mean(&rates[0]);
    for (i, (name, _)) in custodies.iter().enumerate().skip(1) {
        if rates[i].is_empty() || rates[0].is_empty() {
            continue;
        }
        println!(
            "mean of {} run(s): {name} {:.0} keys/h vs files {:.0} keys/h: {:.1}%",
            rates[i].len(),
            mean(&rates[i]),
            files,
            100.0 * mean(&rates[i]) / files
        );
    }
}

/// Does the pool or the token serialise? T threads call nothing but ECDH
/// derive on the token back to back (no keys, no latency model), with one
/// session and with the default pool: if the token ran one call at a time,
/// more sessions would not raise the rate; if only the pool did, one session
/// would stay flat while the pool scales up to the cores.
fn token_saturation(keys_dir: &Path, hsm: &dyn Fn(usize) -> HsmConfig) {
    use prereg_station::jose::jwe::KeyResolver;
    const SPAN: Duration = Duration::from_millis(1500);
    println!();
    println!(
        "token saturation: T threads doing only ECDH derive back to back for {:.1} s;",
        SPAN.as_secs_f64()
    );
    println!("calls/s, and per call wait / hold p50/p99 in ms, blocked = share of calls that");
    println!("found every session busy; load = 1-min load average before the row");
    println!(
        "{:>8} {:>7} {:>8} {:>11} {:>11} {:>8} {:>5}",
        "sessions", "threads", "calls/s", "wait", "hold", "blocked", "load"
    );
    for sessions in [1usize, DEFAULT_SESSIONS] {
        for threads in [1usize, 2, 4, 8] {
            let load = loadavg();
            let keys = match StationKeys::open(Some(keys_dir), Some(&hsm(sessions))) {
                Ok(k) => k,
                Err(e) => {
                    println!("{sessions:>8} {threads:>7}  FAILED: {e}");
                    continue;
                }
            };
            let kid = keys.transport_kids()[0].to_string();
            let epk = p384::SecretKey::random(&mut rand::rngs::OsRng).public_key();
            let t = Instant::now();
            let failed = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|sc| {
                for _ in 0..threads {
                    sc.spawn(|| {
                        while t.elapsed() < SPAN {
                            if keys.ecdh_z(&kid, &epk).is_err() {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                                return;
                            }
                        }
                    });
                }
            });
            let wall = t.elapsed();
            let Some(st) = keys.token_stats() else {
                continue;
            };
            let d = &st.derive;
            println!(
                "{:>8} {:>7} {:>8.0} {:>5.2}/{:<5.2} {:>5.2}/{:<5.2} {:>7.1}% {:>5.2}{}",
                sessions,
                threads,
                d.hold.count as f64 / wall.as_secs_f64(),
                millis(d.wait.quantile(0.5)),
                millis(d.wait.quantile(0.99)),
                millis(d.hold.quantile(0.5)),
                millis(d.hold.quantile(0.99)),
                100.0 * d.blocked as f64 / d.wait.count.max(1) as f64,
                load,
                if failed.into_inner() {
                    "  (a call FAILED)"
                } else {
                    ""
                }
            );
        }
    }
}

/// One run of a round: its place in the round, its result, and the load
/// average before and after it.
type Turn = (usize, Result<RunResult, String>, f64, f64);

/// `p50/p99/max` in milliseconds.
fn pmm(h: &LatencySnapshot) -> String {
    format!(
        "{:.2}/{:.2}/{:.2}",
        millis(h.quantile(0.5)),
        millis(h.quantile(0.99)),
        millis(h.max)
    )
}

/// The 1-minute load average (`/proc/loadavg`, what `uptime` prints first).
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn softhsm_version() -> String {
    std::process::Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .ok()
        .map(|o| format!("SoftHSM2 {}", String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| "SoftHSM2, version unknown".into())
}

/// Import `depth` jobs, then time `k` more imports, `k` leases and `k` releases.
fn store_costs(
    depth: usize,
    k: usize,
    base: Option<&Path>,
) -> Result<(usize, Duration, Duration, Duration), String> {
    let dir = TempDir::new(base)?;
    let store = Store::open(&dir.0.join("bench.db")).map_err(|e| e.to_string())?;
    let job = |i: usize| Job {
        shipment_id: prereg_station::shipment::ShipmentId::parse(&format!("ship-{i:08}"))
            .expect("bench ids follow the grammar"),
        product_id: 0x0402,
        inventory_product_id: 1,
        customization_id: "C19881".into(),
        // The size of a real P-384 ECDH-ES JWE of a PIN request; unique per
        // job, as real requests are (the same request twice is a replay).
        pin_request: format!("{i:08}{}", "e".repeat(592)),
        credential_requests: vec![format!("{i:08}{}", "c".repeat(1492))],
    };
    // Bulk fill in one transaction (the same rows `import` writes, audit included).
    let filler: Vec<Job> = (0..depth - k.min(depth)).map(job).collect();
    store
        .call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut ins = tx.prepare(
                    "INSERT INTO jobs (shipment_id, product_id, inventory_product_id,
                       customization_id, pin_request, cred_requests, request_digests, state,
                       imported_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, '[]', 'queued', ?7, ?7)",
                )?;
                let mut aud = tx.prepare(
                    "INSERT INTO audit (at, shipment_id, event) VALUES (?1, ?2, 'imported')",
                )?;
                let now = prereg_station::store::now_secs();
                for j in &filler {
                    ins.execute(rusqlite::params![
                        j.shipment_id.as_str(),
                        j.product_id,
                        j.inventory_product_id,
                        j.customization_id,
                        j.pin_request,
                        serde_json::to_string(&j.credential_requests).unwrap_or_default(),
                        now
                    ])?;
                    aud.execute(rusqlite::params![now, j.shipment_id.as_str()])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let base = depth - k.min(depth);
    let t = Instant::now();
    for i in base..depth {
        store.import(&job(i)).map_err(|e| e.to_string())?;
    }
    let import = t.elapsed() / k as u32;
    let mut leased = Vec::with_capacity(k);
    let t = Instant::now();
    for i in 0..k {
        let l = store
            .lease(&format!("S{}", i % 32), &[0x0402], Duration::from_secs(600))
            .map_err(|e| e.to_string())?
            .ok_or("queue empty")?;
        leased.push(l.job.shipment_id);
    }
    let lease = t.elapsed() / k as u32;
    let t = Instant::now();
    for id in &leased {
        store
            .release(id, "bench: key removed", false, 3)
            .map_err(|e| e.to_string())?;
    }
    let release = t.elapsed() / k as u32;
    Ok((k, import, lease, release))
}

/// Process CPU (user + system, all threads, exited ones included) from /proc/self/stat.
fn process_cpu() -> Result<Duration, String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').ok_or("bad /proc/self/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14 overall = index 11 after ")" (state is field 3).
    let total = ticks(11) + ticks(12);
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)) on every architecture we run on.
    Ok(Duration::from_millis(total * 10))
}

/// Cost of one `/proc/thread-self/schedstat` read (the meter's unit).
fn schedstat_read_cost() -> Duration {
    let n = 2_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(latency::thread_cpu_time());
    }
    t.elapsed() / n
}

/// Thread CPU to put a new blank simulated key in a slot (outside the wrapper,
/// so charged to the process, but the simulator's work).
fn sim_key_insert_cost() -> Duration {
    let Ok(mut source) = SimSource::new(PROFILE, 40, 99) else {
        return Duration::ZERO;
    };
    let n = 20u32;
    let before = latency::thread_cpu_time().unwrap_or_default();
    for _ in 0..n {
        std::hint::black_box(source.connect());
        source.key_done();
    }
    latency::thread_cpu_time()
        .unwrap_or_default()
        .saturating_sub(before)
        / n
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A fresh directory under `base` (default: the system temporary directory).
    fn new(base: Option<&Path>) -> Result<Self, String> {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let p = base.join(format!("prereg-bench-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
