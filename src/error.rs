//! The command-line error boundary: every failure becomes one line that names
//! the cause and what to do, and an exit code (SPEC §11: 1 failed, 2 usage/config).
//!
//! Library layers keep their own typed errors (`thiserror`); only the CLI
//! handlers turn them into a [`CliError`].

use std::fmt;

/// Why a command stopped, and therefore its exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments or configuration (exit 2).
    Usage(String),
    /// The operation failed (exit 1).
    Failed(String),
}

impl CliError {
    /// Exit code of SPEC §11.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }

    pub fn usage(msg: impl fmt::Display) -> Self {
        CliError::Usage(msg.to_string())
    }

    pub fn failed(msg: impl fmt::Display) -> Self {
        CliError::Failed(msg.to_string())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {}

/// What every CLI handler returns.
pub type CliResult = Result<(), CliError>;
