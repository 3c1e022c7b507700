//! NumPy `.npy` files in and out: golden vectors, `kiln run` inputs, outputs and dumps.

use crate::exec::TensorData;
use crate::ir::DType;
use std::path::Path;

/// An n-dimensional array read from or written to an `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major elements.
    pub data: TensorData,
}

/// Why an `.npy` file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file system failed.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not an npy array kiln can use.
    #[error("{file}: {message}")]
    Format {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads an `.npy` file of float32, int8, int32 or int64 in C order.
pub fn read(path: &Path) -> Result<Array, NpyError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        file: file.clone(),
        source,
    })?;
    parse(&bytes).map_err(|message| NpyError::Format { file, message })
}

fn parse(bytes: &[u8]) -> Result<Array, String> {
    let npy = npyz::NpyFile::new(bytes).map_err(|e| format!("not an npy file: {e}"))?;
    if npy.order() != npyz::Order::C && npy.shape().len() > 1 {
        return Err(
            "Fortran-order arrays are not supported; save with np.ascontiguousarray".into(),
        );
    }
    let descr = npy.dtype().descr();
    let dtype = match descr.trim_matches('\'') {
        "<f4" => DType::F32,
        "|i1" | "<i1" => DType::I8,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        other => {
            return Err(format!(
                "dtype {other} is not one of float32, int8, int32, int64"
            ))
        }
    };
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} too large")))
        .collect::<Result<_, _>>()?;
    // The header must not claim more data than the file holds (bounded allocation).
    let needed = shape
        .iter()
        .try_fold(dtype.size(), |a, &d| a.checked_mul(d));
    if needed.is_none_or(|n| n > bytes.len()) {
        return Err(format!(
            "header claims shape {shape:?}, more data than the file holds"
        ));
    }
    let io = |e: std::io::Error| format!("reading data: {e}");
    let data = match dtype {
        DType::F32 => TensorData::F32(npy.into_vec().map_err(io)?),
        DType::I8 => TensorData::I8(npy.into_vec().map_err(io)?),
        DType::I32 => TensorData::I32(npy.into_vec().map_err(io)?),
        DType::I64 => TensorData::I64(npy.into_vec().map_err(io)?),
    };
    Ok(Array { shape, data })
}

/// Writes `data` with `shape` as an `.npy` file.
pub fn write(path: &Path, shape: &[usize], data: &TensorData) -> Result<(), NpyError> {
    use npyz::WriterBuilder;
    let file = path.display().to_string();
    let io = |source| NpyError::Io {
        file: file.clone(),
        source,
    };
    let out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    macro_rules! emit {
        ($v:expr) => {{
            let mut w = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&shape)
                .writer(out)
                .begin_nd()
                .map_err(io)?;
            w.extend($v.iter().copied()).map_err(io)?;
            w.finish().map_err(io)
        }};
    }
    match data {
        TensorData::F32(v) => emit!(v),
        TensorData::I8(v) => emit!(v),
        TensorData::I32(v) => emit!(v),
        TensorData::I64(v) => emit!(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype() {
        let dir = std::env::temp_dir().join(format!("kiln-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for data in [
            TensorData::F32(vec![1.5, -2.0, 0.25, 8.0, 9.0, 10.0]),
            TensorData::I8(vec![-128, 127, 0, 1, 2, 3]),
            TensorData::I32(vec![i32::MIN, 5, 6, 7, 8, i32::MAX]),
            TensorData::I64(vec![1, 2, 3, 4, 5, 6]),
        ] {
            let path = dir.join("a.npy");
            write(&path, &[2, 3], &data).unwrap();
            assert_eq!(
                read(&path).unwrap(),
                Array {
                    shape: vec![2, 3],
                    data
                }
            );
        }
    }

    /// An npy v1.0 file with the given header dict and data bytes.
    fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut header = dict.to_string();
        while !(10 + header.len() + 1).is_multiple_of(16) {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn rejects_headers_that_claim_more_than_the_file() {
        let ok = npy_bytes(
            "{'descr': '|i1', 'fortran_order': False, 'shape': (4,), }",
            &[1, 2, 3, 4],
        );
        assert_eq!(parse(&ok).unwrap().shape, vec![4]);
        let huge = npy_bytes(
            "{'descr': '|i1', 'fortran_order': False, 'shape': (99999999999,), }",
            &[1, 2],
        );
        let err = parse(&huge).unwrap_err();
        assert!(err.contains("more data than the file holds"), "{err}");
        let float16 = npy_bytes(
            "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }",
            &[0; 4],
        );
        assert!(parse(&float16).unwrap_err().contains("<f2"));
        assert!(parse(&ok[..5]).is_err());
    }
}
