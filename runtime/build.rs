//! Generates the gRPC code (messages, PredictionService, ModelService and the Open Inference
//! Protocol's GRPCInferenceService servers and clients)
//! from the workspace's `proto/` folder with protox, a protobuf compiler written in Rust: no
//! system `protoc`, so the build stays hermetic in the devel image. The compiled descriptor set
//! is kept too, for gRPC server reflection.

use std::path::PathBuf;

/// The services, and the config files' formats (read with prost-reflect's text format).
const FILES: &[&str] = &[
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/model_service.proto",
    "tensorflow_serving/config/monitoring_config.proto",
    "inference/grpc_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let files = protox::compile(FILES, [&root])
        .map_err(|e| format!("cannot compile the protos under {}: {e:?}", root.display()))?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tf_serving_descriptor.bin"),
        prost::Message::encode_to_vec(&files),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_fds(files)?;
    Ok(())
}
