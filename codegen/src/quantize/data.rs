//! Calibration and evaluation samples from files.
//!
//! Three layouts are accepted for each graph input:
//!
//! * a folder of `.npy` files (sorted by name), each one sample or a batch;
//! * one `.npy` file: one sample (the input's shape) or a batch `[N, ...]` whose
//!   sample shape is the input's, ignoring size-1 dimensions (`[N, 28, 28]` fits an
//!   input `[1, 28, 28, 1]`);
//! * an IDX file (the MNIST format), optionally gzip-compressed: the first dimension
//!   counts samples and each sample is reshaped to the input when the element counts
//!   match. Integer pixels are divided by [`DataOptions::divisor`] (255 by default, so
//!   bytes become `[0, 1]`); float IDX data is used as is.
//!
//! `.npy` data must be float32 (the float graph's input type). Every error names the
//! file and what does not fit.

use crate::exec::TensorData;
use crate::ir::{DType, Graph, TensorInfo};
use crate::npy;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest number of elements one IDX file may declare (bounded allocation).
pub const MAX_IDX_ELEMENTS: usize = 1 << 30;

/// How files become samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataOptions {
    /// Integer IDX values are divided by this (255.0: bytes to `[0, 1]`).
    pub divisor: f32,
    /// Keep at most this many samples (the first ones).
    pub limit: Option<usize>,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            divisor: 255.0,
            limit: None,
        }
    }
}

/// Why samples could not be loaded, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file system failed.
    #[error("{file}: {source}")]
    Io {
        /// The file or folder.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file's contents do not fit the model input.
    #[error("{file}: {message}")]
    Format {
        /// The file or folder.
        file: String,
        /// What is wrong.
        message: String,
    },
}

fn format_error(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Format {
        file: path.display().to_string(),
        message: message.into(),
    }
}

/// Samples for every graph input, one path per input (in order): `result[s][i]` is
/// sample `s` of input `i`. All inputs must yield the same number of samples.
pub fn load_for_graph(
    paths: &[PathBuf],
    graph: &Graph,
    options: &DataOptions,
) -> Result<Vec<Vec<TensorData>>, DataError> {
    if paths.len() != graph.inputs.len() {
        let file = paths
            .first()
            .map_or_else(String::new, |p| p.display().to_string());
        return Err(DataError::Format {
            file,
            message: format!(
                "the model has {} input(s), {} data path(s) given",
                graph.inputs.len(),
                paths.len()
            ),
        });
    }
    let mut per_input = Vec::with_capacity(paths.len());
    for (path, id) in paths.iter().zip(&graph.inputs) {
        per_input.push(load(path, graph.info(*id), options)?);
    }
    let count = per_input.first().map_or(0, Vec::len);
    for (path, s) in paths.iter().zip(&per_input) {
        if s.len() != count {
            return Err(format_error(
                path,
                format!("{} samples, the first input's data has {count}", s.len()),
            ));
        }
    }
    let mut samples: Vec<Vec<TensorData>> = (0..count).map(|_| Vec::new()).collect();
    for input in per_input {
        for (s, v) in input.into_iter().enumerate() {
            samples[s].push(v);
        }
    }
    Ok(samples)
}

/// The samples in `path` (folder, `.npy` or IDX) for a float32 input `input`.
pub fn load(
    path: &Path,
    input: &TensorInfo,
    options: &DataOptions,
) -> Result<Vec<TensorData>, DataError> {
    if input.dtype != DType::F32 {
        return Err(format_error(
            path,
            format!(
                "the model input is {}; calibration data is for float32 inputs",
                input.dtype.name()
            ),
        ));
    }
    if !(options.divisor.is_finite() && options.divisor != 0.0) {
        return Err(format_error(
            path,
            format!("divisor {} is not a non-zero number", options.divisor),
        ));
    }
    let io = |source| DataError::Io {
        file: path.display().to_string(),
        source,
    };
    let limit = options.limit.unwrap_or(usize::MAX);
    let mut samples = Vec::new();
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format_error(path, "the folder holds no .npy files"));
        }
        for file in files {
            if samples.len() >= limit {
                break;
            }
            let array = npy::read(&file).map_err(|e| npy_error(&file, e))?;
            samples.extend(split_npy(&file, array, input)?);
        }
    } else {
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mut magic = [0u8; 2];
        let got = read_up_to(&mut f, &mut magic).map_err(io)?;
        drop(f);
        match &magic[..got] {
            [0x93, b'N'] => {
                let array = npy::read(path).map_err(|e| npy_error(path, e))?;
                samples = split_npy(path, array, input)?;
            }
            [0x1f, 0x8b] | [0, 0] => samples = read_idx(path, input, options, limit)?,
            _ => {
                return Err(format_error(
                    path,
                    "is neither an .npy file, an IDX file nor a gzip-compressed IDX file",
                ))
            }
        }
    }
    samples.truncate(limit);
    if samples.is_empty() {
        return Err(format_error(path, "holds no samples"));
    }
    if let Some((s, i)) = samples.iter().enumerate().find_map(|(s, v)| {
        v.as_f32()
            .and_then(|v| v.iter().position(|x| !x.is_finite()))
            .map(|i| (s, i))
    }) {
        return Err(format_error(
            path,
            format!("sample {s} holds NaN or infinity at element {i}"),
        ));
    }
    Ok(samples)
}

