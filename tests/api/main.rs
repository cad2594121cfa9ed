//! The whole server, driven over HTTP: one binary, every test with its own app, store and keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod audit;
mod bad_input;
mod browser;
mod cluster;
mod concurrency;
mod conformance;
mod deploy;
mod differential;
mod fail_closed;
mod faults;
mod fuzz_corpus;
mod grpc;
mod grpc_web;
mod helpers;
mod independent;
mod lifecycle;
mod limits;
mod load_tool;
mod metrics;
mod observability;
mod openid;
mod policies;
mod process;
mod python;
mod readme;
mod recovery_codes;
mod rekey;
mod shutdown;
mod store_edges;
mod tenancy;
mod tls;
mod tokens;
mod upgrade;
mod user_v2;
mod webhooks;
mod wire_edges;
