//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps what a burst freed in its per-thread arenas
//! (and raises its mmap threshold after large frees, so later large
//! buffers come from the arenas too): a node that took 256 uploads at once
//! stayed hundreds of MiB above its idle size. `malloc_trim(0)` releases
//! the free pages of every arena; it is called once a burst is over, not
//! on the hot path. Other allocators (musl, a global allocator chosen by
//! an embedder) are left alone.

/// Release the allocator's free memory to the system, where it can.
pub(crate) fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists,
    // under its own locks; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
