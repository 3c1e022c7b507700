//! TFLite importer: a `.tflite` flatbuffer in, a validated [`Graph`] out.
//!
//! The flatbuffer is read through planus's checked accessors (generated from the official
//! schema into `generated.rs`), so every offset and length is bounds-checked; tensor sizes
//! are checked against limits before any data is copied. Operators kiln cannot run are
//! collected and reported together.

#[allow(clippy::all, missing_docs, unused_imports, dead_code)]
#[rustfmt::skip]
mod generated;
mod names;
mod ops;

use self::generated::tflite as fb;
use super::{ImportError, Unsupported};
use crate::ir::{
    validate::MAX_GRAPH_BYTES, DType, Graph, QuantParams, Tensor, TensorId, TensorInfo,
};
use planus::ReadAsRoot;
use std::path::Path;

/// The TFLite schema version kiln reads.
const SCHEMA_VERSION: u32 = 3;

/// Largest rank kiln accepts for a tensor: what the runtime's kernels index.
const MAX_RANK: usize = kiln_runtime::shape::MAX_DIMS;

/// Reads and imports a `.tflite` file.
pub fn load(path: &Path) -> Result<Graph, ImportError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        file: file.clone(),
        source,
    })?;
    parse(&bytes, &file)
}

/// Imports a TFLite model from its bytes; `file` names it in errors.
pub fn parse(bytes: &[u8], file: &str) -> Result<Graph, ImportError> {
    let malformed = |message: String| ImportError::Malformed {
        file: file.to_string(),
        message,
    };
    let mut reader = Reader::new(bytes);
    let (graph, unsupported) = reader.read_model().map_err(malformed)?;
    if let Some(message) = reader.dynamic {
        return Err(ImportError::DynamicShape {
            file: file.to_string(),
            message,
        });
    }
    if !unsupported.is_empty() {
        return Err(ImportError::Unsupported {
            file: file.to_string(),
            items: unsupported,
        });
    }
    graph.validate().map_err(|source| ImportError::Invalid {
        file: file.to_string(),
        source,
    })?;
    Ok(graph)
}

/// Lists every operator of the model kiln cannot run, without building anything else.
/// An empty list means the model imports (or fails for another reason, which
/// [`parse`] reports).
pub fn unsupported_operators(bytes: &[u8], file: &str) -> Result<Vec<Unsupported>, ImportError> {
    let mut reader = Reader::new(bytes);
    match reader.read_model() {
        Ok((_, unsupported)) => Ok(unsupported),
        Err(message) => Err(ImportError::Malformed {
            file: file.to_string(),
            message,
        }),
    }
}

/// Turns a planus error into a message naming the place it occurred.
fn ctx<T>(r: planus::Result<T>, place: &str) -> Result<T, String> {
    r.map_err(|e| format!("{place}: {e}"))
}

