//! The log over HTTP: the C2SP tlog-tiles layout, read-only (the coordinator's log, or a
//! replica's when configured), and the C2SP tlog-witness API of a witness, with the clients
//! participants, monitors and logs use.
//!
//! - `listen`: the accept loop both servers share (bounded connections, a deadline on each
//!   request's head, shutdown).
//! - `server`: [`serve_tiles`] answers `GET`/`HEAD` of `checkpoint` (the latest checkpoint
//!   cosigned by the genesis quorum of witnesses, `text/plain; charset=utf-8`, not cached),
//!   `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]` (`application/octet-stream`,
//!   immutable), reading the store on the blocking pool.
//! - `client`: [`TilesClient`] fetches the checkpoint and, in parallel, the tiles a proof needs,
//!   counting the bytes.
//! - `witness_server`: [`serve_witness`] answers `POST add-checkpoint` (bodies bounded at 64
//!   KiB before they are read; each status of the spec from [`crate::witness`]) and the
//!   monitoring endpoint `GET <origin hash>/checkpoint`.
//! - `witness_client`: [`WitnessClient`] submits checkpoints with their consistency proofs;
//!   [`collect_cosignatures_http`] asks every witness listed by URL and stores what verifies.
//!
//! All speak plain HTTP/1.1 over any byte stream: the servers serve each accepted connection
//! through `hyper_util::rt::TokioIo` and the tiles client is generic over its connector, so TLS
//! (rustls) wraps the stream without touching the handlers.

mod client;
mod listen;
mod server;
mod witness_client;
mod witness_server;

pub use client::{FetchStats, TilesClient};
pub use server::{TilesServer, serve_tiles, serve_tiles_with};
pub use witness_client::{Submitted, WitnessClient, collect_cosignatures_http};
pub use witness_server::{WitnessServer, serve_witness};
