//! Labelled datasets: a folder with an IDX image file and an IDX label file (MNIST's
//! layout, optionally gzip'd). Images are read by kiln's calibration-data reader
//! ([`kiln_codegen::quantize::data`]), so bytes become `[0, 1]` exactly as `kiln eval`
//! and `kiln quantize` see them.

use crate::TrainError;
use kiln_codegen::ir::{DType, TensorInfo};
use kiln_codegen::quantize::data::{self, DataOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Samples and their class labels, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `len() * sample_len()` values.
    pub images: Vec<f32>,
    /// One class per sample.
    pub labels: Vec<usize>,
    /// Shape of one sample (without the batch).
    pub sample: Vec<usize>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True without samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.sample.iter().product()
    }

    /// Sample `i`'s values.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * self.sample_len()..][..self.sample_len()]
    }

    /// Loads the folder `dir` (files named `*images*` and `*labels*`) for samples of
    /// shape `sample`, keeping at most `limit`.
    pub fn load_dir(
        dir: &Path,
        sample: &[usize],
        limit: Option<usize>,
    ) -> Result<Self, TrainError> {
        let err = |m: String| TrainError::Data {
            file: dir.display().to_string(),
            message: m,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?;
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        let find = |what: &str| {
            files
                .iter()
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.contains(what) && !n.ends_with(".md"))
                })
                .cloned()
                .ok_or_else(|| {
                    err(format!(
                        "no file named *{what}* (expected an IDX images and labels pair)"
                    ))
                })
        };
        Self::load(&find("images")?, &find("labels")?, sample, limit)
    }

    /// Loads an IDX image file and an IDX label file.
    pub fn load(
        images: &Path,
        labels: &Path,
        sample: &[usize],
        limit: Option<usize>,
    ) -> Result<Self, TrainError> {
        let mut shape = vec![1];
        shape.extend(sample);
        let info = TensorInfo {
            shape,
            dtype: DType::F32,
            quant: None,
        };
        let options = DataOptions {
            limit,
            ..Default::default()
        };
        let samples = data::load(images, &info, &options).map_err(|e| TrainError::Data {
            file: images.display().to_string(),
            message: e.to_string(),
        })?;
        let mut labels_v = read_labels(labels)?;
        if labels_v.len() < samples.len() {
            return Err(TrainError::Data {
                file: labels.display().to_string(),
                message: format!("{} labels for {} images", labels_v.len(), samples.len()),
            });
        }
        labels_v.truncate(samples.len());
        let images_v = samples
            .iter()
            .flat_map(|s| s.as_f32().unwrap_or(&[]).iter().copied())
            .collect();
        Ok(Dataset {
            images: images_v,
            labels: labels_v,
            sample: sample.to_vec(),
        })
    }

    /// Number of classes (largest label + 1).
    pub fn classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |m| m + 1)
    }
}

/// Labels from an IDX label file (magic 00 00 08 01, optionally gzip'd), as `kiln eval`
/// reads them.
pub fn read_labels(path: &Path) -> Result<Vec<usize>, TrainError> {
    let err = |m: String| TrainError::Data {
        file: path.display().to_string(),
        message: m,
    };
    let raw = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(1 << 30)
            .read_to_end(&mut out)
            .map_err(|e| err(format!("bad gzip data: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() < 8 || bytes[..4] != [0, 0, 8, 1] {
        return Err(err(
            "not an IDX label file (expected magic 00 00 08 01: unsigned bytes, one dimension)"
                .into(),
        ));
    }
    let n = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if bytes.len() != 8 + n {
        return Err(err(format!(
            "header says {n} labels, the file holds {}",
            bytes.len() - 8
        )));
    }
    Ok(bytes[8..].iter().map(|&b| usize::from(b)).collect())
}
