//! Resumable checkpoints: one safetensors file holding everything training needs to
//! continue bit-identically.
//!
//! Tensors: every parameter under its IR name (so a checkpoint is also a weights file
//! for [`crate::train::load_weights`]), the optimizer state as `optim/m/NAME` (SGD
//! momentum, Adam first moments) and `optim/v/NAME` (Adam second moments), and the
//! current sample order as `train/order` (I64). String metadata: `format`, `epoch`
//! (epochs completed), `optimizer_steps`, `rng` (the shuffle generator's state), the
//! configuration essentials (`seed`, `batch`, `lr`, `optimizer`, `schedule`,
//! `augment`, `samples`, `epochs`) and `history` (one line per epoch). A checkpoint
//! taken inside quantization-aware training also holds the activation ranges tracked so
//! far, as `qat/range/NAME` (`[lo, hi]`), and the QAT settings as `qat` metadata.

use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::train::{EpochStats, TrainConfig};
use crate::TrainError;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The `format` metadata of this version.
pub const FORMAT: &str = "kiln-train checkpoint 1";

/// Everything training needs to continue where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Epochs completed.
    pub epoch: usize,
    /// Parameters in the training graph's order: IR name, shape, values.
    pub params: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Optimizer updates done.
    pub optimizer_steps: u64,
    /// Optimizer first moments (SGD momentum), one per parameter (empty before a step).
    pub m: Vec<Vec<f32>>,
    /// Adam's second moments, one per parameter (empty for SGD).
    pub v: Vec<Vec<f32>>,
    /// State of the batch-shuffling generator.
    pub rng: u64,
    /// Sample order after the last shuffle.
    pub order: Vec<usize>,
    /// Configuration essentials (see [`essentials`]) and `epochs`.
    pub config: BTreeMap<String, String>,
    /// Statistics of every epoch completed.
    pub history: Vec<EpochStats>,
    /// Non-trained model state: the batch norms' running statistics (IR name, shape,
    /// values), saved as `state/<name>`.
    pub state: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// State of the dropout-mask generator.
    pub mask_rng: u64,
    /// Inside QAT epochs: the activation ranges tracked so far, by IR tensor name.
    pub qat_ranges: crate::qat::Ranges,
    /// Inside QAT epochs: the QAT settings (`start_epoch` and decay, round-trip text),
    /// which a resumed run must share.
    pub qat: Option<String>,
}

/// The QAT settings of `cfg` as a checkpoint records them.
pub fn qat_settings(cfg: &TrainConfig) -> Option<String> {
    cfg.qat
        .map(|q| format!("start_epoch {} ema_decay {:?}", q.start_epoch, q.ema_decay))
}

