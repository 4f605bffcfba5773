//! PIN/UV auth protocols one and two (CTAP 2.1 §6.5.6, §6.5.7).
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
