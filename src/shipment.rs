//! The shipment job (SPEC §3, modelled on YubiEnterprise `POST /fpr/shipments`)
//! and the delivery result (SPEC §6, the `GET /fpr/shipments/{id}` shape).
//!
//! The station keeps no recipient PII: serde ignores unknown fields here, so
//! recipient and address fields in an order are dropped at parse time and never
//! reach the store. Structural rules are checked once, into a [`Job`]; the
//! encrypted requests inside are only decrypted at recipe step 4.

use crate::escape::Untrusted;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A shipment id that passed the SPEC §3 grammar: 1–64 characters of
/// `[A-Za-z0-9_-]`. It is used as a file name, a log field, a URL path segment
/// and an HTTP header value, so it cannot hold `/`, `.`, whitespace or CR/LF;
/// code that holds one never needs to sanitise it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ShipmentId(String);

impl ShipmentId {
    /// Longest accepted id.
    pub const MAX_LEN: usize = 64;

    /// Checks `raw` against the grammar.
    pub fn parse(raw: &str) -> Result<Self, IntakeRefusal> {
        let ok = (1..=Self::MAX_LEN).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(ShipmentId(raw.to_owned()))
        } else {
            Err(IntakeRefusal::ShipmentId(crate::escape::untrusted(
                &raw.chars().take(80).collect::<String>(),
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ShipmentId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ShipmentId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ShipmentId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl AsRef<str> for ShipmentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShipmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ShipmentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        ShipmentId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for ShipmentId {
    type Err = IntakeRefusal;
    fn from_str(s: &str) -> Result<Self, IntakeRefusal> {
        ShipmentId::parse(s)
    }
}

/// One shipment (`POST /fpr/shipments` body, minus recipient PII).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub shipment_id: String,
    pub shipment_items: Vec<ShipmentItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentItem {
    pub product_id: u32,
    pub inventory_product_id: u32,
    pub product_quantity: u32,
    pub customization_id: String,
    pub product_customizations: Vec<ProductCustomization>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCustomization {
    pub fido_pin_request: String,
    pub fido_credential_requests: Vec<String>,
}

/// One delivered shipment (`GET /fpr/shipments/{id}` shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentResult {
    pub shipment_id: String,
    pub shipment_state: ShipmentState,
    pub shipment_items: Vec<ResultItem>,
}

/// YubiEnterprise shipment state; the station reports 103 once programmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentState {
    pub shipment_state_id: u32,
}

/// `shipment_state_id` of a programmed, ready-to-ship item (SPEC §6).
pub const STATE_PROGRAMMED: u32 = 103;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultItem {
    pub product_id: u32,
    pub product_data: Vec<ProductData>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductData {
    pub serial_number: String,
    pub firmware_version: String,
    pub fido_pin_response: String,
    pub fido_credential_responses: Vec<String>,
}

/// Parses a file holding one JSON object or a JSON-lines stream of them.
pub fn parse_stream<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<Vec<T>, serde_json::Error> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<T>()
        .collect()
}

/// Why a shipment is refused at intake (SPEC §3). Closed; each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeRefusal {
    /// Not 1–64 of `[A-Za-z0-9_-]`; holds the id escaped and cut to 80 chars.
    ShipmentId(String),
    ItemCount(usize),
    Quantity(u32),
    CustomizationCount(usize),
    NoCredentialRequest,
    UnknownProduct(u32),
    UnknownCustomization(String),
    ProductNotInCustomization {
        product_id: u32,
        customization: String,
    },
    /// The shipment id is already known with different content (SPEC §3);
    /// holds what differs. The first job stays as it was.
    Conflict(String),
    /// A request JWE was seen before (SPEC §3 "Replay"); holds which one and where.
    Replayed(String),
}

impl IntakeRefusal {
    /// Stable short code for the store, logs and scripts.
    pub fn code(&self) -> &'static str {
        match self {
            IntakeRefusal::ShipmentId(_) => "intake.shipment_id",
            IntakeRefusal::ItemCount(_) => "intake.item_count",
            IntakeRefusal::Quantity(_) => "intake.quantity",
            IntakeRefusal::CustomizationCount(_) => "intake.customization_count",
            IntakeRefusal::NoCredentialRequest => "intake.no_credential_request",
            IntakeRefusal::UnknownProduct(_) => "intake.unknown_product",
            IntakeRefusal::UnknownCustomization(_) => "intake.unknown_customization",
            IntakeRefusal::ProductNotInCustomization { .. } => {
                "intake.product_not_in_customization"
            }
            IntakeRefusal::Conflict(_) => "intake.conflict",
            IntakeRefusal::Replayed(_) => "request.replayed",
        }
    }
}

impl fmt::Display for IntakeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code();
        match self {
            IntakeRefusal::ShipmentId(id) => write!(
                f,
                "{code}: shipment_id \"{id}\" is not 1-64 characters of A-Z a-z 0-9 _ -"
            ),
            IntakeRefusal::ItemCount(n) => {
                write!(
                    f,
                    "{code}: {n} shipment items; this station takes exactly 1 per shipment"
                )
            }
            IntakeRefusal::Quantity(q) => write!(f, "{code}: product_quantity {q}, must be 1"),
            IntakeRefusal::CustomizationCount(n) => {
                write!(f, "{code}: {n} product customizations, must be exactly 1")
            }
            IntakeRefusal::NoCredentialRequest => {
                write!(f, "{code}: at least one credential request is required")
            }
            IntakeRefusal::UnknownProduct(p) => {
                write!(f, "{code}: product_id {p} is not in any firmware profile")
            }
            // The customization id is not checked against a grammar, so it
            // is escaped: this text is logged, stored and printed.
            IntakeRefusal::UnknownCustomization(c) => {
                write!(
                    f,
                    "{code}: customization {} is not configured on this station",
                    Untrusted(c)
                )
            }
            IntakeRefusal::ProductNotInCustomization {
                product_id,
                customization,
            } => write!(
                f,
                "{code}: product_id {product_id} is not allowed by customization {}",
                Untrusted(customization)
            ),
            IntakeRefusal::Conflict(what) => write!(
                f,
                "{code}: shipment_id already known with different {what}; the first job stays as it was"
            ),
            IntakeRefusal::Replayed(what) => write!(f, "{code}: {what}"),
        }
    }
}

