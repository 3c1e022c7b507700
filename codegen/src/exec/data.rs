//! Owned, typed tensor contents as the host executor passes them around.

use crate::ir::DType;

/// The elements of one tensor, row-major, in its own element type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// Signed bytes (quantized values).
    I8(Vec<i8>),
    /// 32-bit integers.
    I32(Vec<i32>),
    /// 64-bit integers.
    I64(Vec<i64>),
}

impl TensorData {
    /// Zeros of the given type.
    pub fn zeros(dtype: DType, len: usize) -> Self {
        match dtype {
            DType::F32 => TensorData::F32(vec![0.0; len]),
            DType::I8 => TensorData::I8(vec![0; len]),
            DType::I32 => TensorData::I32(vec![0; len]),
            DType::I64 => TensorData::I64(vec![0; len]),
        }
    }

    /// Decodes little-endian constant bytes. `bytes.len()` must be a multiple of the
    /// element size (validated graphs guarantee it).
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Self {
        match dtype {
            DType::F32 => TensorData::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            DType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
            DType::I32 => TensorData::I32(
                bytes
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            DType::I64 => TensorData::I64(
                bytes
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
        }
    }

    /// Little-endian bytes, the inverse of [`Self::from_le_bytes`] (constant data).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I8(_) => DType::I8,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
        }
    }

    /// The elements if they are `i8`.
    pub fn as_i8(&self) -> Option<&[i8]> {
        match self {
            TensorData::I8(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are `f32`.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each element as f64, for printing and comparisons.
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::I8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// Elements `[start, start + len)` as a new tensor, used to split batched npy files.
    pub fn slice(&self, start: usize, len: usize) -> TensorData {
        let r = start..start + len;
        match self {
            TensorData::F32(v) => TensorData::F32(v[r].to_vec()),
            TensorData::I8(v) => TensorData::I8(v[r].to_vec()),
            TensorData::I32(v) => TensorData::I32(v[r].to_vec()),
            TensorData::I64(v) => TensorData::I64(v[r].to_vec()),
        }
    }
}
