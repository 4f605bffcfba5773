//! CTAPHID framing and channel (CTAP 2.1 §11.2).
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
