//! ONNX exporter: a float kiln [`Graph`] out as an ONNX model (opset [`OPSET`], IR
//! version [`IR_VERSION`], producer "kiln") that onnxruntime runs with the same results.
//!
//! The model looks like what `torch.onnx.export` writes, so it takes the same tensors as
//! the PyTorch model would: image tensors are NCHW with the batch as the symbolic
//! dimension [`BATCH`] (`[N, C, H, W]`, any batch size), convolution weights OIHW
//! (depthwise as `group = C`), dense layers `Gemm(transB = 1)` with weights
//! `[out, in]`. kiln's tensors are NHWC, so the exporter tracks how each value is laid
//! out instead of wrapping every op in transposes:
//!
//! * every 4-D kiln tensor is NCHW in the model (windows, element-wise ops, means,
//!   concatenations and softmax take their axes and constants in NCHW terms);
//! * a flatten of an image is ONNX `Flatten` of the NCHW tensor, whose features are in
//!   `C, H, W` order where kiln's are in `H, W, C` order; the dense layer after it gets
//!   its weight columns permuted to match (element-wise ops and softmax on the flattened
//!   features permute their constants the same way);
//! * only ops that depend on the element order in ways the above cannot express (a
//!   reshape to something other than a flatten, a transpose) see their operands
//!   transposed back to kiln's order first.
//!
//! Graph outputs keep the layout the model computes them in: 4-D outputs are NCHW,
//! flattened features are in `C, H, W` order (as PyTorch would produce them); dense
//! outputs such as logits are the same as kiln's.
//!
//! Dimension 0 of every activation is the batch, so ops that mix samples (a reshape,
//! mean, concatenation or transpose involving axis 0) are refused, as are int8 graphs
//! and ops with no exporter mapping; errors name the node, its index and its op. kiln's
//! own importer reads the result back with [`crate::import::onnx::parse_with_dims`]
//! (binding `N` to 1).
//!
//! ```no_run
//! let graph = kiln_codegen::import::onnx::load("model.onnx".as_ref())?;
//! kiln_codegen::export::onnx::write(&graph, "exported.onnx".as_ref())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ops;

use crate::import::onnx::proto;
use crate::ir::{DType, Graph, TensorId, ValidateError};
use prost::Message;
use proto::tensor_shape_proto::{dimension, Dimension};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The default-domain opset the exported models import.
pub const OPSET: i64 = 13;

/// The ONNX IR version written: the oldest that supports [`OPSET`] (7, as onnx's
/// `helper.make_model` and PyTorch choose it), so older runtimes load the model too.
pub const IR_VERSION: i64 = 7;

/// Name of the symbolic batch dimension (dimension 0 of every input and output).
pub const BATCH: &str = "N";

