//! Optimizers (SGD with momentum and weight decay, Adam, AdamW) and learning-rate
//! schedules, with PyTorch's update rules so hyper-parameters carry over.

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// `v = momentum * v + (g + wd * w); w -= lr * v` (PyTorch SGD).
    Sgd {
        /// Momentum (0 for plain SGD).
        momentum: f32,
        /// L2 weight decay added to the gradient.
        weight_decay: f32,
    },
    /// Adam; `weight_decay` is added to the gradient (L2), as in PyTorch's Adam.
    Adam {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
        /// L2 weight decay.
        weight_decay: f32,
    },
    /// AdamW: Adam with decoupled weight decay `w -= lr * wd * w`.
    AdamW {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
        /// Decoupled weight decay.
        weight_decay: f32,
    },
}

impl OptimizerKind {
    /// Parses `sgd`, `adam` or `adamw` with PyTorch's defaults (SGD momentum 0.9).
    pub fn parse(name: &str, weight_decay: f32) -> Result<Self, String> {
        Ok(match name {
            "sgd" => OptimizerKind::Sgd {
                momentum: 0.9,
                weight_decay,
            },
            "adam" => OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay,
            },
            "adamw" => OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay,
            },
            other => return Err(format!("unknown optimizer '{other}' (sgd, adam, adamw)")),
        })
    }
}

/// An optimizer with its per-parameter state.
#[derive(Debug, Clone)]
pub struct Optimizer {
    kind: OptimizerKind,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: u64,
}

impl Optimizer {
    /// A fresh optimizer (zero state).
    pub fn new(kind: OptimizerKind) -> Self {
        Optimizer {
            kind,
            m: Vec::new(),
            v: Vec::new(),
            t: 0,
        }
    }

    /// An optimizer continuing from saved state (a checkpoint): `steps` updates done,
    /// first moments (SGD momentum) `m` and Adam's second moments `v`, one vector per
    /// parameter (empty before the first step; `v` unused by SGD).
    pub fn resumed(kind: OptimizerKind, steps: u64, m: Vec<Vec<f32>>, v: Vec<Vec<f32>>) -> Self {
        Optimizer {
            kind,
            m,
            v,
            t: steps,
        }
    }

    /// The update rule.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// Updates done so far (Adam's bias-correction step count).
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// The per-parameter state `(m, v)`: SGD's momentum buffers or Adam's first moments,
    /// and Adam's second moments (zeros for SGD); empty before the first step.
    pub fn moments(&self) -> (&[Vec<f32>], &[Vec<f32>]) {
        (&self.m, &self.v)
    }

    /// Updates every parameter from its gradient with learning rate `lr`.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[&[f32]], lr: f32) {
        if self.m.len() != params.len() {
            self.m = params.iter().map(|p| vec![0.0; p.len()]).collect();
            self.v = params.iter().map(|p| vec![0.0; p.len()]).collect();
        }
        self.t += 1;
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let m = &mut self.m[i];
            let v = &mut self.v[i];
            match self.kind {
                OptimizerKind::Sgd {
                    momentum,
                    weight_decay,
                } => {
                    for ((w, g), m) in p.iter_mut().zip(g.iter()).zip(m.iter_mut()) {
                        let d = g + weight_decay * *w;
                        *m = if self.t == 1 { d } else { momentum * *m + d };
                        *w -= lr * *m;
                    }
                }
                OptimizerKind::Adam {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                }
                | OptimizerKind::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let decoupled = matches!(self.kind, OptimizerKind::AdamW { .. });
                    let c1 = 1.0 - beta1.powi(self.t as i32);
                    let c2 = 1.0 - beta2.powi(self.t as i32);
                    for (((w, g), m), v) in p
                        .iter_mut()
                        .zip(g.iter())
                        .zip(m.iter_mut())
                        .zip(v.iter_mut())
                    {
                        let mut d = *g;
                        if decoupled {
                            *w -= lr * weight_decay * *w;
                        } else {
                            d += weight_decay * *w;
                        }
                        *m = beta1 * *m + (1.0 - beta1) * d;
                        *v = beta2 * *v + (1.0 - beta2) * d * d;
                        *w -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                    }
                }
            }
        }
    }
}

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiplied by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: usize,
        /// Factor per decay.
        gamma: f32,
    },
    /// Cosine from the base rate to 0 over all steps.
    Cosine,
}

impl Schedule {
    /// Parses `constant`, `cosine` or `step` (`step` decays by 0.1 every `every` epochs).
    pub fn parse(name: &str, every: usize) -> Result<Self, String> {
        match name {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            "step" => Ok(Schedule::Step {
                every: every.max(1),
                gamma: 0.1,
            }),
            other => Err(format!(
                "unknown schedule '{other}' (constant, step, cosine)"
            )),
        }
    }

    /// The rate at `step` of `total` steps, during `epoch` (from 0).
    pub fn lr(&self, base: f32, epoch: usize, step: usize, total: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((epoch / every.max(1)) as i32),
            Schedule::Cosine => {
                let t = step as f32 / total.max(1) as f32;
                base * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(Schedule::Constant.lr(0.1, 3, 50, 100), 0.1);
        let step = Schedule::parse("step", 2).unwrap();
        assert!((step.lr(1.0, 1, 0, 0) - 1.0).abs() < 1e-6);
        assert!((step.lr(1.0, 2, 0, 0) - 0.1).abs() < 1e-6);
        assert!((step.lr(1.0, 5, 0, 0) - 0.01).abs() < 1e-6);
        assert!((Schedule::Cosine.lr(1.0, 0, 0, 100) - 1.0).abs() < 1e-6);
        assert!((Schedule::Cosine.lr(1.0, 0, 50, 100) - 0.5).abs() < 1e-6);
        assert!(Schedule::Cosine.lr(1.0, 0, 100, 100).abs() < 1e-6);
        assert!(Schedule::parse("linear", 1).is_err());
    }

    #[test]
    fn updates_match_pytorch_formulas() {
        // SGD with momentum: first step v = g, then v = m v + g.
        let mut p = vec![vec![1.0f32]];
        let mut o = Optimizer::new(OptimizerKind::parse("sgd", 0.0).unwrap());
        o.step(&mut p, &[&[1.0]], 0.1);
        assert!((p[0][0] - 0.9).abs() < 1e-6);
        o.step(&mut p, &[&[1.0]], 0.1);
        assert!((p[0][0] - (0.9 - 0.1 * 1.9)).abs() < 1e-6);
        // Adam's first step moves every weight by lr (bias-corrected m / sqrt(v) = 1).
        let mut p = vec![vec![1.0f32, -2.0]];
        let mut o = Optimizer::new(OptimizerKind::parse("adam", 0.0).unwrap());
        o.step(&mut p, &[&[0.3, -5.0]], 0.01);
        assert!((p[0][0] - 0.99).abs() < 1e-5 && (p[0][1] + 1.99).abs() < 1e-5);
        // AdamW decays the weight itself, decoupled from the gradient.
        let mut p = vec![vec![1.0f32]];
        let mut o = Optimizer::new(OptimizerKind::parse("adamw", 0.5).unwrap());
        o.step(&mut p, &[&[0.0]], 0.1);
        assert!((p[0][0] - 0.95).abs() < 1e-6);
    }
}
