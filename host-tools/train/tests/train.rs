//! End-to-end: an MLP and LeNet learn MNIST digits in seconds, training is
//! bit-identical for one seed whatever the thread count, and the trained graph runs the
//! same in kiln's own executor and survives a safetensors round trip.

mod common;

use kiln_train::model::ModelSpec;
use kiln_train::optim::{OptimizerKind, Schedule};
use kiln_train::train::{self, TrainConfig};

fn config(optimizer: &str, epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch: 32,
        lr: if optimizer == "sgd" { 0.1 } else { 2e-3 },
        optimizer: OptimizerKind::parse(optimizer, 0.0).unwrap(),
        schedule: if optimizer == "sgd" {
            Schedule::Cosine
        } else {
            Schedule::Constant
        },
        seed: 7,
        ..TrainConfig::default()
    }
}

#[test]
fn mlp_learns_1000_digits_in_one_epoch() {
    let spec = ModelSpec::load(&common::root().join("models/lenet/mlp.toml")).unwrap();
    let (data, test) = (common::mnist(1000, false), common::mnist(500, true));
    // One epoch of 31 steps; SGD runs under a cosine schedule.
    for optimizer in ["adam", "sgd", "adamw"] {
        let mut graph = spec.build(7).unwrap();
        let history = train::train(
            &mut graph,
            &data,
            Some(&test),
            &config(optimizer, 1),
            &mut |_| {},
        )
        .unwrap();
        let acc = history[0].test_accuracy.unwrap();
        assert!(
            acc > 0.75,
            "{optimizer}: test accuracy {acc} after one epoch"
        );
        // The trained graph is a kiln graph: kiln's executor agrees.
        let ours = train::predict(&graph, &test, 64).unwrap();
        let kiln = train::predict_kiln(&graph, &test).unwrap();
        let agree = ours.iter().zip(&kiln).filter(|(a, b)| a == b).count();
        assert!(
            agree >= test.len() - 1,
            "{optimizer}: kiln executor agrees on {agree} of {}",
            test.len()
        );
    }
}

#[test]
fn lenet_trains_and_quantizes() {
    let spec = ModelSpec::load(&common::root().join("models/lenet/model.toml")).unwrap();
    let (data, test) = (common::mnist(2000, false), common::mnist(300, true));
    let mut graph = spec.build(3).unwrap();
    let history = train::train(
        &mut graph,
        &data,
        Some(&test),
        &config("adam", 2),
        &mut |_| {},
    )
    .unwrap();
    let float = history[1].test_accuracy.unwrap();
    assert!(history[1].loss < history[0].loss);
    assert!(float > 0.85, "LeNet test accuracy {float}");
    let int8 = train::quantize_int8(&graph, &data, 64).unwrap();
    let acc = train::accuracy(&train::predict_kiln(&int8, &test).unwrap(), &test.labels);
    assert!((acc - float).abs() < 0.05, "int8 {acc} vs float {float}");
}

#[test]
fn same_seed_same_weights_for_any_thread_count() {
    let spec = ModelSpec::load(&common::root().join("models/lenet/model.toml")).unwrap();
    let data = common::mnist(96, false);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut graph = spec.build(11).unwrap();
            let mut cfg = config("adam", 2);
            cfg.batch = 10;
            let h = train::train(&mut graph, &data, None, &cfg, &mut |_| {}).unwrap();
            (graph, h[1].loss)
        })
    };
    let (a, la) = run(1);
    let (b, lb) = run(3);
    assert_eq!(la.to_bits(), lb.to_bits());
    assert!(a == b, "weights differ between 1 and 3 threads");
    let (c, _) = {
        let mut graph = spec.build(12).unwrap();
        let h = train::train(&mut graph, &data, None, &config("adam", 1), &mut |_| {}).unwrap();
        (graph, h)
    };
    assert!(a != c, "another seed should give other weights");
}

#[test]
fn weights_round_trip_through_safetensors() {
    let spec = ModelSpec::load(&common::root().join("models/lenet/model.toml")).unwrap();
    let graph = spec.build(5).unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-train-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ids: Vec<_> = (0..graph.tensors.len())
        .filter(|&i| graph.tensors[i].data.is_some())
        .map(kiln_codegen::ir::TensorId)
        .collect();
    let file = dir.join("w.safetensors");
    train::save_weights(&graph, &ids, &file).unwrap();
    std::fs::write(dir.join("model.toml"), spec.source()).unwrap();
    let back = kiln_train::load(&dir.join("model.toml"), &file).unwrap();
    assert!(back == graph);
    // A weight file of another model is refused, naming the tensor.
    let mlp = ModelSpec::load(&common::root().join("models/lenet/mlp.toml")).unwrap();
    let mut other = mlp.build(1).unwrap();
    let e = train::load_weights(&mut other, &file)
        .unwrap_err()
        .to_string();
    assert!(e.contains("w.safetensors") && e.contains("dense"), "{e}");
}
