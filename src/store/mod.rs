//! The SQLite job store on its own thread.
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
