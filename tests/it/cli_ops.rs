//! The operator and the integrator never have to guess (issue #17, items 1,
//! 2, 4, 5, 9, 10), checked through the built binary: keys turned away with
//! their reason, one slot numbering, configuration errors, every documented
//! metric recorded, refusals as code and message, and the `--json`
//! convention of docs/cli.md.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::station_bin;

/// The binary with no configuration from the environment.
fn bin() -> Command {
    let mut c = Command::new(station_bin());
    c.env_remove("PREREG_STATION_CONFIG");
    c
}

fn run(args: &[&str], config: Option<&Path>) -> Output {
    let mut c = bin();
    if let Some(cfg) = config {
        c.arg("--config").arg(cfg);
    }
    c.args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh demo directory (one key, one slot): station.toml, keys, IdP,
/// a store with one delivered job.
fn demo(dir: &Path) {
    let out = bin()
        .args(["demo", "--keys", "1", "--slots", "1", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "demo: {}", text(&out.stderr));
    export_jwks(dir);
}

/// The station's public JWK sets, in `dir/pub`.
fn export_jwks(dir: &Path) {
    let out = bin()
        .args(["keys", "export-jwks", "--dir"])
        .arg(dir.join("keys"))
        .arg("--out")
        .arg(dir.join("pub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "export-jwks: {}", text(&out.stderr));
}

/// `idp enroll` in a demo directory: `users` new signed jobs for `product`.
fn enroll(dir: &Path, users: usize, product: u32, out: &Path) {
    let o = bin()
        .args(["idp", "enroll", "--sign", "--state"])
        .arg(dir.join("idp"))
        .arg("--station-jwks")
        .arg(dir.join("pub/transport-keys.jwks"))
        .args([
            "--users",
            &users.to_string(),
            "--product",
            &product.to_string(),
        ])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "idp enroll: {}", text(&o.stderr));
}

/// Every stdout line is one complete, compact JSON object (docs/cli.md).
fn json_lines(what: &str, out: &Output) -> Vec<serde_json::Value> {
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what}: line {l:?} is not JSON ({e})"));
            assert!(v.is_object(), "{what}: {l}");
            assert_eq!(
                serde_json::to_string(&v).unwrap().len(),
                l.len(),
                "{what}: compact"
            );
            v
        })
        .collect()
}

/// One line on stderr (the error), nothing else.
fn one_error_line(what: &str, out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
    stderr.trim_end().to_string()
}

