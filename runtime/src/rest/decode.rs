//! Request values → tensors: TF Serving's row (`instances`) and columnar (`inputs`) formats,
//! checked against the signature (names, dtypes, shapes), each error naming the input.

use super::request::{JsonInput, NdArray, Scalar};
use crate::error::ApiError;
use crate::serving::{self, shape_mismatch};
use crate::signature::{DType, Signature, TensorSpec};
use crate::tensor::{f16, Tensor};

/// Row format: `instances` is a list with one entry per batch element. Single-input models take a
/// bare value per instance; otherwise each instance is an object keyed by input name.
pub fn tensors_from_instances(
    sig: &Signature,
    instances: &[JsonInput],
) -> Result<Vec<Tensor>, ApiError> {
    if instances.is_empty() {
        return Err(ApiError::BadRequest(
            "'instances' is empty: send at least one instance".into(),
        ));
    }
    let mut per_input: Vec<Vec<&NdArray>> =
        vec![Vec::with_capacity(instances.len()); sig.inputs.len()];
    for (i, instance) in instances.iter().enumerate() {
        for (slot, spec) in per_input.iter_mut().zip(&sig.inputs) {
            let value = lookup(sig, instance, spec)
                .map_err(|e| ApiError::BadRequest(format!("instances[{i}]: {e}")))?;
            slot.push(
                tensor_value(value, spec)
                    .map_err(|e| ApiError::BadRequest(format!("instances[{i}]: {e}")))?,
            );
        }
        if let JsonInput::Named(named) = instance {
            check_known_names(sig, named)
                .map_err(|e| ApiError::BadRequest(format!("instances[{i}]: {e}")))?;
        }
    }
    sig.inputs
        .iter()
        .zip(per_input)
        .map(|(spec, rows)| stack(spec, &rows))
        .collect()
}

/// Columnar format: `inputs` holds whole tensors (batch dimension included): a bare value for a
/// single-input model, else an object keyed by input name.
pub fn tensors_from_inputs(sig: &Signature, inputs: &JsonInput) -> Result<Vec<Tensor>, ApiError> {
    if let JsonInput::Named(named) = inputs {
        check_known_names(sig, named).map_err(ApiError::BadRequest)?;
    }
    sig.inputs
        .iter()
        .map(|spec| {
            let array = lookup(sig, inputs, spec)
                .and_then(|v| tensor_value(v, spec))
                .map_err(ApiError::BadRequest)?;
            if !spec.accepts_shape(&array.shape) {
                return Err(shape_mismatch(spec, &array.shape));
            }
            to_tensor(spec, &array.shape, &[array])
        })
        .collect()
}

/// The value for `spec` in one instance (or in the columnar `inputs`).
fn lookup<'a>(
    sig: &Signature,
    value: &'a JsonInput,
    spec: &TensorSpec,
) -> Result<&'a JsonInput, String> {
    match value {
        JsonInput::Named(named) => named
            .iter()
            .find(|(k, _)| *k == spec.name)
            .map(|(_, v)| v)
            .ok_or_else(|| serving::missing_input(sig, spec)),
        _ if sig.inputs.len() == 1 => Ok(value),
        _ => Err(format!(
            "the model takes {} inputs ({}): send an object keyed by input name",
            sig.inputs.len(),
            sig.input_names()
        )),
    }
}

fn check_known_names(sig: &Signature, named: &[(String, JsonInput)]) -> Result<(), String> {
    match named
        .iter()
        .find(|(k, _)| !sig.inputs.iter().any(|s| s.name == *k))
    {
        Some((unknown, _)) => Err(serving::unknown_input(sig, unknown)),
        None => Ok(()),
    }
}

fn tensor_value<'a>(value: &'a JsonInput, spec: &TensorSpec) -> Result<&'a NdArray, String> {
    match value {
        JsonInput::Tensor(t) => Ok(t),
        JsonInput::B64(_) | JsonInput::B64List(_) => Err(format!(
            "input '{}' is a {} tensor of shape {}: binary {{\"b64\": ...}} values are not accepted for it",
            spec.name,
            spec.dtype,
            spec.shape_string()
        )),
        JsonInput::Named(_) => Err(format!("input '{}' must be a tensor, not an object", spec.name)),
    }
}

