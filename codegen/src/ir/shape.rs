//! Shape inference: the output shape each operator produces from its operands.

use super::{Op, Padding, TensorInfo, TransposeConv2dAttrs};

/// Most dimensions a transpose accepts (the runtime's `shape::MAX_DIMS`).
pub const MAX_TRANSPOSE_RANK: usize = kiln_runtime::shape::MAX_DIMS;

/// Output size of a windowed op along `axis` (0 = height, 1 = width), TFLite rules.
/// `None` when the window does not fit or an argument is zero.
pub fn window_output_size(
    input: usize,
    filter: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
    axis: usize,
) -> Option<usize> {
    if filter == 0 || stride == 0 || dilation == 0 || input == 0 {
        return None;
    }
    let effective = (filter - 1).checked_mul(dilation)?.checked_add(1)?;
    let out = match padding {
        Padding::Same => input.div_ceil(stride),
        Padding::Valid => (input.checked_sub(effective)? + stride) / stride,
        Padding::Explicit { .. } => {
            let (before, after) = padding.explicit(axis)?;
            let padded = input.checked_add(before)?.checked_add(after)?;
            padded.checked_sub(effective)? / stride + 1
        }
    };
    (out > 0).then_some(out)
}

/// NumPy broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        let pad = rank - s.len();
        if i < pad {
            1
        } else {
            s[i - pad]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

fn rank_is(info: &TensorInfo, rank: usize, what: &str) -> Result<(), String> {
    if info.shape.len() == rank {
        Ok(())
    } else {
        Err(format!(
            "{what} must have rank {rank}, got shape {:?}",
            info.shape
        ))
    }
}

fn windowed(
    input: &TensorInfo,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
    channels: usize,
) -> Result<Vec<usize>, String> {
    rank_is(input, 4, "input")?;
    let s = &input.shape;
    let h = window_output_size(s[1], kernel[0], stride[0], dilation[0], padding, 0);
    let w = window_output_size(s[2], kernel[1], stride[1], dilation[1], padding, 1);
    match (h, w) {
        (Some(h), Some(w)) => Ok(vec![s[0], h, w, channels]),
        _ => Err(format!(
            "window {kernel:?} (stride {stride:?}, dilation {dilation:?}, {padding:?}) does not fit input {s:?}"
        )),
    }
}

/// The output shape of `op` applied to operands `inputs`. `declared` is the output
/// shape stored in the model, needed by ops whose result shape is an attribute of the
/// output (reshape). Errors describe what is inconsistent.
pub fn infer_output_shape(
    op: &Op,
    inputs: &[&TensorInfo],
    declared: &[usize],
) -> Result<Vec<usize>, String> {
    let input = inputs.first().ok_or("no operands")?;
    match op {
        Op::Conv2d(a) => {
            let filter = inputs.get(1).ok_or("missing filter")?;
            rank_is(filter, 4, "filter")?;
            let f = &filter.shape;
            rank_is(input, 4, "input")?;
            if f[3] != input.shape[3] {
                return Err(format!(
                    "filter {f:?} expects {} input channels, input {:?} has {}",
                    f[3], input.shape, input.shape[3]
                ));
            }
            windowed(input, [f[1], f[2]], a.stride, a.dilation, a.padding, f[0])
        }
        Op::DepthwiseConv2d(a) => {
            let filter = inputs.get(1).ok_or("missing filter")?;
            rank_is(filter, 4, "filter")?;
            rank_is(input, 4, "input")?;
            let f = &filter.shape;
            let want = input.shape[3]
                .checked_mul(a.depth_multiplier)
                .ok_or("overflow")?;
            if f[0] != 1 || f[3] != want {
                return Err(format!(
                    "depthwise filter {f:?} does not match {} input channels x multiplier {}",
                    input.shape[3], a.depth_multiplier
                ));
            }
            windowed(input, [f[1], f[2]], a.stride, a.dilation, a.padding, f[3])
        }
        Op::FullyConnected { keep_num_dims, .. } => {
            let weights = inputs.get(1).ok_or("missing weights")?;
            rank_is(weights, 2, "weights")?;
            let (out, depth) = (weights.shape[0], weights.shape[1]);
            let n = input.num_elements();
            if depth == 0 || n % depth != 0 {
                return Err(format!(
                    "input {:?} is not a whole number of rows of {depth}",
                    input.shape
                ));
            }
            if *keep_num_dims {
                if input.shape.last() != Some(&depth) {
                    return Err(format!(
                        "keep_num_dims needs the input's last dim {:?} to be {depth}",
                        input.shape
                    ));
                }
                let mut s = input.shape.clone();
                *s.last_mut().expect("rank checked") = out;
                Ok(s)
            } else {
                Ok(vec![n / depth, out])
            }
        }
        Op::AveragePool2d(a) | Op::MaxPool2d(a) => {
            rank_is(input, 4, "input")?;
            windowed(input, a.filter, a.stride, [1, 1], a.padding, input.shape[3])
        }
        Op::Add { .. } | Op::Mul { .. } | Op::Sub { .. } | Op::Div { .. } => {
            let b = inputs.get(1).ok_or("missing second operand")?;
            broadcast_shapes(&input.shape, &b.shape).ok_or_else(|| {
                format!(
                    "shapes {:?} and {:?} do not broadcast",
                    input.shape, b.shape
                )
            })
        }
        Op::Reshape => {
            let n: usize = declared.iter().product();
            if n == input.num_elements() {
                Ok(declared.to_vec())
            } else {
                Err(format!(
                    "cannot reshape {:?} into {declared:?}",
                    input.shape
                ))
            }
        }
        Op::Mean { axes, keep_dims } => {
            if axes.iter().any(|&a| a >= input.shape.len()) {
                return Err(format!("axes {axes:?} out of range for {:?}", input.shape));
            }
            Ok(input
                .shape
                .iter()
                .enumerate()
                .filter_map(|(i, &d)| match (axes.contains(&i), keep_dims) {
                    (false, _) => Some(d),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect())
        }
        Op::Pad { paddings } => {
            if paddings.len() != input.shape.len() {
                return Err(format!(
                    "{} paddings for rank-{} input",
                    paddings.len(),
                    input.shape.len()
                ));
            }
            input
                .shape
                .iter()
                .zip(paddings)
                .map(|(&d, p)| d.checked_add(p[0])?.checked_add(p[1]))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| "padding overflows".to_string())
        }
        Op::Concatenation { axis, .. } => {
            let rank = input.shape.len();
            if *axis >= rank {
                return Err(format!("axis {axis} out of range for {:?}", input.shape));
            }
            let mut out = input.shape.clone();
            for other in &inputs[1..] {
                let same_rest = other.shape.len() == rank
                    && (0..rank).all(|i| i == *axis || other.shape[i] == input.shape[i]);
                if !same_rest {
                    return Err(format!(
                        "cannot concatenate {:?} and {:?} on axis {axis}",
                        input.shape, other.shape
                    ));
                }
                out[*axis] += other.shape[*axis];
            }
            Ok(out)
        }
        Op::Softmax { .. } => {
            if input.shape.is_empty() {
                return Err("softmax of a scalar".into());
            }
            Ok(input.shape.clone())
        }
        Op::Quantize | Op::Dequantize | Op::Logistic | Op::Tanh | Op::Relu | Op::Relu6 => {
            Ok(input.shape.clone())
        }
        Op::LeakyRelu { alpha } => {
            if !alpha.is_finite() {
                return Err(format!("leaky_relu alpha {alpha} is not finite"));
            }
            Ok(input.shape.clone())
        }
        Op::Clip { min, max } => {
            if min.is_nan() || max.is_nan() {
                return Err(format!("clip bounds [{min}, {max}] include NaN"));
            }
            Ok(input.shape.clone())
        }
        Op::Transpose { perm } => transposed(&input.shape, perm),
        Op::TransposeConv2d(a) => {
            let filter = inputs.get(1).ok_or("missing filter")?;
            transpose_conv_shape(input, filter, a, declared)
        }
    }
}

/// `shape` permuted by `perm` (`out[i] = shape[perm[i]]`), if `perm` is a permutation
/// of its axes and the rank is one the runtime handles.
fn transposed(shape: &[usize], perm: &[usize]) -> Result<Vec<usize>, String> {
    let mut seen = vec![false; shape.len()];
    let is_permutation = perm.len() == shape.len()
        && perm
            .iter()
            .all(|&p| p < shape.len() && !std::mem::replace(&mut seen[p], true));
    if !is_permutation {
        return Err(format!(
            "perm {perm:?} is not a permutation of the axes of {shape:?}"
        ));
    }
    if shape.len() > MAX_TRANSPOSE_RANK {
        return Err(format!(
            "transpose of rank {} (at most {MAX_TRANSPOSE_RANK} dimensions)",
            shape.len()
        ));
    }
    Ok(perm.iter().map(|&p| shape[p]).collect())
}

/// The full ("VALID", unpadded) transposed-convolution output size along one axis:
/// `(input - 1) * stride + (filter - 1) * dilation + 1`.
pub fn transpose_conv_full_size(
    input: usize,
    filter: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    input
        .checked_sub(1)?
        .checked_mul(stride)?
        .checked_add(filter.checked_sub(1)?.checked_mul(dilation)?)?
        .checked_add(1)
}

/// A transposed convolution's result is the declared (model's) output shape; this checks
/// that it fits the operands: batch and channels, and along each spatial axis an output
/// size the padding maps back onto the input (SAME / VALID as TFLite's TRANSPOSE_CONV
/// computes them: the forward convolution of the output gives the input), or, with
/// explicit padding, `top`/`left` within the full output and at most
/// `max(stride, dilation) - 1` extra rows/columns past it (ONNX's `output_padding`).
fn transpose_conv_shape(
    input: &TensorInfo,
    filter: &TensorInfo,
    a: &TransposeConv2dAttrs,
    declared: &[usize],
) -> Result<Vec<usize>, String> {
    rank_is(input, 4, "input")?;
    rank_is(filter, 4, "filter")?;
    let (x, f) = (&input.shape, &filter.shape);
    if f[3] != x[3] {
        return Err(format!(
            "filter {f:?} expects {} input channels, input {x:?} has {}",
            f[3], x[3]
        ));
    }
    if declared.len() != 4 || declared[0] != x[0] || declared[3] != f[0] {
        return Err(format!(
            "result shape {declared:?} does not match batch {} and {} filters",
            x[0], f[0]
        ));
    }
    for axis in 0..2 {
        let (inp, out, k) = (x[axis + 1], declared[axis + 1], f[axis + 1]);
        let (stride, dilation) = (a.stride[axis], a.dilation[axis]);
        let fits = match a.padding {
            Padding::Same | Padding::Valid => {
                window_output_size(out, k, stride, dilation, a.padding, axis) == Some(inp)
            }
            Padding::Explicit { .. } => {
                let before = a.padding.explicit(axis).map_or(0, |p| p.0);
                match transpose_conv_full_size(inp, k, stride, dilation) {
                    Some(full) => {
                        let slack = stride.max(dilation) - 1;
                        out > 0 && before < full && before + out <= full + slack
                    }
                    None => false,
                }
            }
        };
        if !fits || stride == 0 || dilation == 0 || k == 0 {
            return Err(format!(
                "transposed conv of {x:?} by filter {f:?} (stride {:?}, dilation {:?}, {:?}) cannot give {declared:?}",
                a.stride, a.dilation, a.padding
            ));
        }
    }
    Ok(declared.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_and_valid_match_tflite() {
        assert_eq!(window_output_size(49, 10, 2, 1, Padding::Same, 0), Some(25));
        assert_eq!(window_output_size(10, 4, 2, 1, Padding::Same, 0), Some(5));
        assert_eq!(window_output_size(10, 4, 2, 1, Padding::Valid, 0), Some(4));
        assert_eq!(window_output_size(7, 3, 1, 2, Padding::Valid, 0), Some(3));
        assert_eq!(window_output_size(3, 3, 1, 2, Padding::Valid, 0), None);
        assert_eq!(window_output_size(3, 3, 0, 1, Padding::Valid, 0), None);
        let explicit = Padding::Explicit {
            top: 1,
            bottom: 2,
            left: 0,
            right: 0,
        };
        assert_eq!(window_output_size(5, 3, 1, 1, explicit, 0), Some(6));
        assert_eq!(window_output_size(5, 3, 2, 1, explicit, 1), Some(2));
    }

    #[test]
    fn transpose_and_transpose_conv_shapes() {
        use crate::ir::{Activation, DType};
        let info = |shape: &[usize]| TensorInfo {
            shape: shape.to_vec(),
            dtype: DType::F32,
            quant: None,
        };
        let x = info(&[1, 2, 3, 4]);
        let t = |perm: Vec<usize>| infer_output_shape(&Op::Transpose { perm }, &[&x], &[]);
        assert_eq!(t(vec![0, 3, 1, 2]), Ok(vec![1, 4, 2, 3]));
        assert!(t(vec![0, 1, 1, 2]).is_err());
        assert!(t(vec![0, 1, 2]).is_err());

        let (x, w) = (info(&[1, 3, 4, 2]), info(&[5, 3, 3, 2]));
        let op = |padding| {
            Op::TransposeConv2d(TransposeConv2dAttrs {
                stride: [2, 2],
                dilation: [1, 1],
                padding,
                activation: Activation::None,
            })
        };
        let tc =
            |padding, declared: &[usize]| infer_output_shape(&op(padding), &[&x, &w], declared);
        assert_eq!(tc(Padding::Same, &[1, 6, 8, 5]), Ok(vec![1, 6, 8, 5]));
        assert_eq!(tc(Padding::Same, &[1, 5, 7, 5]), Ok(vec![1, 5, 7, 5]));
        assert!(tc(Padding::Same, &[1, 7, 8, 5]).is_err());
        assert_eq!(tc(Padding::Valid, &[1, 7, 9, 5]), Ok(vec![1, 7, 9, 5]));
        assert!(tc(Padding::Valid, &[1, 6, 8, 4]).is_err());
        let explicit = Padding::Explicit {
            top: 1,
            bottom: 0,
            left: 0,
            right: 0,
        };
        // Full output 7 x 9: 1 row cut on top, up to one extra row/column allowed.
        assert_eq!(tc(explicit, &[1, 6, 10, 5]), Ok(vec![1, 6, 10, 5]));
        assert!(tc(explicit, &[1, 8, 9, 5]).is_err());
        assert_eq!(transpose_conv_full_size(3, 3, 2, 1), Some(7));
    }

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(
            broadcast_shapes(&[1, 4, 4, 8], &[8]),
            Some(vec![1, 4, 4, 8])
        );
        assert_eq!(
            broadcast_shapes(&[1, 4, 1, 1], &[2, 1, 4, 3]),
            Some(vec![2, 4, 4, 3])
        );
        assert_eq!(broadcast_shapes(&[3], &[4]), None);
    }
}
