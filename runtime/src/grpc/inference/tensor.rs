//! The Open Inference Protocol's gRPC tensors <-> [`Tensor`]s: an input's typed `contents`
//! (the field of its datatype) or its entry of `raw_input_contents` (little-endian elements,
//! BYTES as 4-byte length + bytes: `tensor::raw`), and outputs the same way, raw when the
//! request was raw (tritonclient's `as_numpy` reads only `raw_output_contents`).

use crate::error::ApiError;
use crate::proto::inference::model_infer_request::InferInputTensor;
use crate::proto::inference::model_infer_response::InferOutputTensor;
use crate::proto::inference::InferTensorContents;
use crate::serving::Value;
use crate::tensor::{raw, DType, Tensor, TensorData};

/// Every input as a named value; `raw` is the request's `raw_input_contents` (empty when the
/// values are typed). Errors name the input.
pub fn inputs(
    inputs: Vec<InferInputTensor>,
    raw: Vec<Vec<u8>>,
) -> Result<Vec<(String, Value)>, ApiError> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(ApiError::BadRequest(format!(
            "raw_input_contents has {} entries for {} inputs: one per input, in order",
            raw.len(),
            inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    inputs
        .into_iter()
        .map(|input| {
            let name = input.name.clone();
            let value = one_input(input, raw.next())
                .map_err(|e| ApiError::BadRequest(format!("input '{name}': {e}")))?;
            Ok((name, value))
        })
        .collect()
}

fn one_input(input: InferInputTensor, raw: Option<Vec<u8>>) -> Result<Value, String> {
    let dtype = DType::from_v2_name(&input.datatype).ok_or_else(|| {
        format!(
            "datatype '{}' is not one this server takes: BOOL, INT8-64, UINT8-64, FP16, FP32, FP64 or BYTES",
            input.datatype
        )
    })?;
    let shape = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| format!("shape {:?} has a negative dimension", input.shape))?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
    if let Some(bytes) = raw {
        if input.contents.is_some() {
            return Err("has typed contents and a raw_input_contents entry: send one".into());
        }
        if dtype == DType::String {
            let values = raw::bytes_elements(&bytes)?;
            count(values.len(), n, &shape)?;
            return Ok(Value::Bytes { shape, values });
        }
        return raw::from_le_bytes(dtype, shape, &bytes).map(Value::Tensor);
    }
    let Some(c) = input.contents else {
        return Err(
            "has neither typed contents nor a raw_input_contents entry: send its values in one"
                .into(),
        );
    };
    let field = contents_field(dtype);
    fn narrow<S: Copy, T: TryFrom<S>>(values: &[S]) -> Result<Vec<T>, String> {
        values
            .iter()
            .map(|&v| T::try_from(v).map_err(|_| "a value is out of the datatype's range".into()))
            .collect()
    }
    let data = match dtype {
        DType::F32 => TensorData::F32(c.fp32_contents),
        DType::F64 => TensorData::F64(c.fp64_contents),
        DType::I8 => TensorData::I8(narrow(&c.int_contents)?),
        DType::I16 => TensorData::I16(narrow(&c.int_contents)?),
        DType::I32 => TensorData::I32(c.int_contents),
        DType::I64 => TensorData::I64(c.int64_contents),
        DType::U8 => TensorData::U8(narrow(&c.uint_contents)?),
        DType::U16 => TensorData::U16(narrow(&c.uint_contents)?),
        DType::U32 => TensorData::U32(c.uint_contents),
        DType::U64 => TensorData::U64(c.uint64_contents),
        DType::Bool => TensorData::Bool(c.bool_contents),
        DType::String => {
            count(c.bytes_contents.len(), n, &shape).map_err(|e| format!("{e} in {field}"))?;
            return Ok(Value::Bytes {
                shape,
                values: c.bytes_contents,
            });
        }
        DType::F16 => {
            return Err("FP16 has no typed contents field: send it in raw_input_contents".into())
        }
    };
    count(data.len(), n, &shape).map_err(|e| format!("{e} in {field}"))?;
    Tensor::new(shape, data)
        .map(Value::Tensor)
        .map_err(|e| e.to_string())
}

/// The typed field that carries a datatype's values.
fn contents_field(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "contents.bool_contents",
        DType::I8 | DType::I16 | DType::I32 => "contents.int_contents",
        DType::I64 => "contents.int64_contents",
        DType::U8 | DType::U16 | DType::U32 => "contents.uint_contents",
        DType::U64 => "contents.uint64_contents",
        DType::F32 => "contents.fp32_contents",
        DType::F64 => "contents.fp64_contents",
        DType::String => "contents.bytes_contents",
        DType::F16 => "raw_input_contents",
    }
}

