//! `prereg-station run [--config F] [--once]` (SPEC §11): the daemon.

use crate::cli::jobs::{load_config, open_store};
use crate::error::{CliError, CliResult};
use crate::escape::Untrusted;
use crate::station::{app, notify, spool::SpoolThread, Station};
use crate::web::WebConfig;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Drain the queue, deliver every result, and exit.
    #[arg(long)]
    pub once: bool,
    /// End with one JSON line (docs/cli.md) instead of the text summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config_path: &Option<PathBuf>, args: Args) -> CliResult {
    let config = load_config(config_path)?;
    app::preflight(&config)?;
    let store = open_store(&config)?;
    let spool = config.spool_dir.clone();
    let web = config
        .web
        .clone()
        .map(|(addr, token)| WebConfig::new(addr, token.map(crate::secret::SecretString::new)))
        .transpose()
        .map_err(CliError::usage)?;
    let setup = app::setup(config.clone(), store.clone())?;
    let board = setup.board.clone();
    let web = match web {
        Some(w) => Some(crate::web::spawn(w, board.clone()).map_err(CliError::failed)?),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [libc::SIGTERM, libc::SIGINT] {
        signal_flag(signal, stop.clone())?;
    }
    let station =
        Station::start(setup).map_err(|e| CliError::usage(format!("cannot start: {e}")))?;
    // The spool is scanned on its own thread: a hostile or slow spool never
    // delays this loop, which answers signals and pings the watchdog.
    let spool = spool
        .map(|dir| SpoolThread::spawn(store.clone(), config.clone(), dir))
        .transpose()
        .map_err(|e| CliError::failed(format!("cannot start the spool thread: {e}")))?;
    // The upstream poller (SPEC §12) too: a back end that is down or slow
    // delays only its own calls, never this loop, programming or delivery.
    let upstream = start_upstream(&station, &store, &config)?;
    notify::notify("READY=1");
    tracing::info!(slots = config.slots.len(), "station running");
    let watchdog = notify::watchdog_interval().map(|d| d / 2);
    let mut last_ping = Instant::now();
    // `--once` gives up when jobs stay queued with nothing in progress for this
    // long: no key in any slot fits them (wrong product, firmware, capability).
    let stuck_after = config.once_give_up;
    let run_started = crate::store::now_secs();
    let mut last_change = (Instant::now(), store.counts().unwrap_or_default());
    let mut stuck = false;
    let mut undeliverable = Vec::new();
    // `--once` with `[upstream]`: since when everything local is done and only
    // a first answered poll is awaited; a back end that never answers ends
    // the run after `once_give_up` instead of holding it forever.
    let mut awaiting_upstream: Option<Instant> = None;
    let mut upstream_silent = None;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if watchdog.is_some_and(|w| last_ping.elapsed() >= w) {
            notify::notify("WATCHDOG=1");
            last_ping = Instant::now();
        }
        // `--once` also waits for the spool to be scanned once with nothing new.
        if args.once && station.drained() && spool.as_ref().is_none_or(SpoolThread::idle) {
            match &upstream {
                Some(u) if u.empty_polls() == 0 => {
                    let since = *awaiting_upstream.get_or_insert_with(Instant::now);
                    if since.elapsed() >= stuck_after {
                        upstream_silent = Some(upstream_status(&station));
                        break;
                    }
                }
                _ => break,
            }
        } else {
            awaiting_upstream = None;
        }
        if args.once {
            // Drained except results that cannot be delivered: say which.
            undeliverable = station.stuck_on_delivery();
            if !undeliverable.is_empty() && spool.as_ref().is_none_or(SpoolThread::idle) {
                break;
            }
        }
        if args.once {
            let counts = store.counts().unwrap_or_default();
            if counts != last_change.1 {
                last_change = (Instant::now(), counts);
            } else if last_change.0.elapsed() >= stuck_after
                && store.count("queued").is_ok_and(|n| n > 0)
                && store.count("leased").is_ok_and(|n| n == 0)
                && store
                    .count("programmed")
                    .is_ok_and(|n| n as usize == station.undeliverable().len())
            {
                stuck = true;
                undeliverable = station.undeliverable();
                break;
            }
        }
        // Drain (status page): no new jobs are leased; stop once none is in a slot.
        if board.controls().draining() && store.count("leased").is_ok_and(|n| n == 0) {
            tracing::info!("drained: stopping");
            break;
        }
    }
    notify::notify("STOPPING=1");
    if let Some(upstream) = upstream {
        if !upstream.stop(Duration::from_secs(2)) {
            tracing::warn!("upstream poller still inside a call; not waiting for it");
        }
    }
    if let Some(spool) = spool {
        if !spool.stop(Duration::from_secs(2)) {
            tracing::warn!("spool thread still busy in the file system; not waiting for it");
        }
    }
    let programmed = station
        .shared()
        .programmed
        .lock()
        .map(|p| p.len())
        .unwrap_or(0);
    station.shutdown();
    if let Some(w) = web {
        let _ = w.shutdown();
    }
    let lock = crate::memlock::stats();
    tracing::info!(
        peak_pages = lock.peak,
        refused = lock.failures,
        "secret memory locking"
    );
    let counts = store.counts().map_err(CliError::failed)?;
    let gave_up = stuck.then(|| turned_away_since(&store, run_started));
    if args.json {
        let undeliverable: Vec<_> = undeliverable
            .iter()
            .map(|u| {
                serde_json::json!({
                    "shipment_id": u.shipment_id,
                    "code": u.failure.reason.to_string(),
                    "message": u.failure.detail,
                })
            })
            .collect();
        crate::cli::output::json_line(&serde_json::json!({
            "programmed": programmed,
            "jobs": counts.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "gave_up": gave_up,
            "undeliverable": undeliverable,
        }));
    } else {
        let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
        outln!(
            "programmed {programmed} key(s) this run; jobs: {}",
            summary.join(", ")
        );
    }
    if let Some(why) = gave_up {
        let also = if undeliverable.is_empty() {
            String::new()
        } else {
            format!("; also {}", once_undeliverable(&undeliverable))
        };
        return Err(CliError::failed(format!(
            "--once: {} job(s) still queued and no key in any slot has taken one for {}s \
             ([station] once_give_up_secs): {}{also}",
            store.count("queued").unwrap_or(0),
            stuck_after.as_secs(),
            why
        )));
    }
    if !undeliverable.is_empty() {
        return Err(CliError::failed(once_undeliverable(&undeliverable)));
    }
    if let Some(why) = upstream_silent {
        return Err(CliError::failed(format!(
            "--once: the upstream back end has not answered a poll for {}s \
             ([station] once_give_up_secs): {why}",
            stuck_after.as_secs()
        )));
    }
    Ok(())
}

