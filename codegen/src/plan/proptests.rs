//! Property tests on random valid graphs: every plan passes `check_plan` (no live bytes
//! shared except by aliases and in-place pairs, arena at least the lower bound, a
//! topological order no worse than the graph's), chains are packed exactly, and the
//! exact search finds the best of all orders on small graphs.

use super::tests::{add, check_plan, pad_to, Builder};
use super::*;
use crate::ir::{Activation, Op};
use proptest::prelude::*;

/// One random node: an operator kind and two choices (operand, attribute).
type Step = (u8, usize, usize);

fn mul() -> Op {
    Op::Mul {
        activation: Activation::None,
    }
}

/// Largest tensor the generator makes, in elements.
const MAX_ELEMENTS: usize = 2048;

/// Applies one random node to `x` (reading `others` for binary ops and concatenation);
/// `None` when the result would be too large.
fn apply(
    b: &mut Builder,
    kind: u8,
    x: TensorId,
    pick: usize,
    others: &[TensorId],
) -> Option<TensorId> {
    let shape = b.g.info(x).shape.clone();
    let (rows, cols) = (shape[0], shape[1]);
    let y = match kind % 10 {
        0 => b.same(Op::Relu, &[x]),
        1 => b.same(Op::Logistic, &[x]),
        2 => b.same(Op::Softmax { beta: 1.0 }, &[x]),
        3 => b.same(Op::Quantize, &[x]),
        4 | 5 => {
            let op = if kind % 10 == 4 { add() } else { mul() };
            let same: Vec<TensorId> = others
                .iter()
                .copied()
                .filter(|t| b.g.info(*t).shape == shape)
                .collect();
            let other = match (pick % 3, same.is_empty()) {
                (0, _) | (_, true) => b.constant(&[1, 1]),
                _ => same[pick % same.len()],
            };
            let operands = if pick.is_multiple_of(2) {
                [x, other]
            } else {
                [other, x]
            };
            b.node(op, &operands, &shape)
        }
        6 => {
            let target = match pick % 3 {
                0 => [1, rows * cols],
                1 => [rows * cols, 1],
                _ => [cols, rows],
            };
            b.node(Op::Reshape, &[x], &target)
        }
        7 => {
            let mut parts = vec![x];
            parts.extend(
                others
                    .iter()
                    .filter(|t| b.g.info(**t).shape[0] == rows)
                    .take(pick % 3),
            );
            let width: usize = parts.iter().map(|t| b.g.info(*t).shape[1]).sum();
            if rows * width > MAX_ELEMENTS {
                return None;
            }
            let op = Op::Concatenation {
                axis: 1,
                activation: Activation::None,
            };
            b.node(op, &parts, &[rows, width])
        }
        8 => {
            let (op, _) = pad_to(cols, pick % 40);
            b.node(op, &[x], &[rows, cols + pick % 40])
        }
        _ => {
            let op = Op::Mean {
                axes: vec![1],
                keep_dims: true,
            };
            b.node(op, &[x], &[rows, 1])
        }
    };
    Some(y)
}

/// A random DAG: each node reads a random earlier tensor; the last result and about a
/// quarter of the others (picked by `outputs` bits) are graph outputs.
fn dag(inputs: &[usize], steps: &[Step], outputs: u64) -> Graph {
    let mut b = Builder::default();
    let mut avail: Vec<TensorId> = inputs.iter().map(|&n| b.input(&[1, n])).collect();
    let mut results = Vec::new();
    for &(kind, which, pick) in steps {
        let x = avail[which % avail.len()];
        let y = apply(&mut b, kind, x, pick, &avail).unwrap_or_else(|| b.same(Op::Relu, &[x]));
        avail.push(y);
        results.push(y);
    }
    let last = results.len() - 1;
    for (i, y) in results.iter().enumerate() {
        if i == last || (outputs >> (2 * i % 64)) & 3 == 0 {
            b.output(*y);
        }
    }
    b.build()
}

