//! onnx-serving's image builder: CPU detection, build contexts, and Docker builds through bollard.

pub mod commands;
pub mod context;
pub mod cpu;
pub mod docker;