fn npy_error(path: &Path, e: npy::NpyError) -> DataError {
    match e {
        npy::NpyError::Io { source, .. } => DataError::Io {
            file: path.display().to_string(),
            source,
        },
        npy::NpyError::Format { message, .. } => format_error(path, message),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            k => got += k,
        }
    }
    Ok(got)
}

/// Shape without its size-1 dimensions.
fn squeezed(shape: &[usize]) -> Vec<usize> {
    shape.iter().copied().filter(|&d| d != 1).collect()
}

/// Splits an npy array into samples of `input`'s shape.
fn split_npy(
    path: &Path,
    array: npy::Array,
    input: &TensorInfo,
) -> Result<Vec<TensorData>, DataError> {
    let per = input.num_elements();
    let TensorData::F32(values) = array.data else {
        return Err(format_error(
            path,
            format!(
                "holds {}; calibration data must be float32 (or an IDX file of pixels)",
                array.data.dtype().name()
            ),
        ));
    };
    let count = if array.shape == input.shape {
        1
    } else if !array.shape.is_empty()
        && squeezed(&array.shape[1..]) == squeezed(&input.shape)
        && array.shape[1..].iter().product::<usize>() == per
    {
        array.shape[0]
    } else {
        return Err(format_error(
            path,
            format!(
                "shape {:?} is neither the model input's {:?} nor [N, ...] of it",
                array.shape, input.shape
            ),
        ));
    };
    if count == 0 || per == 0 {
        return Err(format_error(path, "holds no samples"));
    }
    Ok(values
        .chunks_exact(per)
        .take(count)
        .map(|c| TensorData::F32(c.to_vec()))
        .collect())
}

/// Reads an IDX file (gzip-compressed or not): `[0, 0, type, ndim]`, `ndim` big-endian
/// u32 dimensions, then big-endian data.
fn read_idx(
    path: &Path,
    input: &TensorInfo,
    options: &DataOptions,
    limit: usize,
) -> Result<Vec<TensorData>, DataError> {
    let io = |source| DataError::Io {
        file: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 2];
    let mut peek = std::io::BufReader::new(file);
    {
        use std::io::BufRead;
        let buf = peek.fill_buf().map_err(io)?;
        head[..buf.len().min(2)].copy_from_slice(&buf[..buf.len().min(2)]);
    }
    let mut reader: Box<dyn Read> = if head == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(peek))
    } else {
        Box::new(peek)
    };
    let gz = |e: std::io::Error| format_error(path, format!("cannot decompress: {e}"));
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut reader, &mut magic).map_err(gz)?;
    if got < 4 || magic[0] != 0 || magic[1] != 0 {
        return Err(format_error(path, "not an IDX file (bad magic number)"));
    }
    let (elem, is_int) = match magic[2] {
        0x08 | 0x09 => (1, true),
        0x0B => (2, true),
        0x0C => (4, true),
        0x0D => (4, false),
        0x0E => (8, false),
        t => {
            return Err(format_error(
                path,
                format!("unknown IDX element type 0x{t:02x}"),
            ))
        }
    };
    let ndim = usize::from(magic[3]);
    if ndim == 0 {
        return Err(format_error(path, "IDX file with no dimensions"));
    }
    let mut dims_raw = vec![0u8; 4 * ndim];
    if read_up_to(&mut reader, &mut dims_raw).map_err(gz)? < dims_raw.len() {
        return Err(format_error(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = dims_raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let per: usize = dims[1..].iter().product();
    if dims[1..]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .is_none_or(|p| p > MAX_IDX_ELEMENTS)
    {
        return Err(format_error(
            path,
            format!("IDX dimensions {dims:?} too large"),
        ));
    }
    if per == 0 || per != input.num_elements() {
        let hint = if ndim == 1 { " (a label file?)" } else { "" };
        return Err(format_error(
            path,
            format!(
                "IDX samples of shape {:?} ({per} elements) do not fit the model input {:?} ({} elements){hint}",
                &dims[1..],
                input.shape,
                input.num_elements()
            ),
        ));
    }
    let count = dims[0].min(limit);
    if count.checked_mul(per).is_none_or(|n| n > MAX_IDX_ELEMENTS) {
        return Err(format_error(
            path,
            format!("{count} samples of {per} elements are too many; use a sample limit"),
        ));
    }
    let want = count * per * elem;
    let mut bytes = Vec::new();
    reader
        .take(want as u64)
        .read_to_end(&mut bytes)
        .map_err(gz)?;
    if bytes.len() < want {
        return Err(format_error(
            path,
            format!(
                "truncated: {} bytes of sample data, the header's {count} x {:?} needs {want}",
                bytes.len(),
                &dims[1..]
            ),
        ));
    }
    let divisor = if is_int { options.divisor } else { 1.0 };
    let value = |c: &[u8]| -> f32 {
        match (magic[2], c) {
            (0x08, [b]) => f32::from(*b),
            (0x09, [b]) => f32::from(*b as i8),
            (0x0B, [a, b]) => f32::from(i16::from_be_bytes([*a, *b])),
            (0x0C, [a, b, c, d]) => i32::from_be_bytes([*a, *b, *c, *d]) as f32,
            (0x0D, [a, b, c, d]) => f32::from_be_bytes([*a, *b, *c, *d]),
            (0x0E, c) => f64::from_be_bytes(c.try_into().unwrap_or([0; 8])) as f32,
            _ => 0.0,
        }
    };
    Ok(bytes
        .chunks_exact(per * elem)
        .map(|s| TensorData::F32(s.chunks_exact(elem).map(|c| value(c) / divisor).collect()))
        .collect())
}
