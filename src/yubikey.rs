//! YubiKey device info over the vendor READ_CONFIG command (0xC2).
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
