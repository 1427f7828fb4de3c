//! The engine-neutral tensor: an ONNX element type, a shape and the values, row-major and
//! contiguous. The REST decoder, the image signature and the response encoder speak it; each
//! engine converts it to and from its own type at its edge (`engine/*`).

mod dtype;
pub mod raw;

pub use half::f16;

pub use dtype::{DType, ALL};

/// A tensor's values, one variant per [`DType`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    String(Vec<String>),
}

/// Runs `$body` with `$v` bound to the vector inside any [`TensorData`] variant.
macro_rules! each_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::tensor::TensorData::F16($v) => $body,
            $crate::tensor::TensorData::F32($v) => $body,
            $crate::tensor::TensorData::F64($v) => $body,
            $crate::tensor::TensorData::I8($v) => $body,
            $crate::tensor::TensorData::I16($v) => $body,
            $crate::tensor::TensorData::I32($v) => $body,
            $crate::tensor::TensorData::I64($v) => $body,
            $crate::tensor::TensorData::U8($v) => $body,
            $crate::tensor::TensorData::U16($v) => $body,
            $crate::tensor::TensorData::U32($v) => $body,
            $crate::tensor::TensorData::U64($v) => $body,
            $crate::tensor::TensorData::Bool($v) => $body,
            $crate::tensor::TensorData::String($v) => $body,
        }
    };
}
// Only the tract engine matches on every dtype; builds without it (the fuzz targets) do not.
#[cfg_attr(not(feature = "tract"), allow(unused_imports))]
pub(crate) use each_data;

/// Rust types that are tensor elements.
pub trait Element: Clone + Default + Send + Sync + 'static {
    const DTYPE: DType;
    fn wrap(values: Vec<Self>) -> TensorData;
    fn slice(data: &TensorData) -> Option<&[Self]>;
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(values: Vec<Self>) -> TensorData {
                TensorData::$variant(values)
            }
            fn slice(data: &TensorData) -> Option<&[Self]> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

element!(f16, F16);
element!(f32, F32);
element!(f64, F64);
element!(i8, I8);
element!(i16, I16);
element!(i32, I32);
element!(i64, I64);
element!(u8, U8);
element!(u16, U16);
element!(u32, U32);
element!(u64, U64);
element!(bool, Bool);
element!(String, String);

/// Why a tensor could not be made: the message says which shapes or types disagreed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TensorError(pub String);

