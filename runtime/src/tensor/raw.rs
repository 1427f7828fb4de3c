//! Tensors as raw little-endian bytes, the layout of the Open Inference Protocol's binary tensor
//! extension (REST) and of `raw_input_contents`/`raw_output_contents` (gRPC), and of
//! TensorFlow's `tensor_content`: elements back to back, BOOL one byte each, and (V2 only)
//! BYTES elements as a 4-byte little-endian length followed by the bytes.

use super::{f16, DType, Tensor, TensorData};

/// `data` as raw bytes: little-endian elements; strings length-prefixed (V2's BYTES layout).
pub fn to_le_bytes(data: &TensorData) -> Vec<u8> {
    macro_rules! le {
        ($v:expr) => {
            $v.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
    }
    match data {
        TensorData::F16(v) => le!(v),
        TensorData::F32(v) => le!(v),
        TensorData::F64(v) => le!(v),
        TensorData::I8(v) => le!(v),
        TensorData::I16(v) => le!(v),
        TensorData::I32(v) => le!(v),
        TensorData::I64(v) => le!(v),
        TensorData::U8(v) => v.clone(),
        TensorData::U16(v) => le!(v),
        TensorData::U32(v) => le!(v),
        TensorData::U64(v) => le!(v),
        TensorData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        TensorData::String(v) => {
            let mut out = Vec::with_capacity(v.iter().map(|s| s.len() + 4).sum());
            for s in v {
                // A string longer than 4 GiB cannot be in a response under the body limit.
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            out
        }
    }
}

/// A fixed-size tensor of `dtype` and `shape` from raw little-endian bytes; the error says how
/// many bytes the shape needs. For BYTES use [`bytes_elements`].
pub fn from_le_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor, String> {
    const NOT_FIXED: &str = "BYTES elements are length-prefixed, not fixed-size";
    let width = dtype.raw_size().ok_or(NOT_FIXED)?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
    if bytes.len() != n.saturating_mul(width) {
        return Err(format!(
            "{} bytes, but shape {shape:?} of {} needs {} ({n} elements of {width} bytes)",
            bytes.len(),
            dtype.v2_name(),
            n.saturating_mul(width)
        ));
    }
    macro_rules! le {
        ($t:ty) => {
            bytes
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect()
        };
    }
    let data = match dtype {
        DType::F16 => TensorData::F16(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        DType::F32 => TensorData::F32(le!(f32)),
        DType::F64 => TensorData::F64(le!(f64)),
        DType::I8 => TensorData::I8(le!(i8)),
        DType::I16 => TensorData::I16(le!(i16)),
        DType::I32 => TensorData::I32(le!(i32)),
        DType::I64 => TensorData::I64(le!(i64)),
        DType::U8 => TensorData::U8(bytes.to_vec()),
        DType::U16 => TensorData::U16(le!(u16)),
        DType::U32 => TensorData::U32(le!(u32)),
        DType::U64 => TensorData::U64(le!(u64)),
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DType::String => return Err(NOT_FIXED.into()),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// The elements of a raw BYTES buffer: each a 4-byte little-endian length and that many bytes.
/// Fails when a length runs past the end.
pub fn bytes_elements(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!(
                "a BYTES element needs a 4-byte length; {} byte(s) are left",
                bytes.len()
            ));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!(
                "a BYTES element claims {len} bytes but only {} are left",
                rest.len()
            ));
        }
        out.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_size_round_trips() {
        let t = Tensor::from_vec(vec![2, 2], vec![1.5f32, -2.0, 0.0, f32::MAX]).unwrap();
        let raw = to_le_bytes(t.data());
        assert_eq!(raw.len(), 16);
        assert_eq!(from_le_bytes(DType::F32, vec![2, 2], &raw).unwrap(), t);
        let b = Tensor::from_vec(vec![3], vec![true, false, true]).unwrap();
        assert_eq!(to_le_bytes(b.data()), [1, 0, 1]);
        let err = from_le_bytes(DType::I64, vec![2], &[0; 12]).unwrap_err();
        assert!(err.contains("needs 16"), "{err}");
    }

    #[test]
    fn bytes_are_length_prefixed() {
        let t = TensorData::String(vec!["ab".into(), String::new(), "c".into()]);
        let raw = to_le_bytes(&t);
        assert_eq!(raw, [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0, 1, 0, 0, 0, b'c']);
        assert_eq!(
            bytes_elements(&raw).unwrap(),
            [b"ab".to_vec(), vec![], b"c".to_vec()]
        );
        assert!(bytes_elements(&[5, 0, 0, 0, 1])
            .unwrap_err()
            .contains("claims 5"));
        assert!(bytes_elements(&[1, 0])
            .unwrap_err()
            .contains("4-byte length"));
    }
}
