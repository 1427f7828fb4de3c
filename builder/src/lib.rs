//! onnx-serving's image builder: CPU detection, build contexts, and Docker builds through bollard.

pub mod commands;
pub mod context;
pub mod cpu;
pub mod docker;
pub mod engines;
pub mod probe;
pub mod vendor;

/// The host's CPU detection, shared with the runtime (one definition of the instruction-set
/// table for both binaries, without making the builder depend on, and compile, tract).
pub use hostcpu;

/// The log filter both binaries read.
pub use hostcpu::logging;
