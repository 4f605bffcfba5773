//! Standard output and standard error for the command line, without panics.
//!
//! Rust ignores SIGPIPE, so a write to a pipe whose reader has gone (`jobs list
//! | head`) returns EPIPE, and `println!` turns that into a panic (exit 101).
//! Every report the CLI prints goes through `outln!` / `out!` instead
//! (`clippy::print_stdout` is denied in `cli`, so a stray `println!` fails the lint).
//!
//! Why not restore SIGPIPE's default action in `main` instead? Because the
//! same binary is the daemon: systemd starts services with SIGPIPE ignored
//! (`IgnoreSIGPIPE=yes`) so that a journald restart, which breaks the stream
//! socket behind stdout/stderr, cannot kill a station halfway through
//! programming a key. A default SIGPIPE would undo that for every command.
//!
//! What happens instead: the first failed write marks the output lost, later
//! writes are dropped, and the command runs to its end as if it had been read.
//! A closed stdout never changes what a command *does* (a demo still removes
//! its temporary directory, a reset still completes), only who sees its report.
//! A reader that closed the pipe (EPIPE) asked for that: the exit code is the
//! command's own. Any other write error (disk full, I/O error) loses output the
//! user wanted: it is said once on stderr and `main` exits 1 ([`lost_output`]).
//!
//! Standard error gets the same treatment without the exit code: there is
//! nowhere left to report a failure to write it. (The tracing subscriber also
//! writes to stderr and already ignores write errors.)

use std::fmt;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicU8, Ordering};

const OK: u8 = 0;
/// The reader went away (EPIPE): quiet.
const CLOSED: u8 = 1;
/// Any other write error: reported once, exit 1.
const FAILED: u8 = 2;

static STDOUT: AtomicU8 = AtomicU8::new(OK);

/// Writes to stdout; what `out!` and `outln!` expand to.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    if STDOUT.load(Ordering::Relaxed) != OK {
        return;
    }
    let mut out = std::io::stdout().lock();
    // stdout is line-buffered: an EPIPE shows up at the flush of a line, so
    // flush here to see it at the write that caused it.
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            STDOUT.store(CLOSED, Ordering::Relaxed);
        } else if STDOUT.swap(FAILED, Ordering::Relaxed) == OK {
            write_stderr(format_args!(
                "prereg-station: cannot write to standard output: {e}\n"
            ));
        }
    }
}

/// Writes to stderr, ignoring errors (there is nowhere left to report them).
pub fn write_stderr(args: fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Whether stdout lost output the user wanted (a write error other than EPIPE):
/// `main` then exits 1 even if the command itself succeeded.
pub fn lost_output() -> bool {
    STDOUT.load(Ordering::Relaxed) == FAILED
}

/// `print!` that never panics (see the module docs).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that never panics (see the module docs).
macro_rules! outln {
    () => {
        $crate::cli::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics (see the module docs).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints `value` as one compact JSON document on one line: the `--json`
/// convention of every command (docs/cli.md). A command that reports a list
/// prints one line per item (JSON lines); one that reports one thing prints
/// one line.
pub fn json_line<T: serde::Serialize + ?Sized>(value: &T) {
    // Serializing plain data (maps with string keys) cannot fail; an empty
    // object keeps the one-document-per-line promise if it ever did.
    let line = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    write_stdout(format_args!("{line}\n"));
}
