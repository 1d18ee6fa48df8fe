//! Webhooks (issue 12, in progress): the producer POSTs batches of the log to a subscriber's
//! HTTP endpoint, signed per Standard Webhooks, and moves the subscription's cursor only on a
//! 2xx. This module holds the delivery core, independent of how subscriptions are stored or
//! managed:
//!
//! - [`allow`]: the hosts and networks webhooks may be sent to;
//! - [`secret`]: `whsec_…` signing secrets, parsed and generated;
//! - [`delivery`]: one batch's body, its `webhook-*` headers, one attempt, and what the answer
//!   means (delivered, retry after a delay, gone);
//! - [`backoff`]: the capped, jittered exponential delay between attempts.
//!
//! The gRPC contract that manages subscriptions is `proto/pushpull/v1/webhook.proto`.

pub mod allow;
pub mod backoff;
pub mod delivery;
pub mod secret;
