//! An Open Inference Protocol infer request (`POST /v2/models/{m}/infer`) as named tensors: the
//! JSON header (`id`, `parameters`, `inputs`, `outputs`) and, with the binary tensor extension,
//! the raw bytes after it. Follows the spec's REST schema (kserve/open-inference-protocol) and
//! Triton's binary extension: `Inference-Header-Content-Length` says where the JSON ends, an
//! input's `parameters.binary_data_size` how many bytes of the rest are its, in input order.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::data::flat;

use crate::error::ApiError;
use crate::tensor::{raw, DType, Tensor, TensorData};

/// The JSON part of an infer request.
#[derive(Deserialize)]
pub struct InferRequest<'a> {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(borrow)]
    pub inputs: Vec<RequestInput<'a>>,
    /// The outputs to return, in this order; all of them when absent.
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input tensor: `data` in JSON (nested or flat, row-major), or `binary_data_size` bytes of
/// the binary part.
#[derive(Deserialize)]
pub struct RequestInput<'a> {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Kept as its JSON text until the datatype is known (`data::flat`).
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

/// A requested output; `parameters.binary_data` asks for it in binary.
#[derive(Deserialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// A decoded input: a tensor, or BYTES elements kept as bytes (an image signature takes them
/// as files; other models as UTF-8 text).
pub use crate::serving::Value as Input;

/// Splits a body into its JSON header and binary part: `header_length` is the value of
/// `Inference-Header-Content-Length`, absent for a pure JSON request.
pub fn split_body<'b>(
    body: &'b [u8],
    header_length: Option<&str>,
) -> Result<(&'b [u8], &'b [u8]), ApiError> {
    let Some(n) = header_length else {
        return Ok((body, &[]));
    };
    let n: usize = n.trim().parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "Inference-Header-Content-Length '{n}' is not a byte count"
        ))
    })?;
    if n > body.len() {
        return Err(ApiError::BadRequest(format!(
            "Inference-Header-Content-Length is {n} but the body has {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(n))
}

/// Parses the JSON header.
pub fn parse_request(json: &[u8]) -> Result<InferRequest<'_>, ApiError> {
    serde_json::from_slice(json).map_err(|e| {
        let hint = if e.to_string().starts_with("trailing characters") {
            "; binary tensor data after the JSON needs the Inference-Header-Content-Length header (the JSON's length in bytes)"
        } else {
            ""
        };
        ApiError::BadRequest(format!("malformed infer request: {e}{hint}"))
    })
}

/// Every input's tensor, named, consuming `binary` in input order.
pub fn inputs(
    inputs: &[RequestInput<'_>],
    mut binary: &[u8],
) -> Result<Vec<(String, Input)>, ApiError> {
    let mut named = Vec::with_capacity(inputs.len());
    for input in inputs {
        let at = |e: String| ApiError::BadRequest(format!("input '{}': {e}", input.name));
        let (value, rest) = one_input(input, binary).map_err(at)?;
        binary = rest;
        named.push((input.name.clone(), value));
    }
    if !binary.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{} byte(s) of binary data follow the inputs' binary_data_size; each binary input says its size",
            binary.len()
        )));
    }
    Ok(named)
}

