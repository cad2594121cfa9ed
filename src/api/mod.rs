//! The wire: JSON over HTTP (grpc-gateway's rules) now; gRPC next to it later. Both call
//! the same actor messages, so behaviour is identical by construction.

pub mod gateway;
pub mod grpc;
pub mod http;
pub mod wire;
