//! `tensorflow.TensorProto` <-> [`Tensor`], following TensorFlow's own reading of the message
//! (tensorflow/core/framework/tensor.cc): values come from `tensor_content` (little-endian,
//! row-major) or from the typed field of the dtype; a typed field with fewer values than the
//! shape holds is filled with its last value (so one value fills the tensor), an empty one with
//! zeros.

use crate::proto::tensorflow::{tensor_shape_proto, DataType, TensorProto, TensorShapeProto};
use crate::signature::{DType, Dim, TensorSpec};
use crate::tensor::{f16, Tensor, TensorData};

/// A decoded request tensor. DT_STRING stays bytes: image files are not text.
pub use crate::serving::Value;

/// The TensorFlow dtype of an ONNX dtype.
pub fn data_type(dtype: DType) -> DataType {
    match dtype {
        DType::F16 => DataType::DtHalf,
        DType::F32 => DataType::DtFloat,
        DType::F64 => DataType::DtDouble,
        DType::I8 => DataType::DtInt8,
        DType::I16 => DataType::DtInt16,
        DType::I32 => DataType::DtInt32,
        DType::I64 => DataType::DtInt64,
        DType::U8 => DataType::DtUint8,
        DType::U16 => DataType::DtUint16,
        DType::U32 => DataType::DtUint32,
        DType::U64 => DataType::DtUint64,
        DType::Bool => DataType::DtBool,
        DType::String => DataType::DtString,
    }
}

/// The name of a dtype number as TensorFlow spells it ("DT_FLOAT"), or the number.
pub fn dtype_name(dtype: i32) -> String {
    DataType::try_from(dtype).map_or_else(
        |_| format!("dtype {dtype}"),
        |d| d.as_str_name().to_string(),
    )
}

/// A `TensorShapeProto` of known sizes, outermost first (`[1, 224, 224, 3]`).
pub fn known_shape(dims: impl IntoIterator<Item = i64>) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims
            .into_iter()
            .map(|size| tensor_shape_proto::Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    }
}

/// `spec`'s shape as a `TensorShapeProto`: -1 and the symbol for a free dimension.
pub fn shape_proto(spec: &TensorSpec) -> TensorShapeProto {
    TensorShapeProto {
        dim: spec
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => tensor_shape_proto::Dim {
                    size: *n as i64,
                    name: String::new(),
                },
                Dim::Dynamic(name) => tensor_shape_proto::Dim {
                    size: -1,
                    name: name.clone(),
                },
            })
            .collect(),
        unknown_rank: false,
    }
}

/// Decodes one request tensor. `max_bytes` bounds the memory a short typed field may be filled
/// up to (a one-value tensor can claim any shape): the request message limit. Errors say what is
/// wrong, not where: the caller adds the input name.
pub fn decode(t: TensorProto, max_bytes: usize) -> Result<Value, String> {
    let shape = shape_of(t.tensor_shape.as_ref())?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
    let dtype = DataType::try_from(t.dtype).unwrap_or(DataType::DtInvalid);
    let content = &t.tensor_content;
    macro_rules! numeric {
        ($t:ty, $field:expr, $conv:expr) => {{
            let values: Vec<$t> = if !content.is_empty() {
                from_le::<$t, { std::mem::size_of::<$t>() }>(content, n, <$t>::from_le_bytes)?
            } else {
                fill(&$field, n, max_bytes / std::mem::size_of::<$t>())?
                    .into_iter()
                    .map($conv)
                    .collect::<Result<Vec<$t>, String>>()?
            };
            values
        }};
    }
    let data = match dtype {
        DataType::DtFloat => TensorData::F32(numeric!(f32, t.float_val, Ok)),
        DataType::DtDouble => TensorData::F64(numeric!(f64, t.double_val, Ok)),
        DataType::DtHalf => {
            // Each int32 carries 16 bits; TensorFlow keeps the low ones.
            let bits: Vec<u16> = numeric!(u16, t.half_val, |v: i32| Ok((v & 0xffff) as u16));
            TensorData::F16(bits.into_iter().map(f16::from_bits).collect())
        }
        DataType::DtInt32 => TensorData::I32(numeric!(i32, t.int_val, Ok)),
        DataType::DtInt16 => TensorData::I16(numeric!(i16, t.int_val, narrow)),
        DataType::DtInt8 => TensorData::I8(numeric!(i8, t.int_val, narrow)),
        DataType::DtUint8 => TensorData::U8(numeric!(u8, t.int_val, narrow)),
        DataType::DtUint16 => TensorData::U16(numeric!(u16, t.int_val, narrow)),
        DataType::DtInt64 => TensorData::I64(numeric!(i64, t.int64_val, Ok)),
        DataType::DtUint32 => TensorData::U32(numeric!(u32, t.uint32_val, Ok)),
        DataType::DtUint64 => TensorData::U64(numeric!(u64, t.uint64_val, Ok)),
        DataType::DtBool => {
            let bytes: Vec<u8> = numeric!(u8, t.bool_val, |b: bool| Ok(u8::from(b)));
            TensorData::Bool(bytes.into_iter().map(|b| b != 0).collect())
        }
        DataType::DtString => {
            if !content.is_empty() {
                return Err("DT_STRING tensors cannot use tensor_content; send string_val".into());
            }
            // One value repeated is as much memory as many: bound the bytes (each value also
            // costs a Vec), not the count.
            let longest = t.string_val.iter().map(Vec::len).max().unwrap_or(0);
            let per = longest + std::mem::size_of::<Vec<u8>>();
            let values = fill(&t.string_val, n, max_bytes / per)?;
            return Ok(Value::Bytes { shape, values });
        }
        other => {
            return Err(format!(
                "{} is not an ONNX dtype this server takes; send DT_FLOAT, DT_DOUBLE, DT_HALF, DT_INT8-64, DT_UINT8-64, DT_BOOL or DT_STRING",
                other.as_str_name()
            ))
        }
    };
    Tensor::new(shape, data)
        .map(Value::Tensor)
        .map_err(|e| e.to_string())
}

