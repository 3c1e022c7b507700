//! One converter per kiln op: a kiln node in, ONNX nodes (and initializers) out. The
//! layout bookkeeping lives in the parent module; each op asks for its operands in the
//! layout it needs and records its result's layout.

use super::{float, int, ints, nchw_axis, permuted, Layout, Writer};
use crate::ir::{Activation, Node, Op, Padding, TensorId};

type Result<T> = std::result::Result<T, String>;

impl Writer<'_> {
    /// Converts one kiln node.
    pub(super) fn node(&mut self, node: &Node) -> Result<()> {
        let out = node.outputs[0];
        let x = node.inputs[0];
        let (v, layout) = match &node.op {
            Op::Conv2d(a) => {
                let geometry = Window {
                    filter: self.filter_hw(node, [1, 2])?,
                    stride: a.stride,
                    dilation: a.dilation,
                    padding: a.padding,
                };
                let conv = self.conv(node, &geometry, 1)?;
                let conv = self.activation_fn(conv, a.activation);
                match a.residual {
                    None => (conv, Layout::Nchw),
                    Some(r) => {
                        let skip = node.inputs.get(3).ok_or("fused residual without its skip operand")?;
                        let skip = self.operand(*skip, Layout::Nchw)?;
                        let pair = if r.conv_is_first { vec![conv, skip] } else { vec![skip, conv] };
                        let sum = self.push("Add", pair, vec![]);
                        (self.activation_fn(sum, r.activation), Layout::Nchw)
                    }
                }
            }
            Op::DepthwiseConv2d(a) => {
                let geometry = Window {
                    filter: self.filter_hw(node, [1, 2])?,
                    stride: a.stride,
                    dilation: a.dilation,
                    padding: a.padding,
                };
                let channels = self.g.info(x).shape[3];
                let conv = self.conv(node, &geometry, channels)?;
                (self.activation_fn(conv, a.activation), Layout::Nchw)
            }
            Op::FullyConnected {
                activation,
                keep_num_dims,
            } => self.fully_connected(node, *activation, *keep_num_dims)?,
            Op::AveragePool2d(a) | Op::MaxPool2d(a) => {
                let geometry = Window {
                    filter: a.filter,
                    stride: a.stride,
                    dilation: [1, 1],
                    padding: a.padding,
                };
                let input = self.operand(x, Layout::Nchw)?;
                let hw = self.spatial(x)?;
                let mut attrs = geometry.attrs(hw, false);
                let op_type = if matches!(node.op, Op::MaxPool2d(_)) {
                    "MaxPool"
                } else {
                    // Only in-bounds elements are averaged, as in kiln and TFLite.
                    attrs.push(int("count_include_pad", 0));
                    "AveragePool"
                };
                let y = self.push(op_type, vec![input], attrs);
                (self.activation_fn(y, a.activation), Layout::Nchw)
            }
            Op::Add { activation }
            | Op::Sub { activation }
            | Op::Mul { activation }
            | Op::Div { activation } => {
                let op_type = match node.op {
                    Op::Add { .. } => "Add",
                    Op::Sub { .. } => "Sub",
                    Op::Mul { .. } => "Mul",
                    _ => "Div",
                };
                let (operands, layout) = self.elementwise_operands(node)?;
                let y = self.push(op_type, operands, vec![]);
                (self.activation_fn(y, *activation), layout)
            }
            Op::Reshape => self.reshape(x, out)?,
            Op::Softmax { beta } => {
                let rank = self.g.info(x).shape.len();
                if rank < 2 {
                    return Err("softmax over the batch axis (a rank-1 tensor)".into());
                }
                let layout = self.layout_of(x);
                let mut v = self.operand(x, layout)?;
                if *beta != 1.0 {
                    let b = self.init_f32(&format!("{}/beta", self.current), &[], &[*beta]);
                    v = self.push("Mul", vec![v, b], vec![]);
                }
                // Softmax is over kiln's last axis: C of an NCHW tensor; a permutation of
                // the features (flattened CHW) permutes the result the same way.
                let axis = if layout == Layout::Nchw { 1 } else { rank as i64 - 1 };
                (self.push("Softmax", vec![v], vec![int("axis", axis)]), layout)
            }
            Op::Mean { axes, keep_dims } => self.mean(x, axes, *keep_dims)?,
            Op::Pad { paddings } => {
                if paddings.first().is_some_and(|p| *p != [0, 0]) {
                    return Err("padding of the batch axis".into());
                }
                let layout = if self.layout_of(x) == Layout::Nchw { Layout::Nchw } else { Layout::Plain };
                let input = self.operand(x, layout)?;
                let per_axis: Vec<[usize; 2]> = match layout {
                    Layout::Nchw => (0..4).map(|j| paddings[[0, 3, 1, 2][j]]).collect(),
                    _ => paddings.clone(),
                };
                let mut pads: Vec<i64> = per_axis.iter().map(|p| p[0] as i64).collect();
                pads.extend(per_axis.iter().map(|p| p[1] as i64));
                let pads = self.init_i64(&format!("{}/pads", self.current), &pads);
                (self.push("Pad", vec![input, pads], vec![]), layout)
            }
            Op::Concatenation { axis, activation } => {
                if *axis == 0 {
                    return Err("concatenation along the batch axis".into());
                }
                let nchw = self.g.info(out).shape.len() == 4;
                let layout = if nchw { Layout::Nchw } else { Layout::Plain };
                let inputs = node
                    .inputs
                    .iter()
                    .map(|&i| self.operand(i, layout))
                    .collect::<Result<Vec<_>>>()?;
                let axis = if nchw { nchw_axis(*axis) } else { *axis };
                let y = self.push("Concat", inputs, vec![int("axis", axis as i64)]);
                (self.activation_fn(y, *activation), layout)
            }
            Op::Logistic => self.unary(x, "Sigmoid", vec![])?,
            Op::Tanh => self.unary(x, "Tanh", vec![])?,
            Op::Relu => self.unary(x, "Relu", vec![])?,
            Op::Relu6 => {
                let layout = self.layout_of(x);
                let v = self.operand(x, layout)?;
                (self.clip(v, 0.0, 6.0), layout)
            }
            Op::LeakyRelu { alpha } => self.unary(x, "LeakyRelu", vec![float("alpha", *alpha)])?,
            Op::Clip { min, max } => {
                let layout = self.layout_of(x);
                let v = self.operand(x, layout)?;
                (self.clip(v, *min, *max), layout)
            }
            Op::Transpose { perm } => {
                if perm.first() != Some(&0) {
                    return Err(format!("transpose {perm:?} moves the batch axis"));
                }
                if perm.len() == 4 {
                    // In NCHW terms: ONNX output axis j is kiln output axis [0,3,1,2][j].
                    let input = self.operand(x, Layout::Nchw)?;
                    let p: Vec<i64> = (0..4)
                        .map(|j| nchw_axis(perm[[0, 3, 1, 2][j]]) as i64)
                        .collect();
                    (self.transpose(input, &p), Layout::Nchw)
                } else {
                    let input = self.operand(x, Layout::Plain)?;
                    let p: Vec<i64> = perm.iter().map(|&a| a as i64).collect();
                    (self.transpose(input, &p), Layout::Plain)
                }
            }
            Op::Quantize | Op::Dequantize => {
                return Err("quantization ops cannot be exported; export the float graph (before kiln quantize)".into())
            }
            Op::TransposeConv2d(_) => {
                return Err("transpose_conv_2d has no exporter mapping yet".into())
            }
        };
        self.finish(out, v, layout);
        Ok(())
    }

    /// A unary element-wise op that keeps its operand's layout.
    fn unary(
        &mut self,
        x: TensorId,
        op_type: &str,
        attrs: Vec<crate::import::onnx::proto::AttributeProto>,
    ) -> Result<(String, Layout)> {
        let layout = self.layout_of(x);
        let v = self.operand(x, layout)?;
        Ok((self.push(op_type, vec![v], attrs), layout))
    }

    /// `Clip(v, min, max)`; infinite bounds are left out.
    fn clip(&mut self, v: String, min: f32, max: f32) -> String {
        let mut inputs = vec![v];
        let current = self.current.clone();
        inputs.push(if min.is_finite() {
            self.init_f32(&format!("{current}/min"), &[], &[min])
        } else {
            String::new()
        });
        if max.is_finite() {
            inputs.push(self.init_f32(&format!("{current}/max"), &[], &[max]));
        }
        if inputs.len() == 2 && inputs[1].is_empty() {
            inputs.pop();
        }
        self.push("Clip", inputs, vec![])
    }

    /// A fused activation as its own ONNX node after `v`.
    fn activation_fn(&mut self, v: String, a: Activation) -> String {
        match a {
            Activation::None => v,
            Activation::Relu => self.push("Relu", vec![v], vec![]),
            Activation::Relu6 => self.clip(v, 0.0, 6.0),
            Activation::ReluN1To1 => self.clip(v, -1.0, 1.0),
        }
    }

    /// The height and width of a 4-D input.
    fn spatial(&self, x: TensorId) -> Result<[usize; 2]> {
        let s = &self.g.info(x).shape;
        match s.len() {
            4 => Ok([s[1], s[2]]),
            r => Err(format!("a windowed op on a rank-{r} input (needs NHWC)")),
        }
    }

    /// The filter's (height, width) from dimensions `dims` of operand 1.
    fn filter_hw(&self, node: &Node, dims: [usize; 2]) -> Result<[usize; 2]> {
        let f = node.inputs.get(1).ok_or("missing filter")?;
        let s = &self.g.info(*f).shape;
        if s.len() != 4 {
            return Err(format!("filter {s:?} is not 4-D"));
        }
        Ok([s[dims[0]], s[dims[1]]])
    }

    /// Conv (`group` 1) or depthwise conv (`group` = input channels): OHWI or
    /// `[1, H, W, C*m]` filters become OIHW `[O, C/group, H, W]`.
    fn conv(&mut self, node: &Node, window: &Window, group: usize) -> Result<String> {
        let x = node.inputs[0];
        let hw = self.spatial(x)?;
        let channels = self.g.info(x).shape[3];
        let f = node.inputs[1];
        let fshape = self.g.info(f).shape.clone();
        let data = self.const_f32(f, "filter")?;
        let (w, wshape) = if group == 1 {
            if fshape[3] != channels {
                return Err(format!(
                    "filter {fshape:?} for {channels} input channels (grouped convolutions are not exported)"
                ));
            }
            permuted(&data, &fshape, &[0, 3, 1, 2])
        } else {
            permuted(&data, &fshape, &[3, 0, 1, 2])
        };
        let input = self.operand(x, Layout::Nchw)?;
        let fname = self.g.tensor(f).name.clone();
        let mut inputs = vec![input, self.init_f32(&fname, &wshape, &w)];
        if let Some(&b) = node.inputs.get(2) {
            let bias = self.const_f32(b, "bias")?;
            let bname = self.g.tensor(b).name.clone();
            inputs.push(self.init_f32(&bname, &[bias.len()], &bias));
        }
        let mut attrs = window.attrs(hw, true);
        attrs.push(int("group", group as i64));
        Ok(self.push("Conv", inputs, attrs))
    }

    /// FULLY_CONNECTED as `Gemm(transB = 1)` on one row per sample; the weight columns
    /// follow the input's feature order (permuted after a flatten of an NCHW image).
    fn fully_connected(
        &mut self,
        node: &Node,
        activation: Activation,
        keep_num_dims: bool,
    ) -> Result<(String, Layout)> {
        let x = node.inputs[0];
        let wid = node.inputs.get(1).copied().ok_or("missing weights")?;
        let xs = self.g.info(x).shape.clone();
        let ws = self.g.info(wid).shape.clone();
        let (units, depth) = (ws[0], ws[1]);
        let per_sample: usize = xs[1..].iter().product();
        let mut w = self.const_f32(wid, "weights")?;
        let bias = match node.inputs.get(2) {
            Some(&b) => Some((self.g.tensor(b).name.clone(), self.const_f32(b, "bias")?)),
            None => None,
        };
        let wname = self.g.tensor(wid).name.clone();
        if keep_num_dims && xs.len() > 2 {
            // Leading dims kept: a MatMul over kiln's last axis, in kiln's order.
            let input = self.operand(x, Layout::Plain)?;
            let (wt, wts) = permuted(&w, &ws, &[1, 0]);
            let wt = self.init_f32(&wname, &wts, &wt);
            let mut y = self.push("MatMul", vec![input, wt], vec![]);
            if let Some((name, b)) = bias {
                let b = self.init_f32(&name, &[units], &b);
                y = self.push("Add", vec![y, b], vec![]);
            }
            return Ok((self.activation_fn(y, activation), Layout::Plain));
        }
        if per_sample != depth {
            return Err(format!(
                "input {xs:?} is {} rows of {depth} per sample; with a symbolic batch the exporter needs one row per sample",
                per_sample as f64 / depth as f64
            ));
        }
        let (input, flat) = match self.layout_of(x) {
            Layout::Nchw => {
                let v = self.operand(x, Layout::Nchw)?;
                let flat = self.push("Flatten", vec![v], vec![int("axis", 1)]);
                (flat, Some((xs[1], xs[2], xs[3])))
            }
            Layout::FlatChw { h, w, c } => (self.operand(x, self.layout_of(x))?, Some((h, w, c))),
            Layout::Plain if xs.len() == 2 => (self.operand(x, Layout::Plain)?, None),
            Layout::Plain => {
                let v = self.operand(x, Layout::Plain)?;
                (self.push("Flatten", vec![v], vec![int("axis", 1)]), None)
            }
        };
        if let Some((h, wd, c)) = flat {
            // ONNX feature i (C, H, W order) is kiln feature hwc_of_chw(i).
            let mut p = Vec::with_capacity(w.len());
            for o in 0..units {
                let row = &w[o * depth..(o + 1) * depth];
                p.extend((0..depth).map(|i| row[Layout::hwc_of_chw(i, h, wd, c)]));
            }
            w = p;
        }
        let mut inputs = vec![input, self.init_f32(&wname, &ws, &w)];
        if let Some((name, b)) = bias {
            inputs.push(self.init_f32(&name, &[units], &b));
        }
        let y = self.push("Gemm", inputs, vec![int("transB", 1)]);
        Ok((self.activation_fn(y, activation), Layout::Plain))
    }

    /// The operands of a broadcasting element-wise op, in the layout of the result.
    fn elementwise_operands(&mut self, node: &Node) -> Result<(Vec<String>, Layout)> {
        let out_rank = self.g.info(node.outputs[0]).shape.len();
        let is_const = |w: &Self, i: TensorId| w.g.tensor(i).data.is_some();
        let layout = if out_rank == 4 {
            for &i in &node.inputs {
                let r = self.g.info(i).shape.len();
                if !is_const(self, i) && r != 4 {
                    return Err(format!(
                        "a run-time rank-{r} operand broadcast against a 4-D tensor (only constants can be)"
                    ));
                }
            }
            Layout::Nchw
        } else {
            // Stay in a flattened-CHW layout when every run-time operand has it.
            let runtime: Vec<Layout> = node
                .inputs
                .iter()
                .filter(|&&i| !is_const(self, i))
                .map(|&i| self.layout_of(i))
                .collect();
            match runtime.first() {
                Some(&l @ Layout::FlatChw { .. }) if runtime.iter().all(|&r| r == l) => l,
                _ => Layout::Plain,
            }
        };
        let ops = node
            .inputs
            .iter()
            .map(|&i| self.operand(i, layout))
            .collect::<Result<Vec<_>>>()?;
        Ok((ops, layout))
    }

    /// RESHAPE: a flatten of an image is `Flatten` (features then in C, H, W order);
    /// anything else reshapes in kiln's element order with the batch dimension copied.
    fn reshape(&mut self, x: TensorId, out: TensorId) -> Result<(String, Layout)> {
        let xs = self.g.info(x).shape.clone();
        let os = self.g.info(out).shape.clone();
        let have = self.layout_of(x);
        if xs == os {
            let v = self.operand(x, have)?;
            return Ok((self.push("Identity", vec![v], vec![]), have));
        }
        if xs.first() != os.first() {
            return Err(format!(
                "reshape {xs:?} -> {os:?} changes the batch dimension"
            ));
        }
        if have == Layout::Nchw && os.len() == 2 {
            let v = self.operand(x, Layout::Nchw)?;
            let flat = self.push("Flatten", vec![v], vec![int("axis", 1)]);
            return Ok((
                flat,
                Layout::FlatChw {
                    h: xs[1],
                    w: xs[2],
                    c: xs[3],
                },
            ));
        }
        let v = self.operand(x, Layout::Plain)?;
        let mut target = vec![0i64];
        target.extend(os[1..].iter().map(|&d| d as i64));
        let target = self.init_i64(&format!("{}/shape", self.current), &target);
        Ok((self.push("Reshape", vec![v, target], vec![]), Layout::Plain))
    }

    /// MEAN: `ReduceMean` over the same axes, named in NCHW terms for an NCHW operand
    /// when the kept axes stay in kiln's order.
    fn mean(&mut self, x: TensorId, axes: &[usize], keep_dims: bool) -> Result<(String, Layout)> {
        if axes.contains(&0) {
            return Err("mean over the batch axis".into());
        }
        let rank = self.g.info(x).shape.len();
        let kept_in_order = {
            let kept: Vec<usize> = [0, 3, 1, 2]
                .into_iter()
                .filter(|a| !axes.contains(a))
                .collect();
            kept.windows(2).all(|p| p[0] < p[1])
        };
        let layout =
            if self.layout_of(x) == Layout::Nchw && rank == 4 && (keep_dims || kept_in_order) {
                Layout::Nchw
            } else {
                Layout::Plain
            };
        let input = self.operand(x, layout)?;
        let mut onnx_axes: Vec<i64> = axes
            .iter()
            .map(|&a| if layout == Layout::Nchw { nchw_axis(a) } else { a } as i64)
            .collect();
        onnx_axes.sort_unstable();
        let attrs = vec![ints("axes", &onnx_axes), int("keepdims", keep_dims as i64)];
        let y = self.push("ReduceMean", vec![input], attrs);
        let out_layout = if keep_dims { layout } else { Layout::Plain };
        Ok((y, out_layout))
    }
}

