//! The graph IR every importer produces and every later stage consumes.
//!
//! A [`Graph`] owns its tensors (shape, dtype, optional quantization, optional constant
//! data) and its nodes in topological order. Node inputs and outputs refer to tensors by
//! [`TensorId`]. Operator attributes live in the [`Op`] enum; tensors that TFLite passes
//! as constant operands but that are really attributes (reshape targets, reduction axes,
//! paddings) are folded into the `Op` by the importer.

pub mod cost;
mod op;
pub mod shape;
pub(crate) mod validate;

pub use op::{
    Activation, Conv2dAttrs, DepthwiseConv2dAttrs, Op, Padding, Pool2dAttrs, ResidualAdd,
    TransposeConv2dAttrs,
};
pub use shape::infer_output_shape;
pub use validate::ValidateError;

/// Index of a tensor in [`Graph::tensors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub usize);

/// Index of a node in [`Graph::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// Element type of a tensor. Only types some kernel consumes are listed; importers report
/// anything else as unsupported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// Signed 8-bit integer, usually quantized.
    I8,
    /// Signed 32-bit integer (biases, shape operands).
    I32,
    /// Signed 64-bit integer (shape operands only).
    I64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
        }
    }

    /// Lower-case name as NumPy spells it, used in messages and file names.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::I8 => "int8",
            DType::I32 => "int32",
            DType::I64 => "int64",
        }
    }
}

/// Affine quantization: `real = scale * (q - zero_point)`, per tensor (one entry) or per
/// channel along `axis` (one entry per channel).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantParams {
    /// Scale per channel, or one scale for the whole tensor.
    pub scale: Vec<f32>,
    /// Zero point per channel, or one for the whole tensor; same length as `scale`.
    pub zero_point: Vec<i32>,
    /// The channel axis when `scale` has more than one entry.
    pub axis: usize,
}

impl QuantParams {
    /// Per-tensor parameters.
    pub fn per_tensor(scale: f32, zero_point: i32) -> Self {
        QuantParams {
            scale: vec![scale],
            zero_point: vec![zero_point],
            axis: 0,
        }
    }

    /// True when one scale and zero point cover the whole tensor.
    pub fn is_per_tensor(&self) -> bool {
        self.scale.len() == 1
    }
}

/// What a tensor is: shape, element type and quantization.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Dimensions, outermost first (NHWC for images).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Quantization, for quantized integer tensors.
    pub quant: Option<QuantParams>,
}

impl TensorInfo {
    /// Number of elements (1 for a scalar).
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size in bytes.
    pub fn byte_size(&self) -> usize {
        self.num_elements() * self.dtype.size()
    }

    /// The per-tensor (scale, zero point), if the tensor is quantized per tensor.
    pub fn scale_zero_point(&self) -> Option<(f32, i32)> {
        match &self.quant {
            Some(q) if q.is_per_tensor() => Some((q.scale[0], q.zero_point[0])),
            _ => None,
        }
    }
}

/// A tensor of the graph: an activation, or a constant with its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Name from the source model (unique names are not guaranteed by every format).
    pub name: String,
    /// Shape, dtype and quantization.
    pub info: TensorInfo,
    /// Little-endian element data for constants; `None` for activations.
    pub data: Option<Vec<u8>>,
}

/// One operator application.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Name used in messages and dump files (the source model's name or a generated one).
    pub name: String,
    /// The operator and its attributes.
    pub op: Op,
    /// Operands in the order documented on each [`Op`] variant.
    pub inputs: Vec<TensorId>,
    /// Results in the order documented on each [`Op`] variant.
    pub outputs: Vec<TensorId>,
}

/// A dataflow graph with nodes in topological order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    /// All tensors, indexed by [`TensorId`].
    pub tensors: Vec<Tensor>,
    /// Nodes in an order where every operand is produced before it is used.
    pub nodes: Vec<Node>,
    /// Tensors the caller fills before running.
    pub inputs: Vec<TensorId>,
    /// Tensors the caller reads after running.
    pub outputs: Vec<TensorId>,
}

impl Graph {
    /// The tensor with this id. Panics on an id from another graph; ids of a validated
    /// graph are always in range.
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.0]
    }

    /// Shape, dtype and quantization of a tensor.
    pub fn info(&self, id: TensorId) -> &TensorInfo {
        &self.tensors[id.0].info
    }

    /// Appends an f32 tensor, a constant holding `data` or (without it) an activation,
    /// and returns its id: how passes, graph builders and tests add float tensors.
    pub fn push_f32(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Option<&[f32]>,
    ) -> TensorId {
        self.tensors.push(Tensor {
            name: name.into(),
            info: TensorInfo {
                shape,
                dtype: DType::F32,
                quant: None,
            },
            data: data.map(|d| d.iter().flat_map(|v| v.to_le_bytes()).collect()),
        });
        TensorId(self.tensors.len() - 1)
    }

    /// Checks every structural and type rule later stages rely on; see [`ValidateError`].
    pub fn validate(&self) -> Result<(), ValidateError> {
        validate::validate(self)
    }
}
