//! NumPy `.npy` datasets: an array of samples `[N, ...]` and an array of labels `[N]`.
//!
//! Samples may have any integer dtype (divided by 255, like IDX: bytes become `[0, 1]`)
//! or float32/float64 (used as is), either byte order, C order. Each sample's element
//! count must equal the model input's (`[N, 28, 28]` and `[N, 784]` both fit
//! `[28, 28, 1]`). Labels are integers `>= 0`, shaped `[N]` or `[N, 1]`.

use super::Dataset;
use crate::TrainError;
use npyz::{DType, NpyFile, TypeChar};
use std::path::Path;

fn err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Data {
        file: path.display().to_string(),
        message: message.into(),
    }
}

/// An opened `.npy` file with its dtype's kind and size and its shape.
struct Opened<'a> {
    npy: NpyFile<&'a [u8]>,
    kind: TypeChar,
    size: u64,
    descr: String,
    shape: Vec<usize>,
}

fn open<'a>(path: &Path, bytes: &'a [u8]) -> Result<Opened<'a>, TrainError> {
    let mut data = bytes;
    let header = npyz::NpyHeader::from_reader(&mut data)
        .map_err(|e| err(path, format!("not an npy file: {e}")))?;
    let npy = NpyFile::with_header(header, data);
    let descr = npy.dtype().descr();
    let descr = descr.trim_matches('\'').to_string();
    let DType::Plain(ts) = npy.dtype() else {
        return Err(err(
            path,
            format!("structured dtype {descr}: expected a plain integer or float array"),
        ));
    };
    if npy.order() != npyz::Order::C && npy.shape().len() > 1 {
        return Err(err(
            path,
            "Fortran-order array; save it with np.ascontiguousarray",
        ));
    }
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(path, format!("dimension {d} too large"))))
        .collect::<Result<_, _>>()?;
    // The header must not claim more data than the file holds (bounded allocation).
    let needed = shape
        .iter()
        .try_fold(ts.size_field() as usize, |a, &d| a.checked_mul(d));
    if needed.is_none_or(|n| n > data.len()) {
        return Err(err(
            path,
            format!("header claims shape {shape:?} of {descr}, more data than the file holds"),
        ));
    }
    Ok(Opened {
        kind: ts.type_char(),
        size: ts.size_field(),
        descr,
        shape,
        npy,
    })
}

/// Reads `count` values of `o` as f32 (integers divided by `divisor`) or `None` when the
/// dtype is not an integer or float of a supported size.
fn values(o: Opened, count: usize, divisor: f32) -> Option<std::io::Result<Vec<f32>>> {
    macro_rules! read {
        ($t:ty, $conv:expr) => {
            o.npy.data::<$t>().ok().map(|r| {
                r.take(count)
                    .map(|v| v.map($conv))
                    .collect::<std::io::Result<Vec<f32>>>()
            })
        };
    }
    match (o.kind, o.size) {
        (TypeChar::Uint, 1) => read!(u8, |v| f32::from(v) / divisor),
        (TypeChar::Int, 1) => read!(i8, |v| f32::from(v) / divisor),
        (TypeChar::Uint, 2) => read!(u16, |v| f32::from(v) / divisor),
        (TypeChar::Int, 2) => read!(i16, |v| f32::from(v) / divisor),
        (TypeChar::Uint, 4) => read!(u32, |v| v as f32 / divisor),
        (TypeChar::Int, 4) => read!(i32, |v| v as f32 / divisor),
        (TypeChar::Uint, 8) => read!(u64, |v| v as f32 / divisor),
        (TypeChar::Int, 8) => read!(i64, |v| v as f32 / divisor),
        (TypeChar::Float, 4) => read!(f32, |v| v),
        (TypeChar::Float, 8) => read!(f64, |v| v as f32),
        _ => None,
    }
}

/// Loads samples from `images` and labels from `labels` for samples of shape
/// `sample`, keeping at most `limit`.
pub fn load(
    images: &Path,
    labels: &Path,
    sample: &[usize],
    limit: Option<usize>,
) -> Result<Dataset, TrainError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| err(p, e.to_string()));
    let (xb, yb) = (read(images)?, read(labels)?);
    let x = open(images, &xb)?;
    let y = open(labels, &yb)?;
    let per: usize = sample.iter().product();
    let Some((&n, rest)) = x.shape.split_first() else {
        return Err(err(
            images,
            "a scalar array; expected samples [N, ...] (N the sample count)",
        ));
    };
    let have: usize = rest.iter().product();
    if have != per {
        return Err(err(
            images,
            format!(
                "samples of shape {rest:?} ({have} values) do not fit the model input {sample:?} ({per} values); the array is {:?}, the first dimension counts samples",
                x.shape
            ),
        ));
    }
    if !(y.shape.len() == 1 || (y.shape.len() == 2 && y.shape[1] == 1)) {
        return Err(err(
            labels,
            format!("labels of shape {:?}; expected [N] or [N, 1]", y.shape),
        ));
    }
    if y.shape[0] != n {
        return Err(err(
            labels,
            format!(
                "{} labels for the {n} samples of {} (shape {:?})",
                y.shape[0],
                images.display(),
                x.shape
            ),
        ));
    }
    let count = limit.map_or(n, |l| l.min(n));
    let (x_descr, y_descr) = (x.descr.clone(), y.descr.clone());
    let images_v = values(x, count * per, 255.0)
        .ok_or_else(|| {
            err(
                images,
                format!("dtype {x_descr} is not an integer or float32/float64 array"),
            )
        })?
        .map_err(|e| err(images, format!("reading data: {e}")))?;
    let labels_v = read_labels(labels, y, count, &y_descr)?;
    Ok(Dataset {
        images: images_v,
        labels: labels_v,
        sample: sample.to_vec(),
    })
}

