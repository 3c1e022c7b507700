//! Constants known at import time and the arithmetic the importer folds on them.
//!
//! PyTorch exports reshapes as small `Shape → Gather → Unsqueeze → Concat` programs over
//! int64 shape values, and weights often pass through `Transpose`, `Mul` or `Cast` nodes.
//! All of that is evaluated here, so the graph that reaches kiln's IR only holds the ops
//! that run on the device.

use super::Problem;

/// Element data of a constant, in ONNX (row-major, logical) order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ConstData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

/// A constant tensor: shape and data.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Const {
    pub shape: Vec<usize>,
    pub data: ConstData,
}

type Result<T> = std::result::Result<T, Problem>;

fn malformed<T>(m: impl Into<String>) -> Result<T> {
    Err(Problem::Malformed(m.into()))
}

/// Largest constant the importer builds, in elements (as the IR's 256 MiB f32 tensor).
pub(super) const MAX_ELEMENTS: usize = 64 << 20;

/// Element count of `shape`, refusing overflow and constants beyond [`MAX_ELEMENTS`].
pub(super) fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| Problem::Unsupported(format!("a constant of shape {shape:?} is too large")))
}

impl ConstData {
    pub fn len(&self) -> usize {
        match self {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
            ConstData::I32(v) => v.len(),
            ConstData::I8(v) => v.len(),
            ConstData::U8(v) => v.len(),
            ConstData::Bool(v) => v.len(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            ConstData::F32(_) => "float32",
            ConstData::I64(_) => "int64",
            ConstData::I32(_) => "int32",
            ConstData::I8(_) => "int8",
            ConstData::U8(_) => "uint8",
            ConstData::Bool(_) => "bool",
        }
    }

    /// Elements picked by `index` (positions into `self`), keeping the type.
    fn gather(&self, index: &[usize]) -> ConstData {
        fn pick<T: Copy>(v: &[T], index: &[usize]) -> Vec<T> {
            index.iter().map(|&i| v[i]).collect()
        }
        match self {
            ConstData::F32(v) => ConstData::F32(pick(v, index)),
            ConstData::I64(v) => ConstData::I64(pick(v, index)),
            ConstData::I32(v) => ConstData::I32(pick(v, index)),
            ConstData::I8(v) => ConstData::I8(pick(v, index)),
            ConstData::U8(v) => ConstData::U8(pick(v, index)),
            ConstData::Bool(v) => ConstData::Bool(pick(v, index)),
        }
    }
}

impl Const {
    pub fn new(shape: Vec<usize>, data: ConstData) -> Result<Const> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return malformed(format!(
                "constant of shape {shape:?} has {} elements",
                data.len()
            ));
        }
        Ok(Const { shape, data })
    }

    pub fn scalar_f32(v: f32) -> Const {
        Const {
            shape: vec![],
            data: ConstData::F32(vec![v]),
        }
    }

    pub fn type_name(&self) -> &'static str {
        self.data.type_name()
    }

    /// The values as f32 (integers converted), for float arithmetic on weights.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            ConstData::F32(v) => v.clone(),
            ConstData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            ConstData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            ConstData::I8(v) => v.iter().map(|&x| x as f32).collect(),
            ConstData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            ConstData::Bool(v) => v.iter().map(|&x| x as u8 as f32).collect(),
        }
    }

    /// The values as i64, for shape arithmetic; floats are refused.
    pub fn to_i64(&self, what: &str) -> Result<Vec<i64>> {
        Ok(match &self.data {
            ConstData::I64(v) => v.clone(),
            ConstData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::I8(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::U8(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::Bool(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::F32(_) => return malformed(format!("{what} must be integers, not float")),
        })
    }

    /// Same data, another shape of the same element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Const> {
        Const::new(shape, self.data.clone())
    }

    /// Axes permuted: output axis `i` is input axis `perm[i]`.
    pub fn transposed(&self, perm: &[usize]) -> Result<Const> {
        let rank = self.shape.len();
        if perm.len() != rank || !is_permutation(perm) {
            return malformed(format!("perm {perm:?} for a rank-{rank} constant"));
        }
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let in_strides = strides(&self.shape);
        let index = for_each_index(&out_shape, |idx| {
            idx.iter()
                .zip(perm)
                .map(|(&i, &p)| i * in_strides[p])
                .sum::<usize>()
        });
        Ok(Const {
            shape: out_shape,
            data: self.data.gather(&index),
        })
    }

    /// ONNX Gather along `axis` with constant indices.
    pub fn gather(&self, indices: &Const, axis: i64) -> Result<Const> {
        let rank = self.shape.len();
        let axis = normalize_axis(axis, rank)?;
        let dim = self.shape[axis];
        let idx: Vec<usize> = indices
            .to_i64("Gather indices")?
            .iter()
            .map(|&i| {
                let j = if i < 0 { i + dim as i64 } else { i };
                usize::try_from(j)
                    .ok()
                    .filter(|&j| j < dim)
                    .ok_or_else(|| Problem::Malformed(format!("Gather index {i} out of 0..{dim}")))
            })
            .collect::<Result<_>>()?;
        let mut out_shape = self.shape[..axis].to_vec();
        out_shape.extend_from_slice(&indices.shape);
        out_shape.extend_from_slice(&self.shape[axis + 1..]);
        let outer: usize = self.shape[..axis].iter().product();
        let inner: usize = self.shape[axis + 1..].iter().product();
        let mut index = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in &idx {
                let base = (o * dim + i) * inner;
                index.extend(base..base + inner);
            }
        }
        Ok(Const {
            shape: out_shape,
            data: self.data.gather(&index),
        })
    }

    /// ONNX Slice with constant starts/ends/axes/steps (steps may be negative).
    pub fn slice(
        &self,
        starts: &[i64],
        ends: &[i64],
        axes: &[usize],
        steps: &[i64],
    ) -> Result<Const> {
        let rank = self.shape.len();
        let mut ranges: Vec<Vec<usize>> = self.shape.iter().map(|&d| (0..d).collect()).collect();
        for (k, &axis) in axes.iter().enumerate() {
            if axis >= rank {
                return malformed(format!("Slice axis {axis} of a rank-{rank} tensor"));
            }
            let d = self.shape[axis] as i64;
            let step = steps.get(k).copied().unwrap_or(1);
            if step == 0 {
                return malformed("Slice step 0");
            }
            let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
            let norm = |v: i64| if v < 0 { v + d } else { v };
            let (s, e) = (norm(starts[k]), norm(ends[k]));
            let mut picked = Vec::new();
            if step > 0 {
                let (mut i, e) = (clamp(s, 0, d), clamp(e, 0, d));
                while i < e {
                    picked.push(i as usize);
                    i += step;
                }
            } else {
                let (mut i, e) = (clamp(s, -1, d - 1), clamp(e, -1, d - 1));
                while i > e {
                    picked.push(i as usize);
                    i += step;
                }
            }
            ranges[axis] = picked;
        }
        let out_shape: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
        let st = strides(&self.shape);
        let index = for_each_index(&out_shape, |idx| {
            idx.iter()
                .enumerate()
                .map(|(a, &i)| ranges[a][i] * st[a])
                .sum()
        });
        Ok(Const {
            shape: out_shape,
            data: self.data.gather(&index),
        })
    }

    /// ONNX Concat of constants of one type along `axis`.
    pub fn concat(parts: &[&Const], axis: i64) -> Result<Const> {
        let first = parts
            .first()
            .ok_or(Problem::Malformed("Concat of nothing".into()))?;
        let rank = first.shape.len();
        let axis = normalize_axis(axis, rank)?;
        for p in parts {
            let same_rest = p.shape.len() == rank
                && (0..rank).all(|a| a == axis || p.shape[a] == first.shape[a]);
            if !same_rest || p.type_name() != first.type_name() {
                return malformed(format!(
                    "Concat of {} {:?} and {} {:?} on axis {axis}",
                    first.type_name(),
                    first.shape,
                    p.type_name(),
                    p.shape
                ));
            }
        }
        let outer: usize = first.shape[..axis].iter().product();
        let inner: usize = first.shape[axis + 1..].iter().product();
        let mut shape = first.shape.clone();
        shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
        let mut f = Vec::new();
        let mut i = Vec::new();
        let mut b = Vec::new();
        for o in 0..outer {
            for p in parts {
                let n = p.shape[axis] * inner;
                match &p.data {
                    ConstData::F32(v) => f.extend_from_slice(&v[o * n..(o + 1) * n]),
                    ConstData::Bool(v) => b.extend_from_slice(&v[o * n..(o + 1) * n]),
                    _ => i.extend_from_slice(&p.to_i64("Concat")?[o * n..(o + 1) * n]),
                }
            }
        }
        let data = match first.data {
            ConstData::F32(_) => ConstData::F32(f),
            ConstData::Bool(_) => ConstData::Bool(b),
            ConstData::I32(_) => ConstData::I32(i.iter().map(|&x| x as i32).collect()),
            ConstData::I8(_) => ConstData::I8(i.iter().map(|&x| x as i8).collect()),
            ConstData::U8(_) => ConstData::U8(i.iter().map(|&x| x as u8).collect()),
            ConstData::I64(_) => ConstData::I64(i),
        };
        Const::new(shape, data)
    }

    /// Element-wise binary op with NumPy broadcasting: float if either side is float,
    /// else int64.
    pub fn binary(&self, other: &Const, op: BinaryOp) -> Result<Const> {
        let shape = broadcast_shape(&self.shape, &other.shape).ok_or_else(|| {
            Problem::Malformed(format!(
                "shapes {:?} and {:?} do not broadcast",
                self.shape, other.shape
            ))
        })?;
        element_count(&shape)?;
        let ia = broadcast_index(&self.shape, &shape);
        let ib = broadcast_index(&other.shape, &shape);
        let float =
            matches!(self.data, ConstData::F32(_)) || matches!(other.data, ConstData::F32(_));
        let data = if float {
            let (a, b) = (self.to_f32(), other.to_f32());
            ConstData::F32(
                ia.iter()
                    .zip(&ib)
                    .map(|(&i, &j)| op.apply_f32(a[i], b[j]))
                    .collect(),
            )
        } else {
            let (a, b) = (self.to_i64("operand")?, other.to_i64("operand")?);
            let v = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| op.apply_i64(a[i], b[j]))
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| {
                    Problem::Malformed(format!("integer {op:?} overflows or divides by zero"))
                })?;
            ConstData::I64(v)
        };
        Const::new(shape, data)
    }

    /// The value cast to an ONNX element type (`to` attribute of Cast).
    pub fn cast(&self, to: i32) -> Result<Const> {
        use super::proto::tensor_proto::DataType as D;
        let data = match D::try_from(to) {
            Ok(D::Float) => ConstData::F32(self.to_f32()),
            Ok(D::Int64) => ConstData::I64(match &self.data {
                ConstData::F32(v) => v.iter().map(|&x| x as i64).collect(),
                _ => self.to_i64("Cast")?,
            }),
            Ok(D::Int32) => ConstData::I32(match &self.data {
                ConstData::F32(v) => v.iter().map(|&x| x as i32).collect(),
                _ => self.to_i64("Cast")?.iter().map(|&x| x as i32).collect(),
            }),
            Ok(D::Bool) => ConstData::Bool(self.to_f32().iter().map(|&x| x != 0.0).collect()),
            _ => return Err(Problem::Unsupported(format!("Cast to ONNX type {to}"))),
        };
        Const::new(self.shape.clone(), data)
    }
}

