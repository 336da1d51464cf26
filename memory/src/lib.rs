//! Memory for model-sized vectors: stored vectors read through read-only maps of their blob
//! files ([`stored`]), giving the C allocator's free memory back to the system, large
//! vectors backed by huge pages ([`alloc`]), and large files written past the page cache or
//! with their writeback started early ([`writeback`]).
//!
//! The rest of the workspace forbids `unsafe` code. This crate denies it too, but for a few
//! calls, each allowed where it is made and argued there: mapping a blob file, `malloc_trim`,
//! `mallopt`, `sysconf`, `madvise` and `sync_file_range`.

pub mod alloc;
pub mod stored;
pub mod writeback;

pub use alloc::{limit_heaps_to_cores, trim, vec_with_huge_pages};
pub use stored::{StoredVector, le_bytes};
pub use writeback::{DirectFile, start_writeback};
