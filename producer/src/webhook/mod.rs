//! Webhooks: the producer POSTs batches of the log to a subscriber's
//! HTTP endpoint, signed per Standard Webhooks, and moves the subscription's cursor only on a
//! 2xx; the receiver Polls to fill whatever the webhooks missed.
//!
//! - [`allow`]: the hosts and networks webhooks may be sent to;
//! - [`secret`]: `whsec_…` signing secrets, parsed and generated;
//! - [`delivery`]: one batch's body, its `webhook-*` headers, one attempt, and what the answer
//!   means (delivered, retry after a delay, gone);
//! - [`backoff`]: the capped, jittered exponential delay between attempts;
//! - [`registry`]: the subscriptions, a delivery task for each, and the state file that keeps
//!   them across restarts;
//! - [`service`]: `pushpull.v1.WebhookService`, the gRPC adapter over the registry (the HTTP
//!   one is `crate::http::webhooks`).
//!
//! The gRPC contract that manages subscriptions is `proto/pushpull/v1/webhook.proto`.

pub mod allow;
pub mod backoff;
pub mod delivery;
pub mod registry;
pub mod secret;
pub mod service;
