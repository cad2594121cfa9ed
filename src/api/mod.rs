//! The wire: JSON over HTTP (grpc-gateway's rules), gRPC and gRPC-web. Both transports call
//! the same gateway (and so the same actor messages): behaviour is identical by construction.

pub mod gateway;
pub mod grpc;
pub mod http;
pub mod wire;
