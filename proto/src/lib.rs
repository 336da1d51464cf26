//! The fedledger wire protocol (`fedledger.v1`): generated tonic/prost types, plus the constants
//! both ends must agree on and the one rule they share (the chunk size of a vector). No other
//! logic lives here.
//!
//! The protocol is described in `proto/fedledger/v1/fedledger.proto`.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("fedledger.v1");
}

pub use generated::*;

/// Values per parameter chunk at most: 128 Ki f32 = 512 KiB of payload, well under tonic's
/// 4 MiB limit. A chunk is what a coordinator holds per transfer in flight (a download's message
/// being sent, an upload's being decoded); smaller models travel in smaller chunks
/// ([`chunk_floats_for`]).
pub const CHUNK_FLOATS: usize = 128 * 1024;

/// Values per chunk of a small model's vectors at least (64 KiB of payload).
pub const MIN_CHUNK_FLOATS: usize = 16 * 1024;

/// Values per chunk of a vector of `values` f32: a sixteenth of the vector, within
/// [`MIN_CHUNK_FLOATS`]..=[`CHUNK_FLOATS`]. Both ends send in chunks of this size (the task
/// header's `chunk_floats` announces it), so what a transfer in flight holds at either end is
/// about a sixteenth of a model of up to 8 MiB, not 512 KiB each: a hundred hospitals with a
/// 4 MiB model upload in 256 KiB chunks. Chunks of up to [`CHUNK_FLOATS`] are still accepted.
pub fn chunk_floats_for(values: u64) -> usize {
    let sixteenth = usize::try_from(values.div_ceil(16)).unwrap_or(CHUNK_FLOATS);
    sixteenth.clamp(MIN_CHUNK_FLOATS, CHUNK_FLOATS)
}

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
    fn chunks_are_a_sixteenth_of_the_vector_within_bounds() {
        assert_eq!(chunk_floats_for(0), MIN_CHUNK_FLOATS);
        assert_eq!(chunk_floats_for(31), MIN_CHUNK_FLOATS);
        assert_eq!(chunk_floats_for(1_056_002), 66_001);
        assert_eq!(chunk_floats_for(16 * CHUNK_FLOATS as u64), CHUNK_FLOATS);
        assert_eq!(chunk_floats_for(16_500_002), CHUNK_FLOATS);
        assert_eq!(chunk_floats_for(u64::MAX), CHUNK_FLOATS);
    }

    #[test]
    fn register_message_hex_encodes_challenge() {
        assert_eq!(
            register_message("fed", &[0x00, 0xff, 0x10]),
            "fedledger/register/v1\nfed\n00ff10\n"
        );
    }
}
