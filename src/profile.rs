//! Firmware profiles (SPEC §8): the station's allow-list and the simulator's script.
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
