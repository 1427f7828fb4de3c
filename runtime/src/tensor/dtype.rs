//! The element types of tensors ([`DType`]) and their names in each protocol: ONNX's, TensorFlow's,
//! the Open Inference Protocol's and Triton's model configuration.

use std::fmt;

/// Element types the server reads from requests and writes to responses: ONNX's tensor types
/// minus the complex and 8-bit float ones, which JSON cannot carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    /// Binary or text values (`{"b64": ...}` inputs, label outputs).
    String,
}

impl DType {
    /// TensorFlow's name for the type, as TF Serving's metadata reports it.
    pub fn tf_name(self) -> &'static str {
        match self {
            DType::F16 => "DT_HALF",
            DType::F32 => "DT_FLOAT",
            DType::F64 => "DT_DOUBLE",
            DType::I8 => "DT_INT8",
            DType::I16 => "DT_INT16",
            DType::I32 => "DT_INT32",
            DType::I64 => "DT_INT64",
            DType::U8 => "DT_UINT8",
            DType::U16 => "DT_UINT16",
            DType::U32 => "DT_UINT32",
            DType::U64 => "DT_UINT64",
            DType::Bool => "DT_BOOL",
            DType::String => "DT_STRING",
        }
    }

    /// ONNX's short name (`float32`, `int64`, ...), used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Bool => "bool",
            DType::String => "string",
        }
    }
}

impl DType {
    /// The Open Inference Protocol's (KServe V2) datatype name: `FP32`, `INT64`, `BYTES`, ...
    pub fn v2_name(self) -> &'static str {
        match self {
            DType::F16 => "FP16",
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::I8 => "INT8",
            DType::I16 => "INT16",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::U8 => "UINT8",
            DType::U16 => "UINT16",
            DType::U32 => "UINT32",
            DType::U64 => "UINT64",
            DType::Bool => "BOOL",
            DType::String => "BYTES",
        }
    }

    /// The type a V2 datatype name stands for; `None` for an unknown name and for `BF16`, which
    /// no [`TensorData`] holds.
    pub fn from_v2_name(name: &str) -> Option<DType> {
        ALL.iter().copied().find(|d| d.v2_name() == name)
    }

    /// Triton's model-config name (`model_config.proto`'s `DataType`): `TYPE_FP32`, `TYPE_STRING`.
    pub fn triton_config_name(self) -> &'static str {
        match self {
            DType::String => "TYPE_STRING",
            other => match other.v2_name() {
                "FP16" => "TYPE_FP16",
                "FP32" => "TYPE_FP32",
                "FP64" => "TYPE_FP64",
                "INT8" => "TYPE_INT8",
                "INT16" => "TYPE_INT16",
                "INT32" => "TYPE_INT32",
                "INT64" => "TYPE_INT64",
                "UINT8" => "TYPE_UINT8",
                "UINT16" => "TYPE_UINT16",
                "UINT32" => "TYPE_UINT32",
                "UINT64" => "TYPE_UINT64",
                _ => "TYPE_BOOL",
            },
        }
    }

    /// Bytes per element in a raw little-endian buffer (V2's binary extension, gRPC's
    /// `raw_*_contents`); `None` for strings, which carry their own lengths.
    pub fn raw_size(self) -> Option<usize> {
        Some(match self {
            DType::Bool | DType::I8 | DType::U8 => 1,
            DType::F16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::String => return None,
        })
    }
}

/// Every [`DType`].
pub const ALL: [DType; 13] = [
    DType::F16,
    DType::F32,
    DType::F64,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
    DType::Bool,
    DType::String,
];

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
