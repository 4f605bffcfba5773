//! The upstream poller (SPEC §12): a thread of its own that asks the back end
//! for locked shipments, imports each durably through intake (the same checks
//! and store transaction as `jobs import` and the spool), and only then
//! acknowledges it (`ack`, with the request digests) or reports its refusal.
//!
//! Why this order cannot lose or double a job:
//! - a shipment is acknowledged only after the store committed it, so a crash
//!   or a lost `ack` leaves it offered; the next poll imports it again, which
//!   the store answers as a duplicate (same content) and the `ack` is repeated;
//! - the store refuses a second job with a request seen before (SPEC §3 replay),
//!   so no request is programmed twice whatever the back end offers.
//!
//! Why a thread: a back end that hangs or is down delays only this loop. The
//! programming workers, the delivery thread, signal handling and the systemd
//! watchdog never wait for it; on shutdown the main loop waits a bounded time
//! (at most one call's deadline matters) and then goes on without it.
//!
//! After a failed poll the next one waits an exponential backoff with equal
//! jitter ([`crate::station::deliver::backoff`] shape: 1 s doubling, capped at
//! `max(poll, 60 s)`); a full batch is followed by another poll at once.

use super::client::{UpstreamClient, UpstreamError};
use crate::config::Config;
use crate::escape::Untrusted;
use crate::shipment::{JobContent, Shipment, ShipmentId};
use crate::station::intake;
use crate::store::Store;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    pub offered: usize,
    pub imported: usize,
    pub duplicate: usize,
    pub refused: usize,
    pub acked: usize,
    /// Shipments whose ack or refusal call failed (offered again later).
    pub unanswered: usize,
}

/// Why a poll ended early.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The station's store could not take an offered shipment; it stays
    /// offered (nothing was acknowledged) and is imported on a later poll.
    #[error("cannot store an offered shipment: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// One poll: fetch, import each shipment, ack or report its refusal. A
/// transport failure (no answer) ends the batch early: the back end is
/// unreachable and the rest stays offered. Stops between shipments when
/// `stop` is set.
pub fn poll_once(
    client: &UpstreamClient,
    store: &Store,
    config: &Config,
    batch: u32,
    stop: &AtomicBool,
) -> Result<PollReport, PollError> {
    let offered = client.locked_shipments(batch)?;
    let mut report = PollReport {
        offered: offered.len(),
        ..PollReport::default()
    };
    for value in offered {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let raw_id = value
            .get("shipment_id")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let shipment: Shipment = match serde_json::from_value(value) {
            Ok(s) => s,
            Err(e) => {
                report.refused += 1;
                let Some(id) = raw_id.as_deref().and_then(|r| ShipmentId::parse(r).ok()) else {
                    tracing::warn!(shipment = %Untrusted(raw_id.as_deref().unwrap_or("")), "upstream offered a malformed shipment without a valid id; not reported");
                    continue;
                };
                tracing::warn!(shipment = %id, "upstream offered a malformed shipment: {e}");
                let message = format!(
                    "not a SPEC §3 shipment (line {}, column {})",
                    e.line(),
                    e.column()
                );
                answered(
                    &mut report,
                    client.refusal(&id, "intake.malformed", &message),
                )?;
                continue;
            }
        };
        let digests = JobContent::from(&shipment).request_digests;
        let id = ShipmentId::parse(&shipment.shipment_id);
        let counts = intake::import_shipments(store, config, vec![shipment])?;
        report.imported += counts.imported;
        report.duplicate += counts.duplicate;
        report.refused += counts.refused;
        // An id outside the SPEC §3 grammar never reaches a URL: the refusal
        // stays in the audit trail and the log (intake wrote both).
        let Ok(id) = id else { continue };
        if let Some(refused) = counts.refusals.first() {
            let message = refused.refusal.to_string();
            answered(
                &mut report,
                client.refusal(&id, refused.refusal.code(), &message),
            )?;
        } else if let Some(reason) = refused_before(store, &id, counts.duplicate)? {
            // Offered again after a refusal whose report was lost: the store
            // answers "duplicate", but the back end must hear the refusal
            // again, never an ack.
            let code = reason.split(':').next().unwrap_or("intake.refused").trim();
            answered(&mut report, client.refusal(&id, code, &reason))?;
        } else {
            let ok = answered(&mut report, client.ack(&id, &digests))?;
            report.acked += usize::from(ok);
        }
    }
    Ok(report)
}

