//! The command line as an operator uses it (issue #17): closed pipes, local
//! times in `jobs show`.

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::util::station_bin;

/// One demo run (two keys, fixed directory) shared by the tests here: it
/// leaves a station.toml, a store with delivered jobs and their audit trail.
fn demo_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(station_bin())
            .args(["demo", "--keys", "2", "--slots", "2", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "demo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

fn station(config: &Path) -> Command {
    let mut c = Command::new(station_bin());
    c.arg("--config").arg(config);
    c
}

fn config() -> PathBuf {
    demo_dir().join("station.toml")
}

/// A stdout whose reader is gone before the child starts: its first write
/// gets EPIPE, every time (a pipe closed "soon after spawn" would race).
fn closed_stdout() -> Stdio {
    let (ours, theirs) = UnixStream::pair().unwrap();
    drop(theirs);
    Stdio::from(OwnedFd::from(ours))
}

fn assert_no_panic(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{what} panicked: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(
        out.status.success(),
        "{what}: a closed stdout is not a failure: {:?} {stderr}",
        out.status
    );
}

/// Issue #17 item 3: `jobs list | head` exited 101 with a panic message.
#[test]
fn jobs_list_into_a_closed_pipe_exits_quietly() {
    for args in [
        &["jobs", "list"][..],
        &["jobs", "list", "--json"],
        &["jobs", "quarantine", "--json"],
    ] {
        let out = station(&config())
            .args(args)
            .stdout(closed_stdout())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_no_panic(&args.join(" "), &out);
        assert!(
            out.stderr.is_empty(),
            "{args:?}: EPIPE is not worth a word: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `… | head -1` with a real pipe: the reader takes one line of a report far
/// larger than the pipe buffer, then goes away mid-stream.
#[test]
fn a_reader_that_stops_after_one_line_leaves_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let gen = Command::new(station_bin())
        .args(["keys", "generate", "--dir"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(gen.status.success());
    let export = Command::new(station_bin())
        .args(["keys", "export-jwks", "--dir"])
        .arg(&keys)
        .arg("--out")
        .arg(dir.path().join("pub"))
        .output()
        .unwrap();
    assert!(export.status.success());
    // 64 users × ~2 KB of JWE each: well over the 64 KiB a pipe holds.
    let mut child = Command::new(station_bin())
        .args(["idp", "enroll", "--users", "64", "--state"])
        .arg(dir.path().join("idp"))
        .arg("--station-jwks")
        .arg(dir.path().join("pub/transport-keys.jwks"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'), "a shipment line: {first}");
    // The reader (and with it the pipe) is gone here.
    let out = child.wait_with_output().unwrap();
    assert_no_panic("idp enroll | head -1", &out);
}

/// `jobs show` as text: "shipment … updated …" then the audit events.
fn show_text(id: &str, tz: &str) -> String {
    let out = station(&config())
        .args(["jobs", "show", id])
        .env("TZ", tz)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn show_json(id: &str) -> serde_json::Value {
    let out = station(&config())
        .args(["jobs", "show", id, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn first_job() -> String {
    let out = station(&config())
        .args(["jobs", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // JSON lines (docs/cli.md): the first line is the newest job.
    let stdout = String::from_utf8(out.stdout).unwrap();
    let row: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    row["shipment_id"].as_str().unwrap().to_string()
}

/// `unix` shifted by `offset` seconds as `YYYY-MM-DDTHH:MM:SS`, computed
/// independently of the C library (H. Hinnant's civil_from_days).
fn civil(unix: i64, offset: i64) -> String {
    let t = unix + offset;
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Issue #17 item 7: `jobs show` printed raw Unix seconds. Text is RFC 3339
/// in the local zone (TZ), `--json` keeps the seconds.
#[test]
fn jobs_show_prints_rfc3339_local_time_and_json_keeps_unix_seconds() {
    let id = first_job();
    let json = show_json(&id);
    let updated = json["job"]["updated_at"].as_i64().expect("raw seconds");
    let audit = json["audit"].as_array().unwrap();
    assert!(!audit.is_empty());
    let first_at = audit[0]["at"].as_i64().expect("raw seconds");

    // POSIX TZ strings need no zone database: "XST-5:30" is UTC+05:30.
    for (tz, offset, suffix) in [
        ("UTC0", 0, "Z"),
        ("XST-5:30", 5 * 3600 + 1800, "+05:30"),
        ("YST3", -3 * 3600, "-03:00"),
    ] {
        let text = show_text(&id, tz);
        let want_updated = format!("updated    {}{suffix}", civil(updated, offset));
        assert!(
            text.contains(&want_updated),
            "TZ={tz}: {want_updated:?} in\n{text}"
        );
        let want_at = format!("  {}{suffix} ", civil(first_at, offset));
        assert!(text.contains(&want_at), "TZ={tz}: {want_at:?} in\n{text}");
        assert!(
            !text.contains(&first_at.to_string()),
            "TZ={tz}: no raw seconds in text:\n{text}"
        );
    }
}

/// Issue #17 item 12: every option of every subcommand says what it is for,
/// and no help text shows rustdoc link syntax (clap copies doc comments).
#[test]
fn every_argument_has_help_and_no_help_shows_rustdoc_links() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
        let here = format!("{path} {}", cmd.get_name()).trim().to_string();
        let texts = [cmd.get_about(), cmd.get_long_about()];
        for t in texts.iter().flatten() {
            if t.to_string().contains("[`") {
                problems.push(format!("{here}: about shows a rustdoc link: {t}"));
            }
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if ["help", "version"].contains(&id) {
                continue;
            }
            for v in arg.get_possible_values() {
                if v.get_help().is_some_and(|t| t.to_string().contains("[`")) {
                    problems.push(format!(
                        "{here}: {id}={}: rustdoc link in help",
                        v.get_name()
                    ));
                }
            }
            match (arg.get_help(), arg.get_long_help()) {
                (None, None) => problems.push(format!("{here}: --{id} has no help")),
                (h, l) => {
                    for t in [h, l].into_iter().flatten() {
                        if t.to_string().contains("[`") {
                            problems.push(format!("{here}: {id}: rustdoc link in help: {t}"));
                        }
                    }
                }
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &here, problems);
        }
    }
    let mut problems = Vec::new();
    walk(&prereg_station::cli::Cli::command(), "", &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Simulated keys behind the UDP bridge with known serials, and a station
/// config whose `[[slot]]`s name them (how `devices` finds a UDP key).
struct UdpKeys {
    dir: tempfile::TempDir,
    devices: Vec<String>,
    _servers: Vec<prereg_station::sim::udp::UdpServer>,
}

impl UdpKeys {
    fn serve(serials: &[u32]) -> UdpKeys {
        use prereg_station::sim::{udp::UdpServer, SimConfig, SimKey};
        let dir = tempfile::tempdir().unwrap();
        let profile = prereg_station::profile::builtin_profile("yubikey-5.7").unwrap();
        let product = SimConfig::default_product(&profile);
        let mut servers = Vec::new();
        let mut devices = Vec::new();
        let mut toml = format!(
            "[station]\nid = \"bench\"\nstate_dir = {:?}\nkeys_dir = {:?}\nattestation_roots = []\n",
            dir.path().join("state"),
            dir.path().join("keys")
        );
        for &serial in serials {
            let cfg = SimConfig::builtin("yubikey-5.7", product)
                .unwrap()
                .serial(serial);
            let server =
                UdpServer::spawn("127.0.0.1:0".parse().unwrap(), SimKey::new(cfg).unwrap())
                    .unwrap();
            let dev = format!("udp:{}", server.local_addr());
            toml.push_str(&format!("\n[[slot]]\ndevice = \"{dev}\"\n"));
            devices.push(dev);
            servers.push(server);
        }
        std::fs::write(dir.path().join("station.toml"), toml).unwrap();
        UdpKeys {
            dir,
            devices,
            _servers: servers,
        }
    }

    fn devices(&self, args: &[&str]) -> Output {
        Command::new(station_bin())
            .arg("--config")
            .arg(self.dir.path().join("station.toml"))
            .arg("devices")
            .args(args)
            .output()
            .unwrap()
    }
}

/// Keys this machine has besides the test's own (a real key, a PC/SC card):
/// with any, "the only attached key" cannot be checked here.
fn machine_has_keys() -> bool {
    let out = Command::new(station_bin())
        .args(["devices", "list", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let hid = v["hid"].as_array().is_some_and(|a| !a.is_empty());
    let card = v["pcsc"]
        .as_array()
        .is_some_and(|a| a.iter().any(|r| r["card_present"] == true));
    hid || card
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Issue #17 item 11: `--device SERIAL` as ykman takes it.
#[test]
fn devices_info_finds_a_key_by_its_serial_number() {
    let keys = UdpKeys::serve(&[41_000_001, 41_000_002]);
    // `devices list` shows what `--device` can name.
    let out = keys.devices(&["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (dev, serial) in keys.devices.iter().zip([41_000_001, 41_000_002]) {
        assert!(
            v["keys"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!({ "device": dev, "serial": serial })),
            "{v}"
        );
    }
    let out = keys.devices(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("serial 41000002") && l.ends_with(&keys.devices[1])),
        "{text}"
    );

    let out = keys.devices(&["info", "--json", "--device", "41000002"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["device_info"]["serial"], 41_000_002);
    assert_eq!(v["device"], keys.devices[1]);

    let out = keys.devices(&["info", "--device", "41000009"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("no attached key has serial 41000009"), "{err}");
    assert!(
        err.contains("serial 41000001") && err.contains("serial 41000002"),
        "{err}"
    );
}

/// Without --device: the only key is used and named; two keys are listed
/// and nothing is touched.
#[test]
fn devices_info_and_reset_use_the_only_attached_key_and_refuse_to_guess() {
    if machine_has_keys() {
        eprintln!("skipped: this machine has keys of its own attached");
        return;
    }
    let two = UdpKeys::serve(&[42_000_001, 42_000_002]);
    for args in [&["info"][..], &["reset", "--yes"]] {
        let out = two.devices(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("2 keys attached"), "{err}");
        assert!(err.contains("--device SERIAL"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    let one = UdpKeys::serve(&[42_000_003]);
    let out = one.devices(&["info", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["device_info"]["serial"], 42_000_003);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "Using the only attached key: {} (serial 42000003)",
            one.devices[0]
        )),
        "{err}"
    );

    // A freshly served simulated key is inside its power-up reset window.
    let out = one.devices(&["reset", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("Using the only attached key"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reset: no PIN, no credentials"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `devices info` and `devices reset` take the same device kinds: reset
/// used to refuse sim: and pcsc: and knew no serials.
#[test]
fn devices_reset_takes_every_kind_info_takes() {
    let keys = UdpKeys::serve(&[43_000_001]);
    for dev in ["43000001", keys.devices[0].as_str(), "sim:yubikey-5.7"] {
        let info = keys.devices(&["info", "--json", "--device", dev]);
        assert!(info.status.success(), "info {dev}: {}", stderr(&info));
        let reset = keys.devices(&["reset", "--yes", "--device", dev]);
        assert!(reset.status.success(), "reset {dev}: {}", stderr(&reset));
    }
    // pcsc: is accepted by both (the reader does not exist: a failure to
    // open it, exit 1, not a usage refusal).
    for args in [&["info", "--device"][..], &["reset", "--yes", "--device"]] {
        let mut a = args.to_vec();
        a.push("pcsc:No Such Reader 00 00");
        let out = keys.devices(&a);
        assert_eq!(out.status.code(), Some(1), "{a:?}: {}", stderr(&out));
    }
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Issue #17 item 13: the crate version and `--version` are the CHANGELOG's
/// latest release; "Unreleased" stays on top for what comes next.
#[test]
fn version_is_the_changelogs_latest_release() {
    let changelog = repo_file("CHANGELOG.md");
    let mut headings = changelog
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::trim);
    assert_eq!(headings.next(), Some("Unreleased"), "Unreleased first");
    let latest = headings
        .next()
        .expect("a released version under Unreleased");
    let latest = latest.split_whitespace().next().unwrap();
    assert_eq!(latest, env!("CARGO_PKG_VERSION"), "Cargo.toml version");
    let out = Command::new(station_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("prereg-station {latest}")
    );
}

/// Issue #17 item 13: docs/ARCHITECTURE.md has a section for every module
/// `src/lib.rs` declares (PC/SC had none).
#[test]
fn architecture_doc_covers_every_module() {
    let lib = repo_file("src/lib.rs");
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .collect();
    assert!(modules.contains(&"pcsc"), "{modules:?}");
    let doc = repo_file("docs/ARCHITECTURE.md");
    let covered: Vec<&str> = doc
        .lines()
        .filter(|l| l.starts_with("### "))
        .flat_map(|l| l.split('`').skip(1).step_by(2))
        .collect();
    let missing: Vec<&&str> = modules.iter().filter(|m| !covered.contains(m)).collect();
    assert!(missing.is_empty(), "no ### section names {missing:?}");
}

/// `devices reset --device SERIAL` finds the key again by its serial after
/// the re-insert, wherever it comes back (a /dev/hidrawN may change; here
/// the key comes back behind another UDP bridge).
#[test]
fn devices_reset_by_serial_follows_the_key_to_where_it_comes_back() {
    use prereg_station::sim::{udp::UdpServer, ManualClock, SimConfig, SimKey, TouchMode};
    use std::io::BufRead as _;
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    let profile = prereg_station::profile::builtin_profile("yubikey-5.7").unwrap();
    let product = SimConfig::default_product(&profile);
    let clock = Arc::new(ManualClock::default());
    let cfg = SimConfig::builtin("yubikey-5.7", product)
        .unwrap()
        .serial(44_000_001)
        .touch(TouchMode::Rig);
    let key = SimKey::with_clock(cfg, clock.clone()).unwrap();
    let control = key.control();
    let first = UdpServer::spawn("127.0.0.1:0".parse().unwrap(), key).unwrap();
    let second = UdpServer::spawn("127.0.0.1:0".parse().unwrap(), control.transport()).unwrap();
    let (a, b) = (
        format!("udp:{}", first.local_addr()),
        format!("udp:{}", second.local_addr()),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("station.toml");
    std::fs::write(
        &config,
        format!(
            "[station]\nid = \"bench\"\nstate_dir = {:?}\nkeys_dir = {:?}\nattestation_roots = []\n\
             \n[[slot]]\ndevice = \"{a}\"\n\n[[slot]]\ndevice = \"{b}\"\n",
            dir.path().join("state"),
            dir.path().join("keys"),
        ),
    )
    .unwrap();
    // Long past power-up: the key refuses a reset until it is re-inserted.
    clock.advance(Duration::from_secs(11));
    let mut child = Command::new(station_bin())
        .arg("--config")
        .arg(&config)
        .args(["devices", "reset", "--yes", "--wait-secs", "60"])
        .args(["--device", "44000001"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let expect = |needle: &str| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    };
    let line = expect("remove it and insert it again");
    assert!(line.contains(&a), "found at the first bridge: {line}");
    // Out of the first port, into the second.
    control.unplug();
    expect("Removed");
    first.stop();
    control.plug();
    expect("Touch the key now");
    control.touch();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?} {stdout}", out.status);
    assert!(
        stdout.contains(&format!("Key at {b} reset")),
        "reset where it came back: {stdout}"
    );
    second.stop();
}
