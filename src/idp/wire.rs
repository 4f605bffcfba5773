//! The shipment (SPEC §3) and result (SPEC §6) JSON the reference IdP writes
//! and reads: the station's own model in [`crate::shipment`], re-exported so
//! both sides can never drift apart.

pub use crate::shipment::{
    parse_stream, ProductCustomization, ProductData, ResultItem, Shipment, ShipmentItem,
    ShipmentResult, ShipmentState,
};
