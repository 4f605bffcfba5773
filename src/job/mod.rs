//! Jobs: model, validation, binding checks and the programming recipe (SPEC §3, §7).
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
