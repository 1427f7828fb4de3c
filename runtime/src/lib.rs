//! onnx-serving's model server: TensorFlow Serving's REST and gRPC APIs in front of ONNX engines (tract,
//! onnxruntime) behind one seam (`engine`).

pub mod api;
pub mod check;
pub mod config;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod healthcheck;
pub mod http;
pub mod infer;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod server;
pub mod service;
pub mod state;
pub mod tensor;
pub mod textproto;

pub use api::app;
pub use state::{AppState, Limits, ModelEntry, Servable, ServedModel};