/// For a shipment the store already knew: its refusal reason when it was
/// refused (`"<code>: <message>"`), else `None`.
fn refused_before(
    store: &Store,
    id: &ShipmentId,
    duplicate: usize,
) -> Result<Option<String>, crate::store::StoreError> {
    if duplicate == 0 {
        return Ok(None);
    }
    let (row, _) = store.show(id.as_str())?;
    Ok((row.state == "refused").then(|| row.reason.unwrap_or_default()))
}

/// Counts a failed ack/refusal; a call that got no answer ends the batch.
fn answered(report: &mut PollReport, r: Result<(), UpstreamError>) -> Result<bool, UpstreamError> {
    match r {
        Ok(()) => Ok(true),
        Err(e @ UpstreamError::Call { .. }) => Err(e),
        Err(e) => {
            tracing::warn!("upstream: {e}; the shipment stays offered and is answered again");
            report.unanswered += 1;
            Ok(false)
        }
    }
}

/// Delay after `failures` failed polls in a row: 1 s doubling, capped at
/// `cap`, times a jitter factor in [0.5, 1) (`jitter` in [0, 1)).
pub fn retry_delay(failures: u32, cap: Duration, jitter: f64) -> Duration {
    let nominal = Duration::from_secs(1)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(cap);
    nominal.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// The poller thread.
#[derive(Debug)]
pub struct UpstreamThread {
    stop: Arc<AtomicBool>,
    /// Polls answered with nothing offered (`run --once` waits for one).
    empty_polls: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl UpstreamThread {
    /// Starts polling every `poll` (sooner after a full batch, later after failures).
    pub fn spawn(
        client: UpstreamClient,
        store: Store,
        config: Config,
        poll: Duration,
        batch: u32,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let empty_polls = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, empty) = (stop.clone(), empty_polls.clone());
            std::thread::Builder::new()
                .name("upstream".into())
                .spawn(move || run(&client, &store, &config, poll, batch, &stop, &empty))?
        };
        Ok(UpstreamThread {
            stop,
            empty_polls,
            handle: Some(handle),
        })
    }

    /// Whether a poll found nothing to do since this was last asked (or ever).
    pub fn empty_polls(&self) -> u64 {
        self.empty_polls.load(Ordering::SeqCst)
    }

    /// Asks the thread to stop and waits at most `wait`; `false` if it is
    /// still inside a call (it is left to finish on its own: the process exits).
    pub fn stop(mut self, wait: Duration) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.handle.as_ref().is_none_or(JoinHandle::is_finished) {
                if let Some(h) = self.handle.take() {
                    let _ = h.join();
                }
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for UpstreamThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn run(
    client: &UpstreamClient,
    store: &Store,
    config: &Config,
    poll: Duration,
    batch: u32,
    stop: &AtomicBool,
    empty_polls: &AtomicU64,
) {
    let cap = poll.max(Duration::from_secs(60));
    let mut failures = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let wait = match poll_once(client, store, config, batch, stop) {
            Ok(report) => {
                failures = 0;
                if report.offered > 0 {
                    tracing::info!(
                        offered = report.offered,
                        imported = report.imported,
                        duplicate = report.duplicate,
                        refused = report.refused,
                        acked = report.acked,
                        "upstream poll"
                    );
                }
                if report.offered == 0 {
                    empty_polls.fetch_add(1, Ordering::SeqCst);
                }
                if report.offered >= batch as usize && report.unanswered == 0 {
                    Duration::ZERO
                } else {
                    poll
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = retry_delay(failures, cap, rand::random::<f64>());
                client.stats().error(e.to_string());
                tracing::warn!(
                    failures,
                    retry_in_ms = wait.as_millis() as u64,
                    "upstream poll failed: {e}"
                );
                wait
            }
        };
        let until = Instant::now() + wait;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_with_jitter_and_stops_at_the_cap() {
        let cap = Duration::from_secs(60);
        assert_eq!(retry_delay(1, cap, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(3, cap, 0.0), Duration::from_secs(2));
        assert!(retry_delay(3, cap, 0.999) < Duration::from_secs(4));
        assert_eq!(retry_delay(30, cap, 0.0), Duration::from_secs(30));
        assert!(retry_delay(30, cap, 0.999) < cap);
    }
}
