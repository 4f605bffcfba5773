//! The four calls of SPEC §12, each with a deadline, timed and counted in
//! [`UpstreamStats`]. Shipment ids reach a URL path or a header only as a
//! [`ShipmentId`] (SPEC §3 grammar), so an id from the back end can never
//! add a path segment, a query or a header line.

use super::http::{Answer, CallError, HttpClient};
use super::stats::UpstreamStats;
use crate::shipment::ShipmentId;
use reqwest::Method;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpstreamError {
    #[error("{call}: {source}")]
    Call {
        call: &'static str,
        #[source]
        source: CallError,
    },
    #[error("{call}: the back end answered {status}")]
    Status { call: &'static str, status: u16 },
    #[error("{call}: the answer is not {what}")]
    BadAnswer {
        call: &'static str,
        what: &'static str,
    },
}

/// What `PUT …/result` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// 2xx: the back end holds this result; the station may purge it.
    Acknowledged,
    /// 409: the back end holds a *different* result for this id. Keep ours,
    /// alert, never purge (SPEC §12).
    Conflict,
}

#[derive(Deserialize)]
struct Offered {
    shipments: Vec<serde_json::Value>,
}

/// A client of one back end.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    http: HttpClient,
    station_id: String,
    stats: Arc<UpstreamStats>,
}

impl UpstreamClient {
    pub fn new(http: HttpClient, station_id: impl Into<String>, stats: Arc<UpstreamStats>) -> Self {
        UpstreamClient {
            http,
            station_id: station_id.into(),
            stats,
        }
    }

    pub fn stats(&self) -> &Arc<UpstreamStats> {
        &self.stats
    }

    /// The base URL, for logs and the audit trail.
    pub fn base(&self) -> &str {
        self.http.base().as_str()
    }

    fn call(
        &self,
        call: &'static str,
        method: Method,
        url: reqwest::Url,
        headers: &[(&'static str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, UpstreamError> {
        let t0 = Instant::now();
        let answer = self.http.send(method, url, headers, body);
        let outcome = match &answer {
            Ok(a) if a.is_success() => "ok",
            Ok(a) if a.status == 409 => "conflict",
            Ok(a) if (400..500).contains(&a.status) => "status_4xx",
            Ok(a) if (500..600).contains(&a.status) => "status_5xx",
            Ok(_) => "status_other",
            Err(e) => e.outcome(),
        };
        self.stats.record(call, outcome, t0.elapsed());
        let answer = answer.map_err(|source| UpstreamError::Call { call, source });
        if let Err(e) = &answer {
            self.stats.error(e.to_string());
        }
        answer
    }

    fn expect_2xx(&self, call: &'static str, a: Answer) -> Result<Answer, UpstreamError> {
        if a.is_success() {
            Ok(a)
        } else {
            let e = UpstreamError::Status {
                call,
                status: a.status,
            };
            self.stats.error(e.to_string());
            Err(e)
        }
    }

    /// `GET {base}/v1/shipments?state=locked&station=ID&limit=N`: the raw
    /// shipment objects (each is parsed and checked by intake).
    pub fn locked_shipments(&self, limit: u32) -> Result<Vec<serde_json::Value>, UpstreamError> {
        let mut url = self.http.url(&["v1", "shipments"]);
        url.query_pairs_mut()
            .append_pair("state", "locked")
            .append_pair("station", &self.station_id)
            .append_pair("limit", &limit.to_string());
        let a = self.call("poll", Method::GET, url, &[], None)?;
        let a = self.expect_2xx("poll", a)?;
        let offered: Offered =
            serde_json::from_slice(&a.body).map_err(|_| UpstreamError::BadAnswer {
                call: "poll",
                what: "{\"shipments\": [...]}",
            })?;
        self.stats.poll_ok();
        Ok(offered.shipments)
    }

    /// `POST {base}/v1/shipments/{id}/ack` after the job is durably imported.
    pub fn ack(&self, id: &ShipmentId, request_digests: &[String]) -> Result<(), UpstreamError> {
        let body = serde_json::json!({
            "station_id": self.station_id,
            "request_digests": request_digests,
        });
        let url = self.http.url(&["v1", "shipments", id.as_str(), "ack"]);
        let a = self.call(
            "ack",
            Method::POST,
            url,
            &[],
            Some(body.to_string().into_bytes()),
        )?;
        self.expect_2xx("ack", a).map(drop)
    }

    /// `POST {base}/v1/shipments/{id}/refusal` for a job refused at intake.
    pub fn refusal(&self, id: &ShipmentId, code: &str, message: &str) -> Result<(), UpstreamError> {
        let body = serde_json::json!({
            "station_id": self.station_id,
            "code": code,
            "message": message,
        });
        let url = self.http.url(&["v1", "shipments", id.as_str(), "refusal"]);
        let a = self.call(
            "refusal",
            Method::POST,
            url,
            &[],
            Some(body.to_string().into_bytes()),
        )?;
        self.expect_2xx("refusal", a).map(drop)
    }

    /// `PUT {base}/v1/shipments/{id}/result` with `Idempotency-Key: {id}`.
    pub fn put_result(
        &self,
        id: &ShipmentId,
        result_json: &str,
    ) -> Result<PutOutcome, UpstreamError> {
        let url = self.http.url(&["v1", "shipments", id.as_str(), "result"]);
        let a = self.call(
            "result",
            Method::PUT,
            url,
            &[("Idempotency-Key", id.as_str())],
            Some(result_json.as_bytes().to_vec()),
        )?;
        if a.status == 409 {
            self.stats.conflict();
            self.stats.error(format!(
                "result: the back end holds a different result for shipment {id} (409); kept, not purged"
            ));
            return Ok(PutOutcome::Conflict);
        }
        self.expect_2xx("result", a)
            .map(|_| PutOutcome::Acknowledged)
    }
}
