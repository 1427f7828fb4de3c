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
    link_relative_relocations();
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

/// Packs the serving binary's relative relocations (DT_RELR): a position-independent
/// executable otherwise carries one 24-byte `.rela.dyn` entry per pointer in its read-only
/// data (~1.7 MB of the runtime's ~39 MB, BENCHMARKS.md "Images"). Needs GNU ld >= 2.38 and,
/// where the binary runs, glibc >= 2.36: Debian 12, the devel image's base and the serving
/// image's glibc files. Set `ONNX_SERVING_NO_RELR=1` to link without it (older toolchains).
fn link_relative_relocations() {
    println!("cargo:rerun-if-env-changed=ONNX_SERVING_NO_RELR");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && std::env::var_os("ONNX_SERVING_NO_RELR").is_none()
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