/// Binary operators folded on constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Equal,
}

impl BinaryOp {
    fn apply_f32(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Equal => (a == b) as u8 as f32,
        }
    }

    fn apply_i64(self, a: i64, b: i64) -> Option<i64> {
        match self {
            BinaryOp::Add => a.checked_add(b),
            BinaryOp::Sub => a.checked_sub(b),
            BinaryOp::Mul => a.checked_mul(b),
            // ONNX integer Div truncates toward zero, as Rust's does.
            BinaryOp::Div => a.checked_div(b),
            BinaryOp::Equal => Some((a == b) as i64),
        }
    }
}

/// `axis` in `-rank..rank` made non-negative.
pub(super) fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| Problem::Malformed(format!("axis {axis} out of range for rank {rank}")))
}

pub(super) fn is_permutation(perm: &[usize]) -> bool {
    let mut seen = vec![false; perm.len()];
    perm.iter()
        .all(|&p| p < perm.len() && !std::mem::replace(&mut seen[p], true))
}

/// Row-major strides of `shape`.
pub(super) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}

/// Calls `f` on every multi-index of `shape` in row-major order, collecting the results.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize]) -> usize) -> Vec<usize> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0; shape.len()];
    for _ in 0..n {
        out.push(f(&idx));
        for a in (0..shape.len()).rev() {
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// NumPy broadcast of two shapes.
pub(super) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank {
                a[i + a.len() - rank]
            } else {
                1
            };
            let db = if i + b.len() >= rank {
                b[i + b.len() - rank]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// For each element of `out` (row-major), the position of the element of a tensor of
/// shape `shape` that broadcasts onto it.
fn broadcast_index(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let pad = out.len() - shape.len();
    let st = strides(shape);
    for_each_index(out, |idx| {
        (0..shape.len())
            .map(|a| {
                if shape[a] == 1 {
                    0
                } else {
                    idx[a + pad] * st[a]
                }
            })
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i64c(shape: &[usize], v: &[i64]) -> Const {
        Const::new(shape.to_vec(), ConstData::I64(v.to_vec())).unwrap()
    }

    #[test]
    fn transpose_gather_slice_concat() {
        let c = i64c(&[2, 3], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(
            c.transposed(&[1, 0]).unwrap(),
            i64c(&[3, 2], &[0, 3, 1, 4, 2, 5])
        );
        assert_eq!(c.gather(&i64c(&[], &[-1]), 1).unwrap(), i64c(&[2], &[2, 5]));
        assert_eq!(
            c.slice(&[1], &[i64::MAX], &[1], &[1]).unwrap(),
            i64c(&[2, 2], &[1, 2, 4, 5])
        );
        assert_eq!(
            c.slice(&[-1], &[i64::MIN], &[1], &[-1]).unwrap(),
            i64c(&[2, 3], &[2, 1, 0, 5, 4, 3])
        );
        let a = i64c(&[1], &[7]);
        assert_eq!(
            Const::concat(&[&a, &i64c(&[2], &[8, 9])], 0).unwrap(),
            i64c(&[3], &[7, 8, 9])
        );
    }

    #[test]
    fn binary_broadcasts_and_refuses_overflow() {
        let a = i64c(&[2, 1], &[1, 2]);
        let b = i64c(&[3], &[10, 20, 30]);
        assert_eq!(
            a.binary(&b, BinaryOp::Mul).unwrap(),
            i64c(&[2, 3], &[10, 20, 30, 20, 40, 60])
        );
        assert!(i64c(&[1], &[1])
            .binary(&i64c(&[1], &[0]), BinaryOp::Div)
            .is_err());
        assert!(i64c(&[2], &[1, 2])
            .binary(&i64c(&[3], &[1, 2, 3]), BinaryOp::Add)
            .is_err());
    }
}
