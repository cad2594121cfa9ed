//! Generates the gRPC code from proto/ with protox (pure Rust): no system protoc needed.

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/zitadel/object.proto",
    "proto/zitadel/user.proto",
    "proto/zitadel/policy.proto",
    "proto/zitadel/auth.proto",
    "proto/zitadel/management.proto",
    "proto/zitadel/object/v2/object.proto",
    "proto/zitadel/user/v2/user_service.proto",
    "proto/tessera/otp/v1/check.proto",
    "proto/tessera/otp/v1/admin.proto",
    "proto/google/rpc/status.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    // The same descriptors serve gRPC server reflection.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tessera_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Malformed messages are INVALID_ARGUMENT with tessera's ErrorDetail (codec.rs).
        .codec_path("crate::api::grpc::codec::ContractCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
