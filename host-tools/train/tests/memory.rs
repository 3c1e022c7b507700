//! The static memory plan and gradient checkpointing: plans never overwrite a value
//! before its last reader, in-place steps and recomputation give bit-identical
//! gradients and weights, the arena sits between the lower bound and no sharing, and
//! checkpointing lowers the planned peak of a deep network.

mod common;

use kiln_codegen::ir::{
    infer_output_shape, Activation, Conv2dAttrs, Graph, Node, Op, Padding, TensorId, TensorInfo,
};
use kiln_train::autodiff::differentiate;
use kiln_train::data::Dataset;
use kiln_train::exec::Executor;
use kiln_train::graph::{Loss, TrainGraph};
use kiln_train::model::ModelSpec;
use kiln_train::plan::{Checkpointing, Loc, MemoryPlan};
use kiln_train::rng::Rng;
use kiln_train::train::{self, read_params, TrainConfig};

/// Eight same-size 3x3 convolutions with ReLU: the chain checkpointing is made for.
const DEEP: &str = r#"
name = "deep"
input = [12, 12, 1]
[[layer]]
type = "conv"
filters = 8
kernel = 3
padding = "same"
[[layer]]
type = "relu"
[[layer]]
type = "conv"
filters = 8
kernel = 3
padding = "same"
[[layer]]
type = "relu"
[[layer]]
type = "conv"
filters = 8
kernel = 3
padding = "same"
[[layer]]
type = "relu"
[[layer]]
type = "conv"
filters = 8
kernel = 3
padding = "same"
[[layer]]
type = "relu"
[[layer]]
type = "conv"
filters = 8
kernel = 3
padding = "same"
[[layer]]
type = "tanh"
[[layer]]
type = "conv"
filters = 8
kernel = 3
padding = "same"
[[layer]]
type = "relu"
[[layer]]
type = "conv"
filters = 8
kernel = 3
padding = "same"
[[layer]]
type = "relu"
[[layer]]
type = "conv"
filters = 8
kernel = 3
padding = "same"
[[layer]]
type = "relu"
[[layer]]
type = "max_pool"
size = 2
[[layer]]
type = "dense"
units = 10
"#;

fn training_graph(ir: &Graph, batch: usize, loss: Loss) -> TrainGraph {
    let mut g = TrainGraph::from_ir(ir, batch).unwrap();
    g.add_loss(loss).unwrap();
    differentiate(&mut g).unwrap();
    g
}

fn lenet() -> Graph {
    ModelSpec::load(&common::root().join("models/lenet/model.toml"))
        .unwrap()
        .build(3)
        .unwrap()
}

fn deep() -> Graph {
    ModelSpec::parse(DEEP, "deep.toml")
        .unwrap()
        .build(3)
        .unwrap()
}

/// A DAG with every in-place op (branches, ADD and MUL of two activations,
/// CONCATENATION, every activation function, RESHAPE), trained with MSE.
fn dag() -> Graph {
    let mut g = Graph::default();
    let mut rng = Rng::new(5);
    let mut tensor = |g: &mut Graph, shape: Vec<usize>, data: bool| {
        let len: usize = shape.iter().product();
        let data: Option<Vec<f32>> =
            data.then(|| (0..len).map(|_| rng.uniform(-0.5, 0.5)).collect());
        g.push_f32(format!("t{}", g.tensors.len()), shape, data.as_deref())
    };
    let node = |g: &mut Graph,
                t: &mut dyn FnMut(&mut Graph, Vec<usize>, bool) -> TensorId,
                op: Op,
                inputs: Vec<TensorId>,
                shape: Option<Vec<usize>>| {
        let shape = shape.unwrap_or_else(|| {
            let infos: Vec<&TensorInfo> = inputs.iter().map(|x| g.info(*x)).collect();
            infer_output_shape(&op, &infos, &[]).unwrap()
        });
        let y = t(g, shape, false);
        g.nodes.push(Node {
            name: format!("n{}", g.nodes.len()),
            op,
            inputs,
            outputs: vec![y],
        });
        y
    };
    let none = Activation::None;
    let x = tensor(&mut g, vec![1, 6, 6, 2], false);
    g.inputs.push(x);
    let f = tensor(&mut g, vec![4, 3, 3, 2], true);
    let bias = tensor(&mut g, vec![4], true);
    let conv = Op::Conv2d(Conv2dAttrs {
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Same,
        activation: none,
        residual: None,
    });
    let a = node(&mut g, &mut tensor, conv, vec![x, f, bias], None);
    let b = node(&mut g, &mut tensor, Op::Relu6, vec![a], None);
    let c = node(&mut g, &mut tensor, Op::Tanh, vec![b], None);
    let d = node(&mut g, &mut tensor, Op::Logistic, vec![b], None);
    let e = node(
        &mut g,
        &mut tensor,
        Op::Add { activation: none },
        vec![c, d],
        None,
    );
    let m = node(
        &mut g,
        &mut tensor,
        Op::Mul { activation: none },
        vec![e, b],
        None,
    );
    let l = node(
        &mut g,
        &mut tensor,
        Op::LeakyRelu { alpha: 0.1 },
        vec![m],
        None,
    );
    let r = node(&mut g, &mut tensor, Op::Relu, vec![l], None);
    let cat = Op::Concatenation {
        axis: 3,
        activation: none,
    };
    let k = node(&mut g, &mut tensor, cat, vec![r, b], None);
    let flat = node(
        &mut g,
        &mut tensor,
        Op::Reshape,
        vec![k],
        Some(vec![1, 288]),
    );
    let w = tensor(&mut g, vec![3, 288], true);
    let fc = Op::FullyConnected {
        activation: none,
        keep_num_dims: false,
    };
    let out = node(&mut g, &mut tensor, fc, vec![flat, w], None);
    g.outputs.push(out);
    g.validate().unwrap();
    g
}

