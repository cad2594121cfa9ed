//! The wire: JSON over HTTP (grpc-gateway's rules), gRPC and gRPC-web. Both transports call
//! the same service (and so the same actor messages): behaviour is identical by construction.

pub mod grpc;
pub mod http;
pub mod wire;