fn read_labels(
    path: &Path,
    y: Opened,
    count: usize,
    descr: &str,
) -> Result<Vec<usize>, TrainError> {
    if !matches!(y.kind, TypeChar::Int | TypeChar::Uint) {
        return Err(err(
            path,
            format!("labels of dtype {descr}; expected integers (int8..int64, uint8..uint64)"),
        ));
    }
    // Every integer of up to 64 bits is exact in i128.
    macro_rules! read {
        ($t:ty) => {
            y.npy.data::<$t>().ok().map(|r| {
                r.take(count)
                    .map(|v| v.map(i128::from))
                    .collect::<std::io::Result<Vec<i128>>>()
            })
        };
    }
    let raw = match (y.kind, y.size) {
        (TypeChar::Uint, 1) => read!(u8),
        (TypeChar::Int, 1) => read!(i8),
        (TypeChar::Uint, 2) => read!(u16),
        (TypeChar::Int, 2) => read!(i16),
        (TypeChar::Uint, 4) => read!(u32),
        (TypeChar::Int, 4) => read!(i32),
        (TypeChar::Uint, 8) => read!(u64),
        (TypeChar::Int, 8) => read!(i64),
        _ => None,
    }
    .ok_or_else(|| err(path, format!("labels of unsupported dtype {descr}")))?
    .map_err(|e| err(path, format!("reading data: {e}")))?;
    raw.iter()
        .enumerate()
        .map(|(i, &l)| {
            usize::try_from(l)
                .ok()
                .filter(|&l| l <= super::MAX_LABEL)
                .ok_or_else(|| {
                    err(
                        path,
                        format!(
                            "label {l} of sample {i} is out of range (0..={})",
                            super::MAX_LABEL
                        ),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use npyz::WriterBuilder;

    fn write<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(shape)
            .writer(std::fs::File::create(path).unwrap())
            .begin_nd()
            .unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-npy-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_every_dtype_with_the_idx_convention() {
        let d = dir("dtypes");
        let (x, y) = (d.join("x.npy"), d.join("y.npy"));
        write(&y, &[2], &[3i64, 0]);
        write(&x, &[2, 2], &[0u8, 255, 51, 102]);
        let ds = load(&x, &y, &[2, 1, 1], None).unwrap();
        assert_eq!(ds.images, [0.0, 1.0, 0.2, 0.4]);
        assert_eq!(ds.labels, [3, 0]);
        write(&x, &[2, 2], &[-1.5f64, 2.0, 0.25, 7.0]);
        assert_eq!(load(&x, &y, &[2], Some(1)).unwrap().images, [-1.5f32, 2.0]);
        write(&x, &[2, 2], &[-51i16, 0, 0, 510]);
        assert_eq!(
            load(&x, &y, &[2], None).unwrap().images,
            [-0.2, 0.0, 0.0, 2.0]
        );
        write(&y, &[2, 1], &[1u8, 2]);
        assert_eq!(load(&x, &y, &[2], None).unwrap().labels, [1, 2]);
    }

    #[test]
    fn bad_files_are_named_with_the_problem() {
        let d = dir("bad");
        let (x, y) = (d.join("x.npy"), d.join("y.npy"));
        write(&x, &[3, 4], &[0u8; 12]);
        write(&y, &[2], &[1u8, 2]);
        let e = load(&x, &y, &[4], None).unwrap_err().to_string();
        assert!(
            e.contains("y.npy") && e.contains("2 labels for the 3 samples"),
            "{e}"
        );
        write(&y, &[3], &[1u8, 2, 0]);
        let e = load(&x, &y, &[5], None).unwrap_err().to_string();
        assert!(
            e.contains("x.npy") && e.contains("[4] (4 values)") && e.contains("[5]"),
            "{e}"
        );
        write(&y, &[3], &[1.0f32, 2.0, 0.0]);
        let e = load(&x, &y, &[4], None).unwrap_err().to_string();
        assert!(
            e.contains("y.npy") && e.contains("<f4") && e.contains("integers"),
            "{e}"
        );
        write(&y, &[3], &[1i32, -2, 0]);
        let e = load(&x, &y, &[4], None).unwrap_err().to_string();
        assert!(e.contains("label -2 of sample 1"), "{e}");
        write(&y, &[3, 2], &[0u8; 6]);
        let e = load(&x, &y, &[4], None).unwrap_err().to_string();
        assert!(e.contains("[3, 2]"), "{e}");
        write(&y, &[3], &[0u8; 3]);
        write(&x, &[3, 4], &[true; 12]);
        let e = load(&x, &y, &[4], None).unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("dtype |b1"), "{e}");
        std::fs::write(&x, b"not numpy").unwrap();
        let e = load(&x, &y, &[4], None).unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("not an npy file"), "{e}");
        // A header claiming more data than the file holds.
        write(&x, &[3, 4], &[0u8; 12]);
        let mut bytes = std::fs::read(&x).unwrap();
        bytes.truncate(bytes.len() - 6);
        std::fs::write(&x, bytes).unwrap();
        let e = load(&x, &y, &[4], None).unwrap_err().to_string();
        assert!(e.contains("more data than the file holds"), "{e}");
    }
}
