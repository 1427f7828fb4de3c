//! Output tensors → TF Serving's response JSON: `{"predictions": ...}` (row format, one entry
//! per instance) or `{"outputs": ...}` (columnar), nested arrays in the tensor's shape.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::json::{write_json, Float};
use crate::error::ApiError;
use crate::signature::Signature;
use crate::tensor::{f16, Element, Tensor, TensorData};

/// One output tensor, or one batch row of it, as nested JSON arrays.
pub struct TensorJson<'a> {
    pub tensor: &'a Tensor,
    pub row: Option<usize>,
}

impl Serialize for TensorJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let shape = self.tensor.shape();
        let (shape, range) = match self.row {
            Some(r) => {
                let per: usize = shape.iter().skip(1).product();
                (shape.get(1..).unwrap_or_default(), r * per..(r + 1) * per)
            }
            None => (shape, 0..self.tensor.data().len()),
        };
        serialize_data(self.tensor.data(), range, shape, s)
    }
}

/// One tensor's values as a flat JSON array, the Open Inference Protocol's `data`.
pub struct FlatJson<'a>(pub &'a Tensor);

impl Serialize for FlatJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0.data().len();
        serialize_data(self.0.data(), 0..n, &[n], s)
    }
}

/// `data[range]` as nested arrays of `shape`.
fn serialize_data<S: Serializer>(
    data: &TensorData,
    range: std::ops::Range<usize>,
    shape: &[usize],
    s: S,
) -> Result<S::Ok, S::Error> {
    match data {
        TensorData::F16(v) => serialize_nd(&Half(&v[range]), shape, s),
        TensorData::F32(v) => serialize_nd(&Floats(&v[range]), shape, s),
        TensorData::F64(v) => serialize_nd(&Floats(&v[range]), shape, s),
        TensorData::I8(v) => serialize_nd(&&v[range], shape, s),
        TensorData::I16(v) => serialize_nd(&&v[range], shape, s),
        TensorData::I32(v) => serialize_nd(&&v[range], shape, s),
        TensorData::I64(v) => serialize_nd(&&v[range], shape, s),
        TensorData::U8(v) => serialize_nd(&&v[range], shape, s),
        TensorData::U16(v) => serialize_nd(&&v[range], shape, s),
        TensorData::U32(v) => serialize_nd(&&v[range], shape, s),
        TensorData::U64(v) => serialize_nd(&&v[range], shape, s),
        TensorData::Bool(v) => serialize_nd(&&v[range], shape, s),
        TensorData::String(v) => serialize_nd(&&v[range], shape, s),
    }
}

/// Values that serialize one by one: plain slices, and float16 written as float32.
trait Values {
    fn len(&self) -> usize;
    fn serialize_at<S: SerializeSeq>(&self, i: usize, seq: &mut S) -> Result<(), S::Error>;
    fn serialize_one<S: Serializer>(&self, i: usize, s: S) -> Result<S::Ok, S::Error>;
    fn sub(&self, start: usize, end: usize) -> Self;
}

impl<T: Serialize + Element> Values for &[T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn serialize_at<S: SerializeSeq>(&self, i: usize, seq: &mut S) -> Result<(), S::Error> {
        seq.serialize_element(&self[i])
    }
    fn serialize_one<S: Serializer>(&self, i: usize, s: S) -> Result<S::Ok, S::Error> {
        self[i].serialize(s)
    }
    fn sub(&self, start: usize, end: usize) -> Self {
        &self[start..end]
    }
}

struct Half<'a>(&'a [f16]);

impl Values for Half<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn serialize_at<S: SerializeSeq>(&self, i: usize, seq: &mut S) -> Result<(), S::Error> {
        seq.serialize_element(&Float(self.0[i].to_f32()))
    }
    fn serialize_one<S: Serializer>(&self, i: usize, s: S) -> Result<S::Ok, S::Error> {
        Float(self.0[i].to_f32()).serialize(s)
    }
    fn sub(&self, start: usize, end: usize) -> Self {
        Half(&self.0[start..end])
    }
}

/// float32 or float64 values, non-finite ones written as TF Serving writes them.
struct Floats<'a, T>(&'a [T]);