/// A structurally valid job: one shipment item, one physical key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub shipment_id: ShipmentId,
    pub product_id: u32,
    pub inventory_product_id: u32,
    pub customization_id: String,
    /// Compact JWE, `cty` prereg.pin-request.v1 (still encrypted).
    pub pin_request: String,
    /// Compact JWEs, `cty` prereg.cred-request.v1 (still encrypted).
    pub credential_requests: Vec<String>,
}

impl Job {
    /// The SHA-256 digests (base64url) of the job's request JWEs, PIN request
    /// first, in order: the same `requestDigest` every response carries
    /// (SPEC §5). Intake compares jobs and detects replays on these (SPEC §3).
    pub fn request_digests(&self) -> Vec<String> {
        std::iter::once(&self.pin_request)
            .chain(&self.credential_requests)
            .map(|jwe| crate::jose::response::request_digest(jwe))
            .collect()
    }
}

/// What a shipment is, for telling a re-import from a conflict (SPEC §3): the
/// product, the customization and the requests (by digest). Whitespace and
/// field order in the file, and ignored fields such as recipient PII, do not
/// count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobContent {
    pub product_id: u32,
    pub inventory_product_id: u32,
    pub customization_id: String,
    /// [`Job::request_digests`] order: each customization's PIN request, then
    /// its credential requests.
    pub request_digests: Vec<String>,
}

impl JobContent {
    /// Names the first part that differs from `other`, if any.
    pub fn difference(&self, other: &JobContent) -> Option<&'static str> {
        if self.product_id != other.product_id {
            Some("product_id")
        } else if self.inventory_product_id != other.inventory_product_id {
            Some("inventory_product_id")
        } else if self.customization_id != other.customization_id {
            Some("customization_id")
        } else if self.request_digests != other.request_digests {
            Some("requests")
        } else {
            None
        }
    }
}

impl From<&Job> for JobContent {
    fn from(job: &Job) -> Self {
        JobContent {
            product_id: job.product_id,
            inventory_product_id: job.inventory_product_id,
            customization_id: job.customization_id.clone(),
            request_digests: job.request_digests(),
        }
    }
}

impl From<&Shipment> for JobContent {
    /// A shipment that may have failed validation: its first item, and every
    /// request it holds. For a valid shipment this equals the job's content.
    fn from(s: &Shipment) -> Self {
        let item = s.shipment_items.first();
        JobContent {
            product_id: item.map_or(0, |i| i.product_id),
            inventory_product_id: item.map_or(0, |i| i.inventory_product_id),
            customization_id: item.map_or_else(String::new, |i| i.customization_id.clone()),
            request_digests: s
                .shipment_items
                .iter()
                .flat_map(|i| &i.product_customizations)
                .flat_map(|c| {
                    std::iter::once(&c.fido_pin_request).chain(&c.fido_credential_requests)
                })
                .map(|jwe| crate::jose::response::request_digest(jwe))
                .collect(),
        }
    }
}

/// What intake needs to know about the station (from its configuration).
pub trait IntakePolicy {
    /// Whether `product_id` is known to the firmware profiles.
    fn product_known(&self, product_id: u32) -> bool;
    /// `Some(allowed products)` when the customization is configured.
    fn customization_products(&self, customization_id: &str) -> Option<Vec<u32>>;
}

