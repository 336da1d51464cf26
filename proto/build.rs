//! Code generation without a system `protoc`: protox parses the .proto files in pure Rust and
//! hands the descriptor set to tonic-prost-build.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["fedledger/v1/fedledger.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Chunk payloads as `bytes::Bytes`: decoded without a copy per value.
        .bytes(".fedledger.v1.ParamChunk.data")
        .compile_fds(fds)?;
    Ok(())
}
