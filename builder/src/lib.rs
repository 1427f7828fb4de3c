//! onnx-serving's image builder: CPU detection, build contexts, and Docker builds through bollard.

pub mod bench;
pub mod commands;
pub mod context;
pub mod cpu;
pub mod docker;
pub mod onnxruntime;

/// The runtime's CPU detection, compiled into the builder from the same source file: one
/// definition of the instruction-set table for both binaries, without making the builder
/// depend on (and compile) tract.
#[path = "../../runtime/src/cpu.rs"]
pub mod hostcpu;

/// The runtime's log filter, from the same source file.
#[path = "../../runtime/src/logging.rs"]
pub mod logging;
