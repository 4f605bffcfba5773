//! WebAuthn pieces the station and the IdP share: clientDataJSON, attestation verification.
//!
//! (Being built; see docs/ARCHITECTURE.md for its contract.)
