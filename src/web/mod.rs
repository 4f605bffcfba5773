//! Operator status page, SSE, /metrics and /healthz.
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