/// Item 9: a multi-file import stored a job but said "nothing imported" and
/// stopped at the file that did not parse; refusals exited 0.
#[test]
fn jobs_import_reports_every_file_and_exits_1_when_anything_was_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    demo(dir);
    let cfg = dir.join("station.toml");
    let fresh = dir.join("fresh.jsonl");
    enroll(dir, 1, 1, &fresh);
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    // A copy of a real shipment with two keys in one item: intake.quantity.
    let mut refused: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.join("jobs.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    refused["shipment_id"] = "refused-quantity-2".into();
    refused["shipment_items"][0]["product_quantity"] = 2.into();
    let refused_path = dir.join("refused.json");
    std::fs::write(&refused_path, refused.to_string()).unwrap();
    let files = [&bad, &fresh, &refused_path, &dir.join("jobs.jsonl")];

    let mut c = bin();
    c.arg("--config")
        .arg(&cfg)
        .args(["jobs", "import"])
        .args(files);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("nothing imported from this file"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fresh.jsonl: imported 1, already known 0, refused 0"),
        "{stdout}"
    );
    assert!(stdout.contains("refused.json: imported 0, already known 0, refused 1"));
    assert!(stdout.contains("jobs.jsonl: imported 0, already known 1, refused 0"));
    assert!(
        stdout.contains(
            "total: imported 1 job(s), 1 already known, 1 refused, 1 file(s) not imported"
        ),
        "{stdout}"
    );
    // The refusal is logged above it; the error is the last line.
    let stderr = text(&out.stderr);
    let err = stderr.lines().last().unwrap();
    assert!(
        err.contains("1 refused") && err.contains("1 imported"),
        "{err}"
    );

    // --json: one line per file; refusals as code and message. (A refused
    // shipment imported again is already known: a new one is refused.)
    refused["shipment_id"] = "refused-quantity-3".into();
    let refused_again = dir.join("refused-3.json");
    std::fs::write(&refused_again, refused.to_string()).unwrap();
    let mut c = bin();
    c.arg("--config")
        .arg(&cfg)
        .args(["jobs", "import", "--json"])
        .args([&bad, &fresh, &refused_again, &dir.join("jobs.jsonl")]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines("jobs import --json", &out);
    assert_eq!(lines.len(), 4);
    assert!(lines[0]["error"]
        .as_str()
        .unwrap()
        .contains("nothing imported"));
    assert_eq!(lines[1]["duplicate"], 1, "fresh.jsonl is known now");
    let refusal = &lines[2]["refusals"][0];
    assert_eq!(refusal["code"], "intake.quantity");
    assert_eq!(refusal["message"], "product_quantity 2, must be 1");
    assert_eq!(refusal["shipment_id"], "refused-quantity-3");

    // jobs list / show --json: the stored refusal, code and message apart.
    let list = json_lines(
        "jobs list --json",
        &run(&["jobs", "list", "--json"], Some(&cfg)),
    );
    assert_eq!(list.len(), 4, "{list:?}");
    let row = list
        .iter()
        .find(|r| r["shipment_id"] == "refused-quantity-2")
        .unwrap();
    assert_eq!(row["state"], "refused");
    assert_eq!(row["code"], "intake.quantity");
    assert_eq!(row["message"], "product_quantity 2, must be 1");
    assert!(row.get("reason").is_none(), "no combined string: {row}");
    let queued = list.iter().find(|r| r["state"] == "queued").unwrap();
    assert!(queued["code"].is_null() && queued["message"].is_null());
    let show = run(
        &["jobs", "show", "refused-quantity-2", "--json"],
        Some(&cfg),
    );
    let show = json_lines("jobs show --json", &show);
    assert_eq!(show.len(), 1);
    assert_eq!(show[0]["job"]["code"], "intake.quantity");
    assert_eq!(show[0]["job"]["message"], "product_quantity 2, must be 1");
    let refused_event = show[0]["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["event"] == "refused")
        .unwrap();
    assert_eq!(refused_event["code"], "intake.quantity");
}

/// `run --once` with `once_give_up_secs = 2` in `cfg`: exits 1 well before
/// 30 s; its stderr and the last line.
fn run_once_giving_up(cfg: &Path) -> (String, String) {
    let t0 = Instant::now();
    let out = run(&["run", "--once"], Some(cfg));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "gave up after {:?}, not ~2 s",
        t0.elapsed()
    );
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap().to_string();
    (stderr, last)
}

/// Item 1: `run --once` with a Security Key in the only slot and only
/// YubiKey 5 NFC jobs queued gives up after `[station] once_give_up_secs`
/// and names the reason; `jobs list` shows the key turned away.
#[test]
fn run_once_names_the_wrong_product_after_its_configured_give_up_wait() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    demo(dir);
    let cfg = dir.join("station.toml");
    let jobs = dir.join("yk5nfc.jsonl");
    enroll(dir, 1, 1, &jobs);
    let toml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("sim:yubikey-5.7", "sim:security-key-5.7")
        .replace("[station]\n", "[station]\nonce_give_up_secs = 2\n");
    std::fs::write(&cfg, toml).unwrap();
    let out = run(&["jobs", "import", jobs.to_str().unwrap()], Some(&cfg));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let (stderr, last) = run_once_giving_up(&cfg);
    assert!(
        last.contains("for 2s ([station] once_give_up_secs)"),
        "{last}"
    );
    assert!(
        last.contains("slot0: key.wrong_product: Wrong product: the queued jobs need YubiKey 5 NFC (product 1)"),
        "{last}"
    );
    assert!(stderr.contains("key turned away"), "logged: {stderr}");

    let list = text(&run(&["jobs", "list"], Some(&cfg)).stdout);
    assert!(list.contains("turned away untouched"), "{list}");
    assert!(list.contains("slot=slot0"), "{list}");
    assert!(list.contains("key.wrong_product"), "{list}");

    // --json: the one summary line says the same.
    let out = run(&["run", "--once", "--json"], Some(&cfg));
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines("run --once --json", &out);
    assert_eq!(lines.len(), 1);
    assert!(lines[0]["gave_up"]
        .as_str()
        .unwrap()
        .contains("key.wrong_product"));
    assert_eq!(lines[0]["jobs"]["queued"], 1);
    assert_eq!(lines[0]["programmed"], 0);
}

