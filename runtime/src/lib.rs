//! onnx-serving's model server: TensorFlow Serving's REST and gRPC APIs in front of ONNX engines
//! (tract, onnxruntime) behind one seam (`engine`).
//!
//! The rooms, from the edge to the engines (each imports only rooms below it):
//! - `cli`: the command line (flags, env names) and its subcommands: `serve`, `check-model`,
//!   `healthcheck`.
//! - `rest`, `grpc`: the protocols. Each turns its wire format into [`tensor::Tensor`]s and maps
//!   [`error::ApiError`] to its own status; `proto` holds the generated TF Serving types and
//!   their text format (config files).
//! - `serving`: the protocol-neutral path: which model a request names, its status, checked
//!   inputs and images, the run, the output filter, request metrics.
//! - `models`: the models served and their versions (state, manager, config, disk, policy, load).
//! - `pool`: the worker pool (queue, admission, dynamic batching) in front of an engine.
//! - `engine`: the seam (`Backend`, `Runner`, `EngineError`), which engine serves, warm-up and
//!   thread tuning, and one module per engine.
//! - `signature`: a model's inputs and outputs, and `signature.toml` (image inputs, class
//!   outputs).
//! - `tensor`, `error`, `metrics`: what every room shares.

pub mod cli;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod models;
pub mod pool;
pub mod proto;
pub mod rest;
pub mod serving;
pub mod signature;
pub mod tensor;

pub use models::{AppState, Limits, ModelEntry, Servable, ServedModel};
pub use rest::app;
