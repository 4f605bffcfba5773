//! Integration tests: jose.
