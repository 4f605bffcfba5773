//! Rig controller (SPEC §9): trait, serial line codec, port driver, simulated rig.
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
