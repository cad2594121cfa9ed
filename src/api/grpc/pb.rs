//! Code generated at build time from proto/ (see build.rs). Module paths mirror the proto
//! packages so that the generated cross-package references resolve.
#![allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

pub mod zitadel {
    pub mod v1 {
        tonic::include_proto!("zitadel.v1");
    }
    pub mod user {
        pub mod v1 {
            tonic::include_proto!("zitadel.user.v1");
        }
        pub mod v2 {
            tonic::include_proto!("zitadel.user.v2");
        }
    }
    pub mod policy {
        pub mod v1 {
            tonic::include_proto!("zitadel.policy.v1");
        }
    }
    pub mod object {
        pub mod v2 {
            tonic::include_proto!("zitadel.object.v2");
        }
    }
    pub mod auth {
        pub mod v1 {
            tonic::include_proto!("zitadel.auth.v1");
        }
    }
    pub mod management {
        pub mod v1 {
            tonic::include_proto!("zitadel.management.v1");
        }
    }
}

pub mod tessera {
    pub mod otp {
        pub mod v1 {
            tonic::include_proto!("tessera.otp.v1");
        }
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// Every message and service above, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tessera_descriptor");