/// `run --once` with `[upstream]` waits for one answered poll (jobs may be
/// on their way); a back end that never answers ends the run after
/// `[station] once_give_up_secs` with a line naming the back end and its last
/// error, instead of holding the run forever.
#[test]
fn run_once_gives_up_on_an_upstream_that_never_answers_and_names_it() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    demo(dir);
    let cfg = dir.join("station.toml");
    // Nothing listens on the loopback discard port: every poll is refused.
    let toml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[station]\n", "[station]\nonce_give_up_secs = 2\n")
        + "\n[upstream]\nurl = \"http://127.0.0.1:9/\"\npoll_secs = 1\ntimeout_secs = 1\n";
    std::fs::write(&cfg, toml).unwrap();
    let (_, last) = run_once_giving_up(&cfg);
    assert!(
        last.contains("--once: the upstream back end has not answered a poll for 2s ([station] once_give_up_secs): http://127.0.0.1:9/"),
        "{last}"
    );
}

/// SPEC §14, "the demo can run with a made-up facility CA": `demo
/// --facility-ca` certifies the station's signing key (CSR, issue, x5c)
/// and verifies through the CA; the same results then pass `idp activate
/// --sign-ca` with that CA's PEM and fail with another's.
#[test]
fn demo_with_a_made_up_facility_ca_verifies_through_the_ca_not_a_pinned_key() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let out = bin()
        .args([
            "demo",
            "--facility-ca",
            "--keys",
            "2",
            "--slots",
            "1",
            "--dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("certified by a made-up facility CA"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2/2 keys programmed and verified"),
        "{stdout}"
    );
    export_jwks(dir);
    let sign: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pub/sign.jwks")).unwrap()).unwrap();
    assert_eq!(sign["keys"][0]["x5c"].as_array().map(Vec::len), Some(2));
    let activate = |ca: &Path| {
        bin()
            .args(["idp", "activate", "--state"])
            .arg(dir.join("idp"))
            .arg("--sign-jwks")
            .arg(dir.join("pub/sign.jwks"))
            .arg("--roots")
            .arg(dir.join("sim-attestation-root.pem"))
            .arg("--sign-ca")
            .arg(ca)
            .arg(dir.join("outbox"))
            .output()
            .unwrap()
    };
    let out = activate(&dir.join("facility-ca.pem"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).matches("VERIFIED").count(), 2);
    let other = dir.join("other-ca.pem");
    std::fs::write(
        &other,
        prereg_station::idp::facility_ca::FacilityCa::new("Demo Facility Signing CA")
            .unwrap()
            .pem()
            .unwrap(),
    )
    .unwrap();
    let out = activate(&other);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
}

