//! ONNX importer: `.onnx` bytes (opsets 11 to 21) in, a validated [`Graph`] out.
//!
//! ONNX models are NCHW; kiln's kernels are NHWC. Every 4-D activation is tracked with
//! the layout it is stored in: convolutions and pools produce NHWC tensors, element-wise
//! ops keep their operand's layout, and an op that depends on the NCHW element order
//! (Flatten, Reshape, Transpose, ...) gets an explicit `Transpose` in front of it. The
//! graph's inputs and outputs keep the layout the model declares. Transposes that cancel,
//! that only move size-1 axes, or that feed a flatten into a dense layer are removed
//! afterwards by [`crate::passes`].
//!
//! Constant sub-graphs (PyTorch's `Shape → Gather → Concat` reshapes, weight transposes,
//! `Constant` nodes) are evaluated here; BatchNormalization becomes a per-channel `Mul` +
//! `Add` that the passes fold into the convolution before it. Quantized models
//! (QuantizeLinear/DequantizeLinear pairs, QLinearConv, QLinearMatMul) import into the
//! same int8 ops the TFLite path produces.
//!
//! The file is untrusted: protobuf decoding is checked by prost, every attribute and
//! shape is checked before use, and all unsupported nodes are reported together, each
//! with its operator, node name and index.

mod consts;
mod convert;
#[allow(clippy::all, missing_docs)]
pub(crate) mod proto;
mod quant;
mod tensor;

use super::{ImportError, Unsupported};
use crate::ir::{
    infer_output_shape, DType, Graph, Node, Op, QuantParams, Tensor, TensorId, TensorInfo,
};
use consts::{Const, ConstData};
use prost::Message;
use proto::{ModelProto, NodeProto};
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

/// Oldest and newest default-domain opset kiln accepts.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// Why one node could not be converted.
#[derive(Debug)]
pub(crate) enum Problem {
    /// Well formed, but kiln has no mapping for it.
    Unsupported(String),
    /// Contradicts the ONNX specification.
    Malformed(String),
}

type Result<T> = std::result::Result<T, Problem>;

/// Reads and imports the ONNX model at `path`; external data files are looked up next to
/// it.
pub fn load(path: &Path) -> std::result::Result<Graph, ImportError> {
    load_with_dims(path, &[])
}

/// [`load`] with symbolic input dimensions fixed, as [`parse_with_dims`].
pub fn load_with_dims(
    path: &Path,
    dims: &[(&str, usize)],
) -> std::result::Result<Graph, ImportError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        file: file.clone(),
        source,
    })?;
    parse_with_dims(&bytes, &file, path.parent(), dims)
}

/// Imports ONNX model bytes; `file` names the model in errors, `base_dir` is where its
/// external data files live (`None`: the model must not use any).
pub fn parse(
    bytes: &[u8],
    file: &str,
    base_dir: Option<&Path>,
) -> std::result::Result<Graph, ImportError> {
    parse_with_dims(bytes, file, base_dir, &[])
}

/// Refuses a size given for a symbol no graph input has (a typo would otherwise be
/// ignored silently), naming the symbols the inputs do have.
fn check_dim_names(
    graph: &proto::GraphProto,
    dims: &[(&str, usize)],
) -> std::result::Result<(), String> {
    use proto::tensor_shape_proto::dimension::Value as D;
    use proto::type_proto::Value as T;
    let mut symbols: Vec<&str> = Vec::new();
    for input in &graph.input {
        let Some(T::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            continue;
        };
        for d in t.shape.iter().flat_map(|s| &s.dim) {
            if let Some(D::DimParam(p)) = &d.value {
                if !symbols.contains(&p.as_str()) {
                    symbols.push(p);
                }
            }
        }
    }
    match dims.iter().find(|(name, _)| !symbols.contains(name)) {
        None => Ok(()),
        Some((name, size)) => Err(if symbols.is_empty() {
            format!("--dim {name}={size}: the model's inputs have no symbolic dimensions")
        } else {
            format!(
                "--dim {name}={size}: no graph input has a dimension named '{name}' (the inputs' symbols: {})",
                symbols.join(", ")
            )
        }),
    }
}

