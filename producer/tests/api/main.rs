//! The producer's gRPC API, tested from the outside: every test runs the real server on port 0
//! and talks to it with the generated client. One binary for all, so it links once.

mod durable;
mod errors;
mod health_reflection;
mod helpers;
mod http_client;
mod http_hostile;
mod http_metrics;
mod http_poll;
mod http_sse;
mod http_ws;
mod jetstream;
mod limits;
mod poll;
mod publish;
mod published;
mod raw_socket;
mod security;
mod shutdown;
mod stalled_memory;
mod subscribe;
mod webhooks;