/// The settings a resumed run must share with the checkpoint to continue the same
/// training, as strings (floats in round-trip notation): seed, batch, lr, optimizer
/// with its hyper-parameters, schedule, augmentation, and the training-set size.
pub fn essentials(cfg: &TrainConfig, samples: usize) -> BTreeMap<String, String> {
    [
        ("seed", cfg.seed.to_string()),
        ("batch", cfg.batch.to_string()),
        ("lr", format!("{:?}", cfg.lr)),
        ("optimizer", format!("{:?}", cfg.optimizer)),
        ("schedule", format!("{:?}", cfg.schedule)),
        ("augment", cfg.augment.to_string()),
        ("samples", samples.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Checkpoint {
    /// Captures the training state after `epoch` completed epochs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn capture(
        epoch: usize,
        names: &[(String, Vec<usize>)],
        params: &[Vec<f32>],
        opt: &Optimizer,
        rng: &Rng,
        order: &[usize],
        cfg: &TrainConfig,
        history: Vec<EpochStats>,
    ) -> Self {
        let (m, v) = opt.moments();
        let adam = !matches!(opt.kind(), crate::optim::OptimizerKind::Sgd { .. });
        let mut config = essentials(cfg, order.len());
        config.insert("epochs".into(), cfg.epochs.to_string());
        Checkpoint {
            epoch,
            params: names
                .iter()
                .zip(params)
                .map(|((n, s), p)| (n.clone(), s.clone(), p.clone()))
                .collect(),
            optimizer_steps: opt.steps(),
            m: m.to_vec(),
            v: if adam { v.to_vec() } else { Vec::new() },
            rng: rng.state(),
            order: order.to_vec(),
            config,
            history,
            state: Vec::new(),
            mask_rng: 0,
            qat_ranges: crate::qat::Ranges::new(),
            qat: None,
        }
    }

    /// Writes the checkpoint to `path` (through a temporary file and a rename, so an
    /// interrupted write leaves the previous checkpoint intact).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let err = |m: String| TrainError::Weights {
            file: path.display().to_string(),
            message: m,
        };
        let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, (name, shape, values)) in self.params.iter().enumerate() {
            tensors.push((
                name.clone(),
                safetensors::Dtype::F32,
                shape.clone(),
                f32_bytes(values),
            ));
            for (prefix, moments) in [("optim/m/", &self.m), ("optim/v/", &self.v)] {
                if let Some(mv) = moments.get(i) {
                    tensors.push((
                        format!("{prefix}{name}"),
                        safetensors::Dtype::F32,
                        shape.clone(),
                        f32_bytes(mv),
                    ));
                }
            }
        }
        for (name, shape, values) in &self.state {
            tensors.push((
                format!("state/{name}"),
                safetensors::Dtype::F32,
                shape.clone(),
                f32_bytes(values),
            ));
        }
        for (name, (lo, hi)) in &self.qat_ranges {
            tensors.push((
                format!("qat/range/{name}"),
                safetensors::Dtype::F32,
                vec![2],
                f32_bytes(&[*lo, *hi]),
            ));
        }
        let order: Vec<u8> = self
            .order
            .iter()
            .flat_map(|&i| (i as i64).to_le_bytes())
            .collect();
        tensors.push((
            "train/order".into(),
            safetensors::Dtype::I64,
            vec![self.order.len()],
            order,
        ));
        let mut views = Vec::new();
        for (name, dtype, shape, data) in &tensors {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .map_err(|e| err(format!("tensor '{name}': {e}")))?;
            views.push((name.clone(), view));
        }
        let mut meta: HashMap<String, String> = self.config.clone().into_iter().collect();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("epoch".into(), self.epoch.to_string());
        meta.insert("optimizer_steps".into(), self.optimizer_steps.to_string());
        meta.insert("rng".into(), self.rng.to_string());
        meta.insert("mask_rng".into(), self.mask_rng.to_string());
        meta.insert("history".into(), history_text(&self.history));
        if let Some(q) = &self.qat {
            meta.insert("qat".into(), q.clone());
        }
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| err(format!("cannot write: {e}")))?;
        std::fs::rename(&tmp, path).map_err(|e| err(format!("cannot write: {e}")))
    }

    /// Reads a checkpoint written by [`Checkpoint::save`]; parameters come back in the
    /// file's name order (they are matched to a model by name on resume).
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let err = |m: String| TrainError::Weights {
            file: path.display().to_string(),
            message: m,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| {
                err(format!(
                    "no '{k}' metadata: not a kiln-train checkpoint (a plain weights file?)"
                ))
            })
        };
        if get("format")? != FORMAT {
            return Err(err(format!(
                "format '{}', this kiln reads '{FORMAT}'",
                get("format")?
            )));
        }
        let num = |k: &str| -> Result<u64, TrainError> {
            let v = get(k)?;
            v.parse()
                .map_err(|_| err(format!("metadata {k} = '{v}' is not a whole number")))
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
        let f32s = |name: &str, v: &safetensors::tensor::TensorView| {
            if v.dtype() != safetensors::Dtype::F32 {
                return Err(err(format!(
                    "tensor '{name}' is {:?}, expected F32",
                    v.dtype()
                )));
            }
            Ok(v.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<f32>>())
        };
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        let (mut params, mut m, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for name in names.iter().filter(|n| {
            !["optim/", "train/", "state/", "qat/"]
                .iter()
                .any(|p| n.starts_with(p))
        }) {
            let t = st.tensor(name).map_err(|e| err(e.to_string()))?;
            params.push((name.clone(), t.shape().to_vec(), f32s(name, &t)?));
            for (prefix, out) in [("optim/m/", &mut m), ("optim/v/", &mut v)] {
                let key = format!("{prefix}{name}");
                if let Ok(t) = st.tensor(&key) {
                    out.push(f32s(&key, &t)?);
                }
            }
        }
        for (what, moments) in [("optim/m", &m), ("optim/v", &v)] {
            if !moments.is_empty() && moments.len() != params.len() {
                return Err(err(format!(
                    "{what} holds state for {} of the {} parameters",
                    moments.len(),
                    params.len()
                )));
            }
        }
        let order_t = st
            .tensor("train/order")
            .map_err(|_| err("no tensor 'train/order' (the sample order)".into()))?;
        if order_t.dtype() != safetensors::Dtype::I64 {
            return Err(err("tensor 'train/order' is not I64".into()));
        }
        let order: Vec<usize> = order_t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as usize)
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        if sorted.iter().enumerate().any(|(i, &o)| i != o) {
            return Err(err("tensor 'train/order' is not a permutation".into()));
        }
        let config: BTreeMap<String, String> = meta
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "format" | "epoch" | "optimizer_steps" | "rng" | "mask_rng" | "history" | "qat"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut state = Vec::new();
        for name in names.iter().filter(|n| n.starts_with("state/")) {
            let t = st.tensor(name).map_err(|e| err(e.to_string()))?;
            state.push((
                name["state/".len()..].to_string(),
                t.shape().to_vec(),
                f32s(name, &t)?,
            ));
        }
        let mut qat_ranges = crate::qat::Ranges::new();
        for name in names.iter().filter(|n| n.starts_with("qat/range/")) {
            let t = st.tensor(name).map_err(|e| err(e.to_string()))?;
            match f32s(name, &t)?[..] {
                [lo, hi] if lo <= hi => {
                    qat_ranges.insert(name["qat/range/".len()..].to_string(), (lo, hi));
                }
                _ => return Err(err(format!("tensor '{name}' is not a range [lo, hi]"))),
            }
        }
        Ok(Checkpoint {
            qat_ranges,
            qat: meta.get("qat").cloned(),
            epoch: num("epoch")? as usize,
            params,
            optimizer_steps: num("optimizer_steps")?,
            m,
            v,
            rng: num("rng")?,
            order,
            config,
            history: parse_history(get("history")?).map_err(err)?,
            state,
            mask_rng: num("mask_rng")?,
        })
    }

    /// Why this checkpoint cannot continue a run of `cfg` on `samples` training
    /// samples: every essential setting that differs, by name with both values.
    pub fn check_config(&self, cfg: &TrainConfig, samples: usize) -> Result<(), String> {
        let now = essentials(cfg, samples);
        let diffs: Vec<String> = now
            .iter()
            .filter_map(|(k, v)| match self.config.get(k) {
                Some(c) if c == v => None,
                Some(c) => Some(format!("{k} {c} (this run: {v})")),
                None => Some(format!("{k} missing (this run: {v})")),
            })
            .collect();
        if !diffs.is_empty() {
            return Err(format!(
                "the checkpoint was written with other settings: {}",
                diffs.join("; ")
            ));
        }
        if self.epoch >= cfg.epochs {
            return Err(format!(
                "the checkpoint has completed {} epochs; ask for more than that to continue",
                self.epoch
            ));
        }
        Ok(())
    }
}

