//! Giving the C allocator's free memory back to the system.
//!
//! glibc's `malloc` serves a block of at least its mmap threshold with a map of its own,
//! returned to the system on `free`. The threshold starts at 128 KiB, but rises to the size of
//! any mapped block freed (up to 32 MiB): after the first parameter chunk is freed, every later
//! chunk comes from the heaps instead, one heap per thread. A coordinator receives and sends
//! thousands of such chunks from many threads, and the heaps keep what the chunks leave
//! fragmented: measured with five 16M-parameter uploads, 60 to 90 MiB of anonymous memory stayed
//! after the uploads and through the close. Fixing the threshold (`mallopt`) gives each chunk
//! its own map, but then every chunk costs a map, its page faults and an unmap: measured once,
//! the 16M-parameter download took 118 ms instead of 72 ms. So the coordinator keeps the
//! heaps' speed while chunks flow and gives their free memory back at the points where a round
//! changes what it holds ([`trim`]: the close's start, before the valuation, and its end).

/// Return the free memory of every heap to the system (`malloc_trim(0)`, which also releases
/// free pages in the middle of a heap). A few milliseconds; does nothing on other C libraries.
/// Returns whether any memory was released.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` only hands the allocator's own free pages back to the system
        // (any thread, any time); it reads and writes no memory of ours.
        #[allow(unsafe_code)]
        let released = unsafe { libc::malloc_trim(0) };
        released == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_heap_memory_is_given_back() {
        // Many blocks below the initial mmap threshold, from the heap, then freed: the top
        // of the heap is free for trim to release (glibc only).
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 64 * 1024]).collect();
        assert_eq!(blocks.iter().map(Vec::len).sum::<usize>(), 4096 * 64 * 1024);
        drop(blocks);
        let released = super::trim();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(released, "256 MiB freed on the heap, none released");
        } else {
            assert!(!released);
        }
    }
}
