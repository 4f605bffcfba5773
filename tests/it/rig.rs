//! Integration tests: rig.