/// Item 4: every configuration error is one line naming the key or path and
/// the fix, exit 2; the advice given is advice the configuration accepts.
#[test]
fn configuration_errors_are_one_line_that_names_the_key_or_path_and_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = dir.join("station.toml");
    let write = |body: &str| std::fs::write(&cfg, body).unwrap();
    let state = |p: &Path| {
        format!(
            "[station]\nid = \"t\"\nstate_dir = {:?}\n",
            p.display().to_string()
        )
    };
    let expect = |what: &str, want: &[&str], not: &[&str]| {
        let out = run(&["jobs", "list"], Some(&cfg));
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out.stderr));
        let line = one_error_line(what, &out);
        for w in want {
            assert!(line.contains(w), "{what}: {line:?} lacks {w:?}");
        }
        for n in not {
            assert!(!line.contains(n), "{what}: {line:?} has {n:?}");
        }
    };

    // A TOML syntax error: one line with the line number (toml says two).
    write(&format!(
        "{}\n[[slot]\ndevice = \"sim:yubikey-5.7\"\n",
        state(&dir.join("s"))
    ));
    expect(
        "syntax",
        &["line 5", "invalid table header", "expected"],
        &[],
    );

    // An unknown key names itself.
    write(&format!("{}bogus = 1\n", state(&dir.join("s"))));
    expect("unknown key", &["unknown field `bogus`"], &[]);

    // A missing file named with --config: no advice to pass --config.
    let out = bin()
        .arg("--config")
        .arg(dir.join("missing.toml"))
        .args(["jobs", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line = one_error_line("missing --config file", &out);
    assert!(
        line.contains("missing.toml") && !line.contains("pass --config"),
        "{line}"
    );

    // A state directory that cannot be created or read: exit 2, the path, the key.
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    write(&state(&file.join("state")));
    expect(
        "state dir under a file",
        &["a-file/state", "[station] state_dir", "cannot create"],
        &[],
    );
    write(&state(&file));
    expect(
        "state dir is a file",
        &["a-file", "[station] state_dir"],
        &[],
    );

    // Non-loopback listen: the advice names token_file, and token_file works.
    write(&format!(
        "{}\n[web]\nlisten = \"0.0.0.0:0\"\n",
        state(&dir.join("s"))
    ));
    expect("no token", &["[web] listen", "token_file"], &[]);
    let token = dir.join("web-token");
    std::fs::write(&token, "abcdefghijklmnop0123456789\n").unwrap();
    write(&format!(
        "{}\n[web]\nlisten = \"0.0.0.0:0\"\ntoken_file = {:?}\n",
        state(&dir.join("s")),
        token.display().to_string()
    ));
    let out = run(&["jobs", "list"], Some(&cfg));
    assert!(
        out.status.success(),
        "token_file is accepted: {}",
        text(&out.stderr)
    );
    write(&format!(
        "{}\n[web]\nlisten = \"0.0.0.0:0\"\ntoken_file = {:?}\n",
        state(&dir.join("s")),
        dir.join("no-such-token").display().to_string()
    ));
    expect(
        "token_file missing",
        &["[web] token_file", "no-such-token"],
        &[],
    );

    // The demo's advice for a non-loopback --web is one it can follow.
    let out = bin()
        .args(["demo", "--web", "0.0.0.0:8080"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line = one_error_line("demo --web 0.0.0.0", &out);
    assert!(
        line.contains("--web 127.0.0.1:8080") && line.contains("token_file"),
        "{line}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing was set up: {}",
        text(&out.stdout)
    );
}

/// Item 10: every command that reports something takes `--json` and
/// prints compact JSON lines only (docs/cli.md).
#[test]
fn every_reporting_command_prints_json_lines_with_json() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let out = bin()
        .args(["demo", "--keys", "2", "--slots", "2", "--json", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let demo = json_lines("demo --json", &out);
    assert_eq!(demo.len(), 1);
    assert_eq!(demo[0]["verified"], 2);
    let results = demo[0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let mut slots: Vec<u64> = results
        .iter()
        .map(|r| r["slot"].as_u64().unwrap())
        .collect();
    slots.sort_unstable();
    assert!(
        slots.iter().all(|s| *s < 2),
        "slots count from 0: {slots:?}"
    );

    export_jwks(dir);
    let cfg = dir.join("station.toml");
    let id = demo[0]["results"][0]["shipment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let cases: Vec<(Vec<String>, usize)> = vec![
        (vec!["jobs".into(), "list".into(), "--json".into()], 2),
        (vec!["jobs".into(), "show".into(), id, "--json".into()], 1),
        (vec!["jobs".into(), "quarantine".into(), "--json".into()], 0),
        (
            vec![
                "jobs".into(),
                "import".into(),
                "--json".into(),
                dir.join("jobs.jsonl").display().to_string(),
            ],
            1,
        ),
        (vec!["run".into(), "--once".into(), "--json".into()], 1),
        (
            vec![
                "keys".into(),
                "list".into(),
                "--json".into(),
                "--dir".into(),
                dir.join("keys").display().to_string(),
            ],
            2,
        ),
        (
            vec![
                "idp".into(),
                "activate".into(),
                "--json".into(),
                "--state".into(),
                dir.join("idp").display().to_string(),
                "--sign-jwks".into(),
                dir.join("pub/sign.jwks").display().to_string(),
                "--roots".into(),
                dir.join("sim-attestation-root.pem").display().to_string(),
                dir.join("outbox").display().to_string(),
            ],
            2,
        ),
    ];
    for (args, n) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args, Some(&cfg));
        let what = args[..2].join(" ");
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        assert_eq!(
            json_lines(&what, &out).len(),
            n,
            "{what}: {}",
            text(&out.stdout)
        );
    }
    // A report that is one document is one line too.
    let out = run(&["devices", "list", "--json"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json_lines("devices list", &out).len(), 1);
}

/// The metric names of the tables in docs/operator.md and docs/operations.md.
fn documented_metrics() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut names = Vec::new();
    for doc in ["docs/operator.md", "docs/operations.md"] {
        let body = std::fs::read_to_string(root.join(doc)).unwrap();
        for line in body.lines().filter(|l| l.starts_with("| `prereg_")) {
            let first = line.split('|').nth(1).unwrap();
            for name in first.split('`').skip(1).step_by(2) {
                let name = name.split('{').next().unwrap().to_string();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    assert!(names.len() >= 15, "metric tables not found: {names:?}");
    names
}

/// Items 2 and 5: scraped during a real demo — every documented metric is
/// there (step durations observed, queue gauges at 0 rather than gone), and
/// each key's slot in the demo table is the slot the board showed it in.
#[test]
fn a_demo_run_records_every_documented_metric_and_its_table_agrees_with_the_board() {
    use crate::rig::web::http;
    let mut child = bin()
        .args([
            "demo",
            "--keys",
            "3",
            "--slots",
            "2",
            "--web",
            "127.0.0.1:0",
            "--web-hold",
            "2",
        ])
        .env("PREREG_SIM_LATENCY", "yubikey:1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut child = Kill(child);
    let addr: std::net::SocketAddr = loop {
        let l = lines.next().expect("demo printed no status page").unwrap();
        if let Some(rest) = l.trim().strip_prefix("status page: http://") {
            break rest.trim_end_matches('/').parse().unwrap();
        }
    };
    // While the keys are programmed: which job the board shows in which slot.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, String)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let board: serde_json::Value =
                    serde_json::from_str(&http(addr, "GET", "/api/board", &[]).body).unwrap();
                for s in board["slots"].as_array().unwrap() {
                    if let Some(job) = s["job"].as_str() {
                        let pair = (s["index"].as_u64().unwrap(), job.to_string());
                        let mut seen = seen.lock().unwrap();
                        if !seen.contains(&pair) {
                            seen.push(pair);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    loop {
        let l = lines
            .next()
            .expect("demo ended before its final hold")
            .unwrap();
        if l.contains("showing the final board") {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    poller.join().unwrap();
    let metrics = http(addr, "GET", "/metrics", &[]).body;
    for name in documented_metrics() {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} is documented but not on /metrics"
        );
        let sample = metrics
            .lines()
            .any(|l| !l.starts_with('#') && l.starts_with(name.as_str()));
        // Counters by reason have no series until the first one.
        let by_reason = [
            "prereg_delivery_failures_total",
            "prereg_keys_turned_away_total",
        ];
        assert!(
            sample || by_reason.contains(&name.as_str()),
            "{name} has no sample"
        );
    }
    for step in [
        "match",
        "decrypt",
        "setPIN",
        "makeCredential",
        "verifyCredentials",
    ] {
        let count = format!("prereg_step_duration_seconds_count{{step=\"{step}\"}} 3");
        assert!(metrics.contains(&count), "{count} missing:\n{metrics}");
    }
    assert!(
        metrics.contains("prereg_queue_jobs{state=\"queued\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("prereg_queue_jobs{state=\"leased\"} 0\n"),
        "{metrics}"
    );
    assert!(metrics.contains("prereg_keys_programmed_total 3\n"));

    // The table: SLOT is the number the board (and the rig) used.
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.0.wait().unwrap();
    assert!(status.success());
    let table: Vec<(u64, String)> = rest
        .iter()
        .skip_while(|l| !l.starts_with("SLOT"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].parse().unwrap(), cols[5].to_string())
        })
        .collect();
    assert_eq!(table.len(), 3, "{rest:?}");
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "the board never showed a job");
    for (slot, job) in seen.iter() {
        let row = table.iter().find(|(_, j)| j == job).unwrap();
        assert_eq!(
            row.0, *slot,
            "{job}: table slot {} vs board slot {slot}",
            row.0
        );
    }
}