/// [`parse`], with symbolic input dimensions fixed: `dims` gives the size of each named
/// dimension (e.g. `[("N", 1)]` for the batch of a model from
/// [`crate::export::onnx`]). Symbols not listed are refused as in [`parse`], and so is
/// a name no graph input has.
pub fn parse_with_dims(
    bytes: &[u8],
    file: &str,
    base_dir: Option<&Path>,
    dims: &[(&str, usize)],
) -> std::result::Result<Graph, ImportError> {
    let malformed = |message: String| ImportError::Malformed {
        file: file.to_string(),
        message,
    };
    let model =
        ModelProto::decode(bytes).map_err(|e| malformed(format!("not an ONNX model: {e}")))?;
    let opset = default_opset(&model).map_err(malformed)?;
    if !OPSETS.contains(&opset) {
        return Err(ImportError::Version {
            file: file.to_string(),
            message: format!(
                "opset {opset} of the default ONNX domain; kiln imports opsets {} to {} (convert the model with onnx.version_converter)",
                OPSETS.start(),
                OPSETS.end()
            ),
        });
    }
    let graph_proto = model
        .graph
        .as_ref()
        .ok_or_else(|| malformed("the model has no graph".into()))?;
    check_dim_names(graph_proto, dims).map_err(|message| ImportError::DynamicShape {
        file: file.to_string(),
        message,
    })?;
    let mut imp = Importer {
        file: file.to_string(),
        base_dir,
        dims,
        opset,
        graph: Graph::default(),
        values: HashMap::new(),
        layout_cache: HashMap::new(),
        consumers: HashMap::new(),
        node_name: String::new(),
        qctx: None,
        quantize_after: HashMap::new(),
    };
    imp.import(graph_proto)?;
    imp.graph
        .validate()
        .map_err(|source| ImportError::Invalid {
            file: file.to_string(),
            source,
        })?;
    Ok(imp.graph)
}

fn default_opset(model: &ModelProto) -> std::result::Result<i64, String> {
    model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
        .ok_or_else(|| "the model imports no opset of the default ONNX domain".to_string())
}

/// How a 4-D activation's elements are ordered in its kiln tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Layout {
    /// As ONNX sees it (any rank).
    Plain,
    /// A logical NCHW tensor stored as NHWC.
    Nhwc,
}

/// Integer quantization of a value: scales and zero points (int8 domain), per tensor or
/// along `axis` of the ONNX (logical) shape.
#[derive(Debug, Clone, PartialEq)]
struct QDomain {
    scale: Vec<f32>,
    zero_point: Vec<i32>,
    axis: usize,
}

/// What an ONNX value name stands for during import.
#[derive(Debug, Clone)]
enum Value {
    /// Known at import time.
    Const(Rc<Const>),
    /// A kiln tensor computed at run time.
    Tensor { id: TensorId, layout: Layout },
    /// The output of a DequantizeLinear, kept symbolic so that quantized ops can consume
    /// the int8 value directly: `q` is an int8 tensor or an int8 constant.
    Dequantized { q: Box<Value>, quant: QDomain },
    /// Produced by a node that could not be imported (already reported).
    Poisoned,
}

struct Importer<'a> {
    file: String,
    base_dir: Option<&'a Path>,
    /// Sizes of symbolic input dimensions, by name.
    dims: &'a [(&'a str, usize)],
    opset: i64,
    graph: Graph,
    values: HashMap<String, Value>,
    /// `(tensor, target layout) -> converted tensor`, so several consumers share one
    /// transpose.
    layout_cache: HashMap<(TensorId, Layout), TensorId>,
    /// How many nodes (and graph outputs) read each value name.
    consumers: HashMap<String, usize>,
    /// Name of the node being converted, for the nodes and tensors it creates.
    node_name: String,
    /// Set while a node is emitted as an int8 op (see [`quant`]).
    qctx: Option<quant::QCtx>,
    /// Values read only by a QuantizeLinear with constant parameters, with those
    /// parameters: the ops producing them may be emitted as int8.
    quantize_after: HashMap<String, QDomain>,
}

