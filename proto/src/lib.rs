//! The fedledger wire protocol (`fedledger.v1`): generated tonic/prost types, plus the constants
//! both ends must agree on. No logic lives here.
//!
//! The protocol is described in `proto/fedledger/v1/fedledger.proto`.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("fedledger.v1");
}

pub use generated::*;

/// Values per parameter chunk: 128 Ki f32 = 512 KiB of payload, well under tonic's 4 MiB limit.
/// A chunk is what a coordinator holds per transfer in flight (a download's message being
/// sent, an upload's being decoded): at a thousand sites, half a MiB each rather than one.
pub const CHUNK_FLOATS: usize = 128 * 1024;

/// Decode limit set on both ends: one chunk plus headroom for the header fields.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Bytes per parameter chunk.
pub const CHUNK_BYTES: usize = CHUNK_FLOATS * 4;

// A chunk stays well under gRPC's 4 MiB default and under our decode limit: checked at compile
// time.
const _: () = assert!(CHUNK_BYTES < 4 * 1024 * 1024);
const _: () = assert!(CHUNK_BYTES + 1024 < MAX_MESSAGE_BYTES);

/// Domain-separation prefix of the registration challenge signature. (The messages signed over
/// updates and declines are recorded in the ledger, so they are defined once, by the ledger's
/// `records` module.)
pub const REGISTER_DOMAIN: &str = "fedledger/register/v1";

/// The UTF-8 message a participant signs to prove possession of its key at registration.
pub fn register_message(federation: &str, challenge: &[u8]) -> String {
    let hex: String = challenge.iter().map(|b| format!("{b:02x}")).collect();
    format!("{REGISTER_DOMAIN}\n{federation}\n{hex}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_message_hex_encodes_challenge() {
        assert_eq!(
            register_message("fed", &[0x00, 0xff, 0x10]),
            "fedledger/register/v1\nfed\n00ff10\n"
        );
    }
}