fn shape_of(shape: Option<&TensorShapeProto>) -> Result<Vec<usize>, String> {
    let Some(shape) = shape else {
        return Ok(Vec::new());
    };
    if shape.unknown_rank {
        return Err("tensor_shape has unknown_rank set: a request tensor needs its shape".into());
    }
    shape
        .dim
        .iter()
        .map(|d| {
            usize::try_from(d.size).map_err(|_| {
                format!(
                    "tensor_shape has a dimension of size {}: request tensors need every size",
                    d.size
                )
            })
        })
        .collect()
}

/// TensorFlow's rule for a typed field: exactly `n` values, or fewer filled up with the last
/// one (zeros when there are none), up to `max_elements`. More values than elements is an error
/// here (TensorFlow would ignore the extra ones: a client bug worth reporting).
fn fill<T: Clone + Default>(values: &[T], n: usize, max_elements: usize) -> Result<Vec<T>, String> {
    if values.len() == n {
        return Ok(values.to_vec());
    }
    if values.len() > n {
        return Err(format!(
            "the tensor holds {} values but its shape has {n} elements",
            values.len()
        ));
    }
    if n > max_elements {
        return Err(format!(
            "{} value(s) would be repeated to fill {n} elements, more than the request size limit allows ({max_elements}); send every value",
            values.len()
        ));
    }
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(values);
    out.resize(n, values.last().cloned().unwrap_or_default());
    Ok(out)
}

fn from_le<T, const W: usize>(
    bytes: &[u8],
    n: usize,
    read: fn([u8; W]) -> T,
) -> Result<Vec<T>, String> {
    if bytes.len() != n.saturating_mul(W) {
        return Err(format!(
            "tensor_content has {} bytes, but the shape's {n} elements of {W} bytes need {}",
            bytes.len(),
            n.saturating_mul(W)
        ));
    }
    Ok(bytes
        .chunks_exact(W)
        .map(|c| {
            let mut a = [0u8; W];
            a.copy_from_slice(c);
            read(a)
        })
        .collect())
}

fn narrow<T: TryFrom<i32>>(v: i32) -> Result<T, String> {
    T::try_from(v).map_err(|_| {
        format!(
            "int_val {v} is out of range for {}",
            std::any::type_name::<T>()
        )
    })
}

