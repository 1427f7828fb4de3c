//! onnx-serving's model server: TensorFlow Serving's REST API in front of tract-onnx.

pub mod api;
pub mod check;
pub mod config;
pub mod cpu;
pub mod error;
pub mod healthcheck;
pub mod infer;
pub mod logging;
pub mod model;
pub mod server;
pub mod state;

pub use api::app;
pub use state::{AppState, Limits, ModelState, ServedModel};
