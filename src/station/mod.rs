//! The station: supervisor, one worker per slot, slot state machine.
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
