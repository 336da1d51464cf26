//! Starting the page cache's writeback of part of a file without waiting for it
//! ([`start_writeback`]).
//!
//! A blob streamed to disk is acknowledged only after its fsync, which waits for every page
//! still dirty. Asking for writeback as the bytes arrive lets the disk write them while the
//! rest is still being received, so the final fsync finds little left to do. `fdatasync` on
//! the partial file does the same but waits for the disk, stalling the writer (and, once its
//! queue is full, the upload) for the whole flush; `sync_file_range(SYNC_FILE_RANGE_WRITE)`
//! only queues the pages' I/O and returns. It makes nothing durable on its own: it does not
//! write the file's metadata nor flush the disk's cache, so the fsync stays.

use std::fs::File;
use std::io;

/// Ask the kernel to start writing `len` bytes of `file` from `offset` back to the disk, and
/// return without waiting (Linux `sync_file_range` with `SYNC_FILE_RANGE_WRITE`). Durability
/// still needs an fsync. On other systems it does nothing.
pub fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range beyond the largest file offset",
            ));
        };
        // SAFETY: `sync_file_range` takes a descriptor that `file` keeps open for the call and
        // two integers; it reads and writes no memory of ours.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn writeback_starts_on_written_ranges_and_refuses_impossible_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = File::create(dir.path().join("blob")).unwrap();
        f.write_all(&[7u8; 1 << 20]).unwrap();
        start_writeback(&f, 0, 1 << 20).unwrap();
        // Past the end is allowed (nothing there to write).
        start_writeback(&f, 1 << 20, 1 << 20).unwrap();
        #[cfg(target_os = "linux")]
        assert_eq!(
            start_writeback(&f, u64::MAX, 1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        f.sync_all().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("blob")).unwrap(),
            vec![7u8; 1 << 20]
        );
    }
}