fn history_text(history: &[EpochStats]) -> String {
    history
        .iter()
        .map(|e| {
            format!(
                "{} {:?} {:?} {} {:?} {:?} {:?} {}",
                e.epoch,
                e.loss,
                e.train_accuracy,
                e.test_accuracy.map_or("-".into(), |a| format!("{a:?}")),
                e.lr,
                e.seconds,
                e.images_per_s,
                e.peak_bytes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse_history(text: &str) -> Result<Vec<EpochStats>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let bad = || format!("history line {}: '{line}' is malformed", i + 1);
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() != 8 {
                return Err(bad());
            }
            let p = |s: &str| s.parse::<f64>().map_err(|_| bad());
            let p32 = |s: &str| s.parse::<f32>().map_err(|_| bad());
            Ok(EpochStats {
                epoch: f[0].parse().map_err(|_| bad())?,
                loss: p32(f[1])?,
                train_accuracy: p(f[2])?,
                test_accuracy: if f[3] == "-" { None } else { Some(p(f[3])?) },
                lr: p32(f[4])?,
                seconds: p(f[5])?,
                images_per_s: p(f[6])?,
                peak_bytes: f[7].parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimizerKind;

    fn sample(kind: &str) -> Checkpoint {
        let cfg = TrainConfig {
            optimizer: OptimizerKind::parse(kind, 0.01).unwrap(),
            epochs: 3,
            ..TrainConfig::default()
        };
        let mut opt = Optimizer::new(cfg.optimizer);
        let mut params = vec![vec![1.0f32, -2.0], vec![0.5]];
        opt.step(&mut params, &[&[0.1, 0.2], &[-0.3]], 0.01);
        let names = vec![
            ("dense1/weights".to_string(), vec![2, 1]),
            ("dense1/bias".to_string(), vec![1]),
        ];
        let history = vec![EpochStats {
            epoch: 1,
            loss: 0.1 + 0.2,
            train_accuracy: 1.0 / 3.0,
            test_accuracy: None,
            lr: 1e-3,
            seconds: 0.25,
            images_per_s: 1e6 / 7.0,
            peak_bytes: 12345,
        }];
        let mut rng = Rng::new(4);
        rng.next_u64();
        Checkpoint::capture(1, &names, &params, &opt, &rng, &[2, 0, 1], &cfg, history)
    }

    #[test]
    fn round_trips_bit_exactly() {
        let dir = std::env::temp_dir().join(format!("kiln-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for kind in ["sgd", "adam"] {
            let c = sample(kind);
            let file = dir.join(format!("{kind}.safetensors"));
            c.save(&file).unwrap();
            let mut back = Checkpoint::load(&file).unwrap();
            // Loaded parameters are in name order.
            back.params.reverse();
            back.m.reverse();
            back.v.reverse();
            assert_eq!(back, c, "{kind}");
            assert_eq!(back.v.is_empty(), kind == "sgd");
        }
    }

    #[test]
    fn other_settings_and_plain_weights_are_refused() {
        let c = sample("adam");
        let cfg = TrainConfig {
            optimizer: OptimizerKind::parse("adam", 0.01).unwrap(),
            epochs: 3,
            ..TrainConfig::default()
        };
        assert!(c.check_config(&cfg, 3).is_ok());
        let e = c
            .check_config(
                &TrainConfig {
                    optimizer: OptimizerKind::parse("sgd", 0.01).unwrap(),
                    batch: 8,
                    ..cfg.clone()
                },
                3,
            )
            .unwrap_err();
        assert!(
            e.contains("optimizer Adam") && e.contains("this run: Sgd") && e.contains("batch 32"),
            "{e}"
        );
        assert!(c
            .check_config(&cfg, 4)
            .unwrap_err()
            .contains("samples 3 (this run: 4)"));
        let e = c
            .check_config(&TrainConfig { epochs: 1, ..cfg }, 3)
            .unwrap_err();
        assert!(e.contains("completed 1 epochs"), "{e}");
        let dir = std::env::temp_dir().join(format!("kiln-ckpt-plain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("w.safetensors");
        let data = [0u8; 4];
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &data).unwrap();
        std::fs::write(&file, safetensors::serialize([("w", view)], None).unwrap()).unwrap();
        let e = Checkpoint::load(&file).unwrap_err().to_string();
        assert!(
            e.contains("w.safetensors") && e.contains("not a kiln-train checkpoint"),
            "{e}"
        );
    }
}