/// Why a graph could not be exported; names the node or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The graph fails [`Graph::validate`].
    #[error("cannot export an invalid graph: {0}")]
    Invalid(#[from] ValidateError),
    /// A node has no ONNX mapping, or uses it in a way the exporter cannot express.
    #[error("node {index} '{name}' ({op}): {message}")]
    Node {
        /// Index in [`Graph::nodes`].
        index: usize,
        /// The node's name.
        name: String,
        /// Its kiln op name.
        op: &'static str,
        /// What cannot be exported.
        message: String,
    },
    /// A graph input or output cannot be declared (not float32, no batch dimension).
    #[error("tensor '{name}': {message}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The model file could not be written.
    #[error("{file}: cannot write: {source}")]
    Io {
        /// The output file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The graph as serialized ONNX model bytes. Deterministic: the same graph always gives
/// the same bytes.
pub fn to_bytes(graph: &Graph) -> Result<Vec<u8>, ExportError> {
    Ok(to_model(graph)?.encode_to_vec())
}

/// Writes the graph as an ONNX model file at `path`.
pub fn write(graph: &Graph, path: &Path) -> Result<(), ExportError> {
    let bytes = to_bytes(graph)?;
    std::fs::write(path, bytes).map_err(|source| ExportError::Io {
        file: path.display().to_string(),
        source,
    })
}

/// The graph as an ONNX `ModelProto`.
pub(crate) fn to_model(graph: &Graph) -> Result<proto::ModelProto, ExportError> {
    graph.validate()?;
    let mut w = Writer::new(graph);
    let mut inputs = Vec::new();
    for &id in &graph.inputs {
        inputs.push(w.graph_input(id)?);
    }
    for (index, node) in graph.nodes.iter().enumerate() {
        w.begin(&node.name);
        w.node(node).map_err(|message| ExportError::Node {
            index,
            name: node.name.clone(),
            op: node.op.name(),
            message,
        })?;
    }
    let mut outputs = Vec::new();
    for &id in &graph.outputs {
        outputs.push(w.graph_output(id)?);
    }
    Ok(proto::ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("kiln".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(proto::GraphProto {
            node: w.nodes,
            name: Some("kiln".into()),
            initializer: w.inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// How a kiln tensor's elements are arranged in the ONNX value that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Layout {
    /// The same shape and element order as in kiln.
    Plain,
    /// A 4-D kiln NHWC tensor carried as NCHW.
    Nchw,
    /// A kiln `[N, h*w*c]` tensor (features in `h, w, c` order) carried as `[N, c*h*w]`
    /// (features in `c, h, w` order): a flatten of an NCHW image.
    FlatChw {
        /// Image height.
        h: usize,
        /// Image width.
        w: usize,
        /// Image channels.
        c: usize,
    },
}

impl Layout {
    /// Kiln feature index (`h, w, c` order) of ONNX feature `i` (`c, h, w` order), for
    /// a [`Layout::FlatChw`] with these sizes.
    fn hwc_of_chw(i: usize, h: usize, w: usize, c: usize) -> usize {
        let (ci, rest) = (i / (h * w), i % (h * w));
        rest * c + ci
    }
}

/// Kiln axis `a` of a 4-D NHWC tensor as an NCHW axis.
fn nchw_axis(a: usize) -> usize {
    [0, 2, 3, 1][a]
}

/// Builds the ONNX graph node by node.
struct Writer<'g> {
    g: &'g Graph,
    nodes: Vec<proto::NodeProto>,
    inits: Vec<proto::TensorProto>,
    /// Every value and node name used so far (ONNX names must be unique).
    names: HashSet<String>,
    /// The ONNX value computing each kiln activation, and its layout.
    values: HashMap<TensorId, (String, Layout)>,
    /// Kiln tensors (activations or constants) already materialized in a layout.
    converted: HashMap<(TensorId, Layout), String>,
    /// Name of the kiln node being converted, and how many ONNX nodes it has so far.
    current: String,
    emitted: usize,
}

impl<'g> Writer<'g> {
    fn new(g: &'g Graph) -> Self {
        Writer {
            g,
            nodes: Vec::new(),
            inits: Vec::new(),
            names: HashSet::new(),
            values: HashMap::new(),
            converted: HashMap::new(),
            current: String::new(),
            emitted: 0,
        }
    }

    /// A name not used yet: `base`, else `base_1`, `base_2`, ...
    fn fresh(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "value" } else { base };
        let mut name = base.to_string();
        let mut k = 0;
        while self.names.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.names.insert(name.clone());
        name
    }

    /// Starts converting the kiln node `name`.
    fn begin(&mut self, name: &str) {
        self.current = name.to_string();
        self.emitted = 0;
    }

    /// Appends an ONNX node reading `inputs`; returns its (single) output's name.
    fn push(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        attrs: Vec<proto::AttributeProto>,
    ) -> String {
        let node_name = if self.emitted == 0 {
            self.fresh(&self.current.clone())
        } else {
            self.fresh(&format!("{}/{op_type}", self.current))
        };
        self.emitted += 1;
        let out = self.fresh(&format!("{}/{op_type}:0", self.current));
        self.nodes.push(proto::NodeProto {
            input: inputs,
            output: vec![out.clone()],
            name: Some(node_name),
            op_type: Some(op_type.to_string()),
            domain: Some(String::new()),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// Records `value` (in `layout`) as the ONNX value of kiln tensor `id`, renaming the
    /// last node's output after the kiln tensor. A 4-D tensor computed in kiln's order
    /// is transposed to NCHW first, so every 4-D activation is NCHW.
    fn finish(&mut self, id: TensorId, value: String, layout: Layout) {
        let (value, layout) = if self.g.info(id).shape.len() == 4 && layout == Layout::Plain {
            (self.transpose(value, &[0, 3, 1, 2]), Layout::Nchw)
        } else {
            (value, layout)
        };
        let name = self.g.tensor(id).name.clone();
        let value = self.rename_last(value, &name);
        self.values.insert(id, (value, layout));
    }

    /// If `value` is the output of the last node of the current kiln node, renames it to
    /// a fresh name from `base`; returns the value's name.
    fn rename_last(&mut self, value: String, base: &str) -> String {
        let is_last = self.emitted > 0
            && self
                .nodes
                .last()
                .is_some_and(|n| n.output.first() == Some(&value));
        if !is_last {
            return value;
        }
        let name = self.fresh(base);
        if let Some(n) = self.nodes.last_mut() {
            n.output[0] = name.clone();
        }
        name
    }

    fn transpose(&mut self, x: String, perm: &[i64]) -> String {
        self.push("Transpose", vec![x], vec![ints("perm", perm)])
    }

    /// Adds a float32 initializer (little-endian raw data, as PyTorch writes them).
    fn init_f32(&mut self, base: &str, shape: &[usize], data: &[f32]) -> String {
        let name = self.fresh(base);
        self.inits.push(proto::TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: Some(proto::tensor_proto::DataType::Float as i32),
            name: Some(name.clone()),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    /// Adds an int64 initializer (shapes, pads).
    fn init_i64(&mut self, base: &str, data: &[i64]) -> String {
        let name = self.fresh(base);
        self.inits.push(proto::TensorProto {
            dims: vec![data.len() as i64],
            data_type: Some(proto::tensor_proto::DataType::Int64 as i32),
            name: Some(name.clone()),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    /// The float32 data of constant `id`.
    fn const_f32(&self, id: TensorId, what: &str) -> Result<Vec<f32>, String> {
        let t = self.g.tensor(id);
        let Some(bytes) = &t.data else {
            return Err(format!(
                "{what} '{}' is computed at run time; the exporter needs a constant",
                t.name
            ));
        };
        if t.info.dtype != DType::F32 {
            return Err(format!(
                "{what} '{}' is {}; only float32 graphs can be exported (export before quantizing)",
                t.name,
                t.info.dtype.name()
            ));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Kiln tensor `id` (an activation or a constant operand) as an ONNX value in
    /// `want`. Constants are written in that layout (a constant broadcast against an
    /// NCHW or flattened-CHW tensor is permuted to match it); activations are
    /// converted with transposes/reshapes (cached, so consumers share them).
    fn operand(&mut self, id: TensorId, want: Layout) -> Result<String, String> {
        if let Some(v) = self.converted.get(&(id, want)) {
            return Ok(v.clone());
        }
        let v = if self.g.tensor(id).data.is_some() {
            self.constant(id, want)?
        } else {
            let (v, have) = self.activation(id)?;
            self.convert(v, have, want, &self.g.info(id).shape.clone())?
        };
        self.converted.insert((id, want), v.clone());
        Ok(v)
    }

    /// The ONNX value and layout of an activation computed earlier.
    fn activation(&self, id: TensorId) -> Result<(String, Layout), String> {
        if self.g.info(id).dtype != DType::F32 {
            return Err(format!(
                "tensor '{}' is {}; only float32 graphs can be exported (export before quantizing)",
                self.g.tensor(id).name,
                self.g.info(id).dtype.name()
            ));
        }
        self.values.get(&id).cloned().ok_or_else(|| {
            format!(
                "tensor '{}' is used before it is computed",
                self.g.tensor(id).name
            )
        })
    }

    /// The layout an activation has (constants: [`Layout::Plain`]).
    fn layout_of(&self, id: TensorId) -> Layout {
        self.values.get(&id).map_or(Layout::Plain, |v| v.1)
    }

    /// An activation `v` of kiln shape `shape` converted from `have` to `want`.
    fn convert(
        &mut self,
        v: String,
        have: Layout,
        want: Layout,
        shape: &[usize],
    ) -> Result<String, String> {
        let c = |n: usize| n as i64;
        Ok(match (have, want) {
            (a, b) if a == b => v,
            (Layout::Nchw, Layout::Plain) => self.transpose(v, &[0, 2, 3, 1]),
            (Layout::Plain, Layout::Nchw) if shape.len() == 4 => self.transpose(v, &[0, 3, 1, 2]),
            (Layout::FlatChw { h, w, c: ch }, Layout::Plain) => {
                let target =
                    self.init_i64(&format!("{}/shape", self.current), &[0, c(ch), c(h), c(w)]);
                let img = self.push("Reshape", vec![v, target], vec![]);
                let hwc = self.transpose(img, &[0, 2, 3, 1]);
                self.push("Flatten", vec![hwc], vec![int("axis", 1)])
            }
            (have, want) => {
                return Err(format!(
                    "internal: no conversion of a {shape:?} tensor from {have:?} to {want:?}"
                ))
            }
        })
    }

    /// Constant `id` as an initializer that broadcasts in `want` as the kiln constant
    /// broadcasts against kiln tensors.
    fn constant(&mut self, id: TensorId, want: Layout) -> Result<String, String> {
        let data = self.const_f32(id, "constant")?;
        let shape = self.g.info(id).shape.clone();
        let name = self.g.tensor(id).name.clone();
        match want {
            Layout::Plain => Ok(self.init_f32(&name, &shape, &data)),
            Layout::Nchw => {
                if shape.len() > 4 {
                    return Err(format!(
                        "constant '{name}' of rank {} used with a 4-D tensor",
                        shape.len()
                    ));
                }
                let mut s4 = vec![1; 4 - shape.len()];
                s4.extend(&shape);
                let (data, mut s) = permuted(&data, &s4, &[0, 3, 1, 2]);
                // Leading 1s broadcast the same without them: [1, C, 1, 1] -> [C, 1, 1],
                // as a PyTorch per-channel constant looks.
                while s.len() > 1 && s[0] == 1 {
                    s.remove(0);
                }
                Ok(self.init_f32(&name, &s, &data))
            }
            Layout::FlatChw { h, w, c } => {
                let features = h * w * c;
                match shape.last() {
                    Some(&n) if n == features && shape.len() <= 2 => {
                        let rows = data.len() / features;
                        let mut out = Vec::with_capacity(data.len());
                        for r in 0..rows {
                            let row = &data[r * features..(r + 1) * features];
                            out.extend((0..features).map(|i| row[Layout::hwc_of_chw(i, h, w, c)]));
                        }
                        Ok(self.init_f32(&name, &shape, &out))
                    }
                    None | Some(1) => Ok(self.init_f32(&name, &shape, &data)),
                    _ => Err(format!(
                        "constant '{name}' {shape:?} does not broadcast along flattened features"
                    )),
                }
            }
        }
    }

    /// Declares kiln graph input `id`: `[N, C, H, W]` for images, `[N, ...]` otherwise.
    fn graph_input(&mut self, id: TensorId) -> Result<proto::ValueInfoProto, ExportError> {
        let t = self.g.tensor(id);
        let (name, shape) = (t.name.clone(), t.info.shape.clone());
        check_io(self.g, id)?;
        let layout = if shape.len() == 4 {
            Layout::Nchw
        } else {
            Layout::Plain
        };
        let onnx_name = self.fresh(&name);
        self.values.insert(id, (onnx_name.clone(), layout));
        Ok(value_info(&onnx_name, &onnx_shape(&shape, layout)))
    }

    /// Declares kiln graph output `id` (an `Identity` gives it its own name where it is
    /// also an input or an earlier output).
    fn graph_output(&mut self, id: TensorId) -> Result<proto::ValueInfoProto, ExportError> {
        check_io(self.g, id)?;
        let name = self.g.tensor(id).name.clone();
        let (mut v, layout) = self.activation(id).map_err(|message| ExportError::Tensor {
            name: name.clone(),
            message,
        })?;
        let is_input = self.g.inputs.contains(&id);
        let repeated = self.g.outputs.iter().filter(|&&o| o == id).count() > 1;
        if is_input || repeated {
            self.begin(&format!("{name}/output"));
            let copy = self.push("Identity", vec![v], vec![]);
            v = self.rename_last(copy, &format!("{name}/output"));
        }
        Ok(value_info(&v, &onnx_shape(&self.g.info(id).shape, layout)))
    }
}

/// Graph inputs and outputs must be float32 with a batch dimension.
fn check_io(g: &Graph, id: TensorId) -> Result<(), ExportError> {
    let t = g.tensor(id);
    let err = |message: String| ExportError::Tensor {
        name: t.name.clone(),
        message,
    };
    if t.info.dtype != DType::F32 {
        return Err(err(format!(
            "is {}; only float32 graphs can be exported (export before quantizing)",
            t.info.dtype.name()
        )));
    }
    if t.info.shape.is_empty() {
        return Err(err(
            "is a scalar; graph inputs and outputs need a batch dimension".into(),
        ));
    }
    Ok(())
}

/// The ONNX shape of a kiln tensor in `layout`, dimension 0 symbolic.
fn onnx_shape(kiln: &[usize], layout: Layout) -> Vec<usize> {
    match layout {
        Layout::Nchw => vec![kiln[0], kiln[3], kiln[1], kiln[2]],
        _ => kiln.to_vec(),
    }
}

/// A float32 tensor value declaration with dimension 0 named [`BATCH`].
fn value_info(name: &str, shape: &[usize]) -> proto::ValueInfoProto {
    let dim = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| Dimension {
            denotation: None,
            value: Some(if i == 0 {
                dimension::Value::DimParam(BATCH.into())
            } else {
                dimension::Value::DimValue(d as i64)
            }),
        })
        .collect();
    proto::ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(proto::TypeProto {
            denotation: None,
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(proto::tensor_proto::DataType::Float as i32),
                    shape: Some(proto::TensorShapeProto { dim }),
                },
            )),
        }),
        ..Default::default()
    }
}

/// `data` of `shape` transposed by `perm` (`out.shape[i] = shape[perm[i]]`).
fn permuted(data: &[f32], shape: &[usize], perm: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let rank = shape.len();
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut in_strides = vec![1; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * shape[i + 1];
    }
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; rank];
    for _ in 0..data.len() {
        let src: usize = (0..rank).map(|i| idx[i] * in_strides[perm[i]]).sum();
        out.push(data[src]);
        for i in (0..rank).rev() {
            idx[i] += 1;
            if idx[i] < out_shape[i] {
                break;
            }
            idx[i] = 0;
        }
    }
    (out, out_shape)
}

fn attr(name: &str, kind: proto::attribute_proto::AttributeType) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

/// An INT attribute.
fn int(name: &str, v: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        i: Some(v),
        ..attr(name, proto::attribute_proto::AttributeType::Int)
    }
}

/// An INTS attribute.
fn ints(name: &str, v: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        ints: v.to_vec(),
        ..attr(name, proto::attribute_proto::AttributeType::Ints)
    }
}

/// A FLOAT attribute.
fn float(name: &str, v: f32) -> proto::AttributeProto {
    proto::AttributeProto {
        f: Some(v),
        ..attr(name, proto::attribute_proto::AttributeType::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permuted_moves_axes() {
        // [2, 3] -> [3, 2]
        let (d, s) = permuted(&[0., 1., 2., 3., 4., 5.], &[2, 3], &[1, 0]);
        assert_eq!(s, vec![3, 2]);
        assert_eq!(d, vec![0., 3., 1., 4., 2., 5.]);
    }

    #[test]
    fn chw_feature_maps_to_hwc() {
        // h=1, w=2, c=3: CHW index i = c*2 + w; HWC index = w*3 + c.
        let got: Vec<usize> = (0..6).map(|i| Layout::hwc_of_chw(i, 1, 2, 3)).collect();
        assert_eq!(got, vec![0, 3, 1, 4, 2, 5]);
    }
}
