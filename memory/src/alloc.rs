//! Giving the C allocator's free memory back to the system ([`trim`]) and keeping it to one
//! heap per core ([`limit_heaps_to_cores`]), and large vectors backed by huge pages
//! ([`vec_with_huge_pages`]).
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

/// Limit the C allocator to one heap (arena) per core of this machine (glibc's `M_ARENA_MAX`;
/// its default is eight per core), for the whole process, from this call on.
///
/// Each thread that allocates takes a heap of its own while fewer than the limit exist, and
/// each heap keeps what it frees until [`trim`]. A coordinator's uploads run on the runtime's
/// workers, a writer thread each and the blocking pool: with a hundred 4 MiB uploads at once,
/// measured with `bench_sites --sites 100 --hidden 32000`, the peak anonymous memory of the
/// round was 82.6, 113.5 and 123.8 MiB in three runs with glibc's default and 91.0, 91.8 and
/// 110.0 MiB with two heaps (this machine's two cores), the closes' 77-79 MiB and 59-64 MiB;
/// what one heap frees, the next allocation on any thread can reuse. Returns whether the limit
/// was set (not on other C libraries).
pub fn limit_heaps_to_cores() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let cores = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` sets one of the allocator's own parameters (any thread, any time);
        // it reads and writes no memory of ours.
        #[allow(unsafe_code)]
        let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, cores) };
        set == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

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

/// Vectors smaller than this are allocated as they come: a huge page is 2 MiB, and a vector
/// that cannot hold one whole huge page gains nothing from the hint.
pub const HUGE_PAGES_MIN_BYTES: usize = 4 << 20;

/// An empty vector with room for `capacity` values, whose pages the kernel is asked to back
/// with transparent huge pages (Linux, `madvise(MADV_HUGEPAGE)`) when it is at least
/// [`HUGE_PAGES_MIN_BYTES`].
///
/// Filling fresh memory costs a page fault, a zeroed page and a memory-cgroup charge per 4 KiB:
/// measured here, decoding 64 MB of parameters into a new vector took 27–35 ms with 4 KiB pages
/// and 6–7 ms with huge pages (occasionally far more the first time, while the kernel compacts
/// memory to find 2 MiB blocks). A participant receives the whole global model into such a
/// vector every round. With `transparent_hugepage` set to `never`, or on other systems, this
/// is `Vec::with_capacity`.
pub fn vec_with_huge_pages(capacity: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(capacity);
    let bytes = v.capacity() * size_of::<f32>();
    if bytes >= HUGE_PAGES_MIN_BYTES {
        advise_huge_pages(v.as_mut_ptr().cast(), bytes);
    }
    v
}

/// Ask for huge pages over the whole pages inside `start..start + len`, memory this process
/// owns (a vector's allocation). Returns whether the kernel took the advice.
fn advise_huge_pages(start: *mut u8, len: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sysconf` reads a constant of the system; it touches no memory of ours.
        #[allow(unsafe_code)]
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let skip = start.align_offset(page);
        let whole = len.saturating_sub(skip) / page * page;
        if whole == 0 {
            return false;
        }
        // SAFETY: the range is whole pages inside an allocation the caller owns, so no other
        // object shares them. MADV_HUGEPAGE is advice: it changes neither the contents nor the
        // validity of any address, only the size of the pages the kernel backs them with (and
        // the range's pages are still freed with the allocation, by whoever frees it).
        #[allow(unsafe_code)]
        let r =
            unsafe { libc::madvise(start.wrapping_add(skip).cast(), whole, libc::MADV_HUGEPAGE) };
        r == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (start, len);
        false
    }
}

#[cfg(test)]
mod tests {
    /// Whether the system lets a process ask for transparent huge pages (`madvise` or
    /// `always`, not `never`); `None` where there is no such setting.
    fn thp_allowed() -> Option<bool> {
        let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
        Some(!s.contains("[never]"))
    }

    /// The `THPeligible` line of the mapping holding `addr` in `/proc/self/smaps`.
    fn thp_eligible(addr: usize) -> Option<bool> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&addr);
            } else if inside && let Some(v) = line.strip_prefix("THPeligible:") {
                return Some(v.trim() == "1");
            }
        }
        None
    }

    #[test]
    fn a_large_vector_is_backed_by_huge_pages_where_the_system_allows_them() {
        let n = 8 << 20; // 32 MiB of f32
        let mut v = super::vec_with_huge_pages(n);
        assert!(v.is_empty() && v.capacity() >= n);
        v.extend((0..n).map(|i| i as f32));
        assert_eq!(v[n - 1], (n - 1) as f32);
        let middle = v.as_ptr() as usize + n * 2;
        if cfg!(target_os = "linux")
            && thp_allowed() == Some(true)
            && let Some(eligible) = thp_eligible(middle)
        {
            assert!(
                eligible,
                "the vector's mapping is not eligible for huge pages"
            );
        }
    }

    #[test]
    fn a_small_vector_is_left_as_it_comes() {
        let v = super::vec_with_huge_pages(1000);
        assert!(v.is_empty() && v.capacity() >= 1000);
        // Too short to hold a whole page past its first page boundary: no advice taken.
        let mut small = vec![0u8; 100];
        assert!(!super::advise_huge_pages(small.as_mut_ptr(), small.len()));
    }

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