fn one_input<'b>(input: &RequestInput<'_>, binary: &'b [u8]) -> Result<(Input, &'b [u8]), String> {
    let dtype = DType::from_v2_name(&input.datatype).ok_or_else(|| {
        format!(
            "datatype '{}' is not one this server takes: BOOL, INT8-64, UINT8-64, FP16, FP32, FP64 or BYTES",
            input.datatype
        )
    })?;
    let shape = input
        .shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                format!(
                    "shape {:?} has a negative dimension; a request gives every size",
                    input.shape
                )
            })
        })
        .collect::<Result<Vec<usize>, String>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
    match (input.parameters.get("binary_data_size"), &input.data) {
        (Some(_), Some(_)) => Err("has both 'data' and binary_data_size: send one".into()),
        (None, None) => Err("has neither 'data' nor parameters.binary_data_size".into()),
        (Some(size), None) => {
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or("binary_data_size must be a byte count")?;
            if size > binary.len() {
                return Err(format!(
                    "binary_data_size is {size} but only {} binary byte(s) are left",
                    binary.len()
                ));
            }
            let (mine, rest) = binary.split_at(size);
            let value = if dtype == DType::String {
                let values = raw::bytes_elements(mine)?;
                count(values.len(), n, &shape)?;
                Input::Bytes { shape, values }
            } else {
                Input::Tensor(raw::from_le_bytes(dtype, shape, mine)?)
            };
            Ok((value, rest))
        }
        (None, Some(data)) => Ok((json_values(dtype, shape, n, data)?, binary)),
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

/// `data` as a tensor of `dtype` and `shape` (`n` elements): numbers for the numeric types
/// (integers in range), true or false for BOOL, strings for BYTES.
fn json_values(
    dtype: DType,
    shape: Vec<usize>,
    n: usize,
    data: &RawValue,
) -> Result<Input, String> {
    let values = match dtype {
        DType::F16 => TensorData::F16(
            flat::<f32>(data, n)?
                .into_iter()
                .map(crate::tensor::f16::from_f32)
                .collect(),
        ),
        DType::F32 => TensorData::F32(flat(data, n)?),
        DType::F64 => TensorData::F64(flat(data, n)?),
        DType::I8 => TensorData::I8(flat(data, n)?),
        DType::I16 => TensorData::I16(flat(data, n)?),
        DType::I32 => TensorData::I32(flat(data, n)?),
        DType::I64 => TensorData::I64(flat(data, n)?),
        DType::U8 => TensorData::U8(flat(data, n)?),
        DType::U16 => TensorData::U16(flat(data, n)?),
        DType::U32 => TensorData::U32(flat(data, n)?),
        DType::U64 => TensorData::U64(flat(data, n)?),
        DType::Bool => TensorData::Bool(flat(data, n)?),
        DType::String => {
            let values: Vec<String> = flat(data, n)?;
            count(values.len(), n, &shape)?;
            let values = values.into_iter().map(String::into_bytes).collect();
            return Ok(Input::Bytes { shape, values });
        }
    };
    count(values.len(), n, &shape)?;
    Tensor::new(shape, values)
        .map(Input::Tensor)
        .map_err(|e| e.to_string())
}

/// A boolean parameter (`binary_data`, `binary_data_output`); absent is false.
pub fn flag(parameters: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match parameters.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::BadRequest(format!(
            "parameter '{key}' must be true or false, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> InferRequest<'_> {
        parse_request(json.as_bytes()).unwrap()
    }

    #[test]
    fn nested_and_flat_data_are_one_tensor() {
        for data in ["[[1, 2], [3, 4]]", "[1, 2, 3, 4]"] {
            let json = format!(
                r#"{{"inputs": [{{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": {data}}}]}}"#
            );
            let r = request(&json);
            let named = inputs(&r.inputs, &[]).unwrap();
            let Input::Tensor(t) = &named[0].1 else {
                panic!("a tensor")
            };
            assert_eq!(t.as_slice::<i32>().unwrap(), [1, 2, 3, 4]);
        }
    }

    #[test]
    fn binary_inputs_take_their_bytes_in_order() {
        let r = request(
            r#"{"inputs": [
                {"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
                {"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}
            ]}"#,
        );
        let mut binary = [1.0f32, 2.0].map(f32::to_le_bytes).concat();
        binary.extend_from_slice(&[2, 0, 0, 0, b'h', b'i']);
        let named = inputs(&r.inputs, &binary).unwrap();
        assert!(matches!(&named[1].1, Input::Bytes { values, .. } if values[0] == b"hi"));
        let err = inputs(&r.inputs, &binary[..10]).unwrap_err().to_string();
        assert!(err.contains("input 's'"), "{err}");
        let mut extra = binary.clone();
        extra.push(0);
        assert!(inputs(&r.inputs, &extra).is_err());
    }

    #[test]
    fn wrong_values_say_which_input_and_why() {
        for (json, want) in [
            (
                r#""shape": [3], "datatype": "INT8", "data": [1, 2, 300]"#,
                "300",
            ),
            (
                r#""shape": [2], "datatype": "FP32", "data": [1]"#,
                "1 value(s) for shape [2]",
            ),
            (
                r#""shape": [-1], "datatype": "FP32", "data": [1]"#,
                "negative",
            ),
            (
                r#""shape": [1], "datatype": "BF16", "data": [1]"#,
                "datatype 'BF16'",
            ),
            (r#""shape": [1], "datatype": "FP32""#, "neither"),
        ] {
            let body = format!(r#"{{"inputs": [{{"name": "x", {json}}}]}}"#);
            let r = request(&body);
            let err = inputs(&r.inputs, &[]).unwrap_err().to_string();
            assert!(err.contains("input 'x'") && err.contains(want), "{err}");
        }
    }

    #[test]
    fn the_header_length_splits_the_body() {
        assert_eq!(
            split_body(b"{}abc", Some("2")).unwrap(),
            (&b"{}"[..], &b"abc"[..])
        );
        assert!(split_body(b"{}", Some("9")).is_err());
        assert!(split_body(b"{}", Some("x")).is_err());
        assert_eq!(split_body(b"{}", None).unwrap().1, b"");
    }
}