struct Reader<'a> {
    bytes: &'a [u8],
    /// Constant bytes copied so far, bounded by `MAX_GRAPH_BYTES`.
    const_bytes: usize,
    /// The first tensor with an unknown (negative) dimension, described.
    dynamic: Option<String>,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            const_bytes: 0,
            dynamic: None,
        }
    }

    fn read_model(&mut self) -> Result<(Graph, Vec<Unsupported>), String> {
        let model = ctx(fb::ModelRef::read_as_root(self.bytes), "model root")?;
        let version = ctx(model.version(), "model version")?;
        if version != SCHEMA_VERSION {
            return Err(format!(
                "schema version {version}, kiln reads version {SCHEMA_VERSION}"
            ));
        }
        let subgraphs =
            ctx(model.subgraphs(), "model subgraphs")?.ok_or("the model has no subgraphs")?;
        let subgraph = ctx(
            subgraphs.get(0).ok_or("the model has no subgraphs")?,
            "subgraph 0",
        )?;
        let buffers = ctx(model.buffers(), "model buffers")?;
        let buffers: Vec<fb::BufferRef<'a>> = match buffers {
            Some(v) => v
                .iter()
                .enumerate()
                .map(|(i, b)| ctx(b, &format!("buffer {i}")))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let codes = self.operator_codes(&model)?;

        let tensors_fb =
            ctx(subgraph.tensors(), "subgraph tensors")?.ok_or("subgraph has no tensors")?;
        let mut tensors = Vec::with_capacity(tensors_fb.len());
        for (i, t) in tensors_fb.iter().enumerate() {
            let t = ctx(t, &format!("tensor {i}"))?;
            tensors.push(self.tensor(i, &t, &buffers)?);
        }
        let tensor_count = tensors.len();
        let tensor_ids =
            |v: Option<planus::Vector<'a, i32>>, what: &str| -> Result<Vec<TensorId>, String> {
                v.map(|v| {
                    v.iter()
                        .map(|i| tensor_index(i, tensor_count, what))
                        .collect()
                })
                .unwrap_or(Ok(Vec::new()))
            };
        let inputs = tensor_ids(ctx(subgraph.inputs(), "subgraph inputs")?, "subgraph input")?;
        let outputs = tensor_ids(
            ctx(subgraph.outputs(), "subgraph outputs")?,
            "subgraph output",
        )?;

        let mut graph = Graph {
            tensors: Vec::new(),
            nodes: Vec::new(),
            inputs,
            outputs,
        };
        let mut unsupported = Vec::new();
        let operators = ctx(subgraph.operators(), "subgraph operators")?;
        let tensor_types: Vec<Result<DType, String>> =
            tensors.iter().map(|t| t.dtype.clone()).collect();
        graph.tensors = tensors.into_iter().map(|t| t.tensor).collect();
        for (index, op) in operators.into_iter().flat_map(|v| v.iter()).enumerate() {
            let op = ctx(op, &format!("operator {index}"))?;
            let code_index = ctx(op.opcode_index(), &format!("operator {index} opcode"))? as usize;
            let code = codes.get(code_index).ok_or_else(|| {
                format!(
                    "operator {index}: opcode index {code_index} out of range ({} codes)",
                    codes.len()
                )
            })?;
            let op_inputs = ctx(op.inputs(), &format!("operator {index} inputs"))?;
            let op_outputs = ctx(op.outputs(), &format!("operator {index} outputs"))?;
            // -1 marks an absent optional operand.
            let mut node_inputs = Vec::new();
            for i in op_inputs.into_iter().flat_map(|v| v.iter()) {
                node_inputs.push(if i < 0 {
                    None
                } else {
                    Some(tensor_index(i, graph.tensors.len(), "operator input")?)
                });
            }
            let node_outputs = tensor_ids(op_outputs, "operator output")?;
            let op_name = code.name();
            let bad_type = node_inputs
                .iter()
                .flatten()
                .chain(&node_outputs)
                .find_map(|id| tensor_types[id.0].as_ref().err().map(|e| (id, e)));
            if let Some((id, e)) = bad_type {
                unsupported.push(Unsupported {
                    node: index,
                    op: op_name.clone(),
                    reason: format!(
                        "tensor {} '{}' has type {e}",
                        id.0, graph.tensors[id.0].name
                    ),
                });
                continue;
            }
            let built = match code {
                OpCode::Builtin(b) => {
                    ops::convert(*b, &op, &graph, node_inputs, node_outputs, index)
                }
                OpCode::Custom(_) | OpCode::Unknown(_) => Err(ops::Problem::Unsupported(
                    "no kernel for this operator".into(),
                )),
            };
            match built {
                Ok(node) => {
                    if let Err(reason) = crate::ir::validate::check_node_types(&graph, &node) {
                        unsupported.push(Unsupported {
                            node: index,
                            op: op_name,
                            reason,
                        });
                    }
                    graph.nodes.push(node);
                }
                Err(ops::Problem::Unsupported(reason)) => unsupported.push(Unsupported {
                    node: index,
                    op: op_name,
                    reason,
                }),
                Err(ops::Problem::Malformed(m)) => {
                    return Err(format!("operator {index} ({op_name}): {m}"))
                }
            }
        }
        Ok((graph, unsupported))
    }

    fn operator_codes(&self, model: &fb::ModelRef<'a>) -> Result<Vec<OpCode>, String> {
        let mut codes = Vec::new();
        for (i, c) in ctx(model.operator_codes(), "operator codes")?
            .into_iter()
            .flat_map(|v| v.iter())
            .enumerate()
        {
            let c = ctx(c, &format!("operator code {i}"))?;
            let deprecated =
                i32::from(ctx(c.deprecated_builtin_code(), "deprecated_builtin_code")?);
            // The newer 32-bit field wins unless only the deprecated 8-bit one is set.
            let code = match c.builtin_code() {
                Ok(b) => deprecated.max(b as i32),
                Err(_) => {
                    codes.push(OpCode::Unknown(deprecated));
                    continue;
                }
            };
            let op = if code == fb::BuiltinOperator::Custom as i32 {
                OpCode::Custom(
                    ctx(c.custom_code(), "custom_code")?
                        .unwrap_or("")
                        .to_string(),
                )
            } else {
                match fb::BuiltinOperator::try_from(code) {
                    Ok(b) => OpCode::Builtin(b),
                    Err(_) => OpCode::Unknown(code),
                }
            };
            codes.push(op);
        }
        Ok(codes)
    }

    fn tensor(
        &mut self,
        index: usize,
        t: &fb::TensorRef<'a>,
        buffers: &[fb::BufferRef<'a>],
    ) -> Result<ImportedTensor, String> {
        let place = |what: &str| format!("tensor {index} {what}");
        let name = ctx(t.name(), &place("name"))?.unwrap_or("").to_string();
        let name = if name.is_empty() {
            format!("tensor_{index}")
        } else {
            name
        };
        let mut shape = Vec::new();
        if let Some(dims) = ctx(t.shape(), &place("shape"))? {
            if dims.len() > MAX_RANK {
                return Err(format!(
                    "tensor {index} '{name}': rank {} exceeds {MAX_RANK}",
                    dims.len()
                ));
            }
            let raw: Vec<i32> = dims.iter().collect();
            if raw.iter().any(|&d| d < 0) && self.dynamic.is_none() {
                self.dynamic = Some(format!(
                    "tensor {index} '{name}' has the dynamic shape {raw:?}: kiln plans memory \
                     ahead of time and needs static shapes (export the model with fixed dimensions)"
                ));
            }
            // Unknown dimensions stand in as 1 until the import reports them.
            shape = raw
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(1))
                .collect();
        }
        if ctx(t.sparsity(), &place("sparsity"))?.is_some() {
            return Ok(ImportedTensor::unsupported(
                name,
                shape,
                "a sparse encoding".into(),
            ));
        }
        let tensor_type = ctx(t.type_(), &place("type"));
        let dtype = match tensor_type {
            Ok(fb::TensorType::Float32) => DType::F32,
            Ok(fb::TensorType::Int8) => DType::I8,
            Ok(fb::TensorType::Int32) => DType::I32,
            Ok(fb::TensorType::Int64) => DType::I64,
            Ok(other) => {
                return Ok(ImportedTensor::unsupported(
                    name,
                    shape,
                    names::tensor_type(other),
                ))
            }
            Err(e) => {
                return Ok(ImportedTensor::unsupported(
                    name,
                    shape,
                    format!("an unknown type ({e})"),
                ))
            }
        };
        let quant = match ctx(t.quantization(), &place("quantization"))? {
            Some(q) if dtype == DType::I8 => read_quant(&q, index, &name)?,
            _ => None,
        };
        let info = TensorInfo {
            shape,
            dtype,
            quant,
        };
        let buffer_index = ctx(t.buffer(), &place("buffer"))? as usize;
        let data = match buffer_index {
            0 => None,
            i => {
                let b = buffers.get(i).ok_or_else(|| {
                    format!(
                        "tensor {index} '{name}': buffer {i} out of range ({} buffers)",
                        buffers.len()
                    )
                })?;
                self.buffer_data(b, i, &info, index, &name)?
            }
        };
        Ok(ImportedTensor {
            tensor: Tensor { name, info, data },
            dtype: Ok(dtype),
        })
    }

    /// The constant bytes of a tensor, checked against its declared size before copying.
    fn buffer_data(
        &mut self,
        b: &fb::BufferRef<'a>,
        buffer: usize,
        info: &TensorInfo,
        index: usize,
        name: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        let place = format!("tensor {index} '{name}' buffer {buffer}");
        let inline = ctx(b.data(), &place)?;
        let offset = ctx(b.offset(), &place)?;
        let size = ctx(b.size(), &place)?;
        let raw: &[u8] = match inline {
            Some(d) if !d.is_empty() => d,
            // Models over 2 GiB keep buffers after the flatbuffer; offset 1 means "none".
            _ if offset > 1 => {
                let start =
                    usize::try_from(offset).map_err(|_| format!("{place}: offset {offset}"))?;
                let len = usize::try_from(size).map_err(|_| format!("{place}: size {size}"))?;
                start
                    .checked_add(len)
                    .and_then(|end| self.bytes.get(start..end))
                    .ok_or_else(|| {
                        format!(
                            "{place}: bytes {offset}+{size} lie outside the {}-byte file",
                            self.bytes.len()
                        )
                    })?
            }
            _ => return Ok(None),
        };
        let expected = info
            .shape
            .iter()
            .try_fold(info.dtype.size(), |a, &d| a.checked_mul(d));
        if expected != Some(raw.len()) {
            return Err(format!(
                "{place}: holds {} bytes, shape {:?} of {} needs {}",
                raw.len(),
                info.shape,
                info.dtype.name(),
                expected.map_or("more than usize".to_string(), |e| e.to_string())
            ));
        }
        self.const_bytes += raw.len();
        if self.const_bytes > MAX_GRAPH_BYTES {
            return Err(format!(
                "{place}: constants exceed {MAX_GRAPH_BYTES} bytes in all"
            ));
        }
        Ok(Some(raw.to_vec()))
    }
}