/// A 2-D window's geometry in kiln terms.
struct Window {
    filter: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
}

impl Window {
    /// ONNX `kernel_shape`, `strides`, explicit `pads` (TFLite SAME: the odd pixel after)
    /// and, for convolutions, `dilations`, over an input of spatial size `hw`.
    fn attrs(
        &self,
        hw: [usize; 2],
        dilations: bool,
    ) -> Vec<crate::import::onnx::proto::AttributeProto> {
        let mut pads = [0usize; 4]; // top, left, bottom, right
        for axis in 0..2 {
            let (before, after) = match self.padding {
                Padding::Valid => (0, 0),
                Padding::Explicit { .. } => self.padding.explicit(axis).unwrap_or((0, 0)),
                Padding::Same => {
                    let out = hw[axis].div_ceil(self.stride[axis]);
                    let effective = (self.filter[axis] - 1) * self.dilation[axis] + 1;
                    let total =
                        ((out - 1) * self.stride[axis] + effective).saturating_sub(hw[axis]);
                    (total / 2, total - total / 2)
                }
            };
            pads[axis] = before;
            pads[axis + 2] = after;
        }
        let two = |v: [usize; 2]| [v[0] as i64, v[1] as i64];
        let mut attrs = vec![
            ints("kernel_shape", &two(self.filter)),
            ints("strides", &two(self.stride)),
            ints("pads", &pads.map(|p| p as i64)),
        ];
        if dilations {
            attrs.push(ints("dilations", &two(self.dilation)));
        }
        attrs
    }
}