/// Stacks per-instance arrays along a new batch dimension.
fn stack(spec: &TensorSpec, rows: &[&NdArray]) -> Result<Tensor, ApiError> {
    let first = rows[0];
    if let Some((i, odd)) = rows
        .iter()
        .enumerate()
        .find(|(_, r)| r.shape != first.shape)
    {
        return Err(ApiError::BadRequest(format!(
            "ragged instances for input '{}': instances[{i}] has shape {:?} but instances[0] has {:?}; all instances must have the same shape",
            spec.name, odd.shape, first.shape
        )));
    }
    let mut shape = Vec::with_capacity(first.shape.len() + 1);
    shape.push(rows.len());
    shape.extend_from_slice(&first.shape);
    if !spec.accepts_shape(&shape) {
        if spec.shape.len() == shape.len() && spec.shape[0].fixed().is_some_and(|b| b != rows.len())
        {
            return Err(ApiError::BadRequest(format!(
                "input '{}' has a fixed batch size of {} (shape {}), but the request has {} instances",
                spec.name,
                spec.shape[0].fixed().unwrap_or_default(),
                spec.shape_string(),
                rows.len()
            )));
        }
        return Err(shape_mismatch(spec, &shape));
    }
    to_tensor(spec, &shape, rows)
}

/// Builds the tensor of `spec`'s dtype from the rows, converting and range-checking each value.
fn to_tensor(spec: &TensorSpec, shape: &[usize], rows: &[&NdArray]) -> Result<Tensor, ApiError> {
    macro_rules! build {
        ($t:ty, $conv:expr) => {{
            let len: usize = rows.iter().map(|r| r.data.len()).sum();
            let mut flat: Vec<$t> = Vec::with_capacity(len);
            for row in rows {
                for s in &row.data {
                    let v: Option<$t> = $conv(*s);
                    flat.push(v.ok_or_else(|| wrong_value(spec, *s))?);
                }
            }
            Tensor::from_vec(shape.to_vec(), flat)
                .map_err(|e| ApiError::BadRequest(format!("input '{}': {e}", spec.name)))
        }};
    }
    match spec.dtype {
        DType::F32 => build!(f32, |s| as_f64(s)
            .map(|v| (v, v as f32))
            .and_then(|(v, n)| narrowed(v, n.is_finite(), n))),
        DType::F64 => build!(f64, as_f64),
        DType::F16 => build!(f16, |s| as_f64(s)
            .map(|v| (v, f16::from_f64(v)))
            .and_then(|(v, n)| narrowed(v, n.is_finite(), n))),
        DType::I8 => build!(i8, |s| as_i128(s).and_then(|v| i8::try_from(v).ok())),
        DType::I16 => build!(i16, |s| as_i128(s).and_then(|v| i16::try_from(v).ok())),
        DType::I32 => build!(i32, |s| as_i128(s).and_then(|v| i32::try_from(v).ok())),
        DType::I64 => build!(i64, |s| as_i128(s).and_then(|v| i64::try_from(v).ok())),
        DType::U8 => build!(u8, |s| as_i128(s).and_then(|v| u8::try_from(v).ok())),
        DType::U16 => build!(u16, |s| as_i128(s).and_then(|v| u16::try_from(v).ok())),
        DType::U32 => build!(u32, |s| as_i128(s).and_then(|v| u32::try_from(v).ok())),
        DType::U64 => build!(u64, |s| as_i128(s).and_then(|v| u64::try_from(v).ok())),
        DType::Bool => build!(bool, |s| match s {
            Scalar::B(b) => Some(b),
            _ => None,
        }),
        DType::String => Err(ApiError::BadRequest(format!(
            "input '{}' takes strings, which this server does not accept as tensors",
            spec.name
        ))),
    }
}

/// `v` in a narrower float type, unless it was finite and is no longer (`1e39` as float32):
/// TF Serving refuses such a value rather than sending infinity to the model.
fn narrowed<T>(v: f64, finite: bool, n: T) -> Option<T> {
    (finite || !v.is_finite()).then_some(n)
}

fn as_f64(s: Scalar) -> Option<f64> {
    match s {
        Scalar::F(v) => Some(v),
        Scalar::I(v) => Some(v as f64),
        Scalar::U(v) => Some(v as f64),
        Scalar::B(_) => None,
    }
}

/// Integers, and floats with no fractional part (`3.0`), which some clients write for integers.
fn as_i128(s: Scalar) -> Option<i128> {
    match s {
        Scalar::I(v) => Some(v.into()),
        Scalar::U(v) => Some(v.into()),
        Scalar::F(v) if v.fract() == 0.0 && v.abs() < 9.3e18 => Some(v as i128),
        _ => None,
    }
}

fn wrong_value(spec: &TensorSpec, s: Scalar) -> ApiError {
    let what = match (spec.dtype, s) {
        (DType::Bool, _) => "true or false".to_string(),
        (DType::F16 | DType::F32 | DType::F64, Scalar::F(_)) => {
            format!("numbers in the range of {}", spec.dtype)
        }
        (DType::F16 | DType::F32 | DType::F64, _) => "numbers".to_string(),
        (dt, _) => format!("integers in the range of {dt}"),
    };
    ApiError::BadRequest(format!(
        "input '{}' is {} and takes {what}; got {s}",
        spec.name, spec.dtype
    ))
}
