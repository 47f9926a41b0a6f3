//! How the process asks the C allocator for memory. glibc serves a large allocation (an 8 MiB
//! payload, a 16 MiB batch) with its own `mmap` and unmaps it when it is freed, but only up to a
//! threshold that it *raises* to the size of every such block freed (up to 32 MiB). After the first
//! large payload, large buffers therefore come from the heap arenas instead, and freed arena memory
//! is rarely returned: a node moving 8 MiB documents grew to over 1 GiB resident while holding at most
//! a few of them at a time. Fixing the threshold keeps every buffer over it in its own mapping,
//! returned to the system when it is dropped, so resident memory follows what the node holds.
//!
//! The threshold is fixed at 2 MiB, above an attachment chunk (1 MiB and its framing), so that the
//! buffers of a chunk transfer come from the arenas and are reused: with glibc's initial 128 KiB every
//! chunk buffer (read, encoded, received, decoded) was a fresh mapping, whose pages the kernel faulted
//! in and zeroed and then unmapped, and a relay moving an attachment spent about a fifth of its CPU in
//! those page faults. Payloads of documents (up to 8 MiB and more) and whole batches still get their
//! own mappings. With 2 MiB, 1 GiB crossed two hops 29-57% faster end to end (sixth session,
//! docs/performance.md), for about 20 MiB more peak memory at the city.
//!
//! The smaller buffers, which do live in the arenas, are the other way round: with the threshold
//! fixed, glibc gives back the free memory at the top of an arena as soon as it passes 128 KiB, and
//! the next burst of buffers has the kernel map and zero those pages again. Keeping up to 16 MiB free
//! at the top of each arena avoids that (issue 13, docs/performance.md: +11% per hop and end to end).
//! What is kept was in use a moment before, and large buffers still go back at once.

/// Allocations at or above this size get their own mapping: above an attachment chunk's buffers,
/// below a large document's payload.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 2 * 1024 * 1024;

/// Free memory at the top of an arena is given back to the system only past this much.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_BYTES: libc::c_int = 16 * 1024 * 1024;

/// Fixes glibc's mmap and trim thresholds (see the module documentation). Call once, before the
/// runtime starts threads. Elsewhere (musl, other systems) it does nothing.
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread runs.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1 {
            tracing::warn!("cannot fix the allocator's mmap threshold: large buffers may stay resident after use");
        }
        if libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) != 1 {
            tracing::warn!("cannot set the allocator's trim threshold: small buffers may be mapped again and again");
        }
    }
}
