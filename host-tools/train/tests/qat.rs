//! Quantization-aware training: fake quantization sits where kiln's int8 graph has its
//! int8 tensors, the int8 model kiln builds from the QAT ranges predicts what the
//! fake-quantized graph predicts, and QAT stays deterministic across thread counts.

mod common;

use kiln_codegen::ir::Graph;
use kiln_train::checkpoint::Checkpoint;
use kiln_train::data::Dataset;
use kiln_train::graph::TOp;
use kiln_train::model::ModelSpec;
use kiln_train::optim::OptimizerKind;
use kiln_train::qat::{self, Qat, QatConfig};
use kiln_train::train::{self, TrainConfig};

fn lenet() -> ModelSpec {
    ModelSpec::load(&common::root().join("models/lenet/model.toml")).unwrap()
}

fn config(epochs: usize, start_epoch: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        lr: 2e-3,
        optimizer: OptimizerKind::parse("adam", 0.0).unwrap(),
        seed: 5,
        qat: Some(QatConfig {
            start_epoch,
            ..QatConfig::default()
        }),
        ..TrainConfig::default()
    }
}

#[test]
fn fake_quantization_sits_on_kilns_int8_tensors() {
    let graph = lenet().build(1).unwrap();
    let q = Qat::new(&graph, 0.99).unwrap();
    let (g, _) = q.graph(&graph, 4, None).unwrap();
    let quantized: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| n.op == TOp::FakeQuant)
        .map(|n| g.tensors[n.inputs[0]].name.as_str())
        .collect();
    // The input, each relu result (conv/dense → relu is one int8 tensor, after the
    // relu) and the logits; pooling and flatten keep their input's values.
    let produced_by = |name: &str| {
        let t = g.tensors.iter().position(|t| t.name == name).unwrap();
        g.nodes
            .iter()
            .find(|n| n.output == t)
            .map(|n| n.op.name())
            .unwrap_or("input")
    };
    let ops: Vec<&str> = quantized.iter().map(|n| produced_by(n)).collect();
    assert_eq!(
        ops,
        ["input", "relu", "relu", "relu", "relu", "fully_connected"],
        "{quantized:?}"
    );
    let count = |op: fn(&TOp) -> bool| g.nodes.iter().filter(|n| op(&n.op)).count();
    assert_eq!(count(|o| matches!(o, TOp::FakeQuantWeights { .. })), 5);
    assert_eq!(count(|o| matches!(o, TOp::FakeQuantBias { .. })), 5);
    assert_eq!(count(|o| *o == TOp::MinMax), 6);
    // Fed: the image, then one [scale, zero point] per parameter set.
    assert_eq!(g.inputs.len(), 1 + 6);
    assert!(!q.has_ranges());
    // Before any range is known, fake quantization passes values through.
    assert!(q.qparams().iter().all(|p| p == &[0.0, 0.0]));
}

