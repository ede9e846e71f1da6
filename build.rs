//! Compiles `proto/` without a system `protoc`: `protox` parses the .proto files
//! in pure Rust, `tonic-prost-build` generates the types and the service, and the
//! encoded descriptor set is written to `OUT_DIR` for gRPC reflection.
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/liveslice/v1/slicer.proto";
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("liveslice_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Frame payloads are decoded as `bytes::Bytes` slices of the received
        // buffer, so fan-out and NAL splitting never copy them.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
