//! The declarative model file (TOML) and the kiln IR graph it builds.
//!
//! See the crate documentation for the format. [`ModelSpec::parse`] reports syntax and
//! field errors with the file's line and column (from the toml crate) and semantic
//! errors (a window that does not fit, a dense layer on nothing) with the layer's
//! number and line.

use crate::layers::{BatchNorm, Dropout, TrainingLayers};
use crate::rng::Rng;
use crate::TrainError;
use kiln_codegen::ir::{
    infer_output_shape, shape::window_output_size, Activation, Conv2dAttrs, DepthwiseConv2dAttrs,
    Graph, Node, Op, Padding, Pool2dAttrs, TensorId, TensorInfo,
};
use serde::Deserialize;
use std::path::Path;
use toml::Spanned;

/// A size given as one number (square) or `[height, width]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Size2 {
    /// The same along both axes.
    One(usize),
    /// `[height, width]`.
    Two([usize; 2]),
}

impl Size2 {
    fn get(self) -> [usize; 2] {
        match self {
            Size2::One(v) => [v, v],
            Size2::Two(v) => v,
        }
    }
}

/// Padding: `"valid"`, `"same"`, one number for every side, or `[top, bottom, left, right]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PadSpec {
    /// `"valid"` or `"same"`.
    Name(String),
    /// The same explicit padding on every side.
    All(usize),
    /// `[top, bottom, left, right]`.
    Sides([usize; 4]),
}

impl Default for PadSpec {
    fn default() -> Self {
        PadSpec::Name("valid".into())
    }
}

impl PadSpec {
    fn get(&self) -> Result<Padding, String> {
        Ok(match self {
            PadSpec::Name(n) if n == "valid" => Padding::Valid,
            PadSpec::Name(n) if n == "same" => Padding::Same,
            PadSpec::Name(n) => {
                return Err(format!(
                    "padding \"{n}\": expected \"valid\", \"same\", a number or [top, bottom, left, right]"
                ))
            }
            PadSpec::All(p) => Padding::Explicit {
                top: *p,
                bottom: *p,
                left: *p,
                right: *p,
            },
            PadSpec::Sides([top, bottom, left, right]) => Padding::Explicit {
                top: *top,
                bottom: *bottom,
                left: *left,
                right: *right,
            },
        })
    }
}

fn one() -> Size2 {
    Size2::One(1)
}

fn yes() -> bool {
    true
}

fn leaky_default() -> f32 {
    0.01
}

