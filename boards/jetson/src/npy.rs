//! The subset of NumPy's `.npy` format kiln's vectors use: version 1-3 headers,
//! little-endian `i1`, `u1`, `f4` data in C order. Errors name the file.

use std::path::Path;

/// An array read from a `.npy` file.
pub struct Array {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values.
    pub data: Data,
}

/// Element values.
pub enum Data {
    /// int8.
    I8(Vec<i8>),
    /// uint8 (kept as values 0..=255).
    U8(Vec<u8>),
    /// float32.
    F32(Vec<f32>),
}

/// Reads `path`.
pub fn read(path: &Path) -> Result<Array, String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(format!("{name}: not a .npy file"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("{name}: .npy version {v} is not supported")),
    };
    let body = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| format!("{name}: truncated header"))?;
    let header = String::from_utf8_lossy(&bytes[start..body]);
    let field = |key: &str| -> Option<String> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest.to_string())
    };
    let descr = field("descr").ok_or_else(|| format!("{name}: no descr"))?;
    let descr: String = descr
        .trim_start_matches('\'')
        .chars()
        .take_while(|&c| c != '\'')
        .collect();
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(format!("{name}: Fortran order is not supported"));
    }
    let shape_text = field("shape").ok_or_else(|| format!("{name}: no shape"))?;
    let inner: String = shape_text
        .trim_start_matches('(')
        .chars()
        .take_while(|&c| c != ')')
        .collect();
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("{name}: bad shape {shape_text}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count: usize = shape.iter().product();
    let raw = &bytes[body..];
    let need = |size: usize| -> Result<&[u8], String> {
        raw.get(..count * size).ok_or_else(|| {
            format!(
                "{name}: {} data bytes, expected {}",
                raw.len(),
                count * size
            )
        })
    };
    let data = match descr.as_str() {
        "|i1" | "<i1" | "i1" => Data::I8(need(1)?.iter().map(|&b| b as i8).collect()),
        "|u1" | "<u1" | "u1" => Data::U8(need(1)?.to_vec()),
        "<f4" => Data::F32(
            need(4)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        other => {
            return Err(format!(
                "{name}: element type {other} is not supported (int8, uint8, float32)"
            ))
        }
    };
    Ok(Array { shape, data })
}
