//! The messages and services generated from the repository's `proto/` folder (TF Serving's
//! API and the Open Inference Protocol's, wire compatible) by `build.rs`, and their protobuf text format (`text`), in which TF
//! Serving's config files are written. Shared by the gRPC services and the model config.

#![allow(clippy::all, missing_docs)]

pub mod text;

/// Package `tensorflow`: tensors, shapes, signatures.
pub mod tensorflow {
    tonic::include_proto!("tensorflow");

    /// Package `tensorflow.error`: status codes.
    pub mod error {
        tonic::include_proto!("tensorflow.error");
    }

    /// Package `tensorflow.serving`: PredictionService, ModelService and their messages.
    pub mod serving {
        tonic::include_proto!("tensorflow.serving");
    }
}

/// Package `inference`: the Open Inference Protocol's GRPCInferenceService (KServe V2) and the
/// fields of Triton's model configuration it answers with.
pub mod inference {
    tonic::include_proto!("inference");
}

/// Every file of the API, compiled (a `FileDescriptorSet`): what server reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tf_serving_descriptor.bin"));
