//! Decoding ONNX `TensorProto`s (initializers, Constant values) into [`Const`]s,
//! including initializers stored in external data files.

use super::consts::{Const, ConstData, MAX_ELEMENTS};
use super::proto::tensor_proto::{DataLocation, DataType};
use super::proto::TensorProto;
use super::Problem;
use std::path::{Component, Path};

type Result<T> = std::result::Result<T, Problem>;

fn malformed<T>(m: impl Into<String>) -> Result<T> {
    Err(Problem::Malformed(m.into()))
}

/// The ONNX element type's name, for messages.
pub(super) fn type_name(t: i32) -> String {
    DataType::try_from(t)
        .map(|d| d.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("type {t}"))
}

/// Decodes `t`; `base_dir` is the model's folder, where external data files live.
pub(super) fn decode(t: &TensorProto, base_dir: Option<&Path>) -> Result<Const> {
    let name = t.name();
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| Problem::Malformed(format!("tensor '{name}' has dims {:?}", t.dims)))?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            Problem::Malformed(format!("tensor '{name}' of shape {shape:?} is too large"))
        })?;
    if t.segment.is_some() {
        return malformed(format!("tensor '{name}' is segmented"));
    }
    let external;
    let raw: Option<&[u8]> = if t.data_location() == DataLocation::External {
        external = read_external(t, base_dir)?;
        Some(&external)
    } else if t.raw_data.is_some() {
        Some(t.raw_data())
    } else {
        None
    };
    let dtype = DataType::try_from(t.data_type()).map_err(|_| {
        Problem::Malformed(format!("tensor '{name}' has data type {}", t.data_type()))
    })?;
    let size = match dtype {
        DataType::Float | DataType::Int32 => 4,
        DataType::Int64 | DataType::Double => 8,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        _ => {
            return Err(Problem::Unsupported(format!(
                "tensor '{name}' has element type {}",
                type_name(t.data_type())
            )))
        }
    };
    let data = match raw {
        Some(bytes) => {
            if bytes.len() != count * size {
                return malformed(format!(
                    "tensor '{name}' of shape {shape:?} ({}) has {} bytes of data, expected {}",
                    type_name(t.data_type()),
                    bytes.len(),
                    count * size
                ));
            }
            from_raw(dtype, bytes)
        }
        None => from_fields(t, dtype, count)?,
    };
    Const::new(shape, data).map_err(|_| {
        Problem::Malformed(format!(
            "tensor '{name}' of shape {:?} has the wrong amount of data",
            t.dims
        ))
    })
}

fn from_raw(dtype: DataType, b: &[u8]) -> ConstData {
    fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        b.chunks_exact(N)
            .map(|c| c.try_into().expect("exact chunk"))
    }
    match dtype {
        DataType::Float => ConstData::F32(chunks(b).map(f32::from_le_bytes).collect()),
        DataType::Double => {
            ConstData::F32(chunks(b).map(|c| f64::from_le_bytes(c) as f32).collect())
        }
        DataType::Int32 => ConstData::I32(chunks(b).map(i32::from_le_bytes).collect()),
        DataType::Int64 => ConstData::I64(chunks(b).map(i64::from_le_bytes).collect()),
        DataType::Int8 => ConstData::I8(b.iter().map(|&x| x as i8).collect()),
        DataType::Uint8 => ConstData::U8(b.to_vec()),
        _ => ConstData::Bool(b.iter().map(|&x| x != 0).collect()),
    }
}

/// Data from the typed repeated fields (`float_data`, `int32_data`, ...).
fn from_fields(t: &TensorProto, dtype: DataType, count: usize) -> Result<ConstData> {
    let name = t.name();
    let check = |n: usize| {
        if n == count {
            Ok(())
        } else {
            malformed(format!(
                "tensor '{name}' holds {n} values for {count} elements"
            ))
        }
    };
    Ok(match dtype {
        DataType::Float => {
            check(t.float_data.len())?;
            ConstData::F32(t.float_data.clone())
        }
        DataType::Double => {
            check(t.double_data.len())?;
            ConstData::F32(t.double_data.iter().map(|&x| x as f32).collect())
        }
        DataType::Int64 => {
            check(t.int64_data.len())?;
            ConstData::I64(t.int64_data.clone())
        }
        DataType::Int32 => {
            check(t.int32_data.len())?;
            ConstData::I32(t.int32_data.clone())
        }
        DataType::Int8 => {
            check(t.int32_data.len())?;
            ConstData::I8(t.int32_data.iter().map(|&x| x as i8).collect())
        }
        DataType::Uint8 => {
            check(t.int32_data.len())?;
            ConstData::U8(t.int32_data.iter().map(|&x| x as u8).collect())
        }
        _ => {
            check(t.int32_data.len())?;
            ConstData::Bool(t.int32_data.iter().map(|&x| x != 0).collect())
        }
    })
}

/// Reads the bytes of an initializer stored outside the model (`location`, `offset`,
/// `length` keys), refusing paths that leave the model's folder.
fn read_external(t: &TensorProto, base_dir: Option<&Path>) -> Result<Vec<u8>> {
    let name = t.name();
    let mut location = None;
    let (mut offset, mut length) = (0u64, None);
    for e in &t.external_data {
        let value = e.value();
        let number = || {
            value.parse::<u64>().map_err(|_| {
                Problem::Malformed(format!(
                    "tensor '{name}': external data {} = '{value}'",
                    e.key()
                ))
            })
        };
        match e.key() {
            "location" => location = Some(value.to_string()),
            "offset" => offset = number()?,
            "length" => length = Some(number()?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| {
        Problem::Malformed(format!("tensor '{name}' is external but has no location"))
    })?;
    let rel = Path::new(&location);
    if !rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return malformed(format!(
            "tensor '{name}': external data location '{location}' leaves the model's folder"
        ));
    }
    let Some(base) = base_dir else {
        return malformed(format!(
            "tensor '{name}' is stored in external file '{location}', but the model was not loaded from a file"
        ));
    };
    let path = base.join(rel);
    let bytes = std::fs::read(&path).map_err(|e| {
        Problem::Malformed(format!(
            "tensor '{name}': cannot read external data file {}: {e}",
            path.display()
        ))
    })?;
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = match length {
        Some(l) => start.saturating_add(usize::try_from(l).unwrap_or(usize::MAX)),
        None => bytes.len(),
    };
    bytes.get(start..end).map(<[u8]>::to_vec).ok_or_else(|| {
        Problem::Malformed(format!(
            "tensor '{name}': bytes {start}..{end} lie beyond the end of {} ({} bytes)",
            path.display(),
            bytes.len()
        ))
    })
}
