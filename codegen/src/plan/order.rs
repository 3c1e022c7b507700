//! Order search: the topological order with the lowest peak of live arena bytes.
//!
//! The exact search is a dynamic program over the sets of nodes already run (downsets):
//! the arena bytes a set leaves live, and the cost of running one more node after it,
//! depend only on the set, so keeping the lowest peak per set is exact. Sets are
//! explored breadth first (one more node per layer). The better of the graph's order
//! and a greedy order comes first: states whose peak reaches its peak are dropped (when
//! none is left, that order is optimal), and when its peak equals a floor no order can
//! avoid (one node's operands and result) there is no search at all. After a state cap
//! the search gives up and keeps that order.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::model::{Model, NodeSet};

/// The order chosen and how it was found.
pub(super) struct Choice {
    /// Node indices in execution order.
    pub(super) order: Vec<usize>,
    /// Peak live arena bytes of `order`.
    pub(super) bound: usize,
    /// Peak of the graph's own node order.
    pub(super) graph_order_bound: usize,
    /// True when the exact search finished: no order has a lower peak.
    pub(super) optimal: bool,
}

/// Finds the order with the lowest peak, exploring at most `max_states` sets of nodes
/// (0: keep the graph's order).
pub(super) fn choose(model: &Model, max_states: usize) -> Choice {
    let graph_order: Vec<usize> = (0..model.nodes()).collect();
    let graph_order_bound = model.trace(&graph_order).peak();
    let mut choice = Choice {
        order: graph_order,
        bound: graph_order_bound,
        graph_order_bound,
        optimal: false,
    };
    if max_states == 0 {
        return choice;
    }
    let greedy_order = greedy(model);
    let greedy_bound = model.trace(&greedy_order).peak();
    if greedy_bound < choice.bound {
        choice.order = greedy_order;
        choice.bound = greedy_bound;
    }
    if choice.bound <= floor(model) {
        choice.optimal = true;
        return choice;
    }
    match exact(model, choice.bound, max_states) {
        Search::Better(order) => {
            choice.bound = model.trace(&order).peak();
            choice.order = order;
            choice.optimal = true;
        }
        Search::NoneBetter => choice.optimal = true,
        Search::GaveUp => {}
    }
    choice
}

/// A peak no order avoids: while a node runs, its arena operands are live, and so is its
/// result unless it may share an operand's bytes.
fn floor(model: &Model) -> usize {
    (0..model.nodes())
        .map(|v| {
            let node = &model.graph.nodes[v];
            let mut groups: Vec<usize> = node.inputs.iter().map(|t| model.group[t.0]).collect();
            groups.sort_unstable();
            groups.dedup();
            let operands: usize = groups.iter().map(|&g| model.size[g]).sum();
            let shares = model.alias[v] || !model.candidates[v].is_empty();
            operands
                + if shares {
                    0
                } else {
                    model.size[model.output(v)]
                }
        })
        .max()
        .unwrap_or(0)
}

/// At each step, runs the ready node that holds the fewest bytes while it runs and,
/// among those, leaves the fewest live (ties: graph order).
fn greedy(model: &Model) -> Vec<usize> {
    let mut done = NodeSet::new(model.nodes());
    let mut order = Vec::with_capacity(model.nodes());
    let mut live = 0;
    while order.len() < model.nodes() {
        let (v, after) = model
            .ready(&done)
            .map(|v| (v, model.step(live, v, &done)))
            .min_by_key(|&(v, (during, after))| (during, after, v))
            .map(|(v, (_, after))| (v, after))
            .expect("a valid graph always has a ready node");
        done.insert(v);
        order.push(v);
        live = after;
    }
    order
}

/// One set of nodes already run, reached with the lowest peak found so far.
struct State {
    done: NodeSet,
    live: usize,
    peak: usize,
}

/// How a state was reached: its predecessor in the previous layer and the node run.
type Back = (usize, usize);

/// The outcome of the exact search.
enum Search {
    /// An order with a lower peak than the bound; no order is lower still.
    Better(Vec<usize>),
    /// No order has a lower peak than the bound.
    NoneBetter,
    /// The search hit its state cap.
    GaveUp,
}

/// The order with the lowest peak below `bound`, keeping only states whose peak is
/// below it, within `max_states` states.
fn exact(model: &Model, bound: usize, max_states: usize) -> Search {
    let mut layer = vec![State {
        done: NodeSet::new(model.nodes()),
        live: 0,
        peak: 0,
    }];
    let mut backs: Vec<Vec<Back>> = Vec::with_capacity(model.nodes());
    let mut states = 1usize;
    for _ in 0..model.nodes() {
        let (next, back) = expand(model, &layer, bound);
        states = states.saturating_add(next.len());
        if states > max_states {
            return Search::GaveUp;
        }
        if next.is_empty() {
            return Search::NoneBetter;
        }
        layer = next;
        backs.push(back);
    }
    Search::Better(unwind(&backs))
}

/// All states one node further than `layer`, each with its best predecessor.
fn expand(model: &Model, layer: &[State], bound: usize) -> (Vec<State>, Vec<Back>) {
    let mut next: Vec<State> = Vec::new();
    let mut back: Vec<Back> = Vec::new();
    let mut index: HashMap<NodeSet, usize> = HashMap::new();
    for (i, state) in layer.iter().enumerate() {
        for v in model.ready(&state.done) {
            let (during, live) = model.step(state.live, v, &state.done);
            let peak = state.peak.max(during);
            if peak >= bound {
                continue;
            }
            let mut done = state.done.clone();
            done.insert(v);
            match index.entry(done) {
                Entry::Occupied(e) => {
                    let j = *e.get();
                    if peak < next[j].peak {
                        next[j].peak = peak;
                        back[j] = (i, v);
                    }
                }
                Entry::Vacant(e) => {
                    let done = e.key().clone();
                    e.insert(next.len());
                    next.push(State { done, live, peak });
                    back.push((i, v));
                }
            }
        }
    }
    (next, back)
}

/// The order that reaches the single state of the last layer.
fn unwind(backs: &[Vec<Back>]) -> Vec<usize> {
    let mut order = Vec::with_capacity(backs.len());
    let mut at = 0;
    for layer in backs.iter().rev() {
        let (prev, v) = layer[at];
        order.push(v);
        at = prev;
    }
    order.reverse();
    order
}
