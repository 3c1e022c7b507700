//! npy and CSV datasets made from MNIST samples train exactly like the IDX files they
//! came from; augmentation changes training but not the data; a run stopped after K
//! epochs and resumed from its checkpoint ends bit-identical to a run that never
//! stopped, and checkpoints of another model or optimizer are refused.

mod common;

use kiln_train::augment::Augment;
use kiln_train::checkpoint::Checkpoint;
use kiln_train::data::{Dataset, LabelColumn, LoadOptions};
use kiln_train::model::ModelSpec;
use kiln_train::optim::{OptimizerKind, Schedule};
use kiln_train::train::{self, TrainConfig};
use npyz::WriterBuilder;
use std::path::{Path, PathBuf};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-train-dr-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) {
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(
            std::fs::File::create(path).unwrap(),
        ))
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

fn mlp() -> ModelSpec {
    ModelSpec::load(&common::root().join("models/lenet/mlp.toml")).unwrap()
}

fn train_mlp(data: &Dataset, cfg: &TrainConfig) -> kiln_codegen::ir::Graph {
    let mut graph = mlp().build(3).unwrap();
    train::train(&mut graph, data, None, cfg, &mut |_| {}).unwrap();
    graph
}

#[test]
fn npy_and_csv_datasets_train_like_idx() {
    let idx = common::mnist(96, false);
    let n = idx.len() as u64;
    // The IDX pixels as the bytes they were (the IDX path divides by 255).
    let bytes: Vec<u8> = idx
        .images
        .iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    let labels: Vec<i64> = idx.labels.iter().map(|&l| l as i64).collect();
    let dir = temp("formats");
    let opts = LoadOptions::default();
    let sample = [28, 28, 1];

    // npy: a folder with x.npy (uint8, [N, 28, 28]) and y.npy (int64).
    let npy_u8 = dir.join("npy-u8");
    std::fs::create_dir_all(&npy_u8).unwrap();
    write_npy(&npy_u8.join("x.npy"), &[n, 28, 28], &bytes);
    write_npy(&npy_u8.join("y.npy"), &[n], &labels);
    // npy: an explicit pair of float32 [N, 784] (used as is) and uint8 labels.
    let (xf, yf) = (dir.join("images-f32.npy"), dir.join("labels-u8.npy"));
    write_npy(&xf, &[n, 784], &idx.images);
    let labels_u8: Vec<u8> = idx.labels.iter().map(|&l| l as u8).collect();
    write_npy(&yf, &[n], &labels_u8);
    // CSV: integer pixels, label first, with a header (the common MNIST CSV layout).
    let mut csv_int = String::from("label");
    for i in 0..784 {
        csv_int.push_str(&format!(",pixel{i}"));
    }
    csv_int.push('\n');
    for (i, l) in idx.labels.iter().enumerate() {
        csv_int.push_str(&l.to_string());
        for b in &bytes[i * 784..][..784] {
            csv_int.push_str(&format!(",{b}"));
        }
        csv_int.push_str("\r\n");
    }
    let csv_int_file = dir.join("mnist.csv");
    std::fs::write(&csv_int_file, csv_int).unwrap();
    // CSV: float values in a folder, label last, no header.
    let csv_float = dir.join("csv-float");
    std::fs::create_dir_all(&csv_float).unwrap();
    let mut text = String::new();
    for (i, l) in idx.labels.iter().enumerate() {
        for v in idx.image(i) {
            text.push_str(&format!("{v:?},"));
        }
        text.push_str(&format!("{l}\n"));
    }
    std::fs::write(csv_float.join("train.csv"), text).unwrap();

    let reference = train_mlp(&idx, &TrainConfig::default());
    let pair = format!("{},{}", xf.display(), yf.display());
    let cases: [(&str, PathBuf, LabelColumn); 4] = [
        ("npy folder (uint8)", npy_u8, LabelColumn::First),
        (
            "npy pair (float32)",
            PathBuf::from(pair),
            LabelColumn::First,
        ),
        ("csv file (integers)", csv_int_file, LabelColumn::First),
        ("csv folder (floats)", csv_float, LabelColumn::Last),
    ];
    for (what, path, label_column) in cases {
        let ds = Dataset::open(
            &path,
            &sample,
            &LoadOptions {
                label_column,
                ..opts
            },
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(ds == idx, "{what}: samples differ from the IDX files'");
        assert!(
            train_mlp(&ds, &TrainConfig::default()) == reference,
            "{what}: trained weights differ from the IDX run"
        );
    }
    // The IDX folder through the same entry point, with a limit.
    let some = Dataset::open(
        &common::root().join("data/mnist-10k"),
        &sample,
        &LoadOptions {
            limit: Some(10),
            ..opts
        },
    )
    .unwrap();
    assert!(some.len() == 10 && some.images[..] == idx.images[..7840]);
}

#[test]
fn unusable_paths_say_why() {
    let dir = temp("bad-paths");
    let sample = [28, 28, 1];
    let opts = LoadOptions::default();
    let open = |p: &Path| Dataset::open(p, &sample, &opts).unwrap_err().to_string();
    let e = open(&dir.join("missing"));
    assert!(e.contains("missing") && e.contains("no such file"), "{e}");
    write_npy(&dir.join("lonely.npy"), &[1, 784], &[0u8; 784]);
    let e = open(&dir.join("lonely.npy"));
    assert!(
        e.contains("lonely.npy") && e.contains("IMAGES.npy,LABELS.npy"),
        "{e}"
    );
    let lone = dir.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    write_npy(&lone.join("x.npy"), &[1, 784], &[0u8; 784]);
    let e = open(&lone);
    assert!(e.contains("x.npy without y.npy"), "{e}");
    std::fs::write(dir.join("a.csv"), "1,2\n").unwrap();
    std::fs::write(dir.join("b.csv"), "1,2\n").unwrap();
    let e = open(&dir);
    assert!(e.contains("2 CSV files (a.csv, b.csv)"), "{e}");
    let e = open(Path::new("nothere.npy,y.npy"));
    assert!(
        e.contains("nothere.npy") && e.contains("no such file"),
        "{e}"
    );
}

#[test]
fn augmentation_changes_training_not_the_data() {
    let data = common::mnist(64, false);
    let copy = data.clone();
    let plain = TrainConfig::default();
    let aug = TrainConfig {
        augment: Augment::parse("shift=2,noise=0.05").unwrap(),
        ..plain.clone()
    };
    let a = train_mlp(&data, &aug);
    assert!(data == copy, "augmentation changed the stored dataset");
    assert!(a != train_mlp(&data, &plain));
    // Deterministic for the seed, whatever the number of threads.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    assert!(pool.install(|| train_mlp(&data, &aug)) == a);
    // Flips and shifts need image inputs.
    let flat = ModelSpec::parse(
        "input = [784]\n[[layer]]\ntype = \"dense\"\nunits = 10\n",
        "flat.toml",
    )
    .unwrap();
    let mut g = flat.build(1).unwrap();
    let flat_data = Dataset {
        sample: vec![784],
        ..data.clone()
    };
    let e = train::train(&mut g, &flat_data, None, &aug, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("shift=2") && e.contains("[784]"), "{e}");
}

#[test]
fn resumed_training_is_bit_identical() {
    let data = common::mnist(128, false);
    let dir = temp("resume");
    let cases = [
        (
            "adam, augmented",
            TrainConfig {
                batch: 16,
                augment: Augment::parse("shift=1,noise=0.02").unwrap(),
                ..TrainConfig::default()
            },
        ),
        (
            "sgd, step schedule",
            TrainConfig {
                batch: 16,
                lr: 0.05,
                optimizer: OptimizerKind::parse("sgd", 1e-4).unwrap(),
                schedule: Schedule::parse("step", 1).unwrap(),
                ..TrainConfig::default()
            },
        ),
    ];
    for (what, cfg) in cases {
        let straight_ckpt = dir.join(format!("{}-straight.safetensors", &what[..3]));
        let straight_cfg = TrainConfig {
            epochs: 3,
            checkpoint: Some(straight_ckpt.clone()),
            ..cfg.clone()
        };
        let mut straight = mlp().build(3).unwrap();
        let full = train::train(&mut straight, &data, None, &straight_cfg, &mut |_| {}).unwrap();

        // One epoch, stop, then two more from the checkpoint.
        let ckpt = dir.join(format!("{}-split.safetensors", &what[..3]));
        let first_cfg = TrainConfig {
            epochs: 1,
            checkpoint: Some(ckpt.clone()),
            ..cfg.clone()
        };
        let mut first = mlp().build(3).unwrap();
        train::train(&mut first, &data, None, &first_cfg, &mut |_| {}).unwrap();
        let c = Checkpoint::load(&ckpt).unwrap();
        assert_eq!(c.epoch, 1, "{what}");
        // A fresh graph (another init seed even): everything comes from the checkpoint.
        let mut resumed = mlp().build(99).unwrap();
        let rest = train::train_from(
            &mut resumed,
            &data,
            None,
            &TrainConfig {
                epochs: 3,
                checkpoint: Some(ckpt.clone()),
                ..cfg.clone()
            },
            Some(&c),
            &mut |_| {},
        )
        .unwrap();
        assert!(resumed == straight, "{what}: resumed weights differ");
        assert_eq!(rest.len(), 2);
        for (a, b) in rest.iter().zip(&full[1..]) {
            assert_eq!(
                (a.epoch, a.loss.to_bits()),
                (b.epoch, b.loss.to_bits()),
                "{what}"
            );
        }
        // The final checkpoints agree too, and carry the whole history.
        let (a, b) = (
            Checkpoint::load(&ckpt).unwrap(),
            Checkpoint::load(&straight_ckpt).unwrap(),
        );
        assert_eq!((a.epoch, a.rng, &a.order), (3, b.rng, &b.order), "{what}");
        assert!(a.params == b.params && a.m == b.m && a.v == b.v, "{what}");
        assert_eq!(a.history.len(), 3);
        // A checkpoint is also a weights file.
        let model = dir.join("mlp.toml");
        std::fs::write(&model, mlp().source()).unwrap();
        assert!(
            kiln_train::load(&model, &ckpt).unwrap() == straight,
            "{what}"
        );
    }
}

#[test]
fn mismatched_checkpoints_are_refused() {
    let data = common::mnist(64, false);
    let dir = temp("mismatch");
    let ckpt = dir.join("c.safetensors");
    let cfg = TrainConfig {
        checkpoint: Some(ckpt.clone()),
        ..TrainConfig::default()
    };
    train_mlp(&data, &cfg);
    let c = Checkpoint::load(&ckpt).unwrap();
    let more = TrainConfig {
        epochs: 2,
        checkpoint: None,
        ..cfg.clone()
    };
    let resume = |graph: &mut kiln_codegen::ir::Graph, cfg: &TrainConfig, c: &Checkpoint| {
        train::train_from(graph, &data, None, cfg, Some(c), &mut |_| {})
            .unwrap_err()
            .to_string()
    };
    // Another model: LeNet's parameters are not in the MLP checkpoint.
    let lenet = ModelSpec::load(&common::root().join("models/lenet/model.toml")).unwrap();
    let e = resume(&mut lenet.build(1).unwrap(), &more, &c);
    assert!(
        e.contains("does not fit the model") && e.contains("dense2/"),
        "{e}"
    );
    // Same layer names, other sizes.
    let wide = ModelSpec::parse(
        &mlp().source().replace("units = 128", "units = 100"),
        "wide.toml",
    )
    .unwrap();
    let e = resume(&mut wide.build(1).unwrap(), &more, &c);
    assert!(e.contains("[784, 128]") || e.contains("[128, 784]"), "{e}");
    // Another optimizer.
    let sgd = TrainConfig {
        optimizer: OptimizerKind::parse("sgd", 0.0).unwrap(),
        ..more.clone()
    };
    let e = resume(&mut mlp().build(1).unwrap(), &sgd, &c);
    assert!(
        e.contains("optimizer Adam") && e.contains("this run: Sgd"),
        "{e}"
    );
    // A missing tensor.
    let mut partial = c.clone();
    let i = partial
        .params
        .iter()
        .position(|(n, _, _)| n == "dense4/bias")
        .unwrap();
    partial.params.remove(i);
    partial.m.remove(i);
    partial.v.remove(i);
    let e = resume(&mut mlp().build(1).unwrap(), &more, &partial);
    assert!(e.contains("no tensor 'dense4/bias'"), "{e}");
    // Nothing left to do.
    let e = resume(&mut mlp().build(1).unwrap(), &cfg, &c);
    assert!(e.contains("completed 1 epochs"), "{e}");
}

#[test]
fn resume_restores_batch_norm_statistics_and_dropout_masks() {
    // LeNet with batch norms (running statistics are state, not parameters) and
    // dropouts (masks from their own generator): a resumed run must restore both.
    let spec = ModelSpec::load(&common::root().join("models/lenet/lenet-bn.toml")).unwrap();
    let data = common::mnist(64, false);
    let dir = temp("resume-bn");
    let layers = spec.training_layers().unwrap();
    let cfg = |epochs, ckpt: &Path| TrainConfig {
        epochs,
        batch: 16,
        layers: layers.clone(),
        checkpoint: Some(ckpt.to_path_buf()),
        ..TrainConfig::default()
    };
    let mut straight = spec.build(5).unwrap();
    let straight_ckpt = dir.join("straight.safetensors");
    train::train(
        &mut straight,
        &data,
        None,
        &cfg(2, &straight_ckpt),
        &mut |_| {},
    )
    .unwrap();

    let ckpt = dir.join("split.safetensors");
    let mut first = spec.build(5).unwrap();
    train::train(&mut first, &data, None, &cfg(1, &ckpt), &mut |_| {}).unwrap();
    let c = Checkpoint::load(&ckpt).unwrap();
    assert_eq!(c.state.len(), 2 * layers.batch_norms.len(), "{:?}", c.state);
    let mut resumed = spec.build(77).unwrap();
    train::train_from(
        &mut resumed,
        &data,
        None,
        &cfg(2, &ckpt),
        Some(&c),
        &mut |_| {},
    )
    .unwrap();
    assert!(
        resumed == straight,
        "resumed weights or running statistics differ"
    );
    // Without the batch-norm layers declared, training refuses instead of silently
    // training them as plain scales.
    let mut g = spec.build(5).unwrap();
    let e = train::train(
        &mut g,
        &data,
        None,
        &TrainConfig {
            batch: 16,
            ..TrainConfig::default()
        },
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not declare"), "{e}");
}
