//! The simulated YubiKey (SPEC §10).
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