/// Replays `plan` on a shadow arena that records which value (tensor, step written)
/// each element holds, and checks that every operand read is still intact.
fn check_plan(g: &TrainGraph, plan: &MemoryPlan, what: &str) {
    let mut owner = vec![(usize::MAX, usize::MAX); plan.arena_len];
    let mut written = vec![usize::MAX; g.tensors.len()];
    for (s, step) in plan.steps.iter().enumerate() {
        let node = &g.nodes[step.node];
        for (k, loc) in step.inputs.iter().enumerate() {
            let t = node.inputs[k];
            assert_ne!(*loc, Loc::Missing, "{what}: step {s} operand {k} missing");
            if let Loc::Arena(r) = loc {
                assert_eq!(r.len(), g.tensors[t].len(), "{what}: step {s} operand {k}");
                let want = (t, written[t]);
                assert!(
                    owner[r.clone()].iter().all(|&o| o == want),
                    "{what}: step {s} ({}) reads '{}' after it was overwritten",
                    node.op.name(),
                    g.tensors[t].name
                );
                let overlaps = r.start < step.out.end && step.out.start < r.end;
                assert_eq!(
                    overlaps,
                    step.in_place == Some(k),
                    "{what}: step {s} operand {k} overlaps the result"
                );
                if overlaps {
                    assert_eq!(*r, step.out, "{what}: step {s} partial in-place overlap");
                }
            }
        }
        assert_eq!(step.out.len(), g.tensors[node.output].len());
        owner[step.out.clone()].fill((node.output, s));
        written[node.output] = s;
    }
    for t in g.outputs.iter().chain(&g.loss).chain(&g.grads) {
        if let Some(r) = &plan.kept[*t] {
            assert!(
                owner[r.clone()].iter().all(|&o| o == (*t, written[*t])),
                "{what}: kept '{}' overwritten",
                g.tensors[*t].name
            );
        }
    }
}

fn plans(g: &TrainGraph) -> Vec<(String, MemoryPlan)> {
    let mut all = vec![
        ("off".to_string(), MemoryPlan::new(g, Checkpointing::Off)),
        ("no in-place".into(), MemoryPlan::without_in_place(g)),
        ("auto".into(), MemoryPlan::new(g, Checkpointing::Auto)),
    ];
    for n in 2..=g.forward_len {
        all.push((
            format!("{n} segments"),
            MemoryPlan::new(g, Checkpointing::Segments(n)),
        ));
    }
    all
}

#[test]
fn plans_never_overwrite_a_live_value() {
    for (name, ir, loss) in [
        ("lenet", lenet(), Loss::SoftmaxCrossEntropy),
        ("deep", deep(), Loss::SoftmaxCrossEntropy),
        ("dag", dag(), Loss::Mse),
    ] {
        let g = training_graph(&ir, 3, loss);
        for (what, plan) in plans(&g) {
            check_plan(&g, &plan, &format!("{name}, {what}"));
            let r = plan.report;
            assert!(
                r.lower_bound_bytes <= r.arena_bytes && r.arena_bytes <= r.unshared_bytes,
                "{name}, {what}: {r:?}"
            );
        }
    }
}

