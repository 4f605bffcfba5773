//! Upstream health (SPEC §12): call counts and latencies by call and outcome,
//! the last successful poll, the last error and results the back end holds
//! differently (409). Shared by the poller, the delivery thread, the status
//! page and `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// One (call, outcome) cell.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallCount {
    pub count: u64,
    pub seconds_sum: f64,
}

/// What the status page shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamSnapshot {
    pub url: String,
    /// Unix milliseconds of the last poll answered 2xx; 0 = never.
    pub last_poll_ok_ms: i64,
    pub last_error: Option<String>,
    /// `(call, outcome) → counts`.
    pub calls: BTreeMap<(String, String), CallCount>,
    /// Results the back end answered 409 for (kept, never purged).
    pub conflicts: u64,
}

impl UpstreamSnapshot {
    /// `ok` when the last poll succeeded and no error came after it.
    pub fn healthy(&self) -> bool {
        self.last_poll_ok_ms > 0 && self.last_error.is_none()
    }
}

/// Called when the health changes (a poll answered, an error), so the
/// status page pushes a fresh board to its viewers.
type OnChange = Box<dyn Fn() + Send + Sync>;

/// Counters of one upstream endpoint.
#[derive(Default)]
pub struct UpstreamStats {
    url: String,
    last_poll_ok_ms: AtomicI64,
    inner: Mutex<Inner>,
    on_change: std::sync::OnceLock<OnChange>,
}

impl std::fmt::Debug for UpstreamStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamStats")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Inner {
    calls: BTreeMap<(String, String), CallCount>,
    last_error: Option<String>,
    conflicts: u64,
}

impl UpstreamStats {
    pub fn new(url: impl Into<String>) -> Self {
        UpstreamStats {
            url: url.into(),
            ..Default::default()
        }
    }

    /// Sets the change hook (once; later calls are ignored).
    pub fn on_change(&self, hook: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(hook));
    }

    fn changed(&self) {
        if let Some(hook) = self.on_change.get() {
            hook();
        }
    }

    /// Records one call: `call` is `poll`, `ack`, `refusal` or `result`;
    /// `outcome` is `ok`, `status_4xx`, `status_5xx`, `conflict`, `timeout`, … .
    pub fn record(&self, call: &str, outcome: &str, took: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let cell = inner
            .calls
            .entry((call.to_owned(), outcome.to_owned()))
            .or_default();
        cell.count += 1;
        cell.seconds_sum += took.as_secs_f64();
    }

    pub fn poll_ok(&self) {
        self.last_poll_ok_ms.store(now_ms(), Ordering::Relaxed);
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error = None;
        self.changed();
    }

    /// The last failure (one line, no secret).
    pub fn error(&self, text: String) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error = Some(text);
        self.changed();
    }

    pub fn conflict(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .conflicts += 1;
        self.changed();
    }

    pub fn snapshot(&self) -> UpstreamSnapshot {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        UpstreamSnapshot {
            url: self.url.clone(),
            last_poll_ok_ms: self.last_poll_ok_ms.load(Ordering::Relaxed),
            last_error: inner.last_error.clone(),
            calls: inner.calls.clone(),
            conflicts: inner.conflicts,
        }
    }
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
