//! Integration tests: station.