impl Shipment {
    /// Applies the rules of SPEC §3; the first violation names the reason.
    pub fn validate(&self, policy: &dyn IntakePolicy) -> Result<Job, IntakeRefusal> {
        let shipment_id = ShipmentId::parse(&self.shipment_id)?;
        let [item] = self.shipment_items.as_slice() else {
            return Err(IntakeRefusal::ItemCount(self.shipment_items.len()));
        };
        if item.product_quantity != 1 {
            return Err(IntakeRefusal::Quantity(item.product_quantity));
        }
        let [custom] = item.product_customizations.as_slice() else {
            return Err(IntakeRefusal::CustomizationCount(
                item.product_customizations.len(),
            ));
        };
        if custom.fido_credential_requests.is_empty() {
            return Err(IntakeRefusal::NoCredentialRequest);
        }
        if !policy.product_known(item.product_id) {
            return Err(IntakeRefusal::UnknownProduct(item.product_id));
        }
        let allowed = policy
            .customization_products(&item.customization_id)
            .ok_or_else(|| IntakeRefusal::UnknownCustomization(item.customization_id.clone()))?;
        if !allowed.is_empty() && !allowed.contains(&item.product_id) {
            return Err(IntakeRefusal::ProductNotInCustomization {
                product_id: item.product_id,
                customization: item.customization_id.clone(),
            });
        }
        Ok(Job {
            shipment_id,
            product_id: item.product_id,
            inventory_product_id: item.inventory_product_id,
            customization_id: item.customization_id.clone(),
            pin_request: custom.fido_pin_request.clone(),
            credential_requests: custom.fido_credential_requests.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Policy;
    impl IntakePolicy for Policy {
        fn product_known(&self, p: u32) -> bool {
            [1, 2, 3, 29].contains(&p)
        }
        fn customization_products(&self, c: &str) -> Option<Vec<u32>> {
            (c == "C19881").then(|| vec![1, 29])
        }
    }

    fn shipment() -> Shipment {
        serde_json::from_str(
            r#"{"shipment_id":"S1","recipient":"Jan Lindberg","delivery_address":{"city":"x"},
            "shipment_items":[{"product_id":1,"inventory_product_id":106,"product_quantity":1,
            "customization_id":"C19881","product_customizations":[{"fido_pin_request":"a.b.c.d.e",
            "fido_credential_requests":["f.g.h.i.j"]}]}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn pii_is_dropped_and_a_valid_shipment_becomes_a_job() {
        let s = shipment();
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("Lindberg") && !text.contains("city"));
        let job = s.validate(&Policy).unwrap();
        assert_eq!(job.product_id, 1);
        assert_eq!(job.credential_requests.len(), 1);
    }

    #[test]
    fn each_rule_has_its_reason() {
        type Mutation = fn(&mut Shipment);
        let cases: Vec<(Mutation, &str)> = vec![
            (|s| s.shipment_id.clear(), "intake.shipment_id"),
            (|s| s.shipment_id = "COLL.1".into(), "intake.shipment_id"),
            (|s| s.shipment_id = "a\r\nX: y".into(), "intake.shipment_id"),
            (|s| s.shipment_id = "../etc".into(), "intake.shipment_id"),
            (|s| s.shipment_id = "x".repeat(65), "intake.shipment_id"),
            (|s| s.shipment_id = "S\u{e9}".into(), "intake.shipment_id"),
            (|s| s.shipment_items.clear(), "intake.item_count"),
            (
                |s| s.shipment_items[0].product_quantity = 2,
                "intake.quantity",
            ),
            (
                |s| s.shipment_items[0].product_customizations.clear(),
                "intake.customization_count",
            ),
            (
                |s| {
                    s.shipment_items[0].product_customizations[0]
                        .fido_credential_requests
                        .clear()
                },
                "intake.no_credential_request",
            ),
            (
                |s| s.shipment_items[0].product_id = 99,
                "intake.unknown_product",
            ),
            (
                |s| s.shipment_items[0].customization_id = "C1".into(),
                "intake.unknown_customization",
            ),
            (
                |s| s.shipment_items[0].product_id = 3,
                "intake.product_not_in_customization",
            ),
        ];
        for (mutate, code) in cases {
            let mut s = shipment();
            mutate(&mut s);
            assert_eq!(s.validate(&Policy).unwrap_err().code(), code);
        }
    }

    #[test]
    fn shipment_id_grammar() {
        for ok in ["S1", "U89bvfKKCtQfhnqaFBrAZW", "a-b_c", &"x".repeat(64)] {
            assert_eq!(ShipmentId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            " S1",
            "S1\n",
            "a/b",
            "a.b",
            "C:\\x",
            "%2e",
            &"x".repeat(65),
        ] {
            assert!(ShipmentId::parse(bad).is_err(), "{bad:?}");
        }
        let refusal = ShipmentId::parse("a\r\nInjected: 1")
            .unwrap_err()
            .to_string();
        assert!(
            !refusal.contains('\n') && !refusal.contains('\r'),
            "{refusal}"
        );
        assert!(serde_json::from_str::<ShipmentId>("\"a.b\"").is_err());
    }

    #[test]
    fn json_lines_streams_parse() {
        let one = serde_json::to_string(&shipment()).unwrap();
        let text = format!("{one}\n{one}\n");
        assert_eq!(parse_stream::<Shipment>(&text).unwrap().len(), 2);
    }
}
