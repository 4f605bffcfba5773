//! # prereg-station
//!
//! Programs pre-registered FIDO security keys on a fulfillment rig: decrypts an
//! identity provider's PIN and credential requests, drives a blank YubiKey over
//! CTAPHID and CTAP 2.1, and returns signed-then-encrypted responses. The
//! contract is `SPEC.md`; the architecture is `docs/ARCHITECTURE.md`.
//!
//! ## Layout
//!
//! | module | job |
//! |---|---|
//! | [`secret`] | `Secret<T>`: zeroized on drop, redacted in `Debug`, read via `expose` |
//! | [`cbor`] | canonical CTAP2 CBOR encoder and strict decoder |
//! | [`transport`] | 64-byte HID report transports: hidapi, UDP bridge, in-memory |
//! | [`ctaphid`] | CTAPHID packets, fragmentation, reassembly, INIT/CBOR/MSG/KEEPALIVE |
//! | [`ctap2`] | the CTAP 2.1 client, one file per command |
//! | [`pin`] | PIN/UV auth protocols one and two |
//! | [`pcsc`] | keys over PC/SC: APDUs, CTAP over NFC/CCID, management app, vpcd virtual card |
//! | [`yubikey`] | YubiKey device info TLVs over vendor command 0xC2 |
//! | [`profile`] | firmware profiles (`firmware-profiles/*.toml`) |
//! | [`sim`] | the simulated YubiKey, fault injection and the UDP bridge server |
//! | [`shipment`] | the job (SPEC §3) and result (SPEC §6) wire model |
//! | [`jose`] | station key custody, JWE decryption, JWS-in-JWE responses |
//! | [`webauthn`] | clientDataJSON and attestation verification |
//! | [`idp`] | the reference IdP (enroll, activate) |
//! | [`config`] | station configuration |
//! | [`job`] | job model, validation and the programming recipe |
//! | [`store`] | SQLite job store |
//! | [`station`] | supervisor and slot workers |
//! | [`rig`] | rig controller protocol and drivers |
//! | [`web`] | status page and metrics |
//! | [`cli`], [`error`], [`hardening`], [`memlock`] | command line, exit codes, process hardening, locked secret pages |
//! | [`escape`] | untrusted strings escaped for logs and terminals |

pub mod cbor;
pub mod cli;
pub mod config;
pub mod ctap2;
pub mod ctaphid;
pub mod error;
pub mod escape;
pub mod hardening;
pub mod idp;
pub mod job;
pub mod jose;
pub mod memlock;
pub mod pcsc;
pub mod pin;
pub mod profile;
pub mod rig;
pub mod secret;
pub mod shipment;
pub mod sim;
pub mod station;
pub mod store;
pub mod transport;
pub mod upstream;
pub mod web;
pub mod webauthn;
pub mod yubikey;
