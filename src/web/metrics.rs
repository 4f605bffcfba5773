//! `/metrics` in the Prometheus text exposition format (version 0.0.4):
//! `# HELP` / `# TYPE` lines, then samples; label values escaped.

use std::fmt::Write;

use super::board::{Histogram, SlotState, StatusBoard, DURATION_BUCKETS};

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cum = 0u64;
    for (i, b) in DURATION_BUCKETS.iter().enumerate() {
        cum += h.counts[i];
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
    }
    cum += h.counts[DURATION_BUCKETS.len()];
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum);
    let _ = writeln!(out, "{name}_count{braces} {}", h.count);
}

/// The upstream back end (SPEC §12): calls by call and outcome, their
/// latency, the last good poll and the 409s.
fn upstream(out: &mut String, up: &crate::upstream::stats::UpstreamSnapshot) {
    header(
        out,
        "prereg_upstream_calls_total",
        "counter",
        "Calls to the upstream back end by call and outcome.",
    );
    for ((call, outcome), c) in &up.calls {
        let _ = writeln!(
            out,
            "prereg_upstream_calls_total{{call=\"{}\",outcome=\"{}\"}} {}",
            escape(call),
            escape(outcome),
            c.count
        );
    }
    header(
        out,
        "prereg_upstream_call_seconds_sum",
        "counter",
        "Total seconds spent in upstream calls by call and outcome.",
    );
    for ((call, outcome), c) in &up.calls {
        let _ = writeln!(
            out,
            "prereg_upstream_call_seconds_sum{{call=\"{}\",outcome=\"{}\"}} {}",
            escape(call),
            escape(outcome),
            c.seconds_sum
        );
    }
    header(
        out,
        "prereg_upstream_last_poll_success_seconds",
        "gauge",
        "Unix time of the last successful poll (0: never).",
    );
    let _ = writeln!(
        out,
        "prereg_upstream_last_poll_success_seconds {}",
        up.last_poll_ok_ms as f64 / 1000.0
    );
    header(
        out,
        "prereg_upstream_result_conflicts_total",
        "counter",
        "Results the back end holds differently (409): kept, never purged.",
    );
    let _ = writeln!(
        out,
        "prereg_upstream_result_conflicts_total {}",
        up.conflicts
    );
}

/// Renders every metric of the board.
/// The key custody's token pool (SPEC §14): per kind of call (`derive`:
/// ECDH for a request, `sign`: ES384, `other`), how many, how long they held
/// a session and waited for one, how many found every session busy or got
/// none; the pool's size. Only with `[keys]` (a token).
fn custody(out: &mut String, pool: &crate::jose::pkcs11::PoolSnapshot) {
    let ops = [
        ("derive", &pool.derive),
        ("sign", &pool.sign),
        ("other", &pool.other),
    ];
    type Field = fn(&crate::jose::pkcs11::OpSnapshot) -> String;
    let series: [(&str, &str, &str, Field); 6] = [
        (
            "prereg_custody_token_calls_total",
            "counter",
            "Token calls by kind.",
            |o| o.hold.count.to_string(),
        ),
        (
            "prereg_custody_token_call_seconds_sum",
            "counter",
            "Seconds token calls held a session, by kind.",
            |o| o.hold.sum.as_secs_f64().to_string(),
        ),
        (
            "prereg_custody_token_wait_seconds_sum",
            "counter",
            "Seconds callers waited for a pooled session, by kind.",
            |o| o.wait.sum.as_secs_f64().to_string(),
        ),
        (
            "prereg_custody_token_wait_seconds_max",
            "gauge",
            "Longest wait for a pooled session, by kind.",
            |o| o.wait.max.as_secs_f64().to_string(),
        ),
        (
            "prereg_custody_token_blocked_total",
            "counter",
            "Token calls that found every session busy, by kind.",
            |o| o.blocked.to_string(),
        ),
        (
            "prereg_custody_token_no_session_total",
            "counter",
            "Token calls that got no session (a custody error), by kind.",
            |o| o.no_session.to_string(),
        ),
    ];
    for (name, kind, help, field) in series {
        header(out, name, kind, help);
        for (op, o) in ops {
            let _ = writeln!(out, "{name}{{op=\"{op}\"}} {}", field(o));
        }
    }
    header(
        out,
        "prereg_custody_token_sessions_max",
        "gauge",
        "[keys] sessions: the most sessions the pool opens.",
    );
    let _ = writeln!(
        out,
        "prereg_custody_token_sessions_max {}",
        pool.max_sessions
    );
    header(
        out,
        "prereg_custody_token_sessions_opened_total",
        "counter",
        "Sessions opened (replacements of broken ones count again).",
    );
    let _ = writeln!(
        out,
        "prereg_custody_token_sessions_opened_total {}",
        pool.opened
    );
}