fn count(got: usize, want: usize, shape: &[usize]) -> Result<(), String> {
    if got != want {
        return Err(format!(
            "{got} value(s) for shape {shape:?}, which holds {want}"
        ));
    }
    Ok(())
}

/// An output tensor: its name, datatype and shape, with typed `contents` unless `raw` (then
/// its bytes go to `raw_output_contents`, returned beside).
pub fn output(name: &str, t: &Tensor, raw: bool) -> (InferOutputTensor, Option<Vec<u8>>) {
    let mut out = InferOutputTensor {
        name: name.to_string(),
        datatype: t.dtype().v2_name().to_string(),
        shape: t.shape().iter().map(|&d| d as i64).collect(),
        ..Default::default()
    };
    if raw {
        return (out, Some(raw::to_le_bytes(t.data())));
    }
    let widen = |v: &[u8]| v.iter().map(|&x| u32::from(x)).collect();
    let mut c = InferTensorContents::default();
    match t.data() {
        TensorData::F32(v) => c.fp32_contents = v.clone(),
        TensorData::F64(v) => c.fp64_contents = v.clone(),
        TensorData::I8(v) => c.int_contents = v.iter().map(|&x| x.into()).collect(),
        TensorData::I16(v) => c.int_contents = v.iter().map(|&x| x.into()).collect(),
        TensorData::I32(v) => c.int_contents = v.clone(),
        TensorData::I64(v) => c.int64_contents = v.clone(),
        TensorData::U8(v) => c.uint_contents = widen(v),
        TensorData::U16(v) => c.uint_contents = v.iter().map(|&x| x.into()).collect(),
        TensorData::U32(v) => c.uint_contents = v.clone(),
        TensorData::U64(v) => c.uint64_contents = v.clone(),
        TensorData::Bool(v) => c.bool_contents = v.clone(),
        TensorData::String(v) => {
            c.bytes_contents = v.iter().map(|s| s.as_bytes().to_vec()).collect()
        }
        // No typed field holds FP16: the caller answers raw when an output is FP16.
        TensorData::F16(_) => return (out, Some(raw::to_le_bytes(t.data()))),
    }
    out.contents = Some(c);
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        datatype: &str,
        shape: &[i64],
        contents: Option<InferTensorContents>,
    ) -> InferInputTensor {
        InferInputTensor {
            name: "x".into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            contents,
            ..Default::default()
        }
    }

    #[test]
    fn typed_contents_by_datatype_and_range() {
        let c = InferTensorContents {
            int_contents: vec![1, -2],
            ..Default::default()
        };
        let named = inputs(vec![input("INT8", &[2], Some(c))], vec![]).unwrap();
        let Value::Tensor(t) = &named[0].1 else {
            panic!("a tensor")
        };
        assert_eq!(t.as_slice::<i8>().unwrap(), [1, -2]);
        let c = InferTensorContents {
            int_contents: vec![300],
            ..Default::default()
        };
        assert!(inputs(vec![input("INT8", &[1], Some(c))], vec![]).is_err());
    }

    #[test]
    fn missing_or_misplaced_values_say_where_they_go() {
        let err = inputs(vec![input("FP32", &[2], None)], vec![]).unwrap_err();
        assert!(err.to_string().contains("neither typed contents"), "{err}");
        let c = InferTensorContents {
            int_contents: vec![1, 2],
            ..Default::default()
        };
        let err = inputs(vec![input("FP32", &[2], Some(c))], vec![]).unwrap_err();
        assert!(err.to_string().contains("fp32_contents"), "{err}");
        let err = inputs(vec![input("FP32", &[2], None)], vec![vec![0; 8], vec![]]).unwrap_err();
        assert!(err.to_string().contains("2 entries for 1 inputs"), "{err}");
    }

    #[test]
    fn outputs_typed_or_raw() {
        let t = Tensor::from_vec(vec![2], vec![1u8, 200]).unwrap();
        let (typed, bytes) = output("y", &t, false);
        assert_eq!(typed.contents.unwrap().uint_contents, [1, 200]);
        assert!(bytes.is_none());
        let (raw_out, bytes) = output("y", &t, true);
        assert!(raw_out.contents.is_none());
        assert_eq!(bytes.unwrap(), [1, 200]);
        assert_eq!(raw_out.datatype, "UINT8");
    }
}