impl<T: Copy + Into<f64> + Serialize> Values for Floats<'_, T> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn serialize_at<S: SerializeSeq>(&self, i: usize, seq: &mut S) -> Result<(), S::Error> {
        seq.serialize_element(&Float(self.0[i]))
    }
    fn serialize_one<S: Serializer>(&self, i: usize, s: S) -> Result<S::Ok, S::Error> {
        Float(self.0[i]).serialize(s)
    }
    fn sub(&self, start: usize, end: usize) -> Self {
        Floats(&self.0[start..end])
    }
}

/// `values` (row-major, `product(shape)` of them) as nested arrays of `shape`.
fn serialize_nd<V: Values, S: Serializer>(
    values: &V,
    shape: &[usize],
    s: S,
) -> Result<S::Ok, S::Error> {
    let Some((&outer, inner)) = shape.split_first() else {
        return if values.len() == 0 {
            s.serialize_unit()
        } else {
            values.serialize_one(0, s)
        };
    };
    let mut seq = s.serialize_seq(Some(outer))?;
    if inner.is_empty() {
        // The innermost dimension: values directly, no sub-view per element.
        for i in 0..outer.min(values.len()) {
            values.serialize_at(i, &mut seq)?;
        }
    } else {
        let per: usize = inner.iter().product();
        for i in 0..outer {
            seq.serialize_element(&Nested {
                values: values.sub(i * per, (i + 1) * per),
                shape: inner,
            })?;
        }
    }
    seq.end()
}

struct Nested<'a, V> {
    values: V,
    shape: &'a [usize],
}

impl<V: Values> Serialize for Nested<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_nd(&self.values, self.shape, s)
    }
}

/// Outputs as `{"predictions": [...]}`: a bare value per batch row for single-output models,
/// else an object keyed by output name per row.
pub fn predictions_json(
    sig: &Signature,
    outputs: &[Tensor],
    batch: usize,
) -> Result<Vec<u8>, ApiError> {
    for (spec, t) in sig.outputs.iter().zip(outputs) {
        if t.batch() != Some(batch) {
            return Err(ApiError::BadRequest(format!(
                "output '{}' has shape {:?}, whose first dimension is not the batch size {batch}, so it cannot be split into rows; use the columnar format ({{\"inputs\": ...}})",
                spec.name,
                t.shape()
            )));
        }
    }
    let rows = Rows {
        sig,
        outputs,
        batch,
    };
    write_json(&Wrapped {
        key: "predictions",
        value: &rows,
    })
}

/// Outputs as `{"outputs": ...}`: the whole tensor for single-output models, else keyed by name.
pub fn outputs_json(sig: &Signature, outputs: &[Tensor]) -> Result<Vec<u8>, ApiError> {
    write_json(&Wrapped {
        key: "outputs",
        value: &Named {
            sig,
            outputs,
            row: None,
        },
    })
}

struct Wrapped<'a, T> {
    key: &'static str,
    value: &'a T,
}

impl<T: Serialize> Serialize for Wrapped<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.key, self.value)?;
        map.end()
    }
}

struct Rows<'a> {
    sig: &'a Signature,
    outputs: &'a [Tensor],
    batch: usize,
}

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.batch))?;
        for row in 0..self.batch {
            seq.serialize_element(&Named {
                sig: self.sig,
                outputs: self.outputs,
                row: Some(row),
            })?;
        }
        seq.end()
    }
}

/// A single output bare, several as an object keyed by output name (as TF Serving does).
struct Named<'a> {
    sig: &'a Signature,
    outputs: &'a [Tensor],
    row: Option<usize>,
}

impl Serialize for Named<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let [only] = self.outputs {
            return TensorJson {
                tensor: only,
                row: self.row,
            }
            .serialize(s);
        }
        let mut map = s.serialize_map(Some(self.outputs.len()))?;
        for (spec, t) in self.sig.outputs.iter().zip(self.outputs) {
            map.serialize_entry(
                &spec.name,
                &TensorJson {
                    tensor: t,
                    row: self.row,
                },
            )?;
        }
        map.end()
    }
}
