//! Tensors and signatures between our types and OpenVINO's.

use openvino::{CompiledModel, ElementType, Node, Shape};

use crate::engine::EngineError;
use crate::signature::{DType, Dim, Signature, TensorSpec};
use crate::tensor::{raw, Tensor, TensorData};

/// ONNX's dtypes that OpenVINO's element types carry one to one.
fn dtype(ty: ElementType) -> Option<DType> {
    Some(match ty {
        ElementType::F16 => DType::F16,
        ElementType::F32 => DType::F32,
        ElementType::F64 => DType::F64,
        ElementType::I8 => DType::I8,
        ElementType::I16 => DType::I16,
        ElementType::I32 => DType::I32,
        ElementType::I64 => DType::I64,
        ElementType::U8 => DType::U8,
        ElementType::U16 => DType::U16,
        ElementType::U32 => DType::U32,
        ElementType::U64 => DType::U64,
        ElementType::Boolean => DType::Bool,
        _ => return None,
    })
}

fn element_type(dtype: DType) -> Option<ElementType> {
    Some(match dtype {
        DType::F16 => ElementType::F16,
        DType::F32 => ElementType::F32,
        DType::F64 => ElementType::F64,
        DType::I8 => ElementType::I8,
        DType::I16 => ElementType::I16,
        DType::I32 => ElementType::I32,
        DType::I64 => ElementType::I64,
        DType::U8 => ElementType::U8,
        DType::U16 => ElementType::U16,
        DType::U32 => ElementType::U32,
        DType::U64 => ElementType::U64,
        DType::Bool => ElementType::Boolean,
        DType::String => return None,
    })
}

/// Our tensor as a new OpenVINO tensor (one copy of the values). Errors: a dtype OpenVINO does
/// not take is the request's fault ([`EngineError::InvalidInput`]); failing to make the tensor
/// (memory) is the server's ([`EngineError::Failed`]).
pub(super) fn input_tensor(t: &Tensor) -> Result<openvino::Tensor, EngineError> {
    let ty = element_type(t.dtype()).ok_or_else(|| {
        EngineError::InvalidInput(format!("OpenVINO takes no {} inputs", t.dtype()))
    })?;
    let failed = |e: openvino::InferenceError| EngineError::Failed(format!("input tensor: {e}"));
    let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    let shape = Shape::new(&dims).map_err(failed)?;
    let mut out = openvino::Tensor::new(ty, &shape).map_err(failed)?;
    // An empty tensor has no buffer to copy into.
    if t.shape().contains(&0) {
        return Ok(out);
    }
    match t.data() {
        TensorData::F32(v) => out
            .get_data_mut::<f32>()
            .map_err(failed)?
            .copy_from_slice(v),
        data => out
            .get_raw_data_mut()
            .map_err(failed)?
            .copy_from_slice(&raw::to_le_bytes(data)),
    }
    Ok(out)
}

/// An OpenVINO output as our tensor (one copy of the values).
pub(super) fn output_tensor(t: &openvino::Tensor) -> Result<Tensor, String> {
    let ty = t.get_element_type().map_err(|e| e.to_string())?;
    let dtype = dtype(ty).ok_or_else(|| format!("outputs of type {ty} cannot be served"))?;
    let shape = t
        .get_shape()
        .map_err(|e| e.to_string())?
        .get_dimensions()
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect::<Vec<usize>>();
    // An empty output has no buffer to read (its data pointer may be null).
    if shape.contains(&0) {
        return raw::from_le_bytes(dtype, shape, &[]);
    }
    raw::from_le_bytes(dtype, shape, t.get_raw_data().map_err(|e| e.to_string())?)
}

/// The compiled model's inputs and outputs; a free dimension gets the name tract gives one
/// (`batch` first, `<input>_<k>` elsewhere): the C API does not say the model's symbols.
pub(super) fn signature(model: &CompiledModel) -> Result<Signature, String> {
    let spec = |node: Node, kind: &str| -> Result<TensorSpec, String> {
        let name = node.get_name().map_err(|e| e.to_string())?;
        let ty = node.get_element_type().map_err(|e| e.to_string())?;
        let dtype = dtype(ty).ok_or_else(|| {
            format!("{kind} '{name}' has element type {ty}, which cannot be sent as JSON")
        })?;
        let shape = node.get_partial_shape().map_err(|e| e.to_string())?;
        if shape.get_rank().is_dynamic() {
            return Err(format!("{kind} '{name}' has no fixed rank"));
        }
        let shape = shape
            .get_dimensions()
            .iter()
            .enumerate()
            .map(|(k, d)| match d {
                d if !d.is_dynamic() => Dim::Fixed(d.get_min().max(0) as usize),
                _ if k == 0 => Dim::Dynamic("batch".into()),
                _ => Dim::Dynamic(format!("{name}_{k}")),
            })
            .collect();
        Ok(TensorSpec { name, dtype, shape })
    };
    let n_in = model.get_input_size().map_err(|e| e.to_string())?;
    let n_out = model.get_output_size().map_err(|e| e.to_string())?;
    let inputs = (0..n_in)
        .map(|k| {
            spec(
                model.get_input_by_index(k).map_err(|e| e.to_string())?,
                "input",
            )
        })
        .collect::<Result<_, _>>()?;
    let outputs = (0..n_out)
        .map(|k| {
            spec(
                model.get_output_by_index(k).map_err(|e| e.to_string())?,
                "output",
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(Signature { inputs, outputs })
}
