//! Station configuration (SPEC §11): parsed raw, validated once into typed values.
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
