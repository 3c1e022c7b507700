//! Labelled datasets in three formats, opened by [`Dataset::open`]:
//!
//! * **IDX** (MNIST's layout, optionally gzip'd): a folder with a file named `*images*`
//!   and one named `*labels*`, or an explicit `IMAGES,LABELS` pair of files. Images are
//!   read by kiln's calibration-data reader ([`kiln_codegen::quantize::data`]), so bytes
//!   become `[0, 1]` exactly as `kiln eval` and `kiln quantize` see them.
//! * **npy** ([`npy`]): a folder with `x.npy` and `y.npy` (or `images.npy` and
//!   `labels.npy`), or an explicit `IMAGES.npy,LABELS.npy` pair.
//! * **CSV** ([`csv`]): a `.csv` file, or a folder holding exactly one.
//!
//! One normalization everywhere: integer data is divided by 255 (bytes become `[0, 1]`),
//! float data is used as is. Each sample's element count must equal the model input's.

use crate::TrainError;
use kiln_codegen::ir::{DType, TensorInfo};
use kiln_codegen::quantize::data::{self, DataOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

pub mod csv;
pub mod npy;

/// Largest class label a dataset file may hold (bounded one-hot vectors).
pub const MAX_LABEL: usize = 1 << 20;

/// Which field of a CSV row is the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelColumn {
    /// The first field (the MNIST CSV convention).
    #[default]
    First,
    /// The last field.
    Last,
    /// Field `i`, counted from 0.
    Index(usize),
}

impl LabelColumn {
    /// Parses `first`, `last` or a column number counted from 1.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "first" => Ok(LabelColumn::First),
            "last" => Ok(LabelColumn::Last),
            t => match t.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(LabelColumn::Index(n - 1)),
                _ => Err(format!(
                    "label column '{text}': expected first, last or a column number from 1"
                )),
            },
        }
    }
}

/// How [`Dataset::open`] reads a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Keep at most this many samples (the first ones).
    pub limit: Option<usize>,
    /// The label's field in CSV rows.
    pub label_column: LabelColumn,
}

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

    /// Opens a dataset in any supported format (see the module docs) for samples of
    /// shape `sample`: a folder (npy pair, one CSV file, or IDX pair, tried in that
    /// order), a `.csv` file, or an `IMAGES,LABELS` pair of npy or IDX files.
    pub fn open(path: &Path, sample: &[usize], options: &LoadOptions) -> Result<Self, TrainError> {
        let err = |p: &Path, m: String| TrainError::Data {
            file: p.display().to_string(),
            message: m,
        };
        let limit = options.limit;
        if !path.exists() {
            let text = path.to_string_lossy();
            if let Some((images, labels)) = text.split_once(',') {
                let (images, labels) = (Path::new(images), Path::new(labels));
                for p in [images, labels] {
                    if !p.is_file() {
                        return Err(err(p, "no such file (from the pair IMAGES,LABELS)".into()));
                    }
                }
                return if is_ext(images, "npy") {
                    npy::load(images, labels, sample, limit)
                } else {
                    Self::load(images, labels, sample, limit)
                };
            }
            return Err(err(path, "no such file or folder".into()));
        }
        if path.is_file() {
            return if is_ext(path, "csv") {
                csv::load(path, sample, options.label_column, limit)
            } else if is_ext(path, "npy") {
                Err(err(
                    path,
                    "an .npy file holds samples without labels: give IMAGES.npy,LABELS.npy or a folder with x.npy and y.npy".into(),
                ))
            } else {
                Err(err(
                    path,
                    "expected a folder, a .csv file or an IMAGES,LABELS pair of npy or IDX files"
                        .into(),
                ))
            };
        }
        for (x, y) in [("x.npy", "y.npy"), ("images.npy", "labels.npy")] {
            let (x, y) = (path.join(x), path.join(y));
            if x.is_file() && y.is_file() {
                return npy::load(&x, &y, sample, limit);
            }
            if x.is_file() != y.is_file() {
                let (have, missing) = if x.is_file() { (&x, &y) } else { (&y, &x) };
                return Err(err(
                    path,
                    format!(
                        "{} without {}: an npy dataset needs both",
                        have.file_name().unwrap_or_default().to_string_lossy(),
                        missing.file_name().unwrap_or_default().to_string_lossy()
                    ),
                ));
            }
        }
        let entries = std::fs::read_dir(path).map_err(|e| err(path, e.to_string()))?;
        let mut csvs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_ext(p, "csv"))
            .collect();
        csvs.sort();
        match csvs.as_slice() {
            [one] => csv::load(one, sample, options.label_column, limit),
            [] => Self::load_dir(path, sample, limit),
            many => Err(err(
                path,
                format!(
                    "{} CSV files ({}); name the one to use",
                    many.len(),
                    many.iter()
                        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The first sample whose label does not fit `classes` outputs, as a message.
    pub fn check_labels(&self, classes: usize) -> Result<(), String> {
        match self.labels.iter().position(|&l| l >= classes) {
            Some(i) => Err(format!(
                "label {} of sample {i} does not fit the model's {classes} classes",
                self.labels[i]
            )),
            None => Ok(()),
        }
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

fn is_ext(path: &Path, ext: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
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
