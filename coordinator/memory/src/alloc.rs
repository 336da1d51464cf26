//! How the C allocator treats large blocks.
//!
//! glibc's `malloc` serves a block of at least its mmap threshold with a map of its own,
//! returned to the system on `free`. The threshold starts at 128 KiB, but by default it rises
//! to the size of any mapped block freed (up to 32 MiB): after the first 1 MiB parameter chunk
//! is freed, every later chunk comes from the heaps instead. A coordinator receives and sends
//! thousands of such chunks from many threads (one heap each), and the heaps keep what the
//! chunks leave fragmented: measured with five 16M-parameter uploads, 60 to 90 MiB of
//! anonymous memory stayed after every round. A fixed threshold keeps each chunk in a map of
//! its own, so a chunk's memory leaves the process with the chunk.

/// The threshold set by [`release_large_blocks`]: a parameter chunk (1 MiB) is above it.
pub const MMAP_THRESHOLD_BYTES: usize = 512 * 1024;

/// Fix glibc's mmap threshold at [`MMAP_THRESHOLD_BYTES`], so blocks at least that large are
/// mapped and unmapped on their own rather than left in the heaps. Process-wide; does nothing
/// on other C libraries. Returns whether the threshold was set.
pub fn release_large_blocks() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes = i32::try_from(MMAP_THRESHOLD_BYTES).unwrap_or(i32::MAX);
        // SAFETY: `mallopt` only changes the allocator's tuning (any thread, any time); it
        // reads and writes no memory of ours.
        #[allow(unsafe_code)]
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
        set == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_threshold_is_set_on_glibc() {
        let set = super::release_large_blocks();
        assert_eq!(set, cfg!(all(target_os = "linux", target_env = "gnu")));
    }
}
