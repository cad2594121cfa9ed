//! tessera: a multi-tenant TOTP factor server that speaks ZITADEL's Auth API.
//!
//! The layout follows the request's path: `api` (HTTP handlers) hands a
//! `Caller` from `auth` to the `tenant` actors, which apply the pure rules of
//! `domain` and commit through a `store`.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::todo,
    clippy::unimplemented
)]

pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod domain;
#[cfg(feature = "test-kit")]
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc_call;
pub mod health;
pub mod metrics;
pub mod process;
pub mod rekey;
pub mod seal;
pub mod service;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod tenant;
pub mod tls;
pub mod webhooks;
