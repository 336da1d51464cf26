//! Writing large files without the page cache's cost: starting writeback of part of a file
//! without waiting for it ([`start_writeback`]), and writing past the page cache altogether
//! ([`DirectFile`]).
//!
//! A blob streamed to disk is acknowledged only after its fsync, which waits for every page
//! still dirty. Asking for writeback as the bytes arrive lets the disk write them while the
//! rest is still being received, so the final fsync finds little left to do. `fdatasync` on
//! the partial file does the same but waits for the disk, stalling the writer (and, once its
//! queue is full, the upload) for the whole flush; `sync_file_range(SYNC_FILE_RANGE_WRITE)`
//! only queues the pages' I/O and returns. It makes nothing durable on its own: it does not
//! write the file's metadata nor flush the disk's cache, so the fsync stays.
//!
//! Copying into the page cache is itself the dearest part of a large buffered write here:
//! measured in `bench_rounds`, about 100 ms of CPU per 64 MB once the page cache is busy
//! (allocating, charging and later reclaiming its pages), as much as hashing and receiving the
//! bytes together. [`DirectFile`] writes whole aligned blocks with `O_DIRECT` instead: the
//! disk reads them straight from one aligned buffer, at almost no CPU. Its pages are then not
//! cached, so the first read of such a file goes to the disk.
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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

/// Alignment of a direct write's buffer, offset and length: the largest logical block size
/// of common disks.
pub const DIRECT_ALIGN: usize = 4096;

/// Bytes a [`DirectFile`] gathers before it writes them in one direct write.
pub const DIRECT_BLOCK: usize = 2 << 20;

/// A new file written past the page cache (`O_DIRECT`, Linux) in whole [`DIRECT_BLOCK`]s
/// gathered in one aligned buffer; the last partial block goes through the page cache.
/// Asked not to, or where the file system refuses direct I/O (tmpfs, some network file
/// systems) at the open or at a write, it writes through the page cache, starting writeback
/// every [`DIRECT_BLOCK`] ([`start_writeback`]). Nothing is durable before [`Self::finish`].
pub struct DirectFile {
    path: PathBuf,
    file: File,
    direct: bool,
    /// `DIRECT_BLOCK` bytes from `start`, aligned to `DIRECT_ALIGN` (only when direct).
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// Bytes in the file, and how many of them writeback was started for (buffered mode).
    written: u64,
    started: u64,
}

impl DirectFile {
    /// Create `path` (truncating it), for direct writes if `direct` and the file system allows
    /// them, through the page cache otherwise.
    pub fn create(path: &Path, direct: bool) -> io::Result<Self> {
        let direct = if direct { open_direct(path) } else { None };
        let (file, direct) = match direct {
            Some(f) => (f, true),
            None => (File::create(path)?, false),
        };
        let (buf, start) = if direct {
            let buf = vec![0u8; DIRECT_BLOCK + DIRECT_ALIGN];
            let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
            (buf, start)
        } else {
            (Vec::new(), 0)
        };
        Ok(Self {
            path: path.to_owned(),
            file,
            direct,
            buf,
            start,
            filled: 0,
            written: 0,
            started: 0,
        })
    }

    /// Whether the file is being written past the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Append `bytes`.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if !self.direct {
                // Asked for, or direct I/O refused (possibly at the last block).
                return self.write_buffered(bytes);
            }
            let n = (DIRECT_BLOCK - self.filled).min(bytes.len());
            let at = self.start + self.filled;
            self.buf[at..at + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == DIRECT_BLOCK {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    /// Write the gathered block directly; on a refusal of direct I/O, through the page cache.
    fn flush_block(&mut self) -> io::Result<()> {
        let block = &self.buf[self.start..self.start + self.filled];
        match self.file.write_all_at(block, self.written) {
            Ok(()) => {
                self.written += self.filled as u64;
                self.filled = 0;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                self.fall_back_to_buffered()?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Carry on through the page cache: a handle without `O_DIRECT`, the gathered bytes
    /// written through it.
    fn fall_back_to_buffered(&mut self) -> io::Result<()> {
        self.file = OpenOptions::new().write(true).open(&self.path)?;
        self.direct = false;
        self.started = self.written;
        let pending = std::mem::take(&mut self.buf);
        let (start, filled) = (self.start, self.filled);
        self.filled = 0;
        self.write_buffered(&pending[start..start + filled])
    }

    fn write_buffered(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.written)?;
        self.written += bytes.len() as u64;
        if self.written - self.started >= DIRECT_BLOCK as u64 {
            // A hint: where the file system does not take it, the fsync does all the work.
            let _ = start_writeback(&self.file, self.started, self.written - self.started);
            self.started = self.written;
        }
        Ok(())
    }

    /// Write what is left (a partial block, through the page cache) and fsync the file.
    /// Returns the file's length.
    pub fn finish(mut self) -> io::Result<u64> {
        if self.direct && self.filled > 0 {
            self.fall_back_to_buffered()?;
        }
        self.file.sync_all()?;
        Ok(self.written)
    }
}

/// `path` created for direct writes, or `None` where that is refused.
fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
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

    /// Direct I/O refused in the middle of a file, with part of a block gathered: the file
    /// carries on through the page cache and holds exactly what was written.
    #[test]
    fn a_direct_file_refused_midway_carries_on_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..3 * DIRECT_BLOCK + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut f = DirectFile::create(&path, true).unwrap();
        let (first, rest) = data.split_at(DIRECT_BLOCK + DIRECT_BLOCK / 2 + 3);
        f.write(first).unwrap();
        if f.is_direct() {
            f.fall_back_to_buffered().unwrap();
        }
        assert!(!f.is_direct());
        for piece in rest.chunks(700_001) {
            f.write(piece).unwrap();
        }
        assert_eq!(f.finish().unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    /// Sizes around the block and alignment, in whichever mode the temporary folder's file
    /// system allows (and through the page cache after a forced fallback): the file holds
    /// exactly what was written.
    #[test]
    fn a_direct_file_holds_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        for (case, len) in [
            0,
            1,
            4095,
            4096,
            DIRECT_BLOCK - 1,
            DIRECT_BLOCK,
            2 * DIRECT_BLOCK + 4099,
        ]
        .into_iter()
        .enumerate()
        {
            for fallback in [false, true] {
                let path = dir.path().join(format!("buffered-{case}-{fallback}"));
                let data: Vec<u8> = (0..len).map(|i| (i * 3 + case) as u8).collect();
                let mut f = DirectFile::create(&path, false).unwrap();
                assert!(!f.is_direct());
                f.write(&data).unwrap();
                assert_eq!(f.finish().unwrap(), len as u64);
                assert_eq!(std::fs::read(&path).unwrap(), data, "{len} bytes buffered");
                let path = dir.path().join(format!("blob-{case}-{fallback}"));
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + case) as u8).collect();
                let mut f = DirectFile::create(&path, true).unwrap();
                if fallback && f.is_direct() {
                    f.fall_back_to_buffered().unwrap();
                }
                // In pieces of an upload's odd sizes.
                for piece in data.chunks(524_287) {
                    f.write(piece).unwrap();
                }
                assert_eq!(f.finish().unwrap(), len as u64);
                assert_eq!(std::fs::read(&path).unwrap(), data, "{len} bytes");
            }
        }
    }
}
