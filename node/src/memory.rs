//! How the process asks the C allocator for memory. glibc serves a large allocation (an 8 MiB
//! payload, a 16 MiB batch) with its own `mmap` and unmaps it when it is freed, but only up to a
//! threshold that it *raises* to the size of every such block freed (up to 32 MiB). After the first
//! large payload, large buffers therefore come from the heap arenas instead, and freed arena memory
//! is rarely returned: a node moving 8 MiB documents grew to over 1 GiB resident while holding at most
//! a few of them at a time. Fixing the threshold keeps every buffer over it in its own mapping,
//! returned to the system when it is dropped, so resident memory follows what the node holds.

/// Allocations at or above this size get their own mapping (glibc's initial default).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;

/// Fixes glibc's mmap threshold (see the module documentation). Call once, before the runtime
/// starts threads. Elsewhere (musl, other systems) it does nothing.
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread runs.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1 {
            tracing::warn!("cannot fix the allocator's mmap threshold: large buffers may stay resident after use");
        }
    }
}
