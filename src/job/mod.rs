//! Jobs: PIN generation and the programming recipe (SPEC §7). The job wire
//! model and its intake rules are in [`crate::shipment`].

pub mod pin;
pub mod recipe;