#[test]
fn int8_model_from_qat_ranges_predicts_what_qat_predicts() {
    let (data, test) = (common::mnist(1000, false), common::mnist(300, true));
    let mut graph = lenet().build(3).unwrap();
    let trained = train::train_model(
        &mut graph,
        &data,
        Some(&test),
        &config(2, 2),
        None,
        &mut |_| {},
    )
    .unwrap();
    let q = trained.qat.expect("QAT state");
    assert!(q.has_ranges());
    let fake = qat::predict(&graph, &q, &test, 64).unwrap();
    let fake_acc = train::accuracy(&fake, &test.labels);
    assert!(fake_acc > 0.8, "QAT accuracy {fake_acc}");
    // The epoch's test accuracy is the fake-quantized model's.
    assert_eq!(trained.history[1].test_accuracy, Some(fake_acc));

    let ranges = q.ranges();
    let int8 = qat::quantize_int8(&graph, &ranges).unwrap();
    // kiln's int8 tensors carry exactly the parameters of the QAT ranges.
    let mut checked = 0;
    for t in &int8.tensors {
        if let (Some(&(lo, hi)), Some(p)) = (ranges.get(&t.name), t.info.scale_zero_point()) {
            assert_eq!(
                p,
                kiln_codegen::quantize::params::asymmetric(lo, hi),
                "{}",
                t.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked} int8 tensors matched by name");

    let int8_pred = train::predict_kiln(&int8, &test).unwrap();
    let agree = int8_pred.iter().zip(&fake).filter(|(a, b)| a == b).count();
    let int8_acc = train::accuracy(&int8_pred, &test.labels);
    assert!(
        agree + 3 >= test.len(),
        "int8 agrees with QAT on {agree} of {} samples",
        test.len()
    );
    assert!(
        (int8_acc - fake_acc).abs() <= 0.01,
        "int8 {int8_acc} vs QAT {fake_acc}"
    );

    // The ranges file rebuilds the same int8 model.
    let path = std::env::temp_dir().join(format!("kiln-qat-ranges-{}.toml", std::process::id()));
    qat::save_ranges(&ranges, &path).unwrap();
    let loaded = qat::load_ranges(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(loaded, ranges);
    assert_eq!(qat::quantize_int8(&graph, &loaded).unwrap(), int8);
    let frozen = Qat::with_ranges(&graph, &loaded).unwrap();
    assert_eq!(frozen.qparams(), q.qparams());
}

#[test]
fn qat_is_deterministic_for_any_thread_count() {
    let data = common::mnist(96, false);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut graph = lenet().build(11).unwrap();
            let mut cfg = config(2, 1);
            cfg.batch = 10;
            let t = train::train_model(&mut graph, &data, None, &cfg, None, &mut |_| {}).unwrap();
            (graph, t.history[1].loss, t.qat.unwrap().ranges())
        })
    };
    let (a, la, ra) = run(1);
    let (b, lb, rb) = run(3);
    assert_eq!(la.to_bits(), lb.to_bits());
    assert!(a == b, "weights differ between 1 and 3 threads");
    let bits = |r: &qat::Ranges| -> Vec<(u32, u32)> {
        r.values()
            .map(|(l, h)| (l.to_bits(), h.to_bits()))
            .collect()
    };
    assert_eq!(bits(&ra), bits(&rb));
    assert_eq!(ra.keys().collect::<Vec<_>>(), rb.keys().collect::<Vec<_>>());
}