/// A dense tensor: `shape` (empty for a scalar) and its `product(shape)` values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F16(_) => DType::F16,
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I8(_) => DType::I8,
            TensorData::I16(_) => DType::I16,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::U8(_) => DType::U8,
            TensorData::U16(_) => DType::U16,
            TensorData::U32(_) => DType::U32,
            TensorData::U64(_) => DType::U64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::String(_) => DType::String,
        }
    }

    pub fn len(&self) -> usize {
        each_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` default values (zeros, false, empty strings) of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> TensorData {
        fn z<T: Element>(n: usize) -> TensorData {
            T::wrap(vec![T::default(); n])
        }
        match dtype {
            DType::F16 => z::<f16>(n),
            DType::F32 => z::<f32>(n),
            DType::F64 => z::<f64>(n),
            DType::I8 => z::<i8>(n),
            DType::I16 => z::<i16>(n),
            DType::I32 => z::<i32>(n),
            DType::I64 => z::<i64>(n),
            DType::U8 => z::<u8>(n),
            DType::U16 => z::<u16>(n),
            DType::U32 => z::<u32>(n),
            DType::U64 => z::<u64>(n),
            DType::Bool => z::<bool>(n),
            DType::String => z::<String>(n),
        }
    }
}

impl Tensor {
    /// A tensor of `shape` holding `data`; fails unless `data` has `product(shape)` values.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, TensorError> {
        let want: usize = shape.iter().product();
        if data.len() != want {
            return Err(TensorError(format!(
                "{} values do not fill a tensor of shape {shape:?} ({want} values)",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    /// As [`Tensor::new`], from a vector of a Rust element type.
    pub fn from_vec<T: Element>(shape: Vec<usize>, values: Vec<T>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, T::wrap(values))
    }

    /// A tensor of `shape` filled with zeros (false, empty strings).
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: TensorData::zeros(dtype, n),
        }
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    /// The values as `T`, if that is the element type.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::slice(&self.data)
    }

    /// The first dimension (the batch, by convention), if the tensor has one.
    pub fn batch(&self) -> Option<usize> {
        self.shape.first().copied()
    }

    /// Values per entry of the first dimension.
    fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Entries `start..end` of the first dimension. Fails for a scalar or a range past the end.
    pub fn rows(&self, start: usize, end: usize) -> Result<Tensor, TensorError> {
        let n = self
            .batch()
            .ok_or_else(|| TensorError("a scalar has no rows".into()))?;
        if start > end || end > n {
            return Err(TensorError(format!(
                "rows {start}..{end} of a tensor of shape {:?}",
                self.shape
            )));
        }
        let row = self.row_len();
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        let data = each_data!(&self.data, v => Element::wrap(v[start * row..end * row].to_vec()));
        Ok(Tensor { shape, data })
    }

    /// Tensors of one element type and equal trailing dimensions, stacked along the first.
    pub fn concat_rows(parts: &[Tensor]) -> Result<Tensor, TensorError> {
        let first = parts
            .first()
            .ok_or_else(|| TensorError("nothing to concatenate".into()))?;
        if first.shape.is_empty() {
            return Err(TensorError("scalars cannot be concatenated".into()));
        }
        if let Some(odd) = parts
            .iter()
            .find(|p| p.dtype() != first.dtype() || p.shape.get(1..) != first.shape.get(1..))
        {
            return Err(TensorError(format!(
                "cannot concatenate a {} tensor of shape {:?} with a {} tensor of shape {:?}",
                odd.dtype(),
                odd.shape,
                first.dtype(),
                first.shape
            )));
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        fn join<T: Element>(parts: &[Tensor]) -> TensorData {
            let len = parts.iter().map(|p| p.data.len()).sum();
            let mut out = Vec::with_capacity(len);
            for p in parts {
                out.extend_from_slice(p.as_slice::<T>().unwrap_or_default());
            }
            T::wrap(out)
        }
        let data = match first.dtype() {
            DType::F16 => join::<f16>(parts),
            DType::F32 => join::<f32>(parts),
            DType::F64 => join::<f64>(parts),
            DType::I8 => join::<i8>(parts),
            DType::I16 => join::<i16>(parts),
            DType::I32 => join::<i32>(parts),
            DType::I64 => join::<i64>(parts),
            DType::U8 => join::<u8>(parts),
            DType::U16 => join::<u16>(parts),
            DType::U32 => join::<u32>(parts),
            DType::U64 => join::<u64>(parts),
            DType::Bool => join::<bool>(parts),
            DType::String => join::<String>(parts),
        };
        Ok(Tensor { shape, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_concat_round_trip() {
        let t = Tensor::from_vec(vec![3, 2], vec![1i64, 2, 3, 4, 5, 6]).unwrap();
        let a = t.rows(0, 1).unwrap();
        let b = t.rows(1, 3).unwrap();
        assert_eq!(a.shape(), [1, 2]);
        assert_eq!(b.as_slice::<i64>().unwrap(), [3, 4, 5, 6]);
        assert_eq!(Tensor::concat_rows(&[a, b]).unwrap(), t);
        assert!(t.rows(2, 4).is_err());
    }

    #[test]
    fn mismatches_are_refused() {
        assert!(Tensor::from_vec(vec![2, 2], vec![1.0f32; 3]).is_err());
        let f = Tensor::zeros(DType::F32, vec![1, 2]);
        let i = Tensor::zeros(DType::I32, vec![1, 2]);
        let wide = Tensor::zeros(DType::F32, vec![1, 3]);
        assert!(Tensor::concat_rows(&[f.clone(), i]).is_err());
        assert!(Tensor::concat_rows(&[f, wide]).is_err());
        assert_eq!(
            Tensor::zeros(DType::String, vec![2])
                .as_slice::<String>()
                .unwrap(),
            ["", ""]
        );
    }
}
