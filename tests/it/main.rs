//! The one integration-test binary (ripgrep style): one module per area, all
//! driving the public API and the built binary.

mod util;

mod cli;
mod cli_ops;
mod ctap;
mod fleet;
mod hil;
mod hsm;
mod hsm_process;
mod intake;
mod jose;
mod pcsc;
mod rig;
mod sim;
mod sim_ext;
mod station;
mod trussed;
mod upstream;
mod wire;
