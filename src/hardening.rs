//! Process hardening applied at start: no core dumps (a dump would hold PINs and
//! private keys), and no ptrace attach from other processes of the same user.
//! Secret memory is locked page by page as secrets are made
//! ([`crate::memlock`], best effort within `RLIMIT_MEMLOCK`), not here:
//! `mlockall` would count every thread stack and allocator arena against
//! the limit and make ordinary allocations fail once it is reached.

/// Disables core dumps for this process; failures are logged, not fatal,
/// because the systemd unit also sets `LimitCORE=0`.
pub fn apply() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with valid arguments; no memory is shared.
    #[allow(unsafe_code)]
    let (rl, dump) = unsafe {
        (
            libc::setrlimit(libc::RLIMIT_CORE, &zero),
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0),
        )
    };
    if rl != 0 || dump != 0 {
        tracing::warn!("could not disable core dumps (setrlimit {rl}, prctl {dump})");
    }
}