/// One layer of the model file (`[[layer]]` with a `type`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// CONV_2D with `filters` output channels.
    Conv {
        /// Output channels.
        filters: usize,
        /// Window size.
        kernel: Size2,
        /// Stride (1).
        #[serde(default = "one")]
        stride: Size2,
        /// Padding ("valid").
        #[serde(default)]
        padding: PadSpec,
        /// With a bias (true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// DEPTHWISE_CONV_2D.
    Depthwise {
        /// Window size.
        kernel: Size2,
        /// Output channels per input channel (1).
        #[serde(default = "usize_one")]
        multiplier: usize,
        /// Stride (1).
        #[serde(default = "one")]
        stride: Size2,
        /// Padding ("valid").
        #[serde(default)]
        padding: PadSpec,
        /// With a bias (true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// FULLY_CONNECTED with `units` outputs (flattens its input).
    Dense {
        /// Outputs.
        units: usize,
        /// With a bias (true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// MAX_POOL_2D.
    MaxPool {
        /// Window.
        size: Size2,
        /// Stride (the window size).
        stride: Option<Size2>,
        /// Padding ("valid").
        #[serde(default)]
        padding: PadSpec,
    },
    /// AVERAGE_POOL_2D.
    AvgPool {
        /// Window.
        size: Size2,
        /// Stride (the window size).
        stride: Option<Size2>,
        /// Padding ("valid").
        #[serde(default)]
        padding: PadSpec,
    },
    /// MEAN over height and width: `[N, H, W, C] -> [N, C]`.
    GlobalAvgPool,
    /// RELU.
    Relu,
    /// RELU6.
    Relu6,
    /// LEAKY_RELU.
    LeakyRelu {
        /// Negative slope (0.01).
        #[serde(default = "leaky_default")]
        alpha: f32,
    },
    /// LOGISTIC.
    Sigmoid,
    /// TANH.
    Tanh,
    /// RESHAPE to `[N, everything]`.
    Flatten,
    /// Batch normalization per channel (the last axis). Trained with batch statistics;
    /// in the kiln graph a MUL and an ADD by per-channel constants from the running
    /// statistics (see [`crate::layers`]).
    BatchNorm {
        /// Weight of the new batch statistic in the running ones (0.1, as PyTorch).
        #[serde(default = "momentum_default")]
        momentum: f32,
        /// Added to the variance before the square root (1e-5).
        #[serde(default = "eps_default")]
        eps: f32,
    },
    /// Inverted dropout during training only; absent from the kiln graph.
    Dropout {
        /// Fraction of values zeroed, in `[0, 1)`.
        rate: f32,
    },
}

fn momentum_default() -> f32 {
    0.1
}

fn eps_default() -> f32 {
    1e-5
}

fn usize_one() -> usize {
    1
}

/// A parsed model file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model name (used for tensor names and messages).
    #[serde(default = "default_name")]
    pub name: String,
    /// Shape of one sample: `[height, width, channels]` or `[features]`.
    pub input: Vec<usize>,
    /// The layers in order.
    #[serde(rename = "layer")]
    pub layers: Vec<Spanned<LayerSpec>>,
    /// Source text, for line numbers of semantic errors.
    #[serde(skip)]
    source: String,
    /// File name, for messages.
    #[serde(skip)]
    file: String,
}

fn default_name() -> String {
    "model".into()
}

impl ModelSpec {
    /// Reads and parses a model file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Model {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses model-file text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, TrainError> {
        let mut spec: ModelSpec = toml::from_str(text).map_err(|e| TrainError::Model {
            file: file.to_string(),
            message: one_line(&e.to_string()),
        })?;
        spec.source = text.to_string();
        spec.file = file.to_string();
        if spec.input.is_empty() || spec.input.contains(&0) || spec.input.len() > 3 {
            return Err(TrainError::Model {
                file: file.to_string(),
                message: format!(
                    "field `input`: {:?} must be [height, width, channels] or [features], all non-zero",
                    spec.input
                ),
            });
        }
        if spec.layers.is_empty() {
            return Err(TrainError::Model {
                file: file.to_string(),
                message: "no [[layer]] tables".into(),
            });
        }
        Ok(spec)
    }

    /// The model file's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn layer_error(&self, i: usize, message: String) -> TrainError {
        let span = self.layers[i].span();
        let line = 1 + self.source.as_bytes()[..span.start.min(self.source.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        TrainError::Model {
            file: self.file.clone(),
            message: format!(
                "line {line}, layer {} ({}): {message}",
                i + 1,
                layer_name(self.layers[i].get_ref())
            ),
        }
    }

    /// Builds the float kiln IR graph (batch 1) with weights drawn from `seed`
    /// (He-uniform, zero biases). Errors name the layer and its line.
    pub fn build(&self, seed: u64) -> Result<Graph, TrainError> {
        Ok(self.build_training(seed)?.0)
    }

    /// The model's batch-norm and dropout layers, for [`crate::train::TrainConfig::layers`]
    /// (empty for a model without them).
    pub fn training_layers(&self) -> Result<TrainingLayers, TrainError> {
        Ok(self.build_training(0)?.1)
    }

    /// [`build`](Self::build) and [`training_layers`](Self::training_layers) at once.
    pub fn build_training(&self, seed: u64) -> Result<(Graph, TrainingLayers), TrainError> {
        let mut layers = TrainingLayers::default();
        let mut rng = Rng::new(seed);
        let mut b = GraphBuilder::default();
        let mut shape = vec![1];
        shape.extend(&self.input);
        let mut x = b.tensor("input", shape, None);
        b.g.inputs.push(x);
        for (i, layer) in self.layers.iter().enumerate() {
            let n = i + 1;
            let err = |m: String| self.layer_error(i, m);
            let cur = b.g.info(x).shape.clone();
            let need4 = |what: &str| {
                if cur.len() == 4 {
                    Ok(())
                } else {
                    Err(err(format!(
                        "{what} needs an image input [height, width, channels], got {:?}",
                        &cur[1..]
                    )))
                }
            };
            let (op, inputs) = match layer.get_ref() {
                LayerSpec::Conv {
                    filters,
                    kernel,
                    stride,
                    padding,
                    bias,
                } => {
                    need4("conv")?;
                    let k = kernel.get();
                    let c = cur[3];
                    let fan_in = k[0] * k[1] * c;
                    let shape = vec![*filters, k[0], k[1], c];
                    let w = b.weights(&format!("conv{n}/filter"), shape, fan_in, &mut rng);
                    let mut inputs = vec![x, w];
                    if *bias {
                        inputs.push(b.zeros(&format!("conv{n}/bias"), vec![*filters]));
                    }
                    let padding = padding.get().map_err(err)?;
                    check_window(&cur, k, stride.get(), padding).map_err(err)?;
                    let attrs = Conv2dAttrs {
                        stride: stride.get(),
                        dilation: [1, 1],
                        padding,
                        activation: Activation::None,
                        residual: None,
                    };
                    (Op::Conv2d(attrs), inputs)
                }
                LayerSpec::Depthwise {
                    kernel,
                    multiplier,
                    stride,
                    padding,
                    bias,
                } => {
                    need4("depthwise")?;
                    let k = kernel.get();
                    let oc = cur[3] * multiplier;
                    let w = b.weights(
                        &format!("depthwise{n}/filter"),
                        vec![1, k[0], k[1], oc],
                        k[0] * k[1],
                        &mut rng,
                    );
                    let mut inputs = vec![x, w];
                    if *bias {
                        inputs.push(b.zeros(&format!("depthwise{n}/bias"), vec![oc]));
                    }
                    let padding = padding.get().map_err(err)?;
                    check_window(&cur, k, stride.get(), padding).map_err(err)?;
                    let attrs = DepthwiseConv2dAttrs {
                        stride: stride.get(),
                        dilation: [1, 1],
                        padding,
                        depth_multiplier: *multiplier,
                        activation: Activation::None,
                    };
                    (Op::DepthwiseConv2d(attrs), inputs)
                }
                LayerSpec::Dense { units, bias } => {
                    let fan_in: usize = cur[1..].iter().product();
                    let w = b.weights(
                        &format!("dense{n}/weights"),
                        vec![*units, fan_in],
                        fan_in,
                        &mut rng,
                    );
                    let mut inputs = vec![x, w];
                    if *bias {
                        inputs.push(b.zeros(&format!("dense{n}/bias"), vec![*units]));
                    }
                    let op = Op::FullyConnected {
                        activation: Activation::None,
                        keep_num_dims: false,
                    };
                    (op, inputs)
                }
                LayerSpec::MaxPool {
                    size,
                    stride,
                    padding,
                }
                | LayerSpec::AvgPool {
                    size,
                    stride,
                    padding,
                } => {
                    need4("pooling")?;
                    let padding = padding.get().map_err(err)?;
                    let stride = stride.unwrap_or(*size).get();
                    check_window(&cur, size.get(), stride, padding).map_err(err)?;
                    let attrs = Pool2dAttrs {
                        filter: size.get(),
                        stride,
                        padding,
                        activation: Activation::None,
                    };
                    let op = if matches!(layer.get_ref(), LayerSpec::MaxPool { .. }) {
                        Op::MaxPool2d(attrs)
                    } else {
                        Op::AveragePool2d(attrs)
                    };
                    (op, vec![x])
                }
                LayerSpec::GlobalAvgPool => {
                    need4("global_avg_pool")?;
                    let op = Op::Mean {
                        axes: vec![1, 2],
                        keep_dims: false,
                    };
                    (op, vec![x])
                }
                LayerSpec::Relu => (Op::Relu, vec![x]),
                LayerSpec::Relu6 => (Op::Relu6, vec![x]),
                LayerSpec::LeakyRelu { alpha } => (Op::LeakyRelu { alpha: *alpha }, vec![x]),
                LayerSpec::Sigmoid => (Op::Logistic, vec![x]),
                LayerSpec::Tanh => (Op::Tanh, vec![x]),
                LayerSpec::Flatten => (Op::Reshape, vec![x]),
                LayerSpec::BatchNorm { momentum, eps } => {
                    let bn = BatchNorm {
                        name: format!("batch_norm{n}"),
                        momentum: *momentum,
                        eps: *eps,
                    };
                    bn.check().map_err(err)?;
                    x = b.batch_norm(&bn, x);
                    layers.batch_norms.push(bn);
                    continue;
                }
                LayerSpec::Dropout { rate } => {
                    let d = Dropout {
                        name: format!("dropout{n}"),
                        after: b.g.tensor(x).name.clone(),
                        rate: *rate,
                    };
                    d.check().map_err(err)?;
                    layers.dropouts.push(d);
                    continue;
                }
            };
            let out_shape = if op == Op::Reshape {
                vec![1, cur[1..].iter().product()]
            } else {
                let infos: Vec<&TensorInfo> = inputs.iter().map(|t| b.g.info(*t)).collect();
                infer_output_shape(&op, &infos, &[]).map_err(err)?
            };
            let name = format!("{}{n}", op.name());
            let y = b.tensor(&format!("{name}/out"), out_shape, None);
            b.g.nodes.push(Node {
                name,
                op,
                inputs,
                outputs: vec![y],
            });
            x = y;
        }
        b.g.outputs.push(x);
        b.g.validate().map_err(|e| {
            TrainError::Graph(format!("{}: built graph is invalid: {e}", self.file))
        })?;
        Ok((b.g, layers))
    }
}

fn check_window(input: &[usize], k: [usize; 2], s: [usize; 2], p: Padding) -> Result<(), String> {
    for axis in 0..2 {
        if window_output_size(input[1 + axis], k[axis], s[axis], 1, p, axis).is_none() {
            return Err(format!(
                "window {k:?} with stride {s:?} does not fit the input {:?}",
                &input[1..]
            ));
        }
    }
    Ok(())
}

fn layer_name(l: &LayerSpec) -> &'static str {
    match l {
        LayerSpec::Conv { .. } => "conv",
        LayerSpec::Depthwise { .. } => "depthwise",
        LayerSpec::Dense { .. } => "dense",
        LayerSpec::MaxPool { .. } => "max_pool",
        LayerSpec::AvgPool { .. } => "avg_pool",
        LayerSpec::GlobalAvgPool => "global_avg_pool",
        LayerSpec::Relu => "relu",
        LayerSpec::Relu6 => "relu6",
        LayerSpec::LeakyRelu { .. } => "leaky_relu",
        LayerSpec::Sigmoid => "sigmoid",
        LayerSpec::Tanh => "tanh",
        LayerSpec::Flatten => "flatten",
        LayerSpec::BatchNorm { .. } => "batch_norm",
        LayerSpec::Dropout { .. } => "dropout",
    }
}

