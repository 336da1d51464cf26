//! The log over HTTP in the C2SP tlog-tiles layout: a read-only server for a [`crate::Log`]
//! (the coordinator's, or a replica's when configured) and the client participants and
//! monitors fetch tiles with.
//!
//! - `server`: [`serve_tiles`] answers `GET`/`HEAD` of `checkpoint` (the latest checkpoint
//!   cosigned by the genesis quorum of witnesses, `text/plain; charset=utf-8`, not cached),
//!   `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]` (`application/octet-stream`,
//!   immutable), reading the store on the blocking pool.
//! - `client`: [`TilesClient`] fetches the checkpoint and, in parallel, the tiles a proof needs,
//!   counting the bytes.
//!
//! Both speak plain HTTP/1.1 over any byte stream: the server serves each accepted connection
//! through `hyper_util::rt::TokioIo` and the client is generic over its connector, so TLS
//! (rustls) wraps the stream without touching the handlers.

mod client;
mod server;

pub use client::{FetchStats, TilesClient};
pub use server::{TilesServer, serve_tiles, serve_tiles_with};
