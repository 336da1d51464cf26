//! The coordinator's memory: stored vectors read through read-only maps of their blob files
//! ([`stored`]), and giving the C allocator's free memory back to the system ([`alloc`]).
//!
//! The rest of the workspace forbids `unsafe` code. This crate denies it too, but for two
//! calls, each allowed where it is made and argued there: mapping a blob file, and
//! `malloc_trim`.

pub mod alloc;
pub mod stored;

pub use alloc::trim;
pub use stored::{StoredVector, le_bytes};