/// The upstream's URL and its last error, for the line `run --once` ends
/// with when the back end never answered.
fn upstream_status(station: &Station) -> String {
    let Some(client) = station.shared().upstream.as_ref() else {
        return "no upstream".into();
    };
    let snap = client.stats().snapshot();
    let url = Untrusted(&snap.url);
    match snap.last_error {
        Some(e) => format!("{url}: {}", Untrusted(&e)),
        None => format!("{url}: no answer yet"),
    }
}

/// Why keys were turned away during this run, for the line `run --once`
/// gives up with: the latest reason per slot (from the `turned-away` audit
/// events), or what to check when no key was turned away.
fn turned_away_since(store: &crate::store::Store, since: i64) -> String {
    let events = store
        .events(crate::station::worker::TURNED_AWAY_EVENT)
        .unwrap_or_default();
    let mut latest: std::collections::BTreeMap<String, String> = Default::default();
    for e in events.into_iter().filter(|e| e.at >= since) {
        latest.insert(e.slot.unwrap_or_default(), e.detail.unwrap_or_default());
    }
    if latest.is_empty() {
        return "no key was turned away: are keys in the slots? see `jobs list`".into();
    }
    let each: Vec<String> = latest
        .iter()
        .map(|(slot, why)| format!("{}: {}", Untrusted(slot), Untrusted(why)))
        .collect();
    format!("keys turned away: {}", each.join("; "))
}

/// The one line `run --once` ends with when results cannot be delivered:
/// each stuck shipment id (escaped) with its named reason and detail.
/// `--once` gives up on a result after its first failure for a reason only an
/// operator can fix (outbox name taken, id outside the grammar, sink refusal)
/// and after [`crate::station::deliver::ONCE_GIVE_UP_AFTER`] failures for a
/// transient one; the results stay pending and the daemon keeps retrying them.
fn once_undeliverable(stuck: &[crate::station::Undeliverable]) -> String {
    let each: Vec<String> = stuck
        .iter()
        .map(|u| {
            format!(
                "{} ({}: {})",
                crate::escape::Untrusted(&u.shipment_id),
                u.failure.reason,
                crate::escape::Untrusted(&u.failure.detail)
            )
        })
        .collect();
    format!(
        "--once: {} result(s) cannot be delivered and stay pending: {}",
        stuck.len(),
        each.join("; ")
    )
}

/// Starts the upstream poller when `[upstream]` is configured.
pub fn start_upstream(
    station: &Station,
    store: &crate::store::Store,
    config: &crate::config::Config,
) -> Result<Option<crate::upstream::UpstreamThread>, CliError> {
    let (Some(client), Some(up)) = (station.shared().upstream.clone(), config.upstream.as_ref())
    else {
        return Ok(None);
    };
    tracing::info!(url = %client.base(), poll_secs = up.poll.as_secs(), batch = up.batch, "pulling locked shipments from upstream");
    crate::upstream::UpstreamThread::spawn(client, store.clone(), config.clone(), up.poll, up.batch)
        .map(Some)
        .map_err(|e| CliError::failed(format!("cannot start the upstream thread: {e}")))
}

/// Sets `flag` when `signal` arrives (tokio's signal handling on a small runtime thread).
fn signal_flag(signal: i32, flag: Arc<AtomicBool>) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::failed)?;
    let mut stream = rt
        .block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(signal))
        })
        .map_err(CliError::failed)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                stream.recv().await;
            });
            flag.store(true, Ordering::SeqCst);
        })
        .map_err(CliError::failed)?;
    Ok(())
}
