//! The shipment (SPEC §3) and result (SPEC §6) JSON as the reference IdP
//! writes and reads it, with the public YubiEnterprise field names.
//!
//! Kept here until the station's `crate::shipment` model lands on main; the
//! field names and shapes are the SPEC's, so either model reads the other's JSON.

use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentState {
    pub shipment_state_id: u32,
}

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