fn read_quant(
    q: &fb::QuantizationParametersRef<'_>,
    index: usize,
    name: &str,
) -> Result<Option<QuantParams>, String> {
    let place = format!("tensor {index} '{name}' quantization");
    let scale: Vec<f32> = ctx(q.scale(), &place)?
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    if scale.is_empty() {
        return Ok(None);
    }
    let zero_point = match ctx(q.zero_point(), &place)? {
        Some(v) => v
            .iter()
            .map(|z| i32::try_from(z).map_err(|_| format!("{place}: zero point {z}")))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![0; scale.len()],
    };
    let axis = ctx(q.quantized_dimension(), &place)?;
    let axis = usize::try_from(axis).map_err(|_| format!("{place}: quantized dimension {axis}"))?;
    Ok(Some(QuantParams {
        scale,
        zero_point,
        axis,
    }))
}

fn tensor_index(i: i32, count: usize, what: &str) -> Result<TensorId, String> {
    usize::try_from(i)
        .ok()
        .filter(|&i| i < count)
        .map(TensorId)
        .ok_or_else(|| format!("{what} refers to tensor {i}, the subgraph has {count}"))
}

/// An operator code as the model declares it.
enum OpCode {
    Builtin(fb::BuiltinOperator),
    Custom(String),
    Unknown(i32),
}

impl OpCode {
    fn name(&self) -> String {
        match self {
            OpCode::Builtin(b) => names::builtin_operator(*b as i32),
            OpCode::Custom(c) => format!("CUSTOM '{c}'"),
            OpCode::Unknown(c) => names::builtin_operator(*c),
        }
    }
}

/// A tensor as read, plus why its type is unusable (reported only if an operator uses it).
struct ImportedTensor {
    tensor: Tensor,
    dtype: Result<DType, String>,
}

impl ImportedTensor {
    fn unsupported(name: String, shape: Vec<usize>, why: String) -> Self {
        // The placeholder info is never used: every operator touching it is reported.
        let info = TensorInfo {
            shape,
            dtype: DType::I8,
            quant: None,
        };
        ImportedTensor {
            tensor: Tensor {
                name,
                info,
                data: None,
            },
            dtype: Err(why),
        }
    }
}
