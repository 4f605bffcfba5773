//! JOSE for the station: key custody, request JWE decryption, response JWS-in-JWE.
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