/// Encodes a response tensor: the typed field of its dtype (what TF Serving answers and what
/// clients read, e.g. `outputs["x"].float_val`), or `tensor_content` bytes when `raw` is set
/// (strings always use `string_val`).
pub fn encode(t: &Tensor, raw: bool) -> TensorProto {
    let mut p = TensorProto {
        dtype: data_type(t.dtype()) as i32,
        tensor_shape: Some(known_shape(t.shape().iter().map(|&d| d as i64))),
        ..Default::default()
    };
    macro_rules! raw_bytes {
        ($v:expr) => {
            $v.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
    }
    match t.data() {
        TensorData::String(v) => p.string_val = v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        TensorData::Bool(v) if raw => p.tensor_content = v.iter().map(|&b| u8::from(b)).collect(),
        TensorData::F16(v) if raw => p.tensor_content = raw_bytes!(v),
        TensorData::F32(v) if raw => p.tensor_content = raw_bytes!(v),
        TensorData::F64(v) if raw => p.tensor_content = raw_bytes!(v),
        TensorData::I8(v) if raw => p.tensor_content = raw_bytes!(v),
        TensorData::I16(v) if raw => p.tensor_content = raw_bytes!(v),
        TensorData::I32(v) if raw => p.tensor_content = raw_bytes!(v),
        TensorData::I64(v) if raw => p.tensor_content = raw_bytes!(v),
        TensorData::U8(v) if raw => p.tensor_content = v.clone(),
        TensorData::U16(v) if raw => p.tensor_content = raw_bytes!(v),
        TensorData::U32(v) if raw => p.tensor_content = raw_bytes!(v),
        TensorData::U64(v) if raw => p.tensor_content = raw_bytes!(v),
        TensorData::F16(v) => p.half_val = v.iter().map(|x| i32::from(x.to_bits())).collect(),
        TensorData::F32(v) => p.float_val = v.clone(),
        TensorData::F64(v) => p.double_val = v.clone(),
        TensorData::I8(v) => p.int_val = v.iter().map(|&x| x.into()).collect(),
        TensorData::I16(v) => p.int_val = v.iter().map(|&x| x.into()).collect(),
        TensorData::I32(v) => p.int_val = v.clone(),
        TensorData::U8(v) => p.int_val = v.iter().map(|&x| x.into()).collect(),
        TensorData::U16(v) => p.int_val = v.iter().map(|&x| x.into()).collect(),
        TensorData::I64(v) => p.int64_val = v.clone(),
        TensorData::U32(v) => p.uint32_val = v.clone(),
        TensorData::U64(v) => p.uint64_val = v.clone(),
        TensorData::Bool(v) => p.bool_val = v.clone(),
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dtype: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            dtype: dtype as i32,
            tensor_shape: Some(known_shape(dims.iter().copied())),
            ..Default::default()
        }
    }

    fn tensor(v: Value) -> Tensor {
        match v {
            Value::Tensor(t) => t,
            Value::Bytes { .. } => panic!("expected a numeric tensor"),
        }
    }

    #[test]
    fn typed_content_and_broadcast_agree() {
        let mut typed = proto(DataType::DtFloat, &[2, 2]);
        typed.float_val = vec![1.0, 2.0, 3.0, 4.0];
        let mut raw = proto(DataType::DtFloat, &[2, 2]);
        raw.tensor_content = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let a = tensor(decode(typed, 100).unwrap());
        let b = tensor(decode(raw, 100).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.shape(), &[2, 2]);

        let mut one = proto(DataType::DtFloat, &[3]);
        one.float_val = vec![7.0];
        assert_eq!(
            tensor(decode(one, 100).unwrap()).as_slice::<f32>(),
            Some(&[7.0f32; 3][..])
        );
    }

    #[test]
    fn bad_tensors_say_why() {
        let mut short = proto(DataType::DtFloat, &[2]);
        short.tensor_content = vec![0; 4];
        assert!(decode(short, 100).err().unwrap().contains("need 8"));
        let mut too_many = proto(DataType::DtInt32, &[1]);
        too_many.int_val = vec![1, 2];
        assert!(decode(too_many, 100).err().unwrap().contains("2 values"));
        let mut range = proto(DataType::DtUint8, &[1]);
        range.int_val = vec![300];
        assert!(decode(range, 100).err().unwrap().contains("out of range"));
        let huge = proto(DataType::DtFloat, &[1 << 40]);
        assert!(decode(huge, 100).err().unwrap().contains("size limit"));
        let mut free = proto(DataType::DtFloat, &[-1]);
        free.float_val = vec![1.0];
        assert!(decode(free, 100).err().unwrap().contains("-1"));
        assert!(decode(proto(DataType::DtComplex64, &[1]), 100)
            .err()
            .unwrap()
            .contains("DT_COMPLEX64"));
    }

    #[test]
    fn encode_round_trips_through_decode() {
        let t = Tensor::from_vec(vec![2, 1], vec![1.5f32, -2.0]).unwrap();
        for raw in [false, true] {
            let p = encode(&t, raw);
            assert_eq!(p.float_val.is_empty(), raw);
            assert_eq!(tensor(decode(p, 100).unwrap()), t);
        }
        let h = Tensor::from_vec(vec![1], vec![f16::from_f32(0.5)]).unwrap();
        assert_eq!(tensor(decode(encode(&h, false), 100).unwrap()), h);
    }
}