impl Importer<'_> {
    fn import(&mut self, g: &proto::GraphProto) -> std::result::Result<(), ImportError> {
        let file = self.file.clone();
        let malformed = |message: String| ImportError::Malformed {
            file: file.clone(),
            message,
        };
        let mut unsupported = Vec::new();
        for init in &g.initializer {
            match tensor::decode(init, self.base_dir) {
                Ok(c) => {
                    self.values
                        .insert(init.name().to_string(), Value::Const(Rc::new(c)));
                }
                Err(Problem::Malformed(m)) => return Err(malformed(format!("initializer: {m}"))),
                Err(Problem::Unsupported(m)) => unsupported.push(Unsupported {
                    node: 0,
                    op: "initializer".into(),
                    reason: m,
                }),
            }
        }
        for input in &g.input {
            if self.values.contains_key(input.name()) {
                continue; // an initializer listed as input (IR version < 4)
            }
            let info = self.input_info(input).map_err(|p| match p {
                Problem::Malformed(m) => malformed(m),
                Problem::Unsupported(m) => ImportError::DynamicShape {
                    file: self.file.clone(),
                    message: m,
                },
            })?;
            let id = self.push_tensor(input.name().to_string(), info, None);
            self.graph.inputs.push(id);
            self.values.insert(
                input.name().to_string(),
                Value::Tensor {
                    id,
                    layout: Layout::Plain,
                },
            );
        }
        for node in &g.node {
            for name in node.input.iter().filter(|n| !n.is_empty()) {
                *self.consumers.entry(name.clone()).or_default() += 1;
            }
        }
        for out in &g.output {
            *self.consumers.entry(out.name().to_string()).or_default() += 1;
        }
        for node in g.node.iter().filter(|n| n.op_type() == "QuantizeLinear") {
            let Some(x) = node.input.first() else {
                continue;
            };
            if self.consumer_count(x) != 1 {
                continue;
            }
            if let Some(q) = quant::constant_domain(self, node) {
                self.quantize_after.insert(x.clone(), q);
            }
        }
        for (index, node) in g.node.iter().enumerate() {
            self.node_name = if node.name().is_empty() {
                format!("{}_{index}", node.op_type())
            } else {
                node.name().to_string()
            };
            let inputs = node
                .input
                .iter()
                .map(|n| {
                    if n.is_empty() {
                        Ok(None)
                    } else {
                        self.values.get(n).cloned().map(Some).ok_or_else(|| {
                            malformed(format!(
                                "node {index} {} '{}': input '{n}' is not a graph input, an initializer or the output of an earlier node (the graph has a cycle, is not topologically sorted, or names a missing value)",
                                node.op_type(),
                                self.node_name
                            ))
                        })
                    }
                })
                .collect::<std::result::Result<Vec<Option<Value>>, _>>()?;
            let outputs = if inputs
                .iter()
                .flatten()
                .any(|v| matches!(v, Value::Poisoned))
            {
                Ok(vec![Value::Poisoned; node.output.len()])
            } else if !matches!(node.domain(), "" | "ai.onnx") {
                Err(Problem::Unsupported(format!(
                    "operator of domain '{}' (only the default ONNX domain is supported)",
                    node.domain()
                )))
            } else {
                self.convert(node, &inputs)
            };
            let outputs = match outputs {
                Ok(v) => v,
                Err(Problem::Unsupported(reason)) => {
                    unsupported.push(Unsupported {
                        node: index,
                        op: format!("{} '{}'", node.op_type(), self.node_name),
                        reason,
                    });
                    vec![Value::Poisoned; node.output.len()]
                }
                Err(Problem::Malformed(m)) => {
                    return Err(malformed(format!(
                        "node {index} {} '{}': {m}",
                        node.op_type(),
                        self.node_name
                    )))
                }
            };
            for (name, value) in node.output.iter().zip(outputs) {
                if !name.is_empty() {
                    self.values.insert(name.clone(), value);
                }
            }
        }
        if !unsupported.is_empty() {
            return Err(ImportError::Unsupported {
                file: self.file.clone(),
                items: unsupported,
            });
        }
        self.node_name = "output".into();
        for out in &g.output {
            let value = self.values.get(out.name()).cloned().ok_or_else(|| {
                malformed(format!("graph output '{}' is never produced", out.name()))
            })?;
            let id = match value {
                Value::Tensor { .. } | Value::Dequantized { .. } => self
                    .tensor(&value, Layout::Plain)
                    .map_err(|p| malformed(format!("graph output '{}': {p:?}", out.name())))?,
                _ => {
                    return Err(ImportError::Unsupported {
                        file: self.file.clone(),
                        items: vec![Unsupported {
                            node: g.node.len(),
                            op: "output".into(),
                            reason: format!(
                                "graph output '{}' is a constant; kiln compiles computations only",
                                out.name()
                            ),
                        }],
                    })
                }
            };
            if self.graph.inputs.contains(&id) || self.graph.outputs.contains(&id) {
                // An output that is an input (or another output) gets its own tensor.
                let info = self.graph.info(id).clone();
                let copy = self.push_tensor(out.name().to_string(), info, None);
                self.graph.nodes.push(Node {
                    name: format!("{}_copy", out.name()),
                    op: Op::Reshape,
                    inputs: vec![id],
                    outputs: vec![copy],
                });
                self.graph.outputs.push(copy);
            } else {
                self.graph.tensors[id.0].name = out.name().to_string();
                self.graph.outputs.push(id);
            }
        }
        Ok(())
    }

    /// Shape and type of a graph input; symbolic or missing dimensions are refused.
    fn input_info(&self, input: &proto::ValueInfoProto) -> Result<TensorInfo> {
        use proto::tensor_shape_proto::dimension::Value as D;
        use proto::type_proto::Value as T;
        let name = input.name();
        let Some(T::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err(Problem::Malformed(format!(
                "graph input '{name}' is not a tensor"
            )));
        };
        let dtype = match t.elem_type() {
            1 => DType::F32,
            3 => DType::I8,
            e => {
                return Err(Problem::Malformed(format!(
                "graph input '{name}' has element type {}; kiln models take float32 or int8 inputs",
                tensor::type_name(e)
            )))
            }
        };
        let dims = t
            .shape
            .as_ref()
            .ok_or_else(|| Problem::Unsupported(format!("graph input '{name}' has no shape")))?;
        let mut shape = Vec::new();
        for (axis, d) in dims.dim.iter().enumerate() {
            match &d.value {
                Some(D::DimValue(v)) if *v > 0 => shape.push(*v as usize),
                Some(D::DimParam(p)) if self.dims.iter().any(|(n, v)| n == p && *v > 0) => {
                    shape.extend(self.dims.iter().filter(|(n, _)| n == p).map(|(_, v)| *v).take(1))
                }
                Some(D::DimParam(p)) => {
                    return Err(Problem::Unsupported(format!(
                        "graph input '{name}': dimension {axis} is the symbol '{p}'; kiln needs static shapes (give its size, e.g. `kiln ... --dim {p}=1`, fix it with onnxruntime.tools.make_dynamic_shape_fixed, or re-export with a fixed batch size)"
                    )))
                }
                _ => {
                    return Err(Problem::Unsupported(format!(
                        "graph input '{name}': dimension {axis} is unknown; kiln needs static shapes"
                    )))
                }
            }
        }
        Ok(TensorInfo {
            shape,
            dtype,
            quant: None,
        })
    }

    fn push_tensor(&mut self, name: String, info: TensorInfo, data: Option<Vec<u8>>) -> TensorId {
        self.graph.tensors.push(Tensor { name, info, data });
        TensorId(self.graph.tensors.len() - 1)
    }

    /// Appends `op` on `inputs` with one output whose shape the IR's shape rule infers
    /// (`declared` for ops whose output shape is an attribute, e.g. reshape).
    fn emit(
        &mut self,
        op: Op,
        inputs: Vec<TensorId>,
        dtype: DType,
        quant: Option<QuantParams>,
        declared: &[usize],
    ) -> Result<TensorId> {
        let infos: Vec<&TensorInfo> = inputs.iter().map(|&i| self.graph.info(i)).collect();
        let shape = infer_output_shape(&op, &infos, declared)
            .map_err(|m| Problem::Malformed(format!("{}: {m}", op.name())))?;
        let n = self.graph.nodes.len();
        let name = if self.graph.nodes.iter().any(|x| x.name == self.node_name) {
            format!("{}_{n}", self.node_name)
        } else {
            self.node_name.clone()
        };
        let out = self.push_tensor(
            format!("{name}:{}", op.name()),
            TensorInfo {
                shape,
                dtype,
                quant,
            },
            None,
        );
        self.graph.nodes.push(Node {
            name,
            op,
            inputs,
            outputs: vec![out],
        });
        Ok(out)
    }

    /// Adds a constant tensor (stored layout as given).
    fn constant(&mut self, c: &Const, quant: Option<QuantParams>) -> Result<TensorId> {
        let (dtype, bytes): (DType, Vec<u8>) = match &c.data {
            ConstData::F32(v) => (DType::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ConstData::I32(v) => (DType::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ConstData::I8(v) => (DType::I8, v.iter().map(|&x| x as u8).collect()),
            other => {
                return Err(Problem::Unsupported(format!(
                    "a {} constant used as a run-time operand",
                    Const::new(vec![other.len()], other.clone())
                        .map(|c| c.type_name())
                        .unwrap_or("?")
                )))
            }
        };
        let name = format!("{}:const{}", self.node_name, self.graph.tensors.len());
        Ok(self.push_tensor(
            name,
            TensorInfo {
                shape: c.shape.clone(),
                dtype,
                quant,
            },
            Some(bytes),
        ))
    }

    /// The logical (ONNX) shape of a value.
    fn shape_of(&self, v: &Value) -> Vec<usize> {
        match v {
            Value::Const(c) => c.shape.clone(),
            Value::Tensor { id, layout } => {
                let s = &self.graph.info(*id).shape;
                match layout {
                    Layout::Plain => s.clone(),
                    Layout::Nhwc => vec![s[0], s[3], s[1], s[2]],
                }
            }
            Value::Dequantized { q, .. } => self.shape_of(q),
            Value::Poisoned => vec![],
        }
    }

    /// The value as a kiln tensor in `layout` (a rank-4 value for `Nhwc`): constants are
    /// added (permuted as needed), dequantized values get a Dequantize node, tensors in
    /// the other layout a Transpose.
    fn tensor(&mut self, v: &Value, layout: Layout) -> Result<TensorId> {
        match v {
            Value::Const(c) => {
                let c = match layout {
                    Layout::Plain => (**c).clone(),
                    Layout::Nhwc => to_nhwc_const(c)?,
                };
                self.constant(&c, None)
            }
            Value::Tensor { id, layout: have } => self.relayout(*id, *have, layout),
            Value::Dequantized { .. } => {
                let f = quant::dequantize(self, v)?;
                self.tensor(&f, layout)
            }
            Value::Poisoned => Err(Problem::Malformed("use of a poisoned value".into())),
        }
    }

    fn relayout(&mut self, id: TensorId, have: Layout, want: Layout) -> Result<TensorId> {
        if have == want {
            return Ok(id);
        }
        if let Some(&t) = self.layout_cache.get(&(id, want)) {
            return Ok(t);
        }
        let info = self.graph.info(id);
        if info.shape.len() != 4 {
            return Err(Problem::Unsupported(format!(
                "a rank-{} tensor where a rank-4 (NCHW) one is needed",
                info.shape.len()
            )));
        }
        let (dtype, quant) = (info.dtype, info.quant.clone());
        let perm = match want {
            Layout::Nhwc => vec![0, 2, 3, 1],
            Layout::Plain => vec![0, 3, 1, 2],
        };
        let t = self.emit(Op::Transpose { perm }, vec![id], dtype, quant, &[])?;
        self.layout_cache.insert((id, want), t);
        self.layout_cache.insert((t, have), id);
        Ok(t)
    }

    /// A value that must be known at import time (weights, shapes, axes).
    fn constant_value(&mut self, v: Option<&Value>, what: &str) -> Result<Rc<Const>> {
        match v {
            Some(Value::Const(c)) => Ok(c.clone()),
            Some(v @ Value::Dequantized { q, .. }) if matches!(**q, Value::Const(_)) => {
                match quant::dequantize(self, v)? {
                    Value::Const(c) => Ok(c),
                    _ => unreachable_problem(),
                }
            }
            Some(_) => Err(Problem::Unsupported(format!(
                "{what} is computed at run time; kiln needs it to be a constant"
            ))),
            None => Err(Problem::Malformed(format!("{what} is missing"))),
        }
    }

    /// Number of nodes reading the value `name`.
    fn consumer_count(&self, name: &str) -> usize {
        self.consumers.get(name).copied().unwrap_or(0)
    }
}

fn unreachable_problem<T>() -> Result<T> {
    Err(Problem::Malformed("internal: unexpected value kind".into()))
}

/// A logical NCHW constant (or one that broadcasts against NCHW, rank <= 4) rearranged
/// to broadcast against the NHWC tensor.
fn to_nhwc_const(c: &Const) -> Result<Const> {
    if c.shape.len() > 4 {
        return Err(Problem::Malformed(format!(
            "a rank-{} constant combined with a rank-4 tensor",
            c.shape.len()
        )));
    }
    let mut shape = vec![1; 4 - c.shape.len()];
    shape.extend_from_slice(&c.shape);
    c.reshaped(shape)?.transposed(&[0, 2, 3, 1])
}

/// Axis `a` of a logical NCHW tensor as stored in NHWC.
fn nhwc_axis(a: usize) -> usize {
    [0, 3, 1, 2][a]
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unsupported(m) | Problem::Malformed(m) => f.write_str(m),
        }
    }
}

/// Helper for the converters: the node's attribute list, read with defaults.
struct Attrs<'a>(&'a [proto::AttributeProto]);

impl<'a> Attrs<'a> {
    fn of(node: &'a NodeProto) -> Self {
        Attrs(&node.attribute)
    }

    fn get(&self, name: &str) -> Option<&'a proto::AttributeProto> {
        self.0.iter().find(|a| a.name() == name)
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map(|a| a.i()).unwrap_or(default)
    }

    fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map(|a| a.f()).unwrap_or(default)
    }

    fn ints(&self, name: &str) -> Option<&'a [i64]> {
        self.get(name).map(|a| a.ints.as_slice())
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(a.s()).into_owned())
    }

    fn tensor(&self, name: &str) -> Option<&'a proto::TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }
}