/// A random chain: each node reads only the previous result (and constants).
fn chain(input: usize, steps: &[Step]) -> Graph {
    let mut b = Builder::default();
    let mut x = b.input(&[1, input]);
    for &(kind, _, pick) in steps {
        let y = apply(&mut b, kind, x, pick, &[x]);
        x = y.unwrap_or_else(|| b.same(Op::Relu, &[x]));
    }
    b.output(x);
    b.build()
}

fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..=max)
}

fn options(in_place: bool, alignment: usize) -> PlanOptions {
    PlanOptions {
        in_place,
        alignment,
        ..PlanOptions::default()
    }
}

/// Every topological order of `graph`, by depth-first search.
fn all_orders(graph: &Graph) -> Vec<Vec<NodeId>> {
    fn extend(
        graph: &Graph,
        done: &mut Vec<NodeId>,
        ready: &mut [bool],
        out: &mut Vec<Vec<NodeId>>,
    ) {
        if done.len() == graph.nodes.len() {
            out.push(done.clone());
            return;
        }
        for v in 0..graph.nodes.len() {
            let produced =
                |t: &TensorId| ready[t.0] || graph.nodes.iter().all(|n| n.outputs[0] != *t);
            if done.contains(&NodeId(v)) || !graph.nodes[v].inputs.iter().all(produced) {
                continue;
            }
            let y = graph.nodes[v].outputs[0].0;
            ready[y] = true;
            done.push(NodeId(v));
            extend(graph, done, ready, out);
            done.pop();
            ready[y] = false;
        }
    }
    let mut out = Vec::new();
    let mut ready = vec![false; graph.tensors.len()];
    extend(graph, &mut Vec::new(), &mut ready, &mut out);
    out
}

proptest! {
    #[test]
    fn dag_plans_are_sound(
        inputs in prop::collection::vec(1..64usize, 1..=2),
        steps in steps(12),
        outputs in any::<u64>(),
        alignment in prop::sample::select(vec![1usize, 4, 16]),
    ) {
        let g = dag(&inputs, &steps, outputs);
        let with = plan(&g, &options(true, alignment)).unwrap();
        check_plan(&g, &with);
        let without = plan(&g, &options(false, alignment)).unwrap();
        check_plan(&g, &without);
        prop_assert!(with.best_order_bound_bytes <= without.best_order_bound_bytes);
        prop_assert!(with.best_order_bound_bytes <= with.graph_order_bound_bytes);
        let kept = PlanOptions { max_search_states: 0, ..options(true, alignment) };
        let graph_order = plan(&g, &kept).unwrap();
        check_plan(&g, &graph_order);
        prop_assert_eq!(graph_order.lower_bound_bytes, with.graph_order_bound_bytes);
        prop_assert!(with.best_order_bound_bytes <= graph_order.lower_bound_bytes);
        prop_assert!(with.order_is_optimal);
    }

    #[test]
    fn chains_reach_the_lower_bound(
        input in 1..64usize,
        steps in steps(16),
        in_place in any::<bool>(),
    ) {
        let g = chain(input, &steps);
        let p = plan(&g, &options(in_place, 16)).unwrap();
        check_plan(&g, &p);
        prop_assert_eq!(p.arena_bytes, p.lower_bound_bytes);
        prop_assert_eq!(p.lower_bound_bytes, p.graph_order_bound_bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn exact_search_finds_the_best_order(
        inputs in prop::collection::vec(1..64usize, 1..=2),
        steps in steps(6),
        outputs in any::<u64>(),
        in_place in any::<bool>(),
    ) {
        let g = dag(&inputs, &steps, outputs);
        let best = plan(&g, &options(in_place, 16)).unwrap();
        let brute = all_orders(&g)
            .iter()
            .map(|order| plan_with_order(&g, order, &options(in_place, 16)).unwrap())
            .inspect(|p| check_plan(&g, p))
            .map(|p| p.lower_bound_bytes)
            .min()
            .unwrap();
        prop_assert_eq!(best.best_order_bound_bytes, brute);
    }
}
