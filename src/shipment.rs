//! The shipment job (SPEC §3) and delivery result (SPEC §6) wire model.
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
