//! The OS name of a thread while it hashes a password.
//!
//! Hashing runs on tokio's blocking pool, whose threads carry the runtime's
//! name ("tokio-rt-worker") like the async workers do, so `top -H` or
//! `perf` cannot tell a login storm's Argon2 from the event loop. A
//! dedicated pool of named threads would, but tokio's paused test clock
//! only waits for work it knows of (`spawn_blocking`): with a pool of its
//! own, every hash would let a paused clock jump to the next deadline. So
//! the blocking thread keeps its place and is renamed for the length of
//! the hash, then given its name back for whatever it runs next.

use std::ffi::CStr;

/// What `top -H`, `ps -L` and `perf` show for a thread that is hashing.
pub const HASHING: &CStr = c"sotto-argon2";

/// While it lives, the calling thread's OS name is [`HASHING`]; dropping
/// it (also while unwinding) restores the name it had.
pub struct Renamed {
    previous: Option<[u8; 16]>,
}

impl Renamed {
    pub fn hashing() -> Renamed {
        let previous = current();
        if previous.is_some() {
            set(HASHING);
        }
        Renamed { previous }
    }
}

impl Drop for Renamed {
    fn drop(&mut self) {
        if let Some(name) = &self.previous
            && let Ok(name) = CStr::from_bytes_until_nul(name)
        {
            set(name);
        }
    }
}

/// The calling thread's OS name (at most 15 bytes and a NUL), or None
/// where it cannot be read (then it is not changed either).
#[cfg(target_os = "linux")]
fn current() -> Option<[u8; 16]> {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into
    // the buffer it is given, which is 16 bytes long and lives across
    // the call.
    let got = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    (got == 0).then_some(name)
}

#[cfg(not(target_os = "linux"))]
fn current() -> Option<[u8; 16]> {
    None
}

/// Names the calling thread; the kernel keeps the first 15 bytes. A
/// failure only leaves the old name, so it is ignored.
#[cfg(target_os = "linux")]
fn set(name: &CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of which it copies
    // at most 16 bytes; `name` is one and outlives the call.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
}

#[cfg(not(target_os = "linux"))]
fn set(_: &CStr) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// What the kernel calls this thread: what `top -H` shows.
    fn shown() -> String {
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        comm.trim_end().to_owned()
    }

    #[test]
    fn renamed_while_it_lives_and_given_back() {
        let before = shown();
        let renamed = Renamed::hashing();
        assert_eq!(shown(), "sotto-argon2");
        drop(renamed);
        assert_eq!(shown(), before);
    }
}