pub fn render(board: &StatusBoard) -> String {
    let s = board.snapshot();
    let (steps, jobs) = board.histograms();
    let mut out = String::new();

    for (name, help, v) in [
        (
            "prereg_keys_programmed_total",
            "Keys programmed, verified and passed.",
            s.totals.programmed,
        ),
        (
            "prereg_keys_failed_total",
            "Keys that failed before any change (job requeued).",
            s.totals.failed,
        ),
        (
            "prereg_keys_quarantined_total",
            "Keys stopped mid-programming and quarantined.",
            s.totals.quarantined,
        ),
    ] {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }

    header(
        &mut out,
        "prereg_keys_last_hour",
        "gauge",
        "Keys passed in the last hour.",
    );
    let _ = writeln!(out, "prereg_keys_last_hour {}", s.keys_last_hour);

    header(
        &mut out,
        "prereg_job_duration_seconds",
        "histogram",
        "Time from key start to result.",
    );
    histogram(&mut out, "prereg_job_duration_seconds", "", &jobs);

    header(
        &mut out,
        "prereg_step_duration_seconds",
        "histogram",
        "Duration of each programming step.",
    );
    for (step, h) in &steps {
        histogram(
            &mut out,
            "prereg_step_duration_seconds",
            &format!("step=\"{}\"", escape(step)),
            h,
        );
    }

    header(
        &mut out,
        "prereg_queue_jobs",
        "gauge",
        "Jobs in the store by state.",
    );
    for (state, n) in &s.queue {
        let _ = writeln!(out, "prereg_queue_jobs{{state=\"{}\"}} {n}", escape(state));
    }

    header(
        &mut out,
        "prereg_delivery_pending",
        "gauge",
        "Results stored and not yet acknowledged by the sink.",
    );
    let _ = writeln!(out, "prereg_delivery_pending {}", s.delivery.pending);
    header(
        &mut out,
        "prereg_delivery_failing",
        "gauge",
        "Pending results whose last delivery failed (backing off).",
    );
    let _ = writeln!(out, "prereg_delivery_failing {}", s.delivery.failing.len());
    header(
        &mut out,
        "prereg_delivery_failures_total",
        "counter",
        "Failed delivery attempts by named reason.",
    );
    for (reason, n) in &s.delivery.failures_total {
        let _ = writeln!(
            out,
            "prereg_delivery_failures_total{{reason=\"{}\"}} {n}",
            escape(reason)
        );
    }

    if let Some(up) = board.upstream() {
        upstream(&mut out, &up);
    }
    if let Some(pool) = board.custody() {
        custody(&mut out, &pool);
    }

    header(
        &mut out,
        "prereg_keys_turned_away_total",
        "counter",
        "Keys turned away untouched (REMOVE), by reason code.",
    );
    for (reason, n) in board.turned_away() {
        let _ = writeln!(
            out,
            "prereg_keys_turned_away_total{{reason=\"{}\"}} {n}",
            escape(&reason)
        );
    }

    header(
        &mut out,
        "prereg_slot_state",
        "gauge",
        "1 for the state each slot is in.",
    );
    for slot in &s.slots {
        for st in SlotState::ALL {
            let v = u8::from(slot.state == st);
            let _ = writeln!(
                out,
                "prereg_slot_state{{slot=\"{}\",state=\"{}\"}} {v}",
                slot.index,
                st.as_str()
            );
        }
    }

    header(
        &mut out,
        "prereg_rig_up",
        "gauge",
        "1 if the rig controller answers, 0 if down or absent.",
    );
    let _ = writeln!(out, "prereg_rig_up {}", u8::from(s.rig.state == "up"));
    header(
        &mut out,
        "prereg_rig_configured",
        "gauge",
        "1 if a rig controller is configured.",
    );
    let _ = writeln!(
        out,
        "prereg_rig_configured {}",
        u8::from(s.rig.state != "absent")
    );

    header(
        &mut out,
        "prereg_station_paused",
        "gauge",
        "1 while the operator has paused the station.",
    );
    let _ = writeln!(out, "prereg_station_paused {}", u8::from(s.paused));
    header(
        &mut out,
        "prereg_station_draining",
        "gauge",
        "1 while the station drains.",
    );
    let _ = writeln!(out, "prereg_station_draining {}", u8::from(s.draining));

    let lock = crate::memlock::stats();
    header(
        &mut out,
        "prereg_secret_pages_locked",
        "gauge",
        "Memory pages holding secrets that are locked (mlock) now.",
    );
    let _ = writeln!(out, "prereg_secret_pages_locked {}", lock.pages);
    header(
        &mut out,
        "prereg_secret_pages_locked_peak",
        "gauge",
        "Most secret pages locked at once since start (size LimitMEMLOCK from this).",
    );
    let _ = writeln!(out, "prereg_secret_pages_locked_peak {}", lock.peak);
    header(
        &mut out,
        "prereg_secret_lock_failures_total",
        "counter",
        "Secret pages the OS refused to lock (RLIMIT_MEMLOCK reached or not permitted).",
    );
    let _ = writeln!(out, "prereg_secret_lock_failures_total {}", lock.failures);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::board::{Outcome, ResultRecord, SlotView};
    use std::time::Duration;

    #[test]
    fn renders_counters_histograms_and_escapes() {
        let b = StatusBoard::new("s", 2);
        b.slot_update(1, SlotView::new(SlotState::Pass));
        b.record_step("make\"Credential\\", Duration::from_millis(300));
        b.record_result(ResultRecord {
            slot: 1,
            outcome: Outcome::Programmed,
            serial: None,
            job: None,
            step: None,
            error: None,
            duration: Duration::from_secs(3),
        });
        b.set_queue_counts([("queued", 4)]);
        let m = render(&b);
        assert!(m.contains(
            "# TYPE prereg_keys_programmed_total counter\nprereg_keys_programmed_total 1\n"
        ));
        assert!(m.contains(
            "prereg_step_duration_seconds_bucket{step=\"make\\\"Credential\\\\\",le=\"0.25\"} 0\n"
        ));
        assert!(m.contains(
            "prereg_step_duration_seconds_bucket{step=\"make\\\"Credential\\\\\",le=\"0.5\"} 1\n"
        ));
        assert!(m.contains("prereg_job_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(m.contains("prereg_job_duration_seconds_count 1\n"));
        assert!(m.contains("prereg_queue_jobs{state=\"queued\"} 4\n"));
        assert!(m.contains("prereg_slot_state{slot=\"1\",state=\"pass\"} 1\n"));
        assert!(m.contains("prereg_slot_state{slot=\"1\",state=\"idle\"} 0\n"));
        assert!(
            m.contains("prereg_rig_up 0\nprereg_rig_configured") || m.contains("prereg_rig_up 0\n")
        );
        assert!(m.ends_with('\n'));
    }

    #[test]
    fn the_token_pool_is_exported_only_with_keys_in_a_token() {
        let b = StatusBoard::new("s", 1);
        assert!(!render(&b).contains("prereg_custody"), "file custody: none");
        b.set_custody(std::sync::Arc::new(|| {
            Some(crate::jose::pkcs11::PoolSnapshot::example())
        }));
        let text = render(&b);
        for line in [
            "prereg_custody_token_calls_total{op=\"derive\"} 1",
            "prereg_custody_token_calls_total{op=\"sign\"} 1",
            "prereg_custody_token_calls_total{op=\"other\"} 0",
            "prereg_custody_token_call_seconds_sum{op=\"derive\"} 0.002",
            "prereg_custody_token_wait_seconds_sum{op=\"derive\"} 0.001",
            "prereg_custody_token_wait_seconds_max{op=\"derive\"} 0.001",
            "prereg_custody_token_blocked_total{op=\"derive\"} 1",
            "prereg_custody_token_no_session_total{op=\"sign\"} 0",
            "prereg_custody_token_sessions_max 4",
            "prereg_custody_token_sessions_opened_total 4",
            "# TYPE prereg_custody_token_calls_total counter",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // A station that is gone reads as none.
        let gone = StatusBoard::new("s", 1);
        gone.set_custody(std::sync::Arc::new(|| None));
        assert!(!render(&gone).contains("prereg_custody"));
    }

    #[test]
    fn upstream_calls_latency_last_poll_and_conflicts_are_exported() {
        let b = StatusBoard::new("s", 1);
        assert!(
            !render(&b).contains("prereg_upstream"),
            "no back end, no series"
        );
        let stats = std::sync::Arc::new(crate::upstream::UpstreamStats::new("https://b/"));
        stats.record("poll", "ok", std::time::Duration::from_millis(250));
        stats.record("result", "conflict", std::time::Duration::from_millis(5));
        stats.poll_ok();
        stats.conflict();
        b.set_upstream(stats);
        let text = render(&b);
        assert!(text.contains("prereg_upstream_calls_total{call=\"poll\",outcome=\"ok\"} 1"));
        assert!(
            text.contains("prereg_upstream_call_seconds_sum{call=\"poll\",outcome=\"ok\"} 0.25")
        );
        assert!(text.contains("prereg_upstream_result_conflicts_total 1"));
        assert!(!text.contains("prereg_upstream_last_poll_success_seconds 0\n"));
        let snap = b.snapshot();
        let up = snap.upstream.unwrap();
        assert_eq!((up.state, up.conflicts), ("up", 1));
    }

    #[test]
    fn delivery_backlog_and_failures_by_reason() {
        let b = StatusBoard::new("s", 1);
        b.set_delivery(
            3,
            vec![crate::web::board::DeliveryFailureView {
                shipment_id: "S1".into(),
                attempts: 2,
                reason: "delivery.sink_refused".into(),
                error: "sink answered 422".into(),
                next_attempt_ms: 0,
            }],
        );
        b.record_delivery_failure("delivery.sink_refused");
        let m = render(&b);
        assert!(m.contains("# TYPE prereg_delivery_pending gauge\nprereg_delivery_pending 3\n"));
        assert!(m.contains("prereg_delivery_failing 1\n"));
        assert!(m.contains("prereg_delivery_failures_total{reason=\"delivery.sink_refused\"} 1\n"));
    }
}
