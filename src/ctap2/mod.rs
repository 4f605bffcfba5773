//! The CTAP 2.1 host client: one file per command.
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
