//! The coordinator's memory: stored vectors read through read-only maps of their blob files
//! ([`stored`]), and the C allocator's treatment of large blocks ([`alloc`]).
//!
//! The rest of the workspace forbids `unsafe` code. This crate denies it too, but for two
//! calls, each allowed where it is made and argued there: mapping a blob file, and setting
//! glibc's mmap threshold.

pub mod alloc;
pub mod stored;

pub use alloc::release_large_blocks;
pub use stored::{StoredVector, le_bytes};
