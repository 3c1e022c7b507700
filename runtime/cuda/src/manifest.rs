//! The manifest `kiln compile --target cuda` writes next to `model.cu`: the batch, the
//! arena size, where each input and output lives in the arena, and the kernels to
//! launch in order. Line format (one record per line, fields separated by one space):
//!
//! ```text
//! kiln-cuda-manifest 1
//! model models/kws_ref_model/model.tflite
//! batch 1
//! arena_bytes 16064
//! weight_bytes 23360
//! input int8 16000 496 490 1.0e0 -1 1x49x10x1 input_1
//! output int8 16496 16 12 3.9e-3 -128 1x12 Identity
//! kernel kiln_node_0 63 128 0
//! ```
//!
//! Ports: `DTYPE OFFSET STRIDE BYTES SCALE ZERO_POINT SHAPE NAME` (`-` for no
//! quantization, the name runs to the end of the line). Kernels: `NAME GRID BLOCK NODE`.

use crate::Error;

/// Version of the format this crate reads.
pub const VERSION: u32 = 1;

/// Element type of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// int8.
    I8,
    /// float32.
    F32,
    /// int32.
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape of one sample.
    pub shape: Vec<usize>,
    /// Arena offset of sample 0, in bytes.
    pub offset: usize,
    /// Bytes from one sample to the next.
    pub stride: usize,
    /// Bytes of one sample.
    pub bytes: usize,
    /// `real = scale * (q - zero_point)` for int8 ports.
    pub quant: Option<(f32, i32)>,
}

impl Port {
    /// Elements of one sample.
    pub fn elements(&self) -> usize {
        self.bytes / self.dtype.size()
    }
}

/// One kernel launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The `extern "C"` function name in the source.
    pub name: String,
    /// Blocks of the 1-D grid.
    pub grid: u32,
    /// Threads per block.
    pub block: u32,
    /// The graph node it computes.
    pub node: usize,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The model file it was compiled from.
    pub model: String,
    /// Samples per run.
    pub batch: usize,
    /// Bytes of the device arena.
    pub arena_bytes: usize,
    /// Bytes of the weights blob.
    pub weight_bytes: usize,
    /// Graph inputs.
    pub inputs: Vec<Port>,
    /// Graph outputs.
    pub outputs: Vec<Port>,
    /// Launches in order.
    pub kernels: Vec<Kernel>,
}

fn num<T: std::str::FromStr>(field: Option<&str>, what: &str, line: usize) -> Result<T, Error> {
    field
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| Error::Manifest {
            line,
            message: format!("expected {what}"),
        })
}

impl Manifest {
    /// Parses manifest text; errors name the line. Checks that every port and the
    /// weights fit their buffers, so no launch can address outside the arena's ports.
    pub fn parse(text: &str) -> Result<Manifest, Error> {
        let mut m = Manifest {
            model: String::new(),
            batch: 0,
            arena_bytes: 0,
            weight_bytes: 0,
            inputs: Vec::new(),
            outputs: Vec::new(),
            kernels: Vec::new(),
        };
        let mut seen_header = false;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let (key, rest) = raw.split_once(' ').unwrap_or((raw, ""));
            let mut f = rest.split(' ');
            match key {
                "kiln-cuda-manifest" => {
                    let v: u32 = num(f.next(), "a version number", line)?;
                    if v != VERSION {
                        return Err(Error::Manifest {
                            line,
                            message: format!("version {v}, this kiln-cuda reads version {VERSION}"),
                        });
                    }
                    seen_header = true;
                }
                _ if !seen_header => {
                    return Err(Error::Manifest {
                        line,
                        message: "not a kiln-cuda manifest (no `kiln-cuda-manifest` first line)"
                            .into(),
                    })
                }
                "model" => m.model = rest.to_string(),
                "batch" => m.batch = num(f.next(), "the batch", line)?,
                "arena_bytes" => m.arena_bytes = num(f.next(), "a byte count", line)?,
                "weight_bytes" => m.weight_bytes = num(f.next(), "a byte count", line)?,
                "input" | "output" => {
                    let dtype = match f.next() {
                        Some("int8") => DType::I8,
                        Some("float32") => DType::F32,
                        Some("int32") => DType::I32,
                        other => {
                            return Err(Error::Manifest {
                                line,
                                message: format!("unknown element type {other:?}"),
                            })
                        }
                    };
                    let offset = num(f.next(), "an offset", line)?;
                    let stride = num(f.next(), "a stride", line)?;
                    let bytes = num(f.next(), "a byte count", line)?;
                    let (scale, zp) = (f.next(), f.next());
                    let quant = match (scale, zp) {
                        (Some("-"), Some("-")) => None,
                        (s, z) => Some((num(s, "a scale", line)?, num(z, "a zero point", line)?)),
                    };
                    let shape = match f.next() {
                        Some("scalar") => Vec::new(),
                        s => s
                            .unwrap_or("")
                            .split('x')
                            .map(|d| num(Some(d), "a shape like 1x49x10x1", line))
                            .collect::<Result<Vec<usize>, _>>()?,
                    };
                    let name = f.collect::<Vec<_>>().join(" ");
                    let port = Port {
                        name,
                        dtype,
                        shape,
                        offset,
                        stride,
                        bytes,
                        quant,
                    };
                    if port.shape.iter().product::<usize>() * dtype.size() != bytes
                        || stride < bytes
                    {
                        return Err(Error::Manifest {
                            line,
                            message: "shape, byte count and stride disagree".into(),
                        });
                    }
                    if key == "input" {
                        m.inputs.push(port);
                    } else {
                        m.outputs.push(port);
                    }
                }
                "kernel" => {
                    let name: String = f.next().unwrap_or("").to_string();
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(Error::Manifest {
                            line,
                            message: format!("bad kernel name '{name}'"),
                        });
                    }
                    let grid = num(f.next(), "a grid size", line)?;
                    let block = num(f.next(), "a block size", line)?;
                    let node = num(f.next(), "a node index", line)?;
                    m.kernels.push(Kernel {
                        name,
                        grid,
                        block,
                        node,
                    });
                }
                other => {
                    return Err(Error::Manifest {
                        line,
                        message: format!("unknown record '{other}'"),
                    })
                }
            }
        }
        if !seen_header || m.batch == 0 || m.arena_bytes == 0 {
            return Err(Error::Manifest {
                line: 0,
                message: "missing header, batch or arena_bytes".into(),
            });
        }
        for p in m.inputs.iter().chain(&m.outputs) {
            let end = p
                .stride
                .checked_mul(m.batch)
                .and_then(|b| b.checked_add(p.offset));
            if end.is_none_or(|e| e > m.arena_bytes) {
                return Err(Error::Manifest {
                    line: 0,
                    message: format!("port '{}' does not fit the arena", p.name),
                });
            }
        }
        Ok(m)
    }
}
