//! pushpull: a producer and consumers that move events by push (a gRPC server stream) and by
//! pull (a unary poll, optionally a long poll), reading one ordered log with one cursor.
//!
//! This root crate is what both services (and any Rust client) share:
//! - [`pb`]: the generated `pushpull.v1` types, clients and servers (from `proto/`).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors that gRPC reflection serves.
//! - [`codec`]: the gRPC codec of the generated code: prost, decoding from contiguous bytes.
//! - [`time`]: conversions between protobuf and std time types.
//! - [`grpc`]: the one gRPC server assembly both services use: health, reflection, message
//!   limits, a request guard, graceful shutdown with a bounded grace period.
//! - [`serve`]: connections, for gRPC and HTTP alike: TLS, HTTP/2 settings, the connection
//!   limit, the first-request timeout.
//! - [`tls`]: TLS configurations from PEM files, for servers and clients, and development
//!   certificates.
//! - [`errors`]: structured errors (`google.rpc.ErrorInfo` reasons and metadata), built by the
//!   services and read by clients.
//! - [`health_probe`]: the `healthcheck` subcommand: a gRPC health check client for containers.
//! - [`telemetry`]: the `tracing` subscriber, text or JSON.
//! - [`process`]: what both binaries' `main` does: bind the listeners, map the result to an exit
//!   code.
//! - [`shutdown`]: the SIGTERM / SIGINT future.
//! - [`wire`]: events encoded once, and the producer's server that sends them as they are.

pub mod codec;
pub mod errors;
pub mod grpc;
pub mod health_probe;
pub mod process;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod wire;

/// Generated code for the `pushpull.v1` protobuf package.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("pushpull.v1");
}

impl pb::ReadMode {
    /// The mode's name wherever people read or type it: the consumer's `--mode`, logs, metric
    /// labels and the dashboard's JSON. Spelled here once; the proto's own enum names
    /// (`READ_MODE_LONG_POLL`) are for generated code.
    pub fn name(self) -> &'static str {
        match self {
            pb::ReadMode::Push => "push",
            pb::ReadMode::Poll => "poll",
            pb::ReadMode::LongPoll => "long-poll",
            pb::ReadMode::Webhook => "webhook",
            pb::ReadMode::Unspecified => "unspecified",
        }
    }
}

/// Encoded `FileDescriptorSet` of `proto/` (with imports and comments), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("pushpull_descriptor");
