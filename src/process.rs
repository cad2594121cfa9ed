//! What the process does to keep secrets out of reach of other processes: opened OTP secrets
//! and keys live in its memory for microseconds to hours, and a core dump or a debugger
//! attached by the same user would read them. So, at start, no core dumps (`RLIMIT_CORE` 0)
//! and not dumpable (`PR_SET_DUMPABLE` 0, which also refuses `ptrace` by the same user and
//! makes `/proc/<pid>/mem` root's alone). `process.allow_core_dumps` lets an operator who
//! debugs a crash turn both off.

/// Applies the protection (or, with `allow_core_dumps`, leaves the process as it is).
pub fn protect_memory(allow_core_dumps: bool) {
    if allow_core_dumps {
        tracing::warn!(
            "process.allow_core_dumps is on: a core dump or a debugger can read secrets in memory"
        );
        return;
    }
    let limited = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let undumpable = set_undumpable();
    match (limited, undumpable) {
        (Ok(()), Ok(())) => tracing::info!("no core dumps; the process is not dumpable"),
        (limited, undumpable) => tracing::warn!(
            core_limit = ?limited.err(),
            dumpable = ?undumpable.err(),
            "could not protect the process's memory from dumps"
        ),
    }
}

#[cfg(target_os = "linux")]
fn set_undumpable() -> nix::Result<()> {
    nix::sys::prctl::set_dumpable(false)
}

#[cfg(not(target_os = "linux"))]
fn set_undumpable() -> nix::Result<()> {
    Ok(())
}

/// Whether the process is dumpable now (Linux; elsewhere `true`).
pub fn is_dumpable() -> bool {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::get_dumpable().unwrap_or(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Run in the unit test process itself: `PR_SET_DUMPABLE` is per process, and the real
    /// binary's can only be read from inside it.
    #[test]
    fn protection_makes_the_process_undumpable_and_coreless() {
        protect_memory(false);
        assert!(!is_dumpable());
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
    }
}
