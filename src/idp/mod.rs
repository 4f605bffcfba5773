//! The reference identity provider: enroll (make jobs) and activate (verify results).
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
