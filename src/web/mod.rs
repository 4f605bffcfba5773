//! The operator's view of the station: a status page with one tile per slot
//! (live over server-sent events), pause/drain controls, `/metrics` in the
//! Prometheus text format and `/healthz`. See `docs/operator.md`.
//!
//! The station owns a [`StatusBoard`] and updates it; the web server only
//! reads it (and flips the pause/drain [`Controls`]).

pub mod board;
pub mod metrics;
pub mod server;

pub use board::{BoardSnapshot, Controls, Outcome, ResultRecord, SlotState, SlotView, StatusBoard};
pub use server::{
    read_token_file, serve, spawn, WebConfig, WebConfigError, WebError, WebHandle, WebServer,
    DEFAULT_LISTEN,
};
