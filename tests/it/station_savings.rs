//! Issue #16: fewer round trips per key. The recipe driven directly over one
//! simulated key (so the messages it sends can be counted), and a whole
//! station with every saving on over keys that do not keep their
//! key-agreement key.

use super::*;
use prereg_station::job::recipe::{self, Disposition, KeyPolicy, SlotEvents, Step};
use prereg_station::profile::{FirmwareProfile, ProfileSet};
use prereg_station::sim::{SimConfig, SimKey, TouchMode};
use prereg_station::station::policy::ProfilePolicy;
use prereg_station::transport::{Report, Transport, TransportError};

const PROFILE: &str = "yubikey-5.7";

/// (CTAP command, clientPIN subcommand or 0) of every CBOR request sent.
type Log = Arc<Mutex<Vec<(u8, u8)>>>;

/// A simulated key's transport that logs the CBOR requests going out.
struct Counting {
    inner: SimKey,
    log: Log,
}

impl Transport for Counting {
    fn send(&mut self, report: &Report) -> Result<(), TransportError> {
        // Initialization packet of CTAPHID_CBOR (0x90): CID(4) CMD(1) BCNT(2)
        // DATA; DATA = CTAP command ‖ CBOR map. clientPIN (0x06) maps begin
        // {1: protocol, 2: subCommand} with one-byte values (CTAP 2.1 §6.5.5).
        if report[4] == 0x90 {
            let data = &report[7..];
            let sub = if data[0] == 0x06 && data[2] == 0x01 && data[4] == 0x02 {
                data[5]
            } else {
                0
            };
            self.log.lock().unwrap().push((data[0], sub));
        }
        self.inner.send(report)
    }
    fn recv(&mut self, timeout: Duration) -> Result<Option<Report>, TransportError> {
        self.inner.recv(timeout)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

struct NoEvents;
impl SlotEvents for NoEvents {
    fn step(&self, _: Step) {}
    fn touch_needed(&self) {}
}

/// Station keys, roots, a store with `jobs` queued jobs, and the configuration.
struct Bench {
    _dir: tempfile::TempDir,
    keys: StationKeys,
    roots: TrustRoots,
    store: Store,
    config: Config,
    product: u32,
}

impl Bench {
    fn new(jobs: usize) -> Bench {
        let spec = LineSpec {
            jobs,
            ..LineSpec::default()
        };
        let line = Line::prepare(&spec, "");
        let keys = StationKeys::load(line.config.keys_dir.as_deref()).unwrap();
        Bench {
            keys,
            roots: line.roots,
            store: line.store,
            config: line.config,
            product: product_of(PROFILE),
            _dir: line.dir,
        }
    }

    /// Identifies and programs one fresh simulated key of `key_profile` with
    /// the next job; returns the outcome, the key and the CBOR requests sent.
    fn program(
        &self,
        key_profile: FirmwareProfile,
        faults: FaultPlan,
        policy: &dyn KeyPolicy,
    ) -> (
        Result<recipe::Programmed, Disposition>,
        SimControl,
        Vec<(u8, u8)>,
    ) {
        let sim = SimKey::new(
            SimConfig::new(key_profile, self.product)
                .unwrap()
                .seed(rand::random())
                .serial(rand::random::<u32>() % 90_000_000 + 10_000_000)
                .touch(TouchMode::Auto),
        )
        .unwrap();
        let control = sim.control();
        control.set_faults(faults);
        let log = Log::default();
        let transport = Counting {
            inner: sim,
            log: log.clone(),
        };
        let mut client = Client::new(HidChannel::open(transport, Timeouts::short()).unwrap());
        let key = recipe::identify(&mut client, Some(control.device_info())).unwrap();
        let leased = self
            .store
            .lease("S1", &[self.product], Duration::from_secs(60))
            .unwrap()
            .expect("a queued job");
        let st = recipe::Station {
            slot: "S1",
            keys: &self.keys,
            roots: &self.roots,
            store: &self.store,
            policy,
            customization: self.config.customization(&leased.job.customization_id),
            now: prereg_station::store::now_secs(),
        };
        let outcome = recipe::program(&st, &mut client, &key, &leased.job, &NoEvents);
        assert!(
            !client.keeps_shared_secret(),
            "the recipe leaves no shared secret behind"
        );
        let sent = log.lock().unwrap().clone();
        (outcome, control, sent)
    }
}

fn profile_with(combined: bool, keeps_key_agreement: bool) -> FirmwareProfile {
    let mut p = prereg_station::profile::builtin_profile(PROFILE).unwrap();
    p.pin_session.combined_token_permissions = combined;
    p.pin_session.keeps_key_agreement = keeps_key_agreement;
    p
}

fn policy_of(profile: FirmwareProfile) -> ProfilePolicy {
    ProfilePolicy::new(ProfileSet::from_profiles(vec![profile]).unwrap())
}

fn count(sent: &[(u8, u8)], cmd: u8, sub: u8) -> usize {
    sent.iter().filter(|&&m| m == (cmd, sub)).count()
}
const TOKEN: (u8, u8) = (0x06, 0x09);
const KEY_AGREEMENT: (u8, u8) = (0x06, 0x02);

/// The state a programmed key must end in, whatever route the recipe took.
fn assert_programmed(outcome: &Result<recipe::Programmed, Disposition>, key: &SimControl) {
    let programmed = outcome.as_ref().expect("programmed");
    assert_eq!(programmed.credentials, 1);
    let status = key.pin_status();
    assert!(status.pin_set);
    assert!(status.force_pin_change, "forcePINChange set last");
    assert_eq!(status.min_pin_length, 6);
    assert_eq!(
        status.retries,
        prereg_station::sim::authenticator::PIN_RETRIES,
        "full PIN retries"
    );
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(key.credentials().len(), 1);
}

#[test]
fn one_cm_acfg_token_serves_verification_and_config() {
    let bench = Bench::new(1);
    let policy = policy_of(profile_with(true, false));
    let (outcome, key, sent) =
        bench.program(profile_with(true, false), FaultPlan::default(), &policy);
    assert_programmed(&outcome, &key);
    // mc, then one cm|acfg: two tokens, each after its own getKeyAgreement.
    assert_eq!(count(&sent, TOKEN.0, TOKEN.1), 2, "{sent:?}");
    assert_eq!(count(&sent, KEY_AGREEMENT.0, KEY_AGREEMENT.1), 3);
}

#[test]
fn a_key_refusing_combined_permissions_gets_separate_tokens_and_its_line_is_remembered() {
    let bench = Bench::new(3);
    // The station believes the line takes cm|acfg; the keys refuse it.
    let policy = policy_of(profile_with(true, false));
    let refusing = profile_with(false, false);
    let (outcome, key, sent) = bench.program(refusing.clone(), FaultPlan::default(), &policy);
    assert_programmed(&outcome, &key);
    // mc, the refused cm|acfg (no PIN check spent: retries stay full), cm, acfg.
    assert_eq!(count(&sent, TOKEN.0, TOKEN.1), 4, "{sent:?}");
    // The next key of the same AAGUID and firmware goes straight to separate tokens.
    let (outcome, key, sent) = bench.program(refusing, FaultPlan::default(), &policy);
    assert_programmed(&outcome, &key);
    assert_eq!(count(&sent, TOKEN.0, TOKEN.1), 3, "{sent:?}");
    // A profile that says so skips the combined request from the first key on.
    let told = policy_of(profile_with(false, false));
    let (outcome, key, sent) =
        bench.program(profile_with(false, false), FaultPlan::default(), &told);
    assert_programmed(&outcome, &key);
    assert_eq!(count(&sent, TOKEN.0, TOKEN.1), 3, "{sent:?}");
}

#[test]
fn key_agreement_reuse_needs_one_get_key_agreement_per_key() {
    let bench = Bench::new(2);
    let reuse = policy_of(profile_with(true, true));
    let (outcome, key, sent) =
        bench.program(profile_with(true, true), FaultPlan::default(), &reuse);
    assert_programmed(&outcome, &key);
    assert_eq!(
        count(&sent, KEY_AGREEMENT.0, KEY_AGREEMENT.1),
        1,
        "{sent:?}"
    );
    assert_eq!(count(&sent, TOKEN.0, TOKEN.1), 2);
    // Off by default: every built-in profile asks per PIN operation.
    let builtin = ProfilePolicy::new(prereg_station::profile::builtin());
    let (outcome, key, sent) =
        bench.program(profile_with(true, false), FaultPlan::default(), &builtin);
    assert_programmed(&outcome, &key);
    assert_eq!(
        count(&sent, KEY_AGREEMENT.0, KEY_AGREEMENT.1),
        3,
        "{sent:?}"
    );
}

#[test]
fn a_key_that_regenerates_its_key_agreement_key_ends_as_without_reuse() {
    let bench = Bench::new(2);
    let forgets = FaultPlan {
        forget_key_agreement: true,
        ..FaultPlan::default()
    };
    // Reference: no reuse, same forgetful key.
    let plain = policy_of(profile_with(true, false));
    let (outcome, reference, _) = bench.program(profile_with(true, false), forgets.clone(), &plain);
    assert_programmed(&outcome, &reference);
    // The profile wrongly claims the key keeps its key: each reused token
    // request fails (PIN_INVALID, one retry spent), is repeated once after a
    // fresh getKeyAgreement, and succeeds, which restores the retries.
    let reuse = policy_of(profile_with(true, true));
    let (outcome, key, sent) = bench.program(profile_with(true, true), forgets, &reuse);
    assert_programmed(&outcome, &key);
    assert_eq!(count(&sent, TOKEN.0, TOKEN.1), 4, "{sent:?}");
    assert_eq!(
        count(&sent, KEY_AGREEMENT.0, KEY_AGREEMENT.1),
        3,
        "{sent:?}"
    );
    assert_eq!(key.pin_status().retries, reference.pin_status().retries);
    assert_eq!(
        key.pin_status().force_pin_change,
        reference.pin_status().force_pin_change
    );
    assert_eq!(key.credentials().len(), reference.credentials().len());
}

#[test]
fn a_whole_line_with_every_saving_on_verifies_at_the_idp() {
    // Every built-in profile with key-agreement reuse switched on, over keys
    // that forget their key after every PIN check: the worst case for reuse.
    let line = Line::prepare(
        &LineSpec {
            slots: 2,
            jobs: 4,
            ..LineSpec::default()
        },
        "",
    );
    let profiles: Vec<FirmwareProfile> = prereg_station::profile::builtin()
        .iter()
        .cloned()
        .map(|mut p| {
            p.pin_session.keeps_key_agreement = true;
            p
        })
        .collect();
    let mut setup = app::setup(line.config.clone(), line.store.clone()).unwrap();
    setup.policy = Box::new(ProfilePolicy::new(
        ProfileSet::from_profiles(profiles).unwrap(),
    ));
    let keys = line.keys.clone();
    setup.sim_hook = Some(Arc::new(move |_slot, key: &SimControl| {
        key.set_faults(FaultPlan {
            forget_key_agreement: true,
            ..FaultPlan::default()
        });
        keys.lock().unwrap().push(key.clone());
    }));
    let station = Station::start(setup).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !station.drained() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    station.shutdown();
    let reports = line.activate();
    assert_eq!(reports.len(), 4, "{reports:?}");
    assert!(reports.iter().all(|r| r.verified()), "{reports:?}");
    let keys = line.keys.lock().unwrap();
    let programmed: Vec<&SimControl> = keys.iter().filter(|k| k.pin_status().pin_set).collect();
    assert_eq!(programmed.len(), 4);
    for key in programmed {
        let status = key.pin_status();
        assert!(status.force_pin_change);
        assert_eq!(
            status.retries,
            prereg_station::sim::authenticator::PIN_RETRIES
        );
        assert_eq!(key.credentials().len(), 1);
    }
}

/// stderr of a command that must fail with exit 2 (configuration) in one line.
fn config_error(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(crate::util::station_bin())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn demo_with_more_slots_than_the_rig_protocol_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let os = std::ffi::OsStr::new;
    let err = config_error(&[
        os("demo"),
        os("--slots"),
        os("65"),
        os("--keys"),
        os("1"),
        os("--dir"),
        dir.path().as_os_str(),
    ]);
    assert!(
        err.contains("--slots") && err.contains("at most 64"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was made: no keys, no jobs, no store"
    );
}

#[test]
fn a_configuration_with_65_slots_is_refused_before_any_key_is_touched() {
    let line = Line::prepare(&LineSpec::default(), "");
    let d = line.dir.path();
    // The line's own store and keys, with 65 slots.
    let mut text = format!(
        "[station]\nid = \"t\"\nstate_dir = {:?}\nkeys_dir = {:?}\nattestation_roots = [{:?}]\n\n[[customization]]\nid = \"C19881\"\nproducts = [{}]\n",
        d.join("state"),
        d.join("keys"),
        d.join("ca.pem"),
        product_of(PROFILE)
    );
    for _ in 0..65 {
        text.push_str(&format!("\n[[slot]]\ndevice = \"sim:{PROFILE}\"\n"));
    }
    let cfg = line.dir.path().join("65.toml");
    std::fs::write(&cfg, text).unwrap();
    let err = config_error(&[
        std::ffi::OsStr::new("run"),
        std::ffi::OsStr::new("--once"),
        std::ffi::OsStr::new("--config"),
        cfg.as_os_str(),
    ]);
    assert!(
        err.contains("[[slot]]") && err.contains("at most 64"),
        "{err}"
    );
    let (_, reason) = line.job_state(&line.shipments[0].shipment_id);
    assert_eq!(reason, None, "the queued jobs were not touched");
}
