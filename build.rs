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
    "proto/pushpull/v1/errors.proto",
    "proto/pushpull/v1/webhook.proto",
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
        .codec_path("crate::codec::ProstCodec")
        .compile_fds(fds)?;

    // The producer's server a second time, into `wire/`, with `Event` replaced by
    // `crate::wire::EncodedEvent`: an event encoded once when it is appended, whose bytes every
    // response then copies as they are (no per-reader conversion or encoding); and
    // `PublishRequest` by `crate::wire::PublishRequest`, whose topics stay in the request's
    // bytes. The other messages are the ordinary generated ones; the bytes on the wire are the
    // same.
    let wire_dir = out_dir.join("wire");
    fs::create_dir_all(&wire_dir)?;
    let producer_fds = protox::compile([PROTO_FILES[0]], [PROTO_ROOT])?;
    let mut wire = tonic_prost_build::configure()
        .bytes(".pushpull.v1")
        .build_client(false)
        .codec_path("crate::codec::ProstCodec")
        .out_dir(&wire_dir)
        .extern_path(".pushpull.v1.Event", "crate::wire::EncodedEvent")
        // Publish requests decoded without a `String` per event (`crate::wire::PublishRequest`).
        .extern_path(".pushpull.v1.PublishRequest", "crate::wire::PublishRequest")
        .extern_path(".pushpull.v1.NewEvent", "crate::wire::NewEvent");
    for message in ["PublishResponse", "SubscribeRequest", "PollRequest"] {
        wire = wire.extern_path(
            format!(".pushpull.v1.{message}"),
            format!("crate::pb::{message}"),
        );
    }
    wire.compile_fds(producer_fds)?;
    Ok(())
}
