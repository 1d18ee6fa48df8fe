//! Compiles `proto/` into Rust with a pure-Rust protobuf compiler (protox), so a fresh machine
//! needs only cargo: no system `protoc`.
//!
//! `compile_fds` ignores `file_descriptor_set_path`, so the encoded descriptor set that gRPC
//! reflection serves is written to `OUT_DIR` here and loaded with
//! `tonic::include_file_descriptor_set!` in `src/lib.rs`.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "proto/pushpull/v1/producer.proto",
    "proto/pushpull/v1/consumer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }

    // Source info keeps the .proto comments, so generated Rust docs and `grpcurl describe`
    // show them.
    let fds = protox::compile(PROTO_FILES, [PROTO_ROOT])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("pushpull_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        // Payloads as `bytes::Bytes`: cloning an event for many subscribers then shares the
        // payload instead of copying it.
        .bytes(".pushpull.v1")
        .compile_fds(fds)?;
    Ok(())
}