/// toml's multi-line report (with a source excerpt) as one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| {
            let excerpt = l
                .split_once('|')
                .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()));
            !l.is_empty() && !excerpt && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .collect::<Vec<_>>()
        .join(": ")
}

#[derive(Default)]
struct GraphBuilder {
    g: Graph,
}

impl GraphBuilder {
    fn tensor(&mut self, name: &str, shape: Vec<usize>, data: Option<Vec<f32>>) -> TensorId {
        self.g.push_f32(name, shape, data.as_deref())
    }

    fn weights(&mut self, name: &str, shape: Vec<usize>, fan_in: usize, rng: &mut Rng) -> TensorId {
        let bound = (6.0 / fan_in.max(1) as f32).sqrt();
        let len = shape.iter().product();
        let data = (0..len).map(|_| rng.uniform(-bound, bound)).collect();
        self.tensor(name, shape, Some(data))
    }

    fn zeros(&mut self, name: &str, shape: Vec<usize>) -> TensorId {
        let len = shape.iter().product();
        self.tensor(name, shape, Some(vec![0.0; len]))
    }

    /// Batch norm `bn` on `x` as kiln sees it: its state tensors (gamma 1, beta 0,
    /// running mean 0, running variance 1; read by no node) and `x * scale + shift`.
    fn batch_norm(&mut self, bn: &BatchNorm, x: TensorId) -> TensorId {
        let shape = self.g.info(x).shape.clone();
        let c = *shape.last().unwrap_or(&1);
        let gamma = self.tensor(&bn.tensor("gamma"), vec![c], Some(vec![1.0; c]));
        let beta = self.zeros(&bn.tensor("beta"), vec![c]);
        let mean = self.zeros(&bn.tensor("running_mean"), vec![c]);
        let var = self.tensor(&bn.tensor("running_var"), vec![c], Some(vec![1.0; c]));
        let v = |g: &Graph, t: TensorId| crate::train::read_params(g, &[t]).remove(0);
        let (scale, shift) = bn.affine(
            &v(&self.g, gamma),
            &v(&self.g, beta),
            &v(&self.g, mean),
            &v(&self.g, var),
        );
        let scale = self.tensor(&bn.tensor("scale"), vec![c], Some(scale));
        let shift = self.tensor(&bn.tensor("shift"), vec![c], Some(shift));
        let scaled = self.tensor(&bn.tensor("scaled"), shape.clone(), None);
        let out = self.tensor(&bn.tensor("out"), shape, None);
        let none = Activation::None;
        self.g.nodes.push(Node {
            name: bn.tensor("mul"),
            op: Op::Mul { activation: none },
            inputs: vec![x, scale],
            outputs: vec![scaled],
        });
        self.g.nodes.push(Node {
            name: bn.tensor("add"),
            op: Op::Add { activation: none },
            inputs: vec![scaled, shift],
            outputs: vec![out],
        });
        out
    }
}
