//! Memory a peer can make the coordinator hold without logging in: 100 streams of half-sent
//! messages on one HTTP/2 connection. The server lets a connection open at most
//! `limits.max_streams_per_connection` streams at once, decodes no message larger than
//! `MAX_REQUEST_MESSAGE_BYTES`, and reads at most one stream window ahead (and one connection
//! window in all), so the memory the flood adds stays under
//! `transport::connection_memory_bound(limits, windows)` = streams x 2 x message limit + the
//! smaller of streams x stream window and the connection window, with the windows the server
//! runs with (plus a fixed allowance for the allocator).
//!
//! Resident memory is read from /proc/self/status, so this file holds one test (its own
//! process).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use fedledger_coordinator::transport::{MAX_REQUEST_MESSAGE_BYTES, connection_memory_bound};
use fedledger_proto as pb;

/// VmRSS of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// Resident memory once it has stopped growing (the server is still reading what was sent).
async fn settled_rss() -> u64 {
    let mut last = rss();
    let mut still = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rss();
        if now.abs_diff(last) < 256 * 1024 {
            still += 1;
            if still >= 5 {
                return now;
            }
        } else {
            still = 0;
        }
        last = now;
    }
    last
}

const MIB: f64 = 1024.0 * 1024.0;
/// What the process may grow by besides the buffers the limits bound: allocator arenas and
/// the runtime's bookkeeping for the streams.
const ALLOWANCE: u64 = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_half_sent_messages_on_one_connection_hold_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let k0 = keypair();
    let mut cfg = config(dir.path(), &[&k0], 3, 2, 1, 1);
    // Long enough that the flood is still held while it is measured.
    cfg.limits.message_timeout = Duration::from_secs(60);
    let limits = cfg.limits.clone();
    let running = start(cfg).await;
    // Warm up what an honest call allocates once, so it is not counted as the flood's.
    let mut honest = client(&running).await;
    honest
        .challenge(pb::ChallengeRequest {
            public_key: pubhex(&k0),
        })
        .await
        .unwrap();
    let before = settled_rss().await;

    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(connection);
    // Each stream declares a message as large as the server decodes (or as large as the wire
    // protocol's own limit) and sends all of it but the last byte. One shared buffer: the
    // client side holds no copy per stream.
    let payload = Bytes::from(vec![0u8; pb::MAX_MESSAGE_BYTES]);
    let mut held = Vec::new();
    let mut opened = 0;
    for i in 0..100 {
        let Ok(Ok(mut sender)) =
            tokio::time::timeout(Duration::from_millis(500), h2.clone().ready()).await
        else {
            // The connection has no room for another stream: the server's limit holds them.
            break;
        };
        let method = if i % 2 == 0 {
            "Challenge"
        } else {
            "SubmitUpdate"
        };
        let declared = if i % 4 < 2 {
            MAX_REQUEST_MESSAGE_BYTES
        } else {
            pb::MAX_MESSAGE_BYTES - 1024
        };
        let request = http::Request::post(format!(
            "http://{}/fedledger.v1.Coordinator/{method}",
            running.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        let Ok((response, mut body)) = sender.send_request(request, false) else {
            break;
        };
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&(declared as u32).to_be_bytes());
        let _ = body.send_data(Bytes::from(prefix), false);
        let _ = body.send_data(payload.slice(..declared - 1), false);
        held.push((response, body));
        opened += 1;
    }
    let after = settled_rss().await;
    let grown = after.saturating_sub(before);
    let connection = connection_memory_bound(&limits, running.windows);
    let messages =
        2 * u64::from(limits.max_streams_per_connection) * MAX_REQUEST_MESSAGE_BYTES as u64;
    let bound = connection + ALLOWANCE;
    eprintln!(
        "flood: {opened} streams sent on one connection ({} allowed at once); RSS {:.1} MiB -> \
         {:.1} MiB, grown {:.1} MiB; bound {} x 2 x {:.2} MiB + unread {:.0} MiB + {:.0} MiB = \
         {:.1} MiB",
        limits.max_streams_per_connection,
        before as f64 / MIB,
        after as f64 / MIB,
        grown as f64 / MIB,
        limits.max_streams_per_connection,
        MAX_REQUEST_MESSAGE_BYTES as f64 / MIB,
        (connection - messages) as f64 / MIB,
        ALLOWANCE as f64 / MIB,
        bound as f64 / MIB,
    );
    assert!(
        grown <= bound,
        "the flood grew the coordinator by {:.1} MiB, over the bound of {:.1} MiB",
        grown as f64 / MIB,
        bound as f64 / MIB
    );
    // An honest participant on its own connection is still served.
    let session = register(&mut honest, &k0).await;
    assert_eq!(session.len(), 32);
    drop(held);
    drop(h2);
    conn.abort();
    running.shutdown().await.unwrap();
}
