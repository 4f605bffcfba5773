//! Integration tests: ctap.