/// Gradients of one run of `g` with every plan, bit for bit equal to the first's.
#[test]
fn in_place_and_recomputation_give_identical_gradients() {
    for (name, ir, loss) in [
        ("dag", dag(), Loss::Mse),
        ("deep", deep(), Loss::SoftmaxCrossEntropy),
    ] {
        let g = training_graph(&ir, 4, loss);
        let mut rng = Rng::new(9);
        let feeds: Vec<Vec<f32>> = g
            .inputs
            .iter()
            .map(|&t| {
                let n = g.tensors[t].len();
                (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
            })
            .collect();
        let feeds: Vec<&[f32]> = feeds.iter().map(Vec::as_slice).collect();
        let params = read_params(&ir, &g.param_ir);
        let mut reference: Option<Vec<Vec<u32>>> = None;
        let mut in_place = 0;
        let mut recomputed = 0;
        for (what, plan) in plans(&g) {
            in_place += plan.report.in_place;
            recomputed += plan.report.recomputed;
            let mut exec = Executor::with_plan(g.clone(), plan);
            exec.run(&feeds, &params).unwrap();
            let grads: Vec<Vec<u32>> = g
                .grads
                .iter()
                .chain(&g.loss)
                .map(|&t| exec.value(t).unwrap().iter().map(|v| v.to_bits()).collect())
                .collect();
            assert!(grads.iter().flatten().any(|&b| b != 0), "{name}: all zero");
            match &reference {
                None => reference = Some(grads),
                Some(r) => assert!(*r == grads, "{name}, {what}: gradients differ"),
            }
        }
        assert!(in_place > 0 && recomputed > 0, "{name}: nothing exercised");
    }
}

#[test]
fn checkpointed_training_gives_identical_weights() {
    let data = Dataset::load_dir(
        &common::root().join("data/mnist-10k"),
        &[28, 28, 1],
        Some(64),
    )
    .unwrap();
    let run = |checkpoint| {
        let mut graph = lenet();
        let cfg = TrainConfig {
            batch: 16,
            epochs: 2,
            grad_checkpoint: checkpoint,
            ..TrainConfig::default()
        };
        let h = train::train(&mut graph, &data, None, &cfg, &mut |_| {}).unwrap();
        let curve: Vec<_> = h
            .iter()
            .map(|e| (e.loss.to_bits(), e.train_accuracy.to_bits()))
            .collect();
        (graph, curve)
    };
    let plain = run(Checkpointing::Off);
    for n in [2, 3, 5] {
        let g = training_graph(&lenet(), 16, Loss::SoftmaxCrossEntropy);
        assert!(
            MemoryPlan::new(&g, Checkpointing::Segments(n))
                .report
                .recomputed
                > 0
        );
        assert!(run(Checkpointing::Segments(n)) == plain, "{n} segments");
    }
}

#[test]
fn checkpointing_lowers_the_peak_of_a_deep_net() {
    let g = training_graph(&deep(), 32, Loss::SoftmaxCrossEntropy);
    let off = MemoryPlan::new(&g, Checkpointing::Off).report;
    let sqrt = MemoryPlan::new(&g, Checkpointing::Segments(4)).report;
    let auto = MemoryPlan::new(&g, Checkpointing::Auto).report;
    assert!(sqrt.arena_bytes < off.arena_bytes, "{sqrt:?} vs {off:?}");
    assert!(auto.arena_bytes <= sqrt.arena_bytes, "{auto:?} vs {sqrt:?}");
    assert!(auto.recomputed > 0 && auto.recomputed < g.forward_len);
    // The plan shares: well under the sum of all tensors, near the lower bound.
    assert!(off.arena_bytes * 2 < off.unshared_bytes, "{off:?}");
    assert!(
        off.arena_bytes as f64 <= off.lower_bound_bytes as f64 * 1.1,
        "{off:?}"
    );
}

#[test]
fn memory_plans_of_lenet() {
    let (off, auto) =
        train::memory_plans(&lenet(), &Default::default(), 32, Checkpointing::Auto).unwrap();
    assert!(off.arena_bytes * 2 < off.unshared_bytes, "{off:?}");
    assert!(off.in_place > 0);
    // LeNet's peak is the first layer's backward (its ReLU output, that output's gradient
    // and the pooled gradient alive at once), which no recomputation removes: the
    // automatic choice keeps the plain plan rather than recompute for nothing.
    assert_eq!(off.arena_bytes, off.lower_bound_bytes);
    assert_eq!(auto, off);
}
