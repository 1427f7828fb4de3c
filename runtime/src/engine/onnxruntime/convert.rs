//! Tensors and signatures between our types and onnxruntime's.

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

use crate::signature::{DType, Dim, Signature, TensorSpec};
use crate::tensor::{self, Tensor, TensorData};

/// Our tensor as an onnxruntime input, borrowing the values (strings are copied).
pub(super) fn input_value(t: &Tensor) -> Result<SessionInputValue<'_>, String> {
    let shape = t.shape().to_vec();
    macro_rules! view {
        ($v:expr) => {
            TensorRef::from_array_view((shape, &$v[..]))
                .map(SessionInputValue::from)
                .map_err(|e| e.to_string())
        };
    }
    match t.data() {
        TensorData::F16(v) => view!(v),
        TensorData::F32(v) => view!(v),
        TensorData::F64(v) => view!(v),
        TensorData::I8(v) => view!(v),
        TensorData::I16(v) => view!(v),
        TensorData::I32(v) => view!(v),
        TensorData::I64(v) => view!(v),
        TensorData::U8(v) => view!(v),
        TensorData::U16(v) => view!(v),
        TensorData::U32(v) => view!(v),
        TensorData::U64(v) => view!(v),
        TensorData::Bool(v) => view!(v),
        TensorData::String(v) => ort::value::Tensor::from_string_array((shape, &v[..]))
            .map(SessionInputValue::from)
            .map_err(|e| e.to_string()),
    }
}

/// An onnxruntime output as our tensor (one copy of the values).
pub(super) fn output_tensor(value: &DynValue) -> Result<Tensor, String> {
    let ty = value.dtype().tensor_type().ok_or_else(|| {
        "an output is not a tensor (sequences and maps cannot be served)".to_string()
    })?;
    macro_rules! copy {
        ($variant:ident, $t:ty) => {{
            let (shape, data) = value
                .try_extract_tensor::<$t>()
                .map_err(|e| e.to_string())?;
            (shape.to_vec(), TensorData::$variant(data.to_vec()))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Float16 => copy!(F16, tensor::f16),
        TensorElementType::Float32 => copy!(F32, f32),
        TensorElementType::Float64 => copy!(F64, f64),
        TensorElementType::Int8 => copy!(I8, i8),
        TensorElementType::Int16 => copy!(I16, i16),
        TensorElementType::Int32 => copy!(I32, i32),
        TensorElementType::Int64 => copy!(I64, i64),
        TensorElementType::Uint8 => copy!(U8, u8),
        TensorElementType::Uint16 => copy!(U16, u16),
        TensorElementType::Uint32 => copy!(U32, u32),
        TensorElementType::Uint64 => copy!(U64, u64),
        TensorElementType::Bool => copy!(Bool, bool),
        TensorElementType::String => {
            let (shape, data) = value.try_extract_strings().map_err(|e| e.to_string())?;
            (shape.to_vec(), TensorData::String(data))
        }
        other => return Err(format!("outputs of type {other:?} cannot be served")),
    };
    let shape = shape.iter().map(|&d| d.max(0) as usize).collect();
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

fn dtype(ty: TensorElementType) -> Option<DType> {
    Some(match ty {
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::Int16 => DType::I16,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Uint16 => DType::U16,
        TensorElementType::Uint32 => DType::U32,
        TensorElementType::Uint64 => DType::U64,
        TensorElementType::Bool => DType::Bool,
        TensorElementType::String => DType::String,
        _ => return None,
    })
}

/// The session's inputs and outputs; a free dimension keeps the model's symbol, or the name
/// tract would give it (`batch` first, `<input>_<k>` elsewhere) when the model has none.
pub(super) fn signature(session: &Session) -> Result<Signature, String> {
    let specs = |outlets: &[ort::value::Outlet], kind: &str| -> Result<Vec<TensorSpec>, String> {
        outlets
            .iter()
            .map(|o| {
                let ValueType::Tensor {
                    ty,
                    shape,
                    dimension_symbols,
                } = o.dtype()
                else {
                    return Err(format!(
                        "{kind} '{}' is not a tensor (sequences and maps cannot be sent as JSON)",
                        o.name()
                    ));
                };
                let dtype = dtype(*ty).ok_or_else(|| {
                    format!(
                        "{kind} '{}' has element type {ty:?}, which cannot be sent as JSON",
                        o.name()
                    )
                })?;
                let shape = shape
                    .iter()
                    .enumerate()
                    .map(|(k, &d)| match (d, dimension_symbols.get(k)) {
                        (d, _) if d >= 0 => Dim::Fixed(d as usize),
                        (_, Some(sym)) if !sym.is_empty() => Dim::Dynamic(sym.clone()),
                        (_, _) if k == 0 => Dim::Dynamic("batch".into()),
                        _ => Dim::Dynamic(format!("{}_{k}", o.name())),
                    })
                    .collect();
                Ok(TensorSpec {
                    name: o.name().to_string(),
                    dtype,
                    shape,
                })
            })
            .collect()
    };
    Ok(Signature {
        inputs: specs(session.inputs(), "input")?,
        outputs: specs(session.outputs(), "output")?,
    })
}