#[test]
fn bad_qat_settings_are_refused() {
    let data = common::mnist(64, false);
    let mut graph = lenet().build(1).unwrap();
    for start in [0, 3] {
        let e = train::train_model(
            &mut graph,
            &data,
            None,
            &config(2, start),
            None,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("QAT start epoch") && e.contains("2 epochs"),
            "{e}"
        );
    }
    let e = Qat::new(&graph, 1.0).unwrap_err().to_string();
    assert!(e.contains("decay"), "{e}");
    let e = Qat::with_ranges(&graph, &qat::Ranges::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no range for tensor"), "{e}");
}

/// Reads the f32 values of the constant `name` of `g`.
fn constant(g: &kiln_codegen::ir::Graph, name: &str) -> Vec<f32> {
    let t = g.tensors.iter().position(|t| t.name == name).unwrap();
    train::read_params(g, &[kiln_codegen::ir::TensorId(t)]).remove(0)
}

#[test]
fn qat_of_a_model_with_batch_norm_and_dropout_matches_its_int8_model() {
    let spec = ModelSpec::load(&common::root().join("models/lenet/lenet-bn.toml")).unwrap();
    let (mut graph, layers) = spec.build_training(3).unwrap();
    assert!(!layers.batch_norms.is_empty() && !layers.dropouts.is_empty());

    // Each batch norm still trains with batch statistics, and its scale is folded into
    // the fake-quantized weights of the layer before it, as kiln folds it.
    let q = Qat::new(&graph, 0.99).unwrap();
    let (g, _) = q.training_graph(&graph, &layers, 4, None).unwrap();
    let count = |op: fn(&TOp) -> bool| g.nodes.iter().filter(|n| op(&n.op)).count();
    assert_eq!(count(|o| matches!(o, TOp::FakeQuantWeights { .. })), 5);
    assert_eq!(count(|o| *o == TOp::Dropout), layers.dropouts.len());
    assert_eq!(
        count(|o| *o == TOp::BatchNormStats),
        layers.batch_norms.len()
    );
    assert_eq!(g.bn_folds.len(), layers.batch_norms.len());
    for f in &g.bn_folds {
        // The fold's scale reaches the weights that are fake-quantized.
        let fq = g.nodes.iter().find(|n| {
            matches!(n.op, TOp::FakeQuantWeights { .. })
                && g.tensors[n.inputs[0]].name.contains("qat_bn_fold")
                && g.nodes.iter().any(|m| {
                    m.output == n.inputs[0]
                        && m.inputs.iter().any(|&t| {
                            g.nodes
                                .iter()
                                .any(|r| r.output == t && r.inputs == [f.scale])
                        })
                })
        });
        assert!(fq.is_some(), "{} is not folded", f.layer.name);
    }
    let trained: Vec<&str> = g
        .params
        .iter()
        .map(|&p| g.tensors[p].name.as_str())
        .collect();
    for bn in &layers.batch_norms {
        for role in ["gamma", "beta"] {
            assert!(trained.contains(&bn.tensor(role).as_str()), "{trained:?}");
        }
        for role in ["scale", "shift", "running_mean", "running_var"] {
            assert!(!trained.contains(&bn.tensor(role).as_str()), "{trained:?}");
        }
    }

    let (data, test) = (common::mnist(1000, false), common::mnist(300, true));
    let mut cfg = config(2, 2);
    cfg.layers = layers.clone();
    let trained =
        train::train_model(&mut graph, &data, Some(&test), &cfg, None, &mut |_| {}).unwrap();
    let q = trained.qat.expect("QAT state");
    let fake = qat::predict(&graph, &q, &test, 64).unwrap();
    let fake_acc = train::accuracy(&fake, &test.labels);
    assert!(fake_acc > 0.8, "QAT accuracy {fake_acc}");
    assert_eq!(trained.history[1].test_accuracy, Some(fake_acc));
    let int8 = qat::quantize_int8(&graph, &q.ranges()).unwrap();
    let int8_pred = train::predict_kiln(&int8, &test).unwrap();
    let agree = int8_pred.iter().zip(&fake).filter(|(a, b)| a == b).count();
    assert!(
        agree + 3 >= test.len(),
        "int8 agrees with QAT on {agree} of {} samples",
        test.len()
    );

    // The running statistics kept moving during QAT (the first epoch alone ends
    // elsewhere), and scale and shift derive from them as after float training.
    let (mut float_only, _) = spec.build_training(3).unwrap();
    let mut one = cfg.clone();
    (one.epochs, one.qat) = (1, None);
    train::train_model(&mut float_only, &data, None, &one, None, &mut |_| {}).unwrap();
    let bn = &layers.batch_norms[0];
    let mean = constant(&graph, &bn.tensor("running_mean"));
    assert_ne!(mean, constant(&float_only, &bn.tensor("running_mean")));
    let (scale, shift) = bn.affine(
        &constant(&graph, &bn.tensor("gamma")),
        &constant(&graph, &bn.tensor("beta")),
        &mean,
        &constant(&graph, &bn.tensor("running_var")),
    );
    assert_eq!(constant(&graph, &bn.tensor("scale")), scale);
    assert_eq!(constant(&graph, &bn.tensor("shift")), shift);
}

#[test]
fn qat_resumes_bit_identically_inside_its_epochs() {
    let spec = ModelSpec::load(&common::root().join("models/lenet/lenet-bn.toml")).unwrap();
    let data = common::mnist(192, false);
    let dir = std::env::temp_dir().join(format!("kiln-qat-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = |epochs: usize, start: usize, ckpt: &str| {
        let mut c = config(epochs, start);
        c.batch = 32;
        c.layers = spec.training_layers().unwrap();
        c.checkpoint = Some(dir.join(ckpt));
        c
    };
    let run = |c: &TrainConfig, resume: Option<&Checkpoint>, seed: u64| {
        let mut graph = spec.build(seed).unwrap();
        let t = train::train_model(&mut graph, &data, None, c, resume, &mut |_| {});
        t.map(|t| (graph, t.qat.map(|q| q.ranges())))
    };
    // Three epochs with QAT from the second, straight through.
    let (straight, straight_ranges) = run(&cfg(3, 2, "straight.safetensors"), None, 4).unwrap();
    // Two (the second one QAT), a stop, and the third from the checkpoint, which holds
    // the QAT ranges; the resumed run's own initial weights do not matter.
    run(&cfg(2, 2, "stopped.safetensors"), None, 4).unwrap();
    let stopped = Checkpoint::load(&dir.join("stopped.safetensors")).unwrap();
    assert!(!stopped.qat_ranges.is_empty() && stopped.qat.is_some());
    let (resumed, resumed_ranges) =
        run(&cfg(3, 2, "resumed.safetensors"), Some(&stopped), 99).unwrap();
    assert!(resumed == straight, "resumed weights differ");
    assert_eq!(resumed_ranges, straight_ranges);

    // A QAT checkpoint needs the same QAT settings; a float one cannot resume inside
    // the QAT epochs (it has no ranges).
    let e = run(&cfg(3, 1, "x.safetensors"), Some(&stopped), 4)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("start_epoch 2") && e.contains("start_epoch 1"),
        "{e}"
    );
    let mut float = cfg(2, 2, "float.safetensors");
    float.qat = None;
    run(&float, None, 4).unwrap();
    let float_ckpt = Checkpoint::load(&dir.join("float.safetensors")).unwrap();
    let e = run(&cfg(3, 2, "y.safetensors"), Some(&float_ckpt), 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no QAT ranges"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn qat_trains_a_dropout_between_a_layer_and_its_batch_norm() {
    // kiln folds the batch norm into the conv (inference has no dropout); in training
    // the dropout sits between them. The batch norm still trains with batch
    // statistics on the dropped, unscaled conv result, so QAT trains this model and
    // its int8 model predicts what the fake-quantized one does.
    let text = r#"
input = [8, 8, 1]

[[layer]]
type = "conv"
filters = 4
kernel = 3
bias = false

[[layer]]
type = "dropout"
rate = 0.5

[[layer]]
type = "batch_norm"

[[layer]]
type = "relu"

[[layer]]
type = "flatten"

[[layer]]
type = "dense"
units = 10
"#;
    let (mut graph, data, cfg) = small_model(text, "dropout-bn.toml", 7);
    let trained = train::train_model(&mut graph, &data, None, &cfg, None, &mut |_| {}).unwrap();
    let q = trained.qat.unwrap();
    let fake = qat::predict(&graph, &q, &data, 16).unwrap();
    let int8 = qat::quantize_int8(&graph, &q.ranges()).unwrap();
    let int8_pred = train::predict_kiln(&int8, &data).unwrap();
    let agree = int8_pred.iter().zip(&fake).filter(|(a, b)| a == b).count();
    assert!(
        agree + 2 >= data.len(),
        "int8 agrees with QAT on {agree} of 64"
    );
}

#[test]
fn qat_refuses_a_batch_norm_kiln_does_not_fold_before_training() {
    // conv -> relu -> batch norm: kiln fuses the relu into the conv and keeps the batch
    // norm as an int8 MUL and ADD, which QAT with batch statistics cannot reproduce.
    let text = r#"
input = [8, 8, 1]

[[layer]]
type = "conv"
filters = 4
kernel = 3

[[layer]]
type = "relu"

[[layer]]
type = "batch_norm"

[[layer]]
type = "flatten"

[[layer]]
type = "dense"
units = 10
"#;
    let (mut graph, data, cfg) = small_model(text, "relu-bn.toml", 5);
    let mut steps = 0;
    let e = train::train_model(&mut graph, &data, None, &cfg, None, &mut |_| steps += 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fold batch norm"), "{e}");
    assert_eq!(steps, 0, "refused only after training");
}

/// The 8x8x1 model `text` (a model file), 64 synthetic samples (pixel `i % period /
/// period`, label `i % 10`) and a 2-epoch config with QAT in the second, batch 16.
fn small_model(text: &str, file: &str, period: usize) -> (Graph, Dataset, TrainConfig) {
    let spec = ModelSpec::parse(text, file).unwrap();
    let (graph, layers) = spec.build_training(1).unwrap();
    let data = Dataset {
        images: (0..64 * 64)
            .map(|i| (i % period) as f32 / period as f32)
            .collect(),
        labels: (0..64).map(|i| i % 10).collect(),
        sample: vec![8, 8, 1],
    };
    let mut cfg = config(2, 2);
    cfg.batch = 16;
    cfg.layers = layers;
    (graph, data, cfg)
}
