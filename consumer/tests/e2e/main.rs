//! The consumer against a real producer, both on port 0, over real gRPC: delivery in every mode,
//! resumption after cuts, restarts and mode switches, failover between producers of one log,
//! expired cursors, shutdown, a listener that dies, and webhook mode's receiver. One binary for
//! all, so it links once.

mod delivery;
mod failover;
mod helpers;
mod http;
mod listener;
mod resume;
mod retention;
mod service;
mod webhook;
mod webhook_delivery;
